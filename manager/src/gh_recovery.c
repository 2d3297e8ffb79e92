#include "gh_recovery.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gh_call.h"
#include "log.h"
#include "unittest.h"

#define GH_REC_PER_PAGE 100
#define GH_LINK_MAX 4096

/* A request's caller, kept until its answer is decoded. */
struct rec_req {
  union {
    gh_deliveries_cb deliveries;
    gh_done_cb done;
    gh_runs_cb runs;
    gh_jobs_cb jobs;
  } cb;
  void *arg;
};

/* ---- decoders ---- */

static void copy_str(char *out, size_t size, json_t *v)
{
  const char *s = json_string_value(v);

  snprintf(out, size, "%s", s != NULL ? s : "");
}

/* The deliveries list's times are UTC, "2021-05-12T20:33:44Z"; anything
 * unreadable counts as 0 (older than any window). */
static int64_t iso_seconds(json_t *v)
{
  const char *s = json_string_value(v);
  struct tm tm;
  char *end;

  if (s == NULL)
    return 0;
  memset(&tm, 0, sizeof(tm));
  end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == NULL)
    return 0;
  return (int64_t)timegm(&tm);
}

/* Parses body, finds its array (the body itself, or its member) and
 * allocates *out with room for one element of size each per item (NULL
 * for an empty array). On success the caller owns *root and *out. */
static int decode_array(const char *body, size_t len, const char *member,
                        json_t **root, json_t **arr, void **out, size_t size)
{
  *out = NULL;
  *root = json_loadb(body, len, 0, NULL);
  if (*root == NULL)
    return -EBADMSG;
  *arr = member != NULL ? json_object_get(*root, member) : *root;
  if (!json_is_array(*arr)) {
    json_decref(*root);
    *root = NULL;
    return -EBADMSG;
  }
  if (json_array_size(*arr) > 0) {
    *out = calloc(json_array_size(*arr), size);
    if (*out == NULL) {
      json_decref(*root);
      *root = NULL;
      return -ENOMEM;
    }
  }
  return 0;
}

UNITTEST int gh_decode_deliveries(const char *body, size_t len,
                                  struct gh_delivery **out, size_t *n)
{
  json_t *root, *arr, *item;
  struct gh_delivery *d;
  size_t i;
  void *items;
  int rc;

  *n = 0;
  rc = decode_array(body, len, NULL, &root, &arr, &items, sizeof(**out));
  *out = items;
  if (rc != 0)
    return rc;
  json_array_foreach(arr, i, item)
  {
    d = &(*out)[*n];
    d->id = (int64_t)json_integer_value(json_object_get(item, "id"));
    if (d->id <= 0)
      continue;
    copy_str(d->guid, sizeof(d->guid), json_object_get(item, "guid"));
    d->delivered_at = iso_seconds(json_object_get(item, "delivered_at"));
    d->redelivery = json_is_true(json_object_get(item, "redelivery"));
    d->status_code =
        (int)json_integer_value(json_object_get(item, "status_code"));
    copy_str(d->event, sizeof(d->event), json_object_get(item, "event"));
    copy_str(d->action, sizeof(d->action), json_object_get(item, "action"));
    d->installation_id =
        (int64_t)json_integer_value(json_object_get(item, "installation_id"));
    (*n)++;
  }
  json_decref(root);
  return 0;
}

UNITTEST int gh_decode_runs(const char *body, size_t len, struct gh_run **out,
                            size_t *n)
{
  json_t *root, *arr, *item;
  struct gh_run *r;
  size_t i;
  void *items;
  int rc;

  *n = 0;
  rc = decode_array(body, len, "workflow_runs", &root, &arr, &items,
                    sizeof(**out));
  *out = items;
  if (rc != 0)
    return rc;
  json_array_foreach(arr, i, item)
  {
    r = &(*out)[*n];
    r->id = (int64_t)json_integer_value(json_object_get(item, "id"));
    if (r->id <= 0)
      continue;
    copy_str(r->repo, sizeof(r->repo),
             json_object_get(json_object_get(item, "repository"), "full_name"));
    copy_str(r->status, sizeof(r->status), json_object_get(item, "status"));
    (*n)++;
  }
  json_decref(root);
  return 0;
}

void gh_jobs_free(struct gh_job *jobs, size_t n)
{
  size_t i, k;

  for (i = 0; jobs != NULL && i < n; i++)
    for (k = 0; k < jobs[i].nlabels; k++)
      free(jobs[i].labels[k]);
  free(jobs);
}

static int job_labels(struct gh_job *j, json_t *labels)
{
  json_t *v;
  size_t i;

  json_array_foreach(labels, i, v)
  {
    if (!json_is_string(v))
      continue;
    if (j->nlabels == CFG_MAX_LABELS) {
      j->too_many_labels = 1;
      break;
    }
    j->labels[j->nlabels] = strdup(json_string_value(v));
    if (j->labels[j->nlabels] == NULL)
      return -ENOMEM;
    j->nlabels++;
  }
  return 0;
}

