#ifndef RUNFLEET_INTAKE_H
#define RUNFLEET_INTAKE_H

#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "metrics.h"
#include "scheduler.h"

/* Where every parsed event goes (webhook hands over GitHub's deliveries).
 * intake drops deliveries it has seen before (by delivery id, in bounded
 * memory), puts the others through a commit step, applies them to the
 * scheduler in the order they came, and only then answers each through its
 * callback. With a journal (intake_set_journal) the commit step is the
 * transaction that must commit before anything is applied or answered;
 * without one it completes at once. It knows nothing of HTTP: the answer is a
 * status and a reason. Outcomes are counted in
 * runfleet_webhooks_total{event,result}: accepted, duplicate, ignored,
 * unmatched, ok (ping). */

#define INTAKE_DEDUPE_SIZE 8192 /* delivery ids remembered */

struct intake;  /* opaque */
struct journal; /* journal.h */

/* The answer to one submitted event: an HTTP status and a short reason,
 * valid during the call. */
typedef void (*intake_done_cb)(void *arg, int status, const char *msg);

/* Called after a workflow_job event changed the scheduler, with the action
 * as sent and the job (NULL if the scheduler no longer has it); set by the
 * daemon to observe wait times and trigger a reconcile. */
typedef void (*intake_job_cb)(void *arg, const char *action,
                              const struct sched_job *job);

/* Applies events to s; m may be NULL. NULL when out of memory. */
struct intake *intake_new(struct scheduler *s, struct metrics *m);

/* Frees the intake; events still waiting are answered 503 first. */
void intake_destroy(struct intake *in);

void intake_on_job(struct intake *in, intake_job_cb cb, void *arg);

/* From now on, each new delivery is appended to j and applied and answered
 * only once that is committed: 200 then, 503 when it could not be written
 * (full disk). A delivery the journal knows from before is a duplicate.
 * j must outlive the intake's use of it (close it first). */
void intake_set_journal(struct intake *in, struct journal *j);

/* Applies a journaled event again at start, as it was at_ms (wall clock),
 * without answering or journaling it; its delivery id is remembered. */
void intake_replay(struct intake *in, const struct event *ev, uint64_t at_ms,
                   uint64_t now_ms);

/* Takes ev over (*ev is empty afterwards), received at now_ms. Returns 0:
 * done_cb(arg, status, msg) then runs exactly once, after the event was
 * applied (or found a duplicate), perhaps before intake_submit returns.
 * Returns -1 when out of memory: ev is freed and done_cb never runs. */
int intake_submit(struct intake *in, struct event *ev, uint64_t now_ms,
                  intake_done_cb done_cb, void *arg);

#ifdef RUNFLEET_UNITTEST
/* While held, the commit step completes nothing: events wait, deduped but
 * neither applied nor answered; letting go completes them, in order. */
void intake_hold_commits(struct intake *in, int hold);
/* Events submitted and not answered yet. */
size_t intake_npending(const struct intake *in);
#endif

#endif
