#include "runner_ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "fs.h"
#include "journal.h"
#include "log.h"
#include "rand.h"

#define RC_MOD "fleet"
#define RC_LIST_MAX 1024 /* backend items looked at when reconciling */

/* One runner start past its JIT request: the registration id is kept
 * until the backend reports the runner running (or gone). */
struct started {
  struct started *next;
  char name[SCHED_NAME_MAX];
  int64_t gh_id;
};

/* A JIT request in flight. */
struct start_req {
  struct runner_ctl *rc;
  char name[SCHED_NAME_MAX];
};

struct retire_req {
  struct runner_ctl *rc;
  char name[SCHED_NAME_MAX];
  int stopping; /* part of shutdown */
};

struct lookup_req {
  struct runner_ctl *rc;
  char name[SCHED_NAME_MAX];
};

/* A runner the journal says an earlier run had, until reconciliation with
 * the backend decides: adopted if the backend still runs it, else gone. */
struct journaled {
  struct journaled *next;
  struct journal_runner r;
};

struct runner_ctl {
  uv_loop_t *loop;
  int (*may_act)(void *arg); /* the leader fence; NULL: always */
  void *may_act_arg;
  struct journal *journal; /* NULL: runners are not journaled */
  struct journaled *journaled;
  struct gh_client *gh;
  struct capacity *cap;
  struct hook_reports *hooks;
  struct scheduler *sched;
  struct backend *backend;
  void (*kick)(void *arg);
  void *kick_arg;
  char runner_url[128];
  char cache_dir[512];
  struct started *started;
  unsigned starts_in_flight;
  uv_timer_t deadline; /* bounds the stop's GitHub clean-up */
  int handles_open;
  int stopping;
  int sweep_pending;     /* sweep GitHub once the backend has listed */
  int stop_pending;      /* runner_ctl_stop waits for its parts */
  unsigned stop_waiting; /* parts of the stop still running */
  void (*stop_cb)(void *arg);
  void *stop_arg;
  void (*close_cb)(void *arg);
  void *close_arg;
};

static uint64_t now_ms(const struct runner_ctl *rc)
{
  return uv_now(rc->loop);
}

static void kick(struct runner_ctl *rc)
{
  if (rc->kick != NULL && !rc->stopping)
    rc->kick(rc->kick_arg);
}

struct runner_ctl *runner_ctl_new(uv_loop_t *loop, struct capacity *cap,
                                  struct hook_reports *hooks)
{
  struct runner_ctl *rc = calloc(1, sizeof(*rc));

  if (rc == NULL)
    return NULL;
  rc->loop = loop;
  rc->cap = cap;
  rc->hooks = hooks;
  return rc;
}

void runner_ctl_attach(struct runner_ctl *rc, struct gh_client *gh,
                       struct scheduler *sched, struct backend *backend)
{
  rc->gh = gh;
  rc->sched = sched;
  rc->backend = backend;
}

void runner_ctl_on_kick(struct runner_ctl *rc, void (*kick_cb)(void *arg),
                        void *arg)
{
  rc->kick = kick_cb;
  rc->kick_arg = arg;
}

void runner_ctl_set_fence(struct runner_ctl *rc, int (*may_act)(void *arg),
                          void *arg)
{
  rc->may_act = may_act;
  rc->may_act_arg = arg;
}

void runner_ctl_set_urls(struct runner_ctl *rc, const char *runner_url,
                         const char *cache_dir)
{
  snprintf(rc->runner_url, sizeof(rc->runner_url), "%s", runner_url);
  snprintf(rc->cache_dir, sizeof(rc->cache_dir), "%s", cache_dir);
}

void runner_ctl_set_journal(struct runner_ctl *rc, struct journal *j)
{
  rc->journal = j;
}

int runner_ctl_replay_runner(struct runner_ctl *rc,
                             const struct journal_runner *r)
{
  struct journaled *e = calloc(1, sizeof(*e));

  if (e == NULL)
    return -ENOMEM;
  e->r = *r;
  e->next = rc->journaled;
  rc->journaled = e;
  return 0;
}

/* What the journal keeps of runner name in state. */
static void journal_runner_fill(struct runner_ctl *rc, const char *name,
                                const char *pool, const char *state,
                                int64_t gh_id, struct journal_runner *out)
{
  const struct cap_placement *where;
  struct journal_runner jr;
  size_t i;

  memset(&jr, 0, sizeof(jr));
  snprintf(jr.name, sizeof(jr.name), "%s", name);
  snprintf(jr.pool, sizeof(jr.pool), "%s", pool);
  snprintf(jr.state, sizeof(jr.state), "%s", state);
  jr.gh_id = gh_id;
  where = capacity_hold_find(rc->cap, name);
  if (where != NULL) {
    snprintf(jr.node, sizeof(jr.node), "%s", where->node);
    for (i = 0; i < where->ngpus && i < 16; i++)
      jr.gpus[i] = where->gpus[i];
    jr.ngpus = i;
  }
  jr.created_ms = sched_wall_ms(rc->sched);
  *out = jr;
}

