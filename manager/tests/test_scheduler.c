/* Scheduler policy: matching, demand and supply, order under short
 * capacity, surplus and idle retirement, failure backoff. The ops are a
 * recording stand-in with a settable capacity. */
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

struct fake {
  unsigned free_gpus;
  unsigned free_cpus;
  int start_rc;
  int retire_rc;
  char started[256][SCHED_NAME_MAX];
  int started_pool[256];
  size_t nstarted;
  char retired[256][SCHED_NAME_MAX];
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
  if (f->start_rc != 0)
    return f->start_rc;
  snprintf(f->started[f->nstarted], SCHED_NAME_MAX, "%s", r->name);
  f->started_pool[f->nstarted++] = r->pool;
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

static const struct sched_ops fake_ops = {fake_start, fake_retire, fake_fits};

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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
  struct scheduler *s;
  struct sched_job_event e = ev(1, "acme/a", cpu_labels, 3);
  struct sched_pool_stats st;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  assert_int_equal(sched_job_waiting(s, &e, 100), 0);
  assert_int_equal(sched_reconcile(s, 100), 0); /* waiting is no demand */
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
  assert_int_equal(sched_job_in_progress(s, &e, 1400), 0);
  assert_int_equal(
      sched_job_find(s, 1)->started_ms - sched_job_find(s, 1)->queued_ms, 1200);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.busy, 1);
  e.conclusion = "success";
  assert_int_equal(sched_job_completed(s, &e, 2000), 0);
  sched_runner_exited(s, f.started[0], 0, 2100);
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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  struct fake f = {.free_gpus = 64, .free_cpus = 64};
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

/* With two GPUs free, priority 10 (gpu-1) goes before priority 5 (gpu-2)
 * whatever the arrival order, and within a priority repositories take
 * turns. */
