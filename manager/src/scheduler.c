#include "scheduler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rand.h"
#include "sched_queue.h"
#include "sched_table.h"

#define SCHED_MOD "scheduler"

/* ---- state ---- */

/* A job with what keeps it in order: a queued job of a known pool is in
 * the start order (qn); every job that can expire is in an expiry list, a
 * completed one in the list of completed jobs (tnext, tprev). */
struct job {
  struct sched_job pub;
  struct sched_qnode qn;
  struct job *tnext, *tprev;
  uint64_t due_ms; /* monotonic: expires then unless it moves on */
  uint32_t index;  /* in scheduler.jobs */
};

struct job_list {
  struct job *head, *tail;
  size_t n;
};

/* What a pool keeps across a reload. */
struct pool_state {
  uint64_t backoff_ms;
  uint64_t backoff_until_ms;
  uint64_t jobs_completed;
  uint64_t runner_failures;
};

/* Jobs and runners of a pool by state, kept as they change (rebuilt on a
 * reload) so that a pass need not count. */
struct pool_count {
  unsigned jobs[SCHED_JOB_COMPLETED + 1];
  unsigned runners[SCHED_RUNNER_FINISHED + 1];
};

struct scheduler {
  const struct config *cfg;
  struct sched_ops ops;
  void *ctx;
  uint64_t (*wall_ms)(void *arg);
  void *wall_arg;
  struct pool_state pools[CFG_MAX_POOLS];
  struct pool_count counts[CFG_MAX_POOLS];
  struct sched_queue queue;
  struct job **jobs;
  size_t njobs, jobs_cap;
  struct sched_table job_ids, strs, sets, runner_names;
  struct job_list expiry[2]; /* queued, in progress; by due_ms */
  struct job_list done;      /* completed, oldest first */
  struct sched_runner **runners;
  size_t nrunners, runners_cap;
  unsigned idle_total, finished_total; /* runners, removed pools too */
  int changed;                         /* since the last pass */
  int retry;                           /* the last pass was refused something */
  uint64_t due_ms;                     /* the next deadline a pass acts on */
  uint64_t seq;
  uint64_t unmatched;
  unsigned instance; /* random per process, keeps runner names unique */
  char tag[9];       /* stable per state_dir, see sched_set_tag */
  unsigned runner_seq;
};

/* Copies src, cut at a UTF-8 character boundary when it does not fit. */
static void copy_str(char *dst, size_t size, const char *src)
{
  size_t len;

  if (src == NULL)
    src = "";
  len = sched_cut_len(src, size);
  memcpy(dst, src, len);
  dst[len] = '\0';
}

static const char *const job_status_names[] = {
    "waiting", "queued", "in_progress", "completed", "none"};
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

