/* Scheduler policy: matching, demand and supply, order under short
 * capacity, surplus and idle retirement, failure backoff, runner names.
 * The ops are a recording stand-in for the owner whose capacity shrinks as
 * runners start and grows back as they exit, so that the order of starts
 * under short capacity is what a test sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler.h"

#define FAKE_MAX 256

struct fake {
  const struct config *cfg; /* what a runner of each pool takes */
  unsigned free_gpus;
  unsigned free_cpus;
  int start_rc;
  int retire_rc;
  char started[FAKE_MAX][SCHED_NAME_MAX];
  int started_pool[FAKE_MAX];
  unsigned taken_gpus[FAKE_MAX], taken_cpus[FAKE_MAX];
  int gone[FAKE_MAX];
  size_t nstarted;
  char retired[FAKE_MAX][SCHED_NAME_MAX];
  size_t nretired;
};

static int fake_fits(void *ctx, const struct cfg_pool *pool)
{
  struct fake *f = ctx;
  return pool->gpus <= f->free_gpus && pool->cpus <= f->free_cpus;
}

static int fake_start(void *ctx, struct sched_runner *r)
{
  struct fake *f = ctx;
  const struct cfg_pool *pool = &f->cfg->pools[r->pool];

  if (f->start_rc != 0)
    return f->start_rc;
  if (!fake_fits(f, pool) || f->nstarted == FAKE_MAX)
    return -ENOSPC;
  snprintf(f->started[f->nstarted], SCHED_NAME_MAX, "%s", r->name);
  f->started_pool[f->nstarted] = r->pool;
  f->taken_gpus[f->nstarted] = pool->gpus;
  f->taken_cpus[f->nstarted] = pool->cpus;
  f->free_gpus -= pool->gpus;
  f->free_cpus -= pool->cpus;
  f->nstarted++;
  return 0;
}

static int fake_retire(void *ctx, struct sched_runner *r)
{
  struct fake *f = ctx;
  if (f->retire_rc != 0)
    return f->retire_rc;
  snprintf(f->retired[f->nretired++], SCHED_NAME_MAX, "%s", r->name);
  return 0;
}

static const struct sched_ops fake_ops = {
    .start = fake_start, .retire = fake_retire, .fits = fake_fits};

/* The process of runner name ends: its capacity is free again, and the
 * owner tells the scheduler. */
static void fake_exited(struct fake *f, struct scheduler *s, const char *name,
                        int status, uint64_t now_ms)
{
  size_t i;

  for (i = 0; i < f->nstarted; i++) {
    if (f->gone[i] || strcmp(f->started[i], name) != 0)
      continue;
    f->gone[i] = 1;
    f->free_gpus += f->taken_gpus[i];
    f->free_cpus += f->taken_cpus[i];
    break;
  }
  assert_true(i < f->nstarted);
  sched_runner_exited(s, name, status, now_ms);
}

/* Started runner i comes up, takes the job of e, finishes it and exits. */
static void fake_runs_job(struct fake *f, struct scheduler *s, size_t i,
                          struct sched_job_event *e, uint64_t now_ms)
{
  sched_runner_running(s, f->started[i], (int64_t)i + 1, NULL, 0, now_ms);
  e->runner_name = f->started[i];
  assert_int_equal(sched_job_in_progress(s, e, now_ms + 1), 0);
  e->conclusion = "success";
  assert_int_equal(sched_job_completed(s, e, now_ms + 2), 0);
  fake_exited(f, s, f->started[i], 0, now_ms + 3);
}

static void add_pool(struct config *cfg, const char *name, const char *labels,
                     unsigned max, unsigned min_idle, int prio, unsigned gpus)
{
  struct cfg_pool *p = &cfg->pools[cfg->npools++];
  char *copy = strdup(labels), *tok, *save = NULL;

  memset(p, 0, sizeof(*p));
  p->name = strdup(name);
  p->labels[p->nlabels++] = strdup("self-hosted");
  for (tok = strtok_r(copy, ",", &save); tok != NULL;
       tok = strtok_r(NULL, ",", &save))
    p->labels[p->nlabels++] = strdup(tok);
  free(copy);
  p->max_runners = max;
  p->min_idle = min_idle;
  p->priority = prio;
  p->gpus = gpus;
  p->cpus = 1;
  p->idle_timeout_ms = 60000;
}

