#include "github.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "gh_call.h"
#include "gh_jwt.h"
#include "log.h"
#include "secret.h"
#include "unittest.h"

#define GH_DEFAULT_API_URL "https://api.github.com"
#define GH_PACE_BURST 10.0
#define GH_MAX_ATTEMPTS 5
#define GH_BACKOFF_BASE_MS 1000
#define GH_BACKOFF_MAX_MS 60000
#define GH_SECONDARY_WAIT_MS 60000
#define GH_HOLD_MARGIN_MS 250
#define GH_MAX_WAIT_MS 3600000
#define GH_TOKEN_MARGIN_S 300
#define GH_REQUEST_TIMEOUT_MS 30000
#define GH_MAX_KEY_BYTES (64u << 10)
#define GH_MAX_PAT_BYTES 4096
#define GH_MAX_PAGES 100
#define GH_PER_PAGE 100

#define REQUESTS_METRIC "runfleet_github_requests_total"
#define REMAINING_METRIC "runfleet_github_ratelimit_remaining"
#define LIMIT_METRIC "runfleet_github_ratelimit_limit"
#define RESET_METRIC "runfleet_github_ratelimit_reset_timestamp_seconds"
#define HOLD_METRIC "runfleet_github_hold_seconds"
#define LIMITED_METRIC "runfleet_github_secondary_limited_total"
#define WAITING_METRIC "runfleet_github_calls_waiting"
/* Recovery calls in flight at once: GitHub's secondary limits count
 * concurrent requests too, and recovery never needs more than one. */
#define GH_RECOVERY_CONCURRENCY 1
#define GH_RECOVERY_BUCKET_KEEP (GH_PACE_BURST / 2)

/* GH_OP_RECOVERY: a request of gh_call.h's call class for recovery, its
 * endpoint named by the caller. */
enum gh_op { GH_OP_TOKEN, GH_OP_JIT, GH_OP_DELETE, GH_OP_LIST, GH_OP_RECOVERY };

static const char *const op_names[] = {
    "access_token", "jitconfig", "delete_runner", "list_runners", "recovery"};

enum gh_call_state {
  CALL_NEW,
  CALL_QUEUED,     /* in the paced queue, or the recovery queue */
  CALL_WAIT_TOKEN, /* waiting for the shared token refresh */
  CALL_WAIT_TIMER, /* backoff, Retry-After or a deferred failure */
  CALL_IN_FLIGHT,
  CALL_DONE /* callback ran; the timer is closing */
};

static const char *const state_names[] = {
    "new", "queued", "wait_token", "wait_timer", "in_flight", "done"};

/* One API operation from the caller's request to its callback, across
 * retries and pages. Freed in its timer's close callback. */
struct gh_call {
  struct gh_client *gh;
  enum gh_op op;
  enum gh_call_state state;
  uv_timer_t timer;
  const char *method;
  char path[512];
  char *body;
  size_t body_len;
  unsigned attempts;
  int auth_retried;
  uint64_t token_gen; /* the token generation the last attempt used */
  int fail_status;    /* deferred failure, delivered from the timer */
  int fail_http;
  union {
    gh_jit_cb jit;
    gh_done_cb done;
    gh_runners_cb runners;
    gh_raw_cb raw;
  } cb;
  void *arg;
  struct gh_runner *runners;
  size_t nrunners, runners_cap;
  unsigned page;
  char name_filter[128];       /* GH_OP_LIST: only runners of this name */
  struct gh_call *prev, *next; /* every call */
  struct gh_call *qnext;       /* paced queue or recovery queue */
  const char *endpoint;        /* GH_OP_RECOVERY: the metric label */
  enum gh_auth auth;           /* GH_OP_RECOVERY: token or App JWT */
};

struct gh_queue {
  struct gh_call *head, *tail;
};

struct gh_client {
  uv_loop_t *loop;
  struct http_client *http;
  const struct cfg_github *cfg;
  struct metrics *m;
  char api_url[256];
  char scope[320]; /* "/orgs/{org}" or "/repos/{owner}/{repo}" */
  EVP_PKEY *key;   /* App mode */
  char *pat;       /* PAT mode */
  char *token;
  int64_t token_expires;
  uint64_t token_gen;
  struct gh_call *token_call; /* the one refresh in flight */
  uv_timer_t pace_timer;
  double bucket;
  double per_ms;
  uint64_t bucket_ms;
  uint64_t hold_all_until; /* primary limit exhausted: every call waits */
  uint64_t hold_mut_until; /* Retry-After: the paced queue waits */
  uint64_t hold_rec_until; /* Retry-After on a recovery call */
  struct gh_queue q;       /* paced mutating calls of runners */
  struct gh_queue rq;      /* recovery calls, let out only when idle */
  long reserve;            /* recovery waits at or below this remaining */
  long limit;              /* x-ratelimit-limit, -1 before any */
  int64_t reset_unix;      /* x-ratelimit-reset, 0 before any */
  long app_remaining;      /* the App's own budget (JWT calls), -1 unknown */
  int64_t app_reset_unix;
  uint64_t secondary_limited;
  uint64_t recovery_requests;
  unsigned rec_inflight;
  struct gh_call *calls, *calls_tail;
  int pumping;
  long remaining;
  uint64_t requests;
  uint64_t backoff_ms;
  uint64_t rand_state;
  unsigned inflight;
  unsigned nhandles;
  int closing;
  int close_notified;
  void (*close_cb)(void *arg);
  void *close_arg;
};

static void call_dispatch(struct gh_call *call);
static const char *call_name(const struct gh_call *call);
static void call_complete(struct gh_call *call, int status, int http_status);
static void pump(struct gh_client *gh);

/* ---- client setup ---- */

static int name_ok(const char *s, int slashes)
{
  int seen = 0;

  if (s == NULL || *s == '\0' || *s == '/')
    return 0;
  for (; *s != '\0'; s++) {
    if (*s == '/') {
      if (++seen > slashes || s[1] == '\0')
        return 0;
    } else if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                 (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' ||
                 *s == '.')) {
      return 0;
    }
  }
  return seen == slashes;
}

static int setup_scope(struct gh_client *gh, const struct cfg_github *cfg)
{
  const char *url = cfg->api_url ? cfg->api_url : GH_DEFAULT_API_URL;
  size_t n = strlen(url);

  while (n > 0 && url[n - 1] == '/')
    n--;
  if (n == 0 || n >= sizeof(gh->api_url)) {
    log_error("github", "bad api_url", LOG_NONE);
    return -1;
  }
  memcpy(gh->api_url, url, n);
  gh->api_url[n] = '\0';
  if ((cfg->org != NULL) == (cfg->repo != NULL)) {
    log_error("github", "exactly one of org and repo is needed", LOG_NONE);
    return -1;
  }
  if (cfg->org != NULL && name_ok(cfg->org, 0)) {
    snprintf(gh->scope, sizeof(gh->scope), "/orgs/%s", cfg->org);
  } else if (cfg->repo != NULL && name_ok(cfg->repo, 1) &&
             strlen(cfg->repo) < sizeof(gh->scope) - 8) {
    snprintf(gh->scope, sizeof(gh->scope), "/repos/%s", cfg->repo);
  } else {
    log_error("github", "bad org or repo name", LOG_NONE);
    return -1;
  }
  return 0;
}

