/* Dev servers at run time. See devfleet.h.
 *
 * Every change of a reservation reaches df_changed (the dev_table's one
 * hook), which journals it and drives the sshd: preparing fetches the
 * keys and starts it, an end stops it and releases its GPUs. Placement and
 * the clock run from one timer: a pass (timeouts, warnings, expiry, then
 * the queue heads) runs soon after anything changed, else at the next
 * deadline dev_tick gives. */
#include "devfleet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pwd.h>
#include <unistd.h>

#include "devserver_eta.h"
#include "devserver_local.h"
#include "log.h"

#define DF_MOD "devserver"
#define DF_HOLDER_MAX (DEV_ID_LEN + 16)
#define DF_KEYS_MAX (64u * 1024u) /* authorized_keys of one reservation */
#define DF_FETCH_TIMEOUT_MS 15000
#define DF_REQUEST_FILE "request" /* github_user=<login> */
#define DF_KEYS_FILE "keys"       /* key lines given through the API */
#define DF_GH_LOGIN_MAX 39
/* Ended reservations kept (API, metrics, the journal) before the oldest
 * are forgotten; DEV_MAX_RESERVATIONS bounds the live ones. */
#define DF_KEEP_ENDED 256

struct devfleet {
  uv_loop_t *loop;
  const struct config *cfg;
  struct capacity *cap;
  struct http_client *http;
  struct journal *journal;
  struct dev_local *local;
  struct dev_table table;
  void (*kick)(void *arg);
  void *kick_arg;
  uv_timer_t timer;
  int timer_open;
  int pass_pending;
  int started;
  int closing;
  /* The journal callback of the reservation being made, for df_changed. */
  journal_done_cb put_cb;
  void *put_arg;
  char login[64];     /* whom sshd lets in */
  double gpu_seconds; /* GPU-seconds of reservations that ended */
  void (*done_cb)(void *arg);
  void *done_arg;
  unsigned closing_parts;
};

/* A keys fetch in flight, found again by id when it is done. */
struct df_fetch {
  struct devfleet *df;
  char id[DEV_ID_LEN + 1];
};

static void df_pass_soon(struct devfleet *df);

static void df_holder(const struct dev_server *d, char *out, size_t size)
{
  snprintf(out, size, "devserver:%s", d->id);
}

static uint64_t df_wall_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct dev_server *df_by_id(const struct devfleet *df, const char *id)
{
  struct dev_caller all = {.user = NULL, .admin = 1};
  struct dev_server *d;

  return dev_find(&df->table, id, &all, &d) == 0 ? d : NULL;
}

static void df_request_for(const struct cfg_flavor *f, struct cap_request *r)
{
  memset(r, 0, sizeof(*r));
  r->gpus = f->gpus;
  r->cpu_milli = f->cpus * 1000u;
  r->memory = f->memory_bytes;
}

/* GPU-seconds a reservation held, from preparing to its end (or now). */
static double df_gpu_seconds(const struct dev_server *d, uint64_t now)
{
  uint64_t end = d->ended_ms != 0 ? d->ended_ms : now;

  if (d->preparing_ms == 0 || end < d->preparing_ms)
    return 0;
  return (double)d->gpus * (double)(end - d->preparing_ms) / 1e3;
}

/* ---- starting and stopping ---- */

static void df_release(struct devfleet *df, const struct dev_server *d)
{
  char holder[DF_HOLDER_MAX];

  df_holder(d, holder, sizeof(holder));
  (void)capacity_unclaim(df->cap, holder);
  if (capacity_release(df->cap, holder) == 0 && df->kick != NULL)
    df->kick(df->kick_arg);
}

/* The lines of text that OpenSSH reads as keys, appended to out. */
static size_t df_keys_append(char *out, size_t len, size_t size,
                             const char *text, size_t text_len)
{
  size_t kept = 0, dropped = 0;

  if (len >= size - 1 || dev_keys_filter(text, text_len, out + len, size - len,
                                         &kept, &dropped) != 0)
    return len;
  return len + strlen(out + len);
}

