/* How a reconcile pass scales with the queue. A CPU pool and GPU pools of
 * three priorities, eight runners each, with N queued jobs over 500
 * repositories and all their runners up (at max_runners); a fifth pool of
 * ten runners with ten queued jobs. For each N, in a fresh process:
 *
 *   pass, nothing new   a pass with nothing changed since the last one
 *   nothing to start    a pass after one event (a job queued, another
 *                       cancelled, in the fifth pool) when every pool is
 *                       at max_runners
 *   starting 10         a pass that starts ten runners (the fifth pool's
 *                       runners were dropped before it)
 *   event               sched_job_queued plus sched_job_completed
 *   RSS, bytes/job      resident memory, and its growth per queued job
 *
 * Times are medians. Prints one table, with the ratio of each pass to the
 * same pass with no jobs queued, measured in the same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "scheduler.h"

#define REPOS 500
#define POOL_MAX 8
#define STARTS 10
#define ROUNDS 401
#define EVENT_IDS 1000000000ll /* ids of the jobs events come for */

struct fleet {
  char started[STARTS][SCHED_NAME_MAX]; /* the fifth pool's runners */
  size_t nstarted;
};

static int fits(void *ctx, const struct cfg_pool *pool)
{
  (void)ctx;
  (void)pool;
  return 1;
}

static int start(void *ctx, struct sched_runner *r)
{
  struct fleet *f = ctx;

  if (r->pool == 4 && f->nstarted < STARTS)
    snprintf(f->started[f->nstarted++], SCHED_NAME_MAX, "%s", r->name);
  return 0;
}

static int retire(void *ctx, struct sched_runner *r)
{
  (void)ctx;
  (void)r;
  return 0;
}

static const struct sched_ops ops = {
    .start = start, .retire = retire, .fits = fits};

static double now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static long rss_kb(void)
{
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  fclose(f);
  return kb;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
  qsort(v, n, sizeof(*v), cmp_double);
  return v[n / 2];
}

static void add_pool(struct config *cfg, const char *name, int prio,
                     unsigned gpus)
{
  struct cfg_pool *p = &cfg->pools[cfg->npools++];

  p->name = strdup(name);
  p->labels[p->nlabels++] = strdup("self-hosted");
  p->labels[p->nlabels++] = strdup(name);
  p->max_runners = POOL_MAX;
  p->priority = prio;
  p->gpus = gpus;
  p->cpus = 1;
  p->idle_timeout_ms = 300000;
}

static void queue_job(struct scheduler *s, int64_t id, const char *pool,
                      size_t repo, uint64_t now_ms)
{
  static const char *const names[] = {"build", "test (ubuntu, 3.12)", "lint",
                                      "gpu-tests", "package"};
  char name[64], *labels[2] = {"self-hosted", NULL};
  struct sched_job_event ev;

  snprintf(name, sizeof(name), "acme/repo-%zu", repo);
  labels[1] = (char *)pool;
  memset(&ev, 0, sizeof(ev));
  ev.job_id = id;
  ev.run_id = id / 4;
  ev.repo = name;
  ev.name = names[id % 5];
  ev.labels = labels;
  ev.nlabels = 2;
  sched_job_queued(s, &ev, now_ms);
}

static void cancel_job(struct scheduler *s, int64_t id, const char *pool,
                       uint64_t now_ms)
{
  char *labels[2] = {"self-hosted", NULL};
  struct sched_job_event ev;

  labels[1] = (char *)pool;
  memset(&ev, 0, sizeof(ev));
  ev.job_id = id;
  ev.repo = "acme/repo-0";
  ev.labels = labels;
  ev.nlabels = 2;
  ev.conclusion = "cancelled";
  sched_job_completed(s, &ev, now_ms);
}

struct row {
  double idle_us, nothing_us, start_us, event_us;
  long rss_kb, rss_delta_kb;
  int ok;
};

static const char *const pools[] = {"cpu", "gpu-1", "gpu-2", "gpu-8", "burst"};