static int setup_auth(struct gh_client *gh, const struct cfg_github *cfg)
{
  size_t len = 0;
  char *buf;
  int rc;

  if (cfg->app_private_key_file != NULL) {
    if (cfg->app_id <= 0 || cfg->installation_id <= 0) {
      log_error("github", "app_id and installation_id are needed", LOG_NONE);
      return -1;
    }
    rc = secret_read_file(cfg->app_private_key_file, GH_MAX_KEY_BYTES, &buf,
                          &len);
    if (rc != 0) {
      log_error("github", "cannot read secret file",
                LOG_S("path", cfg->app_private_key_file),
                LOG_S("error", strerror(-rc)));
      return -1;
    }
    gh->key = gh_key_from_pem(buf, len);
    secret_wipe_free(buf, len);
    if (gh->key == NULL) {
      log_error("github", "app private key is not an RSA PEM key",
                LOG_S("path", cfg->app_private_key_file));
      return -1;
    }
    return 0;
  }
  if (cfg->pat_file == NULL) {
    log_error("github", "neither an App key nor a PAT is configured", LOG_NONE);
    return -1;
  }
  rc = secret_read_file(cfg->pat_file, GH_MAX_PAT_BYTES, &buf, &len);
  if (rc != 0 && rc != -EINVAL) {
    log_error("github", "cannot read secret file", LOG_S("path", cfg->pat_file),
              LOG_S("error", strerror(-rc)));
    return -1;
  }
  /* A token is one word: blanks after it are dropped, any inside refused. */
  while (rc == 0 && len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    buf[--len] = '\0';
  if (rc != 0 || len == 0 || strpbrk(buf, "\r\n") != NULL) {
    log_error("github", "PAT file must hold one token",
              LOG_S("path", cfg->pat_file));
    secret_wipe_free(buf, len);
    return -1;
  }
  gh->pat = buf;
  return 0;
}

static void declare_metrics(struct gh_client *gh)
{
  if (gh->m == NULL)
    return;
  if (metrics_declare(gh->m, REQUESTS_METRIC, METRICS_COUNTER,
                      "GitHub API requests by operation and HTTP status.", NULL,
                      0) != 0 ||
      metrics_declare(gh->m, REMAINING_METRIC, METRICS_GAUGE,
                      "Last x-ratelimit-remaining seen from GitHub.", NULL,
                      0) != 0 ||
      metrics_declare(gh->m, LIMIT_METRIC, METRICS_GAUGE,
                      "Last x-ratelimit-limit seen from GitHub.", NULL,
                      0) != 0 ||
      metrics_declare(gh->m, RESET_METRIC, METRICS_GAUGE,
                      "When GitHub's primary rate limit resets (Unix time).",
                      NULL, 0) != 0 ||
      metrics_declare(gh->m, HOLD_METRIC, METRICS_GAUGE,
                      "Seconds calls still wait for a Retry-After or the "
                      "primary limit, by what is held.",
                      NULL, 0) != 0 ||
      metrics_declare(gh->m, LIMITED_METRIC, METRICS_COUNTER,
                      "Answers that said a secondary rate limit was hit.", NULL,
                      0) != 0 ||
      metrics_declare(gh->m, WAITING_METRIC, METRICS_GAUGE,
                      "GitHub calls waiting to be sent, by call class.", NULL,
                      0) != 0)
    log_warn("github", "cannot declare metrics", LOG_NONE);
}

void gh_set_cfg(struct gh_client *gh, const struct cfg_github *cfg)
{
  gh->cfg = cfg;
}

struct gh_client *gh_new(uv_loop_t *loop, struct http_client *http,
                         const struct cfg_github *cfg, struct metrics *m)
{
  struct gh_client *gh;
  unsigned mpm;

  gh = calloc(1, sizeof(*gh));
  if (gh == NULL)
    return NULL;
  gh->loop = loop;
  gh->http = http;
  gh->cfg = cfg;
  gh->m = m;
  gh->remaining = -1;
  gh->limit = -1;
  gh->app_remaining = -1;
  gh->backoff_ms = GH_BACKOFF_BASE_MS;
  gh->rand_state = uv_hrtime() | 1;
  mpm = cfg->mutations_per_minute ? cfg->mutations_per_minute
                                  : CFG_DEFAULT_MUTATIONS_PER_MINUTE;
  gh->per_ms = mpm / 60000.0;
  gh->bucket = GH_PACE_BURST;
  gh->bucket_ms = uv_now(loop);
  if (setup_scope(gh, cfg) != 0 || setup_auth(gh, cfg) != 0)
    goto fail;
  if (uv_timer_init(loop, &gh->pace_timer) != 0)
    goto fail;
  gh->pace_timer.data = gh;
  gh->nhandles = 1;
  declare_metrics(gh);
  return gh;

fail:
  EVP_PKEY_free(gh->key);
  secret_free_str(gh->pat);
  free(gh);
  return NULL;
}

#ifdef RUNFLEET_UNITTEST
void gh_set_backoff_ms(struct gh_client *gh, uint64_t base_ms)
{
  gh->backoff_ms = base_ms;
}
#endif

long gh_ratelimit_remaining(const struct gh_client *gh)
{
  return gh->remaining;
}

uint64_t gh_requests_total(const struct gh_client *gh)
{
  return gh->requests;
}

/* ---- calls ---- */

static int op_mutating(enum gh_op op)
{
  return op == GH_OP_JIT || op == GH_OP_DELETE;
}

static const char *call_name(const struct gh_call *call)
{
  return call->op == GH_OP_RECOVERY ? call->endpoint : op_names[call->op];
}

static void call_set_state(struct gh_call *call, enum gh_call_state state)
{
  log_debug("github", "call state", LOG_S("op", call_name(call)),
            LOG_S("from", state_names[call->state]),
            LOG_S("to", state_names[state]));
  call->state = state;
}

static void maybe_notify_closed(struct gh_client *gh)
{
  if (gh->closing && !gh->close_notified && gh->nhandles == 0 &&
      gh->inflight == 0) {
    gh->close_notified = 1;
    if (gh->close_cb != NULL)
      gh->close_cb(gh->close_arg);
  }
}

static void call_close_cb(uv_handle_t *handle)
{
  struct gh_call *call = handle->data;
  struct gh_client *gh = call->gh;

  if (call->prev != NULL)
    call->prev->next = call->next;
  else
    gh->calls = call->next;
  if (call->next != NULL)
    call->next->prev = call->prev;
  else
    gh->calls_tail = call->prev;
  free(call->body);
  free(call->runners);
  free(call);
  gh->nhandles--;
  maybe_notify_closed(gh);
}

static void call_timer_cb(uv_timer_t *timer);

static struct gh_call *call_new(struct gh_client *gh, enum gh_op op,
                                const char *method)
{
  struct gh_call *call = calloc(1, sizeof(*call));

  if (call == NULL)
    return NULL;
  if (uv_timer_init(gh->loop, &call->timer) != 0) {
    free(call);
    return NULL;
  }
  gh->nhandles++;
  call->timer.data = call;
  call->gh = gh;
  call->op = op;
  call->method = method;
  call->prev = gh->calls_tail;
  if (gh->calls_tail != NULL)
    gh->calls_tail->next = call;
  else
    gh->calls = call;
  gh->calls_tail = call;
  return call;
}

/* Frees a call that never started; its callback is not run. */
static void call_discard(struct gh_call *call)
{
  call->state = CALL_DONE;
  uv_close((uv_handle_t *)&call->timer, call_close_cb);
}

static struct gh_queue *call_queue(struct gh_client *gh,
                                   const struct gh_call *call)
{
  return call->op == GH_OP_RECOVERY ? &gh->rq : &gh->q;
}

static void queue_push(struct gh_client *gh, struct gh_call *call, int front)
{
  struct gh_queue *q = call_queue(gh, call);

  call_set_state(call, CALL_QUEUED);
  call->qnext = NULL;
  if (q->head == NULL) {
    q->head = q->tail = call;
  } else if (front) {
    call->qnext = q->head;
    q->head = call;
  } else {
    q->tail->qnext = call;
    q->tail = call;
  }
}

static void queue_remove(struct gh_client *gh, struct gh_call *call)
{
  struct gh_queue *q = call_queue(gh, call);
  struct gh_call **pp = &q->head;

  q->tail = NULL;
  while (*pp != NULL) {
    if (*pp == call)
      *pp = call->qnext;
    else {
      q->tail = *pp;
      pp = &(*pp)->qnext;
    }
  }
  call->qnext = NULL;
}

static void call_wait(struct gh_call *call, uint64_t delay_ms)
{
  int rc;

  call_set_state(call, CALL_WAIT_TIMER);
  rc = uv_timer_start(&call->timer, call_timer_cb, delay_ms, 0);
  if (rc != 0) {
    log_error("github", "uv_timer_start failed",
              LOG_S("error", uv_strerror(rc)));
    call_complete(call, -EIO, 0);
  }
}

/* Fails a call from the loop, so no callback runs inside the API call
 * that started it. */
static void call_fail_later(struct gh_call *call, int status, int http_status)
{
  call->fail_status = status;
  call->fail_http = http_status;
  call_wait(call, 0);
}

static void call_timer_cb(uv_timer_t *timer)
{
  struct gh_call *call = timer->data;
  struct gh_client *gh = call->gh;

  if (call->fail_status != 0) {
    call_complete(call, call->fail_status, call->fail_http);
    return;
  }
  if (op_mutating(call->op) || call->op == GH_OP_RECOVERY) {
    queue_push(gh, call, 1);
    pump(gh);
  } else {
    call_dispatch(call);
    pump(gh); /* a runner call that gave up may let recovery go */
  }
}

static uint64_t rand_next(struct gh_client *gh)
{
  uint64_t x = gh->rand_state;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  gh->rand_state = x;
  return x;
}

static uint64_t backoff_delay(struct gh_client *gh, unsigned attempts)
{
  uint64_t d = gh->backoff_ms;
  unsigned i;

  for (i = 1; i < attempts && d < GH_BACKOFF_MAX_MS; i++)
    d *= 2;
  if (d > GH_BACKOFF_MAX_MS)
    d = GH_BACKOFF_MAX_MS;
  /* Half fixed, half jitter, so retries of many callers spread out. */
  return d / 2 + (d > 1 ? rand_next(gh) % (d / 2 + 1) : 0);
}

static int status_error(long http_status)
{
  switch (http_status) {
  case 0:
    return -EIO;
  case 401:
  case 403:
    return -EACCES;
  case 404:
    return -ENOENT;
  case 409:
  case 422:
    return -EINVAL;
  case 429:
    return -EAGAIN;
  default:
    return -EPROTO;
  }
}

/* Retries after delay_ms unless the attempts are spent. */
static void call_retry(struct gh_call *call, uint64_t delay_ms, int status,
                       long http_status)
{
  if (call->gh->closing) {
    call_complete(call, -ECANCELED, (int)http_status);
    return;
  }
  if (call->attempts >= GH_MAX_ATTEMPTS) {
    log_warn("github", "giving up after retries", LOG_S("op", call_name(call)),
             LOG_U("attempts", call->attempts), LOG_I("code", http_status));
    call_complete(call, status, (int)http_status);
    return;
  }
  log_info("github", "retrying", LOG_S("op", call_name(call)),
           LOG_U("attempt", call->attempts), LOG_I("code", http_status),
           LOG_U("delay_ms", delay_ms));
  call_wait(call, delay_ms);
}

/* ---- token ---- */

static int token_fresh(const struct gh_client *gh)
{
  return gh->token != NULL &&
         (int64_t)time(NULL) < gh->token_expires - GH_TOKEN_MARGIN_S;
}

static void call_send(struct gh_call *call);

/* Hands the outcome of a refresh to every call waiting for it. */
static void token_release_waiters(struct gh_client *gh, int status,
                                  int http_status)
{
  struct gh_call *call;

  for (;;) {
    for (call = gh->calls; call != NULL; call = call->next)
      if (call->state == CALL_WAIT_TOKEN)
        break;
    if (call == NULL)
      return;
    if (status == 0 && gh->token != NULL)
      call_send(call);
    else
      call_complete(call, status, http_status);
  }
}

static void token_refresh(struct gh_client *gh)
{
  struct gh_call *call;

  if (gh->token_call != NULL)
    return;
  call = call_new(gh, GH_OP_TOKEN, "POST");
  if (call == NULL) {
    token_release_waiters(gh, -ENOMEM, 0);
    return;
  }
  snprintf(call->path, sizeof(call->path),
           "/app/installations/%" PRId64 "/access_tokens",
           gh->cfg->installation_id);
  gh->token_call = call;
  call_send(call);
}

static int token_store(struct gh_client *gh, const char *body, size_t len)
{
  json_t *root;
  json_t *tok, *exp;
  const char *token;
  int64_t expires;
  int rc = -1;

  root = json_loadb(body, len, 0, NULL);
  if (root == NULL)
    return -1;
  tok = json_object_get(root, "token");
  exp = json_object_get(root, "expires_at");
  token = json_string_value(tok);
  if (token == NULL || *token == '\0' || strpbrk(token, "\r\n") != NULL)
    goto out;
  if (gh_parse_iso8601(json_string_value(exp), &expires) != 0) {
    log_warn("github", "token without a valid expires_at; assuming 1 hour",
             LOG_NONE);
    expires = (int64_t)time(NULL) + 3600;
  }
  secret_free_str(gh->token);
  gh->token = strdup(token);
  if (gh->token == NULL)
    goto out;
  gh->token_expires = expires;
  gh->token_gen++;
  rc = 0;

out:
  if (token != NULL)
    OPENSSL_cleanse((char *)token, strlen(token));
  json_decref(root);
  return rc;
}

/* ---- sending ---- */

static int auth_header(struct gh_call *call, char **out)
{
  struct gh_client *gh = call->gh;
  char *secret = NULL;
  const char *value;
  size_t size;
  int rc = -1;

  if (call->op == GH_OP_TOKEN ||
      (call->op == GH_OP_RECOVERY && call->auth == GH_AUTH_APP)) {
    if (gh->key == NULL)
      return -1;
    secret = gh_jwt_sign(gh->key, gh->cfg->app_id, (int64_t)time(NULL));
    if (secret == NULL) {
      log_error("github", "cannot sign the App JWT", LOG_NONE);
      return -1;
    }
    value = secret;
  } else {
    value = gh->key != NULL ? gh->token : gh->pat;
    call->token_gen = gh->token_gen;
  }
  if (value == NULL)
    goto out;
  size = strlen("Authorization: Bearer ") + strlen(value) + 1;
  *out = malloc(size);
  if (*out == NULL)
    goto out;
  snprintf(*out, size, "Authorization: Bearer %s", value);
  rc = 0;

out:
  secret_free_str(secret);
  return rc;
}

static void http_done_cb(void *arg, const struct http_client_response *resp);

static void call_send(struct gh_call *call)
{
  struct gh_client *gh = call->gh;
  struct http_client_request req;
  const char *headers[7];
  char url[1024];
  char *auth = NULL;
  size_t nh = 0;
  int rc;

  if (auth_header(call, &auth) != 0) {
    call_fail_later(call, -EACCES, 0);
    return;
  }
  headers[nh++] = auth;
  headers[nh++] = "Accept: application/vnd.github+json";
  headers[nh++] = "X-GitHub-Api-Version: 2022-11-28";
  headers[nh++] = "User-Agent: runfleet/" RUNFLEET_VERSION;
  if (call->body != NULL)
    headers[nh++] = "Content-Type: application/json";
  headers[nh] = NULL;
  snprintf(url, sizeof(url), "%s%s", gh->api_url, call->path);
  memset(&req, 0, sizeof(req));
  req.method = call->method;
  req.url = url;
  req.headers = headers;
  req.body = call->body;
  req.body_len = call->body_len;
  req.timeout_ms = GH_REQUEST_TIMEOUT_MS;
  rc = http_client_send(gh->http, &req, http_done_cb, call);
  OPENSSL_cleanse(auth, strlen(auth));
  free(auth);
  if (rc != 0) {
    log_error("github", "cannot send request", LOG_S("op", call_name(call)),
              LOG_I("error", rc));
    call_fail_later(call, rc, 0);
    return;
  }
  call->attempts++;
  gh->requests++;
  gh->inflight++;
  if (call->op == GH_OP_RECOVERY) {
    gh->recovery_requests++;
    gh->rec_inflight++;
  }
  call_set_state(call, CALL_IN_FLIGHT);
}

/* Gets a token if one is needed, then sends; holds for the primary limit. */
static void call_dispatch(struct gh_call *call)
{
  struct gh_client *gh = call->gh;
  uint64_t now = uv_now(gh->loop);

  if (gh->closing) {
    call_complete(call, -ECANCELED, 0);
    return;
  }
  if (call->op != GH_OP_TOKEN && now < gh->hold_all_until) {
    call_wait(call, gh->hold_all_until - now);
    return;
  }
  if (call->op != GH_OP_TOKEN && gh->key != NULL && !token_fresh(gh) &&
      !(call->op == GH_OP_RECOVERY && call->auth == GH_AUTH_APP)) {
    call_set_state(call, CALL_WAIT_TOKEN);
    token_refresh(gh);
    return;
  }
  call_send(call);
}

static void pace_timer_cb(uv_timer_t *timer)
{
  pump(timer->data);
}

static void pace_arm(struct gh_client *gh, uint64_t delay_ms)
{
  int rc = uv_timer_start(&gh->pace_timer, pace_timer_cb, delay_ms, 0);

  if (rc != 0)
    log_error("github", "uv_timer_start failed",
              LOG_S("error", uv_strerror(rc)));
}

static void bucket_refill(struct gh_client *gh, uint64_t now)
{
  gh->bucket += (double)(now - gh->bucket_ms) * gh->per_ms;
  if (gh->bucket > GH_PACE_BURST)
    gh->bucket = GH_PACE_BURST;
  gh->bucket_ms = now;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
  return a > b ? a : b;
}

/* Runner calls (JIT configs, deletions) not yet sent: queued, waiting for
 * a retry or for the token. While there is one, recovery waits. */
static unsigned runner_calls_waiting(const struct gh_client *gh)
{
  const struct gh_call *c;
  unsigned n = 0;

  for (c = gh->calls; c != NULL; c = c->next)
    if (op_mutating(c->op) &&
        (c->state == CALL_QUEUED || c->state == CALL_WAIT_TIMER ||
         c->state == CALL_WAIT_TOKEN))
      n++;
  return n;
}

UNITTEST int gh_recovery_gate(const struct gh_recovery_gate *g, uint64_t now,
                              uint64_t *wait_ms)
{
  uint64_t hold =
      max_u64(max_u64(g->hold_all_until, g->hold_mut_until), g->hold_rec_until);

  *wait_ms = 0;
  if (g->runner_waiting > 0 || g->in_flight >= GH_RECOVERY_CONCURRENCY)
    return 0; /* the next completion pumps again */
  if (now < hold) {
    *wait_ms = hold - now;
    return 0;
  }
  if (g->remaining >= 0 && g->remaining <= g->reserve) {
    /* Wait for the reset; without one known, look again in a minute. */
    *wait_ms = g->reset_in_ms > 0 ? g->reset_in_ms : 60000;
    return 0;
  }
  /* A recovery POST leaves half the pace's burst to the runners, so a
   * burst of JIT requests right after it need not wait for tokens. */
  if (g->mutating && g->bucket < 1.0 + GH_RECOVERY_BUCKET_KEEP) {
    *wait_ms =
        (uint64_t)((1.0 + GH_RECOVERY_BUCKET_KEEP - g->bucket) / g->per_ms) + 1;
    return 0;
  }
  return 1;
}

/* Lets the head of the recovery queue out when gh_recovery_gate says so;
 * returns the delay after which to look again (0: nothing to arm). */
static uint64_t pump_recovery(struct gh_client *gh, uint64_t now)
{
  struct gh_recovery_gate g;
  struct gh_call *call = gh->rq.head;
  int64_t reset, wall = (int64_t)time(NULL);
  uint64_t wait = 0;
  int app;

  while (call != NULL) {
    app = call->auth == GH_AUTH_APP;
    reset = app ? gh->app_reset_unix : gh->reset_unix;
    memset(&g, 0, sizeof(g));
    g.runner_waiting = runner_calls_waiting(gh);
    g.in_flight = gh->rec_inflight;
    g.hold_all_until = app ? 0 : gh->hold_all_until;
    g.hold_mut_until = gh->hold_mut_until;
    g.hold_rec_until = gh->hold_rec_until;
    g.remaining = app ? gh->app_remaining : gh->remaining;
    g.reserve = gh->reserve;
    g.reset_in_ms = reset > wall ? (uint64_t)(reset - wall) * 1000 + 1000 : 0;
    g.mutating = strcmp(call->method, "GET") != 0;
    g.bucket = gh->bucket;
    g.per_ms = gh->per_ms;
    if (!gh_recovery_gate(&g, now, &wait))
      return wait;
    if (g.mutating)
      gh->bucket -= 1.0;
    queue_remove(gh, call);
    call_dispatch(call);
    call = gh->rq.head;
  }
  return 0;
}

/* Lets queued mutating calls out, no faster than the token bucket allows
 * and not while a Retry-After or the primary limit holds them; then, with
 * none left, recovery calls as gh_recovery_gate allows. */
static void pump(struct gh_client *gh)
{
  struct gh_call *call;
  uint64_t now, hold, wait;

  if (gh->pumping || gh->closing)
    return;
  gh->pumping = 1;
  while (gh->q.head != NULL) {
    now = uv_now(gh->loop);
    hold = max_u64(gh->hold_all_until, gh->hold_mut_until);
    if (now < hold) {
      pace_arm(gh, hold - now);
      break;
    }
    bucket_refill(gh, now);
    if (gh->bucket < 1.0) {
      pace_arm(gh, (uint64_t)((1.0 - gh->bucket) / gh->per_ms) + 1);
      break;
    }
    gh->bucket -= 1.0;
    call = gh->q.head;
    queue_remove(gh, call);
    call_dispatch(call);
  }
  if (gh->q.head == NULL && gh->rq.head != NULL) {
    now = uv_now(gh->loop);
    bucket_refill(gh, now);
    wait = pump_recovery(gh, now);
    if (wait > 0)
      pace_arm(gh, wait);
  }
  gh->pumping = 0;
}

static void call_start(struct gh_call *call)
{
  if (op_mutating(call->op) || call->op == GH_OP_RECOVERY) {
    queue_push(call->gh, call, 0);
    pump(call->gh);
  } else {
    call_dispatch(call);
  }
}

/* ---- responses ---- */

static long header_long(const struct http_client_response *resp,
                        const char *name, long fallback)
{
  char v[32];
  char *end;
  long n;

  if (http_client_header(resp, name, v, sizeof(v)) != 0)
    return fallback;
  errno = 0;
  n = strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < 0)
    return fallback;
  return n;
}

