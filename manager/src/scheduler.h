#ifndef RUNFLEET_SCHEDULER_H
#define RUNFLEET_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Pools, label matching, demand and supply per pool, capacity-aware start
 * order, idle timeouts. Runners are fungible within a pool: the scheduler
 * tracks how many jobs are queued per pool and how many runners are
 * starting, idle or busy, never "the runner for job X". The binding of a
 * job to a runner is learned from in_progress events.
 *
 * The scheduler is policy only: it changes state when told about events and
 * asks its owner to act (start or retire a runner) through sched_ops. It
 * never touches the loop, GitHub or a backend itself. Timers (backoff, idle
 * and start timeouts, TTLs) run on the monotonic clock in ms the caller
 * passes as now_ms; the times a job records (queued, started, completed)
 * are wall-clock Unix ms, so that a journal can replay them.
 *
 * Queued jobs are kept in start order as they come and go: per pool, a
 * heap of (repository, pool) queues keyed by their first job's place in
 * the round-robin. A pass walks that order only as far as it starts
 * runners, so its cost does not grow with the queue; a pass with nothing
 * changed since the last one, no deadline reached and no refusal to retry
 * does nothing at all. Strings (repositories, job and runner names, label
 * sets) are interned and reference-counted, and jobs are found by id in a
 * hash table. */

#define SCHED_NAME_MAX 96  /* job and runner names are cut to 95 bytes */
#define SCHED_REPO_MAX 200 /* repositories to 199 */
#define SCHED_MAX_JOB_LABELS CFG_MAX_LABELS
#define SCHED_COMPLETED_KEEP 1000 /* finished jobs kept for the API */
#define SCHED_BACKOFF_MIN_MS 1000
#define SCHED_BACKOFF_MAX_MS 60000
/* How long a runner that exited cleanly keeps covering a queued job while
 * the webhook naming its job is on its way (webhooks lag behind runners). */
#define SCHED_FINISHED_TTL_MS 60000
/* GitHub cancels a job that waits 24 h for a self-hosted runner and stops
 * one that runs 5 days; a job still open an hour past that lost its
 * completed webhook and stops counting as demand. */
#define SCHED_QUEUED_TTL_MS (25ull * 3600 * 1000)
#define SCHED_RUNNING_TTL_MS ((5ull * 24 + 1) * 3600 * 1000)
/* Capacity sources a pool can draw on (see sched_ops.block_key). */
#define SCHED_MAX_BLOCK_KEYS 64

enum sched_job_status {
  SCHED_JOB_WAITING,
  SCHED_JOB_QUEUED,
  SCHED_JOB_IN_PROGRESS,
  SCHED_JOB_COMPLETED,
  /* Never a job's status: the `from` of job_changed for a job just
   * recorded. */
  SCHED_JOB_NONE
};

enum sched_runner_state {
  SCHED_RUNNER_STARTING, /* JIT config requested or process being started */
  SCHED_RUNNER_IDLE,     /* running, no job bound yet */
  SCHED_RUNNER_BUSY,     /* bound to a job by an in_progress event */
  SCHED_RUNNER_STOPPING, /* being deregistered and stopped */
  SCHED_RUNNER_FINISHED  /* exited cleanly before the event naming its job
                            came: still covers one queued job until then */
};

/* A job as the API sees it. The strings and the label set are interned:
 * shared with every other job that has the same, owned by the scheduler,
 * valid while the job is. */
struct sched_job {
  int64_t id;
  int64_t run_id;
  const char *repo;
  const char *name;
  char *const *labels; /* lower-cased */
  size_t nlabels;
  int pool; /* index into the pools, -1 when none matched */
  enum sched_job_status status;
  char conclusion[24];
  const char *runner; /* runner that took it, "" until known */
  /* Wall-clock Unix ms (sched_set_wall_clock), 0 when not reached. */
  uint64_t queued_ms, started_ms, completed_ms;
  uint64_t seq; /* arrival order, for FIFO */
};

struct sched_runner {
  char name[SCHED_NAME_MAX];
  int pool; /* index into the pools */
  enum sched_runner_state state;
  int64_t gh_id;  /* GitHub runner id, 0 until the JIT config came */
  int64_t job_id; /* bound job, 0 when none */
  int took_job;   /* an in_progress event named this runner */
  int gpus[CFG_MAX_GPUS];
  size_t ngpus;
  uint64_t created_ms, idle_since_ms, state_ms;
  void *owner_data; /* for the owner of sched_ops */
};

