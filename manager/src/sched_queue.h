#ifndef RUNFLEET_SCHED_QUEUE_H
#define RUNFLEET_SCHED_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sched_table.h"
#include "scheduler.h"

/* Part of the scheduler, used by scheduler.c only: the queued jobs of the
 * known pools kept in start order as they come and go.
 *
 * The order is priority, then round-robin across repositories, then
 * arrival: a job's rank is the number of its repository's jobs running at
 * its priority plus those of it queued before it there, and jobs go by
 * (priority, rank, seq). A group holds one repository's queued jobs at one
 * priority (a Fenwick tree over arrival slots counts those before a job in
 * O(log n)); a subgroup, the part of a group in one pool, in arrival
 * order. Each pool has a heap of its subgroups keyed by their first job's
 * (rank, seq). A walk merges the heaps lazily, so reading the first k jobs
 * costs O(k log n) however many are queued. */

struct sched_qgroup;
struct sched_qsub;

/* What a queued job carries, inside the scheduler's record of it. */
struct sched_qnode {
  const struct sched_job *job; /* its seq, pool and repo */
  struct sched_qnode *next, *prev;
  struct sched_qsub *sub; /* NULL while not in the order */
  uint32_t slot;
};

struct sched_qheap {
  struct sched_qsub **v;
  size_t n, cap;
};

/* One step of a walk: node is the next job in order in pool. */
struct sched_qcursor {
  const struct sched_qnode *node;
  uint64_t seq;
  uint32_t rank;
  uint32_t hpos; /* the heap entry it stands for, or SCHED_QJOB */
  int priority;
  int pool;
};

#define SCHED_QJOB UINT32_MAX

/* Zeroed, with cfg set, is empty. */
struct sched_queue {
  const struct config *cfg; /* the pools' priorities */
  struct sched_table groups;
  struct sched_qheap heaps[CFG_MAX_POOLS];
  struct sched_qcursor *walk;
  size_t nwalk, walk_cap;
};

/* Finds or makes the group of job j (its pool known), and when j is to be
 * queued, what linking it needs, so that sched_queue_link cannot fail.
 * NULL when memory runs out, with nothing changed. */
struct sched_qgroup *sched_queue_prepare(struct sched_queue *q,
                                         const struct sched_job *j, int queued);
/* Appends n, the newest queued job, to its group g (prepared). */
void sched_queue_link(struct sched_queue *q, struct sched_qgroup *g,
                      struct sched_qnode *n);
/* Takes n out of the order; returns its group, for sched_queue_release
 * once the job is wherever it goes. */
struct sched_qgroup *sched_queue_unlink(struct sched_queue *q,
                                        struct sched_qnode *n);
/* The group of job j, NULL when it has none. */
struct sched_qgroup *sched_queue_group(const struct sched_queue *q,
                                       const struct sched_job *j);
/* One more (1) or one less (-1) of g's jobs is running. */
void sched_queue_running(struct sched_queue *q, struct sched_qgroup *g,
                         int delta);
/* Frees g when no job of it is queued or running. */
void sched_queue_release(struct sched_queue *q, struct sched_qgroup *g);
/* Frees every group and heap; the nodes' sub pointers are left for the
 * caller to clear. */
void sched_queue_clear(struct sched_queue *q);
void sched_queue_free(struct sched_queue *q);
/* Whether pool has queued jobs in the order. */
int sched_queue_has(const struct sched_queue *q, size_t pool);

/* A walk over the pools added to it, in start order. Each job taken
 * costs O(log n). Adding and expanding return -1 when memory runs out. */
void sched_walk_reset(struct sched_queue *q);
int sched_walk_add(struct sched_queue *q, size_t pool);
/* Takes the next job in order into *c; -1 when none is left. */
int sched_walk_pop(struct sched_queue *q, struct sched_qcursor *c);
/* Brings in what follows c in its pool; a pool whose c is not expanded
 * drops out of the walk. */
int sched_walk_expand(struct sched_queue *q, const struct sched_qcursor *c);

#endif
