#ifndef RUNFLEET_DEVSERVER_H
#define RUNFLEET_DEVSERVER_H

/* Reservations of GPU developer servers (docs/DEVSERVERS.md): the state
 * machine queued -> preparing -> active -> expired | cancelled | failed,
 * strict FIFO per flavor, extensions within their cap, expiry warnings
 * (each once, reset by an extension), the queued and preparing timeouts,
 * expiry after a grace, owner checks. Policy only: no loop handles; the
 * owner's clock (wall-clock ms) is injected, and the owner hears of every
 * change through one callback, where the journal and the backend hook in. */

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define DEV_ID_LEN 16 /* hex digits */
#define DEV_MAX_RESERVATIONS 4096
/* The shortest reservation is devservers.min_duration (5 minutes unless
 * configured). */
#define DEV_MAX_REASON 160
/* One public key line; an RSA key of 16384 bits is about 2,800 bytes. */
#define DEV_KEY_MAX 4096

enum dev_state {
  DEV_QUEUED,
  DEV_PREPARING,
  DEV_ACTIVE,
  DEV_EXPIRED,
  DEV_CANCELLED,
  DEV_FAILED,
};

struct dev_server {
  char id[DEV_ID_LEN + 1];
  char *user;   /* devservers.users[].name */
  char *flavor; /* devservers.flavors[].name */
  unsigned gpus;
  enum dev_state state;
  uint64_t seq;          /* arrival order, for FIFO */
  uint64_t created_ms;   /* wall clock, every time below too */
  uint64_t preparing_ms; /* 0 until then */
  uint64_t active_ms;
  uint64_t ended_ms;
  uint64_t duration_ms;        /* as asked, extensions added */
  uint64_t extended_ms;        /* all extensions together */
  uint64_t expires_at_ms;      /* 0 until active */
  unsigned warned;             /* bit i: devservers.warnings_ms[i] fired */
  char reason[DEV_MAX_REASON]; /* why it failed or was cancelled */
};

/* What the owner hears of: every state change (from is the old state;
 * DEV_QUEUED with d->state DEV_QUEUED for a new reservation) and every
 * warning (before_ms: its place in devservers.warnings). */
struct dev_hooks {
  void (*changed)(void *arg, struct dev_server *d, enum dev_state from);
  void (*warning)(void *arg, struct dev_server *d, uint64_t before_ms);
  void *arg;
};

struct dev_table {
  const struct cfg_devservers *cfg;
  uint64_t (*clock)(void *arg); /* wall-clock ms */
  void *clock_arg;
  struct dev_hooks hooks;
  struct dev_server **all; /* in arrival order */
  size_t n;
  size_t cap;
  uint64_t next_seq;
};

struct journal_devserver;

/* Who calls: a user sees and changes only their own reservations, an admin
 * all of them. */
struct dev_caller {
  const char *user;
  int admin;
};

/* Sets t up over cfg (kept, not copied); clock NULL: CLOCK_REALTIME. */
void dev_table_init(struct dev_table *t, const struct cfg_devservers *cfg,
                    uint64_t (*clock)(void *arg), void *clock_arg,
                    const struct dev_hooks *hooks);
/* Frees every reservation. */
void dev_table_free(struct dev_table *t);

/* A new queued reservation of flavor for duration_ms by user. Checks the
 * flavor, the duration (5 min to the flavor's max_hours) and per_user_max;
 * on failure returns -EINVAL (bad input), -EDQUOT (too many of the user's)
 * or -ENOMEM and writes why to msg; nothing changes. */
int dev_reserve(struct dev_table *t, const struct config *cfg, const char *user,
                const char *flavor, uint64_t duration_ms,
                struct dev_server **out, char *msg, size_t msg_size);
/* queued -> preparing; only the head of its flavor's queue (-EBUSY
 * otherwise), -ESTALE when d is not queued. */
int dev_start(struct dev_table *t, struct dev_server *d);
/* preparing -> active; expires_at = now + duration. -ESTALE when d is not
 * preparing (a cancel during preparing wins). */
int dev_ready(struct dev_table *t, struct dev_server *d);
/* Any live state -> failed with reason; -ESTALE when d has ended. */
int dev_fail(struct dev_table *t, struct dev_server *d, const char *reason);
/* Any live state -> cancelled; -EPERM for another user's, -ESTALE when d
 * has ended. */
int dev_cancel(struct dev_table *t, struct dev_server *d,
               const struct dev_caller *who);
