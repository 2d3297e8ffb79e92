#ifndef RUNFLEET_WEBHOOK_H
#define RUNFLEET_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "metrics.h"

/* POST /webhook: the X-Hub-Signature-256 check (constant time, before any
 * parsing), then parsing with jansson into a struct event for intake,
 * which dedupes and applies it. Nothing here changes state. Deliveries it
 * refuses are counted in runfleet_webhooks_total{event,result}; intake
 * counts the others. */

/* GitHub gives up on a delivery after 10 s: the answer (200 once intake
 * applied the event) must come before, or the server's 503 does. */
#define WEBHOOK_ANSWER_MS 9000

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

/* Checks and parses one delivery. Returns 0 with ev filled (the caller
 * owns it: event_free, or intake_submit) for every delivery that is to be
 * answered 200: workflow_job events, pings, and events or actions that
 * runfleetd ignores. Otherwise ev is empty and the return is the status to
 * answer at once, with a short reason in msg: 401 for a missing or wrong
 * signature; 400 for missing X-GitHub-Event or X-GitHub-Delivery,
 * malformed JSON, or a workflow_job without the fields runfleetd needs;
 * 500 when out of memory. */
int webhook_parse(struct webhook *w, const struct webhook_delivery *d,
                  struct event *ev, char *msg, size_t msg_size);

#endif
