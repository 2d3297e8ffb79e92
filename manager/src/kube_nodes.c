#include "kube_nodes.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kube_pod.h"
#include "log.h"
#include "names.h"

#define KN_MOD "kube"
#define KN_MAX_NODES 4096

/* GPU health of a node, after a runner there failed its GPU check. */
enum kn_gpu_health {
  KN_GPU_HEALTHY,
  KN_GPU_REPORTED, /* out of capacity; the cordon or taint not seen yet */
  KN_GPU_MARKED,   /* the watch shows the cordon or taint */
};

struct kn_node {
  char name[CAP_NAME_MAX];
  char uid[64];
  char hostname[CAP_NAME_MAX];
  char source[CAP_NAME_MAX];
  int present;   /* in the node watch */
  int usable;    /* Ready and not cordoned */
  int described; /* capacity knows it */
  int marked;    /* carries the gpu_unhealthy cordon or taint */
  enum kn_gpu_health gpu_health;
  uint64_t alloc_cpu_milli, alloc_memory, alloc_gpus;
  uint64_t other_cpu_milli, other_memory, other_gpus;
  json_t *labels; /* the ones pools select on */
  json_t *taints; /* array of {key, value, effect} */
};

struct kube_nodes {
  json_t *selected; /* label keys some pool's node_selector names */
  /* How a GPU-unhealthy node is marked (a copy: reload frees the config). */
  enum cfg_gpu_unhealthy_action action;
  char taint_key[320];
  char taint_effect[16];
  struct capacity *cap;
  char fleet[NAMES_LABEL_MAX + 1];
  struct kn_node *nodes;
  size_t nnodes, nodes_cap;
  /* "namespace/name" -> [node, cpu milli, memory, gpus] of counted pods */
  json_t *pods;
};

/* ---- quantities ---- */

static int quantity_parse(const char *s, double *out)
{
  static const struct {
    const char *suffix;
    double factor;
  } units[] = {{"Ki", 1024.0},
               {"Mi", 1048576.0},
               {"Gi", 1073741824.0},
               {"Ti", 1099511627776.0},
               {"Pi", 1125899906842624.0},
               {"Ei", 1152921504606846976.0},
               {"m", 1e-3},
               {"k", 1e3},
               {"M", 1e6},
               {"G", 1e9},
               {"T", 1e12},
               {"P", 1e15},
               {"E", 1e18},
               {"", 1.0}};
  char *end = NULL;
  double v;
  size_t i;

  if (s == NULL || s[0] == '\0' || s[0] == '-' || s[0] == ' ')
    return -EINVAL;
  v = strtod(s, &end);
  if (end == s || !isfinite(v) || v < 0)
    return -EINVAL;
  for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
    if (strcmp(end, units[i].suffix) == 0) {
      *out = v * units[i].factor;
      return 0;
    }
  return -EINVAL;
}

int kube_quantity_milli(const char *s, uint64_t *out)
{
  double v;

  if (quantity_parse(s, &v) != 0 || v * 1000.0 > 1.8e19)
    return -EINVAL;
  *out = (uint64_t)ceil(v * 1000.0 - 1e-6);
  return 0;
}

int kube_quantity_units(const char *s, uint64_t *out)
{
  double v;

  if (quantity_parse(s, &v) != 0 || v > 1.8e19)
    return -EINVAL;
  *out = (uint64_t)ceil(v - 1e-9);
  return 0;
}

static uint64_t quantity_of(const json_t *map, const char *key, int milli)
{
  const json_t *v = json_object_get(map, key);
  uint64_t q = 0;
  char buf[32];

  if (json_is_integer(v) && json_integer_value(v) >= 0)
    return (uint64_t)json_integer_value(v) * (milli ? 1000u : 1u);
  if (!json_is_string(v))
    return 0;
  snprintf(buf, sizeof(buf), "%s", json_string_value(v));
  if ((milli ? kube_quantity_milli(buf, &q) : kube_quantity_units(buf, &q)) !=
      0)
    return 0;
  return q;
}

/* ---- lifecycle ---- */

struct kube_nodes *kube_nodes_new(const struct config *cfg,
                                  struct capacity *cap, const char *fleet)
{
  struct kube_nodes *kn = calloc(1, sizeof(*kn));
  size_t i, j;

  if (kn == NULL)
    return NULL;

