#include "scheduler.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rand.h"

#define SCHED_MOD "scheduler"

struct pool_state {
  uint64_t backoff_ms;
  uint64_t backoff_until_ms;
  uint64_t jobs_completed;
  uint64_t runner_failures;
};

struct scheduler {
  const struct config *cfg;
  struct sched_ops ops;
  void *ctx;
  struct pool_state pools[CFG_MAX_POOLS];
  struct sched_job **jobs;
  size_t njobs, jobs_cap;
  struct sched_runner **runners;
  size_t nrunners, runners_cap;
  uint64_t seq;
  uint64_t unmatched;
  unsigned instance; /* random per process, keeps runner names unique */
  char tag[9];       /* stable per state_dir, see sched_set_tag */
  unsigned runner_seq;
};

static const char *const job_status_names[] = {"waiting", "queued",
                                               "in_progress", "completed"};
static const char *const runner_state_names[] = {"starting", "idle", "busy",
                                                 "stopping", "finished"};

const char *sched_job_status_name(enum sched_job_status st)
{
  return job_status_names[st];
}

const char *sched_runner_state_name(enum sched_runner_state st)
{
  return runner_state_names[st];
}

static void runner_set_state(struct sched_runner *r, enum sched_runner_state st,
                             uint64_t now_ms)
{
  if (r->state == st)
    return;
  log_debug(SCHED_MOD, "runner state", "runner=%s from=%s to=%s", r->name,
            runner_state_names[r->state], runner_state_names[st]);
  r->state = st;
  r->state_ms = now_ms;
  if (st == SCHED_RUNNER_IDLE)
    r->idle_since_ms = now_ms;
}

static unsigned random_instance(void)
{
  unsigned v = 0;

  if (rand_bytes(&v, sizeof(v)) != 0)
    v = 0;
  if (v == 0)
    v = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
  return v;
}

struct scheduler *sched_new(const struct config *cfg,
                            const struct sched_ops *ops, void *ctx)
{
  struct scheduler *s = calloc(1, sizeof(*s));

  if (s == NULL)
    return NULL;
  s->cfg = cfg;
  s->ops = *ops;
  s->ctx = ctx;
  s->instance = random_instance();
  snprintf(s->tag, sizeof(s->tag), "x");
  return s;
}

static void job_free(struct sched_job *j)
{
  size_t i;

  for (i = 0; i < j->nlabels; i++)
    free(j->labels[i]);
  free(j);
}

void sched_destroy(struct scheduler *s)
{
  size_t i;

  if (s == NULL)
    return;
  for (i = 0; i < s->njobs; i++)
    job_free(s->jobs[i]);
  for (i = 0; i < s->nrunners; i++)
    free(s->runners[i]);
  free(s->jobs);
  free(s->runners);
  free(s);
}

static int pool_index(const struct config *cfg, const char *name)
{
  size_t i;

  for (i = 0; i < cfg->npools; i++)
    if (strcmp(cfg->pools[i].name, name) == 0)
      return (int)i;
  return -1;
}

void sched_set_tag(struct scheduler *s, const char *tag)
{
  snprintf(s->tag, sizeof(s->tag), "%.8s", tag);
}

