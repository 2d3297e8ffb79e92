#include "console.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "console_assets.h"
#include "log.h"
#include "strbuf.h"
#include "unittest.h"

#define CONSOLE_MOD "console"
/* GPUs of one node as the map shows them (CAP_MAX_NODE_GPUS is the most a
 * node has). */
#define VIEW_MAX CAP_MAX_NODE_GPUS

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

UNITTEST double console_quantile(double *v, size_t n, double q)
{
  size_t rank;

  if (n == 0)
    return -1;
  qsort(v, n, sizeof(*v), cmp_double);
  /* Nearest rank: the smallest value with at least q of them at or below. */
  rank = (size_t)(q * (double)n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return v[rank - 1];
}

void console_sample(struct console_history *h, const struct scheduler *s,
                    uint64_t wall_ms)
{
  struct console_sample *out;
  size_t i, nwaits = 0, njobs = sched_njobs(s);
  double *waits = njobs > 0 ? malloc(njobs * sizeof(*waits)) : NULL;

  out = &h->s[(h->first + h->n) % CONSOLE_SAMPLES];
  if (h->n == CONSOLE_SAMPLES)
    h->first = (h->first + 1) % CONSOLE_SAMPLES;
  else
    h->n++;
  memset(out, 0, sizeof(*out));
  out->at_ms = wall_ms;
  for (i = 0; i < sched_npools(s); i++) {
    struct sched_pool_stats ps;

    sched_pool_stats(s, i, &ps);
    out->queued += ps.queued;
    out->busy += ps.busy;
    out->runners += ps.starting + ps.idle + ps.busy + ps.stopping;
  }
  for (i = 0; waits != NULL && i < njobs; i++) {
    const struct sched_job *j = sched_job_at(s, i);

    if (j->started_ms > h->last_ms && j->started_ms <= wall_ms &&
        j->queued_ms > 0 && j->started_ms >= j->queued_ms)
      waits[nwaits++] = (double)(j->started_ms - j->queued_ms) / 1e3;
  }
  out->wait_p50 = console_quantile(waits, nwaits, 0.5);
  out->wait_p95 = console_quantile(waits, nwaits, 0.95);
  free(waits);
  h->last_ms = wall_ms;
}

json_t *console_history_json(const struct console_history *h)
{
  json_t *a = json_array();
  size_t i;

  for (i = 0; h != NULL && i < h->n; i++) {
    const struct console_sample *x = &h->s[(h->first + i) % CONSOLE_SAMPLES];

    json_array_append_new(
        a, json_pack("{s:f, s:i, s:i, s:i, s:o, s:o}", "at",
                     (double)x->at_ms / 1e3, "queued", (int)x->queued, "busy",
                     (int)x->busy, "runners", (int)x->runners, "wait_p50",
                     x->wait_p50 >= 0 ? json_real(x->wait_p50) : json_null(),
                     "wait_p95",
                     x->wait_p95 >= 0 ? json_real(x->wait_p95) : json_null()));
  }
  return json_pack("{s:i, s:o}", "interval_seconds",
                   (int)(CONSOLE_SAMPLE_MS / 1000), "samples", a);
}

/* What a runner's GPU shows: its pool and state, and the job it runs. */
static void runner_detail(const struct api_state *st, json_t *gpu,
                          const char *holder)
{
  const struct sched_runner *r = sched_runner_find(st->sched, holder);
  const struct sched_job *j;
  uint64_t wall = sched_wall_ms(st->sched);

  if (r == NULL)
    return;
  if (r->pool >= 0)
    json_object_set_new(
        gpu, "pool", json_string(sched_pool(st->sched, (size_t)r->pool)->name));
  json_object_set_new(gpu, "runner_state",
                      json_string(sched_runner_state_name(r->state)));
  j = r->job_id != 0 ? sched_job_find(st->sched, r->job_id) : NULL;
  if (j == NULL)
    return;
  json_object_set_new(
      gpu, "job",
      json_pack("{s:I, s:s, s:s, s:o}", "id", (json_int_t)j->id, "repository",
                j->repo, "name", j->name, "running_seconds",
                j->started_ms > 0 && wall >= j->started_ms
                    ? json_real((double)(wall - j->started_ms) / 1e3)
                    : json_null()));
}

static json_t *gpu_json(const struct api_state *st,
                        const struct cap_gpu_view *g, int node_ready)
{
  const char *state;
  json_t *o;

  if (g->holder != NULL)
    state = g->holder_kind == CAP_HOLDER_DEVSERVER ? "devserver" : "runner";
  else if (!g->healthy || !node_ready)
    state = "unhealthy";
  else
    state = "free";
  o = json_pack("{s:i, s:s, s:s?, s:b}", "index", g->index, "state", state,
                "holder", g->holder, "healthy", g->healthy);
  if (o != NULL && g->holder != NULL && g->holder_kind == CAP_HOLDER_RUNNER)
    runner_detail(st, o, g->holder);
  return o;
}

json_t *console_nodes_json(const struct api_state *st)
{
  struct cap_gpu_view views[VIEW_MAX];
  json_t *nodes = json_array();
  size_t i, k, ngpus;

  for (i = 0; st->capacity != NULL && i < capacity_nnodes(st->capacity); i++) {
    const char *name, *source;
    json_t *gpus, *node;
    int ready;

    if (capacity_node_view(st->capacity, i, &name, &source, &ready, views,
                           VIEW_MAX, &ngpus) != 0)
      continue;
    gpus = json_array();
    for (k = 0; k < ngpus; k++)
      json_array_append_new(gpus, gpu_json(st, &views[k], ready));
    node = json_pack("{s:s, s:s, s:b, s:o}", "name", name, "node_group", source,
                     "ready", ready, "gpus", gpus);
    if (node == NULL || json_array_append_new(nodes, node) != 0)
      log_warn(CONSOLE_MOD, "cannot encode a node", LOG_S("node", name));
  }
  return json_pack("{s:o}", "nodes", nodes);
}

/* Queued jobs of one pool, oldest first. */
static int cmp_job_age(const void *a, const void *b)
{
  const struct sched_job *x = *(const struct sched_job *const *)a;
  const struct sched_job *y = *(const struct sched_job *const *)b;

  if (x->seq != y->seq)
    return x->seq < y->seq ? -1 : 1;
  return 0;
}

static json_t *reason(const char *code, const char *text)
{
  return json_pack("{s:s, s:s}", "code", code, "text", text);
}

/* Why the first queued job of pool p has no runner, in the order the
 * scheduler itself checks: the pool backing off or blocked, at its
 * max_runners, runners on their way (held up by GitHub's budget or not),
 * then capacity. */
static json_t *head_reason(const struct api_state *st, size_t p,
                           const struct sched_pool_stats *ps)
{
  const struct cfg_pool *pool = sched_pool(st->sched, p);
  unsigned runners = ps->starting + ps->idle + ps->busy + ps->stopping;
  uint64_t wall = st->now_ms;
  char text[256];

  if (ps->queued == 0)
    return json_null();
  if (st->backend != NULL && st->backend->ops->accepts != NULL &&
      !st->backend->ops->accepts(st->backend, pool))
    return reason("blocked", "the backend starts no runner of this pool now "
                             "(its image does not pull, or its pods failed "
                             "to start)");
  if (ps->backoff_until_ms > wall) {
    snprintf(text, sizeof(text),
             "backing off after runner failures, %.0f s left",
             (double)(ps->backoff_until_ms - wall) / 1e3);
    return reason("backoff", text);
  }
  if (runners >= pool->max_runners && ps->starting == 0) {
    snprintf(text, sizeof(text), "max_runners (%u) reached", pool->max_runners);
    return reason("max_runners", text);
  }
  if (ps->starting > 0 && st->gh != NULL) {
    struct gh_budget b;

    gh_budget_get(st->gh, &b);
    if (b.hold_all_ms > 0 || b.hold_mutations_ms > 0) {
      snprintf(text, sizeof(text),
               "runner registrations wait for GitHub's rate limit, %.0f s",
               (double)(b.hold_all_ms > b.hold_mutations_ms
                            ? b.hold_all_ms
                            : b.hold_mutations_ms) /
                   1e3);
      return reason("github_budget", text);
    }
  }
  if (ps->starting > 0 || ps->idle > 0) {
    snprintf(text, sizeof(text), "%u runner(s) starting, %u idle", ps->starting,
             ps->idle);
    return reason("starting", text);
  }
  if (runners >= pool->max_runners) {
    snprintf(text, sizeof(text), "max_runners (%u) reached", pool->max_runners);
    return reason("max_runners", text);
  }
  if (st->capacity != NULL) {
    struct cap_label sel[CAP_MAX_SELECTOR];
    struct cap_request req;

    capacity_request_for_pool(pool, &req, sel);
    if (!capacity_fits(st->capacity, &req)) {
      snprintf(text, sizeof(text),
               "no node of the pool's group has room for %u GPU(s), %u CPU "
               "slot(s)",
               req.gpus, (req.cpu_milli + 999) / 1000);
      return reason("capacity", text);
    }
  }
  return reason("placing", "a runner is being placed");
}

static json_t *pool_queue_json(const struct api_state *st, size_t p,
                               const struct sched_job **jobs, size_t njobs)
{
  const struct cfg_pool *pool = sched_pool(st->sched, p);
  struct sched_pool_stats ps;
  json_t *next = json_array();
  uint64_t wall = st->now_ms;
  double oldest = -1;
  size_t i, k = 0;

  sched_pool_stats(st->sched, p, &ps);
  for (i = 0; i < njobs; i++) {
    const struct sched_job *j = jobs[i];
    double wait;

    if (j->pool != (int)p)
      continue;
    wait = wall >= j->queued_ms ? (double)(wall - j->queued_ms) / 1e3 : 0;
    if (oldest < 0)
      oldest = wait;
    if (k++ < CONSOLE_NEXT_JOBS)
      json_array_append_new(next,
                            json_pack("{s:I, s:s, s:s, s:f}", "id",
                                      (json_int_t)j->id, "repository", j->repo,
                                      "name", j->name, "wait_seconds", wait));
  }
  return json_pack("{s:s, s:i, s:o, s:o, s:o}", "pool", pool->name, "queued",
                   (int)ps.queued, "oldest_wait_seconds",
                   oldest >= 0 ? json_real(oldest) : json_null(), "reason",
                   head_reason(st, p, &ps), "next", next);
}

json_t *console_queue_json(const struct api_state *st)
{
  size_t n = sched_njobs(st->sched), njobs = 0, i;
  const struct sched_job **jobs = n > 0 ? malloc(n * sizeof(*jobs)) : NULL;
  json_t *pools = json_array();

  if (n > 0 && jobs == NULL) {
    json_decref(pools);
    return NULL;
  }
  for (i = 0; i < n; i++) {
    const struct sched_job *j = sched_job_at(st->sched, i);

    if (j->status == SCHED_JOB_QUEUED && j->pool >= 0)
      jobs[njobs++] = j;
  }
  if (njobs > 1)
    qsort(jobs, njobs, sizeof(*jobs), cmp_job_age);
  for (i = 0; i < sched_npools(st->sched); i++) {
    json_t *q = pool_queue_json(st, i, jobs, njobs);

    if (q == NULL || json_array_append_new(pools, q) != 0)
      log_warn(CONSOLE_MOD, "cannot encode a pool's queue",
               LOG_S("pool", sched_pool(st->sched, i)->name));
  }
  free(jobs);
  return json_pack("{s:o}", "queue", pools);
}

/* The pools table as the server renders it, so the page says something
 * before its script has run (and without one). Pool names are [a-z0-9-]
 * (config checks it): nothing to escape. */
static void pools_table(const struct api_state *st, struct strbuf *b)
{
  size_t i;

  strbuf_puts(b, "<table id=\"pools\"><thead><tr><th>pool</th><th>priority"
                 "</th><th>queued</th><th>in progress</th><th>starting</th>"
                 "<th>idle</th><th>busy</th><th>stopping</th><th>max</th>"
                 "<th>completed</th><th>failures</th></tr></thead><tbody>");
  for (i = 0; i < sched_npools(st->sched); i++) {
    const struct cfg_pool *p = sched_pool(st->sched, i);
    struct sched_pool_stats ps;

    sched_pool_stats(st->sched, i, &ps);
    strbuf_printf(b,
                  "<tr><td>%s</td><td>%d</td><td>%u</td><td>%u</td><td>%u</td>"
                  "<td>%u</td><td>%u</td><td>%u</td><td>%u</td><td>%llu</td>"
                  "<td>%llu</td></tr>",
                  p->name, p->priority, ps.queued, ps.in_progress, ps.starting,
                  ps.idle, ps.busy, ps.stopping, p->max_runners,
                  (unsigned long long)ps.jobs_completed,
                  (unsigned long long)ps.runner_failures);
  }
  strbuf_puts(b, "</tbody></table>");
}

void console_page(const struct api_state *st, struct http_response *resp)
{
  struct strbuf b = {0};
  size_t len = 0;

  strbuf_puts(&b, "<!doctype html><html lang=\"en\"><head>"
                  "<meta charset=\"utf-8\"><meta name=\"viewport\" "
                  "content=\"width=device-width, initial-scale=1\">"
                  "<title>runfleet</title><link rel=\"icon\" href=\"data:,\">"
                  "<noscript><meta "
                  "http-equiv=\"refresh\" content=\"5\"></noscript><style>");
  strbuf_puts(&b, console_css);
  strbuf_puts(&b, "</style></head><body><header><h1>runfleet</h1>"
                  "<span id=\"role\" class=\"pill\"></span>"
                  "<span id=\"version\" class=\"muted\">" RUNFLEET_VERSION
                  "</span><span id=\"updated\" class=\"muted\"></span>"
                  "</header><main>"
                  "<section id=\"gpu-section\"><h2>GPUs</h2>"
                  "<div id=\"gpumap\" class=\"gpumap\"></div>"
                  "<p id=\"cpunodes\" class=\"muted\"></p></section>"
                  "<section><h2>Queue</h2><div id=\"queue\"></div></section>"
                  "<section><h2>Throughput, last hour</h2>"
                  "<div id=\"charts\" class=\"charts\"></div></section>"
                  "<section><h2>Pools</h2><div class=\"scroll\">");
  pools_table(st, &b);
  strbuf_puts(&b, "</div></section><section><h2>Recent jobs</h2>"
                  "<div class=\"scroll\" id=\"jobs\"></div></section>"
                  "<section><h2>GitHub and recovery</h2>"
                  "<p id=\"budget\"></p><p id=\"recovery\"></p></section>"
                  "</main><footer><a href=\"/metrics\">/metrics</a> &middot; "
                  "<a href=\"/api/v1/pools\">/api/v1/pools</a> &middot; "
                  "<a href=\"/api/v1/nodes\">/api/v1/nodes</a> &middot; "
                  "<a href=\"/api/v1/queue\">/api/v1/queue</a> &middot; "
                  "<a href=\"/api/v1/jobs\">/api/v1/jobs</a> &middot; "
                  "<a href=\"/api/v1/runners\">/api/v1/runners</a> &middot; "
                  "<a href=\"/api/v1/recovery\">/api/v1/recovery</a>"
                  "</footer><script>");
  strbuf_puts(&b, console_js);
  strbuf_puts(&b, "</script></body></html>");
  resp->body = strbuf_take(&b, &len);
  if (resp->body == NULL) {
    http_response_set(resp, 500, "text/plain", "out of memory\n", 14);
    return;
  }
  resp->status = 200;
  resp->content_type = "text/html; charset=utf-8";
  resp->body_len = len;
}