  kn->cap = cap;
  snprintf(kn->fleet, sizeof(kn->fleet), "%s", fleet);
  kn->action = cfg->kubernetes.gpu_unhealthy.action;
  snprintf(kn->taint_key, sizeof(kn->taint_key), "%s",
           cfg->kubernetes.gpu_unhealthy.taint_key != NULL
               ? cfg->kubernetes.gpu_unhealthy.taint_key
               : "");
  snprintf(kn->taint_effect, sizeof(kn->taint_effect), "%s",
           cfg->kubernetes.gpu_unhealthy.taint_effect != NULL
               ? cfg->kubernetes.gpu_unhealthy.taint_effect
               : "");
  kn->pods = json_object();
  kn->selected = json_object();
  if (kn->pods == NULL || kn->selected == NULL) {
    kube_nodes_destroy(kn);
    return NULL;
  }
  /* Copied: the config may be replaced on reload. */
  for (i = 0; i < cfg->npools; i++)
    for (j = 0; j < cfg->pools[i].nnode_selector; j++)
      json_object_set_new(kn->selected, cfg->pools[i].node_selector[j].key,
                          json_true());
  return kn;
}

void kube_nodes_destroy(struct kube_nodes *kn)
{
  size_t i;

  if (kn == NULL)
    return;
  for (i = 0; i < kn->nnodes; i++) {
    json_decref(kn->nodes[i].labels);
    json_decref(kn->nodes[i].taints);
  }
  free(kn->nodes);
  json_decref(kn->pods);
  json_decref(kn->selected);
  free(kn);
}

static struct kn_node *node_find(const struct kube_nodes *kn, const char *name)
{
  size_t i;

  for (i = 0; i < kn->nnodes; i++)
    if (strcmp(kn->nodes[i].name, name) == 0)
      return &kn->nodes[i];
  return NULL;
}

static struct kn_node *node_get(struct kube_nodes *kn, const char *name)
{
  struct kn_node *n = node_find(kn, name);

  if (n != NULL)
    return n;
  if (strlen(name) >= CAP_NAME_MAX || kn->nnodes == KN_MAX_NODES)
    return NULL;
  if (kn->nnodes == kn->nodes_cap) {
    size_t cap = kn->nodes_cap ? kn->nodes_cap * 2 : 16;
    struct kn_node *grown = realloc(kn->nodes, cap * sizeof(*grown));

    if (grown == NULL)
      return NULL;
    kn->nodes = grown;
    kn->nodes_cap = cap;
  }
  n = &kn->nodes[kn->nnodes++];
  memset(n, 0, sizeof(*n));
  snprintf(n->name, sizeof(n->name), "%s", name);
  snprintf(n->hostname, sizeof(n->hostname), "%s", name);
  return n;
}

static uint64_t minus(uint64_t a, uint64_t b)
{
  return a > b ? a - b : 0;
}