static void count_limited(struct gh_client *gh)
{
  if (gh->m != NULL && metrics_counter_add(gh->m, LIMITED_METRIC, "", 1) != 0)
    log_warn("github", "cannot count a secondary limit", LOG_NONE);
}

static void count_request(struct gh_client *gh, const char *op, long status)
{
  char labels[96];

  if (gh->m == NULL)
    return;
  snprintf(labels, sizeof(labels), "endpoint=\"%s\",code=\"%ld\"", op, status);
  if (metrics_counter_add(gh->m, REQUESTS_METRIC, labels, 1) != 0)
    log_warn("github", "cannot count request", LOG_NONE);
}

static void track_ratelimit(struct gh_client *gh, const struct gh_call *call,
                            const struct http_client_response *resp)
{
  long remaining = header_long(resp, "x-ratelimit-remaining", -1);
  long reset;
  int64_t wait_s;

  if (remaining < 0)
    return;
  reset = header_long(resp, "x-ratelimit-reset", -1);
  if (call->op == GH_OP_RECOVERY && call->auth == GH_AUTH_APP) {
    /* The App's own budget: recovery alone spends it and waits for it. */
    gh->app_remaining = remaining;
    gh->app_reset_unix = reset > 0 ? reset : 0;
    return;
  }
  gh->remaining = remaining;
  gh->limit = header_long(resp, "x-ratelimit-limit", gh->limit);
  if (reset > 0)
    gh->reset_unix = reset;
  if (gh->m != NULL &&
      metrics_gauge_set(gh->m, REMAINING_METRIC, "", (double)remaining) != 0)
    log_warn("github", "cannot set rate-limit gauge", LOG_NONE);
  if (remaining > 0)
    return;
  wait_s = reset >= 0 ? (int64_t)reset - (int64_t)time(NULL) + 1 : 60;
  if (wait_s < 1)
    wait_s = 1;
  if (wait_s * 1000 > GH_MAX_WAIT_MS)
    wait_s = GH_MAX_WAIT_MS / 1000;
  gh->hold_all_until = uv_now(gh->loop) + (uint64_t)wait_s * 1000;
  log_warn("github", "rate limit exhausted; holding requests",
           LOG_I("wait_s", wait_s));
}

