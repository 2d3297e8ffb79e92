#include "fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "api.h"
#include "auth.h"
#include "backend.h"
#include "backend_kube.h"
#include "backend_local.h"
#include "capacity.h"
#include "devfleet.h"
#include "devserver_api.h"
#include "fs.h"
#include "github.h"
#include "hook_report.h"
#include "http_client.h"
#include "http_server.h"
#include "intake.h"
#include "journal.h"
#include "console.h"
#include "kube.h"
#include "leader.h"
#include "log.h"
#include "metrics_process.h"
#include "metrics.h"
#include "recovery.h"
#include "router.h"
#include "runner_ctl.h"
#include "scheduler.h"
#include "secret.h"
#include "webhook.h"

#define FLEET_MOD "fleet"
/* The label the Services select the leader by (docs/KUBERNETES.md). */
#define FLEET_ROLE_LABEL "runfleet.dev/role"
#define FLEET_ROLE_LEADER "leader"
#define FLEET_ROLE_RETRY_MS 5000
#define SECRET_MAX 4096

/* Shutdown runs in phases; each part that finishes calls stop_step_done,
 * and the last one of a phase starts the next. A start that failed part
 * way takes the same road: parts never made are skipped. */
enum stop_phase {
  STOP_NONE,
  STOP_LEASE,      /* the leader Lease released (holder cleared) */
  STOP_DEREGISTER, /* idle runners' registrations deleted at GitHub */
  STOP_JOURNAL,    /* what was accepted is written (listeners still open:
                      new deliveries get 503 from here on) */
  STOP_PARTS,      /* listener, backend (runners), GitHub client, runner
                      control */
  STOP_HTTP,       /* the HTTP client under the GitHub client */
  STOP_HANDLES,    /* our own timers */
  STOP_DONE
};

/* The backends this build has, by config's backend.type. */
static const struct {
  enum cfg_backend_type type;
  const char *name;
  backend_new_fn create;
} backend_factories[] = {
    {CFG_BACKEND_LOCAL, "local", backend_local_new},
    {CFG_BACKEND_KUBERNETES, "kubernetes", backend_kube_new},
};

struct fleet {
  uv_loop_t *loop;
  struct config *cfg;
  struct metrics *metrics;
  struct http_server *public_server; /* listen: /webhook, /healthz */
  struct http_server *admin_server;  /* admin_listen: everything else */
  struct http_client *http;
  struct gh_client *gh;
  struct capacity *capacity;
  struct backend *backend;
  struct scheduler *sched;
  struct runner_ctl *ctl;
  struct devfleet *dev; /* NULL without a devservers: section */
  struct webhook *webhook;
  struct intake *intake;
  struct journal *journal; /* NULL with journal.enabled: false */
  int journal_damaged;     /* the file was damaged and moved aside */
  struct hook_reports *hooks;
  struct recovery *recovery;
  struct recovery_store store; /* the delivery cursor: journal or file */
  int store_is_dir;
  struct console_history history; /* the status page's charts */
  struct kube *lease_kube;        /* the leader's own client, or NULL */
  struct leader *leader;          /* NULL without leader election */
  /* The role label on this replica's pod: -1 unknown, 0 absent, 1 leader;
   * the value of the patch in flight. */
  int role_labelled, role_sent, role_in_flight;
  uint64_t role_retry_ms; /* after a failed patch, not before this */
  int tag_stable;
  int ctl_started;
  int recovery_started;
  uv_timer_t tick; /* periodic reconcile */
  uv_timer_t kick; /* reconcile soon after an event, coalesced */
  int timers_open;
  int kick_pending;
  int stopping;
  int stop_phase;        /* enum stop_phase */
  unsigned stop_waiting; /* parts of the current phase still running */
  void (*stop_cb)(void *arg);
  void *stop_arg;
};

static uint64_t now_ms(const struct fleet *f)
{
  return uv_now(f->loop);
}

static void api_state_fill(struct fleet *f, struct api_state *st)
{
  st->sched = f->sched;
  st->backend = f->backend;
  st->capacity = f->capacity;
  st->metrics = f->metrics;
  st->now_ms = now_ms(f);
  st->ready =
      !f->stopping && (f->leader == NULL || leader_is_leader(f->leader));
  st->gh = f->gh;
  st->recovery = f->recovery;
  st->history = &f->history;
  st->leader = f->leader;
}

static void kick(struct fleet *f);

/* The fence of every part that acts: without leader election always, with
 * it only while this replica holds the Lease. */
static int fleet_may_act(void *arg)
{
  struct fleet *f = arg;

  return f->leader == NULL || leader_is_leader(f->leader);
}

/* Answers status with msg and a newline as plain text; a 204 has no body.
 * msg is a buffer of size bytes. */
static void answer_text(struct http_response *resp, int status, char *msg,
                        size_t size)
{
  if (status == 204) {
    http_response_set(resp, 204, "text/plain", "", 0);
    return;
  }
  strncat(msg, "\n", size - strlen(msg) - 1);
  http_response_set(resp, status, "text/plain", msg, strlen(msg));
}

/* intake's answer to a webhook: plain text, as answer_text writes it. */
static void webhook_answered_cb(void *arg, int status, const char *msg)
{
  char text[256];

  snprintf(text, sizeof(text), "%s\n", msg);
  http_deferred_answer(arg, status, "text/plain", text, strlen(text));
}

/* Bad input is answered at once; a delivery that parsed is answered once
 * intake applied it, which may be after this returns. */
static void route_webhook(void *ctx, const struct http_request *req,
                          struct http_response *resp)
{
  struct fleet *f = ctx;
  struct webhook_delivery d;
  struct http_deferred *answer;
  struct event ev;
  char msg[256];
  int status;

