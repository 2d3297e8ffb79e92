#include "capacity.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define CAP_MOD "capacity"
#define CAP_MAX_NODES 4096
#define CAP_MAX_SOURCES 32

struct cap_gpu {
  int index;
  int healthy;
  int hold; /* index into holds, -1 when free */
};

struct cap_node {
  char name[CAP_NAME_MAX];
  unsigned source; /* index into sources */
  int present;     /* removed nodes stay while holds remain on them */
  int ready;
  struct cap_gpu gpus[CAP_MAX_NODE_GPUS];
  size_t ngpus;
  unsigned cpu_total, cpu_held;
  uint64_t memory_total, memory_held;
  char *label_keys[CAP_MAX_SELECTOR];
  char *label_values[CAP_MAX_SELECTOR];
  size_t nlabels;
  char *taint_keys[CAP_MAX_SELECTOR]; /* only NoSchedule and NoExecute */
  char *taint_values[CAP_MAX_SELECTOR];
  char *taint_effects[CAP_MAX_SELECTOR];
  size_t ntaints;
  unsigned holds; /* live holds on this node */
  /* The head of a blocked dev server queue waits for this node: claim_gpus
   * of its free GPUs are kept from everyone else (running holders drain
   * them). claim_holder NULL: no claim. */
  char *claim_holder;
  unsigned claim_gpus;
};

struct cap_hold {
  char *holder; /* NULL: free slot */
  enum cap_holder_kind kind;
  size_t node;
  struct cap_placement where;
};

struct capacity {
  struct cap_node *nodes;
  size_t nnodes, nodes_cap;
  char sources[CAP_MAX_SOURCES][CAP_NAME_MAX];
  size_t nsources;
  struct cap_hold *holds;
  size_t nholds, holds_cap; /* nholds counts slots, used or free */
};

struct capacity *capacity_new(void)
{
  return calloc(1, sizeof(struct capacity));
}

static void node_free_labels(struct cap_node *n)
{
  size_t i;

  for (i = 0; i < n->nlabels; i++) {
    free(n->label_keys[i]);
    free(n->label_values[i]);
  }
  n->nlabels = 0;
  for (i = 0; i < n->ntaints; i++) {
    free(n->taint_keys[i]);
    free(n->taint_values[i]);
    free(n->taint_effects[i]);
  }
  n->ntaints = 0;
}

void capacity_destroy(struct capacity *c)
{
  size_t i;

  if (c == NULL)
    return;
  for (i = 0; i < c->nnodes; i++) {
    node_free_labels(&c->nodes[i]);
    free(c->nodes[i].claim_holder);
  }
  for (i = 0; i < c->nholds; i++)
    free(c->holds[i].holder);
  free(c->nodes);
  free(c->holds);
  free(c);
}

static struct cap_node *node_find(const struct capacity *c, const char *name)
{
  size_t i;

  for (i = 0; i < c->nnodes; i++)
    if (strcmp(c->nodes[i].name, name) == 0)
      return &c->nodes[i];
  return NULL;
}

static int source_index(struct capacity *c, const char *name, unsigned *out)
{
  size_t i;

  for (i = 0; i < c->nsources; i++)
    if (strcmp(c->sources[i], name) == 0) {
      *out = (unsigned)i;
      return 0;
    }
  if (c->nsources == CAP_MAX_SOURCES)
    return -ENOSPC;
  snprintf(c->sources[c->nsources], CAP_NAME_MAX, "%s", name);
  *out = (unsigned)c->nsources++;
  return 0;
}

static int desc_valid(const struct cap_node_desc *d)
{
  size_t i, j;

  if (d->name == NULL || d->name[0] == '\0' ||
      strlen(d->name) >= CAP_NAME_MAX || d->source == NULL ||
      d->source[0] == '\0' || strlen(d->source) >= CAP_NAME_MAX ||
      d->ngpus > CAP_MAX_NODE_GPUS || d->nlabels > CAP_MAX_SELECTOR ||
      d->ntaints > CAP_MAX_SELECTOR || (d->ngpus > 0 && d->gpus == NULL) ||
      (d->nlabels > 0 && d->labels == NULL) ||
      (d->ntaints > 0 && d->taints == NULL))
    return 0;
  for (i = 0; i < d->ntaints; i++)
    if (d->taints[i].key == NULL || d->taints[i].effect == NULL)
      return 0;
  for (i = 0; i < d->ngpus; i++) {
    if (d->gpus[i] < 0)
      return 0;
    for (j = 0; j < i; j++)
      if (d->gpus[j] == d->gpus[i])
        return 0;
  }
  for (i = 0; i < d->nlabels; i++)
    if (d->labels[i].key == NULL || d->labels[i].value == NULL)
      return 0;
  return 1;
}

