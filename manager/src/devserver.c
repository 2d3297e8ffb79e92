/* Dev server reservations: one mutator (dev_set_state) for every state
 * change, FIFO per flavor by arrival, and the clock-driven transitions in
 * dev_tick. See devserver.h. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devserver.h"
#include "journal.h"
#include "log.h"
#include "rand.h"

#define DEV_MOD "devserver"
#define DEV_MS_HOUR (3600ull * 1000)

static const char *const dev_state_names[] = {
    "queued", "preparing", "active", "expired", "cancelled", "failed",
};

const char *dev_state_name(enum dev_state s)
{
  if ((size_t)s >= sizeof(dev_state_names) / sizeof(dev_state_names[0]))
    return "unknown";
  return dev_state_names[s];
}

int dev_state_parse(const char *name)
{
  size_t i;

  for (i = 0; i < sizeof(dev_state_names) / sizeof(dev_state_names[0]); i++)
    if (name != NULL && strcmp(name, dev_state_names[i]) == 0)
      return (int)i;
  return -1;
}

int dev_is_live(enum dev_state s)
{
  return s == DEV_QUEUED || s == DEV_PREPARING || s == DEV_ACTIVE;
}

static uint64_t dev_realtime(void *arg)
{
  struct timespec ts;

  (void)arg;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t dev_now(const struct dev_table *t)
{
  return t->clock(t->clock_arg);
}

void dev_table_init(struct dev_table *t, const struct cfg_devservers *cfg,
                    uint64_t (*clock)(void *arg), void *clock_arg,
                    const struct dev_hooks *hooks)
{
  memset(t, 0, sizeof(*t));
  t->cfg = cfg;
  t->clock = clock != NULL ? clock : dev_realtime;
  t->clock_arg = clock_arg;
  if (hooks != NULL)
    t->hooks = *hooks;
  t->next_seq = 1;
}

static void dev_server_destroy(struct dev_server *d)
{
  free(d->user);
  free(d->flavor);
  free(d);
}

void dev_table_free(struct dev_table *t)
{
  size_t i;

  for (i = 0; i < t->n; i++)
    dev_server_destroy(t->all[i]);
  free(t->all);
  t->all = NULL;
  t->n = t->cap = 0;
}

/* A reservation shorter than a warning's lead never gets that warning. */
static void dev_skip_warnings(const struct dev_table *t, struct dev_server *d)
{
  size_t i;

  for (i = 0; i < t->cfg->nwarnings; i++)
    if (t->cfg->warnings_ms[i] >= d->duration_ms)
      d->warned |= 1u << i;
}

/* The one place a reservation's state changes: it records the time, logs
 * the transition and tells the owner (the journal, the backend). Terminal
 * states never change. */
static void dev_set_state(struct dev_table *t, struct dev_server *d,
                          enum dev_state to, const char *reason)
{
  enum dev_state from = d->state;
  uint64_t now = dev_now(t);

  if (!dev_is_live(from))
    return;
  d->state = to;
  if (to == DEV_PREPARING)
    d->preparing_ms = now;
  if (to == DEV_ACTIVE) {
    d->active_ms = now;
    d->expires_at_ms = now + d->duration_ms;
    dev_skip_warnings(t, d);
  }
  if (!dev_is_live(to)) {
    d->ended_ms = now;
    if (reason != NULL)
      snprintf(d->reason, sizeof(d->reason), "%s", reason);
  }
  log_info(DEV_MOD, "dev server state", LOG_S("id", d->id),
           LOG_S("user", d->user), LOG_S("flavor", d->flavor),
           LOG_S("from", dev_state_name(from)), LOG_S("to", dev_state_name(to)),
           LOG_S("reason", reason));
  if (t->hooks.changed != NULL)
    t->hooks.changed(t->hooks.arg, d, from);
}