/* Adds add_ms to a live reservation: -EPERM, -ESTALE, or -EINVAL past the
 * flavor's max_extend_hours (msg says how much is left). Warnings whose
 * time is again ahead fire again. */
int dev_extend(struct dev_table *t, const struct config *cfg,
               struct dev_server *d, const struct dev_caller *who,
               uint64_t add_ms, char *msg, size_t msg_size);
/* Applies the clock: timeouts, warnings, expiry. Returns the wall-clock ms
 * of the next deadline, or UINT64_MAX when none. */
uint64_t dev_tick(struct dev_table *t);

/* Forgets the oldest ended reservations past the newest keep of them
 * (so the table never fills with history), calling gone(arg, id) for each
 * before it is freed. Returns how many were forgotten. */
size_t dev_prune(struct dev_table *t, size_t keep,
                 void (*gone)(void *arg, const char *id), void *arg);

/* d as the journal keeps it (journal.h). */
void dev_to_journal(const struct dev_server *d, struct journal_devserver *out);
/* Puts back a journaled reservation at a restart, in the order replay
 * gives them (arrival order), so queues keep their order; later
 * reservations get later places. No hook is called. -EINVAL for a record
 * that cannot be (unknown state, bad id), -EEXIST, -ENOMEM. */
int dev_restore(struct dev_table *t, const struct journal_devserver *j,
                struct dev_server **out);

/* Whether line (len bytes, no newline) is one public key as OpenSSH reads
 * it: "TYPE BASE64 [comment]" with TYPE ssh-ed25519, ecdsa-sha2-nistp256,
 * -nistp384, -nistp521, ssh-rsa, sk-ssh-ed25519@openssh.com or
 * sk-ecdsa-sha2-nistp256@openssh.com, and a blob that decodes and names
 * the same type. No options, no control characters. 0 or -EINVAL
 * (devserver_keys.c). */
int dev_key_check(const char *line, size_t len);
/* The lines of text (as a keys URL serves them) that pass dev_key_check,
 * one a line with "\n", into out; counts kept and dropped lines (blank
 * ones are neither). 0, or -ENOSPC when out is too small. */
int dev_keys_filter(const char *text, size_t len, char *out, size_t size,
                    size_t *kept, size_t *dropped);

#define DEV_SSHD_MAX_GPUS 64

/* What the sshd of one local dev server needs (devserver_sshd.c). */
struct dev_sshd_spec {
  const char *id;              /* the reservation, for the header */
  const char *listen;          /* address, such as 127.0.0.1 */
  unsigned port;               /* 1-65535 */
  const char *host_key;        /* absolute path of the private host key */
  const char *authorized_keys; /* absolute path runfleetd writes */
  const char *user;            /* the one account that may log in */
  const int *gpus;             /* the held GPUs */
  size_t ngpus;
  const char *home; /* absolute, or NULL: the account's own */
};

/* The sshd_config for s into out: its length, -EINVAL when a value is
 * not one plain token (or a path not absolute; the id names the
 * reservation in every session's RUNFLEET_DEVSERVER), -ENOSPC. */
int dev_sshd_config(const struct dev_sshd_spec *s, char *out, size_t size);

/* GPUs held by preparing and active dev servers together. */
unsigned dev_gpus_held(const struct dev_table *t);
/* Whether starting d keeps within the sharing caps of a fleet of
 * total_gpus: dev servers together at most devservers_max_gpus, and at
 * least ci_min_gpus left to CI. 1 or 0. */
int dev_within_share(const struct dev_table *t, const struct dev_server *d,
                     unsigned total_gpus);

/* 1-based place among the queued reservations of d's flavor; 0 when d is
 * not queued. */
size_t dev_queue_position(const struct dev_table *t,
                          const struct dev_server *d);
/* The first queued reservation of flavor, or NULL. */
struct dev_server *dev_queue_head(const struct dev_table *t,
                                  const char *flavor);
/* The reservation whose id starts with prefix (at least 4 characters)
 * among those who may see: 0, -ENOENT, or -EEXIST when more than one
 * matches. */
int dev_find(const struct dev_table *t, const char *prefix,
             const struct dev_caller *who, struct dev_server **out);
/* Whether who may see and change d. */
int dev_may_access(const struct dev_server *d, const struct dev_caller *who);
/* Live: queued, preparing or active. */
int dev_is_live(enum dev_state s);
/* "queued", "preparing", ...; -1 from dev_state_parse for another name. */
const char *dev_state_name(enum dev_state s);
int dev_state_parse(const char *name);

#endif
