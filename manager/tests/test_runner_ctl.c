/* runner_ctl with a fake GitHub (this file defines the gh_* functions it
 * calls, so github.c is not linked in) and a fake backend, over the real
 * scheduler and capacity: hold before JIT, JIT never sent twice, holds
 * released on every way out, retirement, the stop and the reconciliation
 * at start. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journal.h"
#include "runner_ctl.h"

/* ---- fake GitHub: calls are recorded and answered by the test ---- */

#define FAKE_MAX 16

enum fake_call_kind { CALL_JIT, CALL_DELETE, CALL_LIST, CALL_FIND };

struct fake_call {
  enum fake_call_kind kind;
  char name[SCHED_NAME_MAX];
  int64_t id;
  void *cb;
  void *arg;
  int answered;
};

static struct fake_call calls[64];
static size_t ncalls;
static int64_t next_runner_id = 100;

static struct fake_call *record(enum fake_call_kind kind, const char *name,
                                int64_t id, void *cb, void *arg)
{
  struct fake_call *c;

  assert_true(ncalls < sizeof(calls) / sizeof(calls[0]));
  c = &calls[ncalls++];
  memset(c, 0, sizeof(*c));
  c->kind = kind;
  snprintf(c->name, sizeof(c->name), "%s", name != NULL ? name : "");
  c->id = id;
  c->cb = cb;
  c->arg = arg;
  return c;
}

int gh_jit_config(struct gh_client *gh, const char *name, char *const *labels,
                  size_t nlabels, gh_jit_cb cb, void *arg)
{
  (void)gh;
  (void)labels;
  (void)nlabels;
  record(CALL_JIT, name, 0, (void *)cb, arg);
  return 0;
}

int gh_delete_runner(struct gh_client *gh, int64_t runner_id, gh_done_cb cb,
                     void *arg)
{
  (void)gh;
  record(CALL_DELETE, NULL, runner_id, (void *)cb, arg);
  return 0;
}

int gh_list_runners(struct gh_client *gh, gh_runners_cb cb, void *arg)
{
  (void)gh;
  record(CALL_LIST, NULL, 0, (void *)cb, arg);
  return 0;
}

int gh_find_runner(struct gh_client *gh, const char *name, gh_runners_cb cb,
                   void *arg)
{
  (void)gh;
  record(CALL_FIND, name, 0, (void *)cb, arg);
  return 0;
}

static size_t count_calls(enum fake_call_kind kind)
{
  size_t i, n = 0;

  for (i = 0; i < ncalls; i++)
    n += calls[i].kind == kind;
  return n;
}

/* The k-th unanswered call of a kind. */
static struct fake_call *pending(enum fake_call_kind kind, size_t k)
{
  size_t i;

  for (i = 0; i < ncalls; i++)
    if (calls[i].kind == kind && !calls[i].answered && k-- == 0)
      return &calls[i];
  fail_msg("no pending call of kind %d", kind);
  return NULL;
}

static int64_t answer_jit(struct fake_call *c, int status, int http_status)
{
  int64_t id = status == 0 ? next_runner_id++ : 0;

  c->answered = 1;
  ((gh_jit_cb)c->cb)(c->arg, status, http_status, id,
                     status == 0 ? "ENCODED" : NULL);
  return id;
}

static void answer_done(struct fake_call *c, int status, int http_status)
{
  c->answered = 1;
  ((gh_done_cb)c->cb)(c->arg, status, http_status);
}

static void answer_runners(struct fake_call *c, const struct gh_runner *r,
                           size_t n)
{
  c->answered = 1;
  ((gh_runners_cb)c->cb)(c->arg, 0, r, n);
}

static int deleted(int64_t id)
{
  size_t i;

  for (i = 0; i < ncalls; i++)
    if (calls[i].kind == CALL_DELETE && calls[i].id == id)
      return 1;
  return 0;
}

/* ---- fake backend ---- */

struct fake_backend {
  struct backend base;
  int start_rc;
  char started[FAKE_MAX][SCHED_NAME_MAX];
  struct cap_placement where[FAKE_MAX];
  size_t nstarted;
  char stopped[FAKE_MAX][SCHED_NAME_MAX];
  size_t nstopped;
  struct backend_item items[FAKE_MAX]; /* what list() shows */
  size_t nitems;
  const char *refused_pool; /* accepts() says no to it */
};