static void free_cfg(struct config *cfg)
{
  size_t i, k;
  for (i = 0; i < cfg->npools; i++) {
    free(cfg->pools[i].name);
    for (k = 0; k < cfg->pools[i].nlabels; k++)
      free(cfg->pools[i].labels[k]);
  }
}

/* Three pools: cpu (prio 0), gpu-1 (prio 10, 1 GPU), gpu-2 (prio 5, 2). */
static void std_config(struct config *cfg)
{
  memset(cfg, 0, sizeof(*cfg));
  add_pool(cfg, "cpu", "linux,x64", 8, 0, 0, 0);
  add_pool(cfg, "gpu-1", "linux,x64,gpu", 4, 0, 10, 1);
  add_pool(cfg, "gpu-2", "linux,x64,gpu,multi-gpu", 2, 0, 5, 2);
}

static struct sched_job_event ev(int64_t id, const char *repo, char **labels,
                                 size_t n)
{
  struct sched_job_event e;
  memset(&e, 0, sizeof(e));
  e.job_id = id;
  e.run_id = id * 10;
  e.repo = repo;
  e.name = "build";
  e.labels = labels;
  e.nlabels = n;
  return e;
}

/* A wall clock the test sets: job times are read from it, timers from
 * the now_ms each call passes. */
static uint64_t test_wall(void *arg)
{
  return *(const uint64_t *)arg;
}

#define WALL_BASE 1700000000000ull /* Unix ms, November 2023 */

static char *cpu_labels[] = {"self-hosted", "Linux", "X64"};
static char *gpu_labels[] = {"self-hosted", "gpu"};
static char *gpu2_labels[] = {"multi-gpu"};

static void test_match_pool(void **state)
{
  struct config cfg;
  char *none[] = {"ubuntu-latest"};
  char *only_sh[] = {"self-hosted"};

  (void)state;
  std_config(&cfg);
  assert_int_equal(sched_match_pool(&cfg, cpu_labels, 3), 0);
  /* gpu is in gpu-1 and gpu-2: the most specific (fewest labels) wins. */
  assert_int_equal(sched_match_pool(&cfg, gpu_labels, 2), 1);
  assert_int_equal(sched_match_pool(&cfg, gpu2_labels, 1), 2);
  assert_int_equal(sched_match_pool(&cfg, none, 1), -1);
  /* Only "self-hosted": every pool matches; the smallest is cpu. */
  assert_int_equal(sched_match_pool(&cfg, only_sh, 1), 0);
  free_cfg(&cfg);
}