static size_t dev_user_live(const struct dev_table *t, const char *user,
                            const char *flavor)
{
  size_t i, n = 0;

  for (i = 0; i < t->n; i++)
    if (dev_is_live(t->all[i]->state) && strcmp(t->all[i]->user, user) == 0 &&
        strcmp(t->all[i]->flavor, flavor) == 0)
      n++;
  return n;
}

static int dev_new_id(const struct dev_table *t, char *id)
{
  static const char hex[] = "0123456789abcdef";
  unsigned char b[DEV_ID_LEN / 2];
  struct dev_server *dup;
  struct dev_caller all = {.user = NULL, .admin = 1};
  size_t i;
  int tries;

  for (tries = 0; tries < 8; tries++) {
    if (rand_bytes(b, sizeof(b)) < 0)
      return -EIO;
    for (i = 0; i < sizeof(b); i++) {
      id[2 * i] = hex[b[i] >> 4];
      id[2 * i + 1] = hex[b[i] & 15];
    }
    id[DEV_ID_LEN] = '\0';
    if (dev_find(t, id, &all, &dup) == -ENOENT)
      return 0;
  }
  return -EIO;
}

static int dev_append(struct dev_table *t, struct dev_server *d)
{
  struct dev_server **grown;
  size_t cap;

  if (t->n == t->cap) {
    cap = t->cap == 0 ? 16 : 2 * t->cap;
    grown = realloc(t->all, cap * sizeof(*grown));
    if (grown == NULL)
      return -ENOMEM;
    t->all = grown;
    t->cap = cap;
  }
  t->all[t->n++] = d;
  return 0;
}

static int dev_check_request(const struct dev_table *t,
                             const struct cfg_flavor *f, const char *user,
                             const char *flavor, uint64_t duration_ms,
                             char *msg, size_t msg_size)
{
  if (f == NULL) {
    snprintf(msg, msg_size, "unknown flavor '%.64s'", flavor);
    return -EINVAL;
  }
  if (duration_ms < t->cfg->min_duration_ms ||
      duration_ms > f->max_hours * DEV_MS_HOUR) {
    snprintf(msg, msg_size,
             "duration must be %llu seconds to %u hours for flavor '%s'",
             (unsigned long long)(t->cfg->min_duration_ms / 1000), f->max_hours,
             f->name);
    return -EINVAL;
  }
  if (dev_user_live(t, user, flavor) >= f->per_user_max) {
    snprintf(msg, msg_size,
             "user '%.64s' already has %u live reservations of flavor '%s' "
             "(the most allowed)",
             user, f->per_user_max, f->name);
    return -EDQUOT;
  }
  if (t->n >= DEV_MAX_RESERVATIONS) {
    snprintf(msg, msg_size, "too many reservations");
    return -EDQUOT;
  }
  return 0;
}

int dev_reserve(struct dev_table *t, const struct config *cfg, const char *user,
                const char *flavor, uint64_t duration_ms,
                struct dev_server **out, char *msg, size_t msg_size)
{
  const struct cfg_flavor *f = cfg_flavor_find(cfg, flavor);
  struct dev_server *d;
  int rc = dev_check_request(t, f, user, flavor, duration_ms, msg, msg_size);

  if (rc < 0)
    return rc;
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    goto nomem;
  d->user = strdup(user);
  d->flavor = strdup(flavor);
  if (d->user == NULL || d->flavor == NULL)
    goto nomem;
  rc = dev_new_id(t, d->id);
  if (rc < 0) {
    snprintf(msg, msg_size, "cannot make an id");
    dev_server_destroy(d);
    return rc;
  }
  d->gpus = f->gpus;
  d->state = DEV_QUEUED;
  d->seq = t->next_seq++;
  d->created_ms = dev_now(t);
  d->duration_ms = duration_ms;
  if (dev_append(t, d) < 0)
    goto nomem;
  log_info(DEV_MOD, "dev server reserved", LOG_S("id", d->id),
           LOG_S("user", d->user), LOG_S("flavor", d->flavor),
           LOG_U("duration_ms", d->duration_ms));
  if (t->hooks.changed != NULL)
    t->hooks.changed(t->hooks.arg, d, DEV_QUEUED);
  *out = d;
  return 0;
nomem:
  if (d != NULL)
    dev_server_destroy(d);
  snprintf(msg, msg_size, "out of memory");
  return -ENOMEM;
}

