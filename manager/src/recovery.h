#ifndef RUNFLEET_RECOVERY_H
#define RUNFLEET_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "github.h"
#include "intake.h"
#include "metrics.h"
#include "scheduler.h"

/* The GitHub side of "nothing accepted is lost". A run, at start, every
 * recovery.interval, after a failover and when a queued job has waited
 * past recovery.wait_threshold while capacity was free (the periodic runs
 * do step 1 only: the scan costs a call per queued run):
 *  1. deliveries: pages GitHub's App webhook deliveries (newest first)
 *     back to the cursor (the newest delivery id the previous run saw
 *     that was older than recovery.cursor_settle; without one, back
 *     recovery.window) and redelivers each failed
 *     workflow_job delivery of this installation whose guid has no
 *     successful delivery; the redelivery comes through the public
 *     listener like any other and intake dedupes it. PAT mode has no
 *     deliveries API: this step is skipped.
 *  2. scan: for the repositories seen recently (jobs the scheduler knew in
 *     the last recovery.seen_within, the configured ones, the scope's own
 *     repository), lists queued workflow runs and their jobs and hands each
 *     queued job the scheduler does not know to intake as a queued event
 *     with delivery id "recovery-<job id>" (GitHub's are GUIDs: no
 *     collision). A later webhook for the same job finds it known and
 *     changes nothing.
 * Every call is of the GitHub client's recovery class (runner calls go
 * first, the primary budget keeps its reserve) and one run makes at most
 * recovery.call_budget requests. The cursor lives in a recovery_store. */

/* Where recovery keeps what must outlive a restart (the delivery cursor).
 * get: 0 with the NUL-terminated value in buf, -ENOENT when absent, or
 * another negative code. put: 0 or a negative code. */
struct recovery_store {
  void *ctx;
  int (*get)(void *ctx, const char *key, char *buf, size_t size);
  int (*put)(void *ctx, const char *key, const char *value);
};

/* The store key of the delivery cursor. */
#define RECOVERY_KEY_CURSOR "recovery.deliveries_cursor"
/* The repositories jobs came from, newest last, comma-separated (at most
 * RECOVERY_REPOS_VALUE_MAX bytes): kept in the store so that a replica
 * that takes over scans them though it saw none of their jobs. */
#define RECOVERY_KEY_REPOS "recovery.repositories"
#define RECOVERY_REPOS_VALUE_MAX 1000
/* A failover's run is followed by one more this much later: GitHub gives
 * a receiver 10 s, so what failed during the takeover is listed by then. */
#define RECOVERY_FAILOVER_AGAIN_MS 12000

enum recovery_trigger {
  RECOVERY_TRIGGER_START,
  RECOVERY_TRIGGER_INTERVAL,
  RECOVERY_TRIGGER_FAILOVER,
  RECOVERY_TRIGGER_WAIT /* a queued job waited with capacity free */
};

/* What the last finished run did (all zero before one finished). */
struct recovery_report {
  int running;              /* a run is under way now */
  uint64_t runs;            /* finished since start */
  const char *trigger;      /* of the last run: "start", "interval", ... */
  uint64_t started_unix_ms; /* wall clock */
  uint64_t finished_unix_ms;
  int deliveries_api;         /* 0: PAT mode, deliveries skipped */
  int scanned;                /* the run scanned (interval runs do not) */
  unsigned deliveries_seen;   /* items read from the deliveries list */
  unsigned deliveries_failed; /* failed workflow_job deliveries among them */
  unsigned redelivered;
  unsigned repos_scanned, runs_scanned;
  unsigned jobs_found; /* queued jobs no webhook announced, handed to intake */
  unsigned calls;      /* GitHub requests the run made */
  unsigned errors;     /* calls that failed after their retries */
  int budget_spent;    /* the run stopped at recovery.call_budget */
  int64_t cursor;      /* newest delivery id seen, 0 none */
};

/* Whether one more runner of pool would get capacity now. */
typedef int (*recovery_capacity_fn)(void *ctx, const struct cfg_pool *pool);

struct recovery; /* opaque */

/* Creates recovery over cfg (its recovery and github sections; cfg must
 * outlive it or be swapped with recovery_set_config). store is copied; m
 * may be NULL. NULL when out of memory. */
struct recovery *recovery_new(uv_loop_t *loop, const struct config *cfg,
                              struct gh_client *gh, struct scheduler *sched,
                              struct intake *in,
                              const struct recovery_store *store,
                              struct metrics *m);

/* Sets how recovery asks whether a pool could get a runner now (for the
 * wait trigger); without one, an idle runner of the pool counts. */
void recovery_on_capacity(struct recovery *rec, recovery_capacity_fn fn,
                          void *ctx);

/* Arms the timers and starts the first run (trigger "start"). 0 or a
 * libuv error; does nothing when recovery.enabled is false. */
int recovery_start(struct recovery *rec);

/* A job of repo was seen: a repository not noted yet goes into the store
 * (RECOVERY_KEY_REPOS; the oldest drop out past the size). */
void recovery_note_repo(struct recovery *rec, const char *repo);

/* Asks for a run soon; while one runs, another follows it once. */
void recovery_trigger(struct recovery *rec, enum recovery_trigger why);

/* A run starts only when may_act(arg) answers 1 (the replica holding the
 * leader Lease); one under way finishes. */
void recovery_set_fence(struct recovery *rec, int (*may_act)(void *arg),
                        void *arg);
void recovery_set_config(struct recovery *rec, const struct config *cfg);

void recovery_report(const struct recovery *rec, struct recovery_report *out);

const char *recovery_trigger_name(enum recovery_trigger why);

/* Stops the timers and starts no more calls; done_cb(arg) runs once every
 * handle is closed and every call it started has answered (the GitHub
 * client's close cancels the queued ones). Then recovery_destroy. */
void recovery_close(struct recovery *rec, void (*done_cb)(void *arg),
                    void *arg);
void recovery_destroy(struct recovery *rec);

/* A recovery_store of one small file per key in dir (written whole and
 * renamed into place). The ctx is a copy of dir: free it with
 * recovery_dir_store_free. 0 or -ENOMEM. */
int recovery_dir_store(struct recovery_store *st, const char *dir);
void recovery_dir_store_free(struct recovery_store *st);

#ifdef RUNFLEET_UNITTEST
/* The delivery ids to redeliver among items (one page or many, newest
 * first): failed (status not 2xx) workflow_job deliveries of installation
 * (any when 0) whose guid has no successful delivery among items, one per
 * guid, the newest; written to ids (up to max) newest first, returns how
 * many (0 when out of memory). */
struct gh_delivery;
size_t recovery_pick_redeliveries(const struct gh_delivery *items, size_t n,
                                  int64_t installation, int64_t *ids,
                                  size_t max);
#endif

#endif