  /* A standby is not Ready, so the Service sends it nothing; a delivery
   * that still comes fails at GitHub and is redelivered to the leader. */
  if (!fleet_may_act(f)) {
    snprintf(msg, sizeof(msg), "not the leader");
    answer_text(resp, 503, msg, sizeof(msg));
    return;
  }
  d.event = http_request_header(req, "X-GitHub-Event");
  d.id = http_request_header(req, "X-GitHub-Delivery");
  d.signature = http_request_header(req, "X-Hub-Signature-256");
  d.body = req->body;
  d.body_len = req->body_len;
  status = webhook_parse(f->webhook, &d, &ev, msg, sizeof(msg));
  /* A bad signature costs the sender; past its budget the answer is 429. */
  if (status == 401 && http_response_failed(resp))
    return;
  if (status == 0) {
    answer = http_response_defer(resp, WEBHOOK_ANSWER_MS);
    if (answer != NULL && intake_submit(f->intake, &ev, now_ms(f),
                                        webhook_answered_cb, answer) == 0)
      return;
    event_free(&ev);
    http_deferred_release(answer);
    status = 503;
    snprintf(msg, sizeof(msg), "out of memory");
  }
  answer_text(resp, status, msg, sizeof(msg));
}

static void route_devservers(void *ctx, const struct http_request *req,
                             struct http_response *resp)
{
  struct fleet *f = ctx;

  dev_api_handle(f->dev, &f->cfg->admin, req, resp);
}

static void route_hooks(void *ctx, const struct http_request *req,
                        struct http_response *resp)
{
  struct fleet *f = ctx;
  char msg[256];
  int status;

  status = hook_handle(f->hooks, f->sched, f->capacity,
                       req->path + strlen("/api/v1/hooks/"),
                       http_request_header(req, "Authorization"), req->body,
                       req->body_len, msg, sizeof(msg));
  if (status == 401 && http_response_failed(resp))
    return;
  answer_text(resp, status, msg, sizeof(msg));
}

/* The admin listener's token check, for routes that need one. Neither
 * answer says more than its status: which part was wrong is no one's
 * business but the log's. */
static int admin_token_check(void *ctx, const struct http_request *req,
                             struct http_response *resp)
{
  struct fleet *f = ctx;
  const char *name = NULL;
  enum auth_result rc = auth_bearer_check(
      &f->cfg->admin, http_request_header(req, "Authorization"), &name);

  if (rc == AUTH_OK) {
    log_debug(FLEET_MOD, "admin call", LOG_S("token", name),
              LOG_S("method", req->method), LOG_S("path", req->path));
    return 0;
  }
  if (rc == AUTH_DENIED) {
    log_info(FLEET_MOD, "admin token refused", LOG_S("peer", req->peer),
             LOG_S("method", req->method), LOG_S("path", req->path));
    if (!http_response_failed(resp))
      http_response_set(resp, 403, "text/plain", "forbidden\n", 10);
    return 1;
  }
  http_response_set(resp, 401, "text/plain", "unauthorized\n", 13);
  resp->extra_headers = strdup("WWW-Authenticate: Bearer\r\n");
  return 1;
}

/* The read-only routes of api, each handed a snapshot of the state. */
#define API_ROUTE(name)                                                        \
  static void route_##name(void *ctx, const struct http_request *req,          \
                           struct http_response *resp)                         \
  {                                                                            \
    struct api_state st;                                                       \
                                                                               \
    api_state_fill(ctx, &st);                                                  \
    api_##name(&st, req, resp);                                                \
  }
API_ROUTE(healthz)
API_ROUTE(readyz)
API_ROUTE(status_page)
API_ROUTE(pools)
API_ROUTE(jobs)
API_ROUTE(runners)
API_ROUTE(recovery)
API_ROUTE(nodes)
API_ROUTE(queue)
API_ROUTE(history)
API_ROUTE(leader)
API_ROUTE(not_found)
#undef API_ROUTE

/* The HTTP servers' counters are copied into the registry at scrape time. */
static void route_metrics(void *ctx, const struct http_request *req,
                          struct http_response *resp)
{
  struct fleet *f = ctx;
  struct http_server_stats st;
  struct api_state state;

  http_server_get_stats(f->public_server, &st);
  api_sync_http(f->metrics, "public", &st);
  http_server_get_stats(f->admin_server, &st);
  api_sync_http(f->metrics, "admin", &st);
  if (f->gh != NULL)
    gh_sync_metrics(f->gh);
  /* Unreadable /proc (a hardened container) leaves the last values. */
  (void)metrics_process_sync(f->metrics);
  if (f->dev != NULL)
    devfleet_sync_metrics(f->dev, f->metrics);
  api_state_fill(f, &state);
  api_metrics(&state, req, resp);
}

#define BOTH (ROUTER_PUBLIC | ROUTER_ADMIN)
#define ADMIN ROUTER_ADMIN

/* Every route of runfleetd. The public listener, which GitHub and so
 * anyone reaches, serves /webhook and /healthz only; the rest is on the
 * admin listener, where mutations (and with admin.auth: all, every call
 * but the probes) need a bearer token. */
static const struct route routes[] = {
    {"POST", "/webhook", ROUTER_PUBLIC, route_webhook, 0},
    {"GET", "/healthz", BOTH, route_healthz, ROUTE_OPEN},
    {"GET", "/readyz", ADMIN, route_readyz, ROUTE_OPEN},
    {"GET", "/metrics", ADMIN, route_metrics, 0},
    {"GET", "/", ADMIN, route_status_page, 0},
    {"POST", "/api/v1/hooks/", ADMIN, route_hooks, ROUTE_OWN_AUTH},
    {"GET", "/api/v1/pools", ADMIN, route_pools, 0},
    {"GET", "/api/v1/jobs", ADMIN, route_jobs, 0},
    {"GET", "/api/v1/runners", ADMIN, route_runners, 0},
    {"GET", "/api/v1/recovery", ADMIN, route_recovery, 0},
    {"GET", "/api/v1/nodes", ADMIN, route_nodes, 0},
    {"GET", "/api/v1/queue", ADMIN, route_queue, 0},
    {"GET", "/api/v1/history", ADMIN, route_history, 0},
    {"GET", "/api/v1/leader", ADMIN, route_leader, 0},
    /* Dev server users have tokens of their own (devserver_api.h). */
    {"POST", "/api/v1/devservers", ADMIN, route_devservers, ROUTE_OWN_AUTH},
    {"GET", "/api/v1/devservers", ADMIN, route_devservers, ROUTE_OWN_AUTH},
    {"GET", "/api/v1/devservers/", ADMIN, route_devservers, ROUTE_OWN_AUTH},
    {"POST", "/api/v1/devservers/", ADMIN, route_devservers, ROUTE_OWN_AUTH},
    {"DELETE", "/api/v1/devservers/", ADMIN, route_devservers, ROUTE_OWN_AUTH},
    {"GET", "/api/v1/", ADMIN, route_not_found, 0},
};