/* Copies labels into n, replacing what it had. */
static int node_set_labels(struct cap_node *n, const struct cap_node_desc *d)
{
  size_t i;

  node_free_labels(n);
  for (i = 0; i < d->nlabels; i++) {
    n->label_keys[i] = strdup(d->labels[i].key);
    n->label_values[i] = strdup(d->labels[i].value);
    n->nlabels = i + 1;
    if (n->label_keys[i] == NULL || n->label_values[i] == NULL)
      return -ENOMEM;
  }
  for (i = 0; i < d->ntaints; i++) {
    const struct cap_taint *t = &d->taints[i];

    /* PreferNoSchedule never keeps a pod off a node. */
    if (strcmp(t->effect, "NoSchedule") != 0 &&
        strcmp(t->effect, "NoExecute") != 0)
      continue;
    n->taint_keys[n->ntaints] = strdup(t->key);
    n->taint_values[n->ntaints] = strdup(t->value != NULL ? t->value : "");
    n->taint_effects[n->ntaints] = strdup(t->effect);
    n->ntaints++;
    if (n->taint_keys[n->ntaints - 1] == NULL ||
        n->taint_values[n->ntaints - 1] == NULL ||
        n->taint_effects[n->ntaints - 1] == NULL)
      return -ENOMEM;
  }
  return 0;
}

/* Sets the GPUs of n to the described ones: a GPU that stays keeps its
 * health and its hold; one that went away with a hold on it is kept (as
 * unhealthy) until the hold is released. */
static void node_set_gpus(struct cap_node *n, const struct cap_node_desc *d)
{
  struct cap_gpu next[CAP_MAX_NODE_GPUS];
  size_t nnext = 0, i, j;

  for (i = 0; i < d->ngpus; i++) {
    next[nnext].index = d->gpus[i];
    next[nnext].healthy = 1;
    next[nnext].hold = -1;
    for (j = 0; j < n->ngpus; j++)
      if (n->gpus[j].index == d->gpus[i])
        next[nnext] = n->gpus[j];
    nnext++;
  }
  for (j = 0; j < n->ngpus && nnext < CAP_MAX_NODE_GPUS; j++) {
    int kept = 0;
    for (i = 0; i < d->ngpus; i++)
      kept |= d->gpus[i] == n->gpus[j].index;
    if (!kept && n->gpus[j].hold >= 0) {
      next[nnext] = n->gpus[j];
      next[nnext++].healthy = 0;
    }
  }
  /* Ascending indices, so holds take the lowest free ones. */
  for (i = 1; i < nnext; i++)
    for (j = i; j > 0 && next[j - 1].index > next[j].index; j--) {
      struct cap_gpu t = next[j];
      next[j] = next[j - 1];
      next[j - 1] = t;
    }
  memcpy(n->gpus, next, nnext * sizeof(next[0]));
  n->ngpus = nnext;
}

int capacity_node_set(struct capacity *c, const struct cap_node_desc *desc)
{
  struct cap_node *n;
  unsigned source;
  int rc;

  if (!desc_valid(desc))
    return -EINVAL;
  rc = source_index(c, desc->source, &source);
  if (rc != 0)
    return rc;
  n = node_find(c, desc->name);
  if (n == NULL) {
    if (c->nnodes == CAP_MAX_NODES)
      return -ENOSPC;
    if (c->nnodes == c->nodes_cap) {
      size_t cap = c->nodes_cap ? c->nodes_cap * 2 : 8;
      struct cap_node *grown = realloc(c->nodes, cap * sizeof(*grown));
      if (grown == NULL)
        return -ENOMEM;
      c->nodes = grown;
      c->nodes_cap = cap;
    }
    n = &c->nodes[c->nnodes++];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", desc->name);
    n->ready = 1;
  }
  n->source = source;
  n->present = 1;
  n->cpu_total = desc->cpu_milli;
  n->memory_total = desc->memory;
  node_set_gpus(n, desc);
  return node_set_labels(n, desc);
}

