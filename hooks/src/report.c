#include "report.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hook_log.h"

#define REPORT_TRY_TIMEOUT_MS 5000u
#define REPORT_RETRIES 2
#define REPORT_BACKOFF_MS 500u /* doubles after each failed try */
#define REPORT_URL_MAX 2048
#define REPORT_AUTH_MAX 4096

static json_t *str_or_null(const char *s)
{
  return s != NULL ? json_string(s) : json_null();
}

/* The fields both reports start with. */
static json_t *report_common(const struct hook_config *cfg)
{
  return json_pack("{s:o, s:o, s:s, s:o, s:I, s:o}", "runner",
                   str_or_null(cfg->runner_name), "pool",
                   str_or_null(cfg->pool), "node", cfg->node, "repository",
                   str_or_null(cfg->repository), "run_id",
                   (json_int_t)cfg->run_id, "job", str_or_null(cfg->job));
}

static json_t *health_json(const struct gpu_health *h)
{
  json_t *failed, *obj;
  size_t i;

  failed = json_array();
  if (failed == NULL)
    return NULL;
  for (i = 0; i < h->nfailed; i++) {
    json_t *g = json_pack("{s:i, s:s, s:s}", "index", h->failed[i].index,
                          "uuid", h->failed[i].uuid, "reason",
                          gpu_reason_name(h->failed[i].reason));

    if (g == NULL || json_array_append_new(failed, g) < 0) {
      json_decref(failed);
      return NULL;
    }
  }
  if (h->ok)
    obj = json_pack("{s:b, s:b, s:n, s:s, s:o}", "checked", h->checked, "ok", 1,
                    "reason", "message", "", "failed_gpus", failed);
  else
    obj = json_pack("{s:b, s:b, s:s, s:s, s:o}", "checked", h->checked, "ok", 0,
                    "reason", gpu_reason_name(h->reason), "message", h->message,
                    "failed_gpus", failed);
  return obj;
}

json_t *report_started_json(const struct hook_config *cfg,
                            const struct report_started *r)
{
  json_t *root, *health, *git;

  root = report_common(cfg);
  if (root == NULL)
    return NULL;
  health = health_json(r->health);
  git = json_pack("{s:s, s:I, s:I, s:f}", "result",
                  gcache_outcome_name(r->git->outcome), "bytes_fetched",
                  (json_int_t)r->git->bytes_fetched, "bytes_saved",
                  (json_int_t)r->git->bytes_saved, "seconds", r->git->seconds);
  if (health == NULL || git == NULL ||
      json_object_set_new(root, "gpu_health", health) < 0) {
    json_decref(health);
    goto fail;
  }
  if (r->git->outcome == GCACHE_ERROR &&
      json_object_set_new(git, "message", json_string(r->git->message)) < 0)
    goto fail;
  if (json_object_set_new(root, "git_cache", git) < 0) {
    git = NULL;
    goto fail;
  }
  git = NULL;
  if (json_object_set_new(root, "disk_free_bytes",
                          json_integer((json_int_t)r->disk_free_bytes)) < 0 ||
      json_object_set_new(root, "ok", json_boolean(r->ok)) < 0)
    goto fail;
  return root;
fail:
  json_decref(git);
  json_decref(root);
  return NULL;
}

json_t *report_completed_json(const struct hook_config *cfg,
                              const struct report_completed *r)
{
  json_t *root, *gpu;

  root = report_common(cfg);
  if (root == NULL)
    return NULL;
  gpu = json_pack("{s:I, s:I, s:f}", "samples", (json_int_t)r->gpu_samples,
                  "peak_memory_bytes", (json_int_t)r->gpu_peak_memory_bytes,
                  "mean_utilization", r->gpu_mean_utilization);
  if (gpu == NULL || json_object_set_new(root, "gpu", gpu) < 0 ||
      json_object_set_new(root, "duration_seconds",
                          json_real(r->duration_seconds)) < 0 ||
      json_object_set_new(root, "disk_used_bytes",
                          json_integer((json_int_t)r->disk_used_bytes)) < 0 ||
      json_object_set_new(root, "processes_killed",
                          json_integer(r->processes_killed)) < 0 ||
      json_object_set_new(root, "status", json_string(r->status)) < 0) {
    json_decref(root);
    return NULL;
  }
  return root;
}

static size_t report_discard_cb(char *ptr, size_t size, size_t nmemb,
                                void *userdata)
{
  (void)ptr;
  (void)userdata;
  return size * nmemb;
}