#undef ADMIN
#undef BOTH

static void handle_public(void *ctx, const struct http_request *req,
                          struct http_response *resp)
{
  router_dispatch(routes, sizeof(routes) / sizeof(routes[0]), ROUTER_PUBLIC,
                  ctx, req, resp);
}

static void handle_admin(void *ctx, const struct http_request *req,
                         struct http_response *resp)
{
  struct fleet *f = ctx;
  struct router_auth auth;

  auth.all = f->cfg->admin.auth == CFG_ADMIN_AUTH_ALL;
  auth.check = admin_token_check;
  router_dispatch_auth(routes, sizeof(routes) / sizeof(routes[0]), ROUTER_ADMIN,
                       &auth, ctx, req, resp);
}

static void on_job(void *arg, const char *action, const struct sched_job *job)
{
  struct fleet *f = arg;

  if (job != NULL && strcmp(action, "queued") == 0 && f->recovery != NULL &&
      fleet_may_act(f))
    recovery_note_repo(f->recovery, job->repo);

  if (job != NULL && strcmp(action, "in_progress") == 0 && job->pool >= 0 &&
      job->queued_ms != 0 && job->started_ms >= job->queued_ms) {
    char labels[160], esc[128];
    snprintf(labels, sizeof(labels), "pool=\"%s\"",
             metrics_escape(sched_pool(f->sched, (size_t)job->pool)->name, esc,
                            sizeof(esc)));
    metrics_histogram_observe(f->metrics, "runfleet_job_wait_seconds", labels,
                              (double)(job->started_ms - job->queued_ms) / 1e3);
  }
  kick(f);
}

/* ---- reconcile timers ---- */

static void reconcile(struct fleet *f)
{
  if (f->stopping || f->sched == NULL || !fleet_may_act(f))
    return;
  sched_reconcile(f->sched, now_ms(f));
  /* CI may have let go of GPUs a queued dev server waits for. */
  devfleet_kick(f->dev);
}

/* The periodic reconcile also samples for the status page's charts, at
 * most once each CONSOLE_SAMPLE_MS. */
static void role_label_sync(struct fleet *f);

static void tick_cb(uv_timer_t *t)
{
  struct fleet *f = t->data;
  uint64_t wall;

  reconcile(f);
  role_label_sync(f);
  if (f->sched == NULL)
    return;
  wall = sched_wall_ms(f->sched);
  if (f->history.last_ms == 0 || wall >= f->history.last_ms + CONSOLE_SAMPLE_MS)
    console_sample(&f->history, f->sched, wall);
}

static void kick_cb(uv_timer_t *t)
{
  struct fleet *f = t->data;

  f->kick_pending = 0;
  reconcile(f);
}

static void kick(struct fleet *f)
{
  if (f->kick_pending || f->stopping || !f->timers_open)
    return;
  f->kick_pending = 1;
  if (uv_timer_start(&f->kick, kick_cb, 0, 0) != 0)
    f->kick_pending = 0;
}

static void kick_from_ctl(void *arg)
{
  kick(arg);
}

/* ---- lifecycle ---- */

/* A secret file that its group or others can read is one a local user may
 * have copied already: said once at start, naming the file and its mode,
 * never what is in it. Every file holding a secret is checked here. */
static void warn_exposed_secrets(const struct config *cfg)
{
  const char *files[] = {cfg->github.webhook_secret_file,
                         cfg->github.app_private_key_file, cfg->github.pat_file,
                         cfg->admin.tokens_file};
  char octal[8];
  unsigned mode;
  size_t i;

  for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    if (files[i] == NULL || secret_file_exposed(files[i], &mode) != 1)
      continue;
    snprintf(octal, sizeof(octal), "%04o", mode);
    log_warn(FLEET_MOD, "secret file is readable by group or others",
             LOG_S("file", files[i]), LOG_S("mode", octal));
  }
}

/* The parts that own no loop handle; fleet_start makes the rest, so a
 * failure here never needs the loop to run. */
struct fleet *fleet_new(uv_loop_t *loop, struct config *cfg)
{
  struct fleet *f = calloc(1, sizeof(*f));
  char *secret = NULL;
  size_t secret_len = 0;
  int rc;

  if (f == NULL)
    return NULL;
  f->loop = loop;
  f->cfg = cfg;
  warn_exposed_secrets(cfg);
  rc = secret_read_file(cfg->github.webhook_secret_file, SECRET_MAX, &secret,
                        &secret_len);
  if (rc != 0) {
    log_error(FLEET_MOD, "cannot read webhook secret",
              LOG_S("file", cfg->github.webhook_secret_file),
              LOG_S("error", strerror(-rc)));
    goto fail;
  }
  f->metrics = metrics_new();
  if (f->metrics == NULL || api_declare_metrics(f->metrics) != 0 ||
      (cfg->devservers.enabled && devfleet_declare_metrics(f->metrics) != 0))
    goto fail;
  f->webhook =
      webhook_new((const unsigned char *)secret, secret_len, f->metrics);
  secret_wipe_free(secret, secret_len);
  secret = NULL;
  if (f->webhook == NULL)
    goto fail;
  f->hooks = hook_reports_new(f->metrics);
  if (f->hooks == NULL)
    goto fail;
  f->capacity = capacity_new();
  if (f->capacity == NULL)
    goto fail;
  f->ctl = runner_ctl_new(loop, f->capacity, f->hooks);
  if (f->ctl == NULL)
    goto fail;
  runner_ctl_on_kick(f->ctl, kick_from_ctl, f);
  return f;
fail:
  secret_wipe_free(secret, secret_len);
  fleet_destroy(f);
  return NULL;
}

