#ifndef RUNFLEET_DEVSERVER_ETA_H
#define RUNFLEET_DEVSERVER_ETA_H

/* When a queued dev server reservation will start (docs/DEVSERVERS.md,
 * "The queue"): a simulation per node of when what holds GPUs lets go of
 * them (a dev server at its expiry, a CI runner at its pool's p90 job
 * duration or a configured maximum), the reservations ahead in the queue
 * placed first, each on one node (never GPUs summed across nodes), in
 * strict order: none starts before the one ahead of it. What cannot be
 * told (a hold with no release time in the way, a request no node can
 * ever take) is said so: the answer is "unknown", never a made-up 0.
 * Pure: no clock, no I/O. */

#include <stddef.h>
#include <stdint.h>

#define DEV_ETA_UNKNOWN UINT64_MAX

/* Something holding GPUs of a node. release_ms: when it lets them go
 * (wall-clock ms), DEV_ETA_UNKNOWN when nobody can tell. */
struct dev_eta_hold {
  uint64_t release_ms;
  unsigned gpus;
};

/* A node that could take the request: its healthy GPUs that no hold has
 * now, and the holds on the others. Nodes that do not match the flavor
 * (selector, GPU type) are left out by the caller. */
struct dev_eta_node {
  unsigned free_gpus;
  const struct dev_eta_hold *holds;
  size_t nholds;
};

/* A reservation in the queue: its GPUs and how long it holds them once
 * started. */
struct dev_eta_request {
  unsigned gpus;
  uint64_t duration_ms;
};

/* The start time of each of queue[0..n) (the queue in order, ours last),
 * from now_ms, into starts[i]; DEV_ETA_UNKNOWN for those that cannot be
 * told (and every one after them, which waits behind). At most
 * DEV_ETA_MAX_NODES nodes and DEV_ETA_MAX_EVENTS holds in all. 0, or
 * -EINVAL past those limits. */
#define DEV_ETA_MAX_NODES 1024
#define DEV_ETA_MAX_EVENTS 16384
int dev_eta(const struct dev_eta_node *nodes, size_t nnodes,
            const struct dev_eta_request *queue, size_t n, uint64_t now_ms,
            uint64_t *starts);

#endif