static void on_token(struct gh_call *call,
                     const struct http_client_response *resp)
{
  if (resp->status == 201 || resp->status == 200) {
    if (token_store(call->gh, resp->body, resp->body_len) == 0) {
      call_complete(call, 0, (int)resp->status);
      return;
    }
    log_error("github", "bad access token response", LOG_NONE);
    call_complete(call, -EBADMSG, (int)resp->status);
    return;
  }
  log_error("github", "installation token refused",
            LOG_I("code", resp->status));
  call_complete(call, -EACCES, (int)resp->status);
}

UNITTEST int gh_decode_jit(const char *body, size_t len, int64_t *runner_id,
                           char **config)
{
  json_t *root;
  json_int_t id = 0;
  const char *s = NULL;
  int rc = -1;

  *runner_id = 0;
  *config = NULL;
  root = json_loadb(body, len, 0, NULL);
  if (root == NULL)
    return -1;
  id = json_integer_value(
      json_object_get(json_object_get(root, "runner"), "id"));
  s = json_string_value(json_object_get(root, "encoded_jit_config"));
  if (id > 0 && s != NULL && *s != '\0') {
    *config = strdup(s);
    if (*config != NULL) {
      *runner_id = (int64_t)id;
      rc = 0;
    }
  }
  if (s != NULL)
    OPENSSL_cleanse((char *)s, strlen(s));
  json_decref(root);
  return rc;
}