static backend_new_fn backend_factory(enum cfg_backend_type type,
                                      const char **name)
{
  size_t i;

  for (i = 0; i < sizeof(backend_factories) / sizeof(backend_factories[0]); i++)
    if (backend_factories[i].type == type) {
      *name = backend_factories[i].name;
      return backend_factories[i].create;
    }
  *name = type == CFG_BACKEND_KUBERNETES ? "kubernetes" : "unknown";
  return NULL;
}

/* Runners report to the admin listener: at admin_url when the config says
 * (runner pods reach it through a Service), else at admin_listen, on
 * loopback when it listens on every address. */
static void runner_url_set(struct fleet *f)
{
  const char *listen = f->cfg->admin_listen;
  const char *colon = strrchr(listen, ':');
  int port = http_server_port(f->admin_server);
  size_t host_len = colon != NULL ? (size_t)(colon - listen) : 0;
  char host[80], url[128], cache[512];

  snprintf(host, sizeof(host), "%.*s", (int)host_len, listen);
  if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
    snprintf(host, sizeof(host), "127.0.0.1");
  else if (strcmp(host, "[::]") == 0)
    snprintf(host, sizeof(host), "[::1]");
  if (f->cfg->admin_url != NULL)
    snprintf(url, sizeof(url), "%s", f->cfg->admin_url);
  else
    snprintf(url, sizeof(url), "http://%s:%d", host, port);
  snprintf(cache, sizeof(cache), "%s/cache/git", f->cfg->state_dir);
  runner_ctl_set_urls(f->ctl, url, cache);
}

/* ---- journal ---- */

static void replay_job_cb(void *ctx, const struct event *ev, uint64_t at_ms)
{
  struct fleet *f = ctx;

  intake_replay(f->intake, ev, at_ms, now_ms(f));
}

static void replay_runner_cb(void *ctx, const struct journal_runner *r)
{
  struct fleet *f = ctx;

  if (runner_ctl_replay_runner(f->ctl, r) != 0)
    log_warn(FLEET_MOD, "cannot keep a journaled runner",
             LOG_S("runner", r->name));
}

static void replay_devserver_cb(void *ctx, const struct journal_devserver *d)
{
  struct fleet *f = ctx;

  if (f->dev != NULL)
    devfleet_replay(f->dev, d);
}

static int journal_meta_get_cb(void *ctx, const char *key, char *buf,
                               size_t size)
{
  return journal_meta_get(ctx, key, buf, size);
}

static int journal_meta_put_cb(void *ctx, const char *key, const char *value)
{
  return journal_meta_put(ctx, key, value);
}

static int lease_value_get_cb(void *ctx, const char *key, char *buf,
                              size_t size)
{
  return leader_value_get(ctx, key, buf, size);
}

static int lease_value_put_cb(void *ctx, const char *key, const char *value)
{
  return leader_value_put(ctx, key, value);
}

/* Recovery's delivery cursor lives on the Lease with leader election (both
 * replicas read it), else in the journal's meta values, else in a small
 * file under state_dir. */
static int recovery_store_setup(struct fleet *f)
{
  if (f->leader != NULL) {
    f->store.ctx = f->leader;
    f->store.get = lease_value_get_cb;
    f->store.put = lease_value_put_cb;
    return 0;
  }
  if (f->journal != NULL) {
    f->store.ctx = f->journal;
    f->store.get = journal_meta_get_cb;
    f->store.put = journal_meta_put_cb;
    return 0;
  }
  f->store_is_dir = 1;
  return recovery_dir_store(&f->store, f->cfg->state_dir) == 0 ? 0 : -ENOMEM;
}

/* Opens the journal, rebuilds jobs and runners from it, and from then on
 * journals every accepted delivery before it is applied and answered. */
static int journal_setup(struct fleet *f)
{
  const struct cfg_journal *jc = &f->cfg->journal;
  struct journal_replay_ops ops = {replay_job_cb, replay_runner_cb,
                                   replay_devserver_cb};
  struct journal_options opts;
  char path[1024];
  int rc;

  if (!jc->enabled) {
    log_warn(FLEET_MOD,
             "journal disabled: what was accepted is lost on a restart",
             LOG_NONE);
    return 0;
  }
  if (jc->path != NULL) {
    snprintf(path, sizeof(path), "%s", jc->path);
  } else {
    rc = fs_mkdir_p(f->cfg->state_dir, 0755);
    if (rc != 0) {
      log_error(FLEET_MOD, "cannot create the state directory",
                LOG_S("dir", f->cfg->state_dir), LOG_S("error", strerror(-rc)));
      return rc;
    }
    snprintf(path, sizeof(path), "%s/journal.db", f->cfg->state_dir);
  }
  opts.path = path;
  opts.sync = jc->sync == CFG_JOURNAL_SYNC_NORMAL ? JOURNAL_SYNC_NORMAL
                                                  : JOURNAL_SYNC_FULL;
  opts.max_bytes = jc->max_bytes;
  rc = journal_open(&f->journal, f->loop, &opts, f->metrics,
                    &f->journal_damaged);
  if (rc != 0)
    return rc;
  rc = journal_replay(f->journal, &ops, f);
  if (rc != 0)
    return rc;
  intake_set_journal(f->intake, f->journal);
  runner_ctl_set_journal(f->ctl, f->journal);
  if (f->dev != NULL)
    devfleet_set_journal(f->dev, f->journal);
  return journal_start(f->journal);
}

