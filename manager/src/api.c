#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "backend.h"
#include "console.h"
#include "leader.h"
#include "log.h"
#include "metrics_process.h"
#include "strbuf.h"

#define JSON_TYPE "application/json"
#define PROM_TYPE "text/plain; version=0.0.4; charset=utf-8"

static const double wait_buckets[] = {0.5, 1,   2,   5,   10,   20,  30,
                                      60,  120, 300, 600, 1800, 3600};

int api_declare_metrics(struct metrics *m)
{
  int rc = 0;

  rc |= metrics_declare(m, "runfleet_jobs_queued", METRICS_GAUGE,
                        "Jobs queued at GitHub and waiting for a runner.", NULL,
                        0);
  rc |= metrics_declare(m, "runfleet_runners", METRICS_GAUGE,
                        "Runners by pool and state.", NULL, 0);
  rc |= metrics_declare(m, "runfleet_capacity", METRICS_GAUGE,
                        "Capacity a pool draws on, by resource and state.",
                        NULL, 0);
  rc |= metrics_declare(m, "runfleet_job_wait_seconds", METRICS_HISTOGRAM,
                        "Time from queued to in_progress.", wait_buckets,
                        sizeof(wait_buckets) / sizeof(wait_buckets[0]));
  rc |= metrics_declare(m, "runfleet_jobs_completed_total", METRICS_COUNTER,
                        "Jobs completed, by pool.", NULL, 0);
  rc |= metrics_declare(m, "runfleet_runner_failures_total", METRICS_COUNTER,
                        "Runners that failed to start or ended before "
                        "taking a job.",
                        NULL, 0);
  rc |= metrics_declare(m, "runfleet_jobs_unmatched_total", METRICS_COUNTER,
                        "Jobs whose labels matched no pool.", NULL, 0);
  rc |= metrics_declare(m, "runfleet_http_refused_total", METRICS_COUNTER,
                        "Connections and requests a listener refused or "
                        "closed early, by reason.",
                        NULL, 0);
  rc |= metrics_declare(m, "runfleet_http_connections", METRICS_GAUGE,
                        "Connections open on a listener.", NULL, 0);
  rc |=
      metrics_declare(m, "runfleet_gpus", METRICS_GAUGE,
                      "GPUs by node group and what holds them: runner, "
                      "devserver, free or unhealthy (failed its check, or on a "
                      "node that is cordoned or not Ready).",
                      NULL, 0);
  rc |= metrics_process_declare(m);
  rc |= metrics_declare(m, "runfleet_build_info", METRICS_GAUGE,
                        "Build information; always 1.", NULL, 0);
  if (rc == 0)
    rc = metrics_gauge_set(m, "runfleet_build_info",
                           "version=\"" RUNFLEET_VERSION "\"", 1);
  return rc == 0 ? 0 : -1;
}

static void counter_sync(struct metrics *m, const char *name,
                         const char *labels, double value);

void api_sync_http(struct metrics *m, const char *listener,
                   const struct http_server_stats *st)
{
  const struct {
    const char *reason;
    uint64_t value;
  } reasons[] = {
      {"max_connections", st->rejected_busy},
      {"max_connections_per_peer", st->rejected_peer},
      {"evicted", st->evicted},
      {"header_timeout", st->header_timed_out},
      {"rate_limited", st->rate_limited},
  };
  char labels[128];
  size_t i;

  for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
    snprintf(labels, sizeof(labels), "listener=\"%s\",reason=\"%s\"", listener,
             reasons[i].reason);
    counter_sync(m, "runfleet_http_refused_total", labels,
                 (double)reasons[i].value);
  }
  snprintf(labels, sizeof(labels), "listener=\"%s\"", listener);
  metrics_gauge_set(m, "runfleet_http_connections", labels, st->open);
}

/* Brings a counter mirrored from scheduler state up to value. */
static void counter_sync(struct metrics *m, const char *name,
                         const char *labels, double value)
{
  double have = metrics_value(m, name, labels);

  if (value > have)
    metrics_counter_add(m, name, labels, value - have);
  else if (have == 0)
    metrics_counter_add(m, name, labels, 0);
}