static void on_jit(struct gh_call *call,
                   const struct http_client_response *resp)
{
  char *config = NULL;
  int64_t id = 0;

  if (resp->status != 201) {
    log_warn("github", "JIT config refused", LOG_I("code", resp->status));
    call_complete(call, status_error(resp->status), (int)resp->status);
    return;
  }
  if (gh_decode_jit(resp->body, resp->body_len, &id, &config) != 0) {
    log_error("github", "bad JIT config response", LOG_NONE);
    call_complete(call, -EBADMSG, (int)resp->status);
    return;
  }
  call_set_state(call, CALL_DONE);
  call->cb.jit(call->arg, 0, (int)resp->status, id, config);
  uv_close((uv_handle_t *)&call->timer, call_close_cb);
  secret_free_str(config);
}

static int runners_append(struct gh_runner_page *pg, json_t *item)
{
  struct gh_runner *r;
  size_t cap;
  const char *s;

  if (pg->n == pg->cap) {
    cap = pg->cap ? pg->cap * 2 : GH_PER_PAGE;
    r = realloc(pg->runners, cap * sizeof(*r));
    if (r == NULL)
      return -1;
    pg->runners = r;
    pg->cap = cap;
  }
  r = &pg->runners[pg->n];
  memset(r, 0, sizeof(*r));
  r->id = (int64_t)json_integer_value(json_object_get(item, "id"));
  s = json_string_value(json_object_get(item, "name"));
  snprintf(r->name, sizeof(r->name), "%s", s ? s : "");
  s = json_string_value(json_object_get(item, "status"));
  snprintf(r->status, sizeof(r->status), "%s", s ? s : "");
  r->busy = json_is_true(json_object_get(item, "busy"));
  if (r->id <= 0)
    return 0; /* skip entries without an id */
  pg->n++;
  return 0;
}

