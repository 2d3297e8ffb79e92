#include "kube_pod.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "names.h"

/* Variables whose values are secrets: they travel in the Secret and reach
 * the container by secretKeyRef, never as a value in the pod spec. */
int kube_env_is_secret(const char *name, size_t len)
{
  static const char *const exact[] = {"RUNFLEET_RUNNER_TOKEN",
                                      "RUNFLEET_GIT_TOKEN", NULL};
  size_t i;

  for (i = 0; exact[i] != NULL; i++)
    if (len == strlen(exact[i]) && memcmp(name, exact[i], len) == 0)
      return 1;
  return len >= 15 && memcmp(name, "RUNFLEET_SECRET", 15) == 0;
}

int kube_pod_names(const char *runner, char *pod, size_t pod_size, char *secret,
                   size_t secret_size)
{
  int n;

  if (runner == NULL || pod_size < KUBE_NAME_MAX)
    return -EINVAL;
  n = names_dns_label(runner, strlen(runner), pod, pod_size);
  if (n <= 0)
    return -EINVAL;
  /* A Secret's name is a DNS subdomain (253): the suffix always fits. */
  if ((size_t)snprintf(secret, secret_size, "%s-jit", pod) >= secret_size)
    return -EINVAL;
  return 0;
}

/* The key of a secret variable in the Secret's data: lower case, '-'. */
static void secret_key_of(const char *name, size_t len, char *out,
                          size_t out_size)
{
  if (len == strlen("RUNFLEET_RUNNER_TOKEN") &&
      memcmp(name, "RUNFLEET_RUNNER_TOKEN", len) == 0) {
    snprintf(out, out_size, "%s", KUBE_SECRET_TOKEN_KEY);
    return;
  }
  names_dns_label(name, len, out, out_size);
}

static json_t *labels_for(const struct kube_pod_params *p)
{
  char runner[NAMES_LABEL_MAX + 1], pool[NAMES_LABEL_MAX + 1];
  char fleet[NAMES_LABEL_MAX + 1];

  names_label_value(p->runner, strlen(p->runner), runner, sizeof(runner));
  names_label_value(p->pool->name, strlen(p->pool->name), pool, sizeof(pool));
  names_label_value(p->fleet, strlen(p->fleet), fleet, sizeof(fleet));
  return json_pack("{s:s, s:s, s:s, s:s, s:s}", KUBE_LABEL_POOL, pool,
                   KUBE_LABEL_RUNNER, runner, KUBE_LABEL_FLEET, fleet,
                   "app.kubernetes.io/name", "runfleet-runner",
                   "app.kubernetes.io/part-of", "runfleet");
}

json_t *kube_secret_build(const struct kube_pod_params *p,
                          const char *secret_name)
{
  json_t *secret, *data;
  char key[NAMES_LABEL_MAX + 1];
  size_t i;

  if (p->runner == NULL || p->pool == NULL || p->fleet == NULL ||
      p->jit_config == NULL)
    return NULL;
  secret = json_pack("{s:s, s:s, s:{s:s, s:s, s:o, s:{s:s}}, s:s, s:{}}",
                     "apiVersion", "v1", "kind", "Secret", "metadata", "name",
                     secret_name, "namespace", p->ns, "labels", labels_for(p),
                     "annotations", KUBE_ANNOTATION_RUNNER, p->runner, "type",
                     "Opaque", "stringData");
  if (secret == NULL)
    return NULL;
  data = json_object_get(secret, "stringData");
  if (json_object_set_new(data, KUBE_SECRET_JIT_KEY,
                          json_string(p->jit_config)) != 0)
    goto fail;
  for (i = 0; p->env != NULL && p->env[i] != NULL; i++) {
    const char *eq = strchr(p->env[i], '=');

    if (eq == NULL || !kube_env_is_secret(p->env[i], (size_t)(eq - p->env[i])))
      continue;
    secret_key_of(p->env[i], (size_t)(eq - p->env[i]), key, sizeof(key));
    if (json_object_set_new(data, key, json_string(eq + 1)) != 0)
      goto fail;
  }
  return secret;
fail:
  kube_secret_wipe(secret);
  json_decref(secret);
  return NULL;
}

void kube_secret_wipe(json_t *obj)
{
  const char *key;
  json_t *v;
  size_t i;

  if (json_is_string(obj)) {
    /* jansson owns a private copy of every string value. */
    memset((char *)json_string_value(obj), 0, json_string_length(obj));
    return;
  }
  if (json_is_array(obj)) {
    json_array_foreach(obj, i, v) kube_secret_wipe(v);
    return;
  }
  if (json_is_object(obj))
    json_object_foreach(obj, key, v) kube_secret_wipe(v);
}