static void capacity_set(struct metrics *m, const char *pool_label,
                         const char *resource, const char *state, double v)
{
  char labels[256];

  snprintf(labels, sizeof(labels), "pool=\"%s\",resource=\"%s\",state=\"%s\"",
           pool_label, resource, state);
  metrics_gauge_set(m, "runfleet_capacity", labels, v);
}

static void capacity_gauges(const struct api_state *st, const char *pool_label,
                            const struct cfg_pool *pool,
                            const struct cap_totals *cap,
                            const struct sched_pool_stats *ps)
{
  struct metrics *m = st->metrics;

  if (pool->gpus > 0) {
    capacity_set(m, pool_label, "gpu", "total", cap->gpus_total);
    capacity_set(m, pool_label, "gpu", "used", cap->gpus_held);
    capacity_set(m, pool_label, "gpu", "unhealthy", cap->gpus_unhealthy);
  }
  capacity_set(m, pool_label, "cpu", "total", cap->cpu_milli_total / 1000u);
  capacity_set(m, pool_label, "cpu", "used", cap->cpu_milli_held / 1000u);
  capacity_set(m, pool_label, "runners", "total", pool->max_runners);
  capacity_set(m, pool_label, "runners", "used",
               ps->starting + ps->idle + ps->busy + ps->stopping);
}

/* GPU occupancy per node group (source). Node groups are few; nodes are
 * not labels, so a fleet of hundreds of nodes stays a handful of series. */
#define GPU_GROUPS_MAX 64
#define GPU_VIEW_MAX 64

static void gpu_gauges(const struct api_state *st)
{
  static const char *const holders[] = {"runner", "devserver", "free",
                                        "unhealthy"};
  struct {
    const char *source;
    unsigned count[4];
  } groups[GPU_GROUPS_MAX];
  struct cap_gpu_view gpus[GPU_VIEW_MAX];
  size_t ngroups = 0, i, g, k, ngpus;

  metrics_gauge_reset(st->metrics, "runfleet_gpus");
  if (st->capacity == NULL)
    return;
  for (i = 0; i < capacity_nnodes(st->capacity); i++) {
    const char *name, *source;
    int ready;

    if (capacity_node_view(st->capacity, i, &name, &source, &ready, gpus,
                           GPU_VIEW_MAX, &ngpus) != 0 ||
        ngpus == 0)
      continue;
    for (g = 0; g < ngroups && strcmp(groups[g].source, source) != 0; g++)
      ;
    if (g == ngroups) {
      if (ngroups == GPU_GROUPS_MAX)
        continue;
      groups[g].source = source;
      memset(groups[g].count, 0, sizeof(groups[g].count));
      ngroups++;
    }
    for (k = 0; k < ngpus && k < GPU_VIEW_MAX; k++) {
      if (gpus[k].holder != NULL)
        groups[g].count[gpus[k].holder_kind == CAP_HOLDER_DEVSERVER ? 1 : 0]++;
      else if (!gpus[k].healthy || !ready)
        groups[g].count[3]++;
      else
        groups[g].count[2]++;
    }
  }
  for (g = 0; g < ngroups; g++) {
    char esc[128], labels[256];

    metrics_escape(groups[g].source, esc, sizeof(esc));
    for (k = 0; k < 4; k++) {
      snprintf(labels, sizeof(labels), "node_group=\"%s\",holder=\"%s\"", esc,
               holders[k]);
      metrics_gauge_set(st->metrics, "runfleet_gpus", labels,
                        groups[g].count[k]);
    }
  }
}