static int is_lower_hex(char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int sched_name_is_ours(const struct scheduler *s, const char *name)
{
  size_t len = strlen(name), tlen = strlen(s->tag), digits = 0, t, k;

  /* Read from the end, as runner_new writes the name: a pool name may hold
   * dashes, digits and even another fleet's tag, so only the fixed shape
   * after it, "-<tag>-<4 hex>-<n>", says whose runner this is. */
  while (digits < len && name[len - 1 - digits] >= '0' &&
         name[len - 1 - digits] <= '9')
    digits++;
  /* "rf-", a pool of at least one character, then that shape. */
  if (digits == 0 || len < 3 + 1 + 1 + tlen + 1 + 4 + 1 + digits)
    return 0;
  t = len - digits - 1 - 4 - 1 - tlen - 1; /* the dash before the tag */
  for (k = 0; k < 4; k++)
    if (!is_lower_hex(name[t + tlen + 2 + k]))
      return 0;
  return strncmp(name, "rf-", 3) == 0 && name[t] == '-' &&
         memcmp(name + t + 1, s->tag, tlen) == 0 && name[t + 1 + tlen] == '-' &&
         name[len - digits - 1] == '-';
}

void sched_set_config(struct scheduler *s, const struct config *cfg)
{
  struct pool_state old[CFG_MAX_POOLS];
  int map[CFG_MAX_POOLS];
  size_t i;

  memcpy(old, s->pools, sizeof(old));
  memset(s->pools, 0, sizeof(s->pools));
  for (i = 0; i < s->cfg->npools; i++) {
    map[i] = pool_index(cfg, s->cfg->pools[i].name);
    if (map[i] >= 0)
      s->pools[map[i]] = old[i];
  }
  for (i = 0; i < s->njobs; i++)
    if (s->jobs[i]->pool >= 0)
      s->jobs[i]->pool = map[s->jobs[i]->pool];
  for (i = 0; i < s->nrunners; i++)
    if (s->runners[i]->pool >= 0)
      s->runners[i]->pool = map[s->runners[i]->pool];
  s->cfg = cfg;
}

static int label_in(const char *label, char *const *set, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcasecmp(label, set[i]) == 0)
      return 1;
  return 0;
}

int sched_match_pool(const struct config *cfg, char *const *labels,
                     size_t nlabels)
{
  int best = -1;
  size_t i, k;

  for (i = 0; i < cfg->npools; i++) {
    const struct cfg_pool *p = &cfg->pools[i];
    int ok = 1;

    for (k = 0; k < nlabels && ok; k++)
      if (strcasecmp(labels[k], "self-hosted") != 0 &&
          !label_in(labels[k], p->labels, p->nlabels))
        ok = 0;
    if (ok && (best < 0 || p->nlabels < cfg->pools[best].nlabels))
      best = (int)i;
  }
  return best;
}

static struct sched_job *job_find(const struct scheduler *s, int64_t id)
{
  size_t i;

  for (i = 0; i < s->njobs; i++)
    if (s->jobs[i]->id == id)
      return s->jobs[i];
  return NULL;
}

const struct sched_job *sched_job_find(const struct scheduler *s, int64_t id)
{
  return job_find(s, id);
}

static struct sched_runner *runner_find(const struct scheduler *s,
                                        const char *name)
{
  size_t i;

  if (name == NULL)
    return NULL;
  for (i = 0; i < s->nrunners; i++)
    if (strcmp(s->runners[i]->name, name) == 0)
      return s->runners[i];
  return NULL;
}

const struct sched_runner *sched_runner_find(const struct scheduler *s,
                                             const char *name)
{
  return runner_find(s, name);
}

/* Copies src, cut at a UTF-8 character boundary when it does not fit, so
 * what is kept stays valid UTF-8 (the API encodes it as JSON). */
static void copy_str(char *dst, size_t size, const char *src)
{
  size_t len;

  if (src == NULL)
    src = "";
  len = strlen(src);
  if (len >= size) {
    len = size - 1;
    while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
      len--;
  }
  memcpy(dst, src, len);
  dst[len] = '\0';
}

/* Drops the oldest finished jobs past SCHED_COMPLETED_KEEP so memory stays
 * bounded however long the daemon runs. */
static void jobs_trim(struct scheduler *s)
{
  size_t completed = 0, i, out;

  for (i = 0; i < s->njobs; i++)
    if (s->jobs[i]->status == SCHED_JOB_COMPLETED)
      completed++;
  if (completed <= SCHED_COMPLETED_KEEP)
    return;
  for (i = 0, out = 0; i < s->njobs; i++) {
    struct sched_job *j = s->jobs[i];
    if (completed > SCHED_COMPLETED_KEEP && j->status == SCHED_JOB_COMPLETED) {
      job_free(j);
      completed--;
      continue;
    }
    s->jobs[out++] = j;
  }
  s->njobs = out;
}