/* 1 unless a leader fence says this replica does not lead: a standby
 * journals nothing and writes nothing at GitHub. */
static int may_act(const struct runner_ctl *rc)
{
  return rc->may_act == NULL || rc->may_act(rc->may_act_arg);
}

static void journal_runner(struct runner_ctl *rc, const char *name,
                           const char *pool, const char *state, int64_t gh_id)
{
  struct journal_runner jr;

  if (rc->journal == NULL || !may_act(rc))
    return;
  journal_runner_fill(rc, name, pool, state, gh_id, &jr);
  if (journal_put_runner(rc->journal, &jr) != 0)
    log_warn(RC_MOD, "cannot journal a runner", LOG_S("runner", name));
}

static void journal_gone(struct runner_ctl *rc, const char *name)
{
  if (rc->journal != NULL && may_act(rc) &&
      journal_runner_gone(rc->journal, name) != 0)
    log_warn(RC_MOD, "cannot journal a runner's end", LOG_S("runner", name));
}

unsigned runner_ctl_starts_in_flight(const struct runner_ctl *rc)
{
  return rc->starts_in_flight;
}

/* ---- bookkeeping of started runners ---- */

static struct started **started_find(struct runner_ctl *rc, const char *name)
{
  struct started **pp;

  for (pp = &rc->started; *pp != NULL; pp = &(*pp)->next)
    if (strcmp((*pp)->name, name) == 0)
      return pp;
  return NULL;
}

/* Forgets a started runner; returns its registration id (0 if unknown). */
static int64_t started_take(struct runner_ctl *rc, const char *name)
{
  struct started **pp = started_find(rc, name), *s;
  int64_t id;

  if (pp == NULL)
    return 0;
  s = *pp;
  *pp = s->next;
  id = s->gh_id;
  free(s);
  return id;
}

/* ---- deregistration ---- */

static void delete_done_cb(void *arg, int status, int http_status)
{
  char *name = arg;

  if (status != 0)
    log_warn(RC_MOD, "deregistration failed", LOG_S("runner", name),
             LOG_I("http_status", http_status));
  free(name);
}

/* Removes a registration that will never run a job (the runner failed to
 * start or died before taking one), so GitHub keeps no offline leftovers.
 * Returns 0 when the deletion was sent. */
static int deregister_leftover(struct runner_ctl *rc, const char *name,
                               int64_t gh_id)
{
  char *copy;

  if (gh_id == 0)
    return -ENOENT;
  if (!may_act(rc))
    return -EPERM; /* the leader's sweep removes it */
  copy = strdup(name);
  if (copy == NULL ||
      gh_delete_runner(rc->gh, gh_id, delete_done_cb, copy) != 0) {
    free(copy);
    return -ENOMEM;
  }
  return 0;
}

static void lookup_cb(void *arg, int status, const struct gh_runner *runners,
                      size_t n)
{
  struct lookup_req *req = arg;
  size_t i, found = 0;

  if (status == 0) {
    for (i = 0; i < n; i++)
      if (strcmp(runners[i].name, req->name) == 0) {
        deregister_leftover(req->rc, req->name, runners[i].id);
        found++;
      }
    log_info(RC_MOD, "looked up a runner whose JIT result was unknown",
             LOG_S("runner", req->name), LOG_U("registered", found));
  } else if (status != -ECANCELED) {
    log_warn(RC_MOD, "cannot look up a runner whose JIT result was unknown",
             LOG_S("runner", req->name), LOG_I("error", status));
  }
  free(req);
}

/* A JIT request that may have registered the runner (no answer, a 5xx, or
 * a 409 for its name) is not sent again: the runner is looked up by name
 * and its registration, if there is one, deleted, since its JIT config
 * never arrived. The scheduler drops the runner without a failure. */
static void jit_unknown(struct runner_ctl *rc, const char *name,
                        int http_status)
{
  struct lookup_req *req = calloc(1, sizeof(*req));

  log_warn(RC_MOD, "JIT result unknown; looking the runner up",
           LOG_S("runner", name), LOG_I("http_status", http_status));
  if (req != NULL) {
    req->rc = rc;
    snprintf(req->name, sizeof(req->name), "%s", name);
    if (gh_find_runner(rc->gh, name, lookup_cb, req) != 0) {
      log_warn(RC_MOD, "cannot look up the runner", LOG_S("runner", name));
      free(req);
    }
  }
  sched_runner_dropped(rc->sched, name, now_ms(rc));
}

/* ---- start: hold, JIT config, backend ---- */

/* What runfleet-hook needs inside the runner (docs/HOOKS.md). */
struct runner_env {
  char url[160];
  char token[32 + HOOK_TOKEN_SIZE];
  char gpus[48];
  char cache[560];
  char *ptrs[5];
};