unsigned dev_gpus_held(const struct dev_table *t)
{
  unsigned held = 0;
  size_t i;

  for (i = 0; i < t->n; i++)
    if (t->all[i]->state == DEV_PREPARING || t->all[i]->state == DEV_ACTIVE)
      held += t->all[i]->gpus;
  return held;
}

int dev_within_share(const struct dev_table *t, const struct dev_server *d,
                     unsigned total_gpus)
{
  uint64_t after = (uint64_t)dev_gpus_held(t) + d->gpus;

  if (t->cfg->max_gpus != CFG_DEV_GPUS_UNLIMITED && after > t->cfg->max_gpus)
    return 0;
  return after + t->cfg->ci_min_gpus <= total_gpus;
}

struct dev_server *dev_queue_head(const struct dev_table *t, const char *flavor)
{
  size_t i;

  /* all[] is in arrival order, so the first queued one is the head. */
  for (i = 0; i < t->n; i++)
    if (t->all[i]->state == DEV_QUEUED &&
        strcmp(t->all[i]->flavor, flavor) == 0)
      return t->all[i];
  return NULL;
}

size_t dev_queue_position(const struct dev_table *t, const struct dev_server *d)
{
  size_t i, pos = 0;

  if (d->state != DEV_QUEUED)
    return 0;
  for (i = 0; i < t->n; i++) {
    if (t->all[i]->state == DEV_QUEUED &&
        strcmp(t->all[i]->flavor, d->flavor) == 0)
      pos++;
    if (t->all[i] == d)
      return pos;
  }
  return 0;
}

int dev_start(struct dev_table *t, struct dev_server *d)
{
  if (d->state != DEV_QUEUED)
    return -ESTALE;
  if (dev_queue_head(t, d->flavor) != d)
    return -EBUSY;
  dev_set_state(t, d, DEV_PREPARING, NULL);
  return 0;
}

int dev_ready(struct dev_table *t, struct dev_server *d)
{
  if (d->state != DEV_PREPARING)
    return -ESTALE;
  dev_set_state(t, d, DEV_ACTIVE, NULL);
  return 0;
}

int dev_fail(struct dev_table *t, struct dev_server *d, const char *reason)
{
  if (!dev_is_live(d->state))
    return -ESTALE;
  dev_set_state(t, d, DEV_FAILED, reason);
  return 0;
}

int dev_may_access(const struct dev_server *d, const struct dev_caller *who)
{
  return who != NULL &&
         (who->admin || (who->user != NULL && strcmp(who->user, d->user) == 0));
}

int dev_cancel(struct dev_table *t, struct dev_server *d,
               const struct dev_caller *who)
{
  char reason[DEV_MAX_REASON];

  if (!dev_may_access(d, who))
    return -EPERM;
  if (!dev_is_live(d->state))
    return -ESTALE;
  snprintf(reason, sizeof(reason), "cancelled by %.64s",
           who->user != NULL ? who->user : "admin");
  dev_set_state(t, d, DEV_CANCELLED, reason);
  return 0;
}

/* After an extension, a warning whose time lies ahead again may fire
 * again; one already behind stays fired, so it is never repeated late. */
static void dev_reset_warnings(struct dev_table *t, struct dev_server *d)
{
  uint64_t now = dev_now(t), left;
  size_t i;

  if (d->expires_at_ms == 0)
    return;
  left = d->expires_at_ms > now ? d->expires_at_ms - now : 0;
  for (i = 0; i < t->cfg->nwarnings; i++)
    if (left > t->cfg->warnings_ms[i])
      d->warned &= ~(1u << i);
}