/* ---- the pod ---- */

static int env_add(json_t *env, const char *name, const char *value)
{
  return json_array_append_new(
      env, json_pack("{s:s, s:s}", "name", name, "value", value));
}

static int env_add_secret(json_t *env, const char *name, const char *secret,
                          const char *key)
{
  return json_array_append_new(env, json_pack("{s:s, s:{s:{s:s, s:s}}}", "name",
                                              name, "valueFrom", "secretKeyRef",
                                              "name", secret, "key", key));
}

/* Sets or replaces name in env (later entries of p->env win). */
static int env_set(json_t *env, const char *name, size_t len, const char *value)
{
  json_t *e;
  size_t i;

  json_array_foreach(env, i, e)
  {
    const char *n = json_string_value(json_object_get(e, "name"));

    if (n != NULL && strlen(n) == len && memcmp(n, name, len) == 0)
      return json_object_set_new(e, "value", json_string(value));
  }
  e = json_object();
  if (e == NULL ||
      json_object_set_new(e, "name", json_stringn(name, len)) != 0 ||
      json_object_set_new(e, "value", json_string(value)) != 0) {
    json_decref(e);
    return -1;
  }
  return json_array_append_new(env, e);
}

/* Whether the container, not the caller, decides name's value. */
static int env_fixed(const char *name, size_t len)
{
  static const char *const fixed[] = {"RUNFLEET_CACHE_DIR",
                                      "RUNFLEET_WORK_DIR",
                                      "RUNFLEET_GPUS",
                                      "RUNFLEET_NODE_NAME",
                                      "ACTIONS_RUNNER_INPUT_JITCONFIG",
                                      NULL};
  size_t i;

  for (i = 0; fixed[i] != NULL; i++)
    if (len == strlen(fixed[i]) && memcmp(name, fixed[i], len) == 0)
      return 1;
  return 0;
}

/* The runner container's environment (docs/HOOKS.md): what runfleetd
 * passed, with the secret ones by reference, and what the pod decides. */
static json_t *runner_env(const struct kube_pod_params *p,
                          const char *secret_name)
{
  json_t *env = json_array();
  char key[NAMES_LABEL_MAX + 1], gpus[16];
  size_t i;
  int rc = 0;

  if (env == NULL)
    return NULL;
  snprintf(gpus, sizeof(gpus), "%u", p->pool->kube.dind ? 0u : p->pool->gpus);
  rc |= env_add_secret(env, "ACTIONS_RUNNER_INPUT_JITCONFIG", secret_name,
                       KUBE_SECRET_JIT_KEY);
  rc |= env_add(env, "RUNFLEET_RUNNER_NAME", p->runner);
  rc |= env_add(env, "RUNFLEET_POOL", p->pool->name);
  rc |= json_array_append_new(
      env, json_pack("{s:s, s:{s:{s:s}}}", "name", "RUNFLEET_NODE_NAME",
                     "valueFrom", "fieldRef", "fieldPath", "spec.nodeName"));
  rc |= env_add(env, "RUNFLEET_WORK_DIR", KUBE_WORK_DIR);
  /* The container sees only its own GPUs: no indices to check. */
  rc |= env_add(env, "RUNFLEET_GPUS", "");
  rc |= env_add(env, "RUNFLEET_EXPECTED_GPUS", gpus);
  rc |= env_add(env, "RUNFLEET_CACHE_DIR", KUBE_CACHE_MOUNT "/git");
  rc |= env_add(env, "ACTIONS_RUNNER_HOOK_JOB_STARTED",
                KUBE_HOOK_DIR "/pre-job.sh");
  rc |= env_add(env, "ACTIONS_RUNNER_HOOK_JOB_COMPLETED",
                KUBE_HOOK_DIR "/post-job.sh");
  for (i = 0; rc == 0 && p->env != NULL && p->env[i] != NULL; i++) {
    const char *eq = strchr(p->env[i], '=');
    size_t len;

    if (eq == NULL)
      continue;
    len = (size_t)(eq - p->env[i]);
    if (env_fixed(p->env[i], len) ||
        (len == strlen("RUNFLEET_EXPECTED_GPUS") &&
         memcmp(p->env[i], "RUNFLEET_EXPECTED_GPUS", len) == 0))
      continue;
    if (kube_env_is_secret(p->env[i], len)) {
      char name[128];

      snprintf(name, sizeof(name), "%.*s", (int)len, p->env[i]);
      secret_key_of(p->env[i], len, key, sizeof(key));
      rc |= env_add_secret(env, name, secret_name, key);
    } else {
      rc |= env_set(env, p->env[i], len, eq + 1);
    }
  }
  if (rc == 0 && p->pool->kube.dind) {
    char host[32];

    snprintf(host, sizeof(host), "tcp://localhost:%d", KUBE_DIND_PORT);
    rc |= env_add(env, "DOCKER_HOST", host);
    rc |= env_add(env, "DOCKER_TLS_VERIFY", "1");
    rc |= env_add(env, "DOCKER_CERT_PATH", "/certs/client");
  }
  if (rc != 0) {
    json_decref(env);
    return NULL;
  }
  return env;
}