void api_update_gauges(const struct api_state *st)
{
  static const char *const states[] = {"starting", "idle", "busy", "stopping",
                                       "finished"};
  struct metrics *m = st->metrics;
  struct cap_totals cap;
  size_t i, k;

  memset(&cap, 0, sizeof(cap));
  if (st->capacity != NULL)
    capacity_totals(st->capacity, &cap);
  metrics_gauge_reset(m, "runfleet_jobs_queued");
  metrics_gauge_reset(m, "runfleet_runners");
  metrics_gauge_reset(m, "runfleet_capacity");
  for (i = 0; i < sched_npools(st->sched); i++) {
    const struct cfg_pool *pool = sched_pool(st->sched, i);
    struct sched_pool_stats ps;
    char esc[128], labels[256];
    unsigned counts[5];

    sched_pool_stats(st->sched, i, &ps);
    metrics_escape(pool->name, esc, sizeof(esc));
    snprintf(labels, sizeof(labels), "pool=\"%s\"", esc);
    metrics_gauge_set(m, "runfleet_jobs_queued", labels, ps.queued);
    counter_sync(m, "runfleet_jobs_completed_total", labels,
                 (double)ps.jobs_completed);
    counter_sync(m, "runfleet_runner_failures_total", labels,
                 (double)ps.runner_failures);
    counts[0] = ps.starting;
    counts[1] = ps.idle;
    counts[2] = ps.busy;
    counts[3] = ps.stopping;
    counts[4] = ps.finished;
    for (k = 0; k < 5; k++) {
      snprintf(labels, sizeof(labels), "pool=\"%s\",state=\"%s\"", esc,
               states[k]);
      metrics_gauge_set(m, "runfleet_runners", labels, counts[k]);
    }
    capacity_gauges(st, esc, pool, &cap, &ps);
  }
  counter_sync(m, "runfleet_jobs_unmatched_total", "",
               (double)sched_unmatched_total(st->sched));
  gpu_gauges(st);
}

static void set_json(struct http_response *resp, int status, json_t *doc)
{
  char *text = json_dumps(doc, JSON_COMPACT);

  json_decref(doc);
  if (text == NULL) {
    http_response_set(resp, 500, "text/plain", "out of memory\n", 14);
    return;
  }
  http_response_set(resp, status, JSON_TYPE, text, strlen(text));
  free(text);
}

/* Appends item to a, logging (instead of silently dropping) an entry that
 * could not be encoded. */
static void append(json_t *a, json_t *item, const char *what)
{
  if (item == NULL || json_array_append_new(a, item) != 0)
    log_warn("api", "cannot encode an entry", LOG_S("list", what));
}

static json_t *labels_json(char *const *labels, size_t n)
{
  json_t *a = json_array();
  size_t i;

  for (i = 0; i < n; i++)
    json_array_append_new(a, json_string(labels[i]));
  return a;
}

static json_t *pools_json(const struct api_state *st)
{
  json_t *pools = json_array();
  struct cap_totals cap;
  size_t i;

  memset(&cap, 0, sizeof(cap));
  if (st->capacity != NULL)
    capacity_totals(st->capacity, &cap);
  for (i = 0; i < sched_npools(st->sched); i++) {
    const struct cfg_pool *p = sched_pool(st->sched, i);
    struct sched_pool_stats ps;

    sched_pool_stats(st->sched, i, &ps);
    append(
        pools,
        json_pack("{s:s, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, "
                  "s:{s:i, s:i, s:i, s:i, s:i}, s:{s:i, s:i, s:i, s:i, s:i}}",
                  "name", p->name, "labels", labels_json(p->labels, p->nlabels),
                  "priority", p->priority, "max_runners", (int)p->max_runners,
                  "min_idle", (int)p->min_idle, "gpus_per_runner", (int)p->gpus,
                  "demand", (int)ps.queued, "in_progress", (int)ps.in_progress,
                  "jobs_completed", (int)ps.jobs_completed, "runner_failures",
                  (json_int_t)ps.runner_failures, "runners", "starting",
                  (int)ps.starting, "idle", (int)ps.idle, "busy", (int)ps.busy,
                  "stopping", (int)ps.stopping, "finished", (int)ps.finished,
                  "capacity", "gpus_total", (int)cap.gpus_total, "gpus_used",
                  (int)cap.gpus_held, "gpus_unhealthy", (int)cap.gpus_unhealthy,
                  "cpus_total", (int)(cap.cpu_milli_total / 1000u), "cpus_used",
                  (int)(cap.cpu_milli_held / 1000u)),
        "pools");
  }
  return json_pack("{s:o}", "pools", pools);
}

/* Unix ms to an ISO-8601 time, or null for 0. */
static json_t *iso_time(uint64_t ms)
{
  char buf[40];
  struct tm tm;
  time_t t;

  if (ms == 0)
    return json_null();
  t = (time_t)(ms / 1000);
  gmtime_r(&t, &tm);
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_string(buf);
}