/* The keys are known: the sshd starts where capacity put it. */
static void df_launch(struct devfleet *df, struct dev_server *d,
                      const char *fetched, size_t fetched_len)
{
  char holder[DF_HOLDER_MAX], reason[DEV_MAX_REASON];
  const struct cap_placement *where;
  struct dev_local_spec spec;
  char *keys = malloc(DF_KEYS_MAX), extra[DF_KEYS_MAX];
  size_t len = 0;
  ssize_t n;
  int rc;

  if (keys == NULL) {
    dev_fail(&df->table, d, "out of memory");
    return;
  }
  keys[0] = '\0';
  if (fetched != NULL)
    len = df_keys_append(keys, len, DF_KEYS_MAX, fetched, fetched_len);
  n = dev_local_file_get(df->local, d->id, DF_KEYS_FILE, extra, sizeof(extra));
  if (n > 0)
    len = df_keys_append(keys, len, DF_KEYS_MAX, extra, (size_t)n);
  df_holder(d, holder, sizeof(holder));
  where = capacity_hold_find(df->cap, holder);
  if (len == 0 || where == NULL) {
    dev_fail(&df->table, d,
             where == NULL ? "its GPUs are no longer held"
                           : "no public key that OpenSSH would read");
    free(keys);
    return;
  }
  memset(&spec, 0, sizeof(spec));
  spec.id = d->id;
  spec.user = d->user;
  spec.where = where;
  spec.authorized_keys = keys;
  spec.keys_len = len;
  rc = dev_local_start(df->local, &spec);
  free(keys);
  if (rc != 0) {
    snprintf(reason, sizeof(reason), "cannot start sshd: %s", strerror(-rc));
    dev_fail(&df->table, d, reason);
  }
}

static void df_fetch_done_cb(void *arg, const struct http_client_response *r)
{
  struct df_fetch *fx = arg;
  struct devfleet *df = fx->df;
  struct dev_server *d = df->closing ? NULL : df_by_id(df, fx->id);
  char reason[DEV_MAX_REASON];

  if (d != NULL && d->state == DEV_PREPARING) {
    if (r->status == 200) {
      df_launch(df, d, r->body, r->body_len);
    } else {
      if (r->status != 0)
        snprintf(reason, sizeof(reason), "keys_url answered %ld", r->status);
      else
        snprintf(reason, sizeof(reason), "cannot fetch keys: %.100s",
                 r->error != NULL ? r->error : "transfer failed");
      dev_fail(&df->table, d, reason);
    }
  }
  free(fx);
}

/* The value of "key=" in the request file of d, or 0 when it has none. */
static int df_request_get(const struct devfleet *df, const struct dev_server *d,
                          const char *key, char *out, size_t size)
{
  char req[512], *line, *save = NULL;
  size_t klen = strlen(key);
  ssize_t n =
      dev_local_file_get(df->local, d->id, DF_REQUEST_FILE, req, sizeof(req));

  for (line = n > 0 ? strtok_r(req, "\n", &save) : NULL; line != NULL;
       line = strtok_r(NULL, "\n", &save))
    if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
      snprintf(out, size, "%s", line + klen + 1);
      return 1;
    }
  return 0;
}

int devfleet_name(const struct devfleet *df, const struct dev_server *d,
                  char *out, size_t size)
{
  return df_request_get(df, d, "name", out, size);
}

/* Whose GitHub keys: the one asked for at reserve time, else the user's;
 * none when a key was given instead. */
static void df_github_user(const struct devfleet *df,
                           const struct dev_server *d, char *out, size_t size)
{
  char flag[8];
  size_t i;

  out[0] = '\0';
  if (df_request_get(df, d, "github_user", out, size) ||
      df_request_get(df, d, "key_only", flag, sizeof(flag)))
    return;
  for (i = 0; i < df->cfg->devservers.nusers; i++)
    if (strcmp(df->cfg->devservers.users[i].name, d->user) == 0)
      snprintf(out, size, "%s", df->cfg->devservers.users[i].github_user);
}

/* keys_url with {user} replaced by login. */
static void df_keys_url(const struct devfleet *df, const char *login, char *out,
                        size_t size)
{
  const char *u = df->cfg->devservers.keys_url;
  const char *at = strstr(u, "{user}");

  snprintf(out, size, "%.*s%s%s", (int)(at - u), u, login, at + 6);
}