int dev_extend(struct dev_table *t, const struct config *cfg,
               struct dev_server *d, const struct dev_caller *who,
               uint64_t add_ms, char *msg, size_t msg_size)
{
  const struct cfg_flavor *f = cfg_flavor_find(cfg, d->flavor);
  uint64_t cap = f != NULL ? f->max_extend_hours * DEV_MS_HOUR : 0;

  if (!dev_may_access(d, who)) {
    snprintf(msg, msg_size, "not your reservation");
    return -EPERM;
  }
  if (!dev_is_live(d->state)) {
    snprintf(msg, msg_size, "reservation %s has ended (%s)", d->id,
             dev_state_name(d->state));
    return -ESTALE;
  }
  if (add_ms == 0 || add_ms > cap || d->extended_ms > cap - add_ms) {
    snprintf(msg, msg_size,
             "extensions of flavor '%.64s' are capped at %llu minutes in "
             "all; %llu minutes left",
             d->flavor, (unsigned long long)(cap / 60000),
             (unsigned long long)((cap - d->extended_ms) / 60000));
    return -EINVAL;
  }
  d->extended_ms += add_ms;
  d->duration_ms += add_ms;
  if (d->expires_at_ms != 0)
    d->expires_at_ms += add_ms;
  dev_reset_warnings(t, d);
  log_info(DEV_MOD, "dev server extended", LOG_S("id", d->id),
           LOG_U("added_ms", add_ms), LOG_U("expires_at_ms", d->expires_at_ms));
  if (t->hooks.changed != NULL)
    t->hooks.changed(t->hooks.arg, d, d->state);
  return 0;
}

