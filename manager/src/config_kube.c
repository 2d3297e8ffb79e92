/* The backend.kubernetes section: where the cluster is (kubeconfig or
 * in-cluster) and how hard runfleetd may press on its API server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_parse.h"
#include "kube.h"

#define CFG_KUBE_MAX_QPS 10000
#define CFG_KUBE_MAX_BURST 100000
#define CFG_KUBE_MIN_EVENT_BYTES (64 * 1024)
#define CFG_KUBE_MAX_EVENT_BYTES (64 * 1024 * 1024)

void cfg_kubernetes_defaults(struct cfg_kubernetes *k)
{
  k->leader_election = CFG_DEFAULT_LEADER_ELECTION;
  k->lease_duration_ms = CFG_DEFAULT_LEASE_DURATION_MS;
  k->renew_deadline_ms = CFG_DEFAULT_RENEW_DEADLINE_MS;
  k->retry_period_ms = CFG_DEFAULT_RETRY_PERIOD_MS;
  k->qps = CFG_DEFAULT_KUBE_QPS;
  k->burst = CFG_DEFAULT_KUBE_BURST;
  k->max_event_bytes = CFG_DEFAULT_KUBE_MAX_EVENT_BYTES;
  k->request_timeout_ms = CFG_DEFAULT_KUBE_REQUEST_TIMEOUT_MS;
  k->watch_timeout_ms = CFG_DEFAULT_KUBE_WATCH_TIMEOUT_MS;
  k->gpu_unhealthy.action = CFG_DEFAULT_GPU_UNHEALTHY_ACTION;
}

void cfg_kubernetes_free(struct cfg_kubernetes *k)
{
  free(k->namespace_);
  free(k->lease_name);
  free(k->kubeconfig);
  free(k->context);
  free(k->service_account_dir);
  free(k->gpu_unhealthy.taint_key);
  free(k->gpu_unhealthy.taint_value);
  free(k->gpu_unhealthy.taint_effect);
}

static void cfg_parse_kube_names(struct cfg_parser *p, yaml_node_t *map,
                                 const char *prefix)
{
  struct cfg_kubernetes *k = &p->cfg->kubernetes;

  if (cfg_get_str(p, map, prefix, "namespace", &k->namespace_) == 1 &&
      !cfg_is_dns_name(k->namespace_, 0))
    cfg_err(p, cfg_key_line(p, map, "namespace"),
            "%s.namespace: '%.64s' is not a Kubernetes namespace name "
            "([a-z0-9-], at most 63)",
            prefix, k->namespace_);
  cfg_get_bool(p, map, prefix, "leader_election", &k->leader_election);
  if (cfg_get_str(p, map, prefix, "lease_name", &k->lease_name) == 1 &&
      !cfg_is_dns_name(k->lease_name, 1))
    cfg_err(p, cfg_key_line(p, map, "lease_name"),
            "%s.lease_name: '%.64s' is not a Kubernetes object name", prefix,
            k->lease_name);
}

/* The election's timing: client-go's three durations and their order. */
static void cfg_parse_kube_election(struct cfg_parser *p, yaml_node_t *map,
                                    const char *prefix)
{
  struct cfg_kubernetes *k = &p->cfg->kubernetes;
  int has_renew, has_retry;

  cfg_get_duration(p, map, prefix, "lease_duration", 2000, 10 * 60 * 1000,
                   &k->lease_duration_ms);
  has_renew = cfg_get_duration(p, map, prefix, "renew_deadline", 1000,
                               10 * 60 * 1000, &k->renew_deadline_ms) == 1;
  has_retry = cfg_get_duration(p, map, prefix, "retry_period", 100, 60 * 1000,
                               &k->retry_period_ms) == 1;
  if (k->renew_deadline_ms >= k->lease_duration_ms)
    cfg_err(
        p,
        cfg_key_line(p, map, has_renew ? "renew_deadline" : "lease_duration"),
        "%s.renew_deadline: must be shorter than %s.lease_duration "
        "(%llu ms >= %llu ms)",
        prefix, prefix, (unsigned long long)k->renew_deadline_ms,
        (unsigned long long)k->lease_duration_ms);
  if (k->retry_period_ms >= k->renew_deadline_ms)
    cfg_err(p,
            cfg_key_line(p, map, has_retry ? "retry_period" : "renew_deadline"),
            "%s.retry_period: must be shorter than %s.renew_deadline "
            "(%llu ms >= %llu ms)",
            prefix, prefix, (unsigned long long)k->retry_period_ms,
            (unsigned long long)k->renew_deadline_ms);
}