/* Preparing: fetch the keys, then start. */
static void df_begin(struct devfleet *df, struct dev_server *d)
{
  struct http_client_request req;
  struct df_fetch *fx;
  char login[64], url[1024];

  df_github_user(df, d, login, sizeof(login));
  if (login[0] == '\0') {
    df_launch(df, d, NULL, 0);
    return;
  }
  fx = calloc(1, sizeof(*fx));
  if (fx == NULL) {
    dev_fail(&df->table, d, "out of memory");
    return;
  }
  fx->df = df;
  snprintf(fx->id, sizeof(fx->id), "%s", d->id);
  df_keys_url(df, login, url, sizeof(url));
  memset(&req, 0, sizeof(req));
  req.method = "GET";
  req.url = url;
  req.timeout_ms = DF_FETCH_TIMEOUT_MS;
  log_info(DF_MOD, "fetching public keys", LOG_S("id", d->id),
           LOG_S("github_user", login));
  if (http_client_send(df->http, &req, df_fetch_done_cb, fx) != 0) {
    free(fx);
    dev_fail(&df->table, d, "cannot fetch keys");
  }
}

static void df_end(struct devfleet *df, struct dev_server *d,
                   enum dev_state from)
{
  (void)dev_local_stop(df->local, d->id);
  df->gpu_seconds += df_gpu_seconds(d, d->ended_ms);
  if (from == DEV_QUEUED || from == DEV_PREPARING || from == DEV_ACTIVE)
    df_release(df, d);
}

/* ---- the table's hooks ---- */

static void df_journal(struct devfleet *df, const struct dev_server *d)
{
  struct journal_devserver j;
  journal_done_cb cb = df->put_cb;
  void *arg = df->put_arg;

  df->put_cb = NULL;
  df->put_arg = NULL;
  if (df->journal == NULL)
    return;
  dev_to_journal(d, &j);
  if (journal_put_devserver(df->journal, &j, cb, arg) != 0) {
    log_error(DF_MOD, "cannot journal dev server", LOG_S("id", d->id));
    if (cb != NULL)
      cb(arg, -EIO);
  }
}

static void df_changed(void *arg, struct dev_server *d, enum dev_state from)
{
  struct devfleet *df = arg;

  df_journal(df, d);
  if (d->state == DEV_PREPARING && from == DEV_QUEUED)
    df_begin(df, d);
  else if (!dev_is_live(d->state))
    df_end(df, d, from);
  df_pass_soon(df);
}

static void df_warning(void *arg, struct dev_server *d, uint64_t before_ms)
{
  (void)arg;
  log_info(DF_MOD, "dev server expires soon", LOG_S("id", d->id),
           LOG_S("user", d->user), LOG_U("minutes_left", before_ms / 60000),
           LOG_U("expires_at_ms", d->expires_at_ms));
}

/* ---- the local backend's events ---- */

static void df_ready_cb(void *arg, const char *id, unsigned port)
{
  struct devfleet *df = arg;
  struct dev_server *d = df_by_id(df, id);

  (void)port;
  if (d == NULL || dev_ready(&df->table, d) != 0)
    (void)dev_local_stop(df->local, id);
}

static void df_exited_cb(void *arg, const char *id, int status, const char *why)
{
  struct devfleet *df = arg;
  struct dev_server *d = df_by_id(df, id);
  char reason[DEV_MAX_REASON];

  snprintf(reason, sizeof(reason), "%s (status %d)", why, status);
  if (d != NULL && dev_is_live(d->state))
    dev_fail(&df->table, d, reason);
  else
    (void)dev_local_stop(df->local, id);
}

/* ---- placement ---- */

/* One flavor's queue head: start it when one node fits it within the
 * sharing caps, else claim the node it waits for. */
static void df_place_flavor(struct devfleet *df, const struct cfg_flavor *f,
                            unsigned total_gpus)
{
  struct dev_server *head = dev_queue_head(&df->table, f->name);
  char holder[DF_HOLDER_MAX], node[CAP_NAME_MAX];
  struct cap_placement where;
  struct cap_request req;
  int rc;

  if (head == NULL)
    return;
  df_holder(head, holder, sizeof(holder));
  df_request_for(f, &req);
  if (!dev_within_share(&df->table, head, total_gpus)) {
    /* What frees it is another dev server's end, not CI's: holding CI
     * back would buy nothing. */
    (void)capacity_unclaim(df->cap, holder);
    return;
  }
  if (capacity_fits_for(df->cap, holder, &req) &&
      capacity_hold(df->cap, holder, CAP_HOLDER_DEVSERVER, &req, &where) == 0) {
    log_info(DF_MOD, "dev server placed", LOG_S("id", head->id),
             LOG_S("node", where.node), LOG_U("gpus", where.ngpus));
    if (dev_start(&df->table, head) != 0)
      df_release(df, head);
    return;
  }
  rc = capacity_claim(df->cap, holder, &req, node, sizeof(node));
  if (rc != 0)
    log_debug(DF_MOD, "no node can take the dev server yet",
              LOG_S("id", head->id), LOG_U("gpus", f->gpus),
              LOG_S("error", strerror(-rc)));
}

