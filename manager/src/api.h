#ifndef RUNFLEET_API_H
#define RUNFLEET_API_H

#include <stdint.h>

#include "backend.h"
#include "http_server.h"
#include "metrics.h"
#include "scheduler.h"

/* /healthz, /readyz, /metrics, /api/v1/{pools,jobs,runners} (JSON for the
 * CLI) and the status page at /. Reads the same state as the scheduler. */

struct api_state {
  struct scheduler *sched;
  struct backend *backend;
  struct metrics *metrics;
  uint64_t now_ms;
  int ready;
};

/* Answers req if it is an API route; returns 1 when it did, 0 otherwise. */
int api_handle(const struct api_state *st, const struct http_request *req,
               struct http_response *resp);

/* Declares runfleet's own metric families (those set from state at
 * scrape time and the job wait histogram). */
int api_declare_metrics(struct metrics *m);

/* Sets the gauges that mirror state (queue, runners, capacity). */
void api_update_gauges(const struct api_state *st);

#endif
