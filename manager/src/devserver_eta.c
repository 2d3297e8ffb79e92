#include "devserver_eta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A future change of one node's free GPUs. */
struct eta_event {
  uint64_t at_ms;
  size_t node;
  unsigned gpus; /* given back at at_ms */
};

struct eta_sim {
  struct eta_event *ev; /* sorted by time */
  size_t nev, cap;
  unsigned *free; /* per node, at the simulation's present */
  size_t nnodes;
};

static int cmp_event(const void *a, const void *b)
{
  const struct eta_event *x = a, *y = b;

  return (x->at_ms > y->at_ms) - (x->at_ms < y->at_ms);
}

/* Inserts e keeping ev sorted (a started reservation adds its release). */
static int sim_add(struct eta_sim *s, struct eta_event e)
{
  size_t i;

  if (s->nev == s->cap)
    return -EINVAL;
  for (i = s->nev; i > 0 && s->ev[i - 1].at_ms > e.at_ms; i--)
    s->ev[i] = s->ev[i - 1];
  s->ev[i] = e;
  s->nev++;
  return 0;
}

/* The node with the fewest free GPUs that still takes gpus (best fit, as
 * capacity places), or nnodes when none does. */
static size_t best_node(const struct eta_sim *s, unsigned gpus)
{
  size_t best = s->nnodes, i;

  for (i = 0; i < s->nnodes; i++)
    if (s->free[i] >= gpus && (best == s->nnodes || s->free[i] < s->free[best]))
      best = i;
  return best;
}

/* Whether some node could ever take gpus: all it has, the unknown holds
 * let go too. */
static int could_ever(const struct eta_sim *s, const struct dev_eta_node *nodes,
                      unsigned gpus)
{
  size_t i, k;

  for (i = 0; i < s->nnodes; i++) {
    unsigned all = nodes[i].free_gpus;

    for (k = 0; k < nodes[i].nholds; k++)
      all += nodes[i].holds[k].gpus;
    if (all >= gpus)
      return 1;
  }
  return 0;
}

int dev_eta(const struct dev_eta_node *nodes, size_t nnodes,
            const struct dev_eta_request *queue, size_t n, uint64_t now_ms,
            uint64_t *starts)
{
  struct eta_sim s;
  size_t i, k, next = 0, holds = 0;
  uint64_t t = now_ms;
  int rc = 0;

  if (nnodes > DEV_ETA_MAX_NODES)
    return -EINVAL;
  for (i = 0; i < nnodes; i++)
    holds += nodes[i].nholds;
  if (holds + n > DEV_ETA_MAX_EVENTS)
    return -EINVAL;
  memset(&s, 0, sizeof(s));
  s.nnodes = nnodes;
  s.cap = holds + n;
  s.ev = calloc(s.cap > 0 ? s.cap : 1, sizeof(*s.ev));
  s.free = calloc(nnodes > 0 ? nnodes : 1, sizeof(*s.free));
  if (s.ev == NULL || s.free == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  for (i = 0; i < nnodes; i++) {
    s.free[i] = nodes[i].free_gpus;
    for (k = 0; k < nodes[i].nholds; k++) {
      const struct dev_eta_hold *h = &nodes[i].holds[k];

      if (h->release_ms == DEV_ETA_UNKNOWN)
        continue; /* in the way for good, as far as anyone can tell */
      if (h->release_ms <= now_ms)
        s.free[i] += h->gpus; /* overdue: counted as free now */
      else
        s.ev[s.nev++] = (struct eta_event){h->release_ms, i, h->gpus};
    }
  }
  qsort(s.ev, s.nev, sizeof(*s.ev), cmp_event);
  for (i = 0; i < n; i++)
    starts[i] = DEV_ETA_UNKNOWN;
  for (i = 0; i < n; i++) {
    size_t node;

    if (queue[i].gpus == 0 || !could_ever(&s, nodes, queue[i].gpus))
      break; /* it and all behind it: unknown */
    /* Let time pass until a node takes it; a request never starts before
     * the one ahead of it (t only grows). */
    for (;;) {
      while (next < s.nev && s.ev[next].at_ms <= t) {
        s.free[s.ev[next].node] += s.ev[next].gpus;
        next++;
      }
      node = best_node(&s, queue[i].gpus);
      if (node < s.nnodes || next == s.nev)
        break;
      t = s.ev[next].at_ms;
    }
    if (node == s.nnodes)
      break; /* only unknown releases are left in the way */
    starts[i] = t;
    s.free[node] -= queue[i].gpus;
    if (queue[i].duration_ms > 0 && t + queue[i].duration_ms > t &&
        sim_add(&s, (struct eta_event){t + queue[i].duration_ms, node,
                                       queue[i].gpus}) != 0) {
      rc = -EINVAL;
      goto out;
    }
  }
out:
  free(s.ev);
  free(s.free);
  return rc;
}