/* Writes n's current state to capacity. */
static void node_push(struct kube_nodes *kn, struct kn_node *n)
{
  struct cap_label labels[CAP_MAX_SELECTOR];
  struct cap_taint taints[CAP_MAX_SELECTOR];
  int gpus[CAP_MAX_NODE_GPUS];
  struct cap_node_desc d;
  const char *key;
  json_t *v;
  size_t i;
  int rc;

  if (!n->present) {
    if (n->described && capacity_node_remove(kn->cap, n->name) == 0)
      log_info(KN_MOD, "node left capacity", LOG_S("node", n->name));
    n->described = 0;
    return;
  }
  memset(&d, 0, sizeof(d));
  d.source = n->source;
  d.name = n->name;
  d.ngpus = n->alloc_gpus > CAP_MAX_NODE_GPUS ? CAP_MAX_NODE_GPUS
                                              : (size_t)n->alloc_gpus;
  d.ngpus = (size_t)minus(d.ngpus, n->other_gpus);
  for (i = 0; i < d.ngpus; i++)
    gpus[i] = (int)i;
  d.gpus = gpus;
  d.cpu_milli = (unsigned)minus(n->alloc_cpu_milli, n->other_cpu_milli);
  /* 0 would mean "not limited" to capacity: a full node keeps 1 byte. */
  d.memory = n->alloc_memory == 0 ? 0
             : minus(n->alloc_memory, n->other_memory) > 0
                 ? minus(n->alloc_memory, n->other_memory)
                 : 1;
  i = 0;
  json_object_foreach(n->labels, key, v)
  {
    if (i == CAP_MAX_SELECTOR)
      break;
    labels[i].key = key;
    labels[i++].value = json_string_value(v);
  }
  d.labels = labels;
  d.nlabels = i;
  i = 0;
  json_array_foreach(n->taints, i, v)
  {
    if (i == CAP_MAX_SELECTOR)
      break;
    taints[i].key = json_string_value(json_object_get(v, "key"));
    taints[i].value = json_string_value(json_object_get(v, "value"));
    taints[i].effect = json_string_value(json_object_get(v, "effect"));
  }
  d.taints = taints;
  d.ntaints = json_array_size(n->taints) > CAP_MAX_SELECTOR
                  ? CAP_MAX_SELECTOR
                  : json_array_size(n->taints);
  rc = capacity_node_set(kn->cap, &d);
  if (rc != 0) {
    log_warn(KN_MOD, "node not described to capacity", LOG_S("node", n->name),
             LOG_I("error", rc));
    return;
  }
  if (!n->described)
    log_info(KN_MOD, "node joined capacity", LOG_S("node", n->name),
             LOG_S("source", n->source), LOG_U("gpus", d.ngpus),
             LOG_U("cpu_milli", d.cpu_milli), LOG_U("memory", d.memory),
             LOG_I("ready", n->usable));
  n->described = 1;
  capacity_node_set_ready(kn->cap, n->name, n->usable);
  /* Indices are bookkeeping here: a failed check takes all of them. */
  for (i = 0; i < d.ngpus; i++)
    capacity_gpu_set_health(kn->cap, n->name, gpus[i],
                            n->gpu_health == KN_GPU_HEALTHY);
}

static int node_ready(const json_t *node)
{
  const json_t *conds =
      json_object_get(json_object_get(node, "status"), "conditions");
  const json_t *c;
  size_t i;

  json_array_foreach(conds, i, c)
  {
    const char *type = json_string_value(json_object_get(c, "type"));
    const char *status = json_string_value(json_object_get(c, "status"));

    if (type != NULL && strcmp(type, "Ready") == 0)
      return status != NULL && strcmp(status, "True") == 0;
  }
  return 0;
}

/* Keeps the labels pools select on, and the valid taints. */
static int node_read(struct kube_nodes *kn, struct kn_node *n,
                     const json_t *node)
{
  const json_t *meta = json_object_get(node, "metadata");
  const json_t *spec = json_object_get(node, "spec");
  const json_t *alloc =
      json_object_get(json_object_get(node, "status"), "allocatable");
  const json_t *labels = json_object_get(meta, "labels");
  const json_t *taints = json_object_get(spec, "taints");
  const char *group, *host, *key;
  const json_t *v;
  size_t i;

  group = json_string_value(json_object_get(labels, KUBE_LABEL_NODE_GROUP));
  host = json_string_value(json_object_get(labels, KUBE_LABEL_HOSTNAME));
  snprintf(n->source, sizeof(n->source), "%s",
           group != NULL && group[0] != '\0' ? group
                                             : KUBE_NODES_DEFAULT_SOURCE);
  if (host != NULL && host[0] != '\0')
    snprintf(n->hostname, sizeof(n->hostname), "%s", host);
  n->alloc_cpu_milli = quantity_of(alloc, "cpu", 1);
  n->alloc_memory = quantity_of(alloc, "memory", 0);
  n->alloc_gpus = quantity_of(alloc, KUBE_GPU_RESOURCE, 0);
  n->usable =
      node_ready(node) && !json_is_true(json_object_get(spec, "unschedulable"));
  snprintf(n->uid, sizeof(n->uid), "%s",
           json_string_value(json_object_get(meta, "uid")) != NULL
               ? json_string_value(json_object_get(meta, "uid"))
               : "");
  n->marked = 0;
  if (kn->action == CFG_GPU_UNHEALTHY_CORDON)
    n->marked = json_is_true(json_object_get(spec, "unschedulable"));
  json_decref(n->labels);
  json_decref(n->taints);
  n->labels = json_object();
  n->taints = json_array();
  if (n->labels == NULL || n->taints == NULL)
    return -ENOMEM;
  json_object_foreach((json_t *)labels, key, v)
  {
    if (json_is_string(v) && json_object_get(kn->selected, key) != NULL)
      json_object_set_new(n->labels, key, json_string(json_string_value(v)));
  }
  json_array_foreach(taints, i, v)
  {
    const char *tk = json_string_value(json_object_get(v, "key"));
    const char *tv = json_string_value(json_object_get(v, "value"));
    const char *te = json_string_value(json_object_get(v, "effect"));

    if (tk == NULL || te == NULL)
      continue;
    if (kn->action == CFG_GPU_UNHEALTHY_TAINT &&
        strcmp(tk, kn->taint_key) == 0 && strcmp(te, kn->taint_effect) == 0)
      n->marked = 1;
    json_array_append_new(n->taints,
                          json_pack("{s:s, s:s, s:s}", "key", tk, "value",
                                    tv != NULL ? tv : "", "effect", te));
  }
  return 0;
}

