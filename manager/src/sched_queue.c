#include "sched_queue.h"

#include <stdlib.h>
#include <string.h>

struct sched_qgroup {
  const char *repo; /* interned: equal names are one pointer */
  int priority;
  uint32_t running; /* in progress */
  uint32_t live;    /* queued */
  uint32_t *fen;    /* Fenwick tree: 1 per slot of a queued job */
  uint32_t fen_cap, fen_next;
  struct sched_qsub *subs;
};

struct sched_qsub {
  struct sched_qgroup *group;
  struct sched_qsub *next; /* in group->subs */
  struct sched_qnode *head, *tail, *cursor;
  uint64_t seq;  /* of head */
  uint32_t rank; /* of head */
  uint32_t hpos; /* in its pool's heap, SCHED_QJOB before it has a job */
  int pool;
};

static uint32_t fen_prefix(const struct sched_qgroup *g, uint32_t i)
{
  uint32_t sum = 0;

  if (i > g->fen_cap)
    i = g->fen_cap;
  for (; i > 0; i &= i - 1)
    sum += g->fen[i - 1];
  return sum;
}

static void fen_add(struct sched_qgroup *g, uint32_t i, uint32_t delta)
{
  for (; i <= g->fen_cap; i += i & -i)
    g->fen[i - 1] += delta;
}

static uint32_t node_rank(const struct sched_qgroup *g,
                          const struct sched_qnode *n)
{
  return g->running + fen_prefix(g, n->slot - 1);
}

/* Gives the queued jobs of g slots 1..live again, in arrival order (a
 * merge of its subgroups), in a tree of cap slots. */
static int group_reslot(struct sched_qgroup *g, uint32_t cap)
{
  uint32_t *fen = calloc(cap, sizeof(*fen));
  struct sched_qsub *s;
  uint32_t k;

  if (fen == NULL)
    return -1;
  for (s = g->subs; s != NULL; s = s->next)
    s->cursor = s->head;
  for (k = 1; k <= g->live; k++) {
    struct sched_qsub *min = NULL;
    for (s = g->subs; s != NULL; s = s->next)
      if (s->cursor != NULL &&
          (min == NULL || s->cursor->job->seq < min->cursor->job->seq))
        min = s;
    min->cursor->slot = k;
    fen[k - 1] = 1;
    min->cursor = min->cursor->next;
  }
  for (k = 1; k <= cap; k++) {
    uint32_t up = k + (k & -k);
    if (up <= cap)
      fen[up - 1] += fen[k - 1];
  }
  free(g->fen);
  g->fen = fen;
  g->fen_cap = cap;
  g->fen_next = g->live + 1;
  return 0;
}

static uint64_t group_key_hash(int priority, const char *repo)
{
  return sched_mix64((uint64_t)(uintptr_t)repo * 31 + (uint32_t)priority);
}

static uint64_t group_hash_cb(const void *e)
{
  const struct sched_qgroup *g = e;
  return group_key_hash(g->priority, g->repo);
}

static struct sched_qgroup *group_find(const struct sched_queue *q,
                                       int priority, const char *repo)
{
  struct sched_qgroup *g;
  size_t k;

  for (k = group_key_hash(priority, repo);
       (g = sched_table_probe(&q->groups, &k)) != NULL;)
    if (g->priority == priority && g->repo == repo)
      return g;
  return NULL;
}

struct sched_qgroup *sched_queue_group(const struct sched_queue *q,
                                       const struct sched_job *j)
{
  return group_find(q, q->cfg->pools[j->pool].priority, j->repo);
}

static void group_free(struct sched_qgroup *g)
{
  struct sched_qsub *s, *next;

  for (s = g->subs; s != NULL; s = next) {
    next = s->next;
    free(s);
  }
  free(g->fen);
  free(g);
}

void sched_queue_release(struct sched_queue *q, struct sched_qgroup *g)
{
  if (g->live > 0 || g->running > 0)
    return;
  sched_table_del(&q->groups, g, group_hash_cb(g), group_hash_cb);
  group_free(g);
}

static int sub_before(const struct sched_qsub *a, const struct sched_qsub *b)
{
  if (a->rank != b->rank)
    return a->rank < b->rank;
  return a->seq < b->seq;
}

static void heap_set(struct sched_qheap *h, size_t i, struct sched_qsub *s)
{
  h->v[i] = s;
  s->hpos = (uint32_t)i;
}