/* Finds the job of an event, or records it. Returns NULL when it matches no
 * pool (counted) or memory runs out. */
static struct sched_job *job_get(struct scheduler *s,
                                 const struct sched_job_event *ev,
                                 enum sched_job_status status, uint64_t now_ms)
{
  struct sched_job *j = job_find(s, ev->job_id);
  int pool;
  size_t i;

  if (j != NULL)
    return j;
  pool = sched_match_pool(s->cfg, ev->labels, ev->nlabels);
  if (pool < 0) {
    s->unmatched++;
    log_info(SCHED_MOD, "job matches no pool", "job=%lld repo=%s labels=%zu",
             (long long)ev->job_id, ev->repo != NULL ? ev->repo : "",
             ev->nlabels);
    return NULL;
  }
  if (s->njobs == s->jobs_cap) {
    size_t cap = s->jobs_cap ? s->jobs_cap * 2 : 64;
    struct sched_job **n = realloc(s->jobs, cap * sizeof(*n));
    if (n == NULL)
      return NULL;
    s->jobs = n;
    s->jobs_cap = cap;
  }
  j = calloc(1, sizeof(*j));
  if (j == NULL)
    return NULL;
  j->id = ev->job_id;
  j->run_id = ev->run_id;
  copy_str(j->repo, sizeof(j->repo), ev->repo);
  copy_str(j->name, sizeof(j->name), ev->name);
  for (i = 0; i < ev->nlabels && i < SCHED_MAX_JOB_LABELS; i++) {
    char *l = strdup(ev->labels[i]);
    char *c;
    if (l == NULL) {
      job_free(j);
      return NULL;
    }
    for (c = l; *c != '\0'; c++)
      *c = (char)tolower((unsigned char)*c);
    j->labels[j->nlabels++] = l;
  }
  j->pool = pool;
  j->status = status;
  j->seq = ++s->seq;
  if (status >= SCHED_JOB_QUEUED)
    j->queued_ms = now_ms;
  s->jobs[s->njobs++] = j;
  jobs_trim(s);
  return j;
}

int sched_job_waiting(struct scheduler *s, const struct sched_job_event *ev,
                      uint64_t now_ms)
{
  return job_get(s, ev, SCHED_JOB_WAITING, now_ms) != NULL ? 0 : -1;
}

int sched_job_queued(struct scheduler *s, const struct sched_job_event *ev,
                     uint64_t now_ms)
{
  struct sched_job *j = job_get(s, ev, SCHED_JOB_QUEUED, now_ms);

  if (j == NULL)
    return -1;
  if (j->status == SCHED_JOB_WAITING) {
    j->status = SCHED_JOB_QUEUED;
    j->queued_ms = now_ms;
    j->seq = ++s->seq;
  }
  return 0;
}

static void runner_remove(struct scheduler *s, struct sched_runner *r);

/* An event named the runner that took a job: bind them. */
static void bind_runner(struct scheduler *s, struct sched_job *j,
                        const char *runner_name, uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, runner_name);

  if (runner_name != NULL && runner_name[0] != '\0')
    copy_str(j->runner, sizeof(j->runner), runner_name);
  if (r == NULL)
    return; /* not ours, or already gone */
  r->took_job = 1;
  r->job_id = j->id;
  if (r->pool >= 0)
    s->pools[r->pool].backoff_ms = 0;
  if (r->state == SCHED_RUNNER_FINISHED) {
    runner_remove(s, r); /* its process is gone; the job is accounted */
    return;
  }
  if (r->state == SCHED_RUNNER_IDLE || r->state == SCHED_RUNNER_STARTING)
    runner_set_state(r, SCHED_RUNNER_BUSY, now_ms);
}

int sched_job_in_progress(struct scheduler *s, const struct sched_job_event *ev,
                          uint64_t now_ms)
{
  struct sched_job *j = job_get(s, ev, SCHED_JOB_IN_PROGRESS, now_ms);

  if (j == NULL)
    return -1;
  if (j->status < SCHED_JOB_IN_PROGRESS) {
    j->status = SCHED_JOB_IN_PROGRESS;
    j->started_ms = now_ms;
  } else if (j->started_ms == 0) {
    j->started_ms = now_ms;
  }
  bind_runner(s, j, ev->runner_name, now_ms);
  return 0;
}