static json_t *jobs_json(const struct api_state *st)
{
  json_t *jobs = json_array();
  size_t i;

  for (i = 0; i < sched_njobs(st->sched); i++) {
    const struct sched_job *j = sched_job_at(st->sched, i);
    /* Job times are wall-clock, as the scheduler's clock reads now. */
    uint64_t end = j->started_ms ? j->started_ms : sched_wall_ms(st->sched);
    json_t *wait = j->queued_ms && end >= j->queued_ms
                       ? json_real((double)(end - j->queued_ms) / 1e3)
                       : json_null();

    append(jobs,
           json_pack("{s:I, s:I, s:s, s:s, s:s?, s:s, s:s, s:o, s:o, s:o, "
                     "s:o, s:o}",
                     "id", (json_int_t)j->id, "run_id", (json_int_t)j->run_id,
                     "repository", j->repo, "name", j->name, "conclusion",
                     j->conclusion[0] ? j->conclusion : NULL, "pool",
                     j->pool >= 0 ? sched_pool(st->sched, (size_t)j->pool)->name
                                  : "",
                     "status", sched_job_status_name(j->status), "labels",
                     labels_json(j->labels, j->nlabels), "runner",
                     j->runner[0] ? json_string(j->runner) : json_null(),
                     "queued_at", iso_time(j->queued_ms), "started_at",
                     iso_time(j->started_ms), "wait_seconds", wait),
           "jobs");
  }
  return json_pack("{s:o}", "jobs", jobs);
}

/* What the backend says keeps a runner from running, or null. */
static json_t *runner_waiting(const struct api_state *st, const char *name)
{
  const char *why = NULL;

  if (st->backend != NULL && st->backend->ops->waiting != NULL)
    why = st->backend->ops->waiting(st->backend, name);
  return why != NULL ? json_string(why) : json_null();
}

static json_t *runners_json(const struct api_state *st)
{
  json_t *runners = json_array();
  size_t i, k;

  for (i = 0; i < sched_nrunners(st->sched); i++) {
    const struct sched_runner *r = sched_runner_at(st->sched, i);
    json_t *gpus = json_array();

    for (k = 0; k < r->ngpus; k++)
      json_array_append_new(gpus, json_integer(r->gpus[k]));
    append(runners,
           json_pack(
               "{s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:f}", "name", r->name,
               "pool",
               r->pool >= 0 ? sched_pool(st->sched, (size_t)r->pool)->name : "",
               "state", sched_runner_state_name(r->state), "waiting",
               runner_waiting(st, r->name), "gpus", gpus, "job_id",
               r->job_id ? json_integer((json_int_t)r->job_id) : json_null(),
               "github_id", (json_int_t)r->gh_id, "age_seconds",
               (double)(st->now_ms - r->created_ms) / 1e3),
           "runners");
  }
  return json_pack("{s:o}", "runners", runners);
}

static json_t *budget_json(const struct gh_client *gh)
{
  struct gh_budget b;

  if (gh == NULL)
    return json_null();
  gh_budget_get(gh, &b);
  return json_pack(
      "{s:o, s:o, s:o, s:o, s:I, s:{s:f, s:f, s:f}, s:I, s:{s:i, s:i, s:i}, "
      "s:I}",
      "remaining", b.remaining >= 0 ? json_integer(b.remaining) : json_null(),
      "limit", b.limit >= 0 ? json_integer(b.limit) : json_null(), "reset_at",
      iso_time((uint64_t)b.reset_unix * 1000), "app_remaining",
      b.app_remaining >= 0 ? json_integer(b.app_remaining) : json_null(),
      "reserve", (json_int_t)b.reserve, "hold_seconds", "all",
      (double)b.hold_all_ms / 1e3, "mutations",
      (double)b.hold_mutations_ms / 1e3, "recovery",
      (double)b.hold_recovery_ms / 1e3, "secondary_limited",
      (json_int_t)b.secondary_limited, "waiting", "runner",
      (int)b.runner_waiting, "recovery", (int)b.recovery_queued,
      "recovery_in_flight", (int)b.recovery_in_flight, "recovery_requests",
      (json_int_t)b.recovery_requests);
}

