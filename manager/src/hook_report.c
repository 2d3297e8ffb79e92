#include "hook_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "log.h"
#include "rand.h"

#define HOOK_MOD "hooks"
#define HOOK_SECRET_LEN 32

#define HOOK_MAX_FAILED_GPUS 64

struct hook_reports {
  unsigned char secret[HOOK_SECRET_LEN];
  struct metrics *metrics;
  struct backend *backend; /* NULL until set */
};

static const double duration_buckets[] = {10,   30,   60,   120,  300,  600,
                                          1200, 1800, 3600, 7200, 14400};
static const double memory_buckets[] = {
    1073741824.0,  4294967296.0,  8589934592.0,  17179869184.0,
    34359738368.0, 51539607552.0, 85899345920.0, 103079215104.0};
static const double ratio_buckets[] = {0.1, 0.2, 0.3, 0.4, 0.5,
                                       0.6, 0.7, 0.8, 0.9, 1.0};

#define NB(a) (sizeof(a) / sizeof((a)[0]))

static int declare(struct metrics *m)
{
  int rc = 0;

  rc |= metrics_declare(m, "runfleet_hook_reports_total", METRICS_COUNTER,
                        "Reports from runner hooks, by hook and result.", NULL,
                        0);
  rc |=
      metrics_declare(m, "runfleet_hook_failures_total", METRICS_COUNTER,
                      "Hooks that failed a job, by hook and reason.", NULL, 0);
  rc |=
      metrics_declare(m, "runfleet_gpu_health_failures_total", METRICS_COUNTER,
                      "GPU health checks that failed before a job.", NULL, 0);
  rc |= metrics_declare(m, "runfleet_job_duration_seconds", METRICS_HISTOGRAM,
                        "Job duration measured by the runner hooks.",
                        duration_buckets, NB(duration_buckets));
  rc |= metrics_declare(m, "runfleet_gpu_memory_peak_bytes", METRICS_HISTOGRAM,
                        "Peak GPU memory of a job, per GPU.", memory_buckets,
                        NB(memory_buckets));
  rc |= metrics_declare(m, "runfleet_gpu_utilization_ratio", METRICS_HISTOGRAM,
                        "Mean GPU utilisation of a job.", ratio_buckets,
                        NB(ratio_buckets));
  rc |= metrics_declare(m, "runfleet_git_cache_total", METRICS_COUNTER,
                        "Git cache lookups before jobs, by result.", NULL, 0);
  rc |= metrics_declare(m, "runfleet_git_cache_bytes_saved_total",
                        METRICS_COUNTER,
                        "Bytes checkouts did not download thanks to the "
                        "git cache (estimate).",
                        NULL, 0);
  rc |= metrics_declare(m, "runfleet_git_cache_bytes_fetched_total",
                        METRICS_COUNTER, "Bytes fetched into the git cache.",
                        NULL, 0);
  return rc == 0 ? 0 : -1;
}

struct hook_reports *hook_reports_new(struct metrics *m)
{
  struct hook_reports *h = calloc(1, sizeof(*h));

  if (h == NULL)
    return NULL;
  if (rand_bytes(h->secret, HOOK_SECRET_LEN) != 0 || declare(m) != 0) {
    hook_reports_destroy(h);
    return NULL;
  }
  h->metrics = m;
  return h;
}

void hook_reports_set_backend(struct hook_reports *h, struct backend *b)
{
  h->backend = b;
}

void hook_reports_destroy(struct hook_reports *h)
{
  if (h == NULL)
    return;
  OPENSSL_cleanse(h->secret, sizeof(h->secret));
  free(h);
}

int hook_token(const struct hook_reports *h, const char *name, char *out,
               size_t out_size)
{
  static const char hex[] = "0123456789abcdef";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0, i;

  if (out_size < HOOK_TOKEN_SIZE ||
      HMAC(EVP_sha256(), h->secret, HOOK_SECRET_LEN,
           (const unsigned char *)name, strlen(name), digest, &len) == NULL ||
      len != 32)
    return -1;
  for (i = 0; i < len; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 0xf];
  }
  out[2 * len] = '\0';
  OPENSSL_cleanse(digest, sizeof(digest));
  return 0;
}

/* Label values from a report are whatever the job's code sent (it can read
 * the runner's token): only the documented ones keep their name. */
static const char *allowed(const char *value, const char *const *set)
{
  for (; value != NULL && *set != NULL; set++)
    if (strcmp(value, *set) == 0)
      return *set;
  return "other";
}

static const char *const health_reasons[] = {
    "ecc",         "missing_gpu", "foreign_process",
    "temperature", "clocks",      "nvml_unavailable",
    "disk",        "timeout",     NULL};
static const char *const cache_results[] = {"hit",      "miss",    "error",
                                            "disabled", "skipped", NULL};