/* Moves the entry at i up or down to where its key now belongs. */
static void heap_fix(struct sched_qheap *h, size_t i)
{
  struct sched_qsub *s = h->v[i];

  while (i > 0 && sub_before(s, h->v[(i - 1) / 2])) {
    heap_set(h, i, h->v[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n)
      break;
    if (c + 1 < h->n && sub_before(h->v[c + 1], h->v[c]))
      c++;
    if (!sub_before(h->v[c], s))
      break;
    heap_set(h, i, h->v[c]);
    i = c;
  }
  heap_set(h, i, s);
}

static void heap_remove(struct sched_qheap *h, struct sched_qsub *s)
{
  struct sched_qsub *last = h->v[--h->n];

  if (last == s)
    return;
  heap_set(h, s->hpos, last);
  heap_fix(h, last->hpos);
}

static void sub_rank_add(struct sched_queue *q, struct sched_qsub *s,
                         uint32_t delta)
{
  s->rank += delta;
  heap_fix(&q->heaps[s->pool], s->hpos);
}

struct sched_qgroup *sched_queue_prepare(struct sched_queue *q,
                                         const struct sched_job *j, int queued)
{
  int prio = q->cfg->pools[j->pool].priority;
  struct sched_qgroup *g = group_find(q, prio, j->repo);
  struct sched_qheap *h = &q->heaps[j->pool];
  struct sched_qsub *s;
  int new_sub = 0;

  if (g == NULL) {
    g = calloc(1, sizeof(*g));
    if (g == NULL)
      return NULL;
    g->repo = j->repo;
    g->priority = prio;
    g->fen_next = 1;
    if (sched_table_add(&q->groups, g, group_hash_cb(g), group_hash_cb) != 0) {
      free(g);
      return NULL;
    }
  }
  if (!queued)
    return g;
  for (s = g->subs; s != NULL && s->pool != j->pool; s = s->next)
    ;
  if (s == NULL && h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 16;
    struct sched_qsub **v = realloc(h->v, cap * sizeof(*v));
    if (v == NULL)
      goto fail;
    h->v = v;
    h->cap = cap;
  }
  if (s == NULL) {
    s = calloc(1, sizeof(*s));
    if (s == NULL)
      goto fail;
    s->group = g;
    s->pool = j->pool;
    s->hpos = SCHED_QJOB;
    s->next = g->subs;
    g->subs = s;
    new_sub = 1;
  }
  /* Out of slots: renumber into a tree twice the queue, so this happens
   * once per as many arrivals as are queued (amortised O(1)). */
  if (g->fen_next > g->fen_cap &&
      group_reslot(g, g->live < 8 ? 16 : 2 * g->live) != 0)
    goto fail;
  return g;
fail:
  if (new_sub) {
    g->subs = s->next;
    free(s);
  }
  sched_queue_release(q, g);
  return NULL;
}

void sched_queue_link(struct sched_queue *q, struct sched_qgroup *g,
                      struct sched_qnode *n)
{
  struct sched_qsub *s;

  for (s = g->subs; s->pool != n->job->pool; s = s->next)
    ;
  n->slot = g->fen_next++;
  fen_add(g, n->slot, 1);
  n->sub = s;
  n->next = NULL;
  n->prev = s->tail;
  if (s->tail != NULL) {
    s->tail->next = n;
  } else {
    struct sched_qheap *h = &q->heaps[s->pool];
    s->head = n;
    s->seq = n->job->seq;
    s->rank = g->running + g->live; /* every queued one came before it */
    h->v[h->n++] = s;
    heap_set(h, h->n - 1, s);
    heap_fix(h, s->hpos);
  }
  s->tail = n;
  g->live++;
}

struct sched_qgroup *sched_queue_unlink(struct sched_queue *q,
                                        struct sched_qnode *n)
{
  struct sched_qsub *s = n->sub, *o;
  struct sched_qgroup *g = s->group;

  fen_add(g, n->slot, (uint32_t)-1);
  g->live--;
  /* First jobs of other pools that queued after n move up a turn. */
  for (o = g->subs; o != NULL; o = o->next)
    if (o != s && o->seq > n->job->seq)
      sub_rank_add(q, o, (uint32_t)-1);
  if (n->prev != NULL)
    n->prev->next = n->next;
  if (n->next != NULL)
    n->next->prev = n->prev;
  if (s->tail == n)
    s->tail = n->prev;
  if (s->head == n) {
    s->head = n->next;
    if (s->head == NULL) {
      struct sched_qsub **pp;
      heap_remove(&q->heaps[s->pool], s);
      for (pp = &g->subs; *pp != s; pp = &(*pp)->next)
        ;
      *pp = s->next;
      free(s);
    } else {
      s->seq = s->head->job->seq;
      s->rank = node_rank(g, s->head);
      heap_fix(&q->heaps[s->pool], s->hpos);
    }
  }
  n->next = n->prev = NULL;
  n->sub = NULL;
  if (g->live == 0) {
    free(g->fen);
    g->fen = NULL;
    g->fen_cap = 0;
    g->fen_next = 1;
  }
  return g;
}

void sched_queue_running(struct sched_queue *q, struct sched_qgroup *g,
                         int delta)
{
  struct sched_qsub *s;

  /* Every queued job of g moves a turn. */
  g->running += (uint32_t)delta;
  for (s = g->subs; s != NULL; s = s->next)
    sub_rank_add(q, s, (uint32_t)delta);
}

void sched_queue_clear(struct sched_queue *q)
{
  size_t i;

  for (i = 0; q->groups.slots != NULL && i <= q->groups.mask; i++)
    if (q->groups.slots[i] != NULL)
      group_free(q->groups.slots[i]);
  sched_table_free(&q->groups);
  for (i = 0; i < CFG_MAX_POOLS; i++)
    free(q->heaps[i].v);
  memset(q->heaps, 0, sizeof(q->heaps));
}

void sched_queue_free(struct sched_queue *q)
{
  sched_queue_clear(q);
  free(q->walk);
  q->walk = NULL;
  q->nwalk = q->walk_cap = 0;
}

int sched_queue_has(const struct sched_queue *q, size_t pool)
{
  return q->heaps[pool].n > 0;
}

/* ---- walks ----
 * A min-heap of cursors starts with the root of each pool's heap; taking a
 * subgroup's first job brings in that entry's heap children and the
 * subgroup's next job, so the cursors always include the next job in
 * order. */

static int cursor_before(const struct sched_qcursor *a,
                         const struct sched_qcursor *b)
{
  if (a->priority != b->priority)
    return a->priority > b->priority;
  if (a->rank != b->rank)
    return a->rank < b->rank;
  return a->seq < b->seq;
}

static int walk_push(struct sched_queue *q, const struct sched_qcursor *c)
{
  size_t i;

  if (q->nwalk == q->walk_cap) {
    size_t cap = q->walk_cap ? q->walk_cap * 2 : 64;
    struct sched_qcursor *n = realloc(q->walk, cap * sizeof(*n));
    if (n == NULL)
      return -1;
    q->walk = n;
    q->walk_cap = cap;
  }
  for (i = q->nwalk++; i > 0 && cursor_before(c, &q->walk[(i - 1) / 2]);
       i = (i - 1) / 2)
    q->walk[i] = q->walk[(i - 1) / 2];
  q->walk[i] = *c;
  return 0;
}

static int walk_push_sub(struct sched_queue *q, size_t pool, size_t hpos)
{
  const struct sched_qsub *s = q->heaps[pool].v[hpos];
  struct sched_qcursor c;

  c.node = s->head;
  c.seq = s->seq;
  c.rank = s->rank;
  c.hpos = (uint32_t)hpos;
  c.priority = q->cfg->pools[pool].priority;
  c.pool = (int)pool;
  return walk_push(q, &c);
}

void sched_walk_reset(struct sched_queue *q)
{
  q->nwalk = 0;
}

int sched_walk_add(struct sched_queue *q, size_t pool)
{
  return q->heaps[pool].n > 0 ? walk_push_sub(q, pool, 0) : 0;
}

int sched_walk_pop(struct sched_queue *q, struct sched_qcursor *c)
{
  struct sched_qcursor last;
  size_t i = 0;

  if (q->nwalk == 0)
    return -1;
  *c = q->walk[0];
  last = q->walk[--q->nwalk];
  for (;;) {
    size_t k = 2 * i + 1;
    if (k >= q->nwalk)
      break;
    if (k + 1 < q->nwalk && cursor_before(&q->walk[k + 1], &q->walk[k]))
      k++;
    if (!cursor_before(&q->walk[k], &last))
      break;
    q->walk[i] = q->walk[k];
    i = k;
  }
  if (q->nwalk > 0)
    q->walk[i] = last;
  return 0;
}

int sched_walk_expand(struct sched_queue *q, const struct sched_qcursor *c)
{
  const struct sched_qheap *h = &q->heaps[c->pool];
  const struct sched_qnode *next = c->node->next;

  if (c->hpos != SCHED_QJOB) {
    size_t i = 2 * (size_t)c->hpos + 1;
    if (i < h->n && walk_push_sub(q, (size_t)c->pool, i) != 0)
      return -1;
    if (i + 1 < h->n && walk_push_sub(q, (size_t)c->pool, i + 1) != 0)
      return -1;
  }
  if (next != NULL) {
    struct sched_qcursor n = *c;
    n.node = next;
    n.seq = next->job->seq;
    n.rank = node_rank(next->sub->group, next);
    n.hpos = SCHED_QJOB;
    return walk_push(q, &n);
  }
  return 0;
}