static int fb_start(struct backend *b, const struct backend_runner_spec *spec)
{
  struct fake_backend *fb = (struct fake_backend *)b;

  assert_non_null(spec->placement);
  assert_string_equal(spec->jit_config, "ENCODED");
  if (fb->start_rc != 0)
    return fb->start_rc;
  snprintf(fb->started[fb->nstarted], SCHED_NAME_MAX, "%s", spec->name);
  fb->where[fb->nstarted++] = *spec->placement;
  return 0;
}

static int fb_stop(struct backend *b, const char *name)
{
  struct fake_backend *fb = (struct fake_backend *)b;

  snprintf(fb->stopped[fb->nstopped++], SCHED_NAME_MAX, "%s", name);
  return 0;
}

static size_t fb_list(struct backend *b, struct backend_item *items, size_t max)
{
  struct fake_backend *fb = (struct fake_backend *)b;
  size_t i;

  for (i = 0; i < fb->nitems && i < max; i++)
    items[i] = fb->items[i];
  return fb->nitems;
}

static size_t fb_count(struct backend *b)
{
  (void)b;
  return 0;
}

static int fb_listed; /* what fb_synced says */

static int fb_synced(struct backend *b)
{
  (void)b;
  return fb_listed;
}

static int fb_accepts(struct backend *b, const struct cfg_pool *pool)
{
  struct fake_backend *fb = (struct fake_backend *)b;

  return fb->refused_pool == NULL || strcmp(fb->refused_pool, pool->name) != 0;
}

static const struct backend_ops fb_ops = {.start = fb_start,
                                          .stop = fb_stop,
                                          .list = fb_list,
                                          .count = fb_count,
                                          .accepts = fb_accepts};

/* ---- fixture ---- */

struct fixture {
  uv_loop_t loop;
  struct config cfg;
  struct capacity *cap;
  struct metrics *m;
  struct hook_reports *hooks;
  struct scheduler *s;
  struct runner_ctl *rc;
  struct fake_backend fb;
  int stopped, closed;
  int64_t job_seq;
};

static const int host_gpus[] = {0, 1};

static void add_pool(struct config *cfg, const char *name, const char *label,
                     unsigned gpus)
{
  struct cfg_pool *p = &cfg->pools[cfg->npools++];

  memset(p, 0, sizeof(*p));
  p->name = strdup(name);
  p->labels[0] = strdup("self-hosted");
  p->labels[1] = strdup(label);
  p->nlabels = 2;
  p->max_runners = 4;
  p->gpus = gpus;
  p->cpus = 1;
  p->idle_timeout_ms = 600000;
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct cap_node_desc d = {.source = "local",
                            .name = "host",
                            .gpus = host_gpus,
                            .ngpus = 2,
                            .cpu_milli = 8000};

  assert_int_equal(uv_loop_init(&f->loop), 0);
  add_pool(&f->cfg, "cpu", "cpu", 0);
  add_pool(&f->cfg, "gpu-2", "gpu", 2);
  f->cap = capacity_new();
  assert_int_equal(capacity_node_set(f->cap, &d), 0);
  f->m = metrics_new();
  f->hooks = hook_reports_new(f->m);
  f->rc = runner_ctl_new(&f->loop, f->cap, f->hooks);
  f->s = sched_new(&f->cfg, &runner_ctl_sched_ops, f->rc);
  f->fb.base.ops = &fb_ops;
  f->fb.base.on_event = runner_ctl_backend_event;
  f->fb.base.ctx = f->rc;
  f->fb.base.capacity = f->cap;
  runner_ctl_attach(f->rc, (struct gh_client *)f, f->s, &f->fb.base);
  runner_ctl_set_urls(f->rc, "http://127.0.0.1:1", "/tmp/cache");
  sched_set_tag(f->s, "0123abcd");
  assert_int_equal(runner_ctl_start(f->rc, 0), 0);
  ncalls = 0;
  *state = f;
  return 0;
}

static void closed_cb(void *arg)
{
  ((struct fixture *)arg)->closed = 1;
}

/* What gh_close does to requests still out: each callback runs once with
 * -ECANCELED. */