static uint64_t dev_min(uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

/* Warnings of an active reservation: each fires once; when several are
 * due at once (a late tick) only the nearest to expiry is sent. Returns
 * the next time one is due, or the end of the grace. */
static uint64_t dev_tick_active(struct dev_table *t, struct dev_server *d,
                                uint64_t now)
{
  const struct cfg_devservers *c = t->cfg;
  uint64_t next = d->expires_at_ms + c->expiry_grace_ms, at;
  size_t i, due = SIZE_MAX;

  if (now >= next) {
    dev_set_state(t, d, DEV_EXPIRED, "reservation time is over");
    return UINT64_MAX;
  }
  for (i = 0; i < c->nwarnings; i++) {
    if (d->warned & (1u << i))
      continue;
    at = d->expires_at_ms > c->warnings_ms[i]
             ? d->expires_at_ms - c->warnings_ms[i]
             : 0;
    if (now < at) {
      next = dev_min(next, at);
      continue;
    }
    d->warned |= 1u << i;
    due = i;
  }
  if (due != SIZE_MAX && now < d->expires_at_ms && t->hooks.warning != NULL)
    t->hooks.warning(t->hooks.arg, d, c->warnings_ms[due]);
  return next;
}

uint64_t dev_tick(struct dev_table *t)
{
  const struct cfg_devservers *c = t->cfg;
  uint64_t now = dev_now(t), next = UINT64_MAX, at;
  struct dev_server *d;
  size_t i;

  for (i = 0; i < t->n; i++) {
    d = t->all[i];
    if (d->state == DEV_QUEUED) {
      at = d->created_ms + c->queued_timeout_ms;
      if (now >= at)
        dev_set_state(t, d, DEV_FAILED, "queued longer than queued_timeout");
      else
        next = dev_min(next, at);
    } else if (d->state == DEV_PREPARING) {
      at = d->preparing_ms + c->preparing_timeout_ms;
      if (now >= at)
        dev_set_state(t, d, DEV_FAILED, "not ready within preparing_timeout");
      else
        next = dev_min(next, at);
    } else if (d->state == DEV_ACTIVE) {
      next = dev_min(next, dev_tick_active(t, d, now));
    }
  }
  return next;
}

int dev_find(const struct dev_table *t, const char *prefix,
             const struct dev_caller *who, struct dev_server **out)
{
  size_t i, len = prefix != NULL ? strlen(prefix) : 0;
  struct dev_server *hit = NULL;

  if (len < 4 || len > DEV_ID_LEN)
    return -ENOENT;
  for (i = 0; i < t->n; i++) {
    if (strncmp(t->all[i]->id, prefix, len) != 0 ||
        !dev_may_access(t->all[i], who))
      continue;
    if (hit != NULL)
      return -EEXIST;
    hit = t->all[i];
  }
  if (hit == NULL)
    return -ENOENT;
  *out = hit;
  return 0;
}

size_t dev_prune(struct dev_table *t, size_t keep,
                 void (*gone)(void *arg, const char *id), void *arg)
{
  size_t i, ended = 0, drop, out = 0, dropped = 0;

  for (i = 0; i < t->n; i++)
    if (!dev_is_live(t->all[i]->state))
      ended++;
  if (ended <= keep)
    return 0;
  drop = ended - keep;
  /* all[] is in arrival order: the first ended ones are the oldest. */
  for (i = 0; i < t->n; i++) {
    struct dev_server *d = t->all[i];
    if (dropped < drop && !dev_is_live(d->state)) {
      if (gone != NULL)
        gone(arg, d->id);
      dev_server_destroy(d);
      dropped++;
      continue;
    }
    t->all[out++] = d;
  }
  t->n = out;
  return dropped;
}

void dev_to_journal(const struct dev_server *d, struct journal_devserver *out)
{
  memset(out, 0, sizeof(*out));
  snprintf(out->id, sizeof(out->id), "%s", d->id);
  snprintf(out->user, sizeof(out->user), "%s", d->user);
  snprintf(out->flavor, sizeof(out->flavor), "%s", d->flavor);
  snprintf(out->state, sizeof(out->state), "%s", dev_state_name(d->state));
  snprintf(out->reason, sizeof(out->reason), "%s", d->reason);
  out->gpus = d->gpus;
  out->seq = d->seq;
  out->created_ms = d->created_ms;
  out->preparing_ms = d->preparing_ms;
  out->active_ms = d->active_ms;
  out->ended_ms = d->ended_ms;
  out->duration_ms = d->duration_ms;
  out->extended_ms = d->extended_ms;
  out->expires_at_ms = d->expires_at_ms;
  out->warned = d->warned;
}

static int dev_id_valid(const char *id)
{
  size_t i;

  for (i = 0; id[i] != '\0'; i++)
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
      return 0;
  return i == DEV_ID_LEN;
}

int dev_restore(struct dev_table *t, const struct journal_devserver *j,
                struct dev_server **out)
{
  struct dev_caller all = {.user = NULL, .admin = 1};
  struct dev_server *d, *dup;
  int state = dev_state_parse(j->state);

  if (state < 0 || !dev_id_valid(j->id) || j->user[0] == '\0' ||
      j->flavor[0] == '\0')
    return -EINVAL;
  if (dev_find(t, j->id, &all, &dup) == 0)
    return -EEXIST;
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    return -ENOMEM;
  d->user = strdup(j->user);
  d->flavor = strdup(j->flavor);
  if (d->user == NULL || d->flavor == NULL || dev_append(t, d) < 0) {
    dev_server_destroy(d);
    return -ENOMEM;
  }
  memcpy(d->id, j->id, DEV_ID_LEN); /* dev_id_valid: exactly that long */
  d->id[DEV_ID_LEN] = '\0';
  snprintf(d->reason, sizeof(d->reason), "%s", j->reason);
  d->state = (enum dev_state)state;
  d->gpus = j->gpus;
  d->seq = j->seq;
  d->created_ms = j->created_ms;
  d->preparing_ms = j->preparing_ms;
  d->active_ms = j->active_ms;
  d->ended_ms = j->ended_ms;
  d->duration_ms = j->duration_ms;
  d->extended_ms = j->extended_ms;
  d->expires_at_ms = j->expires_at_ms;
  d->warned = j->warned;
  if (t->next_seq <= d->seq)
    t->next_seq = d->seq + 1;
  if (out != NULL)
    *out = d;
  return 0;
}