int sched_job_completed(struct scheduler *s, const struct sched_job_event *ev,
                        uint64_t now_ms)
{
  struct sched_job *j = job_get(s, ev, SCHED_JOB_COMPLETED, now_ms);

  if (j == NULL)
    return -1;
  if (j->status != SCHED_JOB_COMPLETED && j->pool >= 0)
    s->pools[j->pool].jobs_completed++;
  if (j->status == SCHED_JOB_QUEUED || j->status == SCHED_JOB_WAITING)
    log_info(SCHED_MOD, "queued job ended without a runner",
             "job=%lld conclusion=%s", (long long)j->id,
             ev->conclusion != NULL ? ev->conclusion : "");
  j->status = SCHED_JOB_COMPLETED;
  j->completed_ms = now_ms;
  copy_str(j->conclusion, sizeof(j->conclusion), ev->conclusion);
  if (ev->runner_name != NULL && ev->runner_name[0] != '\0')
    bind_runner(s, j, ev->runner_name, now_ms);
  jobs_trim(s);
  return 0;
}

void sched_runner_running(struct scheduler *s, const char *name, int64_t gh_id,
                          const int *gpus, size_t ngpus, uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, name);
  size_t i;

  if (r == NULL)
    return;
  r->gh_id = gh_id;
  for (i = 0; i < ngpus && i < CFG_MAX_GPUS; i++)
    r->gpus[i] = gpus[i];
  r->ngpus = i;
  if (r->state == SCHED_RUNNER_STARTING)
    runner_set_state(r, r->took_job ? SCHED_RUNNER_BUSY : SCHED_RUNNER_IDLE,
                     now_ms);
}

static void runner_remove(struct scheduler *s, struct sched_runner *r)
{
  size_t i;

  for (i = 0; i < s->nrunners; i++) {
    if (s->runners[i] == r) {
      s->runners[i] = s->runners[--s->nrunners];
      free(r);
      return;
    }
  }
}

/* Counts a failed runner of pool and backs off before the next start:
 * 1 s, doubling up to a minute, reset when a runner takes a job. */
static void pool_failed(struct scheduler *s, size_t pool, uint64_t now_ms)
{
  struct pool_state *ps = &s->pools[pool];

  ps->runner_failures++;
  ps->backoff_ms =
      ps->backoff_ms == 0 ? SCHED_BACKOFF_MIN_MS : ps->backoff_ms * 2;
  if (ps->backoff_ms > SCHED_BACKOFF_MAX_MS)
    ps->backoff_ms = SCHED_BACKOFF_MAX_MS;
  ps->backoff_until_ms = now_ms + ps->backoff_ms;
}

void sched_runner_exited(struct scheduler *s, const char *name, int status,
                         uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, name);

  if (r == NULL)
    return;
  if (!r->took_job && r->state != SCHED_RUNNER_STOPPING && status == 0) {
    runner_set_state(r, SCHED_RUNNER_FINISHED, now_ms);
    return;
  }
  /* A runner that ends before it took a job, and that we did not ask to
   * stop, failed: back off before replacing it so a broken image or
   * command does not spin. */
  if (!r->took_job && r->state != SCHED_RUNNER_STOPPING && r->pool >= 0) {
    pool_failed(s, (size_t)r->pool, now_ms);
    log_warn(SCHED_MOD, "runner ended before taking a job",
             "runner=%s status=%d backoff_ms=%llu", r->name, status,
             (unsigned long long)s->pools[r->pool].backoff_ms);
  }
  runner_remove(s, r);
}

void sched_runner_dropped(struct scheduler *s, const char *name,
                          uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, name);

  (void)now_ms;
  if (r == NULL)
    return;
  log_info(SCHED_MOD, "runner dropped before it started", "runner=%s", r->name);
  runner_remove(s, r);
}