static void cancel_pending(void)
{
  size_t i;

  for (i = 0; i < ncalls; i++) {
    struct fake_call *c = &calls[i];
    if (c->answered)
      continue;
    c->answered = 1;
    if (c->kind == CALL_JIT)
      ((gh_jit_cb)c->cb)(c->arg, -ECANCELED, 0, 0, NULL);
    else if (c->kind == CALL_DELETE)
      ((gh_done_cb)c->cb)(c->arg, -ECANCELED, 0);
    else
      ((gh_runners_cb)c->cb)(c->arg, -ECANCELED, NULL, 0);
  }
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  size_t i, k;

  cancel_pending();

  runner_ctl_close(f->rc, closed_cb, f);
  while (!f->closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  runner_ctl_destroy(f->rc);
  sched_destroy(f->s);
  hook_reports_destroy(f->hooks);
  metrics_destroy(f->m);
  capacity_destroy(f->cap);
  for (i = 0; i < f->cfg.npools; i++) {
    free(f->cfg.pools[i].name);
    for (k = 0; k < f->cfg.pools[i].nlabels; k++)
      free(f->cfg.pools[i].labels[k]);
  }
  free(f);
  return 0;
}

static void queue_job(struct fixture *f, const char *label)
{
  char *labels[] = {(char *)label};
  struct sched_job_event e = {.job_id = ++f->job_seq,
                              .run_id = 1,
                              .repo = "acme/widgets",
                              .name = "test",
                              .labels = labels,
                              .nlabels = 1};

  assert_int_equal(sched_job_queued(f->s, &e, uv_now(&f->loop)), 0);
}

static void pass(struct fixture *f)
{
  sched_reconcile(f->s, uv_now(&f->loop));
}

static void event(struct fixture *f, enum backend_event_type type,
                  const char *name, int status)
{
  struct backend_event ev = {.type = type, .name = name, .status = status};

  runner_ctl_backend_event(f->rc, &ev);
}

static struct cap_totals totals(const struct fixture *f)
{
  struct cap_totals t;

  capacity_totals(f->cap, &t);
  return t;
}

static uint64_t failures(const struct fixture *f, size_t pool)
{
  struct sched_pool_stats st;

  sched_pool_stats(f->s, pool, &st);
  return st.runner_failures;
}

/* The hold is taken when the scheduler decides, before the JIT config
 * comes: a second 2-GPU job on a 2-GPU host waits instead of asking GitHub
 * for a runner that could not start. */
static void test_hold_before_jit_and_start_at_placement(void **state)
{
  struct fixture *f = *state;
  const struct sched_runner *r;
  int64_t id;

  queue_job(f, "gpu");
  queue_job(f, "gpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 1);
  assert_int_equal(totals(f).gpus_held, 2);
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 1);
  assert_int_equal(runner_ctl_starts_in_flight(f->rc), 1);
  id = answer_jit(pending(CALL_JIT, 0), 0, 201);
  assert_int_equal(f->fb.nstarted, 1);
  assert_string_equal(f->fb.where[0].node, "host");
  assert_int_equal(f->fb.where[0].ngpus, 2);
  /* Idle only once the backend says it runs, with GitHub's id. */
  r = sched_runner_find(f->s, f->fb.started[0]);
  assert_int_equal(r->state, SCHED_RUNNER_STARTING);
  event(f, BACKEND_RUNNING, f->fb.started[0], 0);
  r = sched_runner_find(f->s, f->fb.started[0]);
  assert_int_equal(r->state, SCHED_RUNNER_IDLE);
  assert_int_equal(r->gh_id, id);
  assert_int_equal(r->ngpus, 2);
  /* A clean exit: the hold goes, nothing is deregistered (GitHub removes
   * an ephemeral runner that ran a job). */
  event(f, BACKEND_EXITED, f->fb.started[0], 0);
  assert_int_equal(totals(f).holds, 0);
  assert_int_equal(count_calls(CALL_DELETE), 0);
}

/* A lost answer or a 5xx after the JIT request went out, and a 409 for
 * the name: never sent again; the runner is looked up by name and its
 * registration deleted; no failure, no backoff, the hold released. */
static void check_jit_unknown(struct fixture *f, int status, int http_status)
{
  struct gh_runner found = {.id = 777};
  char name[SCHED_NAME_MAX];

  queue_job(f, "gpu");
  pass(f);
  snprintf(name, sizeof(name), "%s", pending(CALL_JIT, 0)->name);
  answer_jit(pending(CALL_JIT, 0), status, http_status);
  assert_int_equal(count_calls(CALL_JIT), 1);
  assert_int_equal(count_calls(CALL_FIND), 1);
  assert_string_equal(pending(CALL_FIND, 0)->name, name);
  assert_int_equal(totals(f).holds, 0);
  assert_null(sched_runner_find(f->s, name));
  assert_int_equal(failures(f, 1), 0);
  snprintf(found.name, sizeof(found.name), "%s", name);
  answer_runners(pending(CALL_FIND, 0), &found, 1);
  assert_true(deleted(777));
  assert_int_equal(f->fb.nstarted, 0);
  /* The job is still demand: the next pass asks for a new runner. */
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 2);
  assert_string_not_equal(pending(CALL_JIT, 0)->name, name);
}