static void count(struct hook_reports *h, const char *name, const char *l1,
                  const char *v1, const char *l2, const char *v2, double d)
{
  char labels[256], e1[96], e2[96];

  if (l2 != NULL)
    snprintf(labels, sizeof(labels), "%s=\"%s\",%s=\"%s\"", l1,
             metrics_escape(v1, e1, sizeof(e1)), l2,
             metrics_escape(v2, e2, sizeof(e2)));
  else if (l1 != NULL)
    snprintf(labels, sizeof(labels), "%s=\"%s\"", l1,
             metrics_escape(v1, e1, sizeof(e1)));
  else
    labels[0] = '\0';
  metrics_counter_add(h->metrics, name, labels, d);
}

static void observe(struct hook_reports *h, const char *name, const char *pool,
                    double v)
{
  char labels[160], esc[96];

  snprintf(labels, sizeof(labels), "pool=\"%s\"",
           metrics_escape(pool, esc, sizeof(esc)));
  metrics_histogram_observe(h->metrics, name, labels, v);
}

static int placement_has_gpu(const struct cap_placement *where, int gpu)
{
  size_t i;

  for (i = 0; i < where->ngpus; i++)
    if (where->gpus[i] == gpu)
      return 1;
  return 0;
}

/* The backend takes the runner's node out (Kubernetes). The node is the
 * one capacity placed the runner on: what the report names is only
 * compared, since the job's code could send anything. */
static void node_unhealthy(struct hook_reports *h, const struct sched_runner *r,
                           const struct cap_placement *where, json_t *root,
                           json_t *health)
{
  const char *said = json_string_value(json_object_get(root, "node"));
  const char *reason = json_string_value(json_object_get(health, "reason"));
  const char *message = json_string_value(json_object_get(health, "message"));
  int gpus[HOOK_MAX_FAILED_GPUS];
  const char *uuids[HOOK_MAX_FAILED_GPUS];
  struct backend_gpu_report rep;
  json_t *g;
  size_t i, n = 0;
  int rc;

  if (where == NULL) {
    log_warn(HOOK_MOD, "GPU report from a runner that holds no node",
             LOG_S("runner", r->name));
    return;
  }
  if (said != NULL && strcmp(said, where->node) != 0)
    log_warn(HOOK_MOD, "report names another node than the runner's",
             LOG_S("runner", r->name), LOG_S("node", where->node),
             LOG_S("reported", said));
  json_array_foreach(json_object_get(health, "failed_gpus"), i, g)
  {
    const char *uuid = json_string_value(json_object_get(g, "uuid"));
    json_t *idx = json_object_get(g, "index");

    if (n == HOOK_MAX_FAILED_GPUS || !json_is_integer(idx))
      continue;
    gpus[n] = (int)json_integer_value(idx);
    uuids[n++] = uuid != NULL ? uuid : "";
  }
  memset(&rep, 0, sizeof(rep));
  rep.runner = r->name;
  rep.node = where->node;
  rep.reason = reason != NULL ? reason : "";
  rep.message = message != NULL ? message : "";
  rep.gpus = gpus;
  rep.uuids = uuids;
  rep.ngpus = n;
  rc = h->backend->ops->gpu_unhealthy(h->backend, &rep);
  if (rc < 0)
    log_warn(HOOK_MOD, "backend did not take the node out",
             LOG_S("node", where->node), LOG_I("error", rc));
}

/* A failed health check: count it and take the runner's failed GPUs out of
 * capacity, or have the backend take its node out. Only GPUs the runner
 * holds are accepted. */
static void gpu_health_failed(struct hook_reports *h, struct capacity *cap,
                              const struct sched_runner *r, const char *pool,
                              json_t *root, json_t *health)
{
  const char *reason = json_string_value(json_object_get(health, "reason"));
  const char *message = json_string_value(json_object_get(health, "message"));
  json_t *failed = json_object_get(health, "failed_gpus"), *g;
  const struct cap_placement *where =
      r != NULL ? capacity_hold_find(cap, r->name) : NULL;
  size_t i;

  count(h, "runfleet_gpu_health_failures_total", "pool", pool, NULL, NULL, 1);
  log_warn(HOOK_MOD, "GPU health check failed",
           LOG_S("runner", r != NULL ? r->name : "?"),
           LOG_S("reason", reason != NULL ? reason : ""),
           LOG_S("msg", message != NULL ? message : ""));
  if (r != NULL && h->backend != NULL &&
      h->backend->ops->gpu_unhealthy != NULL) {
    node_unhealthy(h, r, where, root, health);
    return;
  }
  json_array_foreach(failed, i, g)
  {
    json_t *idx = json_object_get(g, "index");
    int gpu;

    if (!json_is_integer(idx) || r == NULL)
      continue;
    gpu = (int)json_integer_value(idx);
    if (where == NULL || !placement_has_gpu(where, gpu)) {
      log_warn(HOOK_MOD, "report names a GPU the runner does not hold",
               LOG_S("runner", r->name), LOG_I("gpu", gpu));
      continue;
    }
    if (capacity_gpu_set_health(cap, where->node, gpu, 0) == 0)
      log_warn(HOOK_MOD, "GPU taken out of capacity",
               LOG_S("node", where->node), LOG_I("gpu", gpu),
               LOG_S("runner", r->name));
  }
}