/* Flavors by priority, highest first; the order of the config among
 * equals. */
static void df_place(struct devfleet *df)
{
  const struct cfg_devservers *c = &df->cfg->devservers;
  struct cap_totals totals;
  size_t order[CFG_MAX_FLAVORS], i, j, n = 0, k;

  capacity_totals(df->cap, &totals);
  for (i = 0; i < c->nflavors; i++) {
    for (j = n;
         j > 0 && c->flavors[order[j - 1]].priority < c->flavors[i].priority;
         j--)
      order[j] = order[j - 1];
    order[j] = i;
    n++;
  }
  for (k = 0; k < n; k++)
    df_place_flavor(df, &c->flavors[order[k]], totals.gpus_total);
}

static void df_forget_cb(void *arg, const char *id)
{
  struct devfleet *df = arg;

  if (df->journal != NULL && journal_devserver_gone(df->journal, id) != 0)
    log_warn(DF_MOD, "cannot drop an ended dev server from the journal",
             LOG_S("id", id));
}

static void df_timer_cb(uv_timer_t *t)
{
  struct devfleet *df = t->data;
  uint64_t next, now;

  df->pass_pending = 0;
  if (df->closing || !df->started)
    return;
  (void)dev_tick(&df->table);
  (void)dev_prune(&df->table, DF_KEEP_ENDED, df_forget_cb, df);
  df_place(df);
  next = dev_tick(&df->table);
  if (df->pass_pending || next == UINT64_MAX)
    return;
  now = df_wall_ms();
  (void)uv_timer_start(&df->timer, df_timer_cb, next > now ? next - now : 0, 0);
}

static void df_pass_soon(struct devfleet *df)
{
  if (df->pass_pending || !df->timer_open || df->closing)
    return;
  df->pass_pending = 1;
  if (uv_timer_start(&df->timer, df_timer_cb, 0, 0) != 0)
    df->pass_pending = 0;
}

void devfleet_kick(struct devfleet *df)
{
  if (df != NULL)
    df_pass_soon(df);
}

/* ---- lifecycle ---- */

static void df_login_set(struct devfleet *df)
{
  struct passwd *pw = geteuid() == 0 ? getpwnam(df->cfg->devservers.run_as)
                                     : getpwuid(geteuid());

  snprintf(df->login, sizeof(df->login), "%s",
           pw != NULL ? pw->pw_name : df->cfg->devservers.run_as);
}

struct devfleet *devfleet_new(uv_loop_t *loop, const struct config *cfg,
                              struct capacity *cap, struct http_client *http,
                              void (*kick)(void *arg), void *kick_arg,
                              int *failed)
{
  struct dev_hooks hooks = {df_changed, df_warning, NULL};
  struct dev_local_events ev = {df_ready_cb, df_exited_cb, NULL};
  struct devfleet *df;

  *failed = 0;
  if (!cfg->devservers.enabled)
    return NULL;
  df = calloc(1, sizeof(*df));
  if (df == NULL)
    goto fail;
  df->loop = loop;
  df->cfg = cfg;
  df->cap = cap;
  df->http = http;
  df->kick = kick;
  df->kick_arg = kick_arg;
  hooks.arg = df;
  ev.arg = df;
  dev_table_init(&df->table, &cfg->devservers, NULL, NULL, &hooks);
  df->local = dev_local_new(loop, &cfg->devservers, cfg->state_dir, &ev);
  if (df->local == NULL)
    goto fail;
  (void)uv_timer_init(loop, &df->timer);
  df->timer.data = df;
  df->timer_open = 1;
  df_login_set(df);
  return df;
fail:
  free(df);
  *failed = 1;
  return NULL;
}

void devfleet_set_journal(struct devfleet *df, struct journal *j)
{
  df->journal = j;
}