static int hook_env(struct runner_ctl *rc, const char *name,
                    const struct cfg_pool *pool, struct runner_env *env)
{
  char token[HOOK_TOKEN_SIZE];

  if (hook_token(rc->hooks, name, token, sizeof(token)) != 0)
    return -1;
  snprintf(env->url, sizeof(env->url), "RUNFLEET_URL=%s", rc->runner_url);
  snprintf(env->token, sizeof(env->token), "RUNFLEET_RUNNER_TOKEN=%s", token);
  OPENSSL_cleanse(token, sizeof(token));
  snprintf(env->gpus, sizeof(env->gpus), "RUNFLEET_EXPECTED_GPUS=%u",
           pool->gpus);
  snprintf(env->cache, sizeof(env->cache), "RUNFLEET_CACHE_DIR=%s",
           rc->cache_dir);
  env->ptrs[0] = env->url;
  env->ptrs[1] = env->token;
  env->ptrs[2] = env->gpus;
  env->ptrs[3] = env->cache;
  env->ptrs[4] = NULL;
  return 0;
}

static void retire_cb(void *arg, int status, int http_status);
static void stop_step_done(struct runner_ctl *rc);

/* Deletes name's registration gh_id; retire_cb carries on. stopping marks
 * a deletion the stop waits for. Returns 0 or a negative code (nothing
 * was sent, retire_cb will not run). */
static int retire_send(struct runner_ctl *rc, const char *name, int64_t gh_id,
                       int stopping)
{
  struct retire_req *req = calloc(1, sizeof(*req));
  int err;

  if (req == NULL)
    return -ENOMEM;
  req->rc = rc;
  req->stopping = stopping;
  snprintf(req->name, sizeof(req->name), "%s", name);
  err = gh_delete_runner(rc->gh, gh_id, retire_cb, req);
  if (err != 0)
    free(req);
  return err;
}

/* A JIT config came back while stopping: the runner will not start, and
 * its registration goes; the stop waits for that while it deregisters. */
static void jit_during_stop(struct runner_ctl *rc, const char *name,
                            int64_t gh_id)
{
  int counted = rc->stop_pending;

  if (sched_runner_find(rc->sched, name) != NULL)
    sched_runner_exited(rc->sched, name, -1, now_ms(rc));
  if (gh_id == 0 || !counted) {
    deregister_leftover(rc, name, gh_id);
    if (counted)
      stop_step_done(rc);
    return;
  }
  if (retire_send(rc, name, gh_id, 1) == 0)
    return; /* retire_cb ends this step */
  stop_step_done(rc);
}

/* The runner will not start after all: its hold goes, its registration
 * (if any) goes, and the scheduler hears of it as a failure or, when
 * failed is 0, as a drop that is not the pool's fault. */
static void start_abandon(struct runner_ctl *rc, const char *name,
                          int64_t gh_id, int failed)
{
  capacity_release(rc->cap, name);
  deregister_leftover(rc, name, gh_id);
  if (failed)
    sched_runner_exited(rc->sched, name, -1, now_ms(rc));
  else
    sched_runner_dropped(rc->sched, name, now_ms(rc));
}

/* The JIT config came: start the runner where its hold is. */
static void start_backend(struct runner_ctl *rc, const struct sched_runner *r,
                          int64_t gh_id, const char *encoded)
{
  struct backend_runner_spec spec;
  struct runner_env env;
  struct started *s;
  int err;

  memset(&spec, 0, sizeof(spec));
  spec.name = r->name;
  spec.pool = sched_pool(rc->sched, (size_t)r->pool);
  spec.jit_config = encoded;
  spec.placement = capacity_hold_find(rc->cap, r->name);
  spec.gh_id = gh_id;
  s = calloc(1, sizeof(*s));
  if (s == NULL || spec.placement == NULL ||
      hook_env(rc, r->name, spec.pool, &env) != 0) {
    free(s);
    start_abandon(rc, r->name, gh_id, 1);
    return;
  }
  spec.env = (const char *const *)env.ptrs;
  err = rc->backend->ops->start(rc->backend, &spec);
  OPENSSL_cleanse(env.token, sizeof(env.token));
  if (err == -ENOSPC) {
    /* The placement was taken between the decision and the start: not
     * the pool's fault, so no backoff. */
    log_info(RC_MOD, "no capacity at start; runner dropped",
             LOG_S("runner", r->name));
    free(s);
    start_abandon(rc, r->name, gh_id, 0);
    return;
  }
  if (err != 0) {
    log_warn(RC_MOD, "backend start failed", LOG_S("runner", r->name),
             LOG_S("error", strerror(-err)));
    free(s);
    start_abandon(rc, r->name, gh_id, 1);
    return;
  }
  snprintf(s->name, sizeof(s->name), "%s", r->name);
  s->gh_id = gh_id;
  s->next = rc->started;
  rc->started = s;
  log_info(RC_MOD, "runner starting", LOG_S("runner", r->name),
           LOG_S("pool", spec.pool->name), LOG_S("node", spec.placement->node),
           LOG_U("gpus", spec.placement->ngpus));
}

