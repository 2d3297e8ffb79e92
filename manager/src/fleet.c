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
#include "backend.h"
#include "backend_local.h"
#include "fs.h"
#include "github.h"
#include "hook_report.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "rand.h"
#include "router.h"
#include "scheduler.h"
#include "secret.h"
#include "webhook.h"

#define FLEET_MOD "fleet"
#define SECRET_MAX 4096
#define STOP_DEREGISTER_MS 5000 /* how long shutdown waits for GitHub */

/* Shutdown runs in phases; each part that finishes calls stop_step_done,
 * and the last one of a phase starts the next. */
enum stop_phase {
  STOP_NONE,
  STOP_DEREGISTER, /* idle runners' registrations deleted at GitHub */
  STOP_PARTS,      /* listener, backend (runners) and GitHub client */
  STOP_HTTP,       /* the HTTP client under the GitHub client */
  STOP_HANDLES,    /* our own timers */
  STOP_DONE
};

/* Resources of runners whose JIT config is still on its way: the backend
 * has not placed them yet, so fits() must count them itself. */
struct reservation {
  unsigned gpus, cpus;
  uint64_t memory;
};

/* One runner start in flight (JIT config requested). */
struct start_req {
  struct fleet *fleet;
  char name[SCHED_NAME_MAX];
  struct reservation res;
};

struct retire_req {
  struct fleet *fleet;
  char name[SCHED_NAME_MAX];
  int stopping; /* part of shutdown */
};

struct fleet {
  uv_loop_t *loop;
  struct config *cfg;
  struct metrics *metrics;
  struct http_server *server;
  struct http_client *http;
  struct gh_client *gh;
  struct backend *backend;
  struct scheduler *sched;
  struct webhook *webhook;
  struct hook_reports *hooks;
  char runner_url[128]; /* how runners reach this daemon's API */
  char cache_dir[512];  /* node-local git mirrors for runfleet-hook */
  int tag_stable;       /* the fleet tag survives restarts: sweep at start */
  uv_timer_t tick;      /* periodic reconcile */
  uv_timer_t kick;      /* reconcile soon after an event, coalesced */
  uv_timer_t deadline;  /* bounds the shutdown's GitHub clean-up */
  int kick_pending;
  struct reservation pending;
  int stopping;
  unsigned starts_in_flight; /* JIT config requests not answered yet */
  int stop_phase;            /* enum stop_phase */
  unsigned stop_waiting;     /* parts of the current phase still running */
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
  st->metrics = f->metrics;
  st->now_ms = now_ms(f);
  st->ready = !f->stopping;
}

static void kick(struct fleet *f);

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

static void route_webhook(void *ctx, const struct http_request *req,
                          struct http_response *resp)
{
  struct fleet *f = ctx;
  struct webhook_delivery d;
  char msg[256];
  int status;

  d.event = http_request_header(req, "X-GitHub-Event");
  d.id = http_request_header(req, "X-GitHub-Delivery");
  d.signature = http_request_header(req, "X-Hub-Signature-256");
  d.body = req->body;
  d.body_len = req->body_len;
  status =
      webhook_handle(f->webhook, f->sched, &d, now_ms(f), msg, sizeof(msg));
  answer_text(resp, status, msg, sizeof(msg));
}

static void route_hooks(void *ctx, const struct http_request *req,
                        struct http_response *resp)
{
  struct fleet *f = ctx;
  char msg[256];
  int status;

