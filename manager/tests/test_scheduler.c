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

#include "log.h"
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
  sched_runner_keep(s, f.retired[0], 1, 50);
  fake_exited(&f, s, f.retired[1], 143, 60);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.stopping, 0);
  assert_int_equal(st.busy, 1);
  /* Busy, it is not retired again on the next pass. */
  assert_int_equal(sched_reconcile(s, 70), 0);
  assert_int_equal(f.nretired, 2);
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

/* ---- the incremental order against a reference ----
 * A model of the fleet drives thousands of random events (jobs waiting,
 * queued, in progress, completed or cancelled, runners started, bound and
 * gone, reloads that change priorities and drop a pool). After each, the
 * order the scheduler keeps must be that of a plain sort of every queued
 * job, as the scheduler computed it before the order was kept; on each
 * pass, the runners started must be those that sort would start. */

#define MODEL_STEPS 6000
#define MODEL_RUNNERS 64

struct model {
  const struct config *cfg;
  unsigned free_gpus, free_cpus;
  char names[MODEL_RUNNERS][SCHED_NAME_MAX]; /* runners not gone */
  unsigned gpus[MODEL_RUNNERS], cpus[MODEL_RUNNERS];
  size_t nrunners;
  int started[CFG_MAX_POOLS * 8]; /* pools started in this pass */
  size_t nstarted;
};

static uint64_t model_rng = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n)
{
  model_rng ^= model_rng << 13;
  model_rng ^= model_rng >> 7;
  model_rng ^= model_rng << 17;
  return (unsigned)(model_rng % n);
}

static int model_fits(void *ctx, const struct cfg_pool *pool)
{
  struct model *m = ctx;
  return pool->gpus <= m->free_gpus && pool->cpus <= m->free_cpus;
}

static int model_start(void *ctx, struct sched_runner *r)
{
  struct model *m = ctx;
  const struct cfg_pool *pool = &m->cfg->pools[r->pool];

  assert_true(model_fits(m, pool));
  assert_true(m->nrunners < MODEL_RUNNERS);
  snprintf(m->names[m->nrunners], SCHED_NAME_MAX, "%s", r->name);
  m->gpus[m->nrunners] = pool->gpus;
  m->cpus[m->nrunners] = pool->cpus;
  m->nrunners++;
  m->free_gpus -= pool->gpus;
  m->free_cpus -= pool->cpus;
  m->started[m->nstarted++] = r->pool;
  return 0;
}

static int model_retire(void *ctx, struct sched_runner *r)
{
  (void)ctx;
  fail_msg("no runner of the model is ever idle: %s", r->name);
  return -1;
}

/* Runner i is gone: its capacity is free again. */
static void model_gone(struct model *m, size_t i)
{
  m->free_gpus += m->gpus[i];
  m->free_cpus += m->cpus[i];
  m->nrunners--;
  memcpy(m->names[i], m->names[m->nrunners], SCHED_NAME_MAX);
  m->gpus[i] = m->gpus[m->nrunners];
  m->cpus[i] = m->cpus[m->nrunners];
}

struct ref_job {
  const struct sched_job *job;
  int priority;
  unsigned rank;
};

static int ref_group_cmp(const void *a, const void *b)
{
  const struct ref_job *x = a, *y = b;
  int c;

  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  c = strcmp(x->job->repo, y->job->repo);
  if (c != 0)
    return c;
  return x->job->seq < y->job->seq ? -1 : x->job->seq > y->job->seq;
}

static int ref_order_cmp(const void *a, const void *b)
{
  const struct ref_job *x = a, *y = b;

  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  if (x->rank != y->rank)
    return x->rank < y->rank ? -1 : 1;
  return x->job->seq < y->job->seq ? -1 : x->job->seq > y->job->seq;
}

/* The start order by a sort of every queued job: priority, then a
 * repository's k-th queued job ranks k plus its jobs running at that
 * priority, then arrival. Returns the number of ids written. */