/* requests = limits: a runner gets what capacity counted, no more. */
static json_t *resources_for(const struct cfg_pool *pool, int with_gpus,
                             int with_cpu)
{
  json_t *req = json_object();
  char buf[32];

  if (req == NULL)
    return NULL;
  if (with_cpu) {
    snprintf(buf, sizeof(buf), "%u", pool->cpus);
    json_object_set_new(req, "cpu", json_string(buf));
    if (pool->memory_bytes > 0) {
      snprintf(buf, sizeof(buf), "%" PRIu64, pool->memory_bytes);
      json_object_set_new(req, "memory", json_string(buf));
    }
  }
  if (with_gpus && pool->gpus > 0) {
    snprintf(buf, sizeof(buf), "%u", pool->gpus);
    json_object_set_new(req, KUBE_GPU_RESOURCE, json_string(buf));
  }
  return json_pack("{s:o, s:O}", "requests", req, "limits", req);
}

static json_t *runner_mounts(const struct cfg_pool *pool)
{
  json_t *m =
      json_pack("[{s:s, s:s}]", "name", "work", "mountPath", KUBE_WORK_DIR);

  if (m == NULL)
    return NULL;
  if (pool->kube.shm_bytes > 0)
    json_array_append_new(
        m, json_pack("{s:s, s:s}", "name", "shm", "mountPath", "/dev/shm"));
  if (pool->kube.cache_host_path != NULL)
    json_array_append_new(m, json_pack("{s:s, s:s}", "name", "cache",
                                       "mountPath", KUBE_CACHE_MOUNT));
  if (pool->kube.dind)
    json_array_append_new(
        m, json_pack("{s:s, s:s, s:s, s:b}", "name", "dind-certs", "mountPath",
                     "/certs/client", "subPath", "client", "readOnly", 1));
  return m;
}

static json_t *runner_container(const struct kube_pod_params *p,
                                const char *secret_name)
{
  const struct cfg_pool *pool = p->pool;
  json_t *env = runner_env(p, secret_name);

  if (env == NULL)
    return NULL;
  /* With dind the GPUs go to the daemon that runs the job's containers. */
  return json_pack("{s:s, s:s, s:[s], s:o, s:o, s:o, s:{s:b, s:b, s:{s:[s]}}}",
                   "name", KUBE_RUNNER_CONTAINER, "image", pool->runner_image,
                   "command", pool->kube.entrypoint, "env", env, "resources",
                   resources_for(pool, !pool->kube.dind, 1), "volumeMounts",
                   runner_mounts(pool), "securityContext",
                   "allowPrivilegeEscalation", 0, "runAsNonRoot", 1,
                   "capabilities", "drop", "ALL");
}

/* Docker-in-Docker as ARC's dind mode runs it, with TLS on localhost:
 * dockerd writes its CA and client certificate under /certs, the runner
 * reads the client part. The daemon must be privileged. */
static json_t *dind_container(const struct cfg_pool *pool)
{
  json_t *c = json_pack(
      "{s:s, s:s, s:[{s:s, s:s}], s:[{s:s, s:i}], s:{s:b}, s:o, "
      "s:[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]}",
      "name", KUBE_DIND_CONTAINER, "image", pool->kube.dind_image, "env",
      "name", "DOCKER_TLS_CERTDIR", "value", "/certs", "ports", "name",
      "docker", "containerPort", KUBE_DIND_PORT, "securityContext",
      "privileged", 1, "resources", resources_for(pool, 1, 0), "volumeMounts",
      "name", "work", "mountPath", KUBE_WORK_DIR, "name", "dind-certs",
      "mountPath", "/certs", "name", "dind-storage", "mountPath",
      "/var/lib/docker");

  if (c != NULL && pool->gpus > 0)
    /* Containers the daemon starts get the pod's GPUs through the NVIDIA
     * runtime, which must be the daemon's default. */
    json_object_set_new(c, "args",
                        json_pack("[s]", "--default-runtime=nvidia"));
  return c;
}