static void test_job_lifecycle(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;
  uint64_t wall = WALL_BASE;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_set_wall_clock(s, test_wall, &wall);
  assert_int_equal(sched_job_waiting(s, &e, 100), 0);
  assert_int_equal(sched_reconcile(s, 100), 0); /* waiting is no demand */
  wall = WALL_BASE + 200;
  assert_int_equal(sched_job_queued(s, &e, 200), 0);
  assert_int_equal(sched_job_queued(s, &e, 201), 0); /* duplicate */
  assert_int_equal(sched_reconcile(s, 200), 1);
  assert_int_equal(f.nstarted, 1);
  assert_int_equal(sched_reconcile(s, 300), 0); /* covered by starting */
  sched_runner_running(s, f.started[0], 77, NULL, 0, 400);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.queued, 1);
  assert_int_equal(st.idle, 1);
  e.runner_name = f.started[0];
  wall = WALL_BASE + 1400;
  assert_int_equal(sched_job_in_progress(s, &e, 1400), 0);
  assert_int_equal(
      sched_job_find(s, 1)->started_ms - sched_job_find(s, 1)->queued_ms, 1200);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.busy, 1);
  e.conclusion = "success";
  assert_int_equal(sched_job_completed(s, &e, 2000), 0);
  fake_exited(&f, s, f.started[0], 0, 2100);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.busy + st.idle + st.starting, 0);
  assert_int_equal(st.runner_failures, 0);
  assert_int_equal(st.jobs_completed, 1);
  assert_int_equal(sched_reconcile(s, 3000), 0);
  assert_int_equal(f.nretired, 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_unmatched_counted(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  char *hosted[] = {"ubuntu-latest"};
  struct sched_job_event e = ev(9, "acme/a", hosted, 1);

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  assert_int_equal(sched_job_queued(s, &e, 1), -1);
  assert_int_equal(sched_unmatched_total(s), 1);
  assert_int_equal(sched_njobs(s), 0);
  assert_int_equal(sched_reconcile(s, 2), 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_max_runners(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 64, .free_cpus = 64};
  struct scheduler *s;
  int64_t i;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  for (i = 1; i <= 20; i++) {
    struct sched_job_event e = ev(i, "acme/a", gpu_labels, 2);
    sched_job_queued(s, &e, (uint64_t)i);
  }
  assert_int_equal(sched_reconcile(s, 100), 4);
  assert_int_equal(sched_reconcile(s, 200), 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* One pool per job, named and labelled "j<id>": starts are per pool, so the
 * pool of each start tells whose demand it served. Returns the job's event,
 * whose labels point into the pool. */
static struct sched_job_event own_pool_job(struct config *cfg, int64_t id,
                                           const char *repo, int prio,
                                           unsigned gpus)
{
  char name[16];
  size_t k = cfg->npools;

  snprintf(name, sizeof(name), "j%lld", (long long)id);
  add_pool(cfg, name, name, 4, 0, prio, gpus);
  return ev(id, repo, &cfg->pools[k].labels[1], 1);
}

/* Asserts that the starts from the first-th on went to the pools of jobs
 * ids, in that order (pools made by own_pool_job, j<id> at index id - 1). */
static void assert_started(const struct fake *f, size_t first,
                           const int64_t *ids, size_t n)
{
  size_t i;

  assert_int_equal(f->nstarted, first + n);
  for (i = 0; i < n; i++)
    assert_int_equal(f->started_pool[first + i], (int)(ids[i] - 1));
}

/* Priority first, then repositories take turns, then arrival order: the
 * order the runners start in, seen one job per pool while GPUs run out. */
static void test_priority_then_round_robin(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 64};
  struct scheduler *s;
  struct sched_job_event e[7];
  static const int64_t first[] = {2, 5, 3, 6, 7}, then[] = {4}, last[] = {1};
  size_t i;

  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  e[0] = own_pool_job(&cfg, 1, "acme/big", 5, 1); /* arrives first */
  e[1] = own_pool_job(&cfg, 2, "acme/zeta", 10, 1);
  e[2] = own_pool_job(&cfg, 3, "acme/zeta", 10, 1);
  e[3] = own_pool_job(&cfg, 4, "acme/zeta", 10, 1);
  e[4] = own_pool_job(&cfg, 5, "acme/alpha", 10, 1);
  e[5] = own_pool_job(&cfg, 6, "acme/alpha", 10, 1);
  e[6] = own_pool_job(&cfg, 7, "acme/c", 0, 0); /* CPU only */
  s = sched_new(&cfg, &fake_ops, &f);
  for (i = 0; i < 7; i++)
    assert_int_equal(sched_job_queued(s, &e[i], 1 + i), 0);
  /* Four GPUs: priority 10 in turns zeta, alpha, zeta, alpha (zeta first
   * in each turn as it queued first, whatever the names' order); zeta's
   * third and the priority-5 job find no GPU, the CPU job goes on. */
  assert_int_equal(sched_reconcile(s, 10), 5);
  assert_started(&f, 0, first, 5);
  /* One GPU comes back: the priority-10 job, not the earlier priority 5. */
  fake_runs_job(&f, s, 0, &e[1], 20);
  assert_int_equal(sched_reconcile(s, 30), 1);
  assert_started(&f, 5, then, 1);
  fake_runs_job(&f, s, 1, &e[4], 40);
  assert_int_equal(sched_reconcile(s, 50), 1);
  assert_started(&f, 6, last, 1);
  assert_int_equal(sched_reconcile(s, 60), 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* GPU jobs that cannot get their GPUs wait in order while CPU jobs go on;
 * a 2-GPU job that queued first still waits behind priority 10. */
static void test_order_under_short_capacity(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 3, .free_cpus = 64};
  struct scheduler *s;
  struct sched_job_event e[6];
  size_t i;

  (void)state;
  std_config(&cfg);
  cfg.pools[1].max_runners = 10;
  s = sched_new(&cfg, &fake_ops, &f);
  e[0] = ev(1, "acme/big", gpu2_labels, 1); /* prio 5, first to arrive */
  e[1] = ev(2, "acme/a", gpu_labels, 2);    /* prio 10 */
  e[2] = ev(3, "acme/a", gpu_labels, 2);
  e[3] = ev(4, "acme/a", gpu_labels, 2);
  e[4] = ev(5, "acme/b", gpu_labels, 2);
  e[5] = ev(6, "acme/c", cpu_labels, 3); /* CPU goes on regardless */
  for (i = 0; i < 6; i++)
    sched_job_queued(s, &e[i], 1 + i);
  /* Three GPUs: three gpu-1 runners, then no GPU is left for the fourth
   * gpu-1 job nor the gpu-2 job, and the CPU job starts. */
  assert_int_equal(sched_reconcile(s, 10), 4);
  assert_int_equal(f.nstarted, 4);
  assert_int_equal(f.started_pool[0], 1);
  assert_int_equal(f.started_pool[1], 1);
  assert_int_equal(f.started_pool[2], 1);
  assert_int_equal(f.started_pool[3], 0);
  assert_int_equal(f.free_gpus, 0);
  /* A gpu-1 runner is done: its GPU goes to the fourth gpu-1 job. */
  fake_runs_job(&f, s, 0, &e[1], 20);
  assert_int_equal(sched_reconcile(s, 30), 1);
  assert_int_equal(f.started_pool[4], 1);
  /* One GPU is not enough for gpu-2; two are. */
  fake_runs_job(&f, s, 1, &e[2], 40);
  assert_int_equal(sched_reconcile(s, 50), 0);
  assert_int_equal(sched_job_find(s, 1)->status, SCHED_JOB_QUEUED);
  fake_runs_job(&f, s, 2, &e[3], 60);
  assert_int_equal(sched_reconcile(s, 70), 1);
  assert_int_equal(f.nstarted, 6);
  assert_int_equal(f.started_pool[5], 2);
  assert_int_equal(f.free_gpus, 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* Two GPU pools of the same priority share two GPUs. Repository a queued
 * three jobs before repository b queued one: FIFO would give both GPUs to
 * a; round-robin gives one to each, then a's next turn comes. */
static void test_round_robin_order(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 2, .free_cpus = 64};
  struct scheduler *s;
  struct sched_job_event e[4];
  char *x_labels[] = {"x"};
  char *y_labels[] = {"y"};
  size_t i;

  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  add_pool(&cfg, "gpu-x", "x", 8, 0, 0, 1);
  add_pool(&cfg, "gpu-y", "y", 8, 0, 0, 1);
  s = sched_new(&cfg, &fake_ops, &f);
  e[0] = ev(1, "acme/a", x_labels, 1);
  e[1] = ev(2, "acme/a", x_labels, 1);
  e[2] = ev(3, "acme/a", x_labels, 1);
  e[3] = ev(4, "acme/b", y_labels, 1);
  for (i = 0; i < 4; i++)
    sched_job_queued(s, &e[i], 1 + i);
  assert_int_equal(sched_reconcile(s, 10), 2);
  assert_int_equal(f.nstarted, 2);
  assert_int_equal(f.started_pool[0], 0);
  assert_int_equal(f.started_pool[1], 1);
  fake_runs_job(&f, s, 1, &e[3], 20);
  assert_int_equal(sched_reconcile(s, 30), 1);
  assert_int_equal(f.started_pool[2], 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* A repository's turn counts its jobs already running: a has two running
 * and b none, so the one free GPU goes to b's job although a's queued
 * first. */
static void test_round_robin_counts_running_jobs(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 3, .free_cpus = 64};
  struct scheduler *s;
  struct sched_job_event e[4];
  char *x_labels[] = {"x"};
  char *y_labels[] = {"y"};
  size_t i;

  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  add_pool(&cfg, "gpu-x", "x", 8, 0, 0, 1);
  add_pool(&cfg, "gpu-y", "y", 8, 0, 0, 1);
  s = sched_new(&cfg, &fake_ops, &f);
  e[0] = ev(1, "acme/a", x_labels, 1);
  e[1] = ev(2, "acme/a", x_labels, 1);
  for (i = 0; i < 2; i++)
    sched_job_queued(s, &e[i], 1 + i);
  assert_int_equal(sched_reconcile(s, 10), 2);
  for (i = 0; i < 2; i++) {
    sched_runner_running(s, f.started[i], (int64_t)i + 1, NULL, 0, 20);
    e[i].runner_name = f.started[i];
    assert_int_equal(sched_job_in_progress(s, &e[i], 21), 0);
  }
  e[2] = ev(3, "acme/a", x_labels, 1);
  e[3] = ev(4, "acme/b", y_labels, 1);
  sched_job_queued(s, &e[2], 30);
  sched_job_queued(s, &e[3], 31);
  assert_int_equal(sched_reconcile(s, 40), 1);
  assert_int_equal(f.nstarted, 3);
  assert_int_equal(f.started_pool[2], 1);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* A stopping runner is still there until its owner says it is gone: it
 * holds its place in max_runners against new demand. */
static void test_stopping_runner_counts_against_max(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e1 = ev(1, "acme/a", cpu_labels, 3);
  struct sched_job_event e2 = ev(2, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  cfg.pools[0].max_runners = 1;
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e1, 1);
  assert_int_equal(sched_reconcile(s, 2), 1);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 3);
  e1.conclusion = "cancelled";
  sched_job_completed(s, &e1, 4);
  assert_int_equal(sched_reconcile(s, 5), 1);
  assert_int_equal(f.nretired, 1);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.stopping, 1);
  sched_job_queued(s, &e2, 6);
  assert_int_equal(sched_reconcile(s, 7), 0);
  assert_int_equal(f.nstarted, 1);
  fake_exited(&f, s, f.retired[0], 143, 8);
  assert_int_equal(sched_reconcile(s, 9), 1);
  assert_int_equal(f.nstarted, 2);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* The same for min_idle: the replacement of a runner retired at its start
 * timeout waits until the old one is gone when max_runners is 1. */
static void test_stopping_runner_counts_against_max_min_idle(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;

  (void)state;
  std_config(&cfg);
  cfg.runner_start_timeout_ms = 5000;
  cfg.pools[0].max_runners = 1;
  cfg.pools[0].min_idle = 1;
  s = sched_new(&cfg, &fake_ops, &f);
  assert_int_equal(sched_reconcile(s, 0), 1);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 10);
  assert_int_equal(sched_reconcile(s, 5000), 1);
  assert_int_equal(f.nretired, 1);
  assert_int_equal(f.nstarted, 1);
  fake_exited(&f, s, f.retired[0], 143, 5100);
  assert_int_equal(sched_reconcile(s, 5101), 1);
  assert_int_equal(f.nstarted, 2);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* Names are read from the end: only "-<tag>-<4 hex>-<n>" after a
 * non-empty pool makes a name ours; the pool part may hold anything. */
static void test_name_is_ours(void **state)
{
  static const char *const ours[] = {
      "rf-gpu-1-0a1b2c3d-beef-7", "rf-gpu-1-0a1b2c3d-0000-4294967295",
      "rf-x-0a1b2c3d-0a1b2c3d-abcd-1",
      "rf-x-ffff0000-y-0a1b2c3d-abcd-1", /* another tag inside the pool */
  };
  static const char *const theirs[] = {
      "rf-gpu-1-ffff0000-beef-7",        /* another fleet */
      "rf-x-0a1b2c3d-y-ffff0000-abcd-1", /* our tag inside the pool */
      "rf-cpu-ffff0000-0a1b2c3d-3",      /* our tag, no boot */
      "rf-gpu-1-x0a1b2c3d-beef-7",
      "rf-gpu-1-0a1b2c3dx-beef-7",
      "rf-gpu-1-0a1b2c3d",
      "rf-gpu-1-0a1b2c3d-",
      "rf-gpu-1-0a1b2c3d-beef",
      "rf-gpu-1-0a1b2c3d-beef-",
      "rf-gpu-1-0a1b2c3d-beef-7x",
      "rf-gpu-1-0a1b2c3d-beef-7-",
      "rf-gpu-1-0a1b2c3d-BEEF-7",
      "rf-gpu-1-0a1b2c3d-bee-7",
      "rf-gpu-1-0a1b2c3d-beeg-7",
      "rf-gpu-1-0a1b2c3d-1beef-7",
      "rf-gpu-1-0a1b2c3d-beef-7-abcd-1",
      "rf--0a1b2c3d-beef-7", /* no pool */
      "rf-0a1b2c3d-beef-7",
      "xrf-gpu-1-0a1b2c3d-beef-7",
      "gh-gpu-1-0a1b2c3d-beef-7",
      "gpu-1-0a1b2c3d-beef-7",
      "",
  };
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s, *other;
  struct sched_job_event e = ev(1, "acme/a", gpu_labels, 2);
  size_t i;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  other = sched_new(&cfg, &fake_ops, &f);
  sched_set_tag(s, "0a1b2c3d");
  sched_set_tag(other, "ffff0000");
  /* What runner_new gives out, in a pool with a dash in its name. */
  sched_job_queued(s, &e, 1);
  assert_int_equal(sched_reconcile(s, 2), 1);
  assert_string_equal(cfg.pools[f.started_pool[0]].name, "gpu-1");
  assert_true(sched_name_is_ours(s, f.started[0]));
  assert_false(sched_name_is_ours(other, f.started[0]));
  for (i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) {
    if (!sched_name_is_ours(s, ours[i]))
      fail_msg("not ours: %s", ours[i]);
    if (sched_name_is_ours(other, ours[i]))
      fail_msg("ours for another tag: %s", ours[i]);
  }
  for (i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++)
    if (sched_name_is_ours(s, theirs[i]))
      fail_msg("ours: %s", theirs[i]);
  sched_destroy(other);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_cancel_retires_surplus(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e1 = ev(1, "acme/a", cpu_labels, 3);
  struct sched_job_event e2 = ev(2, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e1, 1);
  sched_job_queued(s, &e2, 2);
  assert_int_equal(sched_reconcile(s, 10), 2);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 20);
  sched_runner_running(s, f.started[1], 2, NULL, 0, 21);
  /* Both jobs are cancelled while queued. */
  e1.conclusion = "cancelled";
  e2.conclusion = "cancelled";
  sched_job_completed(s, &e1, 30);
  sched_job_completed(s, &e2, 31);
  assert_int_equal(sched_reconcile(s, 40), 2);
  assert_int_equal(f.nretired, 2);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.stopping, 2);
  /* GitHub said one is busy after all (it took a job): it is kept. */
  sched_runner_keep(s, f.retired[0], 50);
  fake_exited(&f, s, f.retired[1], 143, 60);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.stopping, 0);
  assert_int_equal(st.idle, 1);
  /* A retired runner is no failure. */
  assert_int_equal(st.runner_failures, 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_min_idle_and_idle_timeout(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e[3];
  struct sched_pool_stats st;
  size_t i;

  (void)state;
  std_config(&cfg);
  cfg.pools[0].min_idle = 1;
  cfg.pools[0].idle_timeout_ms = 1000;
  s = sched_new(&cfg, &fake_ops, &f);
  /* min_idle alone starts one runner. */
  assert_int_equal(sched_reconcile(s, 1), 1);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 2);
  assert_int_equal(sched_reconcile(s, 3), 0);
  /* Three jobs: two more runners (one idle already covers one job, plus
   * min_idle means one more than the queue). */
  for (i = 0; i < 3; i++) {
    e[i] = ev((int64_t)i + 1, "acme/a", cpu_labels, 3);
    sched_job_queued(s, &e[i], 10);
  }
  assert_int_equal(sched_reconcile(s, 11), 3);
  for (i = 1; i < 4; i++)
    sched_runner_running(s, f.started[i], (int64_t)i + 1, NULL, 0, 12);
  /* The jobs are cancelled: three surplus runners retired, one kept. */
  for (i = 0; i < 3; i++) {
    e[i].conclusion = "cancelled";
    sched_job_completed(s, &e[i], 20);
  }
  assert_int_equal(sched_reconcile(s, 21), 3);
  for (i = 0; i < f.nretired; i++)
    fake_exited(&f, s, f.retired[i], 143, 22);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.idle, 1);
  /* Past idle_timeout, the min_idle runner is still kept. */
  assert_int_equal(sched_reconcile(s, 100000), 0);
  /* With min_idle 0 (after a reload), it is retired once timed out. */
  cfg.pools[0].min_idle = 0;
  sched_set_config(s, &cfg);
  assert_int_equal(sched_reconcile(s, 100001), 1);
  assert_int_equal(f.nretired, 4);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* A runner dropped before it started (its JIT result unknown, or no
 * capacity after all) is no failure: it is replaced in the next pass. */
static void test_dropped_runner_is_no_failure(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e, 1);
  assert_int_equal(sched_reconcile(s, 10), 1);
  f.gone[0] = 1;
  f.free_cpus += f.taken_cpus[0];
  sched_runner_dropped(s, f.started[0], 20);
  assert_null(sched_runner_find(s, f.started[0]));
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.runner_failures, 0);
  assert_int_equal(sched_reconcile(s, 21), 1);
  assert_string_not_equal(f.started[0], f.started[1]);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_failure_backoff(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e, 1);
  assert_int_equal(sched_reconcile(s, 10), 1);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 20);
  /* It dies before taking a job: counted, replaced only after backoff. */
  fake_exited(&f, s, f.started[0], 1, 30);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.runner_failures, 1);
  assert_int_equal(sched_reconcile(s, 31), 0);
  assert_int_equal(sched_reconcile(s, 30 + SCHED_BACKOFF_MIN_MS), 1);
  /* A second failure doubles the wait. */
  fake_exited(&f, s, f.started[1], 1, 2000);
  assert_int_equal(sched_reconcile(s, 2000 + SCHED_BACKOFF_MIN_MS), 0);
  assert_int_equal(sched_reconcile(s, 2000 + 2 * SCHED_BACKOFF_MIN_MS), 1);
  /* A start that fails outright is counted too. */
  fake_exited(&f, s, f.started[2], 1, 5000);
  f.start_rc = -EIO;
  assert_int_equal(sched_reconcile(s, 100000), 0);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.runner_failures, 4);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_out_of_order_events(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  const struct sched_job *j;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  e.runner_name = "someone-else";
  sched_job_in_progress(s, &e, 5);
  e.runner_name = NULL;
  sched_job_queued(s, &e, 6); /* late queued: status stays in_progress */
  j = sched_job_find(s, 1);
  assert_int_equal(j->status, SCHED_JOB_IN_PROGRESS);
  assert_string_equal(j->runner, "someone-else");
  assert_int_equal(sched_reconcile(s, 7), 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* A runner started for one pool may be given a job of another (GitHub
 * assigns any matching job): the accounting stays right. */
static void test_fungible_cross_pool(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event cpu = ev(1, "acme/a", cpu_labels, 3);
  struct sched_job_event gpu = ev(2, "acme/a", gpu_labels, 2);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &cpu, 1);
  sched_job_queued(s, &gpu, 2);
  assert_int_equal(sched_reconcile(s, 3), 2);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 4);
  sched_runner_running(s, f.started[1], 2, NULL, 0, 4);
  /* The gpu runner takes the cpu job (its labels are a superset). */
  cpu.runner_name = f.started_pool[0] == 1 ? f.started[0] : f.started[1];
  sched_job_in_progress(s, &cpu, 5);
  sched_pool_stats(s, 1, &st);
  assert_int_equal(st.busy, 1);
  assert_int_equal(st.queued, 1);
  /* The gpu job is uncovered again: one more gpu runner; the idle cpu
   * runner is surplus. */
  assert_int_equal(sched_reconcile(s, 6), 2);
  assert_int_equal(f.nretired, 1);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* A runner that never gets a job is replaced after runner_start_timeout,
 * min_idle or not. */
static void test_start_timeout_replaces_runner(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;

  (void)state;
  std_config(&cfg);
  cfg.runner_start_timeout_ms = 5000;
  cfg.pools[0].min_idle = 1;
  s = sched_new(&cfg, &fake_ops, &f);
  assert_int_equal(sched_reconcile(s, 0), 1);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 10);
  assert_int_equal(sched_reconcile(s, 4999), 0);
  /* Retired and, being no failure, replaced in the same pass. */
  assert_int_equal(sched_reconcile(s, 5000), 2);
  assert_int_equal(f.nretired, 1);
  assert_string_equal(f.retired[0], f.started[0]);
  assert_int_equal(f.nstarted, 2);
  fake_exited(&f, s, f.retired[0], 143, 5100);
  assert_int_equal(sched_reconcile(s, 5101), 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* When GitHub cannot be asked now, the surplus runner stays idle (no busy
 * loop) and is retired on a later pass. */
static void test_retire_that_cannot_begin_is_retried(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e, 1);
  assert_int_equal(sched_reconcile(s, 2), 1);
  sched_runner_running(s, f.started[0], 1, NULL, 0, 3);
  e.conclusion = "cancelled";
  sched_job_completed(s, &e, 4);
  f.retire_rc = -EIO;
  assert_int_equal(sched_reconcile(s, 5), 0);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.idle, 1);
  assert_int_equal(st.stopping, 0);
  f.retire_rc = 0;
  assert_int_equal(sched_reconcile(s, 6), 1);
  assert_int_equal(f.nretired, 1);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* A job whose completed webhook was lost stops being demand once GitHub
 * would have ended it. */
static void test_lost_completion_expires(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e, 1);
  sched_reconcile(s, 2);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.queued, 1);
  sched_reconcile(s, SCHED_QUEUED_TTL_MS);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.queued, 1);
  sched_reconcile(s, SCHED_QUEUED_TTL_MS + 1);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.queued, 0);
  assert_string_equal(sched_job_find(s, 1)->conclusion, "expired");
  sched_destroy(s);
  free_cfg(&cfg);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_match_pool),
      cmocka_unit_test(test_job_lifecycle),
      cmocka_unit_test(test_unmatched_counted),
      cmocka_unit_test(test_max_runners),
      cmocka_unit_test(test_priority_then_round_robin),
      cmocka_unit_test(test_order_under_short_capacity),
      cmocka_unit_test(test_round_robin_order),
      cmocka_unit_test(test_round_robin_counts_running_jobs),
      cmocka_unit_test(test_stopping_runner_counts_against_max),
      cmocka_unit_test(test_stopping_runner_counts_against_max_min_idle),
      cmocka_unit_test(test_name_is_ours),
      cmocka_unit_test(test_cancel_retires_surplus),
      cmocka_unit_test(test_min_idle_and_idle_timeout),
      cmocka_unit_test(test_failure_backoff),
      cmocka_unit_test(test_dropped_runner_is_no_failure),
      cmocka_unit_test(test_out_of_order_events),
      cmocka_unit_test(test_fungible_cross_pool),
      cmocka_unit_test(test_start_timeout_replaces_runner),
      cmocka_unit_test(test_retire_that_cannot_begin_is_retried),
      cmocka_unit_test(test_lost_completion_expires),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
