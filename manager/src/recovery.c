#include "recovery.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "events.h"
#include "gh_call.h"
#include "gh_recovery.h"
#include "log.h"
#include "unittest.h"

#define REC_MOD "recovery"
#define REC_REPO_MAX 200
#define REC_MAX_REPOS 256
#define REC_MAX_PAGES 100
#define REC_MAX_RUNS 1000
/* How often the wait trigger looks at the queue, at most. */
#define REC_CHECK_MAX_MS 10000
#define REC_CHECK_MIN_MS 100

#define RUNS_METRIC "runfleet_recovery_runs_total"
#define REDELIVERED_METRIC "runfleet_recovery_redelivered_total"
#define FOUND_METRIC "runfleet_recovery_jobs_found_total"
#define ERRORS_METRIC "runfleet_recovery_errors_total"
#define LAST_METRIC "runfleet_recovery_last_run_timestamp_seconds"

enum rec_phase {
  PHASE_IDLE,
  PHASE_DELIVERIES, /* paging back through the deliveries list */
  PHASE_REDELIVER,  /* asking for redeliveries, one at a time */
  PHASE_RUNS,       /* listing a repository's queued runs */
  PHASE_JOBS        /* listing a run's jobs */
};

static const char *const phase_names[] = {"idle", "deliveries", "redeliver",
                                          "runs", "jobs"};
static const char *const trigger_names[] = {"start", "interval", "failover",
                                            "wait"};

struct recovery {
  uv_loop_t *loop;
  int (*may_act)(void *arg); /* the leader fence; NULL: always */
  void *may_act_arg;
  const struct config *cfg;
  struct gh_client *gh;
  struct scheduler *sched;
  struct intake *intake;
  struct recovery_store store;
  struct metrics *m;
  recovery_capacity_fn capacity_fn;
  void *capacity_ctx;
  uv_timer_t timer; /* periodic runs; a trigger re-arms it to run soon */
  uv_timer_t check; /* the wait trigger */
  unsigned nhandles;
  int started;
  int closing;
  void (*close_cb)(void *arg);
  void *close_arg;

  /* The run under way. */
  enum rec_phase phase;
  enum recovery_trigger trigger;
  enum recovery_trigger next_trigger;
  int pending;               /* a trigger came while running */
  int scan;                  /* this run scans (not an interval run) */
  unsigned outstanding;      /* calls started and not answered (0 or 1) */
  uint64_t req_base;         /* the client's recovery requests at the start */
  uint64_t last_scan_end_ms; /* loop time the last scanning run ended */
  uint64_t nruns_done;
  struct recovery_report cur, last;
  struct gh_delivery *dl; /* deliveries read this run, newest first */
  size_t ndl, dlcap;
  int64_t old_cursor;
  int64_t *redeliver;
  size_t nred, ired;
  char (*repos)[REC_REPO_MAX];
  size_t nrepos, irepo;
  int64_t *runs;
  size_t nruns, runs_cap, irun;
  unsigned page;
  char noted[RECOVERY_REPOS_VALUE_MAX + 1]; /* RECOVERY_KEY_REPOS */
  int failover_again; /* the run after a failover's is due */
  int noted_read;
};

static void run_finish(struct recovery *rec);
static void scan_begin(struct recovery *rec);
static void scan_repo_next(struct recovery *rec);
static void jobs_next(struct recovery *rec);

const char *recovery_trigger_name(enum recovery_trigger why)
{
  return (unsigned)why < sizeof(trigger_names) / sizeof(trigger_names[0])
             ? trigger_names[why]
             : "unknown";
}

static void set_phase(struct recovery *rec, enum rec_phase phase)
{
  log_debug(REC_MOD, "phase", LOG_S("from", phase_names[rec->phase]),
            LOG_S("to", phase_names[phase]));
  rec->phase = phase;
}

static uint64_t wall_ms(const struct recovery *rec)
{
  return sched_wall_ms(rec->sched);
}

/* ---- closing ---- */

static void maybe_closed(struct recovery *rec)
{
  if (rec->closing && rec->nhandles == 0 && rec->outstanding == 0 &&
      rec->close_cb != NULL) {
    void (*cb)(void *) = rec->close_cb;

    rec->close_cb = NULL;
    cb(rec->close_arg);
  }
}

/* Every answer passes here first: 1 when the run goes on. */
static int answered(struct recovery *rec)
{
  rec->outstanding--;
  if (rec->closing) {
    maybe_closed(rec);
    return 0;
  }
  return 1;
}