static json_t *volumes_for(const struct cfg_pool *pool)
{
  json_t *v = json_pack("[{s:s, s:{}}]", "name", "work", "emptyDir");
  char size[32];

  if (v == NULL)
    return NULL;
  if (pool->kube.shm_bytes > 0) {
    snprintf(size, sizeof(size), "%" PRIu64, pool->kube.shm_bytes);
    json_array_append_new(v, json_pack("{s:s, s:{s:s, s:s}}", "name", "shm",
                                       "emptyDir", "medium", "Memory",
                                       "sizeLimit", size));
  }
  if (pool->kube.cache_host_path != NULL)
    json_array_append_new(
        v, json_pack("{s:s, s:{s:s, s:s}}", "name", "cache", "hostPath", "path",
                     pool->kube.cache_host_path, "type", "DirectoryOrCreate"));
  if (pool->kube.dind) {
    json_array_append_new(
        v, json_pack("{s:s, s:{}}", "name", "dind-certs", "emptyDir"));
    json_array_append_new(
        v, json_pack("{s:s, s:{}}", "name", "dind-storage", "emptyDir"));
  }
  return v;
}

static json_t *tolerations_for(const struct cfg_pool *pool)
{
  json_t *a = json_array();
  size_t i;

  for (i = 0; a != NULL && i < pool->ntolerations; i++) {
    const struct cfg_toleration *t = &pool->tolerations[i];
    json_t *o = json_object();

    if (o == NULL)
      break;
    if (t->key != NULL)
      json_object_set_new(o, "key", json_string(t->key));
    json_object_set_new(
        o, "operator",
        json_string(t->operator_ != NULL ? t->operator_ : "Equal"));
    if (t->value != NULL)
      json_object_set_new(o, "value", json_string(t->value));
    if (t->effect != NULL)
      json_object_set_new(o, "effect", json_string(t->effect));
    json_array_append_new(a, o);
  }
  return a;
}

static json_t *node_selector_for(const struct cfg_pool *pool)
{
  json_t *o = json_object();
  size_t i;

  for (i = 0; o != NULL && i < pool->nnode_selector; i++)
    json_object_set_new(o, pool->node_selector[i].key,
                        json_string(pool->node_selector[i].value));
  return o;
}

/* The real scheduler still binds the pod and checks its resources; the
 * affinity only keeps it to the node capacity chose. */
static json_t *affinity_for(const char *hostname)
{
  return json_pack("{s:{s:{s:[{s:[{s:s, s:s, s:[s]}]}]}}}", "nodeAffinity",
                   "requiredDuringSchedulingIgnoredDuringExecution",
                   "nodeSelectorTerms", "matchExpressions", "key",
                   KUBE_LABEL_HOSTNAME, "operator", "In", "values", hostname);
}

static json_t *gpus_annotation(const int *gpus, size_t n)
{
  char buf[CFG_MAX_GPUS * 5 + 1] = "";
  size_t i, used = 0;

  for (i = 0; i < n && used < sizeof(buf) - 6; i++)
    used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%d",
                             i > 0 ? "," : "", gpus[i]);
  return json_string(buf);
}

static json_t *pod_spec(const struct kube_pod_params *p,
                        const char *secret_name)
{
  const struct cfg_pool *pool = p->pool;
  int64_t uid = pool->kube.run_as_user;
  json_t *spec, *containers;

  containers = json_pack("[o]", runner_container(p, secret_name));
  if (containers != NULL && pool->kube.dind)
    json_array_append_new(containers, dind_container(pool));
  spec = json_pack(
      "{s:s, s:b, s:b, s:I, s:o, s:o, s:o, s:{s:b, s:I, s:I, s:I, s:{s:s}}, "
      "s:o, s:o}",
      "restartPolicy", "Never", "automountServiceAccountToken", 0,
      "enableServiceLinks", 0, "terminationGracePeriodSeconds", (json_int_t)30,
      "nodeSelector", node_selector_for(pool), "tolerations",
      tolerations_for(pool), "affinity",
      affinity_for(p->node_hostname != NULL ? p->node_hostname : p->node),
      "securityContext", "runAsNonRoot", 1, "runAsUser", (json_int_t)uid,
      "runAsGroup", (json_int_t)uid, "fsGroup", (json_int_t)uid,
      "seccompProfile", "type", "RuntimeDefault", "containers", containers,
      "volumes", volumes_for(pool));
  if (spec == NULL)
    return NULL;
  if (pool->kube.service_account != NULL)
    json_object_set_new(spec, "serviceAccountName",
                        json_string(pool->kube.service_account));
  if (pool->kube.priority_class != NULL)
    json_object_set_new(spec, "priorityClassName",
                        json_string(pool->kube.priority_class));
  return spec;
}

