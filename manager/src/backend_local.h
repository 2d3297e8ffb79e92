#ifndef RUNFLEET_BACKEND_LOCAL_H
#define RUNFLEET_BACKEND_LOCAL_H

#include <uv.h>

#include "backend.h"
#include "config.h"

/* Runners as child processes of runfleetd (uv_spawn), each in its own work
 * directory under cfg->local.work_root, started as
 * "<runner_command> --jitconfig <encoded>" with the hook environment set.
 * GPUs are exclusive: capacity chooses them, CUDA_VISIBLE_DEVICES and
 * NVIDIA_VISIBLE_DEVICES name them, and a placement that would give a
 * device to two live runners is refused.
 * Exits are reaped and work directories removed. Runner stdout and stderr
 * are forwarded to the log line by line (mod=runner runner=<name>). */

/* Creates the backend (a backend_new_fn); GPUs are discovered
 * (nvidia-smi -L) when cfg->local.gpus_auto, else taken from the list, and
 * the host is described to cap as one node of source "local", named by
 * its host name. Returns NULL on failure (logged). Events go to
 * on_event(ctx, ...); a runner's start reaches it on a later loop turn. */
struct backend *backend_local_new(uv_loop_t *loop, const struct config *cfg,
                                  struct capacity *cap,
                                  backend_event_cb on_event, void *ctx);

/* Sets the SIGTERM-to-SIGKILL grace period of stop() and close()
 * (default 10 s); b must come from backend_local_new. */
void backend_local_set_grace_ms(struct backend *b, uint64_t ms);

#ifdef RUNFLEET_UNITTEST
/* Parses "nvidia-smi -L" output into at most max device indices; returns
 * how many were found. */
size_t backend_local_parse_gpus(const char *text, int *gpus, size_t max);
/* Kills every process started with RUNFLEET_WORK_DIR at or below dir, and
 * with by_cwd every process whose working directory lies there, except the
 * caller. Returns how many it killed or a negative errno. */
int backend_local_kill_strays(const char *dir, int by_cwd);
#endif

#endif