static long long report_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void report_sleep_ms(unsigned ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* Frees a header list, wiping each header first: one holds the token. */
static void report_free_headers(struct curl_slist *h)
{
  struct curl_slist *p;

  for (p = h; p != NULL; p = p->next)
    if (p->data != NULL)
      explicit_bzero(p->data, strlen(p->data));
  curl_slist_free_all(h);
}

/* One POST; returns the HTTP status, or -1 with err filled in. */
static long report_try(CURL *curl, long long timeout_ms, char *err)
{
  CURLcode cc;
  long status = 0;

  err[0] = '\0';
  if (curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK)
    return -1;
  cc = curl_easy_perform(curl);
  if (cc != CURLE_OK) {
    if (err[0] == '\0')
      snprintf(err, CURL_ERROR_SIZE, "%s", curl_easy_strerror(cc));
    return -1;
  }
  if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
    return -1;
  return status;
}

static int report_setup(CURL *curl, const struct hook_config *cfg,
                        const char *url, const char *body,
                        struct curl_slist **headers, char *err)
{
  char auth[REPORT_AUTH_MAX];
  struct curl_slist *h = NULL, *next;
  int rc = -ENOMEM;

  next = curl_slist_append(h, "Content-Type: application/json");
  if (next == NULL)
    goto out;
  h = next;
  if (cfg->token != NULL) {
    if (snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cfg->token) >=
        (int)sizeof(auth)) {
      rc = -ENAMETOOLONG;
      goto out;
    }
    next = curl_slist_append(h, auth);
    if (next == NULL)
      goto out;
    h = next;
  }
  if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, err) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, report_discard_cb) !=
          CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                       (long)REPORT_TRY_TIMEOUT_MS) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_USERAGENT, "runfleet-hook") != CURLE_OK) {
    rc = -EINVAL;
    goto out;
  }
  *headers = h;
  h = NULL;
  rc = 0;
out:
  /* The header text holds the token. */
  explicit_bzero(auth, sizeof(auth));
  report_free_headers(h);
  return rc;
}

int report_post(const struct hook_config *cfg, const char *path,
                const json_t *body, unsigned timeout_ms)
{
  char url[REPORT_URL_MAX], err[CURL_ERROR_SIZE] = "";
  struct curl_slist *headers = NULL;
  long long deadline = report_now_ms() + timeout_ms, left;
  unsigned backoff = REPORT_BACKOFF_MS;
  char *text = NULL;
  CURL *curl = NULL;
  long status = -1;
  int attempt, rc;
  size_t len;

  if (cfg->url == NULL) {
    hlog_info("RUNFLEET_URL is not set, not reporting %s", path);
    return -ENOENT;
  }
  len = strlen(cfg->url);
  while (len > 0 && cfg->url[len - 1] == '/')
    len--;
  if (snprintf(url, sizeof(url), "%.*s%s", (int)len, cfg->url, path) >=
      (int)sizeof(url)) {
    hlog_warning("runfleetd URL too long, not reporting %s", path);
    return -ENAMETOOLONG;
  }
  text = json_dumps(body, JSON_COMPACT);
  curl = curl_easy_init();
  if (text == NULL || curl == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  rc = report_setup(curl, cfg, url, text, &headers, err);
  if (rc < 0)
    goto fail;
  for (attempt = 0; attempt <= REPORT_RETRIES; attempt++) {
    left = deadline - report_now_ms();
    if (left <= 0)
      break;
    status = report_try(
        curl,
        left < REPORT_TRY_TIMEOUT_MS ? left : (long long)REPORT_TRY_TIMEOUT_MS,
        err);
    if (status >= 200 && status < 300) {
      rc = 0;
      goto out;
    }
    /* A 4xx will not get better by asking again. */
    if (status >= 400 && status < 500)
      break;
    if (attempt < REPORT_RETRIES &&
        deadline - report_now_ms() > (long long)backoff) {
      report_sleep_ms(backoff);
      backoff *= 2;
    }
  }
  rc = -EIO;
fail:
  if (status > 0)
    hlog_warning("runfleetd answered %ld to %s; the report is lost", status,
                 path);
  else
    hlog_warning("cannot report %s to runfleetd: %s", path,
                 rc == -EIO && err[0] != '\0' ? err : strerror(-rc));
out:
  if (curl != NULL)
    curl_easy_cleanup(curl);
  report_free_headers(headers);
  free(text);
  return rc;
}