/* Drops a removed node once nothing holds anything on it. Hold records
 * refer to nodes by index, so the last node moves into its place. */
static void node_maybe_drop(struct capacity *c, struct cap_node *n)
{
  size_t idx = (size_t)(n - c->nodes), last = c->nnodes - 1, i;

  if (n->present || n->holds > 0)
    return;
  node_free_labels(n);
  free(n->claim_holder);
  n->claim_holder = NULL;
  if (idx != last) {
    c->nodes[idx] = c->nodes[last];
    for (i = 0; i < c->nholds; i++)
      if (c->holds[i].holder != NULL && c->holds[i].node == last)
        c->holds[i].node = idx;
  }
  c->nnodes--;
}

int capacity_node_remove(struct capacity *c, const char *node)
{
  struct cap_node *n = node_find(c, node);

  if (n == NULL || !n->present)
    return -ENOENT;
  n->present = 0;
  node_maybe_drop(c, n);
  return 0;
}

int capacity_node_set_ready(struct capacity *c, const char *node, int ready)
{
  struct cap_node *n = node_find(c, node);

  if (n == NULL)
    return -ENOENT;
  if (n->ready != !!ready)
    log_info(CAP_MOD, ready ? "node ready" : "node not ready",
             LOG_S("node", n->name));
  n->ready = !!ready;
  return 0;
}

int capacity_gpu_set_health(struct capacity *c, const char *node, int gpu,
                            int healthy)
{
  struct cap_node *n = node_find(c, node);
  size_t i;

  if (n == NULL)
    return -ENOENT;
  for (i = 0; i < n->ngpus; i++) {
    if (n->gpus[i].index != gpu)
      continue;
    if (n->gpus[i].healthy != !!healthy)
      log_warn(CAP_MOD, healthy ? "GPU healthy again" : "GPU marked unhealthy",
               LOG_S("node", n->name), LOG_I("gpu", gpu),
               LOG_I("held", n->gpus[i].hold >= 0));
    n->gpus[i].healthy = !!healthy;
    return 0;
  }
  return -ENOENT;
}

static unsigned node_gpus_free(const struct cap_node *n)
{
  unsigned free_gpus = 0;
  size_t i;

  for (i = 0; i < n->ngpus; i++)
    if (n->gpus[i].healthy && n->gpus[i].hold < 0)
      free_gpus++;
  return free_gpus;
}

/* What is left of total once held is taken (a node that shrank under its
 * holds has nothing left rather than wrapping around). */
static uint64_t left(uint64_t total, uint64_t held)
{
  return held < total ? total - held : 0;
}

int capacity_tolerates(const struct cfg_toleration *tolerations, size_t n,
                       const struct cap_taint *t)
{
  size_t i;

  for (i = 0; i < n; i++) {
    const struct cfg_toleration *o = &tolerations[i];
    int exists = o->operator_ != NULL && strcmp(o->operator_, "Exists") == 0;

    if (o->effect != NULL && strcmp(o->effect, t->effect) != 0)
      continue;
    if (o->key == NULL || o->key[0] == '\0') {
      if (exists)
        return 1;
      continue;
    }
    if (strcmp(o->key, t->key) != 0)
      continue;
    if (exists || strcmp(o->value != NULL ? o->value : "",
                         t->value != NULL ? t->value : "") == 0)
      return 1;
  }
  return 0;
}

static int node_matches(const struct cap_node *n, const struct cap_request *r)
{
  size_t i, j;

  for (i = 0; i < n->ntaints; i++) {
    struct cap_taint t = {n->taint_keys[i], n->taint_values[i],
                          n->taint_effects[i]};

    if (!capacity_tolerates(r->tolerations, r->ntolerations, &t))
      return 0;
  }
  for (i = 0; i < r->nselector; i++) {
    int found = 0;
    for (j = 0; j < n->nlabels && !found; j++)
      found = strcmp(n->label_keys[j], r->selector[i].key) == 0 &&
              strcmp(n->label_values[j], r->selector[i].value) == 0;
    if (!found)
      return 0;
  }
  return 1;
}

