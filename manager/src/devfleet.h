#ifndef RUNFLEET_DEVFLEET_H
#define RUNFLEET_DEVFLEET_H

/* Dev servers at run time (docs/DEVSERVERS.md): owns the reservations
 * (devserver.h's dev_table), a timer re-armed from the next deadline, the
 * journal record of each reservation (written at every change, so the
 * queues come back in order after a crash), placement on capacity and the
 * local backend's sshd processes (devserver_local.h).
 *
 * Placement: the head of each flavor's queue starts when one node can
 * take all its GPUs (never GPUs summed across nodes) and the sharing caps
 * allow; its GPUs are then held in capacity like a CI runner's, so CI
 * cannot take them. When it does not fit, the node that frees first is
 * claimed for it, so no new CI runner starts on the GPUs it waits for. */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "capacity.h"
#include "config.h"
#include "devserver.h"
#include "http_client.h"
#include "journal.h"
#include "metrics.h"

struct devfleet; /* opaque */

/* NULL when cfg has no devservers: section (nothing to own) or on
 * failure (logged; *failed set). kick(arg) asks for a CI scheduler pass,
 * after GPUs were released. */
struct devfleet *devfleet_new(uv_loop_t *loop, const struct config *cfg,
                              struct capacity *cap, struct http_client *http,
                              void (*kick)(void *arg), void *kick_arg,
                              int *failed);
/* From now on every change is journaled in j (NULL: not kept). */
void devfleet_set_journal(struct devfleet *df, struct journal *j);
/* A journaled reservation, at replay (arrival order). */
void devfleet_replay(struct devfleet *df, const struct journal_devserver *j);
/* After replay and after CI runners were adopted: adopts the sshds of
 * active reservations, ends what cannot go on, starts placement and the
 * timer. */
int devfleet_start(struct devfleet *df);
/* A reloaded config (the old one is freed after this). */
void devfleet_set_config(struct devfleet *df, const struct config *cfg);
/* Looks at the queues again soon (capacity may have freed up). */
void devfleet_kick(struct devfleet *df);
/* Closes handles; sshds of active reservations keep running for the next
 * runfleetd. done_cb(arg) once devfleet_destroy may run. */
void devfleet_close(struct devfleet *df, void (*done_cb)(void *arg), void *arg);
void devfleet_destroy(struct devfleet *df);

/* ---- for the API (devserver_api.c) ---- */

const struct dev_table *devfleet_table(const struct devfleet *df);
const struct config *devfleet_config(const struct devfleet *df);

/* What a reservation asks for besides the policy's fields: whose GitHub
 * keys (NULL: the user's configured github_user) or one public key line
 * instead. */
struct devfleet_request {
  const char *user;
  const char *flavor;
  uint64_t duration_ms;
  const char *github_user; /* NULL or a GitHub login */
  const char *key;         /* NULL or one public key line */
  const char *name;        /* NULL or the owner's label for it */
};

#define DEVFLEET_NAME_MAX 64

/* The name given at reserve time into out: 1, or 0 when none. */
int devfleet_name(const struct devfleet *df, const struct dev_server *d,
                  char *out, size_t size);

/* A new reservation. On 0, *out is it and, with *deferred set, cb(arg,
 * status) follows once the journal has it (status as journal.h says);
 * without a journal *deferred is 0 and cb never runs. Bad input: -EINVAL
 * or -EDQUOT with msg; nothing changes. */
int devfleet_reserve(struct devfleet *df, const struct devfleet_request *r,
                     struct dev_server **out, journal_done_cb cb, void *arg,
                     int *deferred, char *msg, size_t msg_size);
/* A reservation whose journal write failed: it is failed, and its answer
 * says so. */
void devfleet_unjournaled(struct devfleet *df, struct dev_server *d);
int devfleet_cancel(struct devfleet *df, struct dev_server *d,
                    const struct dev_caller *who);
int devfleet_extend(struct devfleet *df, struct dev_server *d,
                    const struct dev_caller *who, uint64_t add_ms, char *msg,
                    size_t msg_size);
/* Adds one public key line to a live reservation (kept for when it
 * starts; an active one lets it in at once). -EINVAL for a key OpenSSH
 * would not read, -ESTALE for an ended reservation, -ENOSPC. */
int devfleet_add_key(struct devfleet *df, struct dev_server *d, const char *key,
                     char *msg, size_t msg_size);
/* Where an active reservation answers: its port (0 when not up), the
 * address and the account to log in as. */
unsigned devfleet_port(const struct devfleet *df, const struct dev_server *d);
const char *devfleet_ssh_host(const struct devfleet *df);
const char *devfleet_ssh_user(const struct devfleet *df);
/* The GPUs an active or preparing reservation holds, into gpus (at most
 * max); how many. */
size_t devfleet_gpus(const struct devfleet *df, const struct dev_server *d,
                     int *gpus, size_t max);

/* When queued d starts (wall-clock ms) into *start_ms: 0, or -1 when it
 * cannot be told (something in the way whose end is unknown, such as a CI
 * runner; a request no node can take) or d is not queued. From
 * devserver_eta.h's simulation over capacity's nodes: a dev server lets
 * go at its expiry (and grace), the queue ahead of d is placed first. */
int devfleet_eta(const struct devfleet *df, const struct dev_server *d,
                 uint64_t *start_ms);

/* Sets the dev server gauges of m (reservations by state and flavor,
 * queue length per flavor, GPUs held) and the reserved GPU-seconds. */
void devfleet_sync_metrics(struct devfleet *df, struct metrics *m);
/* Declares the families devfleet_sync_metrics sets. */
int devfleet_declare_metrics(struct metrics *m);

#endif