void devfleet_replay(struct devfleet *df, const struct journal_devserver *j)
{
  struct dev_server *d;
  int rc = dev_restore(&df->table, j, &d);

  if (rc != 0) {
    log_warn(DF_MOD, "cannot keep a journaled dev server", LOG_S("id", j->id),
             LOG_S("error", strerror(-rc)));
    return;
  }
  if (!dev_is_live(d->state))
    df->gpu_seconds += df_gpu_seconds(d, d->ended_ms);
}

/* An active (or preparing) reservation after a restart: its sshd is
 * adopted with the GPUs it holds; one whose sshd is gone has failed. */
static void df_restore_running(struct devfleet *df, struct dev_server *d)
{
  char holder[DF_HOLDER_MAX];
  struct cap_placement where;
  unsigned port;
  int rc = dev_local_adopt(df->local, d->id, &where, &port);

  df_holder(d, holder, sizeof(holder));
  if (rc == 0)
    rc = capacity_hold_at(df->cap, holder, CAP_HOLDER_DEVSERVER, &where);
  if (rc == 0) {
    if (d->state == DEV_PREPARING)
      (void)dev_ready(&df->table, d);
    return;
  }
  (void)dev_local_stop(df->local, d->id);
  dev_fail(&df->table, d,
           rc == -ESRCH || rc == -ENOENT
               ? "its sshd did not outlive the restart of runfleetd"
               : "its GPUs are held by another after the restart");
}

int devfleet_start(struct devfleet *df)
{
  size_t i;

  df->started = 1;
  for (i = 0; i < df->table.n; i++)
    if (df->table.all[i]->state == DEV_PREPARING ||
        df->table.all[i]->state == DEV_ACTIVE)
      df_restore_running(df, df->table.all[i]);
  log_info(DF_MOD, "dev servers restored", LOG_U("reservations", df->table.n),
           LOG_U("gpus_held", dev_gpus_held(&df->table)));
  df_pass_soon(df);
  return 0;
}

void devfleet_set_config(struct devfleet *df, const struct config *cfg)
{
  if (df == NULL)
    return;
  df->cfg = cfg;
  df->table.cfg = &cfg->devservers;
  df_pass_soon(df);
}

static void df_part_closed(struct devfleet *df)
{
  if (--df->closing_parts == 0 && df->done_cb != NULL)
    df->done_cb(df->done_arg);
}

static void df_local_closed_cb(void *arg)
{
  df_part_closed(arg);
}

static void df_timer_closed_cb(uv_handle_t *h)
{
  df_part_closed(h->data);
}

void devfleet_close(struct devfleet *df, void (*done_cb)(void *arg), void *arg)
{
  df->closing = 1;
  df->done_cb = done_cb;
  df->done_arg = arg;
  df->closing_parts = 2;
  dev_local_close(df->local, df_local_closed_cb, df);
  if (df->timer_open) {
    df->timer_open = 0;
    uv_close((uv_handle_t *)&df->timer, df_timer_closed_cb);
  } else {
    df_part_closed(df);
  }
}

void devfleet_destroy(struct devfleet *df)
{
  if (df == NULL)
    return;
  dev_local_destroy(df->local);
  dev_table_free(&df->table);
  free(df);
}

/* ---- for the API ---- */

const struct dev_table *devfleet_table(const struct devfleet *df)
{
  return &df->table;
}

const struct config *devfleet_config(const struct devfleet *df)
{
  return df->cfg;
}

static int df_login_ok(const char *s)
{
  size_t i;

  for (i = 0; s[i] != '\0'; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || (s[i] == '-' && i > 0)))
      return 0;
  return i > 0 && i <= DF_GH_LOGIN_MAX;
}

