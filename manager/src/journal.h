#ifndef RUNFLEET_JOURNAL_H
#define RUNFLEET_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "events.h"
#include "metrics.h"

/* The journal: what runfleetd accepted, in SQLite (WAL), so that a restart
 * or a crash loses nothing acknowledged. Three kinds of record:
 *   - job events (every accepted workflow_job delivery, with its delivery
 *     id, which also makes dedupe survive restarts);
 *   - runners (one row per runner this fleet made, replaced on each change
 *     of state, deleted when it is gone);
 *   - meta values (small key/value pairs, e.g. the deliveries cursor).
 * Writes are queued on the loop and committed on the journal's own thread,
 * one transaction per batch: what was queued while the previous commit ran.
 * A job event's callback runs on the loop after its transaction committed
 * (or failed); only then may the delivery be applied and answered.
 *
 * Durability: WAL with synchronous=FULL by default, so a commit survives a
 * power loss; journal.sync: normal keeps it across a crash of runfleetd
 * (the WAL is in the page cache) but may lose the last commits on power
 * loss. Either way group commit pays one fsync per batch, not per event.
 *
 * A journal file that SQLite finds corrupt (or that is not a journal) is
 * moved aside as <path>.damaged-<unix time> and a new one started; the
 * caller learns of it and runs recovery against GitHub. */

#define JOURNAL_SCHEMA_VERSION 2
/* Delivery ids kept for dedupe; GitHub redelivers at most 3 days back. */
#define JOURNAL_DELIVERIES_KEEP 200000
/* Finished jobs whose events are kept for the API after compaction. */
#define JOURNAL_FINISHED_KEEP 1000
#define JOURNAL_META_VALUE_MAX 512

enum journal_sync {
  JOURNAL_SYNC_FULL,  /* fsync at every commit (default) */
  JOURNAL_SYNC_NORMAL /* fsync at checkpoints only */
};

struct journal; /* opaque */

/* Outcome of a job event's commit, given to its callback:
 *   0          written; apply it
 *   1          its delivery id was journaled before: a duplicate
 *   -ENOSPC    the disk (or the journal's size limit) is full
 *   -EIO       any other failure to write
 *   -ECANCELED the journal was closed before the event was written */
typedef void (*journal_done_cb)(void *arg, int status);

/* A runner as the journal keeps it. */
struct journal_runner {
  char name[128];
  char pool[64];
  char state[16]; /* "starting", "idle", "busy", ... */
  int64_t gh_id;
  int64_t job_id;
  char node[128];
  int gpus[16];
  size_t ngpus;
  uint64_t created_ms; /* wall clock */
};

/* A dev server reservation as the journal keeps it (devserver.h has the
 * meaning of each field); replayed in arrival order (seq), so the queue of
 * each flavor comes back in the same order. */
struct journal_devserver {
  char id[24];
  char user[72];
  char flavor[40];
  char state[16]; /* "queued", "preparing", ... */
  unsigned gpus;
  uint64_t seq;
  uint64_t created_ms, preparing_ms, active_ms, ended_ms; /* wall clock */
  uint64_t duration_ms, extended_ms, expires_at_ms;
  unsigned warned;
  char reason[160];
};

/* What a replay hands back, in journal order. */
struct journal_replay_ops {
  /* A journaled job event; ev is valid during the call; at_ms is the wall
   * clock when it was accepted. */
  void (*job_event)(void *ctx, const struct event *ev, uint64_t at_ms);
  /* A runner that was not gone when the journal was last written. */
  void (*runner)(void *ctx, const struct journal_runner *r);
  /* A dev server reservation, live or ended, oldest first; may be NULL. */
  void (*devserver)(void *ctx, const struct journal_devserver *d);
};

struct journal_stats {
  uint64_t commits;     /* transactions committed */
  uint64_t events;      /* job events written */
  uint64_t duplicates;  /* job events refused as already journaled */
  uint64_t failures;    /* transactions that failed */
  uint64_t batch_max;   /* most job events in one transaction */
  double commit_last_s; /* the last commit's duration */
  int64_t file_bytes;   /* journal file plus WAL, at the last commit */
  uint64_t checkpoints; /* WAL checkpoints, each after a batch went back */
};

struct journal_options {
  const char *path;
  enum journal_sync sync;
  /* Largest journal file in bytes (SQLite max_page_count); 0: no limit
   * but the disk's. */
  uint64_t max_bytes;
};

/* Opens (creating or migrating) the journal at opts->path. *damaged is set
 * to 1 when an earlier file was unreadable and was moved aside. Returns 0
 * or a negative code (logged): -EINVAL for a journal written by a newer
 * runfleetd, -EIO when the file cannot be opened or created at all. */
int journal_open(struct journal **out, uv_loop_t *loop,
                 const struct journal_options *opts, struct metrics *m,
                 int *damaged);

/* Hands every journaled job event and live runner to ops, in order.
 * Synchronous: call once, after journal_open and before journal_start. */
int journal_replay(struct journal *j, const struct journal_replay_ops *ops,
                   void *ctx);

/* Starts the commit thread and its loop handle. */
int journal_start(struct journal *j);

/* Queues ev (which must stay valid and unchanged until cb runs) for the
 * next transaction; cb(arg, status) runs on the loop once, after that
 * transaction ended, in the order events were queued. Returns 0, or -1
 * when out of memory or closing (cb never runs). */
int journal_append_event(struct journal *j, const struct event *ev,
                         uint64_t at_ms, journal_done_cb cb, void *arg);

/* Queues a runner's state (copied) for the next transaction: replaced by
 * name; gone deletes it. A failed transaction keeps these for the next. */
int journal_put_runner(struct journal *j, const struct journal_runner *r);
/* The same, with cb(arg, status) on the loop once it committed (0) or
 * could not be (a negative code, as for events; it is not tried again). */
int journal_put_runner_cb(struct journal *j, const struct journal_runner *r,
                          journal_done_cb cb, void *arg);
int journal_runner_gone(struct journal *j, const char *name);
/* Queues a dev server's reservation (copied) like a runner's: replaced by
 * id, cb may be NULL. */
int journal_put_devserver(struct journal *j, const struct journal_devserver *d,
                          journal_done_cb cb, void *arg);
/* Removes an ended reservation for good. */
int journal_devserver_gone(struct journal *j, const char *id);

/* Meta values: get reads what was put (served from memory); put queues
 * the write like a runner's. Keys and values are short strings. */
int journal_meta_get(const struct journal *j, const char *key, char *buf,
                     size_t size);
int journal_meta_put(struct journal *j, const char *key, const char *value);

void journal_get_stats(const struct journal *j, struct journal_stats *st);

/* Writes what is queued, stops the thread, closes handles; queued events
 * that could not be written get -ECANCELED. done_cb(arg) runs when the
 * journal may be destroyed. */
void journal_close(struct journal *j, void (*done_cb)(void *arg), void *arg);
void journal_destroy(struct journal *j);

#ifdef RUNFLEET_UNITTEST
/* Runs compaction now (synchronously; only before journal_start). */
int journal_compact_now(struct journal *j);
#endif

#endif