/* ---- leader election ---- */

/* The webhook and admin Services select the pod labelled
 * runfleet.dev/role=leader: the leader labels its own pod ($POD_NAME), a
 * replica that no longer leads takes the label off, so both replicas can
 * stay Ready (a readiness that waited for the Lease would stall every
 * rolling update: the new pods, standbys, never become available) while
 * GitHub's deliveries and the runners' hook reports reach the leader. A
 * leader cut off from the apiserver cannot take its label off: it answers
 * 503 "not the leader" until it can, and GitHub's redelivery (recovery)
 * brings those deliveries to the new leader. Kept in step at each
 * reconcile tick until the apiserver has taken it. */
static void role_label_cb(void *arg, const struct kube_response *resp)
{
  struct fleet *f = arg;

  f->role_in_flight = 0;
  if (resp->error == 0) {
    f->role_labelled = f->role_sent;
    log_info(FLEET_MOD,
             f->role_sent ? "pod labelled leader"
                          : "leader label taken off the pod",
             LOG_NONE);
  } else if (resp->error != -ECANCELED) {
    /* Tried again later, not at every tick: a missing pod (runfleetd not
     * run by the Deployment) or a missing permission does not go away. */
    f->role_retry_ms = now_ms(f) + FLEET_ROLE_RETRY_MS;
    log_warn(FLEET_MOD, "cannot label this replica's pod",
             LOG_I("status", resp->status), LOG_S("reason", resp->reason),
             LOG_S("message", resp->message));
  }
}

static const char *lease_namespace(const struct fleet *f);

static void role_label_sync(struct fleet *f)
{
  const char *pod = getenv("POD_NAME");
  json_t *patch;
  int want;

  if (f->leader == NULL || f->lease_kube == NULL || pod == NULL ||
      pod[0] == '\0' || f->role_in_flight || now_ms(f) < f->role_retry_ms)
    return;
  want = leader_is_leader(f->leader) && !f->stopping;
  if (want == f->role_labelled)
    return;
  patch = json_pack("{s:{s:{s:o}}}", "metadata", "labels", FLEET_ROLE_LABEL,
                    want ? json_string(FLEET_ROLE_LEADER) : json_null());
  if (patch == NULL)
    return;
  f->role_sent = want;
  if (kube_patch(f->lease_kube, KUBE_PODS, lease_namespace(f), pod,
                 KUBE_PATCH_MERGE, patch, role_label_cb, f) == 0)
    f->role_in_flight = 1;
  json_decref(patch);
}

/* Becoming the leader: the cluster's runners are reconciled and GitHub
 * swept (runner_ctl_start, once: the watches kept the backend's view
 * current meanwhile), recovery looks for what the gap lost, then the
 * scheduler runs. Losing it needs nothing here: every part asks
 * fleet_may_act before it acts. */
static void leader_changed_cb(void *arg, int leading)
{
  struct fleet *f = arg;
  char tag[16];

  role_label_sync(f);
  if (!leading || f->stopping)
    return;
  /* One fleet tag for every replica, kept on the Lease: runner names of
   * the leader before this one are this fleet's, for the sweep. */
  if (leader_value_get(f->leader, LEADER_VALUE_FLEET_TAG, tag, sizeof(tag)) ==
          0 &&
      strlen(tag) == 8 && strspn(tag, "0123456789abcdef") == 8) {
    sched_set_tag(f->sched, tag);
    f->tag_stable = 1;
  } else if (leader_value_put(f->leader, LEADER_VALUE_FLEET_TAG,
                              sched_tag(f->sched)) != 0) {
    log_warn(FLEET_MOD, "cannot keep the fleet tag on the lease", LOG_NONE);
  }
  /* Pods and Secrets whose deletes were fenced, then the runners the
   * cluster runs: adopted, whoever started them. */
  backend_kube_takeover(f->backend);
  if (!f->ctl_started) {
    f->ctl_started = 1;
    if (runner_ctl_start(f->ctl, f->tag_stable) != 0)
      log_error(FLEET_MOD, "cannot start runner control", LOG_NONE);
  } else {
    runner_ctl_takeover(f->ctl, f->tag_stable);
  }
  if (!f->recovery_started) {
    f->recovery_started = 1;
    if (recovery_start(f->recovery) != 0)
      log_error(FLEET_MOD, "cannot start recovery", LOG_NONE);
  }
  recovery_trigger(f->recovery, RECOVERY_TRIGGER_FAILOVER);
  kick(f);
}

/* The Lease lives in runfleetd's own namespace: $POD_NAMESPACE, else the
 * kubeconfig context's or service account's, else the runners'. */
static const char *lease_namespace(const struct fleet *f)
{
  const char *ns = getenv("POD_NAMESPACE");

  if (ns != NULL && ns[0] != '\0')
    return ns;
  ns = kube_namespace(f->lease_kube);
  if (ns != NULL && ns[0] != '\0')
    return ns;
  return f->cfg->kubernetes.namespace_ != NULL ? f->cfg->kubernetes.namespace_
                                               : CFG_DEFAULT_KUBE_NAMESPACE;
}

/* A client of its own, so renewals never queue behind the backend's
 * requests, with one try per request shorter than the renew deadline (the
 * elector's own retry is the retry). */
