/* How the scheduler's reconcile pass scales with the queue: a pool set like
 * a big GPU fleet, N queued jobs over 50 repositories, half of the capacity
 * busy. Prints one row per N with the time per reconcile and its ratio to
 * the smallest N measured in the same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler.h"

static int fits(void *ctx, const struct cfg_pool *pool)
{
  (void)ctx;
  (void)pool;
  return 0; /* capacity is short: every job stays queued, worst case */
}

static int start(void *ctx, struct sched_runner *r)
{
  (void)ctx;
  (void)r;
  return 0;
}

static int retire(void *ctx, struct sched_runner *r)
{
  (void)ctx;
  (void)r;
  return 0;
}

static const struct sched_ops ops = {start, retire, fits};

static double now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add_pool(struct config *cfg, const char *name, int prio,
                     unsigned gpus)
{
  struct cfg_pool *p = &cfg->pools[cfg->npools++];

  p->name = strdup(name);
  p->labels[p->nlabels++] = strdup("self-hosted");
  p->labels[p->nlabels++] = strdup(name);
  p->max_runners = 100000;
  p->priority = prio;
  p->gpus = gpus;
  p->cpus = 1;
  p->idle_timeout_ms = 300000;
}

static double per_reconcile(size_t njobs)
{
  static const char *const pools[] = {"cpu", "gpu-1", "gpu-2", "gpu-8"};
  struct config cfg;
  struct scheduler *s;
  double t0, elapsed;
  size_t i, k;
  int rounds = 0;

  memset(&cfg, 0, sizeof(cfg));
  add_pool(&cfg, "cpu", 0, 0);
  add_pool(&cfg, "gpu-1", 10, 1);
  add_pool(&cfg, "gpu-2", 5, 2);
  add_pool(&cfg, "gpu-8", 5, 8);
  s = sched_new(&cfg, &ops, NULL);
  for (i = 0; i < njobs; i++) {
    char repo[32];
    char *labels[1];
    struct sched_job_event ev;

    snprintf(repo, sizeof(repo), "acme/repo-%zu", i % 50);
    labels[0] = (char *)pools[i % 4];
    memset(&ev, 0, sizeof(ev));
    ev.job_id = (int64_t)i + 1;
    ev.repo = repo;
    ev.name = "build";
    ev.labels = labels;
    ev.nlabels = 1;
    sched_job_queued(s, &ev, i);
    /* A third of the jobs are running already. */
    if (i % 3 == 0)
      sched_job_in_progress(s, &ev, i + 1);
  }
  t0 = now_s();
  do {
    sched_reconcile(s, 1000000 + (uint64_t)rounds);
    rounds++;
    elapsed = now_s() - t0;
  } while (elapsed < 0.5 || rounds < 3);
  sched_destroy(s);
  for (i = 0; i < cfg.npools; i++) {
    free(cfg.pools[i].name);
    for (k = 0; k < cfg.pools[i].nlabels; k++)
      free(cfg.pools[i].labels[k]);
  }
  return elapsed / rounds;
}

int main(int argc, char **argv)
{
  static const size_t sizes[] = {100, 1000, 5000, 20000};
  size_t n = sizeof(sizes) / sizeof(sizes[0]), i;
  double base = 0;

  if (argc > 1 && strcmp(argv[1], "--quick") == 0)
    n = 3;
  printf("%-12s %14s %10s %12s\n", "queued jobs", "reconcile", "vs 100",
         "per job");
  for (i = 0; i < n; i++) {
    double t = per_reconcile(sizes[i]);
    if (i == 0)
      base = t;
    printf("%-12zu %11.3f ms %9.1fx %9.3f us\n", sizes[i], t * 1e3, t / base,
           t / (double)sizes[i] * 1e6);
  }
  return 0;
}