/* A runner whose journal entry is being written; it starts once that
 * committed. */
struct journal_wait {
  struct runner_ctl *rc;
  char name[SCHED_NAME_MAX];
  int64_t gh_id;
  char *encoded; /* the JIT config, a secret: wiped before it is freed */
};

static void journal_wait_free(struct journal_wait *w)
{
  OPENSSL_clear_free(w->encoded, strlen(w->encoded));
  free(w);
}

static void runner_journaled_cb(void *arg, int status)
{
  struct journal_wait *w = arg;
  struct runner_ctl *rc = w->rc;
  const struct sched_runner *r = sched_runner_find(rc->sched, w->name);

  rc->starts_in_flight--;
  if (status < 0 && status != -ECANCELED)
    log_warn(RC_MOD,
             "cannot journal a runner before its start; starting it anyway "
             "(a crash now would leave it unknown)",
             LOG_S("runner", w->name), LOG_I("error", status));
  if (rc->stopping || status == -ECANCELED) {
    capacity_release(rc->cap, w->name);
    jit_during_stop(rc, w->name, w->gh_id);
  } else if (r == NULL) {
    capacity_release(rc->cap, w->name);
    deregister_leftover(rc, w->name, w->gh_id);
  } else if (!may_act(rc)) {
    log_warn(RC_MOD, "the lease was lost before the start; not started",
             LOG_S("runner", w->name));
    capacity_release(rc->cap, w->name);
    sched_runner_dropped(rc->sched, w->name, now_ms(rc));
  } else {
    start_backend(rc, r, w->gh_id, w->encoded);
  }
  journal_wait_free(w);
  kick(rc);
}

/* With a journal, the runner is journaled (name, registration, placement)
 * before its process or pod exists: a runfleetd that crashes right after
 * the start then knows it at the next start and adopts it, instead of
 * stopping an unknown runner that may have taken a job. */
static void start_journaled(struct runner_ctl *rc, const struct sched_runner *r,
                            int64_t gh_id, const char *encoded)
{
  struct journal_runner jr;
  struct journal_wait *w;

  if (rc->journal == NULL) {
    start_backend(rc, r, gh_id, encoded);
    return;
  }
  journal_runner_fill(rc, r->name, sched_pool(rc->sched, (size_t)r->pool)->name,
                      "starting", gh_id, &jr);
  w = calloc(1, sizeof(*w));
  if (w != NULL) {
    w->rc = rc;
    w->gh_id = gh_id;
    snprintf(w->name, sizeof(w->name), "%s", r->name);
    w->encoded = strdup(encoded);
  }
  if (w == NULL || w->encoded == NULL ||
      journal_put_runner_cb(rc->journal, &jr, runner_journaled_cb, w) != 0) {
    if (w != NULL && w->encoded != NULL)
      journal_wait_free(w);
    else
      free(w);
    log_warn(RC_MOD, "cannot journal a runner before its start",
             LOG_S("runner", r->name));
    start_backend(rc, r, gh_id, encoded);
    return;
  }
  rc->starts_in_flight++; /* the stop waits for it like a JIT request */
}

static void jit_cb(void *arg, int status, int http_status, int64_t runner_id,
                   const char *encoded)
{
  struct start_req *req = arg;
  struct runner_ctl *rc = req->rc;
  const struct sched_runner *r;

  rc->starts_in_flight--;
  if (rc->stopping) {
    capacity_release(rc->cap, req->name);
    jit_during_stop(rc, req->name, status == 0 ? runner_id : 0);
    goto out;
  }
  /* Checked first: a runner the scheduler let go while its JIT request
   * was out may still have been registered. */
  if (status == GH_MAYBE_APPLIED || http_status == 409) {
    capacity_release(rc->cap, req->name);
    jit_unknown(rc, req->name, http_status);
    goto out;
  }
  r = sched_runner_find(rc->sched, req->name);
  if (r == NULL) {
    capacity_release(rc->cap, req->name);
    deregister_leftover(rc, req->name, status == 0 ? runner_id : 0);
    goto out;
  }
  /* The lease was lost while the request was out: no pod for it. The
   * registration stays for the new leader's sweep (same fleet tag). */
  if (!may_act(rc)) {
    log_warn(RC_MOD, "JIT config came after the lease was lost; not started",
             LOG_S("runner", req->name));
    capacity_release(rc->cap, req->name);
    sched_runner_dropped(rc->sched, req->name, now_ms(rc));
    goto out;
  }
  if (status != 0 || r->pool < 0) {
    if (status != 0)
      log_warn(RC_MOD, "JIT config failed", LOG_S("runner", req->name),
               LOG_I("http_status", http_status));
    start_abandon(rc, req->name, status == 0 ? runner_id : 0, 1);
    goto out;
  }
  start_journaled(rc, r, runner_id, encoded);
out:
  free(req);
  kick(rc);
}