/* The free GPUs of n that holder may take: all but those claimed for
 * another holder (holder NULL: anyone's request, such as a CI runner's). */
static unsigned node_gpus_free_for(const struct cap_node *n, const char *holder)
{
  unsigned free_gpus = node_gpus_free(n);

  if (n->claim_holder == NULL ||
      (holder != NULL && strcmp(holder, n->claim_holder) == 0))
    return free_gpus;
  return free_gpus > n->claim_gpus ? free_gpus - n->claim_gpus : 0;
}

static int node_fits(const struct cap_node *n, const struct cap_request *r,
                     const char *holder)
{
  if (!n->present || !n->ready || !node_matches(n, r))
    return 0;
  if (r->gpus > node_gpus_free_for(n, holder))
    return 0;
  if (r->cpu_milli > left(n->cpu_total, n->cpu_held))
    return 0;
  if (r->memory > 0 && n->memory_total > 0 &&
      r->memory > left(n->memory_total, n->memory_held))
    return 0;
  return 1;
}

/* The node that fits with the least left over: a small request goes where
 * it fragments least, so a big one still finds a whole node. */
static struct cap_node *best_node(const struct capacity *c,
                                  const struct cap_request *r,
                                  const char *holder)
{
  struct cap_node *best = NULL;
  size_t i;

  for (i = 0; i < c->nnodes; i++) {
    struct cap_node *n = &c->nodes[i];
    if (!node_fits(n, r, holder))
      continue;
    if (best == NULL || node_gpus_free(n) < node_gpus_free(best) ||
        (node_gpus_free(n) == node_gpus_free(best) &&
         left(n->cpu_total, n->cpu_held) <
             left(best->cpu_total, best->cpu_held)))
      best = n;
  }
  return best;
}

int capacity_fits(const struct capacity *c, const struct cap_request *req)
{
  return best_node(c, req, NULL) != NULL;
}

int capacity_fits_for(const struct capacity *c, const char *holder,
                      const struct cap_request *req)
{
  return best_node(c, req, holder) != NULL;
}

static struct cap_hold *hold_find(const struct capacity *c, const char *holder)
{
  size_t i;

  for (i = 0; i < c->nholds; i++)
    if (c->holds[i].holder != NULL && strcmp(c->holds[i].holder, holder) == 0)
      return &c->holds[i];
  return NULL;
}

/* A free hold slot with holder copied in, or NULL. */
static struct cap_hold *hold_new(struct capacity *c, const char *holder)
{
  struct cap_hold *h = NULL;
  size_t i;

  for (i = 0; i < c->nholds && h == NULL; i++)
    if (c->holds[i].holder == NULL)
      h = &c->holds[i];
  if (h == NULL) {
    if (c->nholds == c->holds_cap) {
      size_t cap = c->holds_cap ? c->holds_cap * 2 : 16;
      struct cap_hold *grown = realloc(c->holds, cap * sizeof(*grown));
      if (grown == NULL)
        return NULL;
      c->holds = grown;
      c->holds_cap = cap;
    }
    h = &c->holds[c->nholds++];
  }
  memset(h, 0, sizeof(*h));
  h->holder = strdup(holder);
  return h->holder != NULL ? h : NULL;
}

static void hold_book(struct capacity *c, struct cap_hold *h,
                      struct cap_node *n)
{
  size_t i, k;

  h->node = (size_t)(n - c->nodes);
  snprintf(h->where.node, sizeof(h->where.node), "%s", n->name);
  snprintf(h->where.source, sizeof(h->where.source), "%s",
           c->sources[n->source]);
  for (i = 0; i < h->where.ngpus; i++)
    for (k = 0; k < n->ngpus; k++)
      if (n->gpus[k].index == h->where.gpus[i])
        n->gpus[k].hold = (int)(h - c->holds);
  n->cpu_held += h->where.cpu_milli;
  n->memory_held += h->where.memory;
  n->holds++;
}

int capacity_hold(struct capacity *c, const char *holder,
                  enum cap_holder_kind kind, const struct cap_request *req,
                  struct cap_placement *out)
{
  struct cap_node *n;
  struct cap_hold *h;
  size_t i;