/* kubeconfig (and context) or the in-cluster service account: one. */
static void cfg_parse_kube_access(struct cfg_parser *p, yaml_node_t *map,
                                  const char *prefix)
{
  struct cfg_kubernetes *k = &p->cfg->kubernetes;
  int has_sa;

  int has_kc = cfg_get_file(p, map, prefix, "kubeconfig", &k->kubeconfig) == 1;
  struct kube_config kc;
  char why[256];

  cfg_get_str(p, map, prefix, "context", &k->context);
  /* --check-config tells a kubeconfig without the context apart now, not
   * at the first request. */
  if (has_kc) {
    if (kube_config_load_kubeconfig(&kc, k->kubeconfig, k->context, why,
                                    sizeof(why)) != 0)
      cfg_err(p, cfg_key_line(p, map, "kubeconfig"), "%s.kubeconfig: %s",
              prefix, why);
    else
      kube_config_free(&kc);
  }
  has_sa = cfg_get_str(p, map, prefix, "service_account_dir",
                       &k->service_account_dir) == 1;
  if (k->context != NULL && cfg_map_get(p, map, "kubeconfig") == NULL)
    cfg_err(p, cfg_key_line(p, map, "context"),
            "%s.context: needs %s.kubeconfig", prefix, prefix);
  if (has_sa && cfg_map_get(p, map, "kubeconfig") != NULL)
    cfg_err(p, cfg_key_line(p, map, "service_account_dir"),
            "%s.service_account_dir: not with %s.kubeconfig (in-cluster "
            "only)",
            prefix, prefix);
}

static void cfg_parse_kube_limits(struct cfg_parser *p, yaml_node_t *map,
                                  const char *prefix)
{
  struct cfg_kubernetes *k = &p->cfg->kubernetes;

  cfg_get_uint(p, map, prefix, "qps", 0, CFG_KUBE_MAX_QPS, &k->qps);
  cfg_get_uint(p, map, prefix, "burst", 1, CFG_KUBE_MAX_BURST, &k->burst);
  cfg_get_size(p, map, prefix, "max_event_size", CFG_KUBE_MIN_EVENT_BYTES,
               CFG_KUBE_MAX_EVENT_BYTES, &k->max_event_bytes);
  cfg_get_duration(p, map, prefix, "request_timeout", 1000, 10 * 60 * 1000,
                   &k->request_timeout_ms);
  cfg_get_duration(p, map, prefix, "watch_timeout", 10 * 1000, 60 * 60 * 1000,
                   &k->watch_timeout_ms);
}

/* A Kubernetes name part: 1-63 of [A-Za-z0-9-_.], alphanumeric at both
 * ends; empty allowed when empty_ok (a label or taint value). */
static int cfg_is_k8s_name_part(const char *s, size_t len, int empty_ok)
{
  size_t i;

  if (len == 0)
    return empty_ok;
  if (len > 63)
    return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9');

    if (!alnum &&
        ((i == 0 || i == len - 1) || (c != '-' && c != '_' && c != '.')))
      return 0;
  }
  return 1;
}

/* A qualified name ("prefix/name" or "name"), as taint keys are. */
static int cfg_is_qualified_name(const char *s)
{
  const char *slash = strchr(s, '/');

  if (slash == NULL)
    return cfg_is_k8s_name_part(s, strlen(s), 0);
  if ((size_t)(slash - s) > 253 || slash == s)
    return 0;
  {
    char prefix[254];

    snprintf(prefix, sizeof(prefix), "%.*s", (int)(slash - s), s);
    if (!cfg_is_dns_name(prefix, 1))
      return 0;
  }
  return cfg_is_k8s_name_part(slash + 1, strlen(slash + 1), 0);
}