int devfleet_reserve(struct devfleet *df, const struct devfleet_request *r,
                     struct dev_server **out, journal_done_cb cb, void *arg,
                     int *deferred, char *msg, size_t msg_size)
{
  char text[256];
  size_t i;
  int rc, n;

  *deferred = 0;
  if (df->closing) {
    snprintf(msg, msg_size, "runfleetd is stopping");
    return -EAGAIN;
  }
  if (r->github_user != NULL && r->key != NULL) {
    snprintf(msg, msg_size, "give github_user or key, not both");
    return -EINVAL;
  }
  if (r->github_user != NULL && !df_login_ok(r->github_user)) {
    snprintf(msg, msg_size, "github_user is not a GitHub login");
    return -EINVAL;
  }
  for (i = 0; r->name != NULL && r->name[i] != '\0'; i++)
    if ((unsigned char)r->name[i] < 0x20 || r->name[i] == 0x7f)
      break;
  if (r->name != NULL && (r->name[i] != '\0' || i > DEVFLEET_NAME_MAX)) {
    snprintf(msg, msg_size, "name must be at most %d printable characters",
             DEVFLEET_NAME_MAX);
    return -EINVAL;
  }
  if (r->key != NULL && dev_key_check(r->key, strlen(r->key)) != 0) {
    snprintf(msg, msg_size,
             "key is not one public key line OpenSSH reads (ssh-ed25519, "
             "ecdsa-sha2-*, ssh-rsa, sk-*)");
    return -EINVAL;
  }
  df->put_cb = df->journal != NULL ? cb : NULL;
  df->put_arg = arg;
  rc = dev_reserve(&df->table, df->cfg, r->user, r->flavor, r->duration_ms, out,
                   msg, msg_size);
  df->put_cb = NULL;
  df->put_arg = NULL;
  if (rc != 0)
    return rc;
  *deferred = df->journal != NULL;
  /* Written before the placement pass that may start it runs. */
  n = snprintf(text, sizeof(text), "%s%s%s%s%s%s\n",
               r->github_user != NULL ? "github_user=" : "",
               r->github_user != NULL ? r->github_user : "",
               r->github_user != NULL ? "\n" : "",
               r->key != NULL ? "key_only=1\n" : "",
               r->name != NULL ? "name=" : "", r->name != NULL ? r->name : "");
  if (dev_local_file_put(df->local, (*out)->id, DF_REQUEST_FILE, text,
                         (size_t)n) != 0 ||
      (r->key != NULL &&
       devfleet_add_key(df, *out, r->key, msg, msg_size) != 0))
    log_warn(DF_MOD, "cannot keep what the reservation asked for",
             LOG_S("id", (*out)->id));
  return 0;
}

void devfleet_unjournaled(struct devfleet *df, struct dev_server *d)
{
  (void)dev_fail(&df->table, d, "the journal could not keep it");
}

int devfleet_cancel(struct devfleet *df, struct dev_server *d,
                    const struct dev_caller *who)
{
  return dev_cancel(&df->table, d, who);
}

int devfleet_extend(struct devfleet *df, struct dev_server *d,
                    const struct dev_caller *who, uint64_t add_ms, char *msg,
                    size_t msg_size)
{
  int rc = dev_extend(&df->table, df->cfg, d, who, add_ms, msg, msg_size);

  if (rc == 0)
    df_pass_soon(df); /* the expiry moved: re-arm */
  return rc;
}

int devfleet_add_key(struct devfleet *df, struct dev_server *d, const char *key,
                     char *msg, size_t msg_size)
{
  char *keys = malloc(DF_KEYS_MAX), *all;
  size_t klen = strlen(key), len;
  ssize_t n;
  int rc = 0;

  if (keys == NULL)
    return -ENOMEM;
  if (!dev_is_live(d->state)) {
    snprintf(msg, msg_size, "reservation %s has ended (%s)", d->id,
             dev_state_name(d->state));
    rc = -ESTALE;
  } else if (dev_key_check(key, klen) != 0) {
    snprintf(msg, msg_size, "key is not one public key line OpenSSH reads");
    rc = -EINVAL;
  }
  n = rc == 0 ? dev_local_file_get(df->local, d->id, DF_KEYS_FILE, keys,
                                   DF_KEYS_MAX)
              : 0;
  len = n > 0 ? (size_t)n : 0;
  if (rc == 0 && len + klen + 2 > DF_KEYS_MAX) {
    snprintf(msg, msg_size, "too many keys for one reservation");
    rc = -ENOSPC;
  }
  if (rc == 0) {
    memcpy(keys + len, key, klen);
    len += klen;
    keys[len++] = '\n';
    rc = dev_local_file_put(df->local, d->id, DF_KEYS_FILE, keys, len);
  }
  /* An active server lets the key in at once: its authorized_keys now
   * has the fetched keys it had and this one. */
  if (rc == 0 && d->state == DEV_ACTIVE) {
    all = malloc(DF_KEYS_MAX);
    n = all != NULL ? dev_local_file_get(df->local, d->id, "authorized_keys",
                                         all, DF_KEYS_MAX)
                    : -ENOMEM;
    if (n >= 0 && (size_t)n + klen + 2 <= DF_KEYS_MAX) {
      memcpy(all + n, key, klen);
      all[(size_t)n + klen] = '\n';
      rc = dev_local_set_keys(df->local, d->id, all, (size_t)n + klen + 1);
    } else {
      rc = n < 0 ? (int)n : -ENOSPC;
    }
    free(all);
  }
  if (rc == 0)
    log_info(DF_MOD, "dev server key added", LOG_S("id", d->id));
  else if (rc != -EINVAL && rc != -ESTALE && rc != -ENOSPC)
    snprintf(msg, msg_size, "cannot write the key: %s", strerror(-rc));
  free(keys);
  return rc;
}