static int leader_setup(struct fleet *f)
{
  const struct cfg_kubernetes *kc = &f->cfg->kubernetes;
  struct leader_options lo;
  struct kube_config conf;
  struct kube_options ko;
  char err[256], identity[LEADER_MAX_IDENTITY + 1];

  if (f->cfg->backend != CFG_BACKEND_KUBERNETES || !kc->leader_election)
    return 0;
  if (leader_default_identity(identity, sizeof(identity)) != 0) {
    log_error(FLEET_MOD, "no leader identity: set POD_NAME", LOG_NONE);
    return -EINVAL;
  }
  if (kube_config_from_cfg(kc, &conf, &ko, err, sizeof(err)) != 0) {
    log_error(FLEET_MOD, "cannot reach the cluster", LOG_S("error", err));
    return -EINVAL;
  }
  ko.attempts = 1;
  ko.timeout_ms = kc->renew_deadline_ms / 2;
  ko.qps = -1;
  ko.metrics = NULL;
  f->lease_kube = kube_new(f->loop, &conf, &ko);
  kube_config_free(&conf);
  if (f->lease_kube == NULL)
    return -ENOMEM;
  memset(&lo, 0, sizeof(lo));
  lo.ns = lease_namespace(f);
  lo.name = kc->lease_name != NULL ? kc->lease_name : CFG_DEFAULT_LEASE_NAME;
  lo.identity = identity;
  lo.lease_duration_ms = kc->lease_duration_ms;
  lo.renew_deadline_ms = kc->renew_deadline_ms;
  lo.retry_period_ms = kc->retry_period_ms;
  lo.metrics = f->metrics;
  lo.changed_cb = leader_changed_cb;
  lo.arg = f;
  lo.request_arg = f->lease_kube;
  f->leader = leader_new(f->loop, &lo);
  if (f->leader == NULL)
    return -ENOMEM;
  f->role_labelled = -1; /* a label left from before is taken off */
  backend_kube_set_fence(f->backend, fleet_may_act, f);
  runner_ctl_set_fence(f->ctl, fleet_may_act, f);
  log_info(FLEET_MOD, "leader election", LOG_S("lease", lo.name),
           LOG_S("namespace", lo.ns), LOG_S("identity", identity));
  return 0;
}

/* Without leader election this replica is the one that acts: the leader
 * families say so, so a dashboard reads the same names either way. */
static void single_replica_metrics(struct fleet *f)
{
  if (metrics_declare(f->metrics, "runfleet_leader", METRICS_GAUGE,
                      LEADER_METRIC_HELP, NULL, 0) == 0)
    metrics_gauge_set(f->metrics, "runfleet_leader", "", 1);
  if (metrics_declare(f->metrics, "runfleet_leader_transitions_total",
                      METRICS_COUNTER, LEADER_TRANSITIONS_HELP, NULL, 0) == 0)
    metrics_counter_add(f->metrics, "runfleet_leader_transitions_total", "", 0);
}

/* Makes the parts that own loop handles, in order. On failure the caller
 * stops the fleet as usual (fleet_stop), which closes what was made. */
static int fleet_make_parts(struct fleet *f)
{
  struct config *cfg = f->cfg;
  struct http_server_limits limits;
  backend_new_fn create;
  const char *backend_name;
  int rc;

  /* uv_timer_init only records the handle in the loop; it cannot fail. */
  (void)uv_timer_init(f->loop, &f->tick);
  (void)uv_timer_init(f->loop, &f->kick);
  f->tick.data = f->kick.data = f;
  f->timers_open = 1;
  f->http = http_client_new(f->loop);
  if (f->http == NULL)
    return -ENOMEM;
  f->gh = gh_new(f->loop, f->http, &cfg->github, f->metrics);
  if (f->gh == NULL)
    return -EINVAL;
  create = backend_factory(cfg->backend, &backend_name);
  if (create == NULL) {
    log_error(FLEET_MOD, "backend not available in this build",
              LOG_S("backend", backend_name));
    return -ENOTSUP;
  }
  f->backend =
      create(f->loop, cfg, f->capacity, runner_ctl_backend_event, f->ctl);
  if (f->backend == NULL)
    return -EINVAL;
  if (cfg->backend == CFG_BACKEND_KUBERNETES)
    backend_kube_set_metrics(f->backend, f->metrics);
  f->sched = sched_new(cfg, &runner_ctl_sched_ops, f->ctl);
  if (f->sched == NULL)
    return -ENOMEM;
  f->intake = intake_new(f->sched, f->metrics);
  if (f->intake == NULL)
    return -ENOMEM;
  intake_on_job(f->intake, on_job, f);
  runner_ctl_attach(f->ctl, f->gh, f->sched, f->backend);
  hook_reports_set_backend(f->hooks, f->backend);
  rc = leader_setup(f);
  if (rc != 0)
    return rc;
  if (f->leader == NULL)
    single_replica_metrics(f);
  {
    int failed;
    f->dev = devfleet_new(f->loop, cfg, f->capacity, f->http, kick_from_ctl, f,
                          &failed);
    if (failed)
      return -EINVAL;
  }
  rc = journal_setup(f);
  if (rc != 0)
    return rc;
  rc = recovery_store_setup(f);
  if (rc != 0)
    return rc;
  f->recovery = recovery_new(f->loop, cfg, f->gh, f->sched, f->intake,
                             &f->store, f->metrics);
  if (f->recovery == NULL)
    return -ENOMEM;
  recovery_on_capacity(f->recovery, runner_ctl_sched_ops.fits, f->ctl);
  if (f->leader != NULL)
    recovery_set_fence(f->recovery, fleet_may_act, f);
  /* Each listener has limits of its own: a crowd on the public one
   * leaves the admin one (probes, metrics, hook reports) alone. */
  limits.name = "public";
  limits.max_header_bytes = cfg->limits.max_header_bytes;
  limits.max_body_bytes = cfg->limits.max_body_bytes;
  limits.max_connections = cfg->limits.max_connections;
  limits.read_timeout_ms = cfg->limits.read_timeout_ms;
  limits.idle_timeout_ms = cfg->limits.idle_timeout_ms;
  limits.header_timeout_ms = cfg->limits.header_timeout_ms;
  limits.evict_idle = 1;
  limits.max_connections_per_peer = cfg->limits.max_connections_per_peer;
  limits.failures_per_minute = cfg->limits.max_failures_per_minute;
  f->public_server = http_server_new(f->loop, &limits, handle_public, f);
  if (f->public_server == NULL)
    return -ENOMEM;
  limits.name = "admin";
  f->admin_server = http_server_new(f->loop, &limits, handle_admin, f);
  if (f->admin_server == NULL)
    return -ENOMEM;
  return 0;
}