static size_t ref_order(const struct scheduler *s, const struct config *cfg,
                        int64_t *ids)
{
  size_t n = sched_njobs(s), nq = 0, i, k, nrun = 0;
  struct ref_job *q = calloc(n + 1, sizeof(*q));
  struct {
    int priority;
    const char *repo;
    unsigned n;
  } run[64];

  assert_non_null(q);
  for (i = 0; i < n; i++) {
    const struct sched_job *j = sched_job_at(s, i);
    if (j->pool >= 0 && j->status == SCHED_JOB_QUEUED) {
      q[nq].job = j;
      q[nq].priority = cfg->pools[j->pool].priority;
      nq++;
    }
  }
  /* Jobs running, by priority and repository. */
  for (i = 0; i < n; i++) {
    const struct sched_job *j = sched_job_at(s, i);
    if (j->pool < 0 || j->status != SCHED_JOB_IN_PROGRESS)
      continue;
    for (k = 0; k < nrun; k++)
      if (run[k].priority == cfg->pools[j->pool].priority &&
          strcmp(run[k].repo, j->repo) == 0)
        break;
    if (k == nrun) {
      assert_true(nrun < 64);
      run[nrun].priority = cfg->pools[j->pool].priority;
      run[nrun].repo = j->repo;
      run[nrun++].n = 0;
    }
    run[k].n++;
  }
  qsort(q, nq, sizeof(*q), ref_group_cmp);
  for (i = 0; i < nq; i++) {
    if (i > 0 && q[i - 1].priority == q[i].priority &&
        strcmp(q[i - 1].job->repo, q[i].job->repo) == 0) {
      q[i].rank = q[i - 1].rank + 1;
      continue;
    }
    for (k = 0; k < nrun; k++)
      if (run[k].priority == q[i].priority &&
          strcmp(run[k].repo, q[i].job->repo) == 0)
        q[i].rank = run[k].n;
  }
  qsort(q, nq, sizeof(*q), ref_order_cmp);
  for (i = 0; i < nq; i++)
    ids[i] = q[i].job->id;
  free(q);
  return nq;
}

/* The counts of each pool from the lists of jobs and runners, checked
 * against the counts the scheduler keeps as things change. */
static void recount(const struct scheduler *s, const struct config *cfg,
                    struct sched_pool_stats *st)
{
  size_t i;

  memset(st, 0, cfg->npools * sizeof(*st));
  for (i = 0; i < sched_njobs(s); i++) {
    const struct sched_job *j = sched_job_at(s, i);
    if (j->pool < 0)
      continue;
    st[j->pool].queued += j->status == SCHED_JOB_QUEUED;
    st[j->pool].waiting += j->status == SCHED_JOB_WAITING;
    st[j->pool].in_progress += j->status == SCHED_JOB_IN_PROGRESS;
  }
  for (i = 0; i < sched_nrunners(s); i++) {
    const struct sched_runner *r = sched_runner_at(s, i);
    if (r->pool < 0)
      continue;
    st[r->pool].starting += r->state == SCHED_RUNNER_STARTING;
    st[r->pool].idle += r->state == SCHED_RUNNER_IDLE;
    st[r->pool].busy += r->state == SCHED_RUNNER_BUSY;
    st[r->pool].stopping += r->state == SCHED_RUNNER_STOPPING;
    st[r->pool].finished += r->state == SCHED_RUNNER_FINISHED;
  }
  for (i = 0; i < cfg->npools; i++) {
    struct sched_pool_stats kept;
    sched_pool_stats(s, i, &kept);
    st[i].jobs_completed = kept.jobs_completed;
    st[i].runner_failures = kept.runner_failures;
    st[i].backoff_until_ms = kept.backoff_until_ms;
    assert_memory_equal(&kept, &st[i], sizeof(kept));
  }
}

/* The pools a pass starts runners for, walking the reference order as the
 * scheduler did: runners starting, idle or finished cover a pool's first
 * jobs; a pool at max_runners or backing off is skipped; the first job
 * whose capacity is short blocks later ones of its kind (GPU or not). */
