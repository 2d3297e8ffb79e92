#ifndef RUNFLEET_FLEET_H
#define RUNFLEET_FLEET_H

#include <uv.h>

#include "config.h"

/* The daemon's wiring: one context that owns the config, metrics, HTTP
 * server, GitHub client, backend and scheduler, and carries out what the
 * scheduler decides (a JIT config from GitHub, then backend start; GitHub
 * deregistration, then backend stop). */

struct fleet; /* opaque */

/* Takes ownership of cfg (heap-allocated, loaded by cfg_load). Returns NULL
 * (logged) when a part cannot be created. */
struct fleet *fleet_new(uv_loop_t *loop, struct config *cfg);

/* Starts listening and the reconcile timer. 0 or a negative code. */
int fleet_start(struct fleet *f);

/* Loads path; swaps it in only if valid, else keeps the old config and
 * logs every problem. Returns 0 when swapped. */
int fleet_reload(struct fleet *f, const char *path);

/* Graceful stop: stop accepting, deregister idle runners, stop runners,
 * close every handle; done_cb(arg) runs when the loop may end. */
void fleet_stop(struct fleet *f, void (*done_cb)(void *arg), void *arg);

void fleet_destroy(struct fleet *f);

#endif
