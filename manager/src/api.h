#ifndef RUNFLEET_API_H
#define RUNFLEET_API_H

#include <stdint.h>

#include "capacity.h"
#include "github.h"
#include "http_server.h"
#include "metrics.h"
#include "recovery.h"
#include "scheduler.h"

/* /healthz, /readyz, /metrics, /api/v1/{pools,jobs,runners,recovery} (JSON for
 * the CLI) and the status page at /. Reads the same state as the scheduler. */

struct backend;
struct console_history;
struct leader;

struct api_state {
  struct scheduler *sched;
  struct backend *backend; /* may be NULL */
  const struct capacity *capacity;
  struct metrics *metrics;
  uint64_t now_ms;
  int ready;
  const struct gh_client *gh;            /* may be NULL */
  const struct recovery *recovery;       /* may be NULL */
  const struct console_history *history; /* may be NULL */
  const struct leader *leader;           /* NULL without leader election */
};

/* The read-only routes (the router's table is in fleet.c): /healthz,
 * /readyz (503 while stopping), /metrics, the status page, the JSON lists
 * and the JSON 404 for any other /api/v1/ path. */
void api_healthz(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp);
void api_readyz(const struct api_state *st, const struct http_request *req,
                struct http_response *resp);
void api_metrics(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp);
void api_status_page(const struct api_state *st, const struct http_request *req,
                     struct http_response *resp);
void api_pools(const struct api_state *st, const struct http_request *req,
               struct http_response *resp);
void api_jobs(const struct api_state *st, const struct http_request *req,
              struct http_response *resp);
void api_runners(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp);
/* GET /api/v1/recovery: what the last recovery run did and the GitHub API
 * budget now. */
void api_recovery(const struct api_state *st, const struct http_request *req,
                  struct http_response *resp);
/* GET /api/v1/nodes, /api/v1/queue, /api/v1/history: the status page's
 * GPU map, queue with reasons and an hour of samples (console.h). */
void api_nodes(const struct api_state *st, const struct http_request *req,
               struct http_response *resp);
void api_queue(const struct api_state *st, const struct http_request *req,
               struct http_response *resp);
void api_history(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp);
/* GET /api/v1/leader: {election, leading, holder}; without leader election
 * this replica leads and holder is null. */
void api_leader(const struct api_state *st, const struct http_request *req,
                struct http_response *resp);
void api_not_found(const struct api_state *st, const struct http_request *req,
                   struct http_response *resp);

/* Declares runfleet's own metric families (those set from state at
 * scrape time and the job wait histogram). */
int api_declare_metrics(struct metrics *m);

/* Brings runfleet_http_refused_total{listener,reason} and
 * runfleet_http_connections{listener} up to a listener's stats. */
void api_sync_http(struct metrics *m, const char *listener,
                   const struct http_server_stats *st);

/* Sets the gauges that mirror state (queue, runners, capacity). */
void api_update_gauges(const struct api_state *st);

#endif
