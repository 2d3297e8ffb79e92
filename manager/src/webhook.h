#ifndef RUNFLEET_WEBHOOK_H
#define RUNFLEET_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "scheduler.h"

/* POST /webhook: the X-Hub-Signature-256 check (constant time, before any
 * parsing), event parsing with jansson, dedupe by X-GitHub-Delivery in
 * bounded memory, and hand-off of workflow_job events to the scheduler.
 * Every delivery is counted in runfleet_webhooks_total{event,result}. */

#define WEBHOOK_DEDUPE_SIZE 8192 /* delivery ids remembered */

struct webhook; /* opaque */

/* secret is copied (and wiped on destroy). m may be NULL. */
struct webhook *webhook_new(const unsigned char *secret, size_t secret_len,
                            struct metrics *m);
void webhook_destroy(struct webhook *w);

/* Replaces the secret after a config reload. Returns 0 or -1 (OOM). */
int webhook_set_secret(struct webhook *w, const unsigned char *secret,
                       size_t secret_len);

/* What a delivery came with. Any of the strings may be NULL. */
struct webhook_delivery {
  const char *event;     /* X-GitHub-Event */
  const char *id;        /* X-GitHub-Delivery */
  const char *signature; /* X-Hub-Signature-256 */
  const char *body;
  size_t body_len;
};

/* Handles one delivery and returns the HTTP status to answer: 200 for
 * accepted, duplicate, ping and ignored events; 401 for a missing or wrong
 * signature; 400 for malformed JSON or a workflow_job without the fields
 * runfleetd needs. Nothing changes unless the answer is 200. A short
 * reason for the response body is written to msg. */
int webhook_handle(struct webhook *w, struct scheduler *s,
                   const struct webhook_delivery *d, uint64_t now_ms, char *msg,
                   size_t msg_size);

/* Called after a workflow_job event changed the scheduler; set by the
 * daemon to observe wait times and trigger a reconcile. */
typedef void (*webhook_job_cb)(void *arg, const char *action,
                               const struct sched_job *job);
void webhook_on_job(struct webhook *w, webhook_job_cb cb, void *arg);

#endif