  if (holder == NULL || holder[0] == '\0')
    return -EINVAL;
  if (hold_find(c, holder) != NULL)
    return -EEXIST;
  n = best_node(c, req, holder);
  if (n == NULL)
    return -ENOSPC;
  h = hold_new(c, holder);
  if (h == NULL)
    return -ENOMEM;
  h->kind = kind;
  for (i = 0; i < n->ngpus && h->where.ngpus < req->gpus; i++)
    if (n->gpus[i].healthy && n->gpus[i].hold < 0)
      h->where.gpus[h->where.ngpus++] = n->gpus[i].index;
  h->where.cpu_milli = req->cpu_milli;
  h->where.memory = n->memory_total > 0 ? req->memory : 0;
  hold_book(c, h, n);
  if (out != NULL)
    *out = h->where;
  /* The hold takes the place of the holder's claim, wherever it was
   * (this may drop a removed node: n is not used after it). */
  capacity_unclaim(c, holder);
  return 0;
}

int capacity_hold_at(struct capacity *c, const char *holder,
                     enum cap_holder_kind kind,
                     const struct cap_placement *where)
{
  struct cap_node *n = node_find(c, where->node);
  struct cap_hold *h;
  size_t i, k;

  if (holder == NULL || holder[0] == '\0' || where->ngpus > CAP_MAX_NODE_GPUS)
    return -EINVAL;
  if (n == NULL || !n->present)
    return -ENOENT;
  if (hold_find(c, holder) != NULL)
    return -EEXIST;
  for (i = 0; i < where->ngpus; i++) {
    int found = 0;
    for (k = 0; k < n->ngpus; k++)
      if (n->gpus[k].index == where->gpus[i]) {
        if (n->gpus[k].hold >= 0)
          return -EBUSY;
        found = 1;
      }
    if (!found)
      return -ENOENT;
  }
  h = hold_new(c, holder);
  if (h == NULL)
    return -ENOMEM;
  h->kind = kind;
  h->where = *where;
  hold_book(c, h, n);
  return 0;
}

int capacity_release(struct capacity *c, const char *holder)
{
  struct cap_hold *h = holder != NULL ? hold_find(c, holder) : NULL;
  struct cap_node *n;
  size_t k;

  if (h == NULL)
    return -ENOENT;
  n = &c->nodes[h->node];
  for (k = 0; k < n->ngpus; k++)
    if (n->gpus[k].hold == (int)(h - c->holds))
      n->gpus[k].hold = -1;
  n->cpu_held -= h->where.cpu_milli;
  n->memory_held -= h->where.memory;
  n->holds--;
  free(h->holder);
  h->holder = NULL;
  node_maybe_drop(c, n);
  return 0;
}

const struct cap_placement *capacity_hold_find(const struct capacity *c,
                                               const char *holder)
{
  const struct cap_hold *h = holder != NULL ? hold_find(c, holder) : NULL;

  return h != NULL ? &h->where : NULL;
}

static struct cap_node *claim_find(const struct capacity *c, const char *holder)
{
  size_t i;

  for (i = 0; i < c->nnodes; i++)
    if (c->nodes[i].claim_holder != NULL &&
        strcmp(c->nodes[i].claim_holder, holder) == 0)
      return &c->nodes[i];
  return NULL;
}

static unsigned node_gpus_healthy(const struct cap_node *n)
{
  unsigned healthy = 0;
  size_t i;

  for (i = 0; i < n->ngpus; i++)
    healthy += n->gpus[i].healthy != 0;
  return healthy;
}