static void test_lost_jit_answer_is_looked_up(void **state)
{
  check_jit_unknown(*state, GH_MAYBE_APPLIED, 0);
}

static void test_jit_5xx_is_looked_up(void **state)
{
  check_jit_unknown(*state, GH_MAYBE_APPLIED, 502);
}

static void test_jit_409_is_looked_up(void **state)
{
  check_jit_unknown(*state, -EEXIST, 409);
}

/* The backend finds the placement taken after the JIT config came: the
 * registration goes and the runner is dropped without a failure. */
static void test_backend_enospc_drops_without_failure(void **state)
{
  struct fixture *f = *state;
  int64_t id;

  f->fb.start_rc = -ENOSPC;
  queue_job(f, "gpu");
  pass(f);
  id = answer_jit(pending(CALL_JIT, 0), 0, 201);
  assert_true(deleted(id));
  assert_int_equal(failures(f, 1), 0);
  assert_int_equal(totals(f).holds, 0);
  assert_int_equal(sched_nrunners(f->s), 0);
}

static void test_backend_failure_counts(void **state)
{
  struct fixture *f = *state;
  int64_t id;

  f->fb.start_rc = -EACCES;
  queue_job(f, "cpu");
  pass(f);
  id = answer_jit(pending(CALL_JIT, 0), 0, 201);
  assert_true(deleted(id));
  assert_int_equal(failures(f, 0), 1);
  assert_int_equal(totals(f).holds, 0);
}

/* A pool the backend does not accept backs off on its own: no JIT config
 * is asked for, no hold kept, and other pools go on. */