json_t *kube_pod_build(const struct kube_pod_params *p, const char *pod_name,
                       const char *secret_name)
{
  json_t *pod;

  if (p->runner == NULL || p->pool == NULL || p->fleet == NULL ||
      p->node == NULL || p->pool->runner_image == NULL ||
      p->pool->kube.entrypoint == NULL)
    return NULL;
  pod = json_pack("{s:s, s:s, s:{s:s, s:s, s:o, s:{s:s, s:s, s:o, s:s}}, "
                  "s:o}",
                  "apiVersion", "v1", "kind", "Pod", "metadata", "name",
                  pod_name, "namespace", p->ns, "labels", labels_for(p),
                  "annotations", KUBE_ANNOTATION_RUNNER, p->runner,
                  KUBE_ANNOTATION_NODE, p->node, KUBE_ANNOTATION_GPUS,
                  gpus_annotation(p->gpus, p->ngpus), "runfleet.dev/secret",
                  secret_name, "spec", pod_spec(p, secret_name));
  if (pod != NULL && p->gh_id > 0) {
    char id[24];

    snprintf(id, sizeof(id), "%lld", (long long)p->gh_id);
    json_object_set_new(
        json_object_get(json_object_get(pod, "metadata"), "annotations"),
        KUBE_ANNOTATION_RUNNER_ID, json_string(id));
  }
  return pod;
}

/* ---- pod status ---- */

/* The runner container's status, or NULL. */
static const json_t *runner_status(const json_t *pod)
{
  const json_t *st =
      json_object_get(json_object_get(pod, "status"), "containerStatuses");
  const json_t *c;
  size_t i;

  json_array_foreach(st, i, c)
  {
    const char *name = json_string_value(json_object_get(c, "name"));

    if (name != NULL && strcmp(name, KUBE_RUNNER_CONTAINER) == 0)
      return c;
  }
  return NULL;
}

int kube_pod_exit_code(const json_t *pod, const char *phase)
{
  const json_t *term = json_object_get(
      json_object_get(runner_status(pod), "state"), "terminated");
  const json_t *code = json_object_get(term, "exitCode");

  if (json_is_integer(code))
    return (int)json_integer_value(code);
  return strcmp(phase, "Succeeded") == 0 ? 0 : 1;
}

/* Why a pod is still Pending, from its conditions and container states:
 * the reasons worth a replacement, or "" for an ordinary wait. */
void kube_pod_waiting(const json_t *pod, char *reason, size_t rsize,
                      char *message, size_t msize)
{
  const json_t *status = json_object_get(pod, "status");
  const json_t *c;
  size_t i, l;
  static const char *const lists[] = {"initContainerStatuses",
                                      "containerStatuses"};

  reason[0] = message[0] = '\0';
  json_array_foreach(json_object_get(status, "conditions"), i, c)
  {
    const char *type = json_string_value(json_object_get(c, "type"));
    const char *st = json_string_value(json_object_get(c, "status"));
    const char *why = json_string_value(json_object_get(c, "reason"));

    if (type != NULL && strcmp(type, "PodScheduled") == 0 && st != NULL &&
        strcmp(st, "False") == 0 && why != NULL &&
        strcmp(why, "Unschedulable") == 0) {
      snprintf(reason, rsize, "%s", why);
      const char *msg = json_string_value(json_object_get(c, "message"));

      snprintf(message, msize, "%s", msg != NULL ? msg : "");
      return;
    }
  }
  for (l = 0; l < 2; l++)
    json_array_foreach(json_object_get(status, lists[l]), i, c)
    {
      const json_t *w = json_object_get(json_object_get(c, "state"), "waiting");
      const char *why = json_string_value(json_object_get(w, "reason"));
      const char *msg = json_string_value(json_object_get(w, "message"));

      if (why == NULL || strcmp(why, "ContainerCreating") == 0 ||
          strcmp(why, "PodInitializing") == 0)
        continue;
      snprintf(reason, rsize, "%s", why);
      snprintf(message, msize, "%s", msg != NULL ? msg : "");
      return;
    }
}

int kube_reason_is_image_pull(const char *reason)
{
  return strcmp(reason, "ErrImagePull") == 0 ||
         strcmp(reason, "ImagePullBackOff") == 0 ||
         strcmp(reason, "InvalidImageName") == 0 ||
         strcmp(reason, "ErrImageNeverPull") == 0;
}
