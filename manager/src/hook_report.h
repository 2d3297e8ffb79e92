#ifndef RUNFLEET_HOOK_REPORT_H
#define RUNFLEET_HOOK_REPORT_H

#include <stddef.h>

#include "backend.h"
#include "capacity.h"
#include "metrics.h"
#include "scheduler.h"

/* POST /api/v1/hooks/{started,completed}: what runfleet-hook reports from
 * inside a runner (docs/HOOKS.md). A report authenticates with the runner's
 * token, an HMAC-SHA256 of the runner name under a secret of this daemon;
 * a wrong token changes nothing. Reports become metrics, and a failed GPU
 * health check takes the runner's failed GPUs (on Kubernetes: its node)
 * out of capacity. */

#define HOOK_TOKEN_SIZE 65 /* 64 hex digits and a NUL */

struct hook_reports; /* opaque */

/* Creates the receiver with a fresh random secret; m must outlive it.
 * NULL on failure. */
struct hook_reports *hook_reports_new(struct metrics *m);
void hook_reports_destroy(struct hook_reports *h);

/* The backend whose gpu_unhealthy op, when it has one, a failed GPU check
 * goes to instead of taking GPUs out by index; b must outlive h's use. */
void hook_reports_set_backend(struct hook_reports *h, struct backend *b);

/* Writes the token of runner name into out (HOOK_TOKEN_SIZE bytes).
 * Returns 0 or -1. */
int hook_token(const struct hook_reports *h, const char *name, char *out,
               size_t out_size);

/* Handles one report of kind "started" or "completed" with the request's
 * Authorization header and body. Returns the HTTP status: 204 taken, 400
 * malformed, 401 bad token, 404 unknown kind. msg says why. A failed GPU
 * health check takes the runner's own failed GPUs out of cap, or goes to
 * the backend's gpu_unhealthy for the runner's node. */
int hook_handle(struct hook_reports *h, struct scheduler *s,
                struct capacity *cap, const char *kind, const char *auth,
                const char *body, size_t body_len, char *msg, size_t msg_size);

#endif
