/* The backend.kubernetes section: where the cluster is (kubeconfig or
 * in-cluster) and how hard runfleetd may press on its API server. */
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
  k->qps = CFG_DEFAULT_KUBE_QPS;
  k->burst = CFG_DEFAULT_KUBE_BURST;
  k->max_event_bytes = CFG_DEFAULT_KUBE_MAX_EVENT_BYTES;
  k->request_timeout_ms = CFG_DEFAULT_KUBE_REQUEST_TIMEOUT_MS;
  k->watch_timeout_ms = CFG_DEFAULT_KUBE_WATCH_TIMEOUT_MS;
}

void cfg_kubernetes_free(struct cfg_kubernetes *k)
{
  free(k->namespace_);
  free(k->lease_name);
  free(k->kubeconfig);
  free(k->context);
  free(k->service_account_dir);
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

void cfg_parse_kubernetes(struct cfg_parser *p, yaml_node_t *be)
{
  static const char *const keys[] = {
      "namespace",      "leader_election",     "lease_name",    "kubeconfig",
      "context",        "service_account_dir", "qps",           "burst",
      "max_event_size", "request_timeout",     "watch_timeout", NULL};
  yaml_node_t *map = cfg_map_get(p, be, "kubernetes");
  const char *prefix = "backend.kubernetes";

  if (map == NULL || cfg_map_check(p, map, prefix, keys) < 0)
    return;
  cfg_parse_kube_names(p, map, prefix);
  cfg_parse_kube_access(p, map, prefix);
  cfg_parse_kube_limits(p, map, prefix);
}
