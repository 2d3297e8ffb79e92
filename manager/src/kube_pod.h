#ifndef RUNFLEET_KUBE_POD_H
#define RUNFLEET_KUBE_POD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"

/* The objects backend_kube creates for one runner: a Secret with what must
 * not appear in clear (the JIT config, the hook token) and a Pod built
 * from the runner's pool, placed on the node capacity chose. Pure: no I/O,
 * no loop; the pod spec is what tests assert. */

#define KUBE_LABEL_POOL "runfleet.dev/pool"
#define KUBE_LABEL_RUNNER "runfleet.dev/runner"
#define KUBE_LABEL_FLEET "runfleet.dev/fleet"
#define KUBE_LABEL_NODE_GROUP "runfleet.dev/node-group"
#define KUBE_LABEL_HOSTNAME "kubernetes.io/hostname"
/* The runner's exact name (label values are sanitised, names are not). */
#define KUBE_ANNOTATION_RUNNER "runfleet.dev/runner-name"
#define KUBE_ANNOTATION_NODE "runfleet.dev/node"
#define KUBE_ANNOTATION_GPUS "runfleet.dev/gpus"
#define KUBE_ANNOTATION_RUNNER_ID "runfleet.dev/runner-id"
#define KUBE_GPU_RESOURCE "nvidia.com/gpu"
#define KUBE_SECRET_JIT_KEY "jitconfig"
#define KUBE_SECRET_TOKEN_KEY "runner-token"
#define KUBE_RUNNER_CONTAINER "runner"
#define KUBE_DIND_CONTAINER "dind"
#define KUBE_WORK_DIR "/home/runner/_work"
#define KUBE_CACHE_MOUNT "/var/cache/runfleet"
#define KUBE_HOOK_DIR "/opt/runfleet/hooks"
#define KUBE_DIND_PORT 2376
#define KUBE_NAME_MAX 64 /* a DNS label and its NUL */

struct kube_pod_params {
  const char *fleet;  /* runfleet.dev/fleet value */
  const char *ns;     /* the runners' namespace */
  const char *runner; /* the runner's (GitHub) name */
  const struct cfg_pool *pool;
  const char *node;          /* the node capacity chose */
  const char *node_hostname; /* its kubernetes.io/hostname, NULL: node */
  const int *gpus;           /* capacity's bookkeeping indices */
  size_t ngpus;
  const char *jit_config; /* secret: only in the Secret */
  const char *const *env; /* "NAME=value", NULL-terminated, may be NULL */
  int64_t gh_id;          /* GitHub runner id, 0: no annotation */
};

/* The pod and secret names of runner: a DNS label and "<pod>-jit". 0 or
 * -EINVAL when nothing usable is left of the name. */
int kube_pod_names(const char *runner, char *pod, size_t pod_size, char *secret,
                   size_t secret_size);

/* The Secret named secret_name: the JIT config and every secret "NAME=value"
 * of p->env (RUNFLEET_RUNNER_TOKEN, RUNFLEET_GIT_TOKEN, RUNFLEET_SECRET*),
 * labelled like the pod. No ownerReference: the pod does not exist yet.
 * NULL when out of memory. Wipe it with kube_secret_wipe before freeing. */
json_t *kube_secret_build(const struct kube_pod_params *p,
                          const char *secret_name);

/* The Pod: restartPolicy Never, the pool's image, resources (requests =
 * limits, nvidia.com/gpu for GPU pools), node selector and tolerations, a
 * required node affinity on the chosen node's hostname, a memory-backed
 * /dev/shm, non-root, no service account token, the hook environment with
 * secrets taken from secret_name by reference, the node cache hostPath,
 * and with docker: dind a TLS Docker-in-Docker sidecar. NULL when out of
 * memory or when p is incomplete. */
json_t *kube_pod_build(const struct kube_pod_params *p, const char *pod_name,
                       const char *secret_name);

/* Overwrites every string of obj (recursively) before it is freed: the
 * secret's values live in jansson's buffers. */
void kube_secret_wipe(json_t *obj);

/* The runner container's exit code in a Succeeded or Failed pod (phase);
 * without a terminated state, 0 for Succeeded and 1 for Failed. */
int kube_pod_exit_code(const json_t *pod, const char *phase);

/* Why a Pending pod waits, when it is worth a replacement: Unschedulable
 * (PodScheduled False), or a container's waiting reason other than
 * ContainerCreating/PodInitializing (ErrImagePull, ImagePullBackOff,
 * CreateContainerConfigError, ...), with its message; "" otherwise. */
void kube_pod_waiting(const json_t *pod, char *reason, size_t rsize,
                      char *message, size_t msize);

/* Whether a waiting reason means the image does not pull. */
int kube_reason_is_image_pull(const char *reason);

/* Whether an environment variable name carries a secret. */
int kube_env_is_secret(const char *name, size_t len);

#endif