int capacity_claim(struct capacity *c, const char *holder,
                   const struct cap_request *req, char *node, size_t size)
{
  struct cap_node *best = NULL, *n, *had;
  char *dup;
  size_t i;

  if (holder == NULL || holder[0] == '\0')
    return -EINVAL;
  had = claim_find(c, holder);
  for (i = 0; i < c->nnodes; i++) {
    n = &c->nodes[i];
    if (!n->present || !n->ready || !node_matches(n, req) ||
        node_gpus_healthy(n) < req->gpus ||
        (n->claim_holder != NULL && n != had))
      continue;
    /* The node closest to taking the request drains first. */
    if (best == NULL || node_gpus_free(n) > node_gpus_free(best))
      best = n;
  }
  if (best == NULL)
    return -ENOSPC;
  if (node != NULL)
    snprintf(node, size, "%s", best->name);
  best->claim_gpus = req->gpus;
  if (best == had)
    return 0;
  dup = strdup(holder);
  if (dup == NULL)
    return -ENOMEM;
  best->claim_holder = dup;
  /* Last: dropping a removed node may move best in the array. */
  if (had != NULL) {
    free(had->claim_holder);
    had->claim_holder = NULL;
    had->claim_gpus = 0;
    node_maybe_drop(c, had);
  }
  return 0;
}

int capacity_unclaim(struct capacity *c, const char *holder)
{
  struct cap_node *n = holder != NULL ? claim_find(c, holder) : NULL;

  if (n == NULL)
    return -ENOENT;
  free(n->claim_holder);
  n->claim_holder = NULL;
  n->claim_gpus = 0;
  node_maybe_drop(c, n);
  return 0;
}

unsigned capacity_block_key(const struct capacity *c,
                            const struct cap_request *req)
{
  unsigned source = 0;
  size_t i;

  for (i = 0; i < c->nnodes; i++)
    if (c->nodes[i].present && node_matches(&c->nodes[i], req)) {
      source = c->nodes[i].source;
      break;
    }
  return (source * 2 + (req->gpus > 0)) % CAP_MAX_BLOCK_KEYS;
}

void capacity_totals(const struct capacity *c, struct cap_totals *out)
{
  size_t i, k;

  memset(out, 0, sizeof(*out));
  for (i = 0; i < c->nnodes; i++) {
    const struct cap_node *n = &c->nodes[i];
    if (n->present) {
      out->nodes++;
      out->nodes_ready += n->ready;
    }
    for (k = 0; k < n->ngpus; k++) {
      out->gpus_total++;
      if (n->gpus[k].hold >= 0)
        out->gpus_held++;
      if (!n->gpus[k].healthy)
        out->gpus_unhealthy++;
      else if (n->gpus[k].hold < 0 && n->present && n->ready)
        out->gpus_free++;
    }
    out->cpu_milli_total += n->present ? n->cpu_total : 0;
    out->cpu_milli_held += n->cpu_held;
    out->memory_total += n->present ? n->memory_total : 0;
    out->memory_held += n->memory_held;
    out->holds += n->holds;
  }
}

size_t capacity_nnodes(const struct capacity *c)
{
  return c->nnodes;
}

int capacity_node_view(const struct capacity *c, size_t i, const char **name,
                       const char **source, int *ready,
                       struct cap_gpu_view *gpus, size_t max, size_t *ngpus)
{
  const struct cap_node *n;
  size_t k;

  if (i >= c->nnodes)
    return -ENOENT;
  n = &c->nodes[i];
  *name = n->name;
  *source = c->sources[n->source];
  *ready = n->present && n->ready;
  for (k = 0; k < n->ngpus && k < max; k++) {
    const struct cap_gpu *g = &n->gpus[k];
    gpus[k].index = g->index;
    gpus[k].healthy = g->healthy;
    gpus[k].holder = g->hold >= 0 ? c->holds[g->hold].holder : NULL;
    gpus[k].holder_kind =
        g->hold >= 0 ? c->holds[g->hold].kind : CAP_HOLDER_RUNNER;
  }
  *ngpus = k;
  return 0;
}

void capacity_request_for_pool(const struct cfg_pool *pool,
                               struct cap_request *req,
                               struct cap_label *selector)
{
  size_t i;

  memset(req, 0, sizeof(*req));
  req->gpus = pool->gpus;
  req->cpu_milli = pool->cpus * 1000u;
  req->memory = pool->memory_bytes;
  for (i = 0; i < pool->nnode_selector && i < CAP_MAX_SELECTOR; i++) {
    selector[i].key = pool->node_selector[i].key;
    selector[i].value = pool->node_selector[i].value;
  }
  req->selector = selector;
  req->nselector = i;
  req->tolerations = pool->tolerations;
  req->ntolerations = pool->ntolerations;
}