static uint64_t realtime_ms(void *arg)
{
  struct timespec ts;

  (void)arg;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void sched_set_wall_clock(struct scheduler *s, uint64_t (*wall_ms)(void *arg),
                          void *arg)
{
  s->wall_ms = wall_ms != NULL ? wall_ms : realtime_ms;
  s->wall_arg = wall_ms != NULL ? arg : NULL;
}

uint64_t sched_wall_ms(const struct scheduler *s)
{
  return s->wall_ms(s->wall_arg);
}

/* Runners by pool and state, kept as they change so a pass need not
 * count. */
static void runner_count(struct scheduler *s, const struct sched_runner *r,
                         int delta)
{
  if (r->pool >= 0)
    s->counts[r->pool].runners[r->state] += (unsigned)delta;
  if (r->state == SCHED_RUNNER_IDLE)
    s->idle_total += (unsigned)delta;
  else if (r->state == SCHED_RUNNER_FINISHED)
    s->finished_total += (unsigned)delta;
}

static void runner_set_state(struct scheduler *s, struct sched_runner *r,
                             enum sched_runner_state st, uint64_t now_ms)
{
  if (r->state == st)
    return;
  log_debug(SCHED_MOD, "runner state", LOG_S("runner", r->name),
            LOG_S("from", runner_state_names[r->state]),
            LOG_S("to", runner_state_names[st]));
  runner_count(s, r, -1);
  r->state = st;
  runner_count(s, r, 1);
  r->state_ms = now_ms;
  s->changed = 1;
  if (st == SCHED_RUNNER_IDLE)
    r->idle_since_ms = now_ms;
}

/* Puts a runner back in the state it had when the owner could not act
 * on a change: not a transition, nothing is logged or timed. */
static void runner_put_back(struct scheduler *s, struct sched_runner *r,
                            enum sched_runner_state st)
{
  runner_count(s, r, -1);
  r->state = st;
  runner_count(s, r, 1);
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
  s->wall_ms = realtime_ms;
  s->queue.cfg = cfg;
  s->instance = random_instance();
  s->changed = 1;
  snprintf(s->tag, sizeof(s->tag), "x");
  return s;
}

static void job_free(struct scheduler *s, struct job *j)
{
  sched_intern_drop(&s->strs, j->pub.repo);
  sched_intern_drop(&s->strs, j->pub.name);
  sched_intern_drop(&s->strs, j->pub.runner);
  sched_labels_drop(&s->sets, j->pub.labels);
  free(j);
}

void sched_destroy(struct scheduler *s)
{
  size_t i;

  if (s == NULL)
    return;
  sched_queue_free(&s->queue);
  for (i = 0; i < s->njobs; i++)
    job_free(s, s->jobs[i]);
  for (i = 0; i < s->nrunners; i++)
    free(s->runners[i]);
  sched_table_free(&s->job_ids);
  sched_table_free(&s->strs);
  sched_table_free(&s->sets);
  sched_table_free(&s->runner_names);
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

const char *sched_tag(const struct scheduler *s)
{
  return s->tag;
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

/* ---- lookups ---- */

static uint64_t id_hash(int64_t id)
{
  return sched_mix64((uint64_t)id);
}

static uint64_t job_hash_cb(const void *e)
{
  return id_hash(((const struct job *)e)->pub.id);
}

static struct job *job_find(const struct scheduler *s, int64_t id)
{
  struct job *j;
  size_t k;

  for (k = id_hash(id); (j = sched_table_probe(&s->job_ids, &k)) != NULL;)
    if (j->pub.id == id)
      return j;
  return NULL;
}

const struct sched_job *sched_job_find(const struct scheduler *s, int64_t id)
{
  struct job *j = job_find(s, id);

  return j != NULL ? &j->pub : NULL;
}

static uint64_t name_hash(const char *name)
{
  return sched_hash_bytes(name, strlen(name));
}

static uint64_t runner_hash_cb(const void *e)
{
  return name_hash(((const struct sched_runner *)e)->name);
}

static struct sched_runner *runner_find(const struct scheduler *s,
                                        const char *name)
{
  struct sched_runner *r;
  size_t k;

  if (name == NULL)
    return NULL;
  for (k = name_hash(name);
       (r = sched_table_probe(&s->runner_names, &k)) != NULL;)
    if (strcmp(r->name, name) == 0)
      return r;
  return NULL;
}

const struct sched_runner *sched_runner_find(const struct scheduler *s,
                                             const char *name)
{
  return runner_find(s, name);
}

/* ---- time-ordered job lists ---- */

static void list_insert_after(struct job_list *l, struct job *after,
                              struct job *j)
{
  j->tprev = after;
  j->tnext = after != NULL ? after->tnext : l->head;
  if (j->tnext != NULL)
    j->tnext->tprev = j;
  else
    l->tail = j;
  if (after != NULL)
    after->tnext = j;
  else
    l->head = j;
  l->n++;
}

/* Inserts j by due_ms; with a monotonic clock that is at the tail. */
static void list_insert_due(struct job_list *l, struct job *j)
{
  struct job *p = l->tail;

  while (p != NULL && p->due_ms > j->due_ms)
    p = p->tprev;
  list_insert_after(l, p, j);
}

static void list_remove(struct job_list *l, struct job *j)
{
  if (j->tprev != NULL)
    j->tprev->tnext = j->tnext;
  else
    l->head = j->tnext;
  if (j->tnext != NULL)
    j->tnext->tprev = j->tprev;
  else
    l->tail = j->tprev;
  j->tnext = j->tprev = NULL;
  l->n--;
}

/* ---- jobs ---- */

/* Drops the oldest finished jobs past SCHED_COMPLETED_KEEP so memory stays
 * bounded however long the daemon runs. */
static void jobs_trim(struct scheduler *s)
{
  while (s->done.n > SCHED_COMPLETED_KEEP) {
    struct job *j = s->done.head, *last;

    list_remove(&s->done, j);
    sched_table_del(&s->job_ids, j, job_hash_cb(j), job_hash_cb);
    last = s->jobs[--s->njobs];
    s->jobs[j->index] = last;
    last->index = j->index;
    job_free(s, j);
  }
}

static void job_enter(struct scheduler *s, struct job *j,
                      struct sched_qgroup *g, uint64_t now_ms, uint64_t wall)
{
  switch (j->pub.status) {
  case SCHED_JOB_QUEUED:
    j->pub.queued_ms = wall;
    j->due_ms = now_ms + SCHED_QUEUED_TTL_MS;
    list_insert_due(&s->expiry[0], j);
    if (g != NULL)
      sched_queue_link(&s->queue, g, &j->qn);
    break;
  case SCHED_JOB_IN_PROGRESS:
    j->pub.started_ms = wall;
    j->due_ms = now_ms + SCHED_RUNNING_TTL_MS;
    list_insert_due(&s->expiry[1], j);
    if (g != NULL)
      sched_queue_running(&s->queue, g, 1);
    break;
  case SCHED_JOB_COMPLETED:
    j->pub.completed_ms = wall;
    list_insert_after(&s->done, s->done.tail, j);
    break;
  default:
    break;
  }
  if (j->pub.pool >= 0)
    s->counts[j->pub.pool].jobs[j->pub.status]++;
}

/* Takes j out of what held it in status from; returns the group to
 * release once j is wherever it goes (not before: it may go into the same
 * group). */
static struct sched_qgroup *job_leave(struct scheduler *s, struct job *j,
                                      enum sched_job_status from)
{
  struct sched_qgroup *g = NULL;

  if (from == SCHED_JOB_NONE)
    return NULL;
  if (j->pub.pool >= 0)
    s->counts[j->pub.pool].jobs[from]--;
  if (from == SCHED_JOB_QUEUED) {
    list_remove(&s->expiry[0], j);
    if (j->qn.sub != NULL)
      g = sched_queue_unlink(&s->queue, &j->qn);
  } else if (from == SCHED_JOB_IN_PROGRESS) {
    list_remove(&s->expiry[1], j);
    if (j->pub.pool >= 0) {
      g = sched_queue_group(&s->queue, &j->pub);
      if (g != NULL)
        sched_queue_running(&s->queue, g, -1);
    }
  }
  return g;
}

/* The one place a job's status changes: it keeps the start order, the
 * expiry lists and the counts, records the wall-clock time, and tells
 * the owner (job_changed). Returns 0, or -ENOMEM with nothing changed. */
static int job_set_status(struct scheduler *s, struct job *j,
                          enum sched_job_status to, uint64_t now_ms)
{
  enum sched_job_status from = j->pub.status;
  struct sched_qgroup *g = NULL, *old;
  uint64_t wall;

  if (from == to)
    return 0;
  if (j->pub.pool >= 0 &&
      (to == SCHED_JOB_QUEUED || to == SCHED_JOB_IN_PROGRESS)) {
    g = sched_queue_prepare(&s->queue, &j->pub, to == SCHED_JOB_QUEUED);
    if (g == NULL)
      return -ENOMEM;
  }
  wall = s->wall_ms(s->wall_arg);
  if (from == SCHED_JOB_WAITING && to == SCHED_JOB_QUEUED)
    j->pub.seq = ++s->seq; /* its turn starts when it is queued */
  /* Out, then in; the group it left is released only then, so one that
   * a job leaves for running in it stays. */
  old = job_leave(s, j, from);
  j->pub.status = to;
  job_enter(s, j, g, now_ms, wall);
  if (old != NULL)
    sched_queue_release(&s->queue, old);
  if (from == SCHED_JOB_NONE && to >= SCHED_JOB_QUEUED)
    j->pub.queued_ms = wall; /* first heard of past queued */
  log_debug(SCHED_MOD, "job status", LOG_I("job", (long long)j->pub.id),
            LOG_S("from", job_status_names[from]),
            LOG_S("to", job_status_names[to]));
  s->changed = 1;
  if (s->ops.job_changed != NULL)
    s->ops.job_changed(s->ctx, &j->pub, from);
  if (to == SCHED_JOB_COMPLETED)
    jobs_trim(s);
  return 0;
}

/* Tells the owner that fields of j other than its status changed. */
static void job_touch(struct scheduler *s, struct job *j)
{
  if (s->ops.job_changed != NULL)
    s->ops.job_changed(s->ctx, &j->pub, j->pub.status);
}

/* Forgets a job that never got a status (memory ran out). */
static void job_discard(struct scheduler *s, struct job *j)
{
  struct job *last;

  sched_table_del(&s->job_ids, j, job_hash_cb(j), job_hash_cb);
  last = s->jobs[--s->njobs];
  s->jobs[j->index] = last;
  last->index = j->index;
  job_free(s, j);
}

static int job_apply(struct scheduler *s, struct job *j,
                     enum sched_job_status to, uint64_t now_ms)
{
  if (job_set_status(s, j, to, now_ms) == 0)
    return 0;
  log_error(SCHED_MOD, "out of memory", LOG_I("job", (long long)j->pub.id));
  if (j->pub.status == SCHED_JOB_NONE)
    job_discard(s, j);
  return -1;
}

/* Finds the job of an event, or records it with no status yet (the
 * caller gives it one). Returns NULL when it matches no pool (counted) or
 * memory runs out. */
static struct job *job_get(struct scheduler *s,
                           const struct sched_job_event *ev)
{
  struct job *j = job_find(s, ev->job_id);
  int pool;

  if (j != NULL)
    return j;
  pool = sched_match_pool(s->cfg, ev->labels, ev->nlabels);
  if (pool < 0) {
    s->unmatched++;
    log_info(SCHED_MOD, "job matches no pool",
             LOG_I("job", (long long)ev->job_id),
             LOG_S("repo", ev->repo != NULL ? ev->repo : ""),
             LOG_U("labels", ev->nlabels));
    return NULL;
  }
  if (s->njobs == s->jobs_cap) {
    size_t cap = s->jobs_cap ? s->jobs_cap * 2 : 64;
    struct job **n = realloc(s->jobs, cap * sizeof(*n));
    if (n == NULL)
      return NULL;
    s->jobs = n;
    s->jobs_cap = cap;
  }
  j = calloc(1, sizeof(*j));
  if (j == NULL)
    return NULL;
  j->pub.id = ev->job_id;
  j->pub.run_id = ev->run_id;
  j->qn.job = &j->pub;
  j->pub.runner = sched_intern(&s->strs, NULL, SCHED_NAME_MAX); /* "" */
  j->pub.repo = sched_intern(&s->strs, ev->repo, SCHED_REPO_MAX);
  j->pub.name = sched_intern(&s->strs, ev->name, SCHED_NAME_MAX);
  j->pub.labels = sched_labels_intern(&s->sets, ev->labels, ev->nlabels,
                                      SCHED_MAX_JOB_LABELS);
  if (j->pub.repo == NULL || j->pub.name == NULL || j->pub.labels == NULL ||
      sched_table_add(&s->job_ids, j, job_hash_cb(j), job_hash_cb) != 0) {
    job_free(s, j);
    return NULL;
  }
  j->pub.nlabels = sched_labels_count(j->pub.labels);
  j->pub.pool = pool;
  j->pub.status = SCHED_JOB_NONE;
  j->pub.seq = ++s->seq;
  j->index = (uint32_t)s->njobs;
  s->jobs[s->njobs++] = j;
  return j;
}

/* Records the runner an event named for j; returns 1 when that changed. */
static int job_name_runner(struct scheduler *s, struct job *j,
                           const char *runner_name)
{
  const char *name;

  if (runner_name == NULL || runner_name[0] == '\0')
    return 0;
  name = sched_intern(&s->strs, runner_name, SCHED_NAME_MAX);
  if (name == NULL)
    return 0; /* out of memory: the old name stays */
  if (name == j->pub.runner) {
    sched_intern_drop(&s->strs, name);
    return 0;
  }
  sched_intern_drop(&s->strs, j->pub.runner);
  j->pub.runner = name;
  return 1;
}

int sched_job_waiting(struct scheduler *s, const struct sched_job_event *ev,
                      uint64_t now_ms)
{
  struct job *j = job_get(s, ev);

  if (j == NULL)
    return -1;
  if (j->pub.status == SCHED_JOB_NONE)
    return job_apply(s, j, SCHED_JOB_WAITING, now_ms);
  return 0;
}

int sched_job_queued(struct scheduler *s, const struct sched_job_event *ev,
                     uint64_t now_ms)
{
  struct job *j = job_get(s, ev);

  if (j == NULL)
    return -1;
  if (j->pub.status == SCHED_JOB_NONE || j->pub.status == SCHED_JOB_WAITING)
    return job_apply(s, j, SCHED_JOB_QUEUED, now_ms);
  return 0;
}

static void runner_remove(struct scheduler *s, struct sched_runner *r);

/* An event named the runner that took a job: bind the runner to it. */
static void bind_runner(struct scheduler *s, const struct job *j,
                        const char *runner_name, uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, runner_name);

  if (r == NULL)
    return; /* not ours, or already gone */
  r->took_job = 1;
  r->job_id = j->pub.id;
  if (r->pool >= 0)
    s->pools[r->pool].backoff_ms = 0;
  if (r->state == SCHED_RUNNER_FINISHED) {
    runner_remove(s, r); /* its process is gone; the job is accounted */
    return;
  }
  if (r->state == SCHED_RUNNER_IDLE || r->state == SCHED_RUNNER_STARTING)
    runner_set_state(s, r, SCHED_RUNNER_BUSY, now_ms);
}

int sched_job_in_progress(struct scheduler *s, const struct sched_job_event *ev,
                          uint64_t now_ms)
{
  struct job *j = job_get(s, ev);

  if (j == NULL)
    return -1;
  s->changed = 1;
  if (j->pub.status == SCHED_JOB_NONE ||
      j->pub.status < SCHED_JOB_IN_PROGRESS) {
    /* Named before the change, so one job_changed tells both. */
    job_name_runner(s, j, ev->runner_name);
    if (job_apply(s, j, SCHED_JOB_IN_PROGRESS, now_ms) != 0)
      return -1;
  } else {
    int touched = job_name_runner(s, j, ev->runner_name);
    if (j->pub.started_ms == 0) {
      j->pub.started_ms = s->wall_ms(s->wall_arg);
      touched = 1;
    }
    if (touched)
      job_touch(s, j);
  }
  bind_runner(s, j, ev->runner_name, now_ms);
  return 0;
}

int sched_job_completed(struct scheduler *s, const struct sched_job_event *ev,
                        uint64_t now_ms)
{
  struct job *j = job_get(s, ev);

  if (j == NULL)
    return -1;
  s->changed = 1;
  if (j->pub.status != SCHED_JOB_COMPLETED) {
    if (j->pub.status != SCHED_JOB_NONE && j->pub.pool >= 0)
      s->pools[j->pub.pool].jobs_completed++;
    if (j->pub.status == SCHED_JOB_QUEUED || j->pub.status == SCHED_JOB_WAITING)
      log_info(
          SCHED_MOD, "queued job ended without a runner",
          LOG_I("job", (long long)j->pub.id),
          LOG_S("conclusion", ev->conclusion != NULL ? ev->conclusion : ""));
    copy_str(j->pub.conclusion, sizeof(j->pub.conclusion), ev->conclusion);
    job_name_runner(s, j, ev->runner_name);
    if (job_apply(s, j, SCHED_JOB_COMPLETED, now_ms) != 0)
      return -1;
  } else {
    /* A later event says how it ended (after it expired, say). */
    char conclusion[sizeof(j->pub.conclusion)];
    int touched = job_name_runner(s, j, ev->runner_name);

    copy_str(conclusion, sizeof(conclusion), ev->conclusion);
    if (strcmp(conclusion, j->pub.conclusion) != 0) {
      memcpy(j->pub.conclusion, conclusion, sizeof(conclusion));
      touched = 1;
    }
    if (touched)
      job_touch(s, j);
  }
  if (ev->runner_name != NULL && ev->runner_name[0] != '\0')
    bind_runner(s, j, ev->runner_name, now_ms);
  return 0;
}

/* ---- runners ---- */

void sched_runner_running(struct scheduler *s, const char *name, int64_t gh_id,
                          const int *gpus, size_t ngpus, uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, name);
  size_t i;

  if (r == NULL)
    return;
  s->changed = 1;
  r->gh_id = gh_id;
  for (i = 0; i < ngpus && i < CFG_MAX_GPUS; i++)
    r->gpus[i] = gpus[i];
  r->ngpus = i;
  if (r->state == SCHED_RUNNER_STARTING)
    runner_set_state(s, r, r->took_job ? SCHED_RUNNER_BUSY : SCHED_RUNNER_IDLE,
                     now_ms);
}

static struct sched_runner *runner_new(struct scheduler *s, size_t pool,
                                       uint64_t now_ms);

int sched_runner_adopt(struct scheduler *s, const char *name, size_t pool,
                       int64_t gh_id, const int *gpus, size_t ngpus,
                       int running, uint64_t now_ms)
{
  struct sched_runner *r;
  size_t i;

  if (pool >= s->cfg->npools || runner_find(s, name) != NULL ||
      strlen(name) >= SCHED_NAME_MAX)
    return -EINVAL;
  r = runner_new(s, pool, now_ms);
  if (r == NULL)
    return -ENOMEM;
  /* runner_new named it after this run; the table is keyed by name. */
  sched_table_del(&s->runner_names, r, runner_hash_cb(r), runner_hash_cb);
  snprintf(r->name, sizeof(r->name), "%s", name);
  if (sched_table_add(&s->runner_names, r, runner_hash_cb(r), runner_hash_cb) !=
      0) {
    s->runners[--s->nrunners] = NULL;
    runner_count(s, r, -1);
    free(r);
    return -ENOMEM;
  }
  r->gh_id = gh_id;
  for (i = 0; i < ngpus && i < CFG_MAX_GPUS; i++)
    r->gpus[i] = gpus[i];
  r->ngpus = i;
  if (running)
    runner_set_state(s, r, SCHED_RUNNER_IDLE, now_ms);
  /* A job the journal has in progress on it (its in_progress event was
   * replayed before the runner was known) keeps it busy. */
  for (i = 0; i < s->njobs; i++) {
    struct job *j = s->jobs[i];
    if (j->pub.status == SCHED_JOB_IN_PROGRESS &&
        strcmp(j->pub.runner, r->name) == 0) {
      bind_runner(s, j, r->name, now_ms);
      break;
    }
  }
  s->changed = 1;
  log_info(SCHED_MOD, "runner adopted", LOG_S("runner", r->name),
           LOG_S("pool", s->cfg->pools[pool].name),
           LOG_S("state", runner_state_names[r->state]));
  return 0;
}

static void runner_remove(struct scheduler *s, struct sched_runner *r)
{
  size_t i;

  for (i = 0; i < s->nrunners; i++) {
    if (s->runners[i] == r) {
      s->runners[i] = s->runners[--s->nrunners];
      sched_table_del(&s->runner_names, r, runner_hash_cb(r), runner_hash_cb);
      runner_count(s, r, -1);
      free(r);
      s->changed = 1;
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
  s->changed = 1;
  if (!r->took_job && r->state != SCHED_RUNNER_STOPPING && status == 0) {
    runner_set_state(s, r, SCHED_RUNNER_FINISHED, now_ms);
    return;
  }
  /* A runner that ends before it took a job, and that we did not ask to
   * stop, failed: back off before replacing it so a broken image or
   * command does not spin. */
  if (!r->took_job && r->state != SCHED_RUNNER_STOPPING && r->pool >= 0) {
    pool_failed(s, (size_t)r->pool, now_ms);
    log_warn(
        SCHED_MOD, "runner ended before taking a job", LOG_S("runner", r->name),
        LOG_I("status", status),
        LOG_U("backoff_ms", (unsigned long long)s->pools[r->pool].backoff_ms));
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
  log_info(SCHED_MOD, "runner dropped before it started",
           LOG_S("runner", r->name));
  runner_remove(s, r);
}

void sched_runner_keep(struct scheduler *s, const char *name, int busy,
                       uint64_t now_ms)
{
  struct sched_runner *r = runner_find(s, name);

  if (r == NULL || r->state != SCHED_RUNNER_STOPPING)
    return;
  s->changed = 1;
  /* GitHub gave it a job no event has named yet. Idle again, it would be
   * retired again at once, one DELETE per pass, until that event came. */
  if (busy)
    r->took_job = 1;
  runner_set_state(s, r, r->took_job ? SCHED_RUNNER_BUSY : SCHED_RUNNER_IDLE,
                   now_ms);
}

static void count_pool(const struct scheduler *s, size_t pool,
                       struct sched_pool_stats *st)
{
  const struct pool_count *o = &s->counts[pool];

  memset(st, 0, sizeof(*st));
  st->queued = o->jobs[SCHED_JOB_QUEUED];
  st->waiting = o->jobs[SCHED_JOB_WAITING];
  st->in_progress = o->jobs[SCHED_JOB_IN_PROGRESS];
  st->starting = o->runners[SCHED_RUNNER_STARTING];
  st->idle = o->runners[SCHED_RUNNER_IDLE];
  st->busy = o->runners[SCHED_RUNNER_BUSY];
  st->stopping = o->runners[SCHED_RUNNER_STOPPING];
  st->finished = o->runners[SCHED_RUNNER_FINISHED];
  st->jobs_completed = s->pools[pool].jobs_completed;
  st->runner_failures = s->pools[pool].runner_failures;
  st->backoff_until_ms = s->pools[pool].backoff_until_ms;
}

/* ---- reload ---- */

static int seq_cmp(const void *a, const void *b)
{
  const struct job *x = *(struct job *const *)a, *y = *(struct job *const *)b;

  return x->pub.seq < y->pub.seq ? -1 : x->pub.seq > y->pub.seq;
}

/* Rebuilds the counts, groups and heaps from the jobs and runners, for
 * the pools and priorities of the current config. */
static void order_rebuild(struct scheduler *s)
{
  struct job **queued;
  size_t i, n = 0;

  memset(s->counts, 0, sizeof(s->counts));
  s->idle_total = s->finished_total = 0;
  for (i = 0; i < s->nrunners; i++)
    runner_count(s, s->runners[i], 1);
  queued = malloc((s->njobs + 1) * sizeof(*queued));
  for (i = 0; i < s->njobs; i++) {
    struct job *j = s->jobs[i];
    struct sched_qgroup *g;

    if (j->pub.pool < 0)
      continue;
    s->counts[j->pub.pool].jobs[j->pub.status]++;
    if (j->pub.status == SCHED_JOB_IN_PROGRESS) {
      g = sched_queue_prepare(&s->queue, &j->pub, 0);
      if (g != NULL)
        sched_queue_running(&s->queue, g, 1);
    } else if (j->pub.status == SCHED_JOB_QUEUED && queued != NULL) {
      queued[n++] = j;
    }
  }
  if (queued == NULL && s->njobs > 0)
    log_error(SCHED_MOD, "out of memory: queued jobs left out of the order",
              LOG_NONE);
  /* In arrival order, so each group's slots are too. */
  qsort(queued, n, sizeof(*queued), seq_cmp);
  for (i = 0; i < n; i++) {
    struct sched_qgroup *g = sched_queue_prepare(&s->queue, &queued[i]->pub, 1);
    if (g == NULL) {
      log_error(SCHED_MOD, "out of memory: job left out of the order",
                LOG_I("job", (long long)queued[i]->pub.id));
      continue;
    }
    sched_queue_link(&s->queue, g, &queued[i]->qn);
  }
  free(queued);
}

void sched_set_config(struct scheduler *s, const struct config *cfg)
{
  struct pool_state old[CFG_MAX_POOLS];
  int map[CFG_MAX_POOLS];
  size_t i;

  /* The order is rebuilt for the new pools and priorities. */
  sched_queue_clear(&s->queue);
  for (i = 0; i < s->njobs; i++)
    s->jobs[i]->qn.sub = NULL;
  memcpy(old, s->pools, sizeof(old));
  memset(s->pools, 0, sizeof(s->pools));
  for (i = 0; i < s->cfg->npools; i++) {
    map[i] = pool_index(cfg, s->cfg->pools[i].name);
    if (map[i] >= 0)
      s->pools[map[i]] = old[i];
  }
  for (i = 0; i < s->njobs; i++)
    if (s->jobs[i]->pub.pool >= 0)
      s->jobs[i]->pub.pool = map[s->jobs[i]->pub.pool];
  for (i = 0; i < s->nrunners; i++)
    if (s->runners[i]->pool >= 0)
      s->runners[i]->pool = map[s->runners[i]->pool];
  s->cfg = cfg;
  s->queue.cfg = cfg;
  order_rebuild(s);
  s->changed = 1;
}

/* ---- a pass ---- */

/* Returns 1 when the retirement began, 0 when the owner could not start
 * it now (the runner stays idle). */
static int retire(struct scheduler *s, struct sched_runner *r, const char *why,
                  uint64_t now_ms)
{
  log_info(SCHED_MOD, "retiring runner", LOG_S("runner", r->name),
           LOG_S("reason", why));
  runner_set_state(s, r, SCHED_RUNNER_STOPPING, now_ms);
  if (s->ops.retire(s->ctx, r) == 0)
    return 1;
  runner_put_back(s, r, SCHED_RUNNER_IDLE);
  s->retry = 1;
  return 0;
}

/* Retires idle runners beyond what the pool needs (queued jobs plus
 * min_idle), and idle runners past idle_timeout beyond min_idle; runners of
 * pools that left the config are retired once idle. Longest idle first.
 * Only idle runners are retired, so without any this costs nothing. */
static int retire_surplus(struct scheduler *s, uint64_t now_ms)
{
  int actions = 0;
  size_t i, p;

  if (s->idle_total == 0)
    return 0;
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
    if (st.idle == 0)
      continue;
    surplus =
        (long)(st.starting + st.idle) - (long)(st.queued + pool->min_idle);
    for (;;) {
      struct sched_runner *oldest = NULL;
      if (surplus <= 0)
        break;
      for (i = 0; i < s->nrunners; i++) {
        struct sched_runner *r = s->runners[i];
        if (r->pool == (int)p && r->state == SCHED_RUNNER_IDLE &&
            (oldest == NULL || r->idle_since_ms < oldest->idle_since_ms))
          oldest = r;
      }
      if (oldest == NULL)
        break;
      if (!retire(s, oldest, "surplus", now_ms))
        break; /* the owner cannot act now; try on the next pass */
      surplus--;
      actions++;
    }
    if (pool->idle_timeout_ms == 0)
      continue;
    /* Idle timeout: keep the min_idle most recently idle ones. */
    for (i = 0; i < s->nrunners; i++) {
      struct sched_runner *r = s->runners[i];
      if (r->pool == (int)p && r->state == SCHED_RUNNER_IDLE &&
          now_ms - r->idle_since_ms < pool->idle_timeout_ms)
        kept++;
    }
    for (i = 0; i < s->nrunners; i++) {
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
  if (sched_table_add(&s->runner_names, r, runner_hash_cb(r), runner_hash_cb) !=
      0) {
    free(r);
    return NULL;
  }
  runner_count(s, r, 1);
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
  log_warn(SCHED_MOD, "runner start failed",
           LOG_S("pool", s->cfg->pools[pool].name), LOG_I("error", rc));
  return START_FAILED;
}

/* The capacity source of pool p, asked once per pass (keys[p] < 0 until
 * then): when the first job in order cannot get capacity, later jobs with
 * the same key wait behind it (no starvation of big requests), while
 * other sources go on. */
static unsigned pool_key(struct scheduler *s, int *keys, size_t p)
{
  if (keys[p] < 0) {
    const struct cfg_pool *pool = &s->cfg->pools[p];
    unsigned k = s->ops.block_key != NULL ? s->ops.block_key(s->ctx, pool)
                                          : (pool->gpus > 0 ? 1u : 0u);
    keys[p] = (int)(k % SCHED_MAX_BLOCK_KEYS);
  }
  return (unsigned)keys[p];
}

/* The runners that count against max_runners. A stopping one is still
 * there (deregistering, its process or pod ending) and holds its place
 * until the owner reports it gone; a finished one has exited. */
static unsigned pool_runners(const struct sched_pool_stats *st)
{
  return st->starting + st->idle + st->busy + st->stopping;
}

/* Starts runners for queued jobs in order. Runners already starting or
 * idle (or finished, with their job's event still on its way) cover the
 * first jobs of their pool; a pool at max_runners or backing off starts
 * nothing; a job whose capacity source is blocked waits. Only pools that
 * can start something are walked, and only as far as they do. */
static int start_for_demand(struct scheduler *s, uint64_t now_ms)
{
  struct sched_pool_stats st[CFG_MAX_POOLS];
  unsigned covered[CFG_MAX_POOLS] = {0};
  unsigned char blocked[SCHED_MAX_BLOCK_KEYS] = {0};
  unsigned char active[CFG_MAX_POOLS] = {0};
  int keys[CFG_MAX_POOLS];
  size_t nactive = 0, i, p;
  struct sched_qcursor c;
  int actions = 0;

  sched_walk_reset(&s->queue);
  for (p = 0; p < s->cfg->npools; p++) {
    const struct cfg_pool *pool = &s->cfg->pools[p];
    count_pool(s, p, &st[p]);
    keys[p] = -1;
    if (st[p].queued > st[p].starting + st[p].idle + st[p].finished &&
        pool_runners(&st[p]) < pool->max_runners &&
        s->pools[p].backoff_until_ms <= now_ms &&
        sched_queue_has(&s->queue, p)) {
      if (sched_walk_add(&s->queue, p) != 0) {
        s->retry = 1;
        break;
      }
      active[p] = 1;
      nactive++;
    }
  }
  while (nactive > 0 && sched_walk_pop(&s->queue, &c) == 0) {
    size_t pi = (size_t)c.pool;
    const struct cfg_pool *pool = &s->cfg->pools[pi];
    unsigned key;
    enum start_result res;

    if (!active[pi])
      continue;
    key = pool_key(s, keys, pi);
    if (blocked[key]) {
      active[pi] = 0;
      nactive--;
      continue;
    }
    if (sched_walk_expand(&s->queue, &c) != 0) {
      s->retry = 1;
      break;
    }
    if (covered[pi] < st[pi].starting + st[pi].idle + st[pi].finished) {
      covered[pi]++;
      continue;
    }
    res = start_runner(s, pi, now_ms);
    if (res == START_NO_CAPACITY) {
      blocked[key] = 1;
      s->retry = 1;
      active[pi] = 0;
      nactive--;
      continue;
    }
    if (res == START_FAILED) {
      s->retry = 1;
      break;
    }
    st[pi].starting++;
    covered[pi]++;
    actions++;
    if (pool_runners(&st[pi]) >= pool->max_runners) {
      active[pi] = 0;
      nactive--;
    }
  }
  sched_walk_reset(&s->queue);
  /* min_idle comes after every queued job, by priority. */
  for (i = 0; i < s->cfg->npools; i++) {
    size_t best = s->cfg->npools;
    for (p = 0; p < s->cfg->npools; p++) {
      const struct cfg_pool *pool = &s->cfg->pools[p];
      if (st[p].starting + st[p].idle + st[p].finished >=
              st[p].queued + pool->min_idle ||
          pool_runners(&st[p]) >= pool->max_runners ||
          s->pools[p].backoff_until_ms > now_ms ||
          blocked[pool_key(s, keys, p)])
        continue;
      if (best == s->cfg->npools ||
          pool->priority > s->cfg->pools[best].priority)
        best = p;
    }
    if (best == s->cfg->npools)
      break;
    if (start_runner(s, best, now_ms) != START_OK) {
      blocked[pool_key(s, keys, best)] = 1;
      s->retry = 1;
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

  if (s->finished_total == 0)
    return;
  for (i = 0; i < s->nrunners; i++) {
    struct sched_runner *r = s->runners[i];
    if (r->state != SCHED_RUNNER_FINISHED ||
        now_ms - r->state_ms < SCHED_FINISHED_TTL_MS)
      continue;
    log_warn(SCHED_MOD, "no event named the job of a finished runner",
             LOG_S("runner", r->name));
    runner_set_state(s, r, SCHED_RUNNER_STOPPING, now_ms);
    if (s->ops.retire(s->ctx, r) != 0) {
      runner_put_back(s, r, SCHED_RUNNER_FINISHED); /* try later */
      s->retry = 1;
    }
  }
}

/* Ends jobs whose completed webhook never came (see SCHED_QUEUED_TTL_MS):
 * the expiry lists are in deadline order, so only the due ones are seen. */
static void expire_jobs(struct scheduler *s, uint64_t now_ms)
{
  size_t k;

  for (k = 0; k < 2; k++) {
    struct job *j;
    while ((j = s->expiry[k].head) != NULL && j->due_ms <= now_ms) {
      log_warn(SCHED_MOD, "job expired without a completed event",
               LOG_I("job", (long long)j->pub.id),
               LOG_S("status", job_status_names[j->pub.status]));
      copy_str(j->pub.conclusion, sizeof(j->pub.conclusion), "expired");
      job_set_status(s, j, SCHED_JOB_COMPLETED, now_ms);
    }
  }
}

static void due_min(uint64_t *due, uint64_t t, uint64_t now_ms)
{
  if (t > now_ms && t < *due)
    *due = t;
}

/* The first time after now at which a pass would act without any event:
 * a backoff ends, a runner times out, a job expires. */
static uint64_t next_due(const struct scheduler *s, uint64_t now_ms)
{
  uint64_t due = UINT64_MAX;
  size_t i, k;

  for (i = 0; i < s->cfg->npools; i++)
    due_min(&due, s->pools[i].backoff_until_ms, now_ms);
  for (i = 0; i < s->nrunners; i++) {
    const struct sched_runner *r = s->runners[i];
    if (r->state == SCHED_RUNNER_IDLE) {
      if (s->cfg->runner_start_timeout_ms > 0)
        due_min(&due, r->created_ms + s->cfg->runner_start_timeout_ms, now_ms);
      if (r->pool >= 0 && s->cfg->pools[r->pool].idle_timeout_ms > 0)
        due_min(&due, r->idle_since_ms + s->cfg->pools[r->pool].idle_timeout_ms,
                now_ms);
    } else if (r->state == SCHED_RUNNER_FINISHED) {
      due_min(&due, r->state_ms + SCHED_FINISHED_TTL_MS, now_ms);
    }
  }
  for (k = 0; k < 2; k++)
    if (s->expiry[k].head != NULL)
      due_min(&due, s->expiry[k].head->due_ms, now_ms);
  return due;
}

int sched_reconcile(struct scheduler *s, uint64_t now_ms)
{
  int actions;

  /* A pass is a function of the state, the time and the owner's answers:
   * with none of them new, it would do nothing. */
  if (!s->changed && !s->retry && now_ms < s->due_ms)
    return 0;
  s->retry = 0;
  expire_jobs(s, now_ms);
  expire_finished(s, now_ms);
  actions = retire_surplus(s, now_ms);
  actions += start_for_demand(s, now_ms);
  s->changed = 0;
  s->due_ms = next_due(s, now_ms);
  return actions;
}

/* ---- read access ---- */

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
  return &s->jobs[i]->pub;
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

#ifdef RUNFLEET_UNITTEST
unsigned sched_intern_refs(const struct scheduler *s, const char *str)
{
  return sched_intern_refs_of(&s->strs, str);
}

size_t sched_intern_count(const struct scheduler *s)
{
  return s->strs.n + s->sets.n;
}

size_t sched_start_order(struct scheduler *s, int64_t *ids, size_t max)
{
  struct sched_qcursor c;
  size_t p, n = 0;

  sched_walk_reset(&s->queue);
  for (p = 0; p < s->cfg->npools; p++)
    if (sched_walk_add(&s->queue, p) != 0)
      return 0;
  while (sched_walk_pop(&s->queue, &c) == 0) {
    if (sched_walk_expand(&s->queue, &c) != 0)
      return 0;
    if (n < max)
      ids[n] = c.node->job->id;
    n++;
  }
  return n;
}
#endif