void sched_runner_keep(struct scheduler *s, const char *name, uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, name);

  if (r == NULL || r->state != SCHED_RUNNER_STOPPING)
    return;
  runner_set_state(r, r->took_job ? SCHED_RUNNER_BUSY : SCHED_RUNNER_IDLE,
                   now_ms);
}

static void count_pool(const struct scheduler *s, size_t pool,
                       struct sched_pool_stats *st)
{
  size_t i;

  memset(st, 0, sizeof(*st));
  for (i = 0; i < s->njobs; i++) {
    const struct sched_job *j = s->jobs[i];
    if (j->pool != (int)pool)
      continue;
    if (j->status == SCHED_JOB_QUEUED)
      st->queued++;
    else if (j->status == SCHED_JOB_WAITING)
      st->waiting++;
    else if (j->status == SCHED_JOB_IN_PROGRESS)
      st->in_progress++;
  }
  for (i = 0; i < s->nrunners; i++) {
    const struct sched_runner *r = s->runners[i];
    if (r->pool != (int)pool)
      continue;
    if (r->state == SCHED_RUNNER_STARTING)
      st->starting++;
    else if (r->state == SCHED_RUNNER_IDLE)
      st->idle++;
    else if (r->state == SCHED_RUNNER_BUSY)
      st->busy++;
    else if (r->state == SCHED_RUNNER_FINISHED)
      st->finished++;
    else
      st->stopping++;
  }
  st->jobs_completed = s->pools[pool].jobs_completed;
  st->runner_failures = s->pools[pool].runner_failures;
  st->backoff_until_ms = s->pools[pool].backoff_until_ms;
}

/* Returns 1 when the retirement began, 0 when the owner could not start
 * it now (the runner stays idle). */
static int retire(struct scheduler *s, struct sched_runner *r, const char *why,
                  uint64_t now_ms)
{
  log_info(SCHED_MOD, "retiring runner", "runner=%s reason=%s", r->name, why);
  runner_set_state(r, SCHED_RUNNER_STOPPING, now_ms);
  if (s->ops.retire(s->ctx, r) == 0)
    return 1;
  r->state = SCHED_RUNNER_IDLE; /* not a transition: it never left */
  return 0;
}

/* Retires idle runners beyond what the pool needs (queued jobs plus
 * min_idle), and idle runners past idle_timeout beyond min_idle; runners of
 * pools that left the config are retired once idle. Longest idle first. */
static int retire_surplus(struct scheduler *s, uint64_t now_ms)
{
  int actions = 0;
  size_t i, p;

  for (i = 0; i < s->nrunners; i++) {
    struct sched_runner *r = s->runners[i];
    if (r->state != SCHED_RUNNER_IDLE)
      continue;
    if (r->pool < 0) {
      actions += retire(s, r, "pool_removed", now_ms);
    } else if (s->cfg->runner_start_timeout_ms > 0 &&
               now_ms - r->created_ms >= s->cfg->runner_start_timeout_ms) {
      /* Even a min_idle runner is replaced when it never got a job in this
       * long: its registration may have gone stale at GitHub. */
      actions += retire(s, r, "start_timeout", now_ms);
    }
  }
  for (p = 0; p < s->cfg->npools; p++) {
    const struct cfg_pool *pool = &s->cfg->pools[p];
    struct sched_pool_stats st;
    long surplus;
    unsigned kept = 0;

    count_pool(s, p, &st);
    surplus =
        (long)(st.starting + st.idle) - (long)(st.queued + pool->min_idle);
    for (;;) {
      struct sched_runner *oldest = NULL;
      for (i = 0; i < s->nrunners; i++) {
        struct sched_runner *r = s->runners[i];
        if (r->pool == (int)p && r->state == SCHED_RUNNER_IDLE &&
            (oldest == NULL || r->idle_since_ms < oldest->idle_since_ms))
          oldest = r;
      }
      if (oldest == NULL || surplus <= 0)
        break;
      if (!retire(s, oldest, "surplus", now_ms))
        break; /* the owner cannot act now; try on the next pass */
      surplus--;
      actions++;
    }
    /* Idle timeout: keep the min_idle most recently idle ones. */
    for (i = 0; i < s->nrunners; i++) {
      struct sched_runner *r = s->runners[i];
      if (r->pool != (int)p || r->state != SCHED_RUNNER_IDLE)
        continue;
      if (now_ms - r->idle_since_ms < pool->idle_timeout_ms) {
        kept++;
        continue;
      }
    }
    for (i = 0; i < s->nrunners && pool->idle_timeout_ms > 0; i++) {
      struct sched_runner *r = s->runners[i];
      if (r->pool != (int)p || r->state != SCHED_RUNNER_IDLE ||
          now_ms - r->idle_since_ms < pool->idle_timeout_ms)
        continue;
      if (kept < pool->min_idle) {
        kept++;
        continue;
      }
      actions += retire(s, r, "idle_timeout", now_ms);
    }
  }
  return actions;
}