struct sched_ops {
  /* Begin starting runner r (r->state is STARTING). Asynchronous: the owner
   * later calls sched_runner_running() or sched_runner_exited(). Returns 0,
   * -ENOSPC when the pool does not fit the capacity now (r is dropped), or
   * another negative code (r is dropped and counted as a failure). It must
   * not call back into the scheduler before returning. */
  int (*start)(void *ctx, struct sched_runner *r);
  /* Deregister and stop runner r (r->state is STOPPING). Returns 0 when
   * that began: the owner calls sched_runner_exited() when it is gone, or
   * sched_runner_keep() when GitHub says it is busy, never before
   * returning. A negative return means it could not begin now; the runner
   * stays idle and is tried again on a later pass. */
  int (*retire)(void *ctx, struct sched_runner *r);
  /* Whether one more runner of pool fits the capacity now. */
  int (*fits)(void *ctx, const struct cfg_pool *pool);
  /* Optional. Names the capacity source pool draws on, a key below
   * SCHED_MAX_BLOCK_KEYS (larger ones are taken modulo it). When the first
   * job in order cannot get capacity, later jobs of pools with the same
   * key wait behind it, so big requests are not starved; other keys go
   * on. NULL: GPU pools share one key and CPU pools another. */
  unsigned (*block_key)(void *ctx, const struct cfg_pool *pool);
  /* Optional. Called after every change of a job's status, with the
   * status it had (SCHED_JOB_NONE for a job just recorded), and with from
   * equal to j->status when other fields of j changed (its runner became
   * known, or a late event set its conclusion or start). It must not call
   * back into the scheduler. */
  void (*job_changed)(void *ctx, const struct sched_job *j,
                      enum sched_job_status from);
};

struct sched_pool_stats {
  unsigned queued, waiting, in_progress;
  unsigned starting, idle, busy, stopping, finished;
  uint64_t jobs_completed, runner_failures, unmatched;
  uint64_t backoff_until_ms;
};

struct scheduler; /* opaque */

/* Creates a scheduler over cfg's pools. cfg must stay valid until
 * sched_set_config() swaps it or the scheduler is destroyed. */
struct scheduler *sched_new(const struct config *cfg,
                            const struct sched_ops *ops, void *ctx);
void sched_destroy(struct scheduler *s);

/* Sets the clock of the times jobs record, in Unix ms; NULL restores the
 * default, clock_gettime(CLOCK_REALTIME). */
void sched_set_wall_clock(struct scheduler *s, uint64_t (*wall_ms)(void *arg),
                          void *arg);
/* The scheduler's wall clock now, in Unix ms. */
uint64_t sched_wall_ms(const struct scheduler *s);

/* Sets the fleet tag in runner names: "rf-<pool>-<tag>-<boot>-<n>", where
 * tag is stable for one state_dir across restarts (so leftovers of an
 * earlier run can be recognised) and boot is random per process (so names
 * never repeat). tag is 8 characters of [0-9a-f] (longer ones are cut to
 * 8): with pool names of at most 32 characters a name has at most 60, and
 * GitHub refuses runner names over 64. */
void sched_set_tag(struct scheduler *s, const char *tag);
const char *sched_tag(const struct scheduler *s);

/* Whether name is a runner name this fleet (tag) gives out, in any pool
 * and boot: exactly "rf-<pool>-<tag>-<4 lowercase hex>-<decimal>", pool
 * not empty. */
int sched_name_is_ours(const struct scheduler *s, const char *name);

/* Swaps in a new config after a reload. Pools are matched by name; runners
 * and jobs of a pool that disappeared are kept until they end, counted
 * against no pool. */
void sched_set_config(struct scheduler *s, const struct config *cfg);

/* Picks the pool for a label set: a pool matches when its labels include
 * all of them (case-insensitive, "self-hosted" implied); the match with the
 * fewest labels wins, then the earliest in the config. -1 for none. */
int sched_match_pool(const struct config *cfg, char *const *labels,
                     size_t nlabels);

