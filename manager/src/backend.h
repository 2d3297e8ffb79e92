#ifndef RUNFLEET_BACKEND_H
#define RUNFLEET_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The small interface every backend implements, so the scheduler never
 * knows whether a runner is a process or a pod: start a runner, stop it,
 * report exits, report capacity. */

#define BACKEND_MAX_GPUS CFG_MAX_GPUS

struct backend_runner_spec {
  const char *name; /* unique runner name, also the GitHub name */
  const struct cfg_pool *pool;
  const char *jit_config; /* encoded JIT config, a secret: never logged */
  const char *const *env; /* extra "NAME=value" entries, NULL-terminated */
};

/* What a started runner got; filled by start(). */
struct backend_runner_info {
  int gpus[BACKEND_MAX_GPUS]; /* device indices held exclusively */
  size_t ngpus;
  unsigned cpus;
  long pid; /* local backend; 0 otherwise */
};

struct backend_capacity {
  unsigned gpus_total, gpus_used, gpus_unhealthy;
  unsigned cpus_total, cpus_used;
  uint64_t memory_total, memory_used;
};

/* Called when a runner ends: exit_status is the process exit code (or
 * 128 + signal), or -1 when the backend lost it. */
typedef void (*backend_exit_cb)(void *ctx, const char *name, int exit_status);

struct backend;

struct backend_ops {
  /* Starts a runner. Returns 0 and fills info, -ENOSPC when the pool's
   * resources do not fit now, or another negative code. */
  int (*start)(struct backend *b, const struct backend_runner_spec *spec,
               struct backend_runner_info *info);
  /* Asks a runner to stop (SIGTERM, then SIGKILL after a grace period).
   * The exit is reported through the exit callback. -ENOENT if unknown. */
  int (*stop)(struct backend *b, const char *name);
  /* Whether a runner of pool would fit now (1) or not (0). */
  int (*fits)(struct backend *b, const struct cfg_pool *pool);
  void (*capacity)(struct backend *b, struct backend_capacity *out);
  /* Takes a GPU out of capacity (failed health check); -ENOENT if unknown. */
  int (*mark_gpu_unhealthy)(struct backend *b, int gpu);
  /* Number of live runners. */
  size_t (*count)(struct backend *b);
  /* Stops every runner and closes handles; done_cb(arg) runs when all are
   * gone and the backend may be destroyed. */
  void (*close)(struct backend *b, void (*done_cb)(void *arg), void *arg);
  void (*destroy)(struct backend *b);
};

struct backend {
  const struct backend_ops *ops;
  backend_exit_cb on_exit;
  void *ctx;
};

#endif