UNITTEST int gh_decode_runners(const char *body, size_t len,
                               struct gh_runner_page *pg, size_t *items,
                               int64_t *total)
{
  json_t *root, *arr;
  size_t i, n;
  json_int_t t;

  *items = 0;
  *total = 0;
  root = json_loadb(body, len, 0, NULL);
  arr = json_object_get(root, "runners");
  if (root == NULL || !json_is_array(arr)) {
    json_decref(root);
    return -EBADMSG;
  }
  t = json_integer_value(json_object_get(root, "total_count"));
  n = json_array_size(arr);
  for (i = 0; i < n; i++) {
    if (runners_append(pg, json_array_get(arr, i)) != 0) {
      json_decref(root);
      return -ENOMEM;
    }
  }
  json_decref(root);
  *items = n;
  *total = t > 0 ? (int64_t)t : 0;
  return 0;
}

static void list_set_path(struct gh_call *call)
{
  snprintf(call->path, sizeof(call->path),
           "%s/actions/runners?per_page=%d&page=%u%s%s", call->gh->scope,
           GH_PER_PAGE, call->page, call->name_filter[0] ? "&name=" : "",
           call->name_filter);
}

static void on_list(struct gh_call *call,
                    const struct http_client_response *resp)
{
  struct gh_runner_page pg = {call->runners, call->nrunners, call->runners_cap};
  size_t n;
  int64_t total;
  int rc;

  if (resp->status != 200) {
    log_warn("github", "runner list refused", LOG_I("code", resp->status));
    call_complete(call, status_error(resp->status), (int)resp->status);
    return;
  }
  rc = gh_decode_runners(resp->body, resp->body_len, &pg, &n, &total);
  call->runners = pg.runners;
  call->nrunners = pg.n;
  call->runners_cap = pg.cap;
  if (rc == -EBADMSG)
    log_error("github", "bad runner list response", LOG_NONE);
  if (rc != 0) {
    call_complete(call, rc, (int)resp->status);
    return;
  }
  if (n == 0 || call->page * GH_PER_PAGE >= (size_t)total ||
      call->page >= GH_MAX_PAGES) {
    call_complete(call, 0, (int)resp->status);
    return;
  }
  call->page++;
  call->attempts = 0;
  call->auth_retried = 0;
  list_set_path(call);
  call_dispatch(call);
}

static void on_raw(struct gh_call *call,
                   const struct http_client_response *resp)
{
  int ok = resp->status >= 200 && resp->status < 300;

  if (!ok)
    log_warn("github", "recovery call refused", LOG_S("op", call_name(call)),
             LOG_I("code", resp->status));
  call_set_state(call, CALL_DONE);
  call->cb.raw(call->arg, ok ? 0 : status_error(resp->status),
               (int)resp->status, resp);
  uv_close((uv_handle_t *)&call->timer, call_close_cb);
}

/* Whether a request that got no response may have reached GitHub: only a
 * failure to resolve or connect proves it was never sent. */
static int maybe_sent(CURLcode code)
{
  return code != CURLE_COULDNT_RESOLVE_HOST &&
         code != CURLE_COULDNT_RESOLVE_PROXY && code != CURLE_COULDNT_CONNECT;
}

/* 401, 403/429 and 5xx: decides whether and when to try again. A JIT
 * request that may have taken effect (no response after it was sent, or a
 * 5xx) is never retried: the caller looks the runner up by name instead.
 * Returns 1 when the call was taken care of. */