/* One queued job waiting for a runner, with its place in the start order. */
struct demand {
  struct sched_job *job;
  int priority;
  unsigned repo_rank; /* k-th queued job of its repository */
};

static int demand_cmp(const void *a, const void *b)
{
  const struct demand *x = a, *y = b;

  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  if (x->repo_rank != y->repo_rank)
    return x->repo_rank < y->repo_rank ? -1 : 1;
  if (x->job->seq != y->job->seq)
    return x->job->seq < y->job->seq ? -1 : 1;
  return 0;
}

/* Groups jobs by (priority, repository), each group in arrival order. */
static int group_cmp(const void *a, const void *b)
{
  const struct demand *x = a, *y = b;
  int c;

  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  c = strcmp(x->job->repo, y->job->repo);
  if (c != 0)
    return c;
  return x->job->seq < y->job->seq ? -1 : x->job->seq > y->job->seq;
}

/* Orders every queued job: priority, then round-robin across repositories,
 * then FIFO. A repository's k-th waiting job ranks k plus the number of its
 * jobs already running at that priority, so a repository that was just
 * served waits behind one that was not. Sorting by group first keeps this
 * O(n log n) in the number of jobs. Returns a malloc'd array (caller frees)
 * of *n entries, or NULL. */
static struct demand *demand_order(struct scheduler *s, size_t *n)
{
  struct demand *d, *running;
  size_t nq = 0, nr = 0, i, r = 0;

  *n = 0;
  d = malloc((s->njobs + 1) * sizeof(*d));
  running = malloc((s->njobs + 1) * sizeof(*running));
  if (d == NULL || running == NULL) {
    free(d);
    free(running);
    return NULL;
  }
  for (i = 0; i < s->njobs; i++) {
    struct sched_job *j = s->jobs[i];
    struct demand *slot;

    if (j->pool < 0)
      continue;
    if (j->status == SCHED_JOB_QUEUED)
      slot = &d[nq++];
    else if (j->status == SCHED_JOB_IN_PROGRESS)
      slot = &running[nr++];
    else
      continue;
    slot->job = j;
    slot->priority = s->cfg->pools[j->pool].priority;
    slot->repo_rank = 0;
  }
  qsort(d, nq, sizeof(*d), group_cmp);
  qsort(running, nr, sizeof(*running), group_cmp);
  for (i = 0; i < nq; i++) {
    unsigned nrunning = 0;
    int c = 1;

    if (i > 0 && d[i - 1].priority == d[i].priority &&
        strcmp(d[i - 1].job->repo, d[i].job->repo) == 0) {
      d[i].repo_rank = d[i - 1].repo_rank + 1;
      continue;
    }
    /* First of its group: count the group's running jobs, walking the
     * sorted running list alongside. */
    while (r < nr) {
      c = running[r].priority != d[i].priority
              ? (running[r].priority > d[i].priority ? -1 : 1)
              : strcmp(running[r].job->repo, d[i].job->repo);
      if (c >= 0)
        break;
      r++;
    }
    while (r < nr && running[r].priority == d[i].priority &&
           strcmp(running[r].job->repo, d[i].job->repo) == 0) {
      nrunning++;
      r++;
    }
    d[i].repo_rank = nrunning;
  }
  free(running);
  qsort(d, nq, sizeof(*d), demand_cmp);
  *n = nq;
  return d;
}

