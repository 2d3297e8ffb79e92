#ifndef RUNFLEET_BACKEND_H
#define RUNFLEET_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "capacity.h"
#include "config.h"

/* The small interface every backend implements, so the scheduler never
 * knows whether a runner is a process or a pod. A backend describes what
 * it can hold to capacity (nodes, GPUs), starts what it is asked to where
 * capacity placed it, and reports what happens to it through one event
 * callback: PLACED, RUNNING, then EXITED or LOST. */

#define BACKEND_MAX_GPUS CFG_MAX_GPUS

struct backend_runner_spec {
  const char *name; /* unique runner name, also the GitHub name */
  const struct cfg_pool *pool;
  const char *jit_config; /* encoded JIT config, a secret: never logged */
  const char *const *env; /* extra "NAME=value" entries, NULL-terminated */
  /* Where capacity put it (node, GPU indices): the backend honours it. */
  const struct cap_placement *placement;
  /* Its GitHub registration (0: unknown), kept where the backend can find
   * it again: another replica that takes over adopts the runner with it. */
  int64_t gh_id;
};

enum backend_event_type {
  BACKEND_PLACED,  /* on its node, with its GPUs */
  BACKEND_RUNNING, /* the runner process runs */
  BACKEND_EXITED,  /* it ended; status says how */
  BACKEND_LOST,    /* the backend no longer knows what became of it */
  /* Not about one runner (name NULL): what list() shows changed at once,
   * as when a cluster watch has listed what runs after a restart. */
  BACKEND_LISTED
};

struct backend_event {
  enum backend_event_type type;
  const char *name;
  const char *node; /* PLACED */
  const int *gpus;  /* PLACED: device indices held */
  size_t ngpus;     /* PLACED */
  long pid;         /* RUNNING on the local backend, else 0 */
  int status;       /* EXITED: exit code or 128 + signal; LOST: -errno, why */
};

typedef void (*backend_event_cb)(void *ctx, const struct backend_event *ev);

/* What a backend runs, for adoption after a restart. */
struct backend_item {
  const char *name;
  const char *pool;
  struct cap_placement where;
  int running;   /* 1 while it runs; 0 while being placed or stopped */
  int64_t gh_id; /* as started (backend_runner_spec), 0 when unknown */
};

/* A runner's pre-job hook found GPUs it holds unhealthy (docs/HOOKS.md). */
struct backend_gpu_report {
  const char *runner;
  const char *node;         /* where capacity placed the runner */
  const char *reason;       /* the hook's reason ("ecc", ...) or "" */
  const char *message;      /* the hook's message or "" */
  const int *gpus;          /* device indices as the runner saw them */
  const char *const *uuids; /* the same GPUs' UUIDs ("" when unknown) */
  size_t ngpus;
};

enum backend_close_mode {
  BACKEND_CLOSE_STOP, /* stop every runner, then close */
  BACKEND_CLOSE_KEEP  /* leave runners running for the next daemon */
};

struct backend;

struct backend_ops {
  /* Starts a runner where spec->placement says. Returns 0 when the start
   * began: its events follow, never before start returns. A negative
   * return means nothing was started and no event will come (-ENOSPC: the
   * placement is not free after all; -EEXIST: name in use). */
  int (*start)(struct backend *b, const struct backend_runner_spec *spec);
  /* Asks a runner to stop (SIGTERM, then SIGKILL after a grace period, or
   * a pod deletion); EXITED follows. -ENOENT if unknown. */
  int (*stop)(struct backend *b, const char *name);
  /* Fills at most max items with what the backend runs now (for a backend
   * that watches a cluster, what its synced watch shows); returns how many
   * there are in all. Names stay valid until the next call into b. */
  size_t (*list)(struct backend *b, struct backend_item *items, size_t max);
  /* Number of runners whose end has not been reported yet. */
  size_t (*count)(struct backend *b);
  /* Closes the backend; done_cb(arg) runs when every handle is closed and
   * the backend may be destroyed. KEEP leaves runners running where the
   * backend can find them again (a backend that cannot, such as local child
   * processes, stops them and says so). */
  void (*close)(struct backend *b, enum backend_close_mode mode,
                void (*done_cb)(void *arg), void *arg);
  /* Optional. 1 once list() shows everything the backend runs (a backend
   * that watches a cluster: after its first list; BACKEND_LISTED then
   * follows), 0 before. NULL: list() is complete from the start. */
  int (*synced)(struct backend *b);
  void (*destroy)(struct backend *b);
  /* Optional (NULL: always 1). 0 while the backend will not start runners
   * of pool: its image never pulls, or it backs off after pods that could
   * not start. The scheduler then backs the pool off (its demand waits
   * in the queue) without holding back other pools. */
  int (*accepts)(struct backend *b, const struct cfg_pool *pool);
  /* Optional (NULL: never). Why a runner that was started does not run
   * yet, when the backend knows ("ErrImagePull", "Unschedulable", ...),
   * or NULL. Valid until the next call into b. */
  const char *(*waiting)(struct backend *b, const char *name);
  /* Optional. NULL: the runner's own failed GPUs leave capacity by index
   * (the local backend, where indices are the host's). Else the backend
   * takes r->node out of service for GPU work as it is configured to
   * (Kubernetes: cordon or taint, an Event, the node's GPUs out of
   * capacity). Returns 0 when it acted, 1 when the node was already out
   * (nothing is sent again), or a negative code. */
  int (*gpu_unhealthy)(struct backend *b, const struct backend_gpu_report *r);
};

struct backend {
  const struct backend_ops *ops;
  backend_event_cb on_event;
  void *ctx;
  struct capacity *capacity; /* where the backend describes its nodes */
};

/* Every backend is made by a function of this shape, chosen by
 * cfg->backend. It describes its nodes to cap, which must outlive it, and
 * reports events to on_event(ctx, ...). NULL on failure (logged). */
typedef struct backend *(*backend_new_fn)(uv_loop_t *loop,
                                          const struct config *cfg,
                                          struct capacity *cap,
                                          backend_event_cb on_event, void *ctx);

#endif