/* Whether the run may make one more request. */
static int budget_ok(struct recovery *rec)
{
  struct gh_budget b;

  gh_budget_get(rec->gh, &b);
  rec->cur.calls = (unsigned)(b.recovery_requests - rec->req_base);
  if (rec->cur.calls < rec->cfg->recovery.call_budget)
    return 1;
  if (!rec->cur.budget_spent)
    log_warn(REC_MOD, "call budget spent; the rest waits for the next run",
             LOG_U("calls", rec->cur.calls));
  rec->cur.budget_spent = 1;
  return 0;
}

static void call_failed(struct recovery *rec, const char *what, int rc)
{
  rec->cur.errors++;
  log_warn(REC_MOD, "call failed", LOG_S("call", what),
           LOG_S("error", strerror(rc < 0 ? -rc : rc)));
}

/* ---- deliveries ---- */

static int ok_code(int code)
{
  return code >= 200 && code < 300;
}

/* By guid, then newest first. */
static int guid_cmp(const void *a, const void *b)
{
  const struct gh_delivery *x = *(const struct gh_delivery *const *)a;
  const struct gh_delivery *y = *(const struct gh_delivery *const *)b;
  int c = strcmp(x->guid, y->guid);

  if (c != 0)
    return c;
  return x->id < y->id ? 1 : x->id > y->id ? -1 : 0;
}

static int id_desc_cmp(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

  return x < y ? 1 : x > y ? -1 : 0;
}

/* Sorted by guid, so a first run over three days of deliveries costs
 * n log n, not n squared, on the loop. */
UNITTEST size_t recovery_pick_redeliveries(const struct gh_delivery *items,
                                           size_t n, int64_t installation,
                                           int64_t *ids, size_t max)
{
  const struct gh_delivery **by_guid;
  const struct gh_delivery *newest;
  size_t i, k, out = 0;
  int any_ok;

  if (n == 0 || max == 0)
    return 0;
  by_guid = malloc(n * sizeof(*by_guid));
  if (by_guid == NULL)
    return 0;
  for (i = 0; i < n; i++)
    by_guid[i] = &items[i];
  qsort(by_guid, n, sizeof(*by_guid), guid_cmp);
  for (i = 0; i < n && out < max; i = k) {
    newest = by_guid[i];
    any_ok = 0;
    for (k = i; k < n && strcmp(by_guid[k]->guid, newest->guid) == 0; k++)
      any_ok |= ok_code(by_guid[k]->status_code);
    /* One redelivery per guid, of its newest attempt, unless one worked. */
    if (any_ok || strcmp(newest->event, "workflow_job") != 0 ||
        (installation != 0 && newest->installation_id != 0 &&
         newest->installation_id != installation))
      continue;
    ids[out++] = newest->id;
  }
  free(by_guid);
  qsort(ids, out, sizeof(*ids), id_desc_cmp);
  return out;
}

static void redeliver_next(struct recovery *rec);

static void redeliver_cb(void *arg, int status, int http_status)
{
  struct recovery *rec = arg;

  if (!answered(rec))
    return;
  if (status == 0) {
    rec->cur.redelivered++;
    if (rec->m != NULL)
      metrics_counter_add(rec->m, REDELIVERED_METRIC, "", 1);
  } else {
    log_warn(REC_MOD, "redelivery refused", LOG_I("code", http_status));
    call_failed(rec, "redeliver", status);
  }
  redeliver_next(rec);
}

static void redeliver_next(struct recovery *rec)
{
  int64_t id;
  int rc;

  while (rec->ired < rec->nred && budget_ok(rec)) {
    id = rec->redeliver[rec->ired++];
    rc = gh_redeliver(rec->gh, id, redeliver_cb, rec);
    if (rc == 0) {
      rec->outstanding++;
      log_info(REC_MOD, "redelivering a failed delivery",
               LOG_I("delivery", (long long)id));
      return;
    }
    call_failed(rec, "redeliver", rc);
  }
  if (rec->scan)
    scan_begin(rec);
  else
    run_finish(rec);
}

static void store_cursor(struct recovery *rec, int64_t cursor)
{
  char v[32];
  int rc;

  if (rec->store.put == NULL)
    return;
  snprintf(v, sizeof(v), "%" PRId64, cursor);
  rc = rec->store.put(rec->store.ctx, RECOVERY_KEY_CURSOR, v);
  if (rc != 0)
    log_warn(REC_MOD, "cannot keep the delivery cursor",
             LOG_S("error", strerror(-rc)));
}

/* complete: the pages reached the cursor, the window or their end, so the
 * next run may start from the newest id seen. */