static size_t ref_starts(const struct scheduler *s, const struct config *cfg,
                         const struct model *m, const int64_t *ids, size_t n,
                         int *pools, uint64_t now_ms)
{
  struct sched_pool_stats st[CFG_MAX_POOLS];
  unsigned covered[CFG_MAX_POOLS] = {0};
  unsigned free_gpus = m->free_gpus, free_cpus = m->free_cpus;
  int blocked[2] = {0, 0};
  size_t i, nstarts = 0;

  recount(s, cfg, st);
  for (i = 0; i < n; i++) {
    int p = sched_job_find(s, ids[i])->pool;
    const struct cfg_pool *pool = &cfg->pools[p];
    int kind = pool->gpus > 0;

    if (covered[p] < st[p].starting + st[p].idle + st[p].finished) {
      covered[p]++;
      continue;
    }
    if (st[p].starting + st[p].idle + st[p].busy + st[p].stopping >=
            pool->max_runners ||
        st[p].backoff_until_ms > now_ms || blocked[kind])
      continue;
    if (pool->gpus > free_gpus || pool->cpus > free_cpus) {
      blocked[kind] = 1;
      continue;
    }
    free_gpus -= pool->gpus;
    free_cpus -= pool->cpus;
    st[p].starting++;
    covered[p]++;
    pools[nstarts++] = p;
  }
  return nstarts;
}

/* A random job of status st, or NULL. */
static const struct sched_job *pick_job(const struct scheduler *s,
                                        enum sched_job_status st)
{
  size_t n = sched_njobs(s), i, count = 0, want;

  for (i = 0; i < n; i++)
    if (sched_job_at(s, i)->status == st)
      count++;
  if (count == 0)
    return NULL;
  want = rnd((unsigned)count);
  for (i = 0; i < n; i++)
    if (sched_job_at(s, i)->status == st && want-- == 0)
      return sched_job_at(s, i);
  return NULL;
}

/* A random runner of the model still starting, or -1. */
static int pick_starting(const struct model *m, const struct scheduler *s)
{
  size_t i, start = m->nrunners ? rnd((unsigned)m->nrunners) : 0;

  for (i = 0; i < m->nrunners; i++) {
    size_t k = (start + i) % m->nrunners;
    const struct sched_runner *r = sched_runner_find(s, m->names[k]);
    if (r != NULL && r->state == SCHED_RUNNER_STARTING)
      return (int)k;
  }
  return -1;
}

static int model_index(const struct model *m, const char *name)
{
  size_t i;

  for (i = 0; name != NULL && i < m->nrunners; i++)
    if (strcmp(m->names[i], name) == 0)
      return (int)i;
  return -1;
}

static const char *const model_repos[] = {
    "acme/a", "acme/b", "acme/c", "acme/d", "acme/e", "other/a", "other/zz"};

static void model_config(struct config *a, struct config *b)
{
  static const int prio_a[] = {0, 0, 5, 5, 10, 0};
  static const unsigned gpus[] = {0, 1, 1, 2, 0, 2};
  /* b: other priorities, other places, and no m5. */
  static const int order_b[] = {1, 0, 2, 4, 3};
  static const int prio_b[] = {5, 10, 0, 0, 5};
  char name[8];
  size_t i;

  memset(a, 0, sizeof(*a));
  memset(b, 0, sizeof(*b));
  for (i = 0; i < 6; i++) {
    snprintf(name, sizeof(name), "m%zu", i);
    add_pool(a, name, name, 3, 0, prio_a[i], gpus[i]);
  }
  for (i = 0; i < 5; i++) {
    snprintf(name, sizeof(name), "m%d", order_b[i]);
    add_pool(b, name, name, 3, 0, prio_b[order_b[i]], gpus[order_b[i]]);
  }
}

static void model_check_order(struct scheduler *s, const struct config *cfg,
                              int64_t *got, int64_t *want, size_t max)
{
  size_t n = sched_start_order(s, got, max), nref = ref_order(s, cfg, want);

  assert_int_equal(n, nref);
  assert_memory_equal(got, want, n * sizeof(*got));
}