static int handle_retryable(struct gh_call *call,
                            const struct http_client_response *resp)
{
  struct gh_client *gh = call->gh;
  long status = resp->status;
  long retry_after;

  if (status == 0) {
    if (resp->curl_code == CURLE_ABORTED_BY_CALLBACK) {
      call_complete(call, -ECANCELED, 0);
      return 1;
    }
    log_warn("github", "request failed", LOG_S("op", call_name(call)),
             LOG_S("error", resp->error ? resp->error : ""));
    if (call->op == GH_OP_JIT && maybe_sent(resp->curl_code)) {
      call_complete(call, GH_MAYBE_APPLIED, 0);
      return 1;
    }
    call_retry(call, backoff_delay(gh, call->attempts), -EIO, 0);
    return 1;
  }
  if (status == 401 && call->op != GH_OP_TOKEN && gh->key != NULL &&
      !call->auth_retried) {
    call->auth_retried = 1;
    if (call->token_gen == gh->token_gen && gh->token != NULL) {
      secret_free_str(gh->token);
      gh->token = NULL;
    }
    log_info("github", "token rejected; refreshing",
             LOG_S("op", call_name(call)));
    call_dispatch(call);
    return 1;
  }
  if (status == 403 || status == 429) {
    retry_after = header_long(resp, "retry-after", -1);
    if (retry_after >= 0) {
      if (retry_after * 1000 > GH_MAX_WAIT_MS)
        retry_after = GH_MAX_WAIT_MS / 1000;
      gh->secondary_limited++;
      count_limited(gh);
      /* The wait counts from now, not from the loop's cached time (which
       * may be behind when the loop is busy), plus a margin for the whole
       * seconds GitHub rounds to. A recovery call's limit holds recovery
       * only: the runners' calls never wait for recovery's. */
      uv_update_time(gh->loop);
      *(call->op == GH_OP_RECOVERY ? &gh->hold_rec_until
                                   : &gh->hold_mut_until) =
          uv_now(gh->loop) + (uint64_t)retry_after * 1000 + GH_HOLD_MARGIN_MS;
      log_warn("github", "Retry-After; holding mutating calls",
               LOG_S("op", call_name(call)), LOG_I("code", status),
               LOG_I("retry_after_s", retry_after));
      call_retry(call, (uint64_t)retry_after * 1000 + GH_HOLD_MARGIN_MS,
                 status_error(status), status);
      return 1;
    }
    if (header_long(resp, "x-ratelimit-remaining", -1) == 0) {
      call_retry(call,
                 gh->hold_all_until > uv_now(gh->loop)
                     ? gh->hold_all_until - uv_now(gh->loop)
                     : 1000,
                 status_error(status), status);
      return 1;
    }
    if (status == 429 ||
        (resp->body != NULL && strstr(resp->body, "secondary rate limit"))) {
      gh->secondary_limited++;
      count_limited(gh);
      *(call->op == GH_OP_RECOVERY ? &gh->hold_rec_until
                                   : &gh->hold_mut_until) =
          uv_now(gh->loop) + GH_SECONDARY_WAIT_MS;
      call_retry(call, GH_SECONDARY_WAIT_MS, status_error(status), status);
      return 1;
    }
    return 0;
  }
  if (status >= 500) {
    if (call->op == GH_OP_JIT) {
      /* GitHub may have registered the runner before it failed. */
      call_complete(call, GH_MAYBE_APPLIED, (int)status);
      return 1;
    }
    call_retry(call, backoff_delay(gh, call->attempts), status_error(status),
               status);
    return 1;
  }
  return 0;
}

static void http_done_cb(void *arg, const struct http_client_response *resp)
{
  struct gh_call *call = arg;
  struct gh_client *gh = call->gh;

  gh->inflight--;
  count_request(gh, call_name(call), resp->status);
  log_debug("github", "response", LOG_S("op", call_name(call)),
            LOG_S("method", call->method), LOG_I("code", resp->status),
            LOG_FN("seconds", 3, resp->total_seconds));
  if (call->op == GH_OP_RECOVERY)
    gh->rec_inflight--;
  if (call->op != GH_OP_TOKEN)
    track_ratelimit(gh, call, resp);
  if (!handle_retryable(call, resp)) {
    switch (call->op) {
    case GH_OP_TOKEN:
      on_token(call, resp);
      break;
    case GH_OP_JIT:
      on_jit(call, resp);
      break;
    case GH_OP_DELETE:
      if (resp->status == 204 || resp->status == 404 || resp->status == 200)
        call_complete(call, 0, (int)resp->status);
      else
        call_complete(call, status_error(resp->status), (int)resp->status);
      break;
    case GH_OP_LIST:
      on_list(call, resp);
      break;
    case GH_OP_RECOVERY:
      on_raw(call, resp);
      break;
    }
  }
  pump(gh);
  maybe_notify_closed(gh);
}

/* Runs the call's callback once and lets the call go. */
static void call_complete(struct gh_call *call, int status, int http_status)
{
  struct gh_client *gh = call->gh;

  if (call->state == CALL_DONE)
    return;
  if (call->state == CALL_QUEUED)
    queue_remove(gh, call);
  if (uv_timer_stop(&call->timer) != 0)
    log_warn("github", "uv_timer_stop failed", LOG_NONE);
  call_set_state(call, CALL_DONE);
  switch (call->op) {
  case GH_OP_TOKEN:
    gh->token_call = NULL;
    token_release_waiters(gh, status, http_status);
    break;
  case GH_OP_JIT:
    call->cb.jit(call->arg, status, http_status, 0, NULL);
    break;
  case GH_OP_DELETE:
    call->cb.done(call->arg, status, http_status);
    break;
  case GH_OP_LIST:
    if (status == 0)
      call->cb.runners(call->arg, 0, call->runners, call->nrunners);
    else
      call->cb.runners(call->arg, status, NULL, 0);
    break;
  case GH_OP_RECOVERY:
    call->cb.raw(call->arg, status, http_status, NULL);
    break;
  }
  uv_close((uv_handle_t *)&call->timer, call_close_cb);
}

/* ---- API ---- */

static char *jit_body(struct gh_client *gh, const char *name,
                      char *const *labels, size_t nlabels)
{
  json_t *root, *arr;
  char *body = NULL;
  size_t i;

  arr = json_array();
  if (arr == NULL)
    return NULL;
  for (i = 0; i < nlabels; i++) {
    if (labels[i] == NULL ||
        json_array_append_new(arr, json_string(labels[i])) != 0) {
      json_decref(arr);
      return NULL;
    }
  }
  root = json_pack(
      "{s:s, s:I, s:o, s:s}", "name", name, "runner_group_id",
      (json_int_t)(gh->cfg->runner_group_id > 0 ? gh->cfg->runner_group_id : 1),
      "labels", arr, "work_folder", "_work");
  if (root == NULL)
    return NULL; /* json_pack releases arr ("o") on failure */
  body = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return body;
}

int gh_jit_config(struct gh_client *gh, const char *name, char *const *labels,
                  size_t nlabels, gh_jit_cb cb, void *arg)
{
  struct gh_call *call;

  if (gh->closing)
    return -ESHUTDOWN;
  if (name == NULL || *name == '\0' || cb == NULL ||
      (labels == NULL && nlabels > 0))
    return -EINVAL;
  call = call_new(gh, GH_OP_JIT, "POST");
  if (call == NULL)
    return -ENOMEM;
  call->body = jit_body(gh, name, labels, nlabels);
  if (call->body == NULL) {
    call_discard(call);
    return -ENOMEM;
  }
  call->body_len = strlen(call->body);
  snprintf(call->path, sizeof(call->path),
           "%s/actions/runners/generate-jitconfig", gh->scope);
  call->cb.jit = cb;
  call->arg = arg;
  call_start(call);
  return 0;
}