static struct sched_runner *runner_new(struct scheduler *s, size_t pool,
                                       uint64_t now_ms)
{
  struct sched_runner *r;

  if (s->nrunners == s->runners_cap) {
    size_t cap = s->runners_cap ? s->runners_cap * 2 : 32;
    struct sched_runner **n = realloc(s->runners, cap * sizeof(*n));
    if (n == NULL)
      return NULL;
    s->runners = n;
    s->runners_cap = cap;
  }
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  snprintf(r->name, sizeof(r->name), "rf-%s-%s-%04x-%u",
           s->cfg->pools[pool].name, s->tag, s->instance & 0xffff,
           ++s->runner_seq);
  r->pool = (int)pool;
  r->state = SCHED_RUNNER_STARTING;
  r->created_ms = now_ms;
  r->state_ms = now_ms;
  s->runners[s->nrunners++] = r;
  return r;
}

enum start_result { START_OK, START_NO_CAPACITY, START_FAILED };

static enum start_result start_runner(struct scheduler *s, size_t pool,
                                      uint64_t now_ms)
{
  struct sched_runner *r;
  int rc;

  if (!s->ops.fits(s->ctx, &s->cfg->pools[pool]))
    return START_NO_CAPACITY;
  r = runner_new(s, pool, now_ms);
  if (r == NULL)
    return START_FAILED;
  rc = s->ops.start(s->ctx, r);
  if (rc == 0)
    return START_OK;
  runner_remove(s, r);
  if (rc == -ENOSPC)
    return START_NO_CAPACITY;
  pool_failed(s, pool, now_ms);
  log_warn(SCHED_MOD, "runner start failed", "pool=%s error=%d",
           s->cfg->pools[pool].name, rc);
  return START_FAILED;
}

/* GPU pools and CPU pools draw on different resources: when the first job
 * in order cannot get its GPUs, later GPU jobs wait behind it (no
 * starvation of big requests), while CPU jobs go on. */
static int blocked_kind(const struct cfg_pool *pool)
{
  return pool->gpus > 0 ? 1 : 0;
}

/* The runners that count against max_runners. A stopping one is still
 * there (deregistering, its process or pod ending) and holds its place
 * until the owner reports it gone; a finished one has exited. */
static unsigned pool_runners(const struct sched_pool_stats *st)
{
  return st->starting + st->idle + st->busy + st->stopping;
}

static int start_for_demand(struct scheduler *s, uint64_t now_ms)
{
  struct sched_pool_stats st[CFG_MAX_POOLS];
  unsigned covered[CFG_MAX_POOLS] = {0};
  int blocked[2] = {0, 0};
  struct demand *d;
  size_t n, i, p;
  int actions = 0;

  for (p = 0; p < s->cfg->npools; p++)
    count_pool(s, p, &st[p]);
  d = demand_order(s, &n);
  if (d == NULL)
    return 0;
  for (i = 0; i < n; i++) {
    size_t pi = (size_t)d[i].job->pool;
    const struct cfg_pool *pool = &s->cfg->pools[pi];
    enum start_result res;

    /* Runners already starting or idle (or finished, with their job's
     * event still on its way) cover the first jobs in order. */
    if (covered[pi] < st[pi].starting + st[pi].idle + st[pi].finished) {
      covered[pi]++;
      continue;
    }
    if (pool_runners(&st[pi]) >= pool->max_runners ||
        s->pools[pi].backoff_until_ms > now_ms || blocked[blocked_kind(pool)])
      continue;
    res = start_runner(s, pi, now_ms);
    if (res == START_NO_CAPACITY) {
      blocked[blocked_kind(pool)] = 1;
      continue;
    }
    if (res == START_FAILED)
      break;
    st[pi].starting++;
    covered[pi]++;
    actions++;
  }
  free(d);
  /* min_idle comes after every queued job, by priority. */
  for (i = 0; i < s->cfg->npools; i++) {
    size_t best = s->cfg->npools;
    for (p = 0; p < s->cfg->npools; p++) {
      const struct cfg_pool *pool = &s->cfg->pools[p];
      if (st[p].starting + st[p].idle + st[p].finished >=
              st[p].queued + pool->min_idle ||
          pool_runners(&st[p]) >= pool->max_runners ||
          s->pools[p].backoff_until_ms > now_ms || blocked[blocked_kind(pool)])
        continue;
      if (best == s->cfg->npools ||
          pool->priority > s->cfg->pools[best].priority)
        best = p;
    }
    if (best == s->cfg->npools)
      break;
    if (start_runner(s, best, now_ms) != START_OK) {
      blocked[blocked_kind(&s->cfg->pools[best])] = 1;
      continue;
    }
    st[best].starting++;
    actions++;
    i = (size_t)-1; /* look again from the top until nothing is missing */
  }
  return actions;
}

