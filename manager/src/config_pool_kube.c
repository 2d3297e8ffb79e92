/* pools[].kubernetes: what a pod needs beyond the pool's image, resources,
 * node selector and tolerations (see docs/CONFIG.md). Checked with every
 * backend, applied by backend_kube only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_parse.h"

#define CFG_POOL_KUBE_MAX_SHM (1024ULL * 1024 * 1024 * 1024)
#define CFG_POOL_KUBE_MAX_PULL_FAILURES 100
#define CFG_POOL_KUBE_MAX_UID 2147483647

static int cfg_dup_default(char **out, const char *value)
{
  *out = strdup(value);
  return *out == NULL ? -1 : 0;
}

int cfg_pool_kube_defaults(struct cfg_pool_kube *k)
{
  int rc = 0;

  k->shm_bytes = CFG_DEFAULT_POOL_SHM_BYTES;
  k->dind = 0;
  k->pending_timeout_ms = CFG_DEFAULT_POOL_PENDING_TIMEOUT_MS;
  k->image_pull_failures = CFG_DEFAULT_POOL_IMAGE_PULL_FAILURES;
  k->run_as_user = CFG_DEFAULT_POOL_RUN_AS_USER;
  rc |= cfg_dup_default(&k->entrypoint, CFG_DEFAULT_POOL_RUNNER_ENTRYPOINT);
  rc |= cfg_dup_default(&k->service_account, CFG_DEFAULT_POOL_SERVICE_ACCOUNT);
  rc |= cfg_dup_default(&k->priority_class, CFG_DEFAULT_POOL_PRIORITY_CLASS);
  rc |= cfg_dup_default(&k->cache_host_path, CFG_DEFAULT_POOL_CACHE_HOST_PATH);
  rc |= cfg_dup_default(&k->dind_image, CFG_DEFAULT_POOL_DIND_IMAGE);
  return rc;
}

void cfg_pool_kube_free(struct cfg_pool_kube *k)
{
  free(k->entrypoint);
  free(k->service_account);
  free(k->priority_class);
  free(k->cache_host_path);
  free(k->dind_image);
  memset(k, 0, sizeof(*k));
}

/* A Kubernetes object name (service account, priority class). */
static void cfg_pool_kube_name(struct cfg_parser *p, yaml_node_t *map,
                               const char *path, const char *key, char **out)
{
  if (cfg_get_str(p, map, path, key, out) == 1 && !cfg_is_dns_name(*out, 1))
    cfg_err(p, cfg_key_line(p, map, key),
            "%s.%s: '%.64s' is not a Kubernetes object name", path, key, *out);
}

/* An absolute path inside a container or on a node. */
static void cfg_pool_kube_path(struct cfg_parser *p, yaml_node_t *map,
                               const char *path, const char *key, char **out)
{
  if (cfg_get_str(p, map, path, key, out) == 1 && (*out)[0] != '/')
    cfg_err(p, cfg_key_line(p, map, key),
            "%s.%s: '%.64s' is not an absolute "
            "path",
            path, key, *out);
}

static void cfg_pool_kube_docker(struct cfg_parser *p, yaml_node_t *map,
                                 const char *path, struct cfg_pool_kube *k)
{
  char *mode = NULL;

  if (cfg_get_str(p, map, path, "docker", &mode) != 1)
    return;
  if (strcmp(mode, "dind") == 0)
    k->dind = 1;
  else if (strcmp(mode, "none") == 0)
    k->dind = 0;
  else
    cfg_err(p, cfg_key_line(p, map, "docker"),
            "%s.docker: '%.32s' is not one of none, dind", path, mode);
  free(mode);
}

void cfg_parse_pool_kube(struct cfg_parser *p, yaml_node_t *pmap,
                         const char *prefix, struct cfg_pool *pool)
{
  static const char *const keys[] = {"shm_size",
                                     "docker",
                                     "entrypoint",
                                     "service_account",
                                     "priority_class",
                                     "cache_host_path",
                                     "dind_image",
                                     "pending_timeout",
                                     "image_pull_failures",
                                     "run_as_user",
                                     NULL};
  struct cfg_pool_kube *k = &pool->kube;
  yaml_node_t *map = cfg_map_get(p, pmap, "kubernetes"), *cache;
  char path[CFG_PATH_MAX];
  int64_t uid;

  snprintf(path, sizeof(path), "%s.kubernetes", prefix);
  /* The default never takes more than half a small pod's memory. */
  if (pool->memory_bytes > 0 && k->shm_bytes > pool->memory_bytes / 2)
    k->shm_bytes = pool->memory_bytes / 2;
  if (map == NULL || cfg_map_check(p, map, path, keys) < 0)
    return;
  if (cfg_get_size(p, map, path, "shm_size", 0, CFG_POOL_KUBE_MAX_SHM,
                   &k->shm_bytes) == 1 &&
      pool->memory_bytes > 0 && k->shm_bytes > pool->memory_bytes)
    cfg_err(p, cfg_key_line(p, map, "shm_size"),
            "%s.shm_size: larger than resources.memory (a memory-backed "
            "/dev/shm counts against the pod's memory limit)",
            path);
  cfg_pool_kube_docker(p, map, path, k);
  cfg_pool_kube_path(p, map, path, "entrypoint", &k->entrypoint);
  cfg_pool_kube_name(p, map, path, "service_account", &k->service_account);
  cfg_pool_kube_name(p, map, path, "priority_class", &k->priority_class);
  cache = cfg_map_get(p, map, "cache_host_path");
  if (cache != NULL && cache->type == YAML_SCALAR_NODE &&
      strcmp(cfg_text(cache), "none") == 0) {
    /* Pod Security "baseline" forbids hostPath volumes. */
    free(k->cache_host_path);
    k->cache_host_path = NULL;
  } else {
    cfg_pool_kube_path(p, map, path, "cache_host_path", &k->cache_host_path);
  }
  cfg_get_str(p, map, path, "dind_image", &k->dind_image);
  cfg_get_duration(p, map, path, "pending_timeout", 10 * CFG_MS_SECOND,
                   CFG_MS_DAY, &k->pending_timeout_ms);
  cfg_get_uint(p, map, path, "image_pull_failures", 1,
               CFG_POOL_KUBE_MAX_PULL_FAILURES, &k->image_pull_failures);
  if (cfg_get_int(p, map, path, "run_as_user", 1, CFG_POOL_KUBE_MAX_UID,
                  &uid) == 1)
    k->run_as_user = uid;
}