/* One step of the model's GitHub: an event for a job. */
static void model_event(struct scheduler *s, struct model *m, int64_t *next_id,
                        uint64_t now)
{
  unsigned r = rnd(100);
  const struct sched_job *j = NULL;
  char label[8], *labels[1] = {label};
  struct sched_job_event e;
  int k;

  memset(&e, 0, sizeof(e));
  snprintf(label, sizeof(label), "m%u", rnd(6));
  if (r < 32) {
    e = ev((*next_id)++, model_repos[rnd(7)], labels, 1);
    if (rnd(5) == 0)
      sched_job_waiting(s, &e, now);
    else
      sched_job_queued(s, &e, now);
    return;
  }
  if (r < 40)
    j = pick_job(s, SCHED_JOB_WAITING);
  else if (r < 78)
    j = pick_job(s, r < 60 ? SCHED_JOB_QUEUED : SCHED_JOB_IN_PROGRESS);
  else if (r < 86)
    j = pick_job(s, SCHED_JOB_QUEUED);
  if (j == NULL && r < 86)
    return;
  if (j != NULL) {
    e = ev(j->id, j->repo, NULL, 0);
    e.labels = j->labels;
    e.nlabels = j->nlabels;
  }
  if (r < 40) {
    sched_job_queued(s, &e, now);
  } else if (r < 60) {
    /* Half the time one of our starting runners takes it. */
    k = rnd(2) ? pick_starting(m, s) : -1;
    e.runner_name = k >= 0 ? m->names[k] : "someone-else";
    sched_job_in_progress(s, &e, now);
  } else if (r < 86) {
    e.runner_name = j->runner[0] ? j->runner : NULL;
    e.conclusion = r < 78 ? "success" : "cancelled";
    sched_job_completed(s, &e, now);
    k = model_index(m, e.runner_name);
    if (k >= 0) { /* our runner ran it: it exits */
      sched_runner_exited(s, m->names[k], 0, now);
      model_gone(m, (size_t)k);
    }
  } else if (r < 94) {
    /* One of our runners goes: dropped before it started, or done with
     * the job it took. */
    const struct sched_runner *rr;
    if (m->nrunners == 0)
      return;
    k = (int)rnd((unsigned)m->nrunners);
    rr = sched_runner_find(s, m->names[k]);
    assert_non_null(rr);
    if (rr->state == SCHED_RUNNER_STARTING) {
      sched_runner_dropped(s, m->names[k], now);
    } else {
      j = sched_job_find(s, rr->job_id);
      e = ev(rr->job_id, j != NULL ? j->repo : "acme/a", labels, 1);
      e.runner_name = m->names[k];
      e.conclusion = "success";
      sched_job_completed(s, &e, now);
      sched_runner_exited(s, m->names[k], 0, now);
    }
    model_gone(m, (size_t)k);
  } else {
    /* Out of order: first heard of in progress, or queued late. */
    j = pick_job(s, SCHED_JOB_IN_PROGRESS);
    e = ev(j != NULL && rnd(2) ? j->id : (*next_id)++, model_repos[rnd(7)],
           labels, 1);
    if (j != NULL && e.job_id == j->id)
      sched_job_queued(s, &e, now);
    else
      sched_job_in_progress(s, &e, now);
  }
}

static void test_order_matches_reference_model(void **state)
{
  struct config a, b;
  struct model m = {.free_gpus = 5, .free_cpus = 9};
  const struct sched_ops ops = {
      .start = model_start, .retire = model_retire, .fits = model_fits};
  const struct config *cur = &a;
  struct scheduler *s;
  int64_t *got = calloc(4096, sizeof(*got)),
          *want = calloc(4096, sizeof(*want));
  int64_t next_id = 1;
  size_t step, passes = 0, starts = 0, reloads = 0;
  int expect[CFG_MAX_POOLS * 8];

  (void)state;
  assert_non_null(got);
  assert_non_null(want);
  log_setup(LOG_ERROR, 0);
  model_config(&a, &b);
  m.cfg = cur;
  s = sched_new(cur, &ops, &m);
  for (step = 1; step <= MODEL_STEPS; step++) {
    uint64_t now = step * 10;
    unsigned r = rnd(100);

    if (r < 2) {
      cur = cur == &a ? &b : &a;
      sched_set_config(s, cur);
      m.cfg = cur;
      reloads++;
    } else if (r < 80) {
      model_event(s, &m, &next_id, now);
    } else {
      size_t n = ref_order(s, cur, want);
      size_t nexp = ref_starts(s, cur, &m, want, n, expect, now);

      m.nstarted = 0;
      assert_int_equal(sched_reconcile(s, now), (int)nexp);
      assert_int_equal(m.nstarted, nexp);
      assert_memory_equal(m.started, expect, nexp * sizeof(int));
      passes++;
      starts += nexp;
    }
    model_check_order(s, cur, got, want, 4096);
    if (step % 16 == 0) {
      struct sched_pool_stats st[CFG_MAX_POOLS];
      recount(s, cur, st);
    }
  }
  /* The walk covered the cases it is there for. */
  assert_true(passes > 500);
  assert_true(starts > 400);
  assert_true(reloads > 50);
  log_setup(LOG_INFO, 0);
  sched_destroy(s);
  free(got);
  free(want);
  free_cfg(&a);
  free_cfg(&b);
}