/* Whether the backend takes runners of pool now (backend.h accepts). */
static int backend_accepts(const struct runner_ctl *rc,
                           const struct cfg_pool *pool)
{
  return rc->backend == NULL || rc->backend->ops->accepts == NULL ||
         rc->backend->ops->accepts(rc->backend, pool);
}

static int backend_synced(struct runner_ctl *rc);

static int ctl_start(void *ctx, struct sched_runner *r)
{
  struct runner_ctl *rc = ctx;
  const struct cfg_pool *pool = sched_pool(rc->sched, (size_t)r->pool);
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request want;
  struct start_req *req;
  int err;

  if (rc->stopping)
    return -ECANCELED;
  /* A replica that does not lead asks GitHub for no JIT config. */
  if (rc->may_act != NULL && !rc->may_act(rc->may_act_arg))
    return -ECANCELED;
  /* Not -ENOSPC: that would hold back every pool of the same capacity
   * source behind this one. As a failure the pool alone backs off, and no
   * JIT config is asked for. */
  if (!backend_accepts(rc, pool))
    return -EAGAIN;
  /* Until the backend has listed what runs, its runners of an earlier run
   * hold capacity that capacity does not know of yet. */
  if (!backend_synced(rc))
    return -ENOSPC;
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return -ENOMEM;
  req->rc = rc;
  snprintf(req->name, sizeof(req->name), "%s", r->name);
  /* The hold comes first: the next decision, in this pass or while the
   * JIT request is out, sees these GPUs taken. */
  capacity_request_for_pool(pool, &want, selector);
  err = capacity_hold(rc->cap, r->name, CAP_HOLDER_RUNNER, &want, NULL);
  if (err != 0) {
    free(req);
    return err; /* -ENOSPC: the scheduler waits for capacity */
  }
  err =
      gh_jit_config(rc->gh, r->name, pool->labels, pool->nlabels, jit_cb, req);
  if (err != 0) {
    capacity_release(rc->cap, r->name);
    free(req);
    return err;
  }
  rc->starts_in_flight++;
  return 0;
}

static int ctl_fits(void *ctx, const struct cfg_pool *pool)
{
  struct runner_ctl *rc = ctx;
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request want;

  /* A pool the backend refuses does fit: its start fails instead (see
   * ctl_start), so it does not hold back others. Nothing fits before the
   * backend has listed: a runner placed then could take the GPUs of a pod
   * it is about to report, which then cannot be adopted and is stopped
   * mid-job. */
  if (!backend_synced(rc))
    return 0;
  capacity_request_for_pool(pool, &want, selector);
  return capacity_fits(rc->cap, &want);
}

/* ---- retire: GitHub first, then the backend ---- */

static void retire_cb(void *arg, int status, int http_status)
{
  struct retire_req *req = arg;
  struct runner_ctl *rc = req->rc;
  const struct sched_runner *r = sched_runner_find(rc->sched, req->name);

  if (r != NULL && !req->stopping) {
    if (status == 0) {
      if (rc->backend->ops->stop(rc->backend, req->name) != 0) {
        capacity_release(rc->cap, req->name);
        started_take(rc, req->name);
        sched_runner_exited(rc->sched, req->name, -1, now_ms(rc));
      }
    } else {
      /* 422: GitHub gave it a job meanwhile; anything else: try later. */
      log_info(RC_MOD, "runner kept", LOG_S("runner", req->name),
               LOG_I("http_status", http_status));
      sched_runner_keep(rc->sched, req->name, http_status == 422, now_ms(rc));
    }
  }
  /* Only while the stop still waits for these (not after its deadline). */
  if (req->stopping && rc->stop_pending)
    stop_step_done(rc);
  free(req);
  kick(rc);
}

static int ctl_retire(void *ctx, struct sched_runner *r)
{
  struct runner_ctl *rc = ctx;
  int err = retire_send(rc, r->name, r->gh_id, 0);

  if (err != 0)
    log_warn(RC_MOD, "cannot deregister now", LOG_S("runner", r->name),
             LOG_I("error", err));
  return err;
}

static unsigned ctl_block_key(void *ctx, const struct cfg_pool *pool)
{
  struct runner_ctl *rc = ctx;
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request want;

  capacity_request_for_pool(pool, &want, selector);
  return capacity_block_key(rc->cap, &want);
}

const struct sched_ops runner_ctl_sched_ops = {
    .start = ctl_start,
    .retire = ctl_retire,
    .fits = ctl_fits,
    .block_key = ctl_block_key,
};

/* ---- backend events ---- */