unsigned devfleet_port(const struct devfleet *df, const struct dev_server *d)
{
  return d->state == DEV_ACTIVE ? dev_local_port(df->local, d->id) : 0;
}

const char *devfleet_ssh_host(const struct devfleet *df)
{
  const char *l = df->cfg->devservers.listen;

  return strcmp(l, "0.0.0.0") == 0 ? "127.0.0.1" : l;
}

const char *devfleet_ssh_user(const struct devfleet *df)
{
  return df->login;
}

size_t devfleet_gpus(const struct devfleet *df, const struct dev_server *d,
                     int *gpus, size_t max)
{
  char holder[DF_HOLDER_MAX];
  const struct cap_placement *w;
  size_t i;

  df_holder(d, holder, sizeof(holder));
  w = capacity_hold_find(df->cap, holder);
  if (w == NULL)
    return 0;
  for (i = 0; i < w->ngpus && i < max; i++)
    gpus[i] = w->gpus[i];
  return i;
}

/* ---- the estimated start ---- */

/* When the holder of a GPU lets go of it: a dev server at the end of its
 * grace; a runner, or a dev server not yet active, nobody can tell. */
static uint64_t df_release_ms(const struct devfleet *df, const char *holder,
                              enum cap_holder_kind kind)
{
  const struct dev_server *d;

  if (kind != CAP_HOLDER_DEVSERVER || strncmp(holder, "devserver:", 10) != 0)
    return DEV_ETA_UNKNOWN;
  d = df_by_id(df, holder + 10);
  if (d == NULL || d->state != DEV_ACTIVE)
    return DEV_ETA_UNKNOWN;
  return d->expires_at_ms + df->cfg->devservers.expiry_grace_ms;
}

/* One node as the simulation sees it: free healthy GPUs, and a hold per
 * holder (holds has room for CAP_MAX_NODE_GPUS). */
static size_t df_eta_node(const struct devfleet *df, size_t i,
                          struct dev_eta_node *node, struct dev_eta_hold *holds,
                          const char **names)
{
  struct cap_gpu_view gpus[CAP_MAX_NODE_GPUS];
  const char *name, *source;
  size_t ng = 0, k, h, nh = 0;
  int ready;

  memset(node, 0, sizeof(*node));
  if (capacity_node_view(df->cap, i, &name, &source, &ready, gpus,
                         CAP_MAX_NODE_GPUS, &ng) != 0 ||
      !ready)
    return 0;
  for (k = 0; k < ng; k++) {
    if (gpus[k].holder == NULL) {
      node->free_gpus += gpus[k].healthy ? 1 : 0;
      continue;
    }
    for (h = 0; h < nh && strcmp(names[h], gpus[k].holder) != 0; h++)
      ;
    if (h == nh) {
      names[nh] = gpus[k].holder;
      holds[nh].gpus = 0;
      holds[nh].release_ms =
          df_release_ms(df, gpus[k].holder, gpus[k].holder_kind);
      nh++;
    }
    /* An unhealthy GPU does not come back when its holder lets go. */
    holds[h].gpus += gpus[k].healthy ? 1 : 0;
  }
  node->holds = holds;
  node->nholds = nh;
  return nh;
}