/* The watch shows whether the node carries the mark: once it has shown it,
 * its removal (an operator's uncordon or untaint) brings the GPUs back. */
static void gpu_health_seen(struct kn_node *n)
{
  if (n->gpu_health == KN_GPU_REPORTED && n->marked) {
    n->gpu_health = KN_GPU_MARKED;
    log_info(KN_MOD, "GPU-unhealthy node marked on the cluster",
             LOG_S("node", n->name));
  } else if (n->gpu_health == KN_GPU_MARKED && !n->marked) {
    n->gpu_health = KN_GPU_HEALTHY;
    log_info(KN_MOD, "GPU-unhealthy mark lifted; GPUs back in capacity",
             LOG_S("node", n->name));
  }
}

int kube_nodes_node_event(struct kube_nodes *kn, enum kube_event_type type,
                          const json_t *node)
{
  const char *name = json_string_value(
      json_object_get(json_object_get(node, "metadata"), "name"));
  struct kn_node *n;
  int was_usable;

  if (name == NULL || name[0] == '\0')
    return -EINVAL;
  if (type == KUBE_EVENT_DELETED) {
    n = node_find(kn, name);
    if (n == NULL)
      return 0;
    n->present = 0;
    n->usable = 0;
    node_push(kn, n);
    return 0;
  }
  if (type != KUBE_EVENT_ADDED && type != KUBE_EVENT_MODIFIED)
    return 0;
  n = node_get(kn, name);
  if (n == NULL)
    return -ENOMEM;
  was_usable = n->present && n->usable;
  if (node_read(kn, n, node) != 0)
    return -ENOMEM;
  n->present = 1;
  if (was_usable && !n->usable)
    log_info(KN_MOD, "node not schedulable", LOG_S("node", n->name),
             LOG_I("ready", node_ready(node)));
  gpu_health_seen(n);
  node_push(kn, n);
  return 0;
}

/* ---- pods of others ---- */

/* What a pod asks of its node: the larger of the sum of its containers and
 * its largest init container, per resource, as the scheduler counts. */
static void pod_requests(const json_t *spec, uint64_t *cpu, uint64_t *mem,
                         uint64_t *gpus)
{
  static const char *const lists[] = {"containers", "initContainers"};
  size_t l, i;

  *cpu = *mem = *gpus = 0;
  for (l = 0; l < 2; l++) {
    const json_t *c;

    json_array_foreach(json_object_get(spec, lists[l]), i, c)
    {
      const json_t *res = json_object_get(c, "resources");
      const json_t *req = json_object_get(res, "requests");
      const json_t *lim = json_object_get(res, "limits");
      uint64_t cc = quantity_of(req, "cpu", 1);
      uint64_t cm = quantity_of(req, "memory", 0);
      uint64_t cg = quantity_of(req, KUBE_GPU_RESOURCE, 0);

      /* Extended resources may be given as limits only. */
      if (cg == 0)
        cg = quantity_of(lim, KUBE_GPU_RESOURCE, 0);
      if (l == 0) {
        *cpu += cc;
        *mem += cm;
        *gpus += cg;
      } else {
        *cpu = cc > *cpu ? cc : *cpu;
        *mem = cm > *mem ? cm : *mem;
        *gpus = cg > *gpus ? cg : *gpus;
      }
    }
  }
  /* Pod overhead (RuntimeClass) is counted on top. */
  *cpu += quantity_of(json_object_get(spec, "overhead"), "cpu", 1);
  *mem += quantity_of(json_object_get(spec, "overhead"), "memory", 0);
}

