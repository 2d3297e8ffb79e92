#ifndef RUNFLEET_BACKEND_KUBE_H
#define RUNFLEET_BACKEND_KUBE_H

#include <jansson.h>
#include <uv.h>

#include "backend.h"
#include "config.h"
#include "kube.h"

/* Runners as Pods in backend.kubernetes.namespace (kube_pod.h builds them),
 * on the node capacity chose; capacity comes from the Node and Pod watches
 * (kube_nodes.h). Per runner it sends four requests: create the Pod,
 * create its Secret (the JIT config, owned by the Pod), and at the end
 * delete both. Everything else it learns from watches:
 *   - PLACED when the pod is bound, RUNNING when it runs, EXITED with the
 *     runner container's exit code when it Succeeded or Failed;
 *   - LOST when the pod vanishes or its node is deleted;
 *   - a pod Pending past its pool's pending_timeout (Unschedulable, image
 *     pull errors, CreateContainerConfigError) is deleted and reported LOST
 *     (-ETIMEDOUT) with its reason; the pool backs off, and after
 *     image_pull_failures pull failures in a row it takes no more runners
 *     (backend accepts()) until runfleetd restarts;
 *   - on start, pods of this fleet (label runfleet.dev/fleet =
 *     backend.kubernetes.lease_name) are listed for adoption, finished ones
 *     deleted, and Secrets without a pod deleted;
 *   - a failed GPU check reported by a runner's hook cordons or taints its
 *     node, with an Event (kube_health.h), through gpu_unhealthy. */

#define KUBE_BACKEND_BACKOFF_BASE_MS 10000
#define KUBE_BACKEND_BACKOFF_MAX_MS (10 * 60 * 1000)

/* A backend_new_fn: reaches the cluster as backend.kubernetes says
 * (kubeconfig or in-cluster) and starts its watches. NULL on failure
 * (logged). */
struct backend *backend_kube_new(uv_loop_t *loop, const struct config *cfg,
                                 struct capacity *cap,
                                 backend_event_cb on_event, void *ctx);

/* Declares and then feeds runfleet_pods_pending_seconds and
 * runfleet_kube_pool_blocked in m (which must outlive b). */
void backend_kube_set_metrics(struct backend *b, struct metrics *m);

/* Every Pod and Secret create or delete, and every GPU-health write (a
 * cordon, a taint, an Event), asks may_act(arg) first and is not
 * sent when it answers 0 (a replica that does not hold the leader Lease);
 * the watches go on. */
void backend_kube_set_fence(struct backend *b, int (*may_act)(void *arg),
                            void *arg);
/* This replica leads (again): the pods and Secrets of runners that ended
 * while it was fenced are deleted, the pending timers re-armed, and the
 * fleet's Secrets listed again for those without a pod. */
void backend_kube_takeover(struct backend *b);

/* The requests the backend sends: kube_create/kube_delete (and, for GPU
 * health, kube_get/kube_patch) in production. A NULL member is a request
 * the backend cannot send (fails as -ENOTSUP). */
struct backend_kube_api {
  int (*create)(void *arg, enum kube_kind kind, const char *ns,
                const json_t *obj, kube_done_cb cb, void *cb_arg);
  /* create, ahead of the requests already waiting for the rate limiter
   * (kube_create_first); NULL: create. */
  int (*create_first)(void *arg, enum kube_kind kind, const char *ns,
                      const json_t *obj, kube_done_cb cb, void *cb_arg);
  int (*delete_)(void *arg, enum kube_kind kind, const char *ns,
                 const char *name, kube_done_cb cb, void *cb_arg);
  int (*get)(void *arg, enum kube_kind kind, const char *ns, const char *name,
             kube_done_cb cb, void *cb_arg);
  int (*patch)(void *arg, enum kube_kind kind, const char *ns, const char *name,
               enum kube_patch_type type, const json_t *patch, kube_done_cb cb,
               void *cb_arg);
};

#ifdef RUNFLEET_UNITTEST
/* The backend without a cluster: requests go to api, watch events come
 * from the calls below, time from now_ms(arg). */
struct backend *backend_kube_new_with(
    uv_loop_t *loop, const struct config *cfg, struct capacity *cap,
    backend_event_cb on_event, void *ctx, const struct backend_kube_api *api,
    void *api_arg, uint64_t (*now_ms)(void *arg), void *clock_arg);
/* Decoded watch events, as the reflectors deliver them. */
void backend_kube_pod_event(struct backend *b, enum kube_event_type type,
                            json_t *pod);
void backend_kube_node_event(struct backend *b, enum kube_event_type type,
                             json_t *node);
void backend_kube_other_pod_event(struct backend *b, enum kube_event_type type,
                                  json_t *pod);
/* The runner pod watch has delivered its (re)list. */
void backend_kube_pods_synced(struct backend *b);
/* A secret list (a SecretList object) of this fleet's secrets. */
void backend_kube_secrets_listed(struct backend *b, const json_t *list);
/* Runs the pending-timeout check as the timer would. */
void backend_kube_check_pending(struct backend *b);
#endif

#endif
