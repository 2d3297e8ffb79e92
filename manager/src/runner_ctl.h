#ifndef RUNFLEET_RUNNER_CTL_H
#define RUNFLEET_RUNNER_CTL_H

#include <stdint.h>

#include <uv.h>

#include "backend.h"
#include "capacity.h"
#include "github.h"
#include "hook_report.h"
#include "scheduler.h"

/* Runner control carries out what the scheduler decides.
 *
 * Start: a capacity hold on one node (at decision time, so the next
 * decision sees it), a JIT config from GitHub (paced, never sent twice),
 * then backend start at the held placement. A JIT request whose result is
 * unknown (no answer, a 5xx, a 409 for the name) is looked up by name and
 * its registration deleted; the scheduler drops the runner without a
 * failure, as it does when the backend has no room after all.
 *
 * Backend events: RUNNING makes the runner idle; EXITED or LOST releases
 * its hold, deletes a registration no job will use, and tells the
 * scheduler. Retire: GitHub deregistration first (a 422 means GitHub gave
 * it a job: kept), then backend stop.
 *
 * At start: the fleet tag (stable per state_dir), what the backend still
 * runs from an earlier run (stopped, its capacity held until it is gone),
 * and this fleet's registrations no runner owns (deleted). At stop: idle
 * runners are deregistered and JIT requests in flight waited for, within a
 * deadline. */

#define RUNNER_CTL_STOP_DEADLINE_MS 5000 /* how long stop waits for GitHub */

struct runner_ctl; /* opaque */

/* The scheduler ops runner control implements; their ctx is the
 * runner_ctl. */
extern const struct sched_ops runner_ctl_sched_ops;

/* Creates runner control over cap and hooks (which must outlive it).
 * NULL when out of memory. Owns no loop handle until runner_ctl_start. */
struct runner_ctl *runner_ctl_new(uv_loop_t *loop, struct capacity *cap,
                                  struct hook_reports *hooks);
/* The GitHub client, scheduler and backend, made after runner control
 * since the last two take it as their context; all must outlive it. */
void runner_ctl_attach(struct runner_ctl *rc, struct gh_client *gh,
                       struct scheduler *sched, struct backend *backend);
/* kick(arg) asks for a scheduler pass soon (coalesced by the caller). */
void runner_ctl_on_kick(struct runner_ctl *rc, void (*kick)(void *arg),
                        void *arg);
/* After runner_ctl_start, when this replica leads again: what the backend
 * runs is reconciled again (runners another leader started are adopted)
 * and, with sweep, GitHub swept of this fleet's idle leftovers. */
void runner_ctl_takeover(struct runner_ctl *rc, int sweep);
/* Every write asks may_act(arg) first and, when it answers 0 (a replica
 * that does not hold the leader Lease), is not made: no JIT config asked
 * for, no pod started for one that came after, no registration deleted,
 * nothing journaled. */
void runner_ctl_set_fence(struct runner_ctl *rc, int (*may_act)(void *arg),
                          void *arg);
/* How runners reach the daemon's API and the node-local git cache. */
void runner_ctl_set_urls(struct runner_ctl *rc, const char *runner_url,
                         const char *cache_dir);

/* The backend event callback (a backend_event_cb); ctx is the runner_ctl. */
void runner_ctl_backend_event(void *ctx, const struct backend_event *ev);

struct journal;        /* journal.h */
struct journal_runner; /* journal.h */

/* Runners are journaled to j from now on (started, running, gone). */
void runner_ctl_set_journal(struct runner_ctl *rc, struct journal *j);
/* A runner the journal had (from journal_replay): at runner_ctl_start it
 * is adopted if the backend still runs it, else forgotten. */
int runner_ctl_replay_runner(struct runner_ctl *rc,
                             const struct journal_runner *r);

/* Loads (or creates) <state_dir>/fleet-id and sets the scheduler's tag.
 * Returns 1 when the tag is stable across restarts, else 0 (nothing of an
 * earlier run can be recognised, so nothing is swept). */
int runner_ctl_load_tag(struct runner_ctl *rc, const char *state_dir);

/* Initialises the loop handles, and reconciles with what is real: runners
 * the backend lists that the journal knows are adopted, those it does not
 * know are stopped (their capacity held until they are gone), journaled
 * ones the backend no longer runs are forgotten and, when sweep is set,
 * this fleet's idle registrations at GitHub that no runner owns are
 * deleted. */
int runner_ctl_start(struct runner_ctl *rc, int sweep);

/* Stops acting: no new starts; idle runners' registrations are deleted
 * and JIT requests in flight waited for (their registrations deleted),
 * for at most deadline_ms. done_cb(arg) runs once, when that is over. */
void runner_ctl_stop(struct runner_ctl *rc, uint64_t deadline_ms,
                     void (*done_cb)(void *arg), void *arg);
/* Closes the handles; done_cb(arg) when they are closed. Safe without a
 * runner_ctl_start. */
void runner_ctl_close(struct runner_ctl *rc, void (*done_cb)(void *arg),
                      void *arg);
void runner_ctl_destroy(struct runner_ctl *rc);

/* JIT requests sent and not answered yet. */
unsigned runner_ctl_starts_in_flight(const struct runner_ctl *rc);

#endif