static void pod_uncount(struct kube_nodes *kn, const char *key)
{
  json_t *entry = json_object_get(kn->pods, key);
  struct kn_node *n;

  if (entry == NULL)
    return;
  n = node_find(kn, json_string_value(json_array_get(entry, 0)));
  if (n != NULL) {
    n->other_cpu_milli =
        minus(n->other_cpu_milli,
              (uint64_t)json_integer_value(json_array_get(entry, 1)));
    n->other_memory =
        minus(n->other_memory,
              (uint64_t)json_integer_value(json_array_get(entry, 2)));
    n->other_gpus = minus(
        n->other_gpus, (uint64_t)json_integer_value(json_array_get(entry, 3)));
    if (n->present)
      node_push(kn, n);
  }
  json_object_del(kn->pods, key);
}

int kube_nodes_pod_event(struct kube_nodes *kn, enum kube_event_type type,
                         const json_t *pod)
{
  const json_t *meta = json_object_get(pod, "metadata");
  const json_t *spec = json_object_get(pod, "spec");
  const char *ns = json_string_value(json_object_get(meta, "namespace"));
  const char *name = json_string_value(json_object_get(meta, "name"));
  const char *node = json_string_value(json_object_get(spec, "nodeName"));
  const char *phase = json_string_value(
      json_object_get(json_object_get(pod, "status"), "phase"));
  const char *fleet = json_string_value(
      json_object_get(json_object_get(meta, "labels"), KUBE_LABEL_FLEET));
  char key[320];
  uint64_t cpu, mem, gpus;
  struct kn_node *n;

  if (name == NULL)
    return -EINVAL;
  snprintf(key, sizeof(key), "%s/%s", ns != NULL ? ns : "", name);
  pod_uncount(kn, key);
  if (type == KUBE_EVENT_DELETED || node == NULL || node[0] == '\0')
    return 0;
  /* Finished pods hold nothing; this fleet's pods are counted by holds. */
  if (phase != NULL &&
      (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0))
    return 0;
  if (fleet != NULL && strcmp(fleet, kn->fleet) == 0)
    return 0;
  pod_requests(spec, &cpu, &mem, &gpus);
  n = node_get(kn, node);
  if (n == NULL)
    return -ENOMEM;
  if (json_object_set_new(kn->pods, key,
                          json_pack("[s, I, I, I]", node, (json_int_t)cpu,
                                    (json_int_t)mem, (json_int_t)gpus)) != 0)
    return -ENOMEM;
  n->other_cpu_milli += cpu;
  n->other_memory += mem;
  n->other_gpus += gpus;
  if (n->present)
    node_push(kn, n);
  return 0;
}

const char *kube_nodes_hostname(const struct kube_nodes *kn, const char *node)
{
  const struct kn_node *n = node_find(kn, node);

  return n != NULL && n->present ? n->hostname : NULL;
}

int kube_nodes_usable(const struct kube_nodes *kn, const char *node)
{
  const struct kn_node *n = node_find(kn, node);

  return n != NULL && n->present && n->usable;
}

int kube_nodes_known(const struct kube_nodes *kn, const char *node)
{
  const struct kn_node *n = node_find(kn, node);

  return n != NULL && n->present;
}

int kube_nodes_gpu_unhealthy(struct kube_nodes *kn, const char *node)
{
  struct kn_node *n = node_find(kn, node);

  if (n == NULL || !n->present)
    return -ENOENT;
  if (n->gpu_health != KN_GPU_HEALTHY)
    return 1;
  n->gpu_health = KN_GPU_REPORTED;
  log_warn(KN_MOD, "node's GPUs out of capacity after a failed GPU check",
           LOG_S("node", n->name));
  node_push(kn, n);
  return 0;
}

int kube_nodes_gpu_healthy(const struct kube_nodes *kn, const char *node)
{
  const struct kn_node *n = node_find(kn, node);

  return n == NULL || n->gpu_health == KN_GPU_HEALTHY;
}

const char *kube_nodes_uid(const struct kube_nodes *kn, const char *node)
{
  const struct kn_node *n = node_find(kn, node);

  return n != NULL && n->present && n->uid[0] != '\0' ? n->uid : NULL;
}