static void runner_running(struct runner_ctl *rc, const char *name)
{
  const struct cap_placement *where = capacity_hold_find(rc->cap, name);
  int64_t gh_id = started_take(rc, name);

  const struct sched_runner *r = sched_runner_find(rc->sched, name);

  if (r == NULL)
    return;
  if (gh_id == 0)
    gh_id = r->gh_id; /* adopted: the scheduler has it already */
  sched_runner_running(rc->sched, name, gh_id, where ? where->gpus : NULL,
                       where ? where->ngpus : 0, now_ms(rc));
  if (r->pool >= 0)
    journal_runner(rc, name, sched_pool(rc->sched, (size_t)r->pool)->name,
                   "running", gh_id);
}

static void runner_gone(struct runner_ctl *rc, const char *name, int status)
{
  const struct sched_runner *r = sched_runner_find(rc->sched, name);
  int64_t pending_id = started_take(rc, name);

  log_info(RC_MOD, "runner exited", LOG_S("runner", name),
           LOG_I("status", status));
  capacity_release(rc->cap, name);
  journal_gone(rc, name);
  if (r == NULL) {
    kick(rc);
    return;
  }
  /* A clean exit means the ephemeral runner ran a job (GitHub removes it
   * itself); any other exit before a job leaves a registration behind. */
  if (!r->took_job && r->state != SCHED_RUNNER_STOPPING && status != 0 &&
      !rc->stopping)
    deregister_leftover(rc, name, r->gh_id != 0 ? r->gh_id : pending_id);
  sched_runner_exited(rc->sched, name, status, now_ms(rc));
  kick(rc);
}

static void reconcile_backend(struct runner_ctl *rc);
static void sweep_start(struct runner_ctl *rc);

void runner_ctl_backend_event(void *ctx, const struct backend_event *ev)
{
  struct runner_ctl *rc = ctx;

  switch (ev->type) {
  case BACKEND_PLACED:
    log_debug(RC_MOD, "runner placed", LOG_S("runner", ev->name),
              LOG_S("node", ev->node != NULL ? ev->node : ""),
              LOG_U("gpus", ev->ngpus));
    break;
  case BACKEND_RUNNING:
    runner_running(rc, ev->name);
    break;
  case BACKEND_EXITED:
    runner_gone(rc, ev->name, ev->status);
    break;
  case BACKEND_LOST:
    log_warn(RC_MOD, "backend lost a runner", LOG_S("runner", ev->name),
             LOG_I("error", ev->status));
    runner_gone(rc, ev->name, -1);
    break;
  case BACKEND_LISTED:
    /* Adopt or stop what the backend found, as at start. */
    if (rc->handles_open && !rc->stopping && rc->sched != NULL)
      reconcile_backend(rc);
    if (rc->sweep_pending && !rc->stopping) {
      rc->sweep_pending = 0;
      sweep_start(rc);
    }
    kick(rc); /* demand that waited for the list */
    break;
  }
}

/* ---- leftovers of an earlier run ---- */

/* The fleet tag names this state_dir's runners across restarts: read from
 * <state_dir>/fleet-id, created once. Without it, runners of an earlier run
 * cannot be told from another fleet's, and nothing is swept. */
int runner_ctl_load_tag(struct runner_ctl *rc, const char *state_dir)
{
  char path[600], tag[17] = "";
  unsigned char raw[4];
  FILE *fp;
  int ok = 0;

  snprintf(path, sizeof(path), "%s/fleet-id", state_dir);
  fp = fopen(path, "r");
  if (fp != NULL) {
    ok = fscanf(fp, "%8[0-9a-f]", tag) == 1 && strlen(tag) == 8;
    fclose(fp);
  }
  if (!ok && rand_bytes(raw, sizeof(raw)) == 0) {
    snprintf(tag, sizeof(tag), "%02x%02x%02x%02x", raw[0], raw[1], raw[2],
             raw[3]);
    fp = fs_mkdir_p(state_dir, 0755) == 0 ? fopen(path, "w") : NULL;
    ok = fp != NULL && fprintf(fp, "%s\n", tag) > 0;
    if (fp != NULL && fclose(fp) != 0)
      ok = 0;
    if (!ok)
      log_warn(RC_MOD,
               "cannot keep the fleet id; leftovers of a crash "
               "will not be swept",
               LOG_S("file", path), LOG_S("error", strerror(errno)));
  }
  if (tag[0] == '\0')
    snprintf(tag, sizeof(tag), "%08x", (unsigned)getpid());
  sched_set_tag(rc->sched, tag);
  return ok;
}

/* Deletes this fleet's registrations that no runner of this run owns: the
 * runners of an earlier run, which the backend stopped at start. Busy ones
 * are left to GitHub (they go after their job). */