/* ---- capacity sources ---- */

/* Two node groups with one free GPU each; a pool's block key is its node
 * group, from the first letter of its name. */
struct groups {
  const struct config *cfg;
  unsigned free[2];
  int started[8];
  size_t nstarted;
};

static int group_of(const struct cfg_pool *pool)
{
  return pool->name[0] == 'y';
}

static unsigned groups_key(void *ctx, const struct cfg_pool *pool)
{
  (void)ctx;
  return 10 + (unsigned)group_of(pool);
}

static int groups_fits(void *ctx, const struct cfg_pool *pool)
{
  struct groups *g = ctx;
  return pool->gpus <= g->free[group_of(pool)];
}

static int groups_start(void *ctx, struct sched_runner *r)
{
  struct groups *g = ctx;
  const struct cfg_pool *pool = &g->cfg->pools[r->pool];

  g->free[group_of(pool)] -= pool->gpus;
  g->started[g->nstarted++] = r->pool;
  return 0;
}

static void run_groups(int with_key, int *started, size_t *nstarted)
{
  struct config cfg;
  struct groups g = {.cfg = &cfg, .free = {1, 1}};
  struct sched_ops ops = {
      .start = groups_start, .retire = fake_retire, .fits = groups_fits};
  char *big[] = {"x-big"}, *xs[] = {"x-small"}, *ys[] = {"y-small"};
  struct sched_job_event e;
  struct scheduler *s;

  memset(&cfg, 0, sizeof(cfg));
  add_pool(&cfg, "x-big", "x-big", 4, 0, 10, 2);
  add_pool(&cfg, "x-small", "x-small", 4, 0, 0, 1);
  add_pool(&cfg, "y-small", "y-small", 4, 0, 0, 1);
  if (with_key)
    ops.block_key = groups_key;
  s = sched_new(&cfg, &ops, &g);
  e = ev(1, "acme/a", big, 1);
  sched_job_queued(s, &e, 1);
  e = ev(2, "acme/b", xs, 1);
  sched_job_queued(s, &e, 2);
  e = ev(3, "acme/c", ys, 1);
  sched_job_queued(s, &e, 3);
  sched_reconcile(s, 10);
  memcpy(started, g.started, g.nstarted * sizeof(int));
  *nstarted = g.nstarted;
  sched_destroy(s);
  free_cfg(&cfg);
}

/* The 2-GPU job first in order finds one free GPU in node group x: the
 * 1-GPU job of x waits behind it (no starvation), the one of y goes on.
 * Without block_key every GPU pool is one source and both wait. */
static void test_block_key_per_capacity_source(void **state)
{
  int started[8];
  size_t n;

  (void)state;
  run_groups(1, started, &n);
  assert_int_equal(n, 1);
  assert_int_equal(started[0], 2);
  run_groups(0, started, &n);
  assert_int_equal(n, 0);
}

/* ---- job_changed ---- */

struct change {
  int64_t id;
  enum sched_job_status from, to;
};

struct changes {
  struct change v[64];
  size_t n;
};

static struct changes *changes_seen;

static void record_change(void *ctx, const struct sched_job *j,
                          enum sched_job_status from)
{
  struct changes *c = changes_seen;