static int fleet_listen(struct http_server *server, const char *name,
                        const char *addr)
{
  int rc = http_server_listen(server, addr);

  if (rc != 0) {
    log_error(FLEET_MOD, "cannot listen", LOG_S("listener", name),
              LOG_S("address", addr), LOG_S("error", uv_strerror(rc)));
    return rc;
  }
  return 0;
}

int fleet_start(struct fleet *f)
{
  int rc = fleet_make_parts(f);

  if (rc != 0)
    return rc;
  f->tag_stable = runner_ctl_load_tag(f->ctl, f->cfg->state_dir);
  rc = fleet_listen(f->public_server, "public", f->cfg->listen);
  if (rc == 0)
    rc = fleet_listen(f->admin_server, "admin", f->cfg->admin_listen);
  if (rc != 0)
    return rc;
  runner_url_set(f);
  log_info(FLEET_MOD, "listening", LOG_S("address", f->cfg->listen),
           LOG_I("port", http_server_port(f->public_server)),
           LOG_S("admin_address", f->cfg->admin_listen),
           LOG_I("admin_port", http_server_port(f->admin_server)),
           LOG_U("pools", f->cfg->npools));
  if (f->leader != NULL) {
    /* Runner control and recovery start when the Lease is ours. (Dev
     * servers are local-backend only, so never with leader election.) */
    rc = leader_start(f->leader);
    if (rc != 0)
      return rc;
  } else {
    f->ctl_started = f->recovery_started = 1;
    rc = runner_ctl_start(f->ctl, f->tag_stable);
    if (rc != 0)
      return rc;
    /* After CI runners are adopted, so the GPUs they hold are known. */
    if (f->dev != NULL && (rc = devfleet_start(f->dev)) != 0)
      return rc;
    rc = recovery_start(f->recovery);
    if (rc != 0)
      return rc;
  }
  rc = uv_timer_start(&f->tick, tick_cb, f->cfg->reconcile_interval_ms,
                      f->cfg->reconcile_interval_ms);
  if (rc != 0)
    return rc;
  kick(f);
  return 0;
}

/* Fields whose change needs a restart; a reload keeps the running ones. */
static int same_str(const char *a, const char *b)
{
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && !strcmp(a, b));
}

static int github_changed(const struct cfg_github *a,
                          const struct cfg_github *b)
{
  return !same_str(a->api_url, b->api_url) || a->app_id != b->app_id ||
         !same_str(a->app_private_key_file, b->app_private_key_file) ||
         a->installation_id != b->installation_id ||
         !same_str(a->pat_file, b->pat_file) || !same_str(a->org, b->org) ||
         !same_str(a->repo, b->repo) ||
         a->runner_group_id != b->runner_group_id ||
         a->mutations_per_minute != b->mutations_per_minute;
}

int fleet_reload(struct fleet *f, const char *path)
{
  struct config *next = calloc(1, sizeof(*next));
  struct config *old = f->cfg;
  char *secret = NULL;
  size_t secret_len = 0;
  char errs[8192];
  int rc;

  if (next == NULL)
    return -ENOMEM;
  if (f->sched == NULL || f->stopping) {
    free(next);
    log_warn(FLEET_MOD, "reload ignored while starting or stopping", LOG_NONE);
    return -EAGAIN;
  }
  rc = cfg_load(next, path, errs, sizeof(errs));
  if (rc != 0) {
    log_error(FLEET_MOD, "reload rejected, keeping the running config",
              LOG_S("file", path), LOG_I("problems", rc));
    fprintf(stderr, "%s", errs);
    free(next);
    return -EINVAL;
  }
  rc = secret_read_file(next->github.webhook_secret_file, SECRET_MAX, &secret,
                        &secret_len);
  if (rc != 0) {
    log_error(FLEET_MOD, "reload rejected: cannot read webhook secret",
              LOG_S("file", next->github.webhook_secret_file),
              LOG_S("error", strerror(-rc)));
    cfg_free(next);
    free(next);
    return rc;
  }
  rc =
      webhook_set_secret(f->webhook, (const unsigned char *)secret, secret_len);
  secret_wipe_free(secret, secret_len);
  if (rc != 0) {
    cfg_free(next);
    free(next);
    return -ENOMEM;
  }
  /* The GitHub client, listener and backend keep pointers into or copies of
   * their sections: those sections stay as they were until a restart. */
  if (github_changed(&old->github, &next->github))
    log_warn(FLEET_MOD, "github settings change on restart only", LOG_NONE);
  if (!same_str(old->listen, next->listen) ||
      !same_str(old->admin_listen, next->admin_listen) ||
      old->backend != next->backend ||
      memcmp(&old->limits, &next->limits, sizeof(old->limits)) != 0 ||
      !same_str(old->local.work_root, next->local.work_root) ||
      old->local.cpu_slots != next->local.cpu_slots ||
      old->local.ngpus != next->local.ngpus)
    log_warn(FLEET_MOD,
             "listen, limits and backend settings change on restart only",
             LOG_NONE);
  if (next->reconcile_interval_ms != old->reconcile_interval_ms &&
      f->timers_open &&
      uv_timer_start(&f->tick, tick_cb, next->reconcile_interval_ms,
                     next->reconcile_interval_ms) != 0)
    log_warn(FLEET_MOD, "cannot re-arm the reconcile timer", LOG_NONE);
  {
    struct cfg_github keep = old->github;
    old->github = next->github;
    next->github = keep;
  }
  gh_set_cfg(f->gh, &next->github);
  sched_set_config(f->sched, next);
  recovery_set_config(f->recovery, next);
  devfleet_set_config(f->dev, next);
  log_setup((enum log_level)next->log_level, next->log_format == CFG_LOG_JSON);
  f->cfg = next;
  cfg_free(old);
  free(old);
  log_info(FLEET_MOD, "config reloaded", LOG_S("file", path),
           LOG_U("pools", next->npools));
  kick(f);
  return 0;
}

