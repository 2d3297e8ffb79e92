#ifndef RUNFLEET_KUBE_NODES_H
#define RUNFLEET_KUBE_NODES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "capacity.h"
#include "config.h"
#include "kube.h"

/* Cluster capacity from two watches: Nodes, and every bound Pod of the
 * cluster (fieldSelector spec.nodeName!=). Each Ready, schedulable node is
 * a capacity node of source "its runfleet.dev/node-group label" (or
 * "default"), with GPUs = allocatable nvidia.com/gpu (indices 0..n-1 are
 * bookkeeping only: the device plugin picks the devices), and CPU and
 * memory = allocatable minus what the non-terminal pods that are not this
 * fleet's request there (this fleet's pods are counted by their holds).
 * Node labels that a pool's node_selector names, and NoSchedule/NoExecute
 * taints, go to capacity so pools match and tolerate as the scheduler
 * would. Cordoned, NotReady or deleted nodes leave capacity; holds stay.
 * A node reported GPU-unhealthy keeps its GPUs out of capacity until the
 * watch has shown it with the gpu_unhealthy cordon or taint and then
 * without it (an operator lifted it); with action none, until restart.
 * Pure: fed decoded watch events, it only writes to capacity. */

#define KUBE_NODES_DEFAULT_SOURCE "default"

struct kube_nodes;

/* fleet: the runfleet.dev/fleet value of this fleet's pods. cfg and cap
 * must outlive it. NULL when out of memory. */
struct kube_nodes *kube_nodes_new(const struct config *cfg,
                                  struct capacity *cap, const char *fleet);
void kube_nodes_destroy(struct kube_nodes *kn);

/* A Node watch event. 0, or a negative code when the object is not a
 * usable node (ignored). */
int kube_nodes_node_event(struct kube_nodes *kn, enum kube_event_type type,
                          const json_t *node);
/* A Pod watch event (any namespace). */
int kube_nodes_pod_event(struct kube_nodes *kn, enum kube_event_type type,
                         const json_t *pod);

/* The kubernetes.io/hostname label of node (its name when absent), or NULL
 * when the node is unknown. */
const char *kube_nodes_hostname(const struct kube_nodes *kn, const char *node);
/* 1 when node is known, Ready and schedulable; 0 otherwise. */
int kube_nodes_usable(const struct kube_nodes *kn, const char *node);
/* 1 when the node watch knows node at all (present, any state). */
int kube_nodes_known(const struct kube_nodes *kn, const char *node);

/* A runner on node failed its GPU check: the node's GPUs leave capacity
 * (see above). 0 when newly out, 1 when it already was, -ENOENT when the
 * watch does not know node. */
int kube_nodes_gpu_unhealthy(struct kube_nodes *kn, const char *node);
/* 0 while node's GPUs are out for GPU health, else 1. */
int kube_nodes_gpu_healthy(const struct kube_nodes *kn, const char *node);
/* The node's metadata.uid, or NULL when unknown. */
const char *kube_nodes_uid(const struct kube_nodes *kn, const char *node);

/* A quantity ("4", "3500m", "0.5", "16Gi", "1e3", "15896512Ki") in
 * thousandths of its unit, rounded up. 0 or -EINVAL. */
int kube_quantity_milli(const char *s, uint64_t *out);
/* The same in whole units, rounded up (bytes, GPUs). */
int kube_quantity_units(const char *s, uint64_t *out);

#endif