int gh_delete_runner(struct gh_client *gh, int64_t runner_id, gh_done_cb cb,
                     void *arg)
{
  struct gh_call *call;

  if (gh->closing)
    return -ESHUTDOWN;
  if (runner_id <= 0 || cb == NULL)
    return -EINVAL;
  call = call_new(gh, GH_OP_DELETE, "DELETE");
  if (call == NULL)
    return -ENOMEM;
  snprintf(call->path, sizeof(call->path), "%s/actions/runners/%" PRId64,
           gh->scope, runner_id);
  call->cb.done = cb;
  call->arg = arg;
  call_start(call);
  return 0;
}

static int list_start(struct gh_client *gh, const char *name, gh_runners_cb cb,
                      void *arg)
{
  struct gh_call *call;
  size_t i;

  if (gh->closing)
    return -ESHUTDOWN;
  if (cb == NULL || (name != NULL && (*name == '\0' || strlen(name) >= 128)))
    return -EINVAL;
  /* Runner names this daemon gives are [a-z0-9-]; anything that would
   * need URL encoding is refused rather than encoded. */
  for (i = 0; name != NULL && name[i] != '\0'; i++)
    if (!((name[i] >= 'a' && name[i] <= 'z') ||
          (name[i] >= 'A' && name[i] <= 'Z') ||
          (name[i] >= '0' && name[i] <= '9') || name[i] == '-' ||
          name[i] == '_' || name[i] == '.'))
      return -EINVAL;
  call = call_new(gh, GH_OP_LIST, "GET");
  if (call == NULL)
    return -ENOMEM;
  call->page = 1;
  if (name != NULL)
    snprintf(call->name_filter, sizeof(call->name_filter), "%s", name);
  list_set_path(call);
  call->cb.runners = cb;
  call->arg = arg;
  call_start(call);
  return 0;
}

int gh_list_runners(struct gh_client *gh, gh_runners_cb cb, void *arg)
{
  return list_start(gh, NULL, cb, arg);
}

int gh_find_runner(struct gh_client *gh, const char *name, gh_runners_cb cb,
                   void *arg)
{
  return list_start(gh, name, cb, arg);
}

int gh_raw_request(struct gh_client *gh, enum gh_auth auth,
                   const char *endpoint, const char *method, const char *path,
                   gh_raw_cb cb, void *arg)
{
  struct gh_call *call;

  if (gh->closing)
    return -ESHUTDOWN;
  if (cb == NULL || endpoint == NULL || method == NULL || path == NULL ||
      path[0] != '/' || strlen(path) >= sizeof(((struct gh_call *)0)->path))
    return -EINVAL;
  if (auth == GH_AUTH_APP && gh->key == NULL)
    return -ENOTSUP;
  call = call_new(gh, GH_OP_RECOVERY, method);
  if (call == NULL)
    return -ENOMEM;
  call->endpoint = endpoint;
  call->auth = auth;
  snprintf(call->path, sizeof(call->path), "%s", path);
  call->cb.raw = cb;
  call->arg = arg;
  call_start(call);
  return 0;
}

const char *gh_scope_repo(const struct gh_client *gh)
{
  return gh->cfg->repo;
}

int gh_app_mode(const struct gh_client *gh)
{
  return gh->key != NULL;
}

void gh_set_recovery_reserve(struct gh_client *gh, long reserve)
{
  gh->reserve = reserve;
}

static uint64_t ms_left(uint64_t until, uint64_t now)
{
  return until > now ? until - now : 0;
}

void gh_budget_get(const struct gh_client *gh, struct gh_budget *out)
{
  uint64_t now = uv_now(gh->loop);
  const struct gh_call *c;

  memset(out, 0, sizeof(*out));
  out->remaining = gh->remaining;
  out->limit = gh->limit;
  out->reset_unix = gh->reset_unix;
  out->app_remaining = gh->app_remaining;
  out->reserve = gh->reserve;
  out->hold_all_ms = ms_left(gh->hold_all_until, now);
  out->hold_mutations_ms = ms_left(gh->hold_mut_until, now);
  out->hold_recovery_ms = ms_left(gh->hold_rec_until, now);
  out->secondary_limited = gh->secondary_limited;
  out->runner_waiting = runner_calls_waiting(gh);
  for (c = gh->rq.head; c != NULL; c = c->qnext)
    out->recovery_queued++;
  out->recovery_in_flight = gh->rec_inflight;
  out->recovery_requests = gh->recovery_requests;
}

void gh_sync_metrics(struct gh_client *gh)
{
  struct gh_budget b;
  int rc = 0;

  if (gh->m == NULL)
    return;
  gh_budget_get(gh, &b);
  if (b.limit >= 0)
    rc |= metrics_gauge_set(gh->m, LIMIT_METRIC, "", (double)b.limit);
  if (b.reset_unix > 0)
    rc |= metrics_gauge_set(gh->m, RESET_METRIC, "", (double)b.reset_unix);
  rc |= metrics_gauge_set(gh->m, HOLD_METRIC, "held=\"all\"",
                          (double)b.hold_all_ms / 1e3);
  rc |= metrics_gauge_set(gh->m, HOLD_METRIC, "held=\"mutations\"",
                          (double)b.hold_mutations_ms / 1e3);
  rc |= metrics_gauge_set(gh->m, HOLD_METRIC, "held=\"recovery\"",
                          (double)b.hold_recovery_ms / 1e3);
  rc |= metrics_gauge_set(gh->m, WAITING_METRIC, "class=\"runner\"",
                          (double)b.runner_waiting);
  rc |= metrics_gauge_set(gh->m, WAITING_METRIC, "class=\"recovery\"",
                          (double)b.recovery_queued);
  if (rc != 0)
    log_warn("github", "cannot set budget gauges", LOG_NONE);
}

static void pace_close_cb(uv_handle_t *handle)
{
  struct gh_client *gh = handle->data;

  gh->nhandles--;
  maybe_notify_closed(gh);
}

void gh_close(struct gh_client *gh, void (*done_cb)(void *arg), void *arg)
{
  struct gh_call *call;

  if (gh->closing)
    return;
  gh->closing = 1;
  gh->close_cb = done_cb;
  gh->close_arg = arg;
  /* Completing a call never unlinks it (that waits for its close
   * callback), so the walk is safe; new calls are refused now. */
  for (call = gh->calls; call != NULL; call = call->next)
    if (call->state != CALL_IN_FLIGHT && call->state != CALL_DONE)
      call_complete(call, -ECANCELED, 0);
  uv_close((uv_handle_t *)&gh->pace_timer, pace_close_cb);
}

void gh_destroy(struct gh_client *gh)
{
  if (gh == NULL)
    return;
  assert(gh->calls == NULL && gh->nhandles == 0);
  secret_free_str(gh->token);
  secret_free_str(gh->pat);
  EVP_PKEY_free(gh->key);
  free(gh);
}