static void deliveries_end(struct recovery *rec, int complete)
{
  size_t i;

  for (i = 0; i < rec->ndl; i++)
    if ((rec->dl[i].status_code < 200 || rec->dl[i].status_code > 299) &&
        strcmp(rec->dl[i].event, "workflow_job") == 0)
      rec->cur.deliveries_failed++;
  free(rec->redeliver);
  rec->redeliver = rec->ndl ? calloc(rec->ndl, sizeof(int64_t)) : NULL;
  rec->nred = rec->ired = 0;
  if (rec->redeliver != NULL)
    rec->nred = recovery_pick_redeliveries(rec->dl, rec->ndl,
                                           rec->cfg->github.installation_id,
                                           rec->redeliver, rec->ndl);
  else if (rec->ndl > 0)
    call_failed(rec, "redeliver", -ENOMEM);
  if (complete && rec->cur.cursor > rec->old_cursor)
    store_cursor(rec, rec->cur.cursor);
  if (!complete)
    rec->cur.cursor = rec->old_cursor; /* look again from the old one */
  set_phase(rec, PHASE_REDELIVER);
  redeliver_next(rec);
}

static int deliveries_append(struct recovery *rec, const struct gh_delivery *d)
{
  struct gh_delivery *n;
  size_t cap;

  if (rec->ndl == rec->dlcap) {
    cap = rec->dlcap ? rec->dlcap * 2 : 128;
    n = realloc(rec->dl, cap * sizeof(*n));
    if (n == NULL)
      return -ENOMEM;
    rec->dl = n;
    rec->dlcap = cap;
  }
  rec->dl[rec->ndl++] = *d;
  return 0;
}

static void deliveries_page(struct recovery *rec, const char *cursor);

static void deliveries_cb(void *arg, int status,
                          const struct gh_delivery *items, size_t n,
                          const char *next_cursor)
{
  struct recovery *rec = arg;
  int64_t oldest = (int64_t)(wall_ms(rec) / 1000) -
                   (int64_t)(rec->cfg->recovery.window_ms / 1000);
  /* A delivery still being attempted when the list was read is not in it
   * yet, though its id may be older than ones that are: the cursor only
   * passes deliveries made cursor_settle before the run began. */
  int64_t settled = (int64_t)(rec->cur.started_unix_ms / 1000) -
                    (int64_t)(rec->cfg->recovery.cursor_settle_ms / 1000);
  size_t i;

  if (!answered(rec))
    return;
  if (status != 0) {
    call_failed(rec, "list_deliveries", status);
    deliveries_end(rec, 0);
    return;
  }
  for (i = 0; i < n; i++) {
    if (items[i].id > rec->cur.cursor && items[i].delivered_at <= settled)
      rec->cur.cursor = items[i].id;
    if (items[i].id <= rec->old_cursor || items[i].delivered_at < oldest) {
      deliveries_end(rec, 1);
      return;
    }
    rec->cur.deliveries_seen++;
    if (deliveries_append(rec, &items[i]) != 0) {
      call_failed(rec, "list_deliveries", -ENOMEM);
      deliveries_end(rec, 0);
      return;
    }
  }
  if (next_cursor == NULL || n == 0) {
    deliveries_end(rec, 1);
    return;
  }
  deliveries_page(rec, next_cursor);
}

static void deliveries_page(struct recovery *rec, const char *cursor)
{
  int rc;

  if (!budget_ok(rec)) {
    deliveries_end(rec, 0);
    return;
  }
  rc = gh_list_deliveries(rec->gh, cursor, deliveries_cb, rec);
  if (rc != 0) {
    call_failed(rec, "list_deliveries", rc);
    deliveries_end(rec, 0);
    return;
  }
  rec->outstanding++;
}

static void deliveries_begin(struct recovery *rec)
{
  char v[32];
  char *end;
  long long c;

  rec->old_cursor = 0;
  if (rec->store.get != NULL &&
      rec->store.get(rec->store.ctx, RECOVERY_KEY_CURSOR, v, sizeof(v)) == 0) {
    c = strtoll(v, &end, 10);
    if (end != v && *end == '\0' && c > 0)
      rec->old_cursor = (int64_t)c;
  }
  rec->cur.cursor = rec->old_cursor;
  rec->ndl = 0;
  set_phase(rec, PHASE_DELIVERIES);
  deliveries_page(rec, NULL);
}

/* ---- scan ---- */

/* "owner/name" of [A-Za-z0-9._-]: a name from a payload that is not one
 * is no repository the API could list. */