UNITTEST int gh_decode_jobs(const char *body, size_t len, struct gh_job **out,
                            size_t *n)
{
  json_t *root, *arr, *item;
  struct gh_job *j;
  size_t i;
  void *items;
  int rc;

  *n = 0;
  rc = decode_array(body, len, "jobs", &root, &arr, &items, sizeof(**out));
  *out = items;
  if (rc != 0)
    return rc;
  json_array_foreach(arr, i, item)
  {
    j = &(*out)[*n];
    memset(j, 0, sizeof(*j));
    j->id = (int64_t)json_integer_value(json_object_get(item, "id"));
    if (j->id <= 0)
      continue;
    j->run_id = (int64_t)json_integer_value(json_object_get(item, "run_id"));
    copy_str(j->status, sizeof(j->status), json_object_get(item, "status"));
    copy_str(j->name, sizeof(j->name), json_object_get(item, "name"));
    (*n)++;
    if (job_labels(j, json_object_get(item, "labels")) != 0) {
      json_decref(root);
      gh_jobs_free(*out, *n);
      *out = NULL;
      *n = 0;
      return -ENOMEM;
    }
  }
  json_decref(root);
  return 0;
}

UNITTEST int gh_link_next(const char *link, char *out, size_t size)
{
  const char *p = link, *lt, *gt, *end;
  size_t n;

  while (p != NULL && (lt = strchr(p, '<')) != NULL) {
    gt = strchr(lt, '>');
    if (gt == NULL)
      return -1;
    end = strchr(gt, ',');
    if (end == NULL)
      end = gt + strlen(gt);
    /* The parameters of this link lie between '>' and the next ','. */
    {
      const char *rel = strstr(gt, "rel=\"next\"");
      if (rel != NULL && rel < end) {
        n = (size_t)(gt - lt - 1);
        if (n + 1 > size)
          return -1;
        memcpy(out, lt + 1, n);
        out[n] = '\0';
        return 0;
      }
    }
    p = *end != '\0' ? end + 1 : NULL;
  }
  return -1;
}