static void test_backend_refuses_pool(void **state)
{
  struct fixture *f = *state;
  struct sched_pool_stats st;

  f->fb.refused_pool = "cpu";
  queue_job(f, "cpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 0);
  sched_pool_stats(f->s, 0, &st);
  assert_true(st.backoff_until_ms > uv_now(&f->loop));
  assert_int_equal(totals(f).holds, 0);
  queue_job(f, "gpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 1);
}

static void test_jit_refused_counts_and_releases(void **state)
{
  struct fixture *f = *state;

  queue_job(f, "cpu");
  pass(f);
  answer_jit(pending(CALL_JIT, 0), -EPERM, 403);
  assert_int_equal(failures(f, 0), 1);
  assert_int_equal(totals(f).holds, 0);
  assert_int_equal(count_calls(CALL_DELETE), 0);
}

/* A runner that dies before any job leaves its registration: deleted. A
 * LOST one likewise; either way the hold goes. */
static void test_exit_before_job_deregisters(void **state)
{
  struct fixture *f = *state;
  int64_t a, b;

  queue_job(f, "cpu");
  queue_job(f, "cpu");
  pass(f);
  a = answer_jit(pending(CALL_JIT, 0), 0, 201);
  b = answer_jit(pending(CALL_JIT, 0), 0, 201);
  event(f, BACKEND_RUNNING, f->fb.started[0], 0);
  event(f, BACKEND_EXITED, f->fb.started[0], 1);
  assert_true(deleted(a));
  /* Lost before it was even running: the id still comes from the start. */
  event(f, BACKEND_LOST, f->fb.started[1], -EIO);
  assert_true(deleted(b));
  assert_int_equal(totals(f).holds, 0);
}

/* Retire: GitHub first; the backend stops the runner once deregistered,
 * and a 422 (GitHub gave it a job) keeps it. */
static void test_retire(void **state)
{
  struct fixture *f = *state;
  struct sched_runner *r;

  queue_job(f, "cpu");
  pass(f);
  answer_jit(pending(CALL_JIT, 0), 0, 201);
  event(f, BACKEND_RUNNING, f->fb.started[0], 0);
  r = (struct sched_runner *)sched_runner_find(f->s, f->fb.started[0]);
  r->state = SCHED_RUNNER_STOPPING;
  assert_int_equal(runner_ctl_sched_ops.retire(f->rc, r), 0);
  answer_done(pending(CALL_DELETE, 0), -EBUSY, 422);
  assert_int_equal(f->fb.nstopped, 0);
  /* Busy with that job: not retired again while it runs. */
  assert_int_equal(sched_runner_find(f->s, f->fb.started[0])->state,
                   SCHED_RUNNER_BUSY);
  r->state = SCHED_RUNNER_STOPPING;
  assert_int_equal(runner_ctl_sched_ops.retire(f->rc, r), 0);
  answer_done(pending(CALL_DELETE, 0), 0, 204);
  assert_int_equal(f->fb.nstopped, 1);
  assert_string_equal(f->fb.stopped[0], f->fb.started[0]);
  event(f, BACKEND_EXITED, f->fb.started[0], 143);
  assert_int_equal(totals(f).holds, 0);
  assert_int_equal(count_calls(CALL_DELETE), 2); /* no third: retired */
}

static void stopped_cb(void *arg)
{
  ((struct fixture *)arg)->stopped++;
}

/* The stop deregisters idle runners and waits for JIT requests in flight,
 * whose registrations it deletes too; no new start is taken. */
static void test_stop_waits_for_github(void **state)
{
  struct fixture *f = *state;
  int64_t idle_id, late_id;

  queue_job(f, "cpu");
  pass(f);
  idle_id = answer_jit(pending(CALL_JIT, 0), 0, 201);
  event(f, BACKEND_RUNNING, f->fb.started[0], 0);
  queue_job(f, "cpu");
  pass(f); /* one more JIT: the first runner covers the first job */
  assert_int_equal(runner_ctl_starts_in_flight(f->rc), 1);
  runner_ctl_stop(f->rc, 60000, stopped_cb, f);
  assert_int_equal(f->stopped, 0);
  assert_int_equal(pending(CALL_DELETE, 0)->id, idle_id);
  answer_done(pending(CALL_DELETE, 0), 0, 204);
  assert_int_equal(f->stopped, 0); /* the JIT request is still out */
  late_id = answer_jit(pending(CALL_JIT, 0), 0, 201);
  assert_int_equal(f->fb.nstarted, 1); /* not started */
  assert_int_equal(pending(CALL_DELETE, 0)->id, late_id);
  answer_done(pending(CALL_DELETE, 0), 0, 204);
  assert_int_equal(f->stopped, 1);
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 2);
  assert_int_equal(totals(f).holds, 1); /* the running one, until it exits */
  event(f, BACKEND_EXITED, f->fb.started[0], 143);
  assert_int_equal(totals(f).holds, 0);
}

static void test_stop_deadline(void **state)
{
  struct fixture *f = *state;

  queue_job(f, "cpu");
  pass(f);
  runner_ctl_stop(f->rc, 20, stopped_cb, f);
  while (f->stopped == 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(f->stopped, 1);
  /* A late answer after the deadline changes nothing and ends no stop. */
  answer_jit(pending(CALL_JIT, 0), -ECANCELED, 0);
  assert_int_equal(f->stopped, 1);
}

/* At start, what the backend still runs that this run does not know is
 * stopped, its capacity held until it is gone; this fleet's idle
 * registrations that nobody owns are deleted, others' and busy ones kept. */
static void test_start_reconciles(void **state)
{
  struct fixture *f = *state;
  struct backend_item *it = &f->fb.items[0];
  struct gh_runner regs[4];
  struct fake_call *list;

  memset(it, 0, sizeof(*it));
  it->name = "rf-gpu-2-0123abcd-beef-3";
  it->pool = "gpu-2";
  snprintf(it->where.node, sizeof(it->where.node), "host");
  it->where.gpus[0] = 1;
  it->where.ngpus = 1;
  it->running = 1;
  f->fb.nitems = 1;
  runner_ctl_close(f->rc, closed_cb, f);
  while (!f->closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->closed = 0;
  assert_int_equal(runner_ctl_start(f->rc, 1), 0);
  assert_int_equal(f->fb.nstopped, 1);
  assert_string_equal(f->fb.stopped[0], it->name);
  assert_int_equal(totals(f).gpus_held, 1);
  queue_job(f, "gpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 0); /* GPU 1 is still held */
  event(f, BACKEND_EXITED, it->name, 143);
  assert_int_equal(totals(f).holds, 0);
  memset(regs, 0, sizeof(regs));
  regs[0].id = 1;
  snprintf(regs[0].name, sizeof(regs[0].name), "rf-cpu-0123abcd-beef-1");
  regs[1].id = 2; /* busy: GitHub removes it after its job */
  regs[1].busy = 1;
  snprintf(regs[1].name, sizeof(regs[1].name), "rf-cpu-0123abcd-beef-2");
  regs[2].id = 3; /* another fleet's */
  snprintf(regs[2].name, sizeof(regs[2].name), "rf-cpu-99999999-beef-1");
  regs[3].id = 4; /* not runfleet's at all */
  snprintf(regs[3].name, sizeof(regs[3].name), "build-box");
  list = pending(CALL_LIST, 0);
  answer_runners(list, regs, 4);
  assert_true(deleted(1));
  assert_false(deleted(2) || deleted(3) || deleted(4));
}

/* A runner the journal knows and the backend still runs is adopted: held
 * where it is, idle in the scheduler with its registration, and it covers
 * a queued job (no second runner). A journaled runner the backend no
 * longer runs is gone: its registration is deleted. */
static void test_start_adopts_journaled_runners(void **state)
{
  struct fixture *f = *state;
  struct backend_item *it = &f->fb.items[0];
  struct journal_runner alive, gone;
  const struct sched_runner *r;

  memset(it, 0, sizeof(*it));
  it->name = "rf-gpu-2-0123abcd-beef-3";
  it->pool = "gpu-2";
  snprintf(it->where.node, sizeof(it->where.node), "host");
  it->where.gpus[0] = 0;
  it->where.gpus[1] = 1;
  it->where.ngpus = 2;
  it->where.cpu_milli = 1000;
  it->running = 1;
  f->fb.nitems = 1;
  memset(&alive, 0, sizeof(alive));
  snprintf(alive.name, sizeof(alive.name), "%s", it->name);
  snprintf(alive.pool, sizeof(alive.pool), "gpu-2");
  snprintf(alive.state, sizeof(alive.state), "running");
  alive.gh_id = 77;
  gone = alive;
  snprintf(gone.name, sizeof(gone.name), "rf-cpu-0123abcd-beef-9");
  snprintf(gone.pool, sizeof(gone.pool), "cpu");
  gone.gh_id = 78;
  runner_ctl_close(f->rc, closed_cb, f);
  while (!f->closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->closed = 0;
  assert_int_equal(runner_ctl_replay_runner(f->rc, &alive), 0);
  assert_int_equal(runner_ctl_replay_runner(f->rc, &gone), 0);
  assert_int_equal(runner_ctl_start(f->rc, 0), 0);
  assert_int_equal(f->fb.nstopped, 0);
  r = sched_runner_find(f->s, it->name);
  assert_non_null(r);
  assert_int_equal(r->state, SCHED_RUNNER_IDLE);
  assert_int_equal(r->gh_id, 77);
  assert_int_equal(r->ngpus, 2);
  assert_int_equal(totals(f).gpus_held, 2);
  assert_null(sched_runner_find(f->s, gone.name));
  assert_true(deleted(78));
  /* The adopted idle runner covers one queued GPU job: nothing new. */
  queue_job(f, "gpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 0);
  /* It ends like any runner: its hold goes. */
  event(f, BACKEND_EXITED, it->name, 0);
  assert_int_equal(totals(f).holds, 0);
}

/* A runner this replica never journaled but whose registration the
 * backend knows (another replica, the leader before this one, started
 * it): adopted with that registration, not stopped. One the backend knows
 * no registration of is stopped as before. */
static void test_takeover_adopts_runners_another_replica_started(void **state)
{
  struct fixture *f = *state;
  struct backend_item *it = &f->fb.items[0];
  const struct sched_runner *r;

  memset(f->fb.items, 0, 2 * sizeof(*it));
  it->name = "rf-gpu-2-0123abcd-beef-3";
  it->pool = "gpu-2";
  snprintf(it->where.node, sizeof(it->where.node), "host");
  it->where.gpus[0] = 0;
  it->where.ngpus = 1;
  it->running = 1;
  it->gh_id = 91;
  f->fb.items[1] = *it;
  f->fb.items[1].name = "rf-gpu-2-0123abcd-beef-4";
  f->fb.items[1].where.gpus[0] = 1;
  f->fb.items[1].gh_id = 0;
  f->fb.nitems = 2;
  runner_ctl_close(f->rc, closed_cb, f);
  while (!f->closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->closed = 0;
  assert_int_equal(runner_ctl_start(f->rc, 0), 0);
  r = sched_runner_find(f->s, it->name);
  assert_non_null(r);
  assert_int_equal(r->gh_id, 91);
  assert_int_equal(f->fb.nstopped, 1);
  assert_string_equal(f->fb.stopped[0], "rf-gpu-2-0123abcd-beef-4");
  assert_int_equal(totals(f).gpus_held, 2);
  /* A later takeover adopts nothing twice. */
  runner_ctl_takeover(f->rc, 0);
  assert_int_equal(f->fb.nstopped, 1);
  assert_int_equal(sched_nrunners(f->s), 1);
}

static int fence_open;

static int fence(void *arg)
{
  (void)arg;
  return fence_open;
}

/* The Lease lost while a JIT request was out: its config starts no
 * runner and deregisters nothing (the new leader sweeps it), and no
 * further JIT config is asked for. */
static void test_fence_stops_starts(void **state)
{
  struct fixture *f = *state;

  runner_ctl_set_fence(f->rc, fence, NULL);
  fence_open = 1;
  queue_job(f, "cpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 1);
  fence_open = 0;
  answer_jit(pending(CALL_JIT, 0), 0, 201);
  assert_int_equal(f->fb.nstarted, 0);
  assert_int_equal(totals(f).holds, 0);
  queue_job(f, "cpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 1);
  assert_int_equal(count_calls(CALL_DELETE), 0);
  fence_open = 1;
}

/* A runner that fails before a job while this replica is fenced leaves
 * its registration alone: the writes are the leader's. */
static void test_fence_stops_deregistration(void **state)
{
  struct fixture *f = *state;

  runner_ctl_set_fence(f->rc, fence, NULL);
  fence_open = 1;
  queue_job(f, "cpu");
  pass(f);
  answer_jit(pending(CALL_JIT, 0), 0, 201);
  assert_int_equal(f->fb.nstarted, 1);
  event(f, BACKEND_RUNNING, f->fb.started[0], 0);
  fence_open = 0;
  event(f, BACKEND_EXITED, f->fb.started[0], 1);
  assert_int_equal(totals(f).holds, 0);
  assert_int_equal(count_calls(CALL_DELETE), 0);
  fence_open = 1;
}

/* A backend that lists later (a cluster watch): nothing is adopted,
 * stopped, forgotten or swept before its BACKEND_LISTED; then the
 * journaled runner it lists is adopted and GitHub swept. */
static void test_reconcile_waits_for_the_backend_list(void **state)
{
  struct fixture *f = *state;
  struct backend_item *it = &f->fb.items[0];
  struct backend_ops ops = fb_ops;
  struct backend_event ev;
  struct journal_runner jr;

  ops.synced = fb_synced;
  fb_listed = 0;
  f->fb.base.ops = &ops;
  runner_ctl_close(f->rc, closed_cb, f);
  while (!f->closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->closed = 0;
  memset(&jr, 0, sizeof(jr));
  snprintf(jr.name, sizeof(jr.name), "rf-cpu-0123abcd-beef-4");
  snprintf(jr.pool, sizeof(jr.pool), "cpu");
  jr.gh_id = 91;
  assert_int_equal(runner_ctl_replay_runner(f->rc, &jr), 0);
  assert_int_equal(runner_ctl_start(f->rc, 1), 0);
  assert_null(sched_runner_find(f->s, jr.name));
  assert_false(deleted(91));
  assert_int_equal(count_calls(CALL_LIST), 0);
  /* The watch has listed: the pod runs. */
  memset(it, 0, sizeof(*it));
  it->name = jr.name;
  it->pool = "cpu";
  snprintf(it->where.node, sizeof(it->where.node), "host");
  it->where.cpu_milli = 1000;
  it->running = 1;
  f->fb.nitems = 1;
  fb_listed = 1;
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_LISTED;
  runner_ctl_backend_event(f->rc, &ev);
  assert_non_null(sched_runner_find(f->s, jr.name));
  assert_int_equal(f->fb.nstopped, 0);
  assert_false(deleted(91));
  assert_int_equal(count_calls(CALL_LIST), 1);
  event(f, BACKEND_EXITED, jr.name, 0);
  f->fb.base.ops = &fb_ops;
}

/* Before a late-listing backend has listed, nothing is placed: a GPU job
 * queued then would take the GPUs of the pod the list is about to show,
 * and that runner, busy with its job, could not be adopted and would be
 * stopped. After the list the runner is adopted and covers the job. */
static void test_nothing_is_placed_before_the_backend_list(void **state)
{
  struct fixture *f = *state;
  struct backend_item *it = &f->fb.items[0];
  struct backend_ops ops = fb_ops;
  struct backend_event ev;
  struct journal_runner jr;

  ops.synced = fb_synced;
  fb_listed = 0;
  f->fb.base.ops = &ops;
  runner_ctl_close(f->rc, closed_cb, f);
  while (!f->closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->closed = 0;
  memset(&jr, 0, sizeof(jr));
  snprintf(jr.name, sizeof(jr.name), "rf-gpu-2-0123abcd-beef-5");
  snprintf(jr.pool, sizeof(jr.pool), "gpu-2");
  snprintf(jr.state, sizeof(jr.state), "running");
  jr.gh_id = 92;
  assert_int_equal(runner_ctl_replay_runner(f->rc, &jr), 0);
  assert_int_equal(runner_ctl_start(f->rc, 0), 0);
  queue_job(f, "gpu");
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 0);
  assert_int_equal(totals(f).holds, 0);
  assert_int_equal(failures(f, 1), 0);
  /* The watch lists the pod on both GPUs. */
  memset(it, 0, sizeof(*it));
  it->name = jr.name;
  it->pool = "gpu-2";
  snprintf(it->where.node, sizeof(it->where.node), "host");
  it->where.gpus[0] = 0;
  it->where.gpus[1] = 1;
  it->where.ngpus = 2;
  it->where.cpu_milli = 1000;
  it->running = 1;
  f->fb.nitems = 1;
  fb_listed = 1;
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_LISTED;
  runner_ctl_backend_event(f->rc, &ev);
  assert_non_null(sched_runner_find(f->s, jr.name));
  assert_int_equal(f->fb.nstopped, 0);
  assert_int_equal(totals(f).gpus_held, 2);
  pass(f);
  assert_int_equal(count_calls(CALL_JIT), 0);
  event(f, BACKEND_EXITED, jr.name, 0);
  assert_int_equal(totals(f).holds, 0);
  f->fb.base.ops = &fb_ops;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          test_hold_before_jit_and_start_at_placement, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lost_jit_answer_is_looked_up, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_jit_5xx_is_looked_up, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_jit_409_is_looked_up, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_backend_enospc_drops_without_failure,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_backend_refuses_pool, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_backend_failure_counts, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_jit_refused_counts_and_releases,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_exit_before_job_deregisters, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_retire, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_waits_for_github, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stop_deadline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_reconciles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_adopts_journaled_runners,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_takeover_adopts_runners_another_replica_started, setup,
          teardown),
      cmocka_unit_test_setup_teardown(test_fence_stops_starts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fence_stops_deregistration, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reconcile_waits_for_the_backend_list,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_nothing_is_placed_before_the_backend_list, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