  (void)ctx;
  assert_true(c->n < 64);
  c->v[c->n].id = j->id;
  c->v[c->n].from = from;
  c->v[c->n].to = j->status;
  c->n++;
}

static void assert_change(const struct changes *c, size_t i, int64_t id,
                          enum sched_job_status from, enum sched_job_status to)
{
  assert_true(i < c->n);
  assert_int_equal(c->v[i].id, id);
  assert_int_equal(c->v[i].from, from);
  assert_int_equal(c->v[i].to, to);
}

/* Every status change is told once, with the status before; events that
 * change nothing tell nothing. */
static void test_job_changed_once_per_status_change(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct sched_ops ops = fake_ops;
  struct changes c = {.n = 0};
  struct sched_job_event e1 = ev(1, "acme/a", cpu_labels, 3);
  struct sched_job_event e2 = ev(2, "acme/a", cpu_labels, 3);
  struct sched_job_event e3 = ev(3, "acme/a", cpu_labels, 3);
  struct scheduler *s;

  (void)state;
  std_config(&cfg);
  changes_seen = &c;
  ops.job_changed = record_change;
  s = sched_new(&cfg, &ops, &f);
  sched_job_waiting(s, &e1, 1);
  sched_job_waiting(s, &e1, 2); /* duplicate */
  sched_job_queued(s, &e1, 3);
  sched_job_queued(s, &e1, 4); /* duplicate */
  e1.runner_name = "gh-1";
  sched_job_in_progress(s, &e1, 5);
  sched_job_in_progress(s, &e1, 6); /* duplicate, same runner */
  e1.conclusion = "success";
  sched_job_completed(s, &e1, 7);
  sched_job_completed(s, &e1, 8); /* duplicate */
  sched_job_queued(s, &e1, 9);    /* late: completed stays */
  assert_int_equal(c.n, 4);
  assert_change(&c, 0, 1, SCHED_JOB_NONE, SCHED_JOB_WAITING);
  assert_change(&c, 1, 1, SCHED_JOB_WAITING, SCHED_JOB_QUEUED);
  assert_change(&c, 2, 1, SCHED_JOB_QUEUED, SCHED_JOB_IN_PROGRESS);
  assert_change(&c, 3, 1, SCHED_JOB_IN_PROGRESS, SCHED_JOB_COMPLETED);
  assert_string_equal(sched_job_find(s, 1)->runner, "gh-1");
  /* First heard of when it completed; a later event names its runner:
   * a change of other fields, told with from equal to the status. */
  e2.conclusion = "cancelled";
  sched_job_completed(s, &e2, 10);
  e2.runner_name = "gh-2";
  sched_job_in_progress(s, &e2, 11);
  assert_int_equal(c.n, 6);
  assert_change(&c, 4, 2, SCHED_JOB_NONE, SCHED_JOB_COMPLETED);
  assert_change(&c, 5, 2, SCHED_JOB_COMPLETED, SCHED_JOB_COMPLETED);
  assert_string_equal(sched_job_find(s, 2)->runner, "gh-2");
  /* An expiry is a status change too. */
  sched_job_queued(s, &e3, 12);
  sched_reconcile(s, 12 + SCHED_QUEUED_TTL_MS);
  assert_change(&c, 6, 3, SCHED_JOB_NONE, SCHED_JOB_QUEUED);
  assert_change(&c, 7, 3, SCHED_JOB_QUEUED, SCHED_JOB_COMPLETED);
  assert_int_equal(c.n, 8);
  sched_destroy(s);
  changes_seen = NULL;
  free_cfg(&cfg);
}

/* ---- interning ---- */

/* Equal strings and label sets are one copy, counted; the copy goes with
 * the last job that holds it, so churn through many repositories leaves
 * nothing behind. */