static void measure(size_t njobs, struct row *out)
{
  static double t[ROUNDS];
  struct fleet f = {.nstarted = 0};
  struct config cfg;
  struct scheduler *s;
  uint64_t now = 1000;
  int64_t next = 1;
  long rss0;
  size_t i, k;
  int started;

  memset(&cfg, 0, sizeof(cfg));
  add_pool(&cfg, "cpu", 0, 0);
  add_pool(&cfg, "gpu-1", 10, 1);
  add_pool(&cfg, "gpu-2", 5, 2);
  add_pool(&cfg, "gpu-8", 5, 8);
  add_pool(&cfg, "burst", 0, 0);
  cfg.pools[4].max_runners = STARTS;
  rss0 = rss_kb();
  s = sched_new(&cfg, &ops, &f);
  for (i = 0; i < njobs; i++, next++)
    queue_job(s, next, pools[i % 4], (i * 7) % REPOS, now);
  out->rss_kb = rss_kb();
  out->rss_delta_kb = out->rss_kb - rss0;
  for (i = 0; i < STARTS; i++, next++)
    queue_job(s, next, "burst", i, now);
  /* Every pool gets its runners; with no jobs the first four have none. */
  started = sched_reconcile(s, ++now);
  for (i = 0, k = 0; i < 4; i++) {
    size_t in_pool = njobs / 4 + (i < njobs % 4);
    k += in_pool < POOL_MAX ? in_pool : POOL_MAX;
  }
  out->ok = started == (int)(k + STARTS);
  for (i = 0; i < ROUNDS; i++) {
    double t0 = now_us();
    sched_reconcile(s, ++now);
    t[i] = now_us() - t0;
  }
  out->idle_us = median(t, ROUNDS);
  for (i = 0; i < ROUNDS; i++) {
    double t0 = now_us();
    /* One webhook's worth of change: a job queued, another cancelled. */
    queue_job(s, EVENT_IDS + (int64_t)i, "burst", i % REPOS, now);
    if (i > 0)
      cancel_job(s, EVENT_IDS + (int64_t)i - 1, "burst", now);
    out->event_us += (now_us() - t0) / ROUNDS;
    t0 = now_us();
    sched_reconcile(s, ++now);
    t[i] = now_us() - t0;
  }
  out->nothing_us = median(t, ROUNDS);
  for (i = 0; i < ROUNDS; i++) {
    double t0;
    for (k = 0; k < f.nstarted; k++)
      sched_runner_dropped(s, f.started[k], now);
    f.nstarted = 0;
    t0 = now_us();
    started = sched_reconcile(s, ++now);
    t[i] = now_us() - t0;
    out->ok = out->ok && started == STARTS;
  }
  out->start_us = median(t, ROUNDS);
  sched_destroy(s);
  for (i = 0; i < cfg.npools; i++) {
    free(cfg.pools[i].name);
    for (k = 0; k < cfg.pools[i].nlabels; k++)
      free(cfg.pools[i].labels[k]);
  }
}

/* Measures njobs in a child, so that each size starts from a fresh heap
 * and its RSS is its own. */
static int measure_apart(size_t njobs, struct row *out)
{
  int fd[2], status;
  pid_t pid;
  ssize_t n;

  if (pipe(fd) != 0)
    return -1;
  pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    struct row r;
    memset(&r, 0, sizeof(r));
    close(fd[0]);
    measure(njobs, &r);
    _exit(write(fd[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 1);
  }
  close(fd[1]);
  n = read(fd[0], out, sizeof(*out));
  close(fd[0]);
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0 || n != (ssize_t)sizeof(*out))
    return -1;
  return 0;
}

int main(int argc, char **argv)
{
  static const size_t sizes[] = {0, 10000, 100000};
  struct row rows[3];
  size_t n = sizeof(sizes) / sizeof(sizes[0]), i;

  if (argc > 1 && strcmp(argv[1], "--quick") == 0)
    n = 2;
  log_setup(LOG_WARN, 0); /* as the daemon runs in the benchmarks */
  for (i = 0; i < n; i++) {
    if (measure_apart(sizes[i], &rows[i]) != 0) {
      fprintf(stderr, "bench_scheduler: measuring %zu jobs failed\n", sizes[i]);
      return 1;
    }
  }
  printf("%-8s %13s %13s %13s %10s %9s %8s %9s %9s\n", "queued", "nothing new",
         "nothing to", "starting 10", "event", "RSS", "bytes",
         "vs 0:", "vs 0:");
  printf("%-8s %13s %13s %13s %10s %9s %8s %9s %9s\n", "", "(us)", "start (us)",
         "(us)", "(us)", "(MB)", "/job", "nothing", "start 10");
  for (i = 0; i < n; i++) {
    const struct row *r = &rows[i];
    char per_job[16] = "-";

    if (sizes[i] > 0)
      snprintf(per_job, sizeof(per_job), "%.0f",
               (double)r->rss_delta_kb * 1024 / (double)sizes[i]);
    printf("%-8zu %13.2f %13.2f %13.2f %10.2f %9.1f %8s %8.2fx %8.2fx%s\n",
           sizes[i], r->idle_us, r->nothing_us, r->start_us, r->event_us,
           (double)r->rss_kb / 1024, per_job,
           r->nothing_us / rows[0].nothing_us, r->start_us / rows[0].start_us,
           r->ok ? "" : "  (unexpected start count)");
  }
  return 0;
}