/* A finished runner whose job no event named in time ran none after all
 * (it was stopped from outside, cleanly): its registration may be left at
 * GitHub, so it is retired like an idle one (the owner deregisters it and
 * finds the process gone). */
static void expire_finished(struct scheduler *s, uint64_t now_ms)
{
  size_t i;

  for (i = 0; i < s->nrunners; i++) {
    struct sched_runner *r = s->runners[i];
    if (r->state != SCHED_RUNNER_FINISHED ||
        now_ms - r->state_ms < SCHED_FINISHED_TTL_MS)
      continue;
    log_warn(SCHED_MOD, "no event named the job of a finished runner",
             "runner=%s", r->name);
    runner_set_state(r, SCHED_RUNNER_STOPPING, now_ms);
    if (s->ops.retire(s->ctx, r) != 0)
      r->state = SCHED_RUNNER_FINISHED; /* not a transition; try later */
  }
}

/* Ends jobs whose completed webhook never came (see SCHED_QUEUED_TTL_MS). */
static void expire_jobs(struct scheduler *s, uint64_t now_ms)
{
  size_t i;

  for (i = 0; i < s->njobs; i++) {
    struct sched_job *j = s->jobs[i];
    uint64_t since =
        j->status == SCHED_JOB_IN_PROGRESS ? j->started_ms : j->queued_ms;
    uint64_t ttl = j->status == SCHED_JOB_IN_PROGRESS ? SCHED_RUNNING_TTL_MS
                                                      : SCHED_QUEUED_TTL_MS;

    if (j->status == SCHED_JOB_COMPLETED || since == 0 || now_ms - since < ttl)
      continue;
    log_warn(SCHED_MOD, "job expired without a completed event",
             "job=%lld status=%s", (long long)j->id,
             job_status_names[j->status]);
    j->status = SCHED_JOB_COMPLETED;
    j->completed_ms = now_ms;
    copy_str(j->conclusion, sizeof(j->conclusion), "expired");
  }
}

int sched_reconcile(struct scheduler *s, uint64_t now_ms)
{
  int actions;

  expire_jobs(s, now_ms);
  expire_finished(s, now_ms);
  actions = retire_surplus(s, now_ms);

  return actions + start_for_demand(s, now_ms);
}

size_t sched_npools(const struct scheduler *s)
{
  return s->cfg->npools;
}

const struct cfg_pool *sched_pool(const struct scheduler *s, size_t i)
{
  return &s->cfg->pools[i];
}

void sched_pool_stats(const struct scheduler *s, size_t i,
                      struct sched_pool_stats *out)
{
  count_pool(s, i, out);
}

size_t sched_njobs(const struct scheduler *s)
{
  return s->njobs;
}

const struct sched_job *sched_job_at(const struct scheduler *s, size_t i)
{
  return s->jobs[i];
}

size_t sched_nrunners(const struct scheduler *s)
{
  return s->nrunners;
}

const struct sched_runner *sched_runner_at(const struct scheduler *s, size_t i)
{
  return s->runners[i];
}

uint64_t sched_unmatched_total(const struct scheduler *s)
{
  return s->unmatched;
}