static void sweep_cb(void *arg, int status, const struct gh_runner *runners,
                     size_t n)
{
  struct runner_ctl *rc = arg;
  size_t i, swept = 0;

  if (status != 0) {
    if (status != -ECANCELED)
      log_warn(RC_MOD, "cannot list runners to sweep leftovers",
               LOG_I("error", status));
    return;
  }
  for (i = 0; i < n; i++) {
    const struct gh_runner *r = &runners[i];

    if (r->busy || !sched_name_is_ours(rc->sched, r->name) ||
        sched_runner_find(rc->sched, r->name) != NULL)
      continue;
    if (deregister_leftover(rc, r->name, r->id) == 0)
      swept++;
  }
  log_info(RC_MOD, "swept registrations of an earlier run",
           LOG_U("count", swept));
}

static struct journaled *journaled_take(struct runner_ctl *rc, const char *name)
{
  struct journaled **pp, *e;

  for (pp = &rc->journaled; *pp != NULL; pp = &(*pp)->next)
    if (strcmp((*pp)->r.name, name) == 0) {
      e = *pp;
      *pp = e->next;
      return e;
    }
  return NULL;
}

static int pool_index(const struct runner_ctl *rc, const char *name)
{
  size_t i;

  for (i = 0; i < sched_npools(rc->sched); i++)
    if (strcmp(sched_pool(rc->sched, i)->name, name) == 0)
      return (int)i;
  return -1;
}

/* A runner of an earlier run that the journal knows, or one of this
 * fleet's that another replica started (the backend knows its pool and
 * registration), and that the backend still runs goes on as this run's:
 * its capacity held where it is, known to the scheduler, so its job is not
 * served twice. Returns 0 when adopted. */
static int adopt(struct runner_ctl *rc, const struct backend_item *it,
                 const char *pool_name, int64_t gh_id)
{
  int pool = pool_index(rc, pool_name);
  struct started *s;

  if (pool < 0)
    return -ENOENT; /* its pool is gone from the config */
  if (capacity_hold_at(rc->cap, it->name, CAP_HOLDER_RUNNER, &it->where) != 0)
    return -ENOSPC;
  if (sched_runner_adopt(rc->sched, it->name, (size_t)pool, gh_id,
                         it->where.gpus, it->where.ngpus, it->running,
                         now_ms(rc)) != 0) {
    capacity_release(rc->cap, it->name);
    return -ENOMEM;
  }
  if (!it->running) {
    s = calloc(1, sizeof(*s));
    if (s != NULL) {
      snprintf(s->name, sizeof(s->name), "%s", it->name);
      s->gh_id = gh_id;
      s->next = rc->started;
      rc->started = s;
    }
  }
  journal_runner(rc, it->name, pool_name, it->running ? "running" : "starting",
                 gh_id);
  return 0;
}

/* What the backend still runs: a runner the journal knows is adopted;
 * one it does not know is stopped, its capacity held until the backend
 * reports it gone, so nothing new is placed on its GPUs meanwhile. A
 * journaled runner the backend no longer runs is gone: its journal entry
 * goes, and its registration (unless a job took it, when GitHub removes
 * it). */
static int backend_synced(struct runner_ctl *rc)
{
  if (rc->backend == NULL)
    return 1;
  return rc->backend->ops->synced == NULL ||
         rc->backend->ops->synced(rc->backend);
}

static void sweep_start(struct runner_ctl *rc)
{
  if (gh_list_runners(rc->gh, sweep_cb, rc) != 0)
    log_warn(RC_MOD, "cannot sweep leftovers of an earlier run", LOG_NONE);
}

static void reconcile_backend(struct runner_ctl *rc)
{
  struct backend_item *items = calloc(RC_LIST_MAX, sizeof(*items));
  struct journaled *e;
  size_t n, i, adopted = 0;

  if (items == NULL)
    return;
  n = rc->backend->ops->list(rc->backend, items, RC_LIST_MAX);
  for (i = 0; i < n && i < RC_LIST_MAX; i++) {
    const struct backend_item *it = &items[i];

    /* Known, or being stopped since an earlier pass (held, not known). */
    if (sched_runner_find(rc->sched, it->name) != NULL ||
        capacity_hold_find(rc->cap, it->name) != NULL)
      continue;
    e = journaled_take(rc, it->name);
    if (e != NULL && adopt(rc, it, e->r.pool, e->r.gh_id) == 0) {
      adopted++;
      free(e);
      continue;
    }
    free(e);
    /* Not journaled here, but the backend knows its registration: a
     * runner of this fleet that another replica (the leader before this
     * one) started. */
    if (it->gh_id != 0 && it->pool != NULL &&
        adopt(rc, it, it->pool, it->gh_id) == 0) {
      adopted++;
      continue;
    }
    log_warn(RC_MOD, "stopping a runner this run does not know",
             LOG_S("runner", it->name), LOG_S("pool", it->pool),
             LOG_S("node", it->where.node));
    if (capacity_hold_at(rc->cap, it->name, CAP_HOLDER_RUNNER, &it->where) != 0)
      log_warn(RC_MOD, "cannot hold the capacity of an unknown runner",
               LOG_S("runner", it->name));
    if (rc->backend->ops->stop(rc->backend, it->name) != 0)
      capacity_release(rc->cap, it->name);
  }
  free(items);
  while ((e = rc->journaled) != NULL) {
    rc->journaled = e->next;
    log_info(RC_MOD, "a journaled runner is gone", LOG_S("runner", e->r.name),
             LOG_S("pool", e->r.pool), LOG_S("state", e->r.state));
    journal_gone(rc, e->r.name);
    deregister_leftover(rc, e->r.name, e->r.gh_id);
    free(e);
  }
  if (adopted > 0)
    log_info(RC_MOD, "adopted runners of an earlier run",
             LOG_U("count", adopted));
}