static void stop_enter(struct fleet *f, enum stop_phase phase);

static void stop_step_done(struct fleet *f)
{
  if (f->stop_waiting == 0 || --f->stop_waiting > 0)
    return;
  stop_enter(f, (enum stop_phase)(f->stop_phase + 1));
}

static void handle_closed_cb(uv_handle_t *h)
{
  stop_step_done(h->data);
}

static void part_closed_cb(void *arg)
{
  stop_step_done(arg);
}

/* Starts closing every part that exists; each one counts until it is
 * closed. A phase with nothing to wait for moves on at once. */
static void stop_parts(struct fleet *f)
{
  f->stop_waiting = 1; /* this function's own share */
  /* Recovery first: it starts no call once closing, so the client's close
   * cancelling its queued ones ends its run quietly. */
  if (f->recovery != NULL) {
    f->stop_waiting++;
    recovery_close(f->recovery, part_closed_cb, f);
  }
  if (f->public_server != NULL) {
    f->stop_waiting++;
    http_server_stop(f->public_server, part_closed_cb, f);
  }
  if (f->admin_server != NULL) {
    f->stop_waiting++;
    http_server_stop(f->admin_server, part_closed_cb, f);
  }
  /* With leader election the runners go on for the next leader, which
   * adopts them; alone, a stop stops them. */
  if (f->backend != NULL) {
    f->stop_waiting++;
    f->backend->ops->close(
        f->backend, f->leader != NULL ? BACKEND_CLOSE_KEEP : BACKEND_CLOSE_STOP,
        part_closed_cb, f);
  }
  if (f->gh != NULL) {
    f->stop_waiting++;
    gh_close(f->gh, part_closed_cb, f);
  }
  if (f->lease_kube != NULL) {
    f->stop_waiting++;
    kube_close(f->lease_kube, part_closed_cb, f);
  }
  f->stop_waiting++;
  runner_ctl_close(f->ctl, part_closed_cb, f);
  stop_step_done(f);
}

static void stop_enter(struct fleet *f, enum stop_phase phase)
{
  f->stop_phase = phase;
  switch (phase) {
  case STOP_NONE:
  case STOP_LEASE:
    /* The Lease goes first, cleared, so the standby leads at its next
     * try while this replica winds down fenced. */
    f->stop_waiting = 1;
    if (f->leader != NULL)
      leader_close(f->leader, part_closed_cb, f);
    else
      stop_step_done(f);
    break;
  case STOP_DEREGISTER:
    f->stop_waiting = 1;
    /* Dev servers keep running for the next runfleetd: only handles
     * close, before the journal does, so every change is written. */
    if (f->dev != NULL) {
      f->stop_waiting++;
      devfleet_close(f->dev, part_closed_cb, f);
    }
    runner_ctl_stop(f->ctl, RUNNER_CTL_STOP_DEADLINE_MS, part_closed_cb, f);
    break;
  case STOP_JOURNAL:
    f->stop_waiting = 1;
    if (f->journal != NULL)
      journal_close(f->journal, part_closed_cb, f);
    else
      stop_step_done(f);
    break;
  case STOP_PARTS:
    stop_parts(f);
    break;
  case STOP_HTTP:
    f->stop_waiting = 1;
    if (f->http != NULL)
      http_client_close(f->http, part_closed_cb, f);
    else
      stop_step_done(f);
    break;
  case STOP_HANDLES:
    f->stop_waiting = 1;
    if (f->timers_open) {
      f->stop_waiting = 2;
      f->timers_open = 0;
      uv_close((uv_handle_t *)&f->tick, handle_closed_cb);
      uv_close((uv_handle_t *)&f->kick, handle_closed_cb);
    } else {
      stop_step_done(f);
    }
    break;
  case STOP_DONE:
    log_info(FLEET_MOD, "stopped", LOG_NONE);
    if (f->stop_cb != NULL)
      f->stop_cb(f->stop_arg);
    break;
  }
}

void fleet_stop(struct fleet *f, void (*done_cb)(void *arg), void *arg)
{
  if (f->stopping)
    return;
  f->stopping = 1;
  f->stop_cb = done_cb;
  f->stop_arg = arg;
  log_info(FLEET_MOD, "stopping",
           LOG_U("runners", f->sched != NULL ? sched_nrunners(f->sched) : 0));
  if (f->timers_open) {
    uv_timer_stop(&f->tick);
    uv_timer_stop(&f->kick);
  }
  stop_enter(f, STOP_LEASE);
}

void fleet_destroy(struct fleet *f)
{
  if (f == NULL)
    return;
  if (f->public_server != NULL)
    http_server_destroy(f->public_server);
  if (f->admin_server != NULL)
    http_server_destroy(f->admin_server);
  if (f->backend != NULL)
    f->backend->ops->destroy(f->backend);
  if (f->gh != NULL)
    gh_destroy(f->gh);
  if (f->http != NULL)
    http_client_destroy(f->http);
  leader_destroy(f->leader);
  if (f->lease_kube != NULL)
    kube_destroy(f->lease_kube);
  runner_ctl_destroy(f->ctl);
  devfleet_destroy(f->dev);
  sched_destroy(f->sched);
  capacity_destroy(f->capacity);
  webhook_destroy(f->webhook);
  /* intake answers what still waits, recovery's found jobs too. */
  intake_destroy(f->intake);
  journal_destroy(f->journal);
  recovery_destroy(f->recovery);
  if (f->store_is_dir)
    recovery_dir_store_free(&f->store);
  hook_reports_destroy(f->hooks);
  metrics_destroy(f->metrics);
  if (f->cfg != NULL) {
    cfg_free(f->cfg);
    free(f->cfg);
  }
  free(f);
}
