#ifndef RUNFLEET_KUBE_HEALTH_H
#define RUNFLEET_KUBE_HEALTH_H

#include <stddef.h>

#include <jansson.h>

#include "backend.h"
#include "backend_kube.h"
#include "config.h"
#include "kube_nodes.h"

/* GPU health on Kubernetes: what the backend does to a node whose runner
 * failed its pre-job GPU check (docs/GPU-SETUP.md). Once per node:
 *   - its GPUs leave capacity (kube_nodes_gpu_unhealthy);
 *   - backend.kubernetes.gpu_unhealthy.action cordon: PATCH
 *     spec.unschedulable=true; taint: GET the node, then a merge patch of
 *     spec.taints with its resourceVersion (409: again, a few times);
 *     none: nothing on the cluster;
 *   - a core/v1 Event on the Node (namespace default, where Node events
 *     go), reason KUBE_HEALTH_REASON, with the runner and the GPUs.
 * A second report for the node sends nothing. Requests fail into the log:
 * the GPUs stay out of capacity either way. */

#define KUBE_HEALTH_REASON "RunfleetGPUUnhealthy"
#define KUBE_HEALTH_EVENT_NS "default"
#define KUBE_HEALTH_MAX_TRIES 5
#define KUBE_HEALTH_MESSAGE_MAX 1024

struct kube_health;

/* cfg is copied; nodes and api must outlive kh. fleet names the reporter
 * (source.host of the Events). NULL when out of memory. */
struct kube_health *kube_health_new(const struct cfg_kubernetes *cfg,
                                    struct kube_nodes *nodes,
                                    const struct backend_kube_api *api,
                                    void *api_arg, const char *fleet);
/* Frees kh and forgets requests in flight (their callbacks must not run
 * after: the client is closed first). */
void kube_health_destroy(struct kube_health *kh);

/* A failed GPU check on r->node. 0 when the node was newly taken out, 1
 * when it already was, -ENOENT for a node the watch does not know. */
int kube_health_report(struct kube_health *kh,
                       const struct backend_gpu_report *r);

/* The bodies, for tests. The Event for r at time now (RFC 3339), action
 * words the message; uid may be NULL. */
json_t *kube_health_event(const struct backend_gpu_report *r, const char *uid,
                          const char *action, const char *now,
                          const char *fleet);
/* The merge patch that adds the taint to node (a Node object): NULL when
 * it already carries key with effect, or out of memory (*already says). */
json_t *kube_health_taint_patch(const struct cfg_gpu_unhealthy *g,
                                const json_t *node, int *already);

#endif