static void cfg_parse_gpu_taint(struct cfg_parser *p, yaml_node_t *map,
                                const char *prefix)
{
  static const char *const keys[] = {"key", "value", "effect", NULL};
  struct cfg_gpu_unhealthy *g = &p->cfg->kubernetes.gpu_unhealthy;
  char path[CFG_PATH_MAX];

  /* Paths are short literals joined; one that does not fit is a bug. */
  if (snprintf(path, sizeof(path), "%s.taint", prefix) >= (int)sizeof(path) ||
      cfg_map_check(p, map, path, keys) < 0)
    return;
  if (cfg_get_str(p, map, path, "key", &g->taint_key) == 1 &&
      !cfg_is_qualified_name(g->taint_key))
    cfg_err(p, cfg_key_line(p, map, "key"),
            "%s.key: '%.64s' is not a taint key ([prefix/]name, name at most "
            "63 of [A-Za-z0-9-_.])",
            path, g->taint_key);
  if (cfg_get_str(p, map, path, "value", &g->taint_value) == 1 &&
      !cfg_is_k8s_name_part(g->taint_value, strlen(g->taint_value), 1))
    cfg_err(p, cfg_key_line(p, map, "value"),
            "%s.value: '%.64s' is not a taint value (at most 63 of "
            "[A-Za-z0-9-_.])",
            path, g->taint_value);
  /* PreferNoSchedule would not keep the scheduler off the node. */
  if (cfg_get_str(p, map, path, "effect", &g->taint_effect) == 1 &&
      strcmp(g->taint_effect, "NoSchedule") != 0 &&
      strcmp(g->taint_effect, "NoExecute") != 0)
    cfg_err(p, cfg_key_line(p, map, "effect"),
            "%s.effect: '%.32s' is not NoSchedule or NoExecute", path,
            g->taint_effect);
}

static void cfg_parse_gpu_unhealthy(struct cfg_parser *p, yaml_node_t *kmap,
                                    const char *kprefix)
{
  static const char *const keys[] = {"action", "taint", NULL};
  static const char *const actions[] = {"cordon", "taint", "none", NULL};
  struct cfg_gpu_unhealthy *g = &p->cfg->kubernetes.gpu_unhealthy;
  yaml_node_t *map = cfg_map_get(p, kmap, "gpu_unhealthy"), *taint;
  char path[CFG_PATH_MAX];
  char *action = NULL;
  size_t i;

  if (snprintf(path, sizeof(path), "%s.gpu_unhealthy", kprefix) >=
          (int)sizeof(path) ||
      map == NULL || cfg_map_check(p, map, path, keys) < 0)
    return;
  if (cfg_get_str(p, map, path, "action", &action) == 1) {
    for (i = 0; actions[i] != NULL && strcmp(actions[i], action) != 0; i++)
      ;
    if (actions[i] == NULL)
      cfg_err(p, cfg_key_line(p, map, "action"),
              "%s.action: '%.32s' is not cordon, taint or none", path, action);
    else
      g->action = (enum cfg_gpu_unhealthy_action)i;
  }
  free(action);
  taint = cfg_map_get(p, map, "taint");
  if (taint == NULL)
    return;
  if (g->action != CFG_GPU_UNHEALTHY_TAINT)
    cfg_err(p, cfg_key_line(p, map, "taint"), "%s.taint: needs action: taint",
            path);
  cfg_parse_gpu_taint(p, taint, path);
}

void cfg_parse_kubernetes(struct cfg_parser *p, yaml_node_t *be)
{
  static const char *const keys[] = {
      "namespace",      "leader_election",     "lease_name",    "kubeconfig",
      "context",        "service_account_dir", "qps",           "burst",
      "max_event_size", "request_timeout",     "watch_timeout", "gpu_unhealthy",
      "lease_duration", "renew_deadline",      "retry_period",  NULL};
  yaml_node_t *map = cfg_map_get(p, be, "kubernetes");
  const char *prefix = "backend.kubernetes";

  if (map == NULL || cfg_map_check(p, map, prefix, keys) < 0)
    return;
  cfg_parse_kube_names(p, map, prefix);
  cfg_parse_kube_election(p, map, prefix);
  cfg_parse_kube_access(p, map, prefix);
  cfg_parse_kube_limits(p, map, prefix);
  cfg_parse_gpu_unhealthy(p, map, prefix);
}