  status = hook_handle(f->hooks, f->sched, f->backend,
                       req->path + strlen("/api/v1/hooks/"),
                       http_request_header(req, "Authorization"), req->body,
                       req->body_len, msg, sizeof(msg));
  answer_text(resp, status, msg, sizeof(msg));
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
API_ROUTE(metrics)
API_ROUTE(status_page)
API_ROUTE(pools)
API_ROUTE(jobs)
API_ROUTE(runners)
API_ROUTE(not_found)
#undef API_ROUTE

#define BOTH (ROUTER_PUBLIC | ROUTER_ADMIN)

/* Every route of runfleetd. Both listeners are one today (`listen`); the
 * split into a public and an admin listener keeps this table and changes
 * the masks: only /webhook and /healthz stay public. */
static const struct route routes[] = {
    {"POST", "/webhook", BOTH, route_webhook},
    {"GET", "/healthz", BOTH, route_healthz},
    {"GET", "/readyz", BOTH, route_readyz},
    {"GET", "/metrics", BOTH, route_metrics},
    {"GET", "/", BOTH, route_status_page},
    {"POST", "/api/v1/hooks/", BOTH, route_hooks},
    {"GET", "/api/v1/pools", BOTH, route_pools},
    {"GET", "/api/v1/jobs", BOTH, route_jobs},
    {"GET", "/api/v1/runners", BOTH, route_runners},
    {"GET", "/api/v1/", BOTH, route_not_found},
};

#undef BOTH

static void handle_request(void *ctx, const struct http_request *req,
                           struct http_response *resp)
{
  router_dispatch(routes, sizeof(routes) / sizeof(routes[0]), ROUTER_PUBLIC,
                  ctx, req, resp);
}

static void on_job(void *arg, const char *action, const struct sched_job *job)
{
  struct fleet *f = arg;

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

/* ---- runner start: JIT config, then the backend ---- */

static void reservation_add(struct reservation *total,
                            const struct reservation *r, int sign)
{
  if (sign > 0) {
    total->gpus += r->gpus;
    total->cpus += r->cpus;
    total->memory += r->memory;
  } else {
    total->gpus -= r->gpus;
    total->cpus -= r->cpus;
    total->memory -= r->memory;
  }
}

static int fleet_fits(void *ctx, const struct cfg_pool *pool)
{
  struct fleet *f = ctx;
  struct backend_capacity cap;
  unsigned gpus_free, cpus_free;

  f->backend->ops->capacity(f->backend, &cap);
  /* A held GPU that turned unhealthy counts in both used and unhealthy:
   * clamp instead of wrapping (that undercounts by one until it is freed,
   * which errs on the safe side). */
  gpus_free =
      cap.gpus_used + cap.gpus_unhealthy + f->pending.gpus < cap.gpus_total
          ? cap.gpus_total - cap.gpus_used - cap.gpus_unhealthy -
                f->pending.gpus
          : 0;
  cpus_free = cap.cpus_used + f->pending.cpus < cap.cpus_total
                  ? cap.cpus_total - cap.cpus_used - f->pending.cpus
                  : 0;
  if (pool->gpus > gpus_free || pool->cpus > cpus_free)
    return 0;
  if (pool->memory_bytes > 0 && cap.memory_total > 0 &&
      cap.memory_used + f->pending.memory + pool->memory_bytes >
          cap.memory_total)
    return 0;
  return 1;
}

static void delete_done_cb(void *arg, int status, int http_status)
{
  char *name = arg;

  if (status != 0)
    log_warn(FLEET_MOD, "deregistration failed", "runner=%s http_status=%d",
             name, http_status);
  free(name);
}

/* Removes a registration that will never run a job (the runner failed to
 * start or died before taking one), so GitHub keeps no offline leftovers. */
static void deregister_leftover(struct fleet *f, const char *name,
                                int64_t gh_id)
{
  char *copy;

  if (gh_id == 0)
    return;
  copy = strdup(name);
  if (copy == NULL || gh_delete_runner(f->gh, gh_id, delete_done_cb, copy) != 0)
    free(copy);
}

struct lookup_req {
  struct fleet *fleet;
  char name[SCHED_NAME_MAX];
};

static void lookup_cb(void *arg, int status, const struct gh_runner *runners,
                      size_t n)
{
  struct lookup_req *req = arg;
  size_t i, found = 0;

  if (status == 0) {
    for (i = 0; i < n; i++)
      if (strcmp(runners[i].name, req->name) == 0) {
        deregister_leftover(req->fleet, req->name, runners[i].id);
        found++;
      }
    log_info(FLEET_MOD, "looked up a runner whose JIT result was unknown",
             "runner=%s registered=%zu", req->name, found);
  } else if (status != -ECANCELED) {
    log_warn(FLEET_MOD, "cannot look up a runner whose JIT result was unknown",
             "runner=%s error=%d", req->name, status);
  }
  free(req);
}

/* A JIT request that may have registered the runner (no answer, a 5xx, or
 * a 409 for its name) is not sent again: the runner is looked up by name
 * and its registration, if there is one, deleted, since its JIT config
 * never arrived. The scheduler drops the runner without a failure. */
static void jit_unknown(struct fleet *f, const char *name, int http_status)
{
  struct lookup_req *req = calloc(1, sizeof(*req));

  log_warn(FLEET_MOD, "JIT result unknown; looking the runner up",
           "runner=%s http_status=%d", name, http_status);
  if (req != NULL) {
    req->fleet = f;
    snprintf(req->name, sizeof(req->name), "%s", name);
    if (gh_find_runner(f->gh, name, lookup_cb, req) != 0) {
      log_warn(FLEET_MOD, "cannot look up the runner", "runner=%s", name);
      free(req);
    }
  }
  sched_runner_dropped(f->sched, name, now_ms(f));
}

/* What runfleet-hook needs inside the runner (docs/HOOKS.md). */
struct runner_env {
  char url[160];
  char token[32 + HOOK_TOKEN_SIZE];
  char gpus[48];
  char cache[560];
  char *ptrs[5];
};

static int hook_env(struct fleet *f, const char *name,
                    const struct cfg_pool *pool, struct runner_env *env)
{
  char token[HOOK_TOKEN_SIZE];

  if (hook_token(f->hooks, name, token, sizeof(token)) != 0)
    return -1;
  snprintf(env->url, sizeof(env->url), "RUNFLEET_URL=%s", f->runner_url);
  snprintf(env->token, sizeof(env->token), "RUNFLEET_RUNNER_TOKEN=%s", token);
  OPENSSL_cleanse(token, sizeof(token));
  snprintf(env->gpus, sizeof(env->gpus), "RUNFLEET_EXPECTED_GPUS=%u",
           pool->gpus);
  snprintf(env->cache, sizeof(env->cache), "RUNFLEET_CACHE_DIR=%s",
           f->cache_dir);
  env->ptrs[0] = env->url;
  env->ptrs[1] = env->token;
  env->ptrs[2] = env->gpus;
  env->ptrs[3] = env->cache;
  env->ptrs[4] = NULL;
  return 0;
}

static void retire_cb(void *arg, int status, int http_status);
static void stop_step_done(struct fleet *f);

/* A JIT config came back while stopping: the runner will not start, and
 * its registration goes; shutdown waits for that while it deregisters. */
static void jit_during_stop(struct fleet *f, const char *name, int64_t gh_id)
{
  int counted = f->stop_phase == STOP_DEREGISTER;
  struct retire_req *req;

  if (sched_runner_find(f->sched, name) != NULL)
    sched_runner_exited(f->sched, name, -1, now_ms(f));
  if (gh_id == 0 || !counted) {
    deregister_leftover(f, name, gh_id);
    if (counted)
      stop_step_done(f);
    return;
  }
  req = calloc(1, sizeof(*req));
  if (req != NULL) {
    req->fleet = f;
    req->stopping = 1;
    snprintf(req->name, sizeof(req->name), "%s", name);
    if (gh_delete_runner(f->gh, gh_id, retire_cb, req) == 0)
      return; /* retire_cb ends this step */
    free(req);
  }
  stop_step_done(f);
}

static void jit_cb(void *arg, int status, int http_status, int64_t runner_id,
                   const char *encoded)
{
  struct start_req *req = arg;
  struct fleet *f = req->fleet;
  const struct sched_runner *r;
  struct backend_runner_spec spec;
  struct backend_runner_info info;
  struct runner_env env;
  int rc;

  reservation_add(&f->pending, &req->res, -1);
  f->starts_in_flight--;
  if (f->stopping) {
    jit_during_stop(f, req->name, status == 0 ? runner_id : 0);
    goto out;
  }
  /* Checked first: a runner the scheduler let go while its JIT request
   * was out may still have been registered. */
  if (status == GH_MAYBE_APPLIED || http_status == 409) {
    jit_unknown(f, req->name, http_status);
    goto out;
  }
  r = sched_runner_find(f->sched, req->name);
  if (r == NULL) {
    deregister_leftover(f, req->name, status == 0 ? runner_id : 0);
    goto out;
  }
  if (status != 0 || r->pool < 0) {
    if (status != 0)
      log_warn(FLEET_MOD, "JIT config failed", "runner=%s http_status=%d",
               req->name, http_status);
    deregister_leftover(f, req->name, status == 0 ? runner_id : 0);
    sched_runner_exited(f->sched, req->name, -1, now_ms(f));
    goto out;
  }
  memset(&spec, 0, sizeof(spec));
  memset(&info, 0, sizeof(info));
  spec.name = req->name;
  spec.pool = sched_pool(f->sched, (size_t)r->pool);
  spec.jit_config = encoded;
  if (hook_env(f, req->name, spec.pool, &env) != 0) {
    deregister_leftover(f, req->name, runner_id);
    sched_runner_exited(f->sched, req->name, -1, now_ms(f));
    goto out;
  }
  spec.env = (const char *const *)env.ptrs;
  rc = f->backend->ops->start(f->backend, &spec, &info);
  OPENSSL_cleanse(env.token, sizeof(env.token));
  if (rc == -ENOSPC) {
    /* Capacity changed between the decision and the start (a GPU failed
     * its health check): not the pool's fault, so no backoff. */
    log_info(FLEET_MOD, "no capacity at start; runner dropped", "runner=%s",
             req->name);
    deregister_leftover(f, req->name, runner_id);
    sched_runner_dropped(f->sched, req->name, now_ms(f));
    goto out;
  }
  if (rc != 0) {
    log_warn(FLEET_MOD, "backend start failed", "runner=%s error=%s", req->name,
             strerror(-rc));
    deregister_leftover(f, req->name, runner_id);
    sched_runner_exited(f->sched, req->name, -1, now_ms(f));
    goto out;
  }
  log_info(FLEET_MOD, "runner started", "runner=%s pool=%s gpus=%zu pid=%ld",
           req->name, spec.pool->name, info.ngpus, info.pid);
  sched_runner_running(f->sched, req->name, runner_id, info.gpus, info.ngpus,
                       now_ms(f));
out:
  free(req);
  kick(f);
}

static int fleet_start_runner(void *ctx, struct sched_runner *r)
{
  struct fleet *f = ctx;
  const struct cfg_pool *pool = sched_pool(f->sched, (size_t)r->pool);
  struct start_req *req;
  int rc;

  if (f->stopping)
    return -ECANCELED;
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return -ENOMEM;
  req->fleet = f;
  snprintf(req->name, sizeof(req->name), "%s", r->name);
  req->res.gpus = pool->gpus;
  req->res.cpus = pool->cpus;
  req->res.memory = pool->memory_bytes;
  rc = gh_jit_config(f->gh, r->name, pool->labels, pool->nlabels, jit_cb, req);
  if (rc != 0) {
    free(req);
    return rc;
  }
  reservation_add(&f->pending, &req->res, 1);
  f->starts_in_flight++;
  return 0;
}

/* ---- runner retirement: GitHub first, then the process ---- */

static void stop_step_done(struct fleet *f);

static void retire_cb(void *arg, int status, int http_status)
{
  struct retire_req *req = arg;
  struct fleet *f = req->fleet;
  const struct sched_runner *r = sched_runner_find(f->sched, req->name);

  if (r != NULL && !req->stopping) {
    if (status == 0) {
      if (f->backend->ops->stop(f->backend, req->name) != 0)
        sched_runner_exited(f->sched, req->name, -1, now_ms(f));
    } else {
      /* 422: GitHub gave it a job meanwhile; anything else: try later. */
      log_info(FLEET_MOD, "runner kept", "runner=%s http_status=%d", req->name,
               http_status);
      sched_runner_keep(f->sched, req->name, now_ms(f));
    }
  }
  /* Only while shutdown still waits for these (not after its deadline). */
  if (req->stopping && f->stop_phase == STOP_DEREGISTER)
    stop_step_done(f);
  free(req);
  kick(f);
}

static int fleet_retire_runner(void *ctx, struct sched_runner *r)
{
  struct fleet *f = ctx;
  struct retire_req *req = calloc(1, sizeof(*req));
  int rc;

  if (req == NULL)
    return -ENOMEM;
  req->fleet = f;
  snprintf(req->name, sizeof(req->name), "%s", r->name);
  rc = gh_delete_runner(f->gh, r->gh_id, retire_cb, req);
  if (rc != 0) {
    log_warn(FLEET_MOD, "cannot deregister now", "runner=%s error=%d", r->name,
             rc);
    free(req);
  }
  return rc;
}

static void runner_exit_cb(void *ctx, const char *name, int status)
{
  struct fleet *f = ctx;
  const struct sched_runner *r = sched_runner_find(f->sched, name);

  log_info(FLEET_MOD, "runner exited", "runner=%s status=%d", name, status);
  /* A clean exit means the ephemeral runner ran a job (GitHub removes it
   * itself); any other exit before a job leaves a registration behind. */
  if (r != NULL && !r->took_job && r->state != SCHED_RUNNER_STOPPING &&
      status != 0 && !f->stopping)
    deregister_leftover(f, name, r->gh_id);
  sched_runner_exited(f->sched, name, status, now_ms(f));
  kick(f);
}

/* ---- reconcile timers ---- */

static void reconcile(struct fleet *f)
{
  if (f->stopping)
    return;
  sched_reconcile(f->sched, now_ms(f));
}

static void tick_cb(uv_timer_t *t)
{
  reconcile(t->data);
}

static void kick_cb(uv_timer_t *t)
{
  struct fleet *f = t->data;

  f->kick_pending = 0;
  reconcile(f);
}

static void kick(struct fleet *f)
{
  if (f->kick_pending || f->stopping)
    return;
  f->kick_pending = 1;
  if (uv_timer_start(&f->kick, kick_cb, 0, 0) != 0)
    f->kick_pending = 0;
}

/* ---- leftovers of an earlier run ---- */

/* The fleet tag names this state_dir's runners across restarts: read from
 * <state_dir>/fleet-id, created once. Without it, runners of an earlier run
 * cannot be told from another fleet's, and nothing is swept. */
static void fleet_tag_load(struct fleet *f)
{
  char path[600], tag[17] = "";
  unsigned char raw[4];
  FILE *fp;
  int ok = 0;

  snprintf(path, sizeof(path), "%s/fleet-id", f->cfg->state_dir);
  fp = fopen(path, "r");
  if (fp != NULL) {
    ok = fscanf(fp, "%8[0-9a-f]", tag) == 1 && strlen(tag) == 8;
    fclose(fp);
  }
  if (!ok && rand_bytes(raw, sizeof(raw)) == 0) {
    snprintf(tag, sizeof(tag), "%02x%02x%02x%02x", raw[0], raw[1], raw[2],
             raw[3]);
    fp = fs_mkdir_p(f->cfg->state_dir, 0755) == 0 ? fopen(path, "w") : NULL;
    ok = fp != NULL && fprintf(fp, "%s\n", tag) > 0;
    if (fp != NULL && fclose(fp) != 0)
      ok = 0;
    if (!ok)
      log_warn(FLEET_MOD,
               "cannot keep the fleet id; leftovers of a crash "
               "will not be swept",
               "file=%s error=\"%s\"", path, strerror(errno));
  }
  if (tag[0] == '\0')
    snprintf(tag, sizeof(tag), "%08x", (unsigned)getpid());
  f->tag_stable = ok;
  sched_set_tag(f->sched, tag);
}

/* Deletes this fleet's registrations that no runner of this run owns: the
 * runners of an earlier run, which the backend stopped at start. Busy ones
 * are left to GitHub (they go after their job). */
static void sweep_cb(void *arg, int status, const struct gh_runner *runners,
                     size_t n)
{
  struct fleet *f = arg;
  size_t i, swept = 0;

  if (status != 0) {
    if (status != -ECANCELED)
      log_warn(FLEET_MOD, "cannot list runners to sweep leftovers", "error=%d",
               status);
    return;
  }
  for (i = 0; i < n; i++) {
    const struct gh_runner *r = &runners[i];
    char *name;

    if (r->busy || !sched_name_is_ours(f->sched, r->name) ||
        sched_runner_find(f->sched, r->name) != NULL)
      continue;
    name = strdup(r->name);
    if (name == NULL || gh_delete_runner(f->gh, r->id, delete_done_cb, name)) {
      free(name);
      continue;
    }
    swept++;
  }
  log_info(FLEET_MOD, "swept registrations of an earlier run", "count=%zu",
           swept);
}

/* ---- lifecycle ---- */

static const struct sched_ops fleet_sched_ops = {.start = fleet_start_runner,
                                                 .retire = fleet_retire_runner,
                                                 .fits = fleet_fits};

static void count_down_cb(void *arg)
{
  (*(int *)arg)--;
}

/* Startup failed part-way: the parts that already own loop handles are
 * closed, and the loop run until they are, so they can be freed. */
static void fleet_close_parts(struct fleet *f)
{
  int pending = 0;

  if (f->backend != NULL) {
    pending++;
    f->backend->ops->close(f->backend, count_down_cb, &pending);
  }
  if (f->gh != NULL) {
    pending++;
    gh_close(f->gh, count_down_cb, &pending);
  }
  while (pending > 0 && uv_run(f->loop, UV_RUN_ONCE) != 0)
    ;
  if (f->http != NULL) {
    pending++;
    http_client_close(f->http, count_down_cb, &pending);
  }
  while (pending > 0 && uv_run(f->loop, UV_RUN_ONCE) != 0)
    ;
}

struct fleet *fleet_new(uv_loop_t *loop, struct config *cfg)
{
  struct fleet *f = calloc(1, sizeof(*f));
  struct http_server_limits limits;
  char *secret = NULL;
  size_t secret_len = 0;
  int rc;

  if (f == NULL)
    return NULL;
  f->loop = loop;
  f->cfg = cfg;
  rc = secret_read_file(cfg->github.webhook_secret_file, SECRET_MAX, &secret,
                        &secret_len);
  if (rc != 0) {
    log_error(FLEET_MOD, "cannot read webhook secret", "file=%s error=%s",
              cfg->github.webhook_secret_file, strerror(-rc));
    goto fail;
  }
  f->metrics = metrics_new();
  if (f->metrics == NULL || api_declare_metrics(f->metrics) != 0)
    goto fail;
  f->webhook =
      webhook_new((const unsigned char *)secret, secret_len, f->metrics);
  secret_wipe_free(secret, secret_len);
  secret = NULL;
  if (f->webhook == NULL)
    goto fail;
  webhook_on_job(f->webhook, on_job, f);
  f->hooks = hook_reports_new(f->metrics);
  if (f->hooks == NULL)
    goto fail;
  snprintf(f->cache_dir, sizeof(f->cache_dir), "%s/cache/git", cfg->state_dir);
  f->http = http_client_new(loop);
  if (f->http == NULL)
    goto fail;
  f->gh = gh_new(loop, f->http, &cfg->github, f->metrics);
  if (f->gh == NULL)
    goto fail;
  if (cfg->backend != CFG_BACKEND_LOCAL) {
    log_error(FLEET_MOD, "backend not available in this build",
              "backend=kubernetes");
    goto fail;
  }
  f->backend = backend_local_new(loop, cfg, runner_exit_cb, f);
  if (f->backend == NULL)
    goto fail;
  f->sched = sched_new(cfg, &fleet_sched_ops, f);
  if (f->sched == NULL)
    goto fail;
  fleet_tag_load(f);
  limits.max_header_bytes = cfg->limits.max_header_bytes;
  limits.max_body_bytes = cfg->limits.max_body_bytes;
  limits.max_connections = cfg->limits.max_connections;
  limits.read_timeout_ms = cfg->limits.read_timeout_ms;
  limits.idle_timeout_ms = cfg->limits.idle_timeout_ms;
  f->server = http_server_new(loop, &limits, handle_request, f);
  if (f->server == NULL)
    goto fail;
  /* uv_timer_init only records the handle in the loop; it cannot fail. */
  (void)uv_timer_init(loop, &f->tick);
  (void)uv_timer_init(loop, &f->kick);
  (void)uv_timer_init(loop, &f->deadline);
  f->tick.data = f->kick.data = f->deadline.data = f;
  return f;
fail:
  secret_wipe_free(secret, secret_len);
  fleet_close_parts(f);
  fleet_destroy(f);
  return NULL;
}

/* Runners on this machine reach the API on loopback when the daemon
 * listens on every address. */
static void runner_url_set(struct fleet *f)
{
  const char *listen = f->cfg->listen;
  const char *colon = strrchr(listen, ':');
  int port = http_server_port(f->server);
  size_t host_len = colon != NULL ? (size_t)(colon - listen) : 0;
  char host[80];

  snprintf(host, sizeof(host), "%.*s", (int)host_len, listen);
  if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
    snprintf(host, sizeof(host), "127.0.0.1");
  else if (strcmp(host, "[::]") == 0)
    snprintf(host, sizeof(host), "[::1]");
  snprintf(f->runner_url, sizeof(f->runner_url), "http://%s:%d", host, port);
}

int fleet_start(struct fleet *f)
{
  int rc = http_server_listen(f->server, f->cfg->listen);

  if (rc != 0) {
    log_error(FLEET_MOD, "cannot listen", "address=%s error=%s", f->cfg->listen,
              uv_strerror(rc));
    return rc;
  }
  runner_url_set(f);
  log_info(FLEET_MOD, "listening", "address=%s port=%d pools=%zu",
           f->cfg->listen, http_server_port(f->server), f->cfg->npools);
  if (f->tag_stable && gh_list_runners(f->gh, sweep_cb, f) != 0)
    log_warn(FLEET_MOD, "cannot sweep leftovers of an earlier run", NULL);
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
  rc = cfg_load(next, path, errs, sizeof(errs));
  if (rc != 0) {
    log_error(FLEET_MOD, "reload rejected, keeping the running config",
              "file=%s problems=%d", path, rc);
    fprintf(stderr, "%s", errs);
    free(next);
    return -EINVAL;
  }
  rc = secret_read_file(next->github.webhook_secret_file, SECRET_MAX, &secret,
                        &secret_len);
  if (rc != 0) {
    log_error(FLEET_MOD, "reload rejected: cannot read webhook secret",
              "file=%s error=%s", next->github.webhook_secret_file,
              strerror(-rc));
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
    log_warn(FLEET_MOD, "github settings change on restart only", NULL);
  if (!same_str(old->listen, next->listen) || old->backend != next->backend ||
      memcmp(&old->limits, &next->limits, sizeof(old->limits)) != 0 ||
      !same_str(old->local.work_root, next->local.work_root) ||
      old->local.cpu_slots != next->local.cpu_slots ||
      old->local.ngpus != next->local.ngpus)
    log_warn(FLEET_MOD,
             "listen, limits and backend settings change on restart only",
             NULL);
  if (next->reconcile_interval_ms != old->reconcile_interval_ms &&
      uv_timer_start(&f->tick, tick_cb, next->reconcile_interval_ms,
                     next->reconcile_interval_ms) != 0)
    log_warn(FLEET_MOD, "cannot re-arm the reconcile timer", NULL);
  {
    struct cfg_github keep = old->github;
    old->github = next->github;
    next->github = keep;
  }
  gh_set_cfg(f->gh, &next->github);
  sched_set_config(f->sched, next);
  log_setup((enum log_level)next->log_level, next->log_format == CFG_LOG_JSON);
  f->cfg = next;
  cfg_free(old);
  free(old);
  log_info(FLEET_MOD, "config reloaded", "file=%s pools=%zu", path,
           next->npools);
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

static void deadline_cb(uv_timer_t *t)
{
  struct fleet *f = t->data;

  log_warn(FLEET_MOD, "GitHub clean-up timed out during shutdown", NULL);
  /* Requests still out are aborted by gh_close in the next phase. */
  f->stop_waiting = 0;
  stop_enter(f, STOP_PARTS);
}

static void stop_deregister(struct fleet *f)
{
  size_t i;

  /* Idle runners will never get a job now: remove their registrations so
   * GitHub does not hand them work that would be lost; runners whose JIT
   * config is still on its way are waited for and removed too. */
  f->stop_waiting = 1 + f->starts_in_flight;
  for (i = 0; i < sched_nrunners(f->sched); i++) {
    const struct sched_runner *r = sched_runner_at(f->sched, i);
    struct retire_req *req;

    if (r->took_job || r->gh_id == 0)
      continue;
    req = calloc(1, sizeof(*req));
    if (req == NULL)
      continue;
    req->fleet = f;
    req->stopping = 1;
    snprintf(req->name, sizeof(req->name), "%s", r->name);
    if (gh_delete_runner(f->gh, r->gh_id, retire_cb, req) != 0) {
      free(req);
      continue;
    }
    f->stop_waiting++;
  }
  if (uv_timer_start(&f->deadline, deadline_cb, STOP_DEREGISTER_MS, 0) != 0)
    log_warn(FLEET_MOD, "no shutdown deadline timer", NULL);
  stop_step_done(f);
}

static void stop_enter(struct fleet *f, enum stop_phase phase)
{
  f->stop_phase = phase;
  switch (phase) {
  case STOP_NONE:
  case STOP_DEREGISTER:
    stop_deregister(f);
    break;
  case STOP_PARTS:
    uv_timer_stop(&f->deadline);
    f->stop_waiting = 3;
    http_server_stop(f->server, part_closed_cb, f);
    f->backend->ops->close(f->backend, part_closed_cb, f);
    gh_close(f->gh, part_closed_cb, f);
    break;
  case STOP_HTTP:
    f->stop_waiting = 1;
    http_client_close(f->http, part_closed_cb, f);
    break;
  case STOP_HANDLES:
    f->stop_waiting = 3;
    uv_close((uv_handle_t *)&f->tick, handle_closed_cb);
    uv_close((uv_handle_t *)&f->kick, handle_closed_cb);
    uv_close((uv_handle_t *)&f->deadline, handle_closed_cb);
    break;
  case STOP_DONE:
    log_info(FLEET_MOD, "stopped", NULL);
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
  log_info(FLEET_MOD, "stopping", "runners=%zu", sched_nrunners(f->sched));
  uv_timer_stop(&f->tick);
  uv_timer_stop(&f->kick);
  stop_enter(f, STOP_DEREGISTER);
}

void fleet_destroy(struct fleet *f)
{
  if (f == NULL)
    return;
  if (f->server != NULL)
    http_server_destroy(f->server);
  if (f->backend != NULL)
    f->backend->ops->destroy(f->backend);
  if (f->gh != NULL)
    gh_destroy(f->gh);
  if (f->http != NULL)
    http_client_destroy(f->http);
  sched_destroy(f->sched);
  webhook_destroy(f->webhook);
  hook_reports_destroy(f->hooks);
  metrics_destroy(f->metrics);
  if (f->cfg != NULL) {
    cfg_free(f->cfg);
    free(f->cfg);
  }
  free(f);
}
