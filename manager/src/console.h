#ifndef RUNFLEET_CONSOLE_H
#define RUNFLEET_CONSOLE_H

/* The status page for people (docs/CONSOLE.md) and the JSON it reads
 * besides the lists api.c serves: the GPU map (/api/v1/nodes), the queue
 * with why its head waits (/api/v1/queue) and an hour of samples for the
 * charts (/api/v1/history). The page is one HTML document with its CSS
 * and script compiled in (src/console/), nothing fetched from elsewhere;
 * the script polls the JSON and redraws in place. */

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api.h"

/* One sample every 10 s for an hour. */
#define CONSOLE_SAMPLE_MS 10000u
#define CONSOLE_SAMPLES 360u
/* Jobs of a pool listed as "next" in the queue answer. */
#define CONSOLE_NEXT_JOBS 5u

struct console_sample {
  uint64_t at_ms; /* wall clock */
  unsigned queued, busy, runners;
  /* Waits of the jobs that started since the sample before; -1 when none
   * did. */
  double wait_p50, wait_p95;
};

/* A ring of the last CONSOLE_SAMPLES samples, oldest first from first. */
struct console_history {
  struct console_sample s[CONSOLE_SAMPLES];
  size_t n, first;
  uint64_t last_ms; /* when the newest sample was taken, 0 before */
};

/* Takes a sample of s at wall_ms into h (the caller's timer decides when). */
void console_sample(struct console_history *h, const struct scheduler *s,
                    uint64_t wall_ms);

/* {"nodes": [{name, node_group, ready, gpus: [{index, state, holder, ...}]}]}:
 * state is runner, devserver, free or unhealthy; a runner's GPU says its
 * pool, runner state and job (id, repository, name, seconds running). */
json_t *console_nodes_json(const struct api_state *st);
/* {"queue": [{pool, queued, oldest_wait_seconds, reason: {code, text} or
 * null, next: [{id, repository, name, wait_seconds}]}]}, pools in config
 * order. reason codes: backoff, blocked, max_runners, github_budget,
 * starting, capacity, placing. */
json_t *console_queue_json(const struct api_state *st);
/* {"interval_seconds": 10, "samples": [{at, queued, busy, runners,
 * wait_p50, wait_p95}]}, oldest first. */
json_t *console_history_json(const struct console_history *h);

/* The page itself: 200 text/html, or 500 when out of memory. */
void console_page(const struct api_state *st, struct http_response *resp);

#ifdef RUNFLEET_UNITTEST
/* The q-quantile (0..1) of n values, sorted in place; nearest rank. */
double console_quantile(double *v, size_t n, double q);
#endif

#endif