/* Events from workflow_job webhooks. Events may come out of order; a job's
 * status only moves forward. Returns 0, or -1 when the job matched no
 * pool (logged and counted, nothing else changes). */
struct sched_job_event {
  int64_t job_id, run_id;
  const char *repo, *name;
  char *const *labels;
  size_t nlabels;
  const char *runner_name; /* in_progress, completed; may be NULL */
  const char *conclusion;  /* completed; may be NULL */
};
int sched_job_waiting(struct scheduler *s, const struct sched_job_event *ev,
                      uint64_t now_ms);
int sched_job_queued(struct scheduler *s, const struct sched_job_event *ev,
                     uint64_t now_ms);
int sched_job_in_progress(struct scheduler *s, const struct sched_job_event *ev,
                          uint64_t now_ms);
int sched_job_completed(struct scheduler *s, const struct sched_job_event *ev,
                        uint64_t now_ms);

/* Reports from the owner about a runner it was asked to start or stop.
 * An exit with status 0 before any event named the runner's job means the
 * ephemeral runner ran a job we have not heard of yet (it is kept as
 * FINISHED); any other exit before a job is a failure. */
void sched_runner_running(struct scheduler *s, const char *name, int64_t gh_id,
                          const int *gpus, size_t ngpus, uint64_t now_ms);
void sched_runner_exited(struct scheduler *s, const char *name, int status,
                         uint64_t now_ms);
/* A runner asked to retire stays: busy when GitHub said it has a job. */
void sched_runner_keep(struct scheduler *s, const char *name, int busy,
                       uint64_t now_ms);
/* The runner never started, for a reason that is not its pool's fault (a
 * JIT request whose result is unknown, no capacity after all): it goes
 * without counting as a failure, so the pool does not back off. */
void sched_runner_dropped(struct scheduler *s, const char *name,
                          uint64_t now_ms);

/* Takes over a runner an earlier run started that the backend still runs
 * (after a restart): in pool, registered as gh_id, IDLE when running else
 * STARTING; later in_progress events bind it to its job as usual.
 * Returns 0, -EINVAL (unknown pool, name in use or too long), -ENOMEM. */
int sched_runner_adopt(struct scheduler *s, const char *name, size_t pool,
                       int64_t gh_id, const int *gpus, size_t ngpus,
                       int running, uint64_t now_ms);

/* Decides and acts: starts runners for uncovered demand and min_idle in
 * order (priority, then round-robin across repositories, then FIFO) within
 * max_runners and capacity; retires surplus and idle-timed-out runners.
 * Returns the number of start and retire actions taken. Cheap to call
 * often: when nothing changed since the last pass, no deadline came and
 * nothing was refused (capacity, a retirement), it returns 0 at once. */
int sched_reconcile(struct scheduler *s, uint64_t now_ms);

/* Read access for the API and metrics. */
size_t sched_npools(const struct scheduler *s);
const struct cfg_pool *sched_pool(const struct scheduler *s, size_t i);
void sched_pool_stats(const struct scheduler *s, size_t i,
                      struct sched_pool_stats *out);
/* Jobs in no particular order; an index is valid until the next event. */
size_t sched_njobs(const struct scheduler *s);
const struct sched_job *sched_job_at(const struct scheduler *s, size_t i);
size_t sched_nrunners(const struct scheduler *s);
const struct sched_runner *sched_runner_at(const struct scheduler *s, size_t i);
const struct sched_runner *sched_runner_find(const struct scheduler *s,
                                             const char *name);
const struct sched_job *sched_job_find(const struct scheduler *s, int64_t id);
/* Jobs that matched no pool since start. */
uint64_t sched_unmatched_total(const struct scheduler *s);

/* Names used in the API and metrics. */
const char *sched_job_status_name(enum sched_job_status st);
const char *sched_runner_state_name(enum sched_runner_state st);

#ifdef RUNFLEET_UNITTEST
/* References held on an interned string (0: not interned), and the number
 * of interned strings and label sets. */
unsigned sched_intern_refs(const struct scheduler *s, const char *str);
size_t sched_intern_count(const struct scheduler *s);
/* Writes the ids of up to max queued jobs of known pools in start order,
 * as a pass walks them; returns how many were queued in all. */
size_t sched_start_order(struct scheduler *s, int64_t *ids, size_t max);
#endif

#endif