static json_t *last_run_json(const struct recovery_report *r)
{
  if (r->runs == 0)
    return json_null();
  return json_pack(
      "{s:s, s:o, s:o, s:b, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, "
      "s:I, s:b}",
      "trigger", r->trigger != NULL ? r->trigger : "", "started_at",
      iso_time(r->started_unix_ms), "finished_at",
      iso_time(r->finished_unix_ms), "deliveries_api", r->deliveries_api,
      "deliveries_seen", (int)r->deliveries_seen, "deliveries_failed",
      (int)r->deliveries_failed, "redelivered", (int)r->redelivered,
      "repositories_scanned", (int)r->repos_scanned, "runs_scanned",
      (int)r->runs_scanned, "jobs_found", (int)r->jobs_found, "calls",
      (int)r->calls, "errors", (int)r->errors, "budget_spent", r->budget_spent,
      "cursor", (json_int_t)r->cursor, "scanned", r->scanned);
}

static json_t *recovery_json(const struct api_state *st)
{
  struct recovery_report r;

  memset(&r, 0, sizeof(r));
  if (st->recovery != NULL)
    recovery_report(st->recovery, &r);
  return json_pack("{s:{s:b, s:I, s:o, s:o}}", "recovery", "running", r.running,
                   "runs", (json_int_t)r.runs, "last_run", last_run_json(&r),
                   "budget", budget_json(st->gh));
}

void api_healthz(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp)
{
  (void)st;
  (void)req;
  http_response_set(resp, 200, "text/plain", "ok\n", 3);
}

void api_readyz(const struct api_state *st, const struct http_request *req,
                struct http_response *resp)
{
  (void)req;
  if (st->ready)
    http_response_set(resp, 200, "text/plain", "ready\n", 6);
  else
    http_response_set(resp, 503, "text/plain", "not ready\n", 10);
}

void api_metrics(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp)
{
  size_t len = 0;
  char *text;

  (void)req;
  api_update_gauges(st);
  text = metrics_render(st->metrics, &len);
  if (text == NULL) {
    http_response_set(resp, 500, "text/plain", "out of memory\n", 14);
    return;
  }
  resp->status = 200;
  resp->content_type = PROM_TYPE;
  resp->body = text;
  resp->body_len = len;
}

void api_status_page(const struct api_state *st, const struct http_request *req,
                     struct http_response *resp)
{
  (void)req;
  console_page(st, resp);
}

void api_nodes(const struct api_state *st, const struct http_request *req,
               struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, console_nodes_json(st));
}

void api_queue(const struct api_state *st, const struct http_request *req,
               struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, console_queue_json(st));
}

void api_history(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, console_history_json(st->history));
}

void api_pools(const struct api_state *st, const struct http_request *req,
               struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, pools_json(st));
}

void api_jobs(const struct api_state *st, const struct http_request *req,
              struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, jobs_json(st));
}

void api_runners(const struct api_state *st, const struct http_request *req,
                 struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, runners_json(st));
}

void api_recovery(const struct api_state *st, const struct http_request *req,
                  struct http_response *resp)
{
  (void)req;
  set_json(resp, 200, recovery_json(st));
}

void api_leader(const struct api_state *st, const struct http_request *req,
                struct http_response *resp)
{
  const char *holder;

  (void)req;
  if (st->leader == NULL) {
    set_json(
        resp, 200,
        json_pack("{s:b, s:b, s:n}", "election", 0, "leading", 1, "holder"));
    return;
  }
  holder = leader_holder(st->leader);
  set_json(resp, 200,
           json_pack("{s:b, s:b, s:o}", "election", 1, "leading",
                     leader_is_leader(st->leader), "holder",
                     holder != NULL && holder[0] != '\0' ? json_string(holder)
                                                         : json_null()));
}

void api_not_found(const struct api_state *st, const struct http_request *req,
                   struct http_response *resp)
{
  (void)st;
  (void)req;
  set_json(resp, 404, json_pack("{s:s}", "message", "Not Found"));
}