int devfleet_eta(const struct devfleet *df, const struct dev_server *d,
                 uint64_t *start_ms)
{
  size_t nnodes = capacity_nnodes(df->cap), i, n = 0;
  struct dev_eta_request *queue = NULL;
  struct dev_eta_hold *holds = NULL;
  struct dev_eta_node *nodes = NULL;
  const char *names[CAP_MAX_NODE_GPUS];
  uint64_t *starts = NULL;
  int rc = -1;

  if (d->state != DEV_QUEUED || nnodes == 0 || nnodes > DEV_ETA_MAX_NODES ||
      nnodes * CAP_MAX_NODE_GPUS > DEV_ETA_MAX_EVENTS)
    return -1;
  nodes = calloc(nnodes, sizeof(*nodes));
  holds = calloc(nnodes * CAP_MAX_NODE_GPUS, sizeof(*holds));
  queue = calloc(df->table.n, sizeof(*queue));
  starts = calloc(df->table.n, sizeof(*starts));
  if (nodes == NULL || holds == NULL || queue == NULL || starts == NULL)
    goto out;
  for (i = 0; i < nnodes; i++)
    (void)df_eta_node(df, i, &nodes[i], holds + i * CAP_MAX_NODE_GPUS, names);
  /* The queue of d's flavor up to d, in order (all[] is arrival order). */
  for (i = 0; i < df->table.n; i++) {
    const struct dev_server *q = df->table.all[i];
    if (q->state != DEV_QUEUED || strcmp(q->flavor, d->flavor) != 0)
      continue;
    queue[n].gpus = q->gpus;
    queue[n].duration_ms = q->duration_ms;
    n++;
    if (q == d)
      break;
  }
  if (n > 0 && dev_eta(nodes, nnodes, queue, n, df_wall_ms(), starts) == 0 &&
      starts[n - 1] != DEV_ETA_UNKNOWN) {
    *start_ms = starts[n - 1];
    rc = 0;
  }
out:
  free(starts);
  free(queue);
  free(holds);
  free(nodes);
  return rc;
}

/* ---- metrics ---- */

int devfleet_declare_metrics(struct metrics *m)
{
  int rc = 0;

  rc |= metrics_declare(m, "runfleet_devservers", METRICS_GAUGE,
                        "Dev server reservations by state and flavor", NULL, 0);
  rc |= metrics_declare(m, "runfleet_devserver_queue_length", METRICS_GAUGE,
                        "Queued dev server reservations per flavor", NULL, 0);
  rc |=
      metrics_declare(m, "runfleet_devserver_gpus_held", METRICS_GAUGE,
                      "GPUs held by preparing and active dev servers", NULL, 0);
  rc |= metrics_declare(m, "runfleet_devserver_gpu_seconds_total",
                        METRICS_COUNTER,
                        "GPU-seconds held by dev servers, from preparing to "
                        "their end",
                        NULL, 0);
  return rc != 0 ? -1 : 0;
}

void devfleet_sync_metrics(struct devfleet *df, struct metrics *m)
{
  const struct cfg_devservers *c = &df->cfg->devservers;
  uint64_t now = df_wall_ms();
  double held_s = df->gpu_seconds, count;
  char labels[160], esc[80];
  size_t f, i;
  int s;

  metrics_gauge_reset(m, "runfleet_devservers");
  metrics_gauge_reset(m, "runfleet_devserver_queue_length");
  for (f = 0; f < c->nflavors; f++) {
    metrics_escape(c->flavors[f].name, esc, sizeof(esc));
    for (s = DEV_QUEUED; s <= DEV_FAILED; s++) {
      count = 0;
      for (i = 0; i < df->table.n; i++)
        if ((int)df->table.all[i]->state == s &&
            strcmp(df->table.all[i]->flavor, c->flavors[f].name) == 0)
          count++;
      snprintf(labels, sizeof(labels), "flavor=\"%s\",state=\"%s\"", esc,
               dev_state_name((enum dev_state)s));
      metrics_gauge_set(m, "runfleet_devservers", labels, count);
      if (s == DEV_QUEUED) {
        snprintf(labels, sizeof(labels), "flavor=\"%s\"", esc);
        metrics_gauge_set(m, "runfleet_devserver_queue_length", labels, count);
      }
    }
  }
  for (i = 0; i < df->table.n; i++)
    if (dev_is_live(df->table.all[i]->state))
      held_s += df_gpu_seconds(df->table.all[i], now);
  metrics_gauge_set(m, "runfleet_devserver_gpus_held", "",
                    (double)dev_gpus_held(&df->table));
  /* The table says the total; the counter moves up to it. */
  count = held_s - metrics_value(m, "runfleet_devserver_gpu_seconds_total", "");
  if (count > 0)
    metrics_counter_add(m, "runfleet_devserver_gpu_seconds_total", "", count);
}