void runner_ctl_takeover(struct runner_ctl *rc, int sweep)
{
  if (!rc->handles_open || rc->stopping)
    return;
  if (backend_synced(rc)) {
    reconcile_backend(rc);
    if (sweep)
      sweep_start(rc);
  } else {
    rc->sweep_pending = sweep;
  }
}

int runner_ctl_start(struct runner_ctl *rc, int sweep)
{
  /* uv_timer_init only records the handle in the loop; it cannot fail. */
  (void)uv_timer_init(rc->loop, &rc->deadline);
  rc->deadline.data = rc;
  rc->handles_open = 1;
  rc->stopping = 0; /* a start after a close acts again */
  /* A backend whose list comes later (a cluster watch) is reconciled, and
   * GitHub swept, when it has listed: before that, its runners would look
   * gone and their registrations ownerless. */
  if (backend_synced(rc)) {
    reconcile_backend(rc);
    if (sweep)
      sweep_start(rc);
  } else {
    rc->sweep_pending = sweep;
  }
  return 0;
}

/* ---- stop ---- */

static void stop_finish(struct runner_ctl *rc)
{
  void (*cb)(void *) = rc->stop_cb;

  rc->stop_pending = 0;
  rc->stop_waiting = 0;
  if (rc->handles_open)
    uv_timer_stop(&rc->deadline);
  rc->stop_cb = NULL;
  if (cb != NULL)
    cb(rc->stop_arg);
}

static void stop_step_done(struct runner_ctl *rc)
{
  if (!rc->stop_pending || rc->stop_waiting == 0 || --rc->stop_waiting > 0)
    return;
  stop_finish(rc);
}

static void deadline_cb(uv_timer_t *t)
{
  struct runner_ctl *rc = t->data;

  log_warn(RC_MOD, "GitHub clean-up timed out during shutdown", LOG_NONE);
  /* Requests still out are aborted when the GitHub client closes. */
  stop_finish(rc);
}

void runner_ctl_stop(struct runner_ctl *rc, uint64_t deadline_ms,
                     void (*done_cb)(void *arg), void *arg)
{
  size_t i;

  rc->stopping = 1;
  rc->stop_cb = done_cb;
  rc->stop_arg = arg;
  rc->stop_pending = 1;
  if (rc->sched == NULL || rc->gh == NULL) {
    stop_finish(rc);
    return;
  }
  /* Idle runners will never get a job now: remove their registrations so
   * GitHub does not hand them work that would be lost; runners whose JIT
   * config is still on its way are waited for and removed too. */
  rc->stop_waiting = 1 + rc->starts_in_flight;
  /* A replica that gave the Lease up leaves its runners to the next
   * leader, registrations and all. */
  for (i = 0; may_act(rc) && i < sched_nrunners(rc->sched); i++) {
    const struct sched_runner *r = sched_runner_at(rc->sched, i);

    if (r->took_job || r->gh_id == 0)
      continue;
    if (retire_send(rc, r->name, r->gh_id, 1) == 0)
      rc->stop_waiting++;
  }
  if (rc->handles_open &&
      uv_timer_start(&rc->deadline, deadline_cb, deadline_ms, 0) != 0)
    log_warn(RC_MOD, "no shutdown deadline timer", LOG_NONE);
  stop_step_done(rc);
}

static void deadline_closed_cb(uv_handle_t *h)
{
  struct runner_ctl *rc = h->data;
  void (*cb)(void *) = rc->close_cb;

  rc->handles_open = 0;
  rc->close_cb = NULL;
  if (cb != NULL)
    cb(rc->close_arg);
}

void runner_ctl_close(struct runner_ctl *rc, void (*done_cb)(void *arg),
                      void *arg)
{
  rc->stopping = 1;
  if (!rc->handles_open) {
    if (done_cb != NULL)
      done_cb(arg);
    return;
  }
  rc->close_cb = done_cb;
  rc->close_arg = arg;
  uv_close((uv_handle_t *)&rc->deadline, deadline_closed_cb);
}

void runner_ctl_destroy(struct runner_ctl *rc)
{
  if (rc == NULL)
    return;
  while (rc->started != NULL)
    started_take(rc, rc->started->name);
  while (rc->journaled != NULL) {
    struct journaled *e = rc->journaled;
    rc->journaled = e->next;
    free(e);
  }
  free(rc);
}