static void started(struct hook_reports *h, struct capacity *cap,
                    const struct sched_runner *r, const char *pool,
                    json_t *root)
{
  json_t *health = json_object_get(root, "gpu_health");
  json_t *cache = json_object_get(root, "git_cache");
  const char *result;

  if (json_is_object(health) && json_is_false(json_object_get(health, "ok")))
    gpu_health_failed(h, cap, r, pool, root, health);
  if (json_is_false(json_object_get(root, "ok"))) {
    /* Pre-job fails a job for its GPUs or, failing that, for disk space. */
    const char *reason =
        json_is_false(json_object_get(health, "ok"))
            ? json_string_value(json_object_get(health, "reason"))
            : "disk";
    count(h, "runfleet_hook_failures_total", "hook", "pre-job", "reason",
          allowed(reason, health_reasons), 1);
  }
  result = json_string_value(json_object_get(cache, "result"));
  if (result != NULL) {
    json_t *saved = json_object_get(cache, "bytes_saved");
    json_t *fetched = json_object_get(cache, "bytes_fetched");
    count(h, "runfleet_git_cache_total", "result",
          allowed(result, cache_results), NULL, NULL, 1);
    if (json_is_integer(saved) && json_integer_value(saved) > 0)
      count(h, "runfleet_git_cache_bytes_saved_total", NULL, NULL, NULL, NULL,
            (double)json_integer_value(saved));
    if (json_is_integer(fetched) && json_integer_value(fetched) > 0)
      count(h, "runfleet_git_cache_bytes_fetched_total", NULL, NULL, NULL, NULL,
            (double)json_integer_value(fetched));
  }
}

static void completed(struct hook_reports *h, const char *pool, json_t *root)
{
  json_t *gpu = json_object_get(root, "gpu");
  json_t *v;

  v = json_object_get(root, "duration_seconds");
  if (json_is_number(v) && json_number_value(v) >= 0)
    observe(h, "runfleet_job_duration_seconds", pool, json_number_value(v));
  if (json_is_object(gpu) &&
      json_integer_value(json_object_get(gpu, "samples")) > 0) {
    v = json_object_get(gpu, "peak_memory_bytes");
    if (json_is_number(v) && json_number_value(v) >= 0)
      observe(h, "runfleet_gpu_memory_peak_bytes", pool, json_number_value(v));
    v = json_object_get(gpu, "mean_utilization");
    if (json_is_number(v) && json_number_value(v) >= 0 &&
        json_number_value(v) <= 1)
      observe(h, "runfleet_gpu_utilization_ratio", pool, json_number_value(v));
  }
}

int hook_handle(struct hook_reports *h, struct scheduler *s,
                struct capacity *cap, const char *kind, const char *auth,
                const char *body, size_t body_len, char *msg, size_t msg_size)
{
  char want[HOOK_TOKEN_SIZE];
  const struct sched_runner *r;
  const char *runner, *pool;
  json_error_t jerr;
  json_t *root;
  int is_started = strcmp(kind, "started") == 0;

  if (!is_started && strcmp(kind, "completed") != 0) {
    snprintf(msg, msg_size, "unknown hook report %s", kind);
    return 404;
  }
  root = json_loadb(body, body_len, 0, &jerr);
  runner = json_string_value(json_object_get(root, "runner"));
  if (root == NULL || runner == NULL) {
    count(h, "runfleet_hook_reports_total", "hook", kind, "result",
          "bad_request", 1);
    snprintf(msg, msg_size, "report needs a JSON object with \"runner\"");
    json_decref(root);
    return 400;
  }
  /* The token binds the report to the runner it names. */
  if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0 ||
      strlen(auth + 7) != HOOK_TOKEN_SIZE - 1 ||
      hook_token(h, runner, want, sizeof(want)) != 0 ||
      CRYPTO_memcmp(want, auth + 7, HOOK_TOKEN_SIZE - 1) != 0) {
    count(h, "runfleet_hook_reports_total", "hook", kind, "result",
          "unauthorized", 1);
    log_warn(HOOK_MOD, "hook report with a bad token", LOG_S("hook", kind));
    snprintf(msg, msg_size, "bad runner token");
    OPENSSL_cleanse(want, sizeof(want));
    json_decref(root);
    return 401;
  }
  OPENSSL_cleanse(want, sizeof(want));
  r = sched_runner_find(s, runner);
  pool = r != NULL && r->pool >= 0 ? sched_pool(s, (size_t)r->pool)->name
                                   : "unknown";
  if (is_started)
    started(h, cap, r, pool, root);
  else
    completed(h, pool, root);
  count(h, "runfleet_hook_reports_total", "hook", kind, "result", "ok", 1);
  log_info(HOOK_MOD, "hook report", LOG_S("hook", kind),
           LOG_S("runner", runner), LOG_S("pool", pool));
  json_decref(root);
  snprintf(msg, msg_size, "ok");
  return 204;
}