static void test_interned_strings_are_counted_and_freed(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  char *upper[] = {"SELF-HOSTED", "linux", "x64"};
  struct sched_job_event e1 = ev(1, "acme/gone", cpu_labels, 3);
  struct sched_job_event e2 = ev(2, "acme/gone", upper, 3);
  struct scheduler *s;
  size_t before;
  int64_t i;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  sched_job_queued(s, &e1, 1);
  sched_job_queued(s, &e2, 2);
  assert_int_equal(sched_intern_refs(s, "acme/gone"), 2);
  assert_ptr_equal(sched_job_find(s, 1)->repo, sched_job_find(s, 2)->repo);
  /* One label set, lower-cased, whatever the case it came in. */
  assert_ptr_equal(sched_job_find(s, 1)->labels, sched_job_find(s, 2)->labels);
  assert_string_equal(sched_job_find(s, 2)->labels[0], "self-hosted");
  assert_int_equal(sched_job_find(s, 2)->nlabels, 3);
  /* "build", "acme/gone" and the label set. */
  assert_int_equal(sched_intern_count(s), 3);
  e1.conclusion = e2.conclusion = "cancelled";
  sched_job_completed(s, &e1, 3);
  sched_job_completed(s, &e2, 4);
  assert_int_equal(sched_intern_refs(s, "acme/gone"), 2); /* kept for the API */
  /* Thousands of jobs of distinct repositories come and go: once the two
   * are trimmed, their repository is freed, and what stays interned is
   * bounded by the jobs kept. */
  before = sched_intern_count(s);
  for (i = 10; i < 10 + 3 * SCHED_COMPLETED_KEEP; i++) {
    char repo[32];
    struct sched_job_event e;
    snprintf(repo, sizeof(repo), "churn/%lld", (long long)i);
    e = ev(i, repo, cpu_labels, 3);
    sched_job_queued(s, &e, (uint64_t)i);
    e.conclusion = "success";
    sched_job_completed(s, &e, (uint64_t)i);
  }
  assert_int_equal(sched_intern_refs(s, "acme/gone"), 0);
  assert_null(sched_job_find(s, 1));
  assert_null(sched_job_find(s, 10));
  assert_non_null(sched_job_find(s, 9 + 3 * SCHED_COMPLETED_KEEP));
  assert_int_equal(sched_njobs(s), SCHED_COMPLETED_KEEP);
  assert_int_equal(sched_intern_count(s), SCHED_COMPLETED_KEEP + before - 1);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* Every job is found by id however many come and go (the table shifts
 * entries back on deletion). */
static void test_job_lookup_survives_churn(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  int64_t i, k;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  log_setup(LOG_WARN, 0);
  for (i = 1; i <= 20000; i++) {
    /* Ids far apart and close together, as GitHub's are. */
    struct sched_job_event e = ev(i * 7919 + (i % 3) * 1000000007ll,
                                  i % 2 ? "acme/a" : "acme/b", cpu_labels, 3);
    sched_job_queued(s, &e, (uint64_t)i);
    if (i % 4 != 0) {
      e.conclusion = "cancelled";
      sched_job_completed(s, &e, (uint64_t)i);
    }
  }
  log_setup(LOG_INFO, 0);
  for (i = 1, k = 0; i <= 20000; i++) {
    const struct sched_job *j =
        sched_job_find(s, i * 7919 + (i % 3) * 1000000007ll);
    if (i % 4 == 0) {
      assert_non_null(j);
      assert_int_equal(j->status, SCHED_JOB_QUEUED);
      k++;
    }
  }
  assert_int_equal(k, 5000);
  assert_int_equal(sched_njobs(s), 5000 + SCHED_COMPLETED_KEEP);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* ---- clocks ---- */

/* Job times come from the wall clock, timers from now_ms: a wall clock
 * stepped back by a day changes neither expiry nor backoff. */
static void test_wall_clock_times_monotonic_timers(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 4, .free_cpus = 16};
  struct sched_job_event e1 = ev(1, "acme/a", cpu_labels, 3);
  struct sched_job_event e2 = ev(2, "acme/a", cpu_labels, 3);
  uint64_t wall = WALL_BASE;
  struct scheduler *s;
  const struct sched_job *j;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  /* The default is the real time. */
  assert_true(sched_wall_ms(s) > WALL_BASE);
  sched_set_wall_clock(s, test_wall, &wall);
  assert_int_equal(sched_wall_ms(s), WALL_BASE);
  sched_job_queued(s, &e1, 5);
  j = sched_job_find(s, 1);
  assert_int_equal(j->queued_ms, WALL_BASE);
  assert_int_equal(sched_reconcile(s, 6), 1);
  wall = WALL_BASE - 24 * 3600 * 1000;
  e1.runner_name = f.started[0];
  sched_job_in_progress(s, &e1, 7);
  assert_int_equal(j->started_ms, WALL_BASE - 24 * 3600 * 1000);
  sched_job_queued(s, &e2, 10);
  /* The queued job expires by now_ms, whatever the wall clock says. */
  wall = WALL_BASE + 48 * 3600 * 1000;
  sched_reconcile(s, 10 + SCHED_QUEUED_TTL_MS - 1);
  assert_int_equal(sched_job_find(s, 2)->status, SCHED_JOB_QUEUED);
  sched_reconcile(s, 10 + SCHED_QUEUED_TTL_MS);
  assert_int_equal(sched_job_find(s, 2)->status, SCHED_JOB_COMPLETED);
  assert_int_equal(sched_job_find(s, 2)->completed_ms, wall);
  /* NULL brings back the real time. */
  sched_set_wall_clock(s, NULL, NULL);
  assert_true(sched_wall_ms(s) > WALL_BASE);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* ---- coalesced passes ---- */

static unsigned fits_calls;

static int counting_fits(void *ctx, const struct cfg_pool *pool)
{
  fits_calls++;
  return fake_fits(ctx, pool);
}

/* A pass with nothing changed, no deadline come and nothing refused asks
 * nothing; one after a refusal asks again, and so does one at a deadline
 * (here a backoff ending). */
static void test_pass_with_nothing_new_does_nothing(void **state)
{
  struct config cfg;
  struct fake f = {.cfg = &cfg, .free_gpus = 0, .free_cpus = 16};
  struct sched_ops ops = fake_ops;
  struct sched_job_event g = ev(1, "acme/a", gpu_labels, 2);
  struct sched_job_event c = ev(2, "acme/a", cpu_labels, 3);
  struct scheduler *s;
  int i;

  (void)state;
  std_config(&cfg);
  ops.fits = counting_fits;
  s = sched_new(&cfg, &ops, &f);
  sched_job_queued(s, &c, 1);
  fits_calls = 0;
  assert_int_equal(sched_reconcile(s, 2), 1);
  assert_int_equal(fits_calls, 1);
  for (i = 0; i < 100; i++)
    assert_int_equal(sched_reconcile(s, 3), 0);
  assert_int_equal(fits_calls, 1);
  /* No GPU for the GPU job: every pass asks again until one comes. */
  sched_job_queued(s, &g, 4);
  assert_int_equal(sched_reconcile(s, 5), 0);
  assert_int_equal(sched_reconcile(s, 6), 0);
  assert_int_equal(fits_calls, 3);
  f.free_gpus = 1;
  assert_int_equal(sched_reconcile(s, 7), 1);
  assert_int_equal(sched_reconcile(s, 8), 0);
  assert_int_equal(fits_calls, 4);
  /* The CPU runner fails before a job: its replacement waits out the
   * backoff, then comes without any event. */
  fake_exited(&f, s, f.started[0], 1, 10);
  assert_int_equal(sched_reconcile(s, 11), 0);
  assert_int_equal(sched_reconcile(s, 10 + SCHED_BACKOFF_MIN_MS - 1), 0);
  assert_int_equal(fits_calls, 4);
  assert_int_equal(sched_reconcile(s, 10 + SCHED_BACKOFF_MIN_MS), 1);
  assert_int_equal(fits_calls, 5);
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
      cmocka_unit_test(test_order_matches_reference_model),
      cmocka_unit_test(test_block_key_per_capacity_source),
      cmocka_unit_test(test_job_changed_once_per_status_change),
      cmocka_unit_test(test_interned_strings_are_counted_and_freed),
      cmocka_unit_test(test_job_lookup_survives_churn),
      cmocka_unit_test(test_wall_clock_times_monotonic_timers),
      cmocka_unit_test(test_pass_with_nothing_new_does_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