static void test_priority_then_round_robin(void **state)
{
  struct config cfg;
  struct fake f = {.free_gpus = 3, .free_cpus = 64};
  struct scheduler *s;
  struct sched_job_event e;
  struct sched_job_event q[6];
  size_t i;

  (void)state;
  std_config(&cfg);
  s = sched_new(&cfg, &fake_ops, &f);
  e = ev(1, "acme/big", gpu2_labels, 1);
  sched_job_queued(s, &e, 1);
  /* Three jobs of repo a, then one of b, all gpu-1. */
  q[0] = ev(2, "acme/a", gpu_labels, 2);
  q[1] = ev(3, "acme/a", gpu_labels, 2);
  q[2] = ev(4, "acme/a", gpu_labels, 2);
  q[3] = ev(5, "acme/b", gpu_labels, 2);
  for (i = 0; i < 4; i++)
    sched_job_queued(s, &q[i], 2 + i);
  /* Capacity fits one start at a time: the fake's fits() is static, so
   * give it exactly what the first two starts need and check order. */
  f.free_gpus = 1;
  assert_int_equal(sched_reconcile(s, 10), 4);
  /* All four gpu-1 starts fit (1 GPU each, fake capacity does not shrink),
   * and the gpu-2 job is blocked for lack of 2 GPUs. */
  for (i = 0; i < 4; i++)
    assert_int_equal(f.started_pool[i], 1);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* Capacity that shrinks as runners start shows the order exactly. */
struct counted {
  struct fake f;
  unsigned gpus_left;
  const struct config *cfg;
};

static int counted_fits(void *ctx, const struct cfg_pool *pool)
{
  struct counted *c = ctx;
  return pool->gpus <= c->gpus_left;
}

static int counted_start(void *ctx, struct sched_runner *r)
{
  struct counted *c = ctx;
  c->gpus_left -= c->cfg->pools[r->pool].gpus;
  return fake_start(&c->f, r);
}

static const struct sched_ops counted_ops = {counted_start, fake_retire,
                                             counted_fits};

static void test_order_under_short_capacity(void **state)
{
  struct config cfg;
  struct counted c;
  struct scheduler *s;
  struct sched_job_event e[6];
  const struct sched_job *j;
  size_t i;

  (void)state;
  memset(&c, 0, sizeof(c));
  c.gpus_left = 3;
  c.cfg = &cfg;
  std_config(&cfg);
  cfg.pools[1].max_runners = 10;
  s = sched_new(&cfg, &counted_ops, &c);
  e[0] = ev(1, "acme/big", gpu2_labels, 1); /* prio 5, first to arrive */
  e[1] = ev(2, "acme/a", gpu_labels, 2);    /* prio 10 */
  e[2] = ev(3, "acme/a", gpu_labels, 2);
  e[3] = ev(4, "acme/a", gpu_labels, 2);
  e[4] = ev(5, "acme/b", gpu_labels, 2);
  e[5] = ev(6, "acme/c", cpu_labels, 3); /* CPU goes on regardless */
  for (i = 0; i < 6; i++)
    sched_job_queued(s, &e[i], 1 + i);
  sched_reconcile(s, 10);
  /* 3 GPUs: gpu-1 jobs in round-robin order a, b, a; then no GPU is left,
   * the gpu-2 job waits, and the CPU job starts. */
  assert_int_equal(c.f.nstarted, 4);
  assert_int_equal(c.f.started_pool[0], 1);
  assert_int_equal(c.f.started_pool[1], 1);
  assert_int_equal(c.f.started_pool[2], 1);
  assert_int_equal(c.f.started_pool[3], 0);
  /* Round-robin: the runners come up and GitHub hands out jobs; check the
   * order the scheduler covered through which jobs remain uncovered: the
   * fourth gpu-1 job (acme/a's third) is the one left. */
  for (i = 0; i < 3; i++)
    sched_runner_running(s, c.f.started[i], 100 + (int64_t)i, NULL, 0, 20);
  c.gpus_left = 1;
  sched_reconcile(s, 30);
  /* One GPU free: the priority-10 job still waiting goes first, not the
   * 2-GPU job that arrived earliest. */
  assert_int_equal(c.f.nstarted, 5);
  assert_int_equal(c.f.started_pool[4], 1);
  c.gpus_left = 2;
  sched_reconcile(s, 40);
  assert_int_equal(c.f.nstarted, 6);
  assert_int_equal(c.f.started_pool[5], 2);
  j = sched_job_find(s, 1);
  assert_non_null(j);
  assert_int_equal(j->status, SCHED_JOB_QUEUED);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* Two GPU pools of the same priority share two GPUs. Repository a queued
 * three jobs before repository b queued one: FIFO would give both GPUs to
 * a; round-robin gives one to each. */
static void test_round_robin_order(void **state)
{
  struct config cfg;
  struct counted c;
  struct scheduler *s;
  struct sched_job_event e[4];
  char *x_labels[] = {"x"};
  char *y_labels[] = {"y"};
  size_t i;

  (void)state;
  memset(&c, 0, sizeof(c));
  memset(&cfg, 0, sizeof(cfg));
  add_pool(&cfg, "gpu-x", "x", 8, 0, 0, 1);
  add_pool(&cfg, "gpu-y", "y", 8, 0, 0, 1);
  c.gpus_left = 2;
  c.cfg = &cfg;
  s = sched_new(&cfg, &counted_ops, &c);
  e[0] = ev(1, "acme/a", x_labels, 1);
  e[1] = ev(2, "acme/a", x_labels, 1);
  e[2] = ev(3, "acme/a", x_labels, 1);
  e[3] = ev(4, "acme/b", y_labels, 1);
  for (i = 0; i < 4; i++)
    sched_job_queued(s, &e[i], 1 + i);
  assert_int_equal(sched_reconcile(s, 10), 2);
  assert_int_equal(c.f.started_pool[0], 0);
  assert_int_equal(c.f.started_pool[1], 1);
  sched_destroy(s);
  free_cfg(&cfg);
}

static void test_cancel_retires_surplus(void **state)
{
  struct config cfg;
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  sched_runner_exited(s, f.retired[1], 143, 60);
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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
    sched_runner_exited(s, f.retired[i], 143, 22);
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

static void test_failure_backoff(void **state)
{
  struct config cfg;
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  sched_runner_exited(s, f.started[0], 1, 30);
  sched_pool_stats(s, 0, &st);
  assert_int_equal(st.runner_failures, 1);
  assert_int_equal(sched_reconcile(s, 31), 0);
  assert_int_equal(sched_reconcile(s, 30 + SCHED_BACKOFF_MIN_MS), 1);
  /* A second failure doubles the wait. */
  sched_runner_exited(s, f.started[1], 1, 2000);
  assert_int_equal(sched_reconcile(s, 2000 + SCHED_BACKOFF_MIN_MS), 0);
  assert_int_equal(sched_reconcile(s, 2000 + 2 * SCHED_BACKOFF_MIN_MS), 1);
  /* A start that fails outright is counted too. */
  sched_runner_exited(s, f.started[2], 1, 5000);
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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  sched_runner_exited(s, f.retired[0], 143, 5100);
  assert_int_equal(sched_reconcile(s, 5101), 0);
  sched_destroy(s);
  free_cfg(&cfg);
}

/* When GitHub cannot be asked now, the surplus runner stays idle (no busy
 * loop) and is retired on a later pass. */
static void test_retire_that_cannot_begin_is_retried(void **state)
{
  struct config cfg;
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
  struct fake f = {.free_gpus = 4, .free_cpus = 16};
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
      cmocka_unit_test(test_cancel_retires_surplus),
      cmocka_unit_test(test_min_idle_and_idle_timeout),
      cmocka_unit_test(test_failure_backoff),
      cmocka_unit_test(test_out_of_order_events),
      cmocka_unit_test(test_fungible_cross_pool),
      cmocka_unit_test(test_start_timeout_replaces_runner),
      cmocka_unit_test(test_retire_that_cannot_begin_is_retried),
      cmocka_unit_test(test_lost_completion_expires),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
