#ifndef RUNFLEET_CAPACITY_H
#define RUNFLEET_CAPACITY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* What the fleet can hold and who holds it. The inventory is made of
 * sources (the local host; on Kubernetes, node groups), each of nodes with
 * GPUs by index, CPU in millicores and memory in bytes. A hold is taken for
 * a holder (a runner now, a dev server later) when the scheduler decides to
 * start it, on exactly one node, and released when it is gone. A request
 * fits only if one node can take all of it: two nodes with one free GPU
 * each do not fit a 2-GPU runner. Health is per GPU and per node: an
 * unhealthy GPU or a node that is not ready leaves capacity, and a hold on
 * it stays until its holder is released.
 *
 * The module only keeps books: backends describe their nodes, the runner
 * control takes and releases holds, the API reads. */

#define CAP_NAME_MAX 128 /* node and source names */
#define CAP_MAX_NODE_GPUS CFG_MAX_GPUS
#define CAP_MAX_SELECTOR 16 /* label pairs a request or node can carry */
#define CAP_MAX_BLOCK_KEYS 64

enum cap_holder_kind { CAP_HOLDER_RUNNER, CAP_HOLDER_DEVSERVER };

struct cap_label {
  const char *key, *value;
};

/* A node taint (Kubernetes): with effect NoSchedule or NoExecute, only a
 * request that tolerates it may be placed there. value may be NULL. */
struct cap_taint {
  const char *key, *value, *effect;
};

/* What one runner (or dev server) needs, all on one node. selector lists
 * node labels the node must carry (a pool's node_selector); none means any
 * node. memory 0 asks for no memory. */
struct cap_request {
  unsigned gpus;
  unsigned cpu_milli;
  uint64_t memory;
  const struct cap_label *selector;
  size_t nselector;
  const struct cfg_toleration *tolerations; /* the pool's */
  size_t ntolerations;
};

/* Where capacity put a holder: the node and the GPU indices it holds
 * exclusively, in ascending order. */
struct cap_placement {
  char source[CAP_NAME_MAX];
  char node[CAP_NAME_MAX];
  int gpus[CAP_MAX_NODE_GPUS];
  size_t ngpus;
  unsigned cpu_milli;
  uint64_t memory;
};

/* A node as a backend describes it. memory 0 means not known: memory is
 * then not limited on that node. labels are copied. */
struct cap_node_desc {
  const char *source; /* "local", or the node group */
  const char *name;
  const int *gpus; /* device indices */
  size_t ngpus;
  unsigned cpu_milli;
  uint64_t memory;
  const struct cap_label *labels;
  size_t nlabels;
  const struct cap_taint *taints; /* copied; at most CAP_MAX_SELECTOR */
  size_t ntaints;
};

/* Totals over every node, for metrics and the API. */
struct cap_totals {
  unsigned nodes, nodes_ready;
  unsigned gpus_total, gpus_held, gpus_unhealthy, gpus_free;
  unsigned cpu_milli_total, cpu_milli_held;
  uint64_t memory_total, memory_held;
  unsigned holds;
};

/* One GPU as the API shows it. holder is NULL when free. */
struct cap_gpu_view {
  int index;
  int healthy;
  const char *holder;
  enum cap_holder_kind holder_kind;
};

struct capacity; /* opaque */

struct capacity *capacity_new(void);
/* Frees the books; holds still taken are dropped. */
void capacity_destroy(struct capacity *c);

/* Adds a node or updates the one of that name (its allocatable resources
 * and labels; holds on it stay). 0, -EINVAL (bad description), -ENOMEM,
 * -ENOSPC (too many nodes). */
int capacity_node_set(struct capacity *c, const struct cap_node_desc *desc);
/* The node is gone: nothing new is placed on it; holds on it stay until
 * released (their holders are reported lost by the backend). -ENOENT. */
int capacity_node_remove(struct capacity *c, const char *node);
/* A node that is not ready (cordoned, NotReady) takes no new holds. */
int capacity_node_set_ready(struct capacity *c, const char *node, int ready);
/* Marks one GPU of a node (healthy 0 or 1). An unhealthy GPU takes no new
 * hold; one already held stays held until released. -ENOENT. */
int capacity_gpu_set_health(struct capacity *c, const char *node, int gpu,
                            int healthy);

/* Whether one node can take the whole request now: 1 or 0. */
int capacity_fits(const struct capacity *c, const struct cap_request *req);
/* The same for holder's request: GPUs claimed for holder count as free. */
int capacity_fits_for(const struct capacity *c, const char *holder,
                      const struct cap_request *req);
/* Claims a node for holder, the head of a dev server queue whose request
 * does not fit yet: the node (matching, with enough healthy GPUs, no other
 * claim) with the most free GPUs. From then on req->gpus of that node's
 * free GPUs go to no other holder, so running holders drain it and no new
 * CI runner starts there; holder's own capacity_hold may use them, and
 * replaces the claim. One claim per holder and per node; claiming again
 * moves or resizes it. The node's name into node. 0, -ENOSPC (no node
 * could ever take it), -EINVAL, -ENOMEM. */
int capacity_claim(struct capacity *c, const char *holder,
                   const struct cap_request *req, char *node, size_t size);
/* Drops holder's claim. 0 or -ENOENT. */
int capacity_unclaim(struct capacity *c, const char *holder);
/* Takes a hold for holder on the node that fits best (fewest free GPUs,
 * then fewest free CPU; the lowest free GPU indices). 0 and *out filled,
 * -ENOSPC when no node fits, -EEXIST when holder already holds. */
int capacity_hold(struct capacity *c, const char *holder,
                  enum cap_holder_kind kind, const struct cap_request *req,
                  struct cap_placement *out);
/* Takes the hold a backend reports it already runs (adoption after a
 * restart): on that node and those GPUs exactly. -ENOENT (node unknown),
 * -EBUSY (a unit held by another), -EEXIST. */
int capacity_hold_at(struct capacity *c, const char *holder,
                     enum cap_holder_kind kind,
                     const struct cap_placement *where);
/* Releases holder's hold. 0 or -ENOENT. */
int capacity_release(struct capacity *c, const char *holder);
/* holder's placement, or NULL. Valid until the hold is released. */
const struct cap_placement *capacity_hold_find(const struct capacity *c,
                                               const char *holder);

/* A small key naming what a request draws on (its source, GPU or CPU), so
 * the scheduler can hold back later requests for the same resources when
 * the first in order does not fit, while others go on. < CAP_MAX_BLOCK_KEYS. */
unsigned capacity_block_key(const struct capacity *c,
                            const struct cap_request *req);

void capacity_totals(const struct capacity *c, struct cap_totals *out);

/* Read access for the API: nodes in the order they were added. */
size_t capacity_nnodes(const struct capacity *c);
/* Fills the node's name, source, readiness and its GPUs (at most max). */
int capacity_node_view(const struct capacity *c, size_t i, const char **name,
                       const char **source, int *ready,
                       struct cap_gpu_view *gpus, size_t max, size_t *ngpus);

/* Whether tolerations tolerate the taint t (Kubernetes' rules: an empty
 * key with Exists tolerates everything; no effect matches every effect). */
int capacity_tolerates(const struct cfg_toleration *tolerations, size_t n,
                       const struct cap_taint *t);

/* The request of one runner of pool (its GPUs, CPU slots as millicores,
 * memory, node selector, tolerations). selector must have room for
 * CAP_MAX_SELECTOR. */
void capacity_request_for_pool(const struct cfg_pool *pool,
                               struct cap_request *req,
                               struct cap_label *selector);

#endif