static int repo_name_ok(const char *repo)
{
  const char *slash = strchr(repo, '/');
  size_t n = strlen(repo);

  return slash != NULL && slash != repo && slash[1] != '\0' &&
         strchr(slash + 1, '/') == NULL && n < REC_REPO_MAX &&
         strspn(repo, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._-/") == n;
}

static void repo_add(struct recovery *rec, const char *repo)
{
  size_t i;

  if (repo == NULL || !repo_name_ok(repo) || rec->nrepos == REC_MAX_REPOS)
    return;
  for (i = 0; i < rec->nrepos; i++)
    if (strcasecmp(rec->repos[i], repo) == 0)
      return;
  snprintf(rec->repos[rec->nrepos++], REC_REPO_MAX, "%s", repo);
}

static void scan_begin(struct recovery *rec)
{
  const struct cfg_recovery *c = &rec->cfg->recovery;
  uint64_t now = wall_ms(rec);
  size_t i;

  if (rec->repos == NULL) {
    rec->repos = calloc(REC_MAX_REPOS, sizeof(*rec->repos));
    if (rec->repos == NULL) {
      call_failed(rec, "list_runs", -ENOMEM);
      run_finish(rec);
      return;
    }
  }
  rec->nrepos = rec->irepo = 0;
  repo_add(rec, gh_scope_repo(rec->gh));
  for (i = 0; i < c->nrepositories; i++)
    repo_add(rec, c->repositories[i]);
  for (i = 0; i < sched_njobs(rec->sched); i++) {
    const struct sched_job *j = sched_job_at(rec->sched, i);

    if (j->queued_ms != 0 && j->queued_ms + c->seen_within_ms >= now)
      repo_add(rec, j->repo);
  }
  /* And those the store names: after a takeover, the previous leader's. */
  if (rec->store.get != NULL) {
    char v[RECOVERY_REPOS_VALUE_MAX + 1], *save = NULL, *tok;

    if (rec->store.get(rec->store.ctx, RECOVERY_KEY_REPOS, v, sizeof(v)) == 0)
      for (tok = strtok_r(v, ",", &save); tok != NULL;
           tok = strtok_r(NULL, ",", &save))
        repo_add(rec, tok);
  }
  scan_repo_next(rec);
}

static void runs_request(struct recovery *rec);

static void runs_cb(void *arg, int status, const struct gh_run *runs, size_t n,
                    int more)
{
  struct recovery *rec = arg;
  size_t i;

  if (!answered(rec))
    return;
  if (status != 0) {
    call_failed(rec, "list_runs", status);
    rec->irepo++;
    scan_repo_next(rec);
    return;
  }
  for (i = 0; i < n && rec->nruns < REC_MAX_RUNS; i++) {
    if (rec->nruns == rec->runs_cap) {
      size_t cap = rec->runs_cap ? rec->runs_cap * 2 : 64;
      int64_t *r = realloc(rec->runs, cap * sizeof(*r));

      if (r == NULL)
        break;
      rec->runs = r;
      rec->runs_cap = cap;
    }
    rec->runs[rec->nruns++] = runs[i].id;
    rec->cur.runs_scanned++;
  }
  if (more && n > 0 && rec->page < REC_MAX_PAGES && rec->nruns < REC_MAX_RUNS) {
    rec->page++;
    runs_request(rec);
    return;
  }
  rec->irun = 0;
  set_phase(rec, PHASE_JOBS);
  jobs_next(rec);
}

static void runs_request(struct recovery *rec)
{
  int rc;

  if (!budget_ok(rec)) {
    run_finish(rec);
    return;
  }
  rc = gh_list_queued_runs(rec->gh, rec->repos[rec->irepo], rec->page, runs_cb,
                           rec);
  if (rc != 0) {
    call_failed(rec, "list_runs", rc);
    rec->irepo++;
    scan_repo_next(rec);
    return;
  }
  rec->outstanding++;
}

static void scan_repo_next(struct recovery *rec)
{
  if (rec->irepo >= rec->nrepos) {
    run_finish(rec);
    return;
  }
  set_phase(rec, PHASE_RUNS);
  rec->cur.repos_scanned++;
  rec->nruns = 0;
  rec->page = 1;
  runs_request(rec);
}

static void found_answered_cb(void *arg, int status, const char *msg)
{
  (void)arg;
  if (status != 200)
    log_warn(REC_MOD, "a found job was not taken", LOG_I("code", status),
             LOG_S("reason", msg));
}

/* Hands a queued job no webhook announced to intake, as GitHub's queued
 * webhook would have. */
static void job_found(struct recovery *rec, const char *repo,
                      const struct gh_job *j)
{
  struct event ev;
  size_t i;
  int oom = 0;

  memset(&ev, 0, sizeof(ev));
  ev.type = EVENT_JOB_QUEUED;
  snprintf(ev.delivery, sizeof(ev.delivery), "recovery-%" PRId64, j->id);
  ev.source = "recovery";
  ev.action = strdup("queued");
  ev.job_id = j->id;
  ev.run_id = j->run_id;
  ev.repo = strdup(repo);
  ev.job_name = strdup(j->name);
  oom = ev.action == NULL || ev.repo == NULL || ev.job_name == NULL;
  for (i = 0; i < j->nlabels && !oom; i++) {
    ev.labels[i] = strdup(j->labels[i]);
    oom = ev.labels[i] == NULL;
    ev.nlabels += !oom;
  }
  ev.too_many_labels = j->too_many_labels;
  if (oom) {
    event_free(&ev);
    call_failed(rec, "intake", -ENOMEM);
    return;
  }
  log_info(REC_MOD, "queued job no webhook announced",
           LOG_I("job", (long long)j->id), LOG_S("repo", repo));
  if (intake_submit(rec->intake, &ev, uv_now(rec->loop), found_answered_cb,
                    rec) != 0) {
    call_failed(rec, "intake", -ENOMEM);
    return;
  }
  rec->cur.jobs_found++;
  if (rec->m != NULL)
    metrics_counter_add(rec->m, FOUND_METRIC, "", 1);
}

static void jobs_request(struct recovery *rec);

static void jobs_cb(void *arg, int status, const struct gh_job *jobs, size_t n,
                    int more)
{
  struct recovery *rec = arg;
  size_t i;

  if (!answered(rec))
    return;
  if (status != 0) {
    call_failed(rec, "list_run_jobs", status);
    rec->irun++;
    jobs_next(rec);
    return;
  }
  for (i = 0; i < n; i++)
    if (strcmp(jobs[i].status, "queued") == 0 &&
        sched_job_find(rec->sched, jobs[i].id) == NULL)
      job_found(rec, rec->repos[rec->irepo], &jobs[i]);
  if (more && n > 0 && rec->page < REC_MAX_PAGES) {
    rec->page++;
    jobs_request(rec);
    return;
  }
  rec->irun++;
  jobs_next(rec);
}

static void jobs_request(struct recovery *rec)
{
  int rc;

  if (!budget_ok(rec)) {
    run_finish(rec);
    return;
  }
  rc = gh_list_run_jobs(rec->gh, rec->repos[rec->irepo], rec->runs[rec->irun],
                        rec->page, jobs_cb, rec);
  if (rc != 0) {
    call_failed(rec, "list_run_jobs", rc);
    rec->irun++;
    jobs_next(rec);
    return;
  }
  rec->outstanding++;
}

static void jobs_next(struct recovery *rec)
{
  if (rec->irun >= rec->nruns) {
    rec->irepo++;
    scan_repo_next(rec);
    return;
  }
  rec->page = 1;
  jobs_request(rec);
}

/* ---- runs ---- */

static void run_begin(struct recovery *rec, enum recovery_trigger why)
{
  struct gh_budget b;

  if (rec->closing)
    return;
  if (rec->phase != PHASE_IDLE) {
    rec->pending = 1;
    rec->next_trigger = why;
    return;
  }
  memset(&rec->cur, 0, sizeof(rec->cur));
  rec->trigger = why;
  rec->cur.running = 1;
  rec->cur.trigger = recovery_trigger_name(why);
  rec->cur.started_unix_ms = wall_ms(rec);
  gh_set_recovery_reserve(rec->gh, (long)rec->cfg->recovery.primary_reserve);
  gh_budget_get(rec->gh, &b);
  rec->req_base = b.recovery_requests;
  log_info(REC_MOD, "run started", LOG_S("trigger", rec->cur.trigger));
  rec->cur.deliveries_api = gh_app_mode(rec->gh);
  /* The scan is the costly part (a call per queued run): it runs at start,
   * after a failover and when a job waits needlessly, not every interval. */
  rec->scan = why != RECOVERY_TRIGGER_INTERVAL;
  rec->cur.scanned = rec->scan;
  if (rec->cur.deliveries_api)
    deliveries_begin(rec);
  else if (rec->scan)
    scan_begin(rec);
  else
    run_finish(rec);
}

static void run_finish(struct recovery *rec)
{
  char labels[64];

  budget_ok(rec); /* brings calls up to date */
  rec->cur.running = 0;
  rec->cur.finished_unix_ms = wall_ms(rec);
  rec->cur.runs = ++rec->nruns_done;
  rec->last = rec->cur;
  if (rec->scan)
    rec->last_scan_end_ms = uv_now(rec->loop);
  set_phase(rec, PHASE_IDLE);
  log_info(REC_MOD, "run finished", LOG_S("trigger", rec->last.trigger),
           LOG_U("deliveries_seen", rec->last.deliveries_seen),
           LOG_U("redelivered", rec->last.redelivered),
           LOG_U("jobs_found", rec->last.jobs_found),
           LOG_U("calls", rec->last.calls), LOG_U("errors", rec->last.errors),
           LOG_I("budget_spent", rec->last.budget_spent));
  if (rec->m != NULL) {
    snprintf(labels, sizeof(labels), "trigger=\"%s\"", rec->last.trigger);
    metrics_counter_add(rec->m, RUNS_METRIC, labels, 1);
    if (rec->last.errors > 0)
      metrics_counter_add(rec->m, ERRORS_METRIC, "", rec->last.errors);
    metrics_gauge_set(rec->m, LAST_METRIC, "",
                      (double)rec->last.finished_unix_ms / 1e3);
  }
  if (rec->pending && !rec->closing) {
    rec->pending = 0;
    recovery_trigger(rec, rec->next_trigger);
  }
}

static void timer_cb(uv_timer_t *t)
{
  struct recovery *rec = t->data;
  enum recovery_trigger why = rec->next_trigger;
  uint64_t delay = rec->cfg->recovery.interval_ms;

  rec->next_trigger = RECOVERY_TRIGGER_INTERVAL;
  /* After a failover's run, one more once the deliveries GitHub was still
   * attempting during the takeover have failed and are listed; then the
   * periodic runs. */
  if (why == RECOVERY_TRIGGER_FAILOVER && !rec->failover_again) {
    rec->failover_again = 1;
    if (RECOVERY_FAILOVER_AGAIN_MS < delay) {
      delay = RECOVERY_FAILOVER_AGAIN_MS;
      rec->next_trigger = RECOVERY_TRIGGER_FAILOVER;
    }
  } else if (why == RECOVERY_TRIGGER_FAILOVER) {
    rec->failover_again = 0;
  }
  /* The next periodic run comes an interval after this one. */
  if (uv_timer_start(&rec->timer, timer_cb, delay, 0) != 0)
    log_warn(REC_MOD, "cannot re-arm the timer", LOG_NONE);
  /* A replica that does not lead leaves GitHub's deliveries and the queue
   * to the leader. */
  if (rec->may_act != NULL && !rec->may_act(rec->may_act_arg))
    return;
  run_begin(rec, why);
}

void recovery_set_fence(struct recovery *rec, int (*may_act)(void *arg),
                        void *arg)
{
  rec->may_act = may_act;
  rec->may_act_arg = arg;
}

void recovery_note_repo(struct recovery *rec, const char *repo)
{
  char v[sizeof(rec->noted)], *p;
  size_t n, len;

  if (repo == NULL || !repo_name_ok(repo) || rec->store.put == NULL)
    return;
  if (!rec->noted_read) {
    rec->noted_read = 1;
    if (rec->store.get == NULL ||
        rec->store.get(rec->store.ctx, RECOVERY_KEY_REPOS, rec->noted,
                       sizeof(rec->noted)) != 0)
      rec->noted[0] = '\0';
  }
  n = strlen(repo);
  for (p = rec->noted; (p = strstr(p, repo)) != NULL; p += n)
    if ((p == rec->noted || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
      return; /* noted already */
  /* Newest last; the oldest go while it does not fit. */
  p = rec->noted;
  while (strlen(p) + (p[0] != '\0') + n > RECOVERY_REPOS_VALUE_MAX) {
    char *comma = strchr(p, ',');

    p = comma != NULL ? comma + 1 : p + strlen(p);
  }
  len = strlen(p);
  /* The loop above left room: neither can be cut. */
  if (snprintf(v, sizeof(v), "%s%s%s", p, len > 0 ? "," : "", repo) >=
          (int)sizeof(v) ||
      snprintf(rec->noted, sizeof(rec->noted), "%s", v) >=
          (int)sizeof(rec->noted))
    return;
  if (rec->store.put(rec->store.ctx, RECOVERY_KEY_REPOS, rec->noted) != 0)
    log_warn(REC_MOD, "cannot keep the repositories seen", LOG_S("repo", repo));
}

void recovery_trigger(struct recovery *rec, enum recovery_trigger why)
{
  if (rec->closing || !rec->started)
    return;
  if (rec->phase != PHASE_IDLE) {
    rec->pending = 1;
    rec->next_trigger = why;
    return;
  }
  rec->next_trigger = why;
  if (uv_timer_start(&rec->timer, timer_cb, 0, 0) != 0)
    log_warn(REC_MOD, "cannot arm the timer", LOG_NONE);
}

/* A queued job that waited past the threshold while its pool could have
 * had a runner: a webhook or a runner may have gone missing. */
static int job_waits_needlessly(struct recovery *rec, const struct sched_job *j,
                                uint64_t now)
{
  struct sched_pool_stats st;
  const struct cfg_pool *pool;

  if (j->status != SCHED_JOB_QUEUED || j->pool < 0 || j->queued_ms == 0 ||
      j->queued_ms + rec->cfg->recovery.wait_threshold_ms > now)
    return 0;
  pool = sched_pool(rec->sched, (size_t)j->pool);
  sched_pool_stats(rec->sched, (size_t)j->pool, &st);
  if (st.idle > 0)
    return 1;
  /* A pool at max_runners waits for its own runners, not for recovery. */
  return st.starting + st.idle + st.busy + st.stopping < pool->max_runners &&
         rec->capacity_fn != NULL && rec->capacity_fn(rec->capacity_ctx, pool);
}

static void check_cb(uv_timer_t *t)
{
  struct recovery *rec = t->data;
  uint64_t now = wall_ms(rec);
  size_t i;

  if (rec->phase != PHASE_IDLE || rec->closing ||
      uv_now(rec->loop) <
          rec->last_scan_end_ms + rec->cfg->recovery.wait_threshold_ms)
    return;
  for (i = 0; i < sched_njobs(rec->sched); i++)
    if (job_waits_needlessly(rec, sched_job_at(rec->sched, i), now)) {
      log_info(REC_MOD, "a queued job waits with capacity free",
               LOG_I("job", (long long)sched_job_at(rec->sched, i)->id));
      recovery_trigger(rec, RECOVERY_TRIGGER_WAIT);
      return;
    }
}

static uint64_t check_interval(const struct cfg_recovery *c)
{
  uint64_t ms = c->wait_threshold_ms / 4;

  if (ms > REC_CHECK_MAX_MS)
    ms = REC_CHECK_MAX_MS;
  return ms < REC_CHECK_MIN_MS ? REC_CHECK_MIN_MS : ms;
}

/* ---- lifecycle ---- */

static void declare_metrics(struct metrics *m)
{
  if (m == NULL)
    return;
  if (metrics_declare(m, RUNS_METRIC, METRICS_COUNTER,
                      "Recovery runs finished, by what started them.", NULL,
                      0) != 0 ||
      metrics_declare(m, REDELIVERED_METRIC, METRICS_COUNTER,
                      "Failed webhook deliveries recovery had redelivered.",
                      NULL, 0) != 0 ||
      metrics_declare(m, FOUND_METRIC, METRICS_COUNTER,
                      "Queued jobs recovery found that no webhook announced.",
                      NULL, 0) != 0 ||
      metrics_declare(m, ERRORS_METRIC, METRICS_COUNTER,
                      "Recovery calls that failed after their retries.", NULL,
                      0) != 0 ||
      metrics_declare(m, LAST_METRIC, METRICS_GAUGE,
                      "When the last recovery run finished (Unix time).", NULL,
                      0) != 0)
    log_warn(REC_MOD, "cannot declare metrics", LOG_NONE);
}

struct recovery *recovery_new(uv_loop_t *loop, const struct config *cfg,
                              struct gh_client *gh, struct scheduler *sched,
                              struct intake *in,
                              const struct recovery_store *store,
                              struct metrics *m)
{
  struct recovery *rec = calloc(1, sizeof(*rec));

  if (rec == NULL)
    return NULL;
  rec->loop = loop;
  rec->cfg = cfg;
  rec->gh = gh;
  rec->sched = sched;
  rec->intake = in;
  if (store != NULL)
    rec->store = *store;
  rec->m = m;
  (void)uv_timer_init(loop, &rec->timer);
  (void)uv_timer_init(loop, &rec->check);
  rec->timer.data = rec->check.data = rec;
  rec->nhandles = 2;
  rec->next_trigger = RECOVERY_TRIGGER_START;
  gh_set_recovery_reserve(gh, (long)cfg->recovery.primary_reserve);
  declare_metrics(m);
  return rec;
}

void recovery_on_capacity(struct recovery *rec, recovery_capacity_fn fn,
                          void *ctx)
{
  rec->capacity_fn = fn;
  rec->capacity_ctx = ctx;
}

int recovery_start(struct recovery *rec)
{
  uint64_t check = check_interval(&rec->cfg->recovery);
  int rc;

  if (!rec->cfg->recovery.enabled) {
    log_info(REC_MOD, "disabled", LOG_NONE);
    return 0;
  }
  if (!gh_app_mode(rec->gh))
    log_info(REC_MOD,
             "PAT mode has no webhook deliveries API; only the scan runs",
             LOG_NONE);
  rec->started = 1;
  rec->next_trigger = RECOVERY_TRIGGER_START;
  rc = uv_timer_start(&rec->timer, timer_cb, 0, 0);
  if (rc == 0)
    rc = uv_timer_start(&rec->check, check_cb, check, check);
  return rc;
}

void recovery_set_config(struct recovery *rec, const struct config *cfg)
{
  int interval_changed =
      cfg->recovery.interval_ms != rec->cfg->recovery.interval_ms;
  uint64_t check = check_interval(&cfg->recovery);

  rec->cfg = cfg;
  gh_set_recovery_reserve(rec->gh, (long)cfg->recovery.primary_reserve);
  if (!rec->started || rec->closing)
    return;
  if (interval_changed && rec->phase == PHASE_IDLE &&
      uv_timer_start(&rec->timer, timer_cb, cfg->recovery.interval_ms, 0) != 0)
    log_warn(REC_MOD, "cannot re-arm the timer", LOG_NONE);
  if (uv_timer_start(&rec->check, check_cb, check, check) != 0)
    log_warn(REC_MOD, "cannot re-arm the check timer", LOG_NONE);
}

void recovery_report(const struct recovery *rec, struct recovery_report *out)
{
  *out = rec->last;
  out->running = rec->phase != PHASE_IDLE;
}

static void handle_closed_cb(uv_handle_t *h)
{
  struct recovery *rec = h->data;

  rec->nhandles--;
  maybe_closed(rec);
}

void recovery_close(struct recovery *rec, void (*done_cb)(void *arg), void *arg)
{
  if (rec->closing)
    return;
  rec->closing = 1;
  rec->close_cb = done_cb;
  rec->close_arg = arg;
  uv_close((uv_handle_t *)&rec->timer, handle_closed_cb);
  uv_close((uv_handle_t *)&rec->check, handle_closed_cb);
}

void recovery_destroy(struct recovery *rec)
{
  if (rec == NULL)
    return;
  free(rec->dl);
  free(rec->redeliver);
  free(rec->repos);
  free(rec->runs);
  free(rec);
}

/* ---- a store of small files ---- */

static int dir_path(const char *dir, const char *key, const char *suffix,
                    char *out, size_t size)
{
  size_t i;
  int n;

  for (i = 0; key[i] != '\0'; i++)
    if (!((key[i] >= 'a' && key[i] <= 'z') || key[i] == '.' || key[i] == '_'))
      return -EINVAL;
  n = snprintf(out, size, "%s/%s%s", dir, key, suffix);
  return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int dir_get(void *ctx, const char *key, char *buf, size_t size)
{
  char path[1024];
  ssize_t n;
  int fd, rc = dir_path(ctx, key, "", path, sizeof(path));

  if (rc != 0)
    return rc;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  n = read(fd, buf, size - 1);
  rc = n < 0 ? -errno : 0;
  close(fd);
  if (rc != 0)
    return rc;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  buf[n] = '\0';
  return 0;
}

static int dir_put(void *ctx, const char *key, const char *value)
{
  char path[1024], tmp[1040];
  size_t len = strlen(value);
  int fd, rc = dir_path(ctx, key, "", path, sizeof(path));

  if (rc == 0)
    rc = dir_path(ctx, key, ".tmp", tmp, sizeof(tmp));
  if (rc != 0)
    return rc;
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  if (write(fd, value, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
      fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0)
    unlink(tmp);
  return rc;
}

int recovery_dir_store(struct recovery_store *st, const char *dir)
{
  st->ctx = strdup(dir);
  if (st->ctx == NULL)
    return -ENOMEM;
  st->get = dir_get;
  st->put = dir_put;
  return 0;
}

void recovery_dir_store_free(struct recovery_store *st)
{
  free(st->ctx);
  memset(st, 0, sizeof(*st));
}