UNITTEST int gh_query_param(const char *url, const char *name, char *out,
                            size_t size)
{
  const char *q = strchr(url, '?');
  size_t nlen = strlen(name), n;

  while (q != NULL) {
    q++;
    if (strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
      q += nlen + 1;
      n = strcspn(q, "&#");
      if (n == 0 || n + 1 > size ||
          strspn(q, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789%._~=-") < n)
        return -1;
      memcpy(out, q, n);
      out[n] = '\0';
      return 0;
    }
    q = strchr(q, '&');
  }
  return -1;
}

/* ---- requests ---- */

static int link_more(const struct http_client_response *resp, char *next,
                     size_t size)
{
  char link[GH_LINK_MAX];

  if (resp == NULL || http_client_header(resp, "link", link, sizeof(link)) != 0)
    return 0;
  return gh_link_next(link, next, size) == 0;
}

static struct rec_req *req_new(void *arg)
{
  struct rec_req *r = calloc(1, sizeof(*r));

  if (r != NULL)
    r->arg = arg;
  return r;
}

static int req_start(struct gh_client *gh, struct rec_req *r, enum gh_auth auth,
                     const char *endpoint, const char *method, const char *path,
                     gh_raw_cb cb)
{
  int rc = gh_raw_request(gh, auth, endpoint, method, path, cb, r);

  if (rc != 0)
    free(r);
  return rc;
}

static void deliveries_cb(void *arg, int status, int http_status,
                          const struct http_client_response *resp)
{
  struct rec_req *r = arg;
  struct gh_delivery *items = NULL;
  char next[GH_LINK_MAX], cursor[GH_CURSOR_MAX];
  int have_next = 0;
  size_t n = 0;

  (void)http_status;
  if (status == 0) {
    status = gh_decode_deliveries(resp->body, resp->body_len, &items, &n);
    if (status == -EBADMSG)
      log_error("github", "bad deliveries list response", LOG_NONE);
    have_next = link_more(resp, next, sizeof(next)) &&
                gh_query_param(next, "cursor", cursor, sizeof(cursor)) == 0;
  }
  r->cb.deliveries(r->arg, status, items, n, have_next ? cursor : NULL);
  free(items);
  free(r);
}

int gh_list_deliveries(struct gh_client *gh, const char *cursor,
                       gh_deliveries_cb cb, void *arg)
{
  char path[GH_CURSOR_MAX + 64];
  struct rec_req *r;

  if (cb == NULL ||
      (cursor != NULL &&
       (cursor[0] == '\0' || strlen(cursor) >= GH_CURSOR_MAX ||
        strspn(cursor, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789%._~=-") != strlen(cursor))))
    return -EINVAL;
  if (!gh_app_mode(gh))
    return -ENOTSUP;
  r = req_new(arg);
  if (r == NULL)
    return -ENOMEM;
  r->cb.deliveries = cb;
  snprintf(path, sizeof(path), "/app/hook/deliveries?per_page=%d%s%s",
           GH_REC_PER_PAGE, cursor != NULL ? "&cursor=" : "",
           cursor != NULL ? cursor : "");
  return req_start(gh, r, GH_AUTH_APP, "list_deliveries", "GET", path,
                   deliveries_cb);
}

static void redeliver_cb(void *arg, int status, int http_status,
                         const struct http_client_response *resp)
{
  struct rec_req *r = arg;

  (void)resp;
  r->cb.done(r->arg, status, http_status);
  free(r);
}

int gh_redeliver(struct gh_client *gh, int64_t id, gh_done_cb cb, void *arg)
{
  char path[96];
  struct rec_req *r;

  if (cb == NULL || id <= 0)
    return -EINVAL;
  if (!gh_app_mode(gh))
    return -ENOTSUP;
  r = req_new(arg);
  if (r == NULL)
    return -ENOMEM;
  r->cb.done = cb;
  snprintf(path, sizeof(path), "/app/hook/deliveries/%" PRId64 "/attempts", id);
  return req_start(gh, r, GH_AUTH_APP, "redeliver", "POST", path, redeliver_cb);
}

/* "owner/name" with both parts of [A-Za-z0-9._-]: nothing to encode. */
static int repo_ok(const char *repo)
{
  const char *slash;
  size_t n;

  if (repo == NULL || (slash = strchr(repo, '/')) == NULL || slash == repo ||
      slash[1] == '\0' || strchr(slash + 1, '/') != NULL || strlen(repo) >= 200)
    return 0;
  n = strspn(repo, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-/");
  return n == strlen(repo);
}

static void runs_cb(void *arg, int status, int http_status,
                    const struct http_client_response *resp)
{
  struct rec_req *r = arg;
  struct gh_run *runs = NULL;
  char next[GH_LINK_MAX];
  size_t n = 0;
  int more = 0;

  (void)http_status;
  if (status == 0) {
    status = gh_decode_runs(resp->body, resp->body_len, &runs, &n);
    if (status == -EBADMSG)
      log_error("github", "bad workflow runs response", LOG_NONE);
    more = link_more(resp, next, sizeof(next));
  }
  r->cb.runs(r->arg, status, runs, n, more);
  free(runs);
  free(r);
}

int gh_list_queued_runs(struct gh_client *gh, const char *repo, unsigned page,
                        gh_runs_cb cb, void *arg)
{
  char path[320];
  struct rec_req *r;

  if (cb == NULL || !repo_ok(repo) || page == 0)
    return -EINVAL;
  r = req_new(arg);
  if (r == NULL)
    return -ENOMEM;
  r->cb.runs = cb;
  snprintf(path, sizeof(path),
           "/repos/%s/actions/runs?status=queued&per_page=%d&page=%u", repo,
           GH_REC_PER_PAGE, page);
  return req_start(gh, r, GH_AUTH_INSTALLATION, "list_runs", "GET", path,
                   runs_cb);
}

static void jobs_cb(void *arg, int status, int http_status,
                    const struct http_client_response *resp)
{
  struct rec_req *r = arg;
  struct gh_job *jobs = NULL;
  char next[GH_LINK_MAX];
  size_t n = 0;
  int more = 0;

  (void)http_status;
  if (status == 0) {
    status = gh_decode_jobs(resp->body, resp->body_len, &jobs, &n);
    if (status == -EBADMSG)
      log_error("github", "bad run jobs response", LOG_NONE);
    more = link_more(resp, next, sizeof(next));
  }
  r->cb.jobs(r->arg, status, jobs, n, more);
  gh_jobs_free(jobs, n);
  free(r);
}

int gh_list_run_jobs(struct gh_client *gh, const char *repo, int64_t run_id,
                     unsigned page, gh_jobs_cb cb, void *arg)
{
  char path[352];
  struct rec_req *r;

  if (cb == NULL || !repo_ok(repo) || run_id <= 0 || page == 0)
    return -EINVAL;
  r = req_new(arg);
  if (r == NULL)
    return -ENOMEM;
  r->cb.jobs = cb;
  snprintf(path, sizeof(path),
           "/repos/%s/actions/runs/%" PRId64 "/jobs?per_page=%d&page=%u", repo,
           run_id, GH_REC_PER_PAGE, page);
  return req_start(gh, r, GH_AUTH_INSTALLATION, "list_run_jobs", "GET", path,
                   jobs_cb);
}
