/* The Kubernetes REST client: requests through http_client with the
 * cluster's CA and our credentials, a client-side token bucket in front of
 * every try, and retries with jittered backoff on 429, 5xx and transport
 * errors (never a POST that may have taken effect). Watch streams use the
 * same path with a streaming body (kube_stream_*); the reflector on top is
 * in kube_watch.c. */
#include "kube.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "kube_int.h"
#include "log.h"
#include "metrics.h"
#include "rand.h"
#include "secret.h"

#define KUBE_MAX_HEADERS 8
#define KUBE_AUTH_MAX 8192

enum kube_call_state {
  CALL_QUEUED,    /* waiting for a token of the rate limiter */
  CALL_SENT,      /* an HTTP transfer is in flight */
  CALL_BACKOFF,   /* waiting to try again */
  CALL_FINISHING, /* its timer is closing; freed in the close callback */
};

/* One request (or watch stream) from kube_request to its callback. */
struct kube_call {
  struct kube *k;
  enum kube_call_state state;
  char *method;
  char *url;
  char *body;
  size_t body_len;
  char *content_type;
  unsigned attempts;
  int reauth_tried; /* a 401 made us re-read the token file once */
  int delivering;   /* its callback runs: kube_close leaves it alone */
  int first; /* queued ahead of the calls that are not (kube_create_first) */
  kube_done_cb cb;
  void *arg;
  uv_timer_t timer; /* backoff */
  struct http_transfer *xfer;
  /* Streams only. */
  int stream;
  int silent; /* cancelled: no callback when the transfer ends */
  int stream_error;
  struct kube_watch_parser parser;
  kube_stream_event_cb event_cb;
  kube_stream_done_cb sdone_cb;
  struct kube_call *prev, *next; /* every call */
  struct kube_call *qnext;       /* the rate limiter's FIFO */
};

struct kube_watch_link {
  struct kube_watch *w;
  struct kube_watch_link *next;
};

struct kube {
  uv_loop_t *loop;
  struct http_client *http;
  struct kube_config kc;
  struct kube_options o;
  struct http_client_tls tls;
  struct kube_token_file tf;
  struct kube_bucket bucket;
  uv_timer_t pump; /* sends queued calls when the bucket allows */
  struct kube_call *calls;
  /* The rate limiter's queue: the calls marked first, in order, then the
   * others in order; qfirst is the last of the first ones, or NULL. */
  struct kube_call *qhead, *qtail, *qfirst;
  struct kube_watch_link *watches;
  unsigned nhandles;
  int http_closed;
  int closing;
  int close_notified;
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* Pure parts: rate limiter, backoff, Retry-After, retry policy. */

void kube_bucket_init(struct kube_bucket *b, double qps, unsigned burst,
                      uint64_t now_ms)
{
  b->qps = qps;
  b->burst = burst > 0 ? burst : 1;
  b->tokens = b->burst;
  b->last_ms = now_ms;
}

uint64_t kube_bucket_take(struct kube_bucket *b, uint64_t now_ms)
{
  double wait;

  if (b->qps < 0)
    return 0;
  if (now_ms > b->last_ms) {
    b->tokens += (double)(now_ms - b->last_ms) * b->qps / 1000.0;
    if (b->tokens > b->burst)
      b->tokens = b->burst;
    b->last_ms = now_ms;
  }
  if (b->tokens >= 1.0) {
    b->tokens -= 1.0;
    return 0;
  }
  if (b->qps == 0)
    return UINT64_MAX;
  wait = ceil((1.0 - b->tokens) * 1000.0 / b->qps);
  return wait < 1 ? 1 : (uint64_t)wait;
}

uint64_t kube_backoff_ms(unsigned attempt, uint64_t base, uint64_t max,
                         uint64_t retry_after_ms, uint32_t r)
{
  uint64_t d = base, half;
  unsigned i;

  for (i = 1; i < attempt && d < max; i++)
    d *= 2;
  if (d > max)
    d = max;
  half = d / 2;
  d = half + (uint64_t)((double)(d - half) * ((double)r / UINT32_MAX));
  if (retry_after_ms > 0) {
    uint64_t extra =
        (uint64_t)((double)(retry_after_ms / 10) * ((double)r / UINT32_MAX));

    if (d < retry_after_ms + extra)
      d = retry_after_ms + extra;
  }
  return d;
}

int kube_parse_retry_after(const char *v, time_t now, uint64_t *ms)
{
  struct tm tm;
  const char *end;
  char *e;
  unsigned long long secs;
  time_t at;

  while (*v == ' ')
    v++;
  if (*v >= '0' && *v <= '9') {
    errno = 0;
    secs = strtoull(v, &e, 10);
    while (*e == ' ')
      e++;
    if (errno != 0 || *e != '\0')
      return -1;
    *ms = secs > KUBE_RETRY_AFTER_MAX_MS / 1000 ? KUBE_RETRY_AFTER_MAX_MS
                                                : secs * 1000;
    return 0;
  }
  memset(&tm, 0, sizeof(tm));
  end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == NULL || *end != '\0')
    return -1;
  at = timegm(&tm);
  if (at == (time_t)-1)
    return -1;
  if (at <= now)
    *ms = 0;
  else if ((uint64_t)(at - now) > KUBE_RETRY_AFTER_MAX_MS / 1000)
    *ms = KUBE_RETRY_AFTER_MAX_MS;
  else
    *ms = (uint64_t)(at - now) * 1000;
  return 0;
}

int kube_retryable(const char *method, long status, int sent)
{
  int post = strcmp(method, "POST") == 0;

  if (status == 429)
    return 1;
  if (status >= 500)
    return !post;
  if (status != 0)
    return 0;
  return !sent || !post;
}

/* Whether a transfer error may have let the request reach the server, and
 * whether trying again can help at all (a bad certificate will stay bad). */
static void kube_curl_class(int code, int *sent, int *fatal)
{
  *fatal = 0;
  switch (code) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
    *sent = 0;
    break;
  case CURLE_FAILED_INIT: /* never handed to curl */
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CIPHER:
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
    *sent = 0;
    *fatal = 1;
    break;
  default:
    *sent = 1;
  }
}

void kube_status_fields(const json_t *obj, const char **reason,
                        const char **message, long *code)
{
  const char *r = json_string_value(json_object_get(obj, "reason"));
  const char *m = json_string_value(json_object_get(obj, "message"));
  json_t *c = json_object_get(obj, "code");

  *reason = r != NULL ? r : "";
  *message = m != NULL ? m : "";
  *code = json_is_integer(c) ? (long)json_integer_value(c) : 0;
}

const char *kube_event_name(enum kube_event_type t)
{
  static const char *const names[] = {"ADDED", "MODIFIED", "DELETED",
                                      "BOOKMARK", "ERROR"};

  return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/* Paths. */

const char *kube_kind_name(enum kube_kind kind)
{
  switch (kind) {
  case KUBE_PODS:
    return "pods";
  case KUBE_SECRETS:
    return "secrets";
  case KUBE_NODES:
    return "nodes";
  case KUBE_EVENTS:
    return "events";
  }
  return "?";
}

/* RFC 1123 subdomain: what pods, secrets, nodes and events are named. */
static int kube_valid_name(const char *s)
{
  size_t n = strlen(s), i;

  if (n == 0 || n > 253)
    return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

    if (!alnum && !(i > 0 && i < n - 1 && (c == '-' || c == '.')))
      return 0;
  }
  return 1;
}

int kube_path(enum kube_kind kind, const char *ns, const char *name, char *out,
              size_t out_size)
{
  int n;

  if ((unsigned)kind > KUBE_EVENTS || (name != NULL && !kube_valid_name(name)))
    return -EINVAL;
  if (kind != KUBE_NODES && ns != NULL && !kube_valid_name(ns))
    return -EINVAL;
  if (kind == KUBE_NODES || ns == NULL)
    n = snprintf(out, out_size, "/api/v1/%s%s%s", kube_kind_name(kind),
                 name ? "/" : "", name ? name : "");
  else
    n = snprintf(out, out_size, "/api/v1/namespaces/%s/%s%s%s", ns,
                 kube_kind_name(kind), name ? "/" : "", name ? name : "");
  if (n < 0 || (size_t)n >= out_size)
    return -ENAMETOOLONG;
  return 0;
}

/* Metrics. */

static void kube_declare_metrics(struct metrics *m)
{
  int rc = 0;

  if (m == NULL)
    return;
  rc |= metrics_declare(m, "runfleet_kube_requests_total", METRICS_COUNTER,
                        "Kubernetes API tries by verb and status code "
                        "(error: no response).",
                        NULL, 0);
  rc |= metrics_declare(m, "runfleet_kube_retries_total", METRICS_COUNTER,
                        "Kubernetes API tries repeated after a 429, 5xx or "
                        "transport error.",
                        NULL, 0);
  rc |= metrics_declare(
      m, "runfleet_kube_watch_restarts_total", METRICS_COUNTER,
      "Watch streams started again, by resource and why.", NULL, 0);
  rc |=
      metrics_declare(m, "runfleet_kube_watch_events_total", METRICS_COUNTER,
                      "Watch events received, by resource and type.", NULL, 0);
  rc |= metrics_declare(m, "runfleet_kube_watch_relists_total", METRICS_COUNTER,
                        "Lists a watch made again after its first (after a "
                        "410 Gone or a failed list), by resource.",
                        NULL, 0);
  if (rc != 0)
    log_warn("kube", "metric families not declared", LOG_NONE);
}

static void kube_count_request(struct kube *k, const char *method, long status)
{
  char labels[96];

  if (k->o.metrics == NULL)
    return;
  if (status > 0)
    snprintf(labels, sizeof(labels), "verb=\"%s\",code=\"%ld\"", method,
             status);
  else
    snprintf(labels, sizeof(labels), "verb=\"%s\",code=\"error\"", method);
  metrics_counter_add(k->o.metrics, "runfleet_kube_requests_total", labels, 1);
}

void kube_count_restart(struct kube *k, const char *resource,
                        const char *reason)
{
  char labels[128];

  if (k->o.metrics == NULL)
    return;
  snprintf(labels, sizeof(labels), "resource=\"%s\",reason=\"%s\"", resource,
           reason);
  metrics_counter_add(k->o.metrics, "runfleet_kube_watch_restarts_total",
                      labels, 1);
}

void kube_count_relist(struct kube *k, const char *resource)
{
  char labels[64];

  if (k->o.metrics == NULL)
    return;
  snprintf(labels, sizeof(labels), "resource=\"%s\"", resource);
  metrics_counter_add(k->o.metrics, "runfleet_kube_watch_relists_total", labels,
                      1);
}

void kube_set_metrics(struct kube *k, struct metrics *m)
{
  k->o.metrics = m;
  kube_declare_metrics(m);
}

/* Construction and teardown. */

static char *kube_dup(const char *s)
{
  return s != NULL ? strdup(s) : NULL;
}

static char *kube_dupn(const char *s, size_t n)
{
  char *d;

  if (s == NULL)
    return NULL;
  d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int kube_copy_config(struct kube_config *dst,
                            const struct kube_config *src)
{
  memset(dst, 0, sizeof(*dst));
  dst->server = kube_dup(src->server);
  dst->ca_file = kube_dup(src->ca_file);
  dst->ca_pem = kube_dupn(src->ca_pem, src->ca_pem_len);
  dst->ca_pem_len = src->ca_pem_len;
  dst->insecure = src->insecure;
  dst->token = kube_dup(src->token);
  dst->token_file = kube_dup(src->token_file);
  dst->cert_file = kube_dup(src->cert_file);
  dst->cert_pem = kube_dupn(src->cert_pem, src->cert_pem_len);
  dst->cert_pem_len = src->cert_pem_len;
  dst->key_file = kube_dup(src->key_file);
  dst->key_pem = kube_dupn(src->key_pem, src->key_pem_len);
  dst->key_pem_len = src->key_pem_len;
  dst->namespace_ = kube_dup(src->namespace_);
  if (dst->server == NULL || (src->ca_file && !dst->ca_file) ||
      (src->ca_pem && !dst->ca_pem) || (src->token && !dst->token) ||
      (src->token_file && !dst->token_file) ||
      (src->cert_file && !dst->cert_file) ||
      (src->cert_pem && !dst->cert_pem) || (src->key_file && !dst->key_file) ||
      (src->key_pem && !dst->key_pem) || (src->namespace_ && !dst->namespace_))
    return -1;
  return 0;
}

static void kube_defaults(struct kube_options *o)
{
  if (o->qps == 0)
    o->qps = KUBE_DEFAULT_QPS;
  if (o->burst == 0)
    o->burst = KUBE_DEFAULT_BURST;
  if (o->attempts == 0)
    o->attempts = KUBE_DEFAULT_ATTEMPTS;
  if (o->timeout_ms == 0)
    o->timeout_ms = KUBE_DEFAULT_TIMEOUT_MS;
  if (o->max_event_bytes == 0)
    o->max_event_bytes = KUBE_DEFAULT_MAX_EVENT_BYTES;
  if (o->watch_timeout_s == 0)
    o->watch_timeout_s = KUBE_DEFAULT_WATCH_TIMEOUT_S;
  if (o->backoff_base_ms == 0)
    o->backoff_base_ms = KUBE_BACKOFF_BASE_MS;
  if (o->backoff_max_ms == 0)
    o->backoff_max_ms = KUBE_BACKOFF_MAX_MS;
}

static void kube_set_tls(struct kube *k)
{
  struct kube_config *c = &k->kc;

  k->tls.ca_file = c->ca_file;
  k->tls.ca_pem = c->ca_pem;
  k->tls.ca_pem_len = c->ca_pem_len;
  k->tls.cert_file = c->cert_file;
  k->tls.cert_pem = c->cert_pem;
  k->tls.cert_pem_len = c->cert_pem_len;
  k->tls.key_file = c->key_file;
  k->tls.key_pem = c->key_pem;
  k->tls.key_pem_len = c->key_pem_len;
  k->tls.insecure = c->insecure;
}

static void kube_pump_cb(uv_timer_t *t);

struct kube *kube_new(uv_loop_t *loop, const struct kube_config *kc,
                      const struct kube_options *o)
{
  struct kube *k;

  if (kc == NULL || kc->server == NULL)
    return NULL;
  k = calloc(1, sizeof(*k));
  if (k == NULL)
    return NULL;
  k->loop = loop;
  if (o != NULL)
    k->o = *o;
  kube_defaults(&k->o);
  if (kube_copy_config(&k->kc, kc) != 0)
    goto fail;
  if (k->kc.token_file != NULL &&
      (k->tf.path = strdup(k->kc.token_file)) == NULL)
    goto fail;
  kube_set_tls(k);
  kube_bucket_init(&k->bucket, k->o.qps, k->o.burst, uv_now(loop));
  k->http = http_client_new(loop);
  if (k->http == NULL)
    goto fail;
  if (uv_timer_init(loop, &k->pump) != 0) {
    http_client_destroy(k->http);
    goto fail;
  }
  k->pump.data = k;
  k->nhandles = 1;
  kube_declare_metrics(k->o.metrics);
  return k;

fail:
  kube_token_file_free(&k->tf);
  kube_config_free(&k->kc);
  free(k);
  return NULL;
}

const char *kube_namespace(const struct kube *k)
{
  return k->kc.namespace_;
}

uv_loop_t *kube_loop(struct kube *k)
{
  return k->loop;
}

const struct kube_options *kube_opts(const struct kube *k)
{
  return &k->o;
}

int kube_closing(const struct kube *k)
{
  return k->closing;
}

/* Calls. */

static void kube_call_unlink(struct kube_call *c)
{
  struct kube *k = c->k;

  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    k->calls = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void kube_maybe_closed(struct kube *k)
{
  if (k->closing && !k->close_notified && k->nhandles == 0 && k->http_closed) {
    k->close_notified = 1;
    if (k->close_cb != NULL)
      k->close_cb(k->close_arg);
  }
}

static void kube_call_timer_closed(uv_handle_t *h)
{
  struct kube_call *c = h->data;
  struct kube *k = c->k;

  free(c->method);
  free(c->url);
  if (c->body != NULL)
    explicit_bzero(c->body, c->body_len);
  free(c->body);
  free(c->content_type);
  kube_watch_parser_free(&c->parser);
  free(c);
  k->nhandles--;
  kube_maybe_closed(k);
}

/* Takes c out of every list and frees it once its timer has closed. */
static void kube_call_free(struct kube_call *c)
{
  struct kube_call **q;

  if (c->state == CALL_FINISHING)
    return;
  if (c->state == CALL_QUEUED) {
    struct kube_call *before = NULL;

    for (q = &c->k->qhead; *q != NULL && *q != c; q = &(*q)->qnext)
      before = *q;
    if (*q == c) {
      *q = c->qnext;
      /* The first calls lead the queue: the one before c is one too. */
      if (c->k->qfirst == c)
        c->k->qfirst = before;
      if (c->k->qtail == c) {
        struct kube_call *t = c->k->qhead;

        while (t != NULL && t->qnext != NULL)
          t = t->qnext;
        c->k->qtail = t;
      }
    }
  }
  c->state = CALL_FINISHING;
  kube_call_unlink(c);
  uv_close((uv_handle_t *)&c->timer, kube_call_timer_closed);
}

static void kube_pump_soon(struct kube *k, uint64_t ms)
{
  if (k->closing)
    return;
  if (uv_timer_start(&k->pump, kube_pump_cb, ms, 0) != 0)
    log_error("kube", "rate limiter timer failed", LOG_NONE);
}

static void kube_enqueue(struct kube_call *c)
{
  struct kube *k = c->k;

  c->state = CALL_QUEUED;
  c->qnext = NULL;
  if (c->first) {
    struct kube_call **at = k->qfirst != NULL ? &k->qfirst->qnext : &k->qhead;

    c->qnext = *at;
    *at = c;
    k->qfirst = c;
    if (c->qnext == NULL)
      k->qtail = c;
  } else if (k->qtail != NULL) {
    k->qtail->qnext = c;
    k->qtail = c;
  } else {
    k->qhead = k->qtail = c;
  }
  if (k->qhead == c)
    kube_pump_soon(k, 0);
}

static void kube_deliver(struct kube_call *c, long status, int error,
                         json_t *obj, const char *transport_error)
{
  struct kube_response r;
  long code;

  memset(&r, 0, sizeof(r));
  r.status = status;
  r.error = error;
  r.object = obj;
  r.attempts = c->attempts;
  kube_status_fields(status >= 200 && status < 300 ? NULL : obj, &r.reason,
                     &r.message, &code);
  if (transport_error != NULL && r.message[0] == '\0')
    r.message = transport_error;
  /* The callback may call kube_close, which must not answer this call a
   * second time; the caller frees it once the callback returns. */
  c->delivering = 1;
  c->cb(c->arg, &r);
}

static json_t *kube_decode(const char *body, size_t len)
{
  json_t *obj;

  if (len == 0)
    return NULL;
  obj = json_loadb(body, len, 0, NULL);
  if (obj != NULL && !json_is_object(obj)) {
    json_decref(obj);
    obj = NULL;
  }
  return obj;
}

static void kube_retry_cb(uv_timer_t *t)
{
  struct kube_call *c = t->data;

  kube_enqueue(c);
}

static uint32_t kube_rand32(void)
{
  uint32_t r = 0;

  if (rand_bytes(&r, sizeof(r)) != 0)
    r = (uint32_t)uv_hrtime();
  return r;
}

/* Re-reads the token after a 401 when it comes from a file: rotation may
 * have happened since the last look. */
static int kube_reauth(struct kube_call *c, long status)
{
  struct kube *k = c->k;

  if (status != 401 || k->tf.path == NULL || c->reauth_tried)
    return 0;
  c->reauth_tried = 1;
  return kube_token_file_refresh(&k->tf, uv_now(k->loop), 0) == 1;
}

static void kube_schedule_retry(struct kube_call *c,
                                const struct http_client_response *resp)
{
  struct kube *k = c->k;
  char value[128], labels[96];
  uint64_t after = 0, delay;

  if (resp->status != 0 &&
      http_client_header(resp, "Retry-After", value, sizeof(value)) == 0 &&
      kube_parse_retry_after(value, time(NULL), &after) != 0)
    after = 0;
  delay = kube_backoff_ms(c->attempts, k->o.backoff_base_ms,
                          k->o.backoff_max_ms, after, kube_rand32());
  if (k->o.metrics != NULL) {
    snprintf(labels, sizeof(labels), "verb=\"%s\",code=\"%ld\"", c->method,
             resp->status);
    metrics_counter_add(k->o.metrics, "runfleet_kube_retries_total", labels, 1);
  }
  log_debug("kube", "retrying", LOG_S("verb", c->method),
            LOG_I("status", resp->status), LOG_U("attempt", c->attempts),
            LOG_U("delay_ms", delay));
  c->state = CALL_BACKOFF;
  if (uv_timer_start(&c->timer, kube_retry_cb, delay, 0) != 0)
    kube_enqueue(c);
}

static void kube_stream_finish(struct kube_call *c,
                               const struct http_client_response *resp);

static void kube_http_done(void *arg, const struct http_client_response *resp)
{
  struct kube_call *c = arg;
  int sent = 1, fatal = 0, error;
  json_t *obj;

  c->xfer = NULL;
  if (c->silent) {
    kube_call_free(c);
    return;
  }
  /* A try cut short by cancel or close is not a try the server saw. */
  if (resp->curl_code != CURLE_ABORTED_BY_CALLBACK)
    kube_count_request(c->k, c->method, resp->status);
  if (c->stream) {
    kube_stream_finish(c, resp);
    return;
  }
  if (resp->status == 0)
    kube_curl_class(resp->curl_code, &sent, &fatal);
  if (!c->k->closing && kube_reauth(c, resp->status)) {
    kube_enqueue(c);
    return;
  }
  if (!c->k->closing && !fatal && c->attempts < c->k->o.attempts &&
      resp->curl_code != CURLE_ABORTED_BY_CALLBACK &&
      kube_retryable(c->method, resp->status, sent)) {
    kube_schedule_retry(c, resp);
    return;
  }
  obj = resp->status != 0 ? kube_decode(resp->body, resp->body_len) : NULL;
  if (resp->status >= 200 && resp->status < 300)
    error = 0;
  else if (strcmp(c->method, "POST") == 0 &&
           (resp->status >= 500 || (resp->status == 0 && sent)))
    error = KUBE_ERR_UNCERTAIN;
  else if (resp->status != 0)
    error = -EPROTO;
  else if (resp->curl_code == CURLE_ABORTED_BY_CALLBACK)
    error = -ECANCELED;
  else if (resp->curl_code == CURLE_OPERATION_TIMEDOUT)
    error = -ETIMEDOUT;
  else
    error = -EIO;
  kube_deliver(c, resp->status, error, obj, resp->error);
  json_decref(obj);
  kube_call_free(c);
}

/* The Authorization header for this try: the token file is looked at
 * again (cheap stat) so a rotated token is used at once. */
static int kube_auth_header(struct kube *k, char *out, size_t size)
{
  const char *token = k->kc.token;
  int n;

  if (k->tf.path != NULL) {
    if (kube_token_file_refresh(&k->tf, uv_now(k->loop), KUBE_TOKEN_REREAD_MS) <
            0 &&
        k->tf.token == NULL)
      log_warn("kube", "token file unreadable", LOG_S("path", k->tf.path));
    token = k->tf.token;
  }
  if (token == NULL) {
    out[0] = '\0';
    return 0;
  }
  n = snprintf(out, size, "Authorization: Bearer %s", token);
  return n < 0 || (size_t)n >= size ? -1 : 1;
}

static int kube_stream_data(void *arg, const char *data, size_t len);

static int kube_send(struct kube_call *c)
{
  struct kube *k = c->k;
  const char *headers[KUBE_MAX_HEADERS];
  char auth[KUBE_AUTH_MAX], ctype[128];
  struct http_client_request req;
  size_t nh = 0;
  int rc;

  rc = kube_auth_header(k, auth, sizeof(auth));
  if (rc < 0)
    return -EINVAL;
  if (rc == 1)
    headers[nh++] = auth;
  headers[nh++] = "Accept: application/json";
  headers[nh++] = "User-Agent: runfleetd/" RUNFLEET_VERSION;
  if (c->body != NULL) {
    snprintf(ctype, sizeof(ctype), "Content-Type: %s",
             c->content_type ? c->content_type : "application/json");
    headers[nh++] = ctype;
  }
  headers[nh] = NULL;
  memset(&req, 0, sizeof(req));
  req.method = c->method;
  req.url = c->url;
  req.headers = headers;
  req.body = c->body;
  req.body_len = c->body_len;
  req.timeout_ms = k->o.timeout_ms;
  req.tls = &k->tls;
  if (c->stream) {
    req.data_cb = kube_stream_data;
    /* The server ends the watch at timeoutSeconds; bookmarks keep it
     * from looking idle well before that. */
    req.timeout_ms = ((uint64_t)k->o.watch_timeout_s + 60) * 1000;
    req.idle_timeout_ms = ((uint64_t)k->o.watch_timeout_s + 30) * 1000;
  }
  c->attempts++;
  c->state = CALL_SENT;
  rc = http_client_start(k->http, &req, kube_http_done, c, &c->xfer);
  explicit_bzero(auth, sizeof(auth));
  return rc;
}

/* Sends queued calls while the bucket has tokens; re-arms for the next. */
static void kube_pump_cb(uv_timer_t *t)
{
  struct kube *k = t->data;
  struct kube_call *c;
  struct http_client_response fail;
  uint64_t wait;

  while (!k->closing && k->qhead != NULL) {
    wait = kube_bucket_take(&k->bucket, uv_now(k->loop));
    if (wait != 0) {
      kube_pump_soon(k, wait == UINT64_MAX ? 1000 : wait);
      return;
    }
    c = k->qhead;
    k->qhead = c->qnext;
    if (k->qhead == NULL)
      k->qtail = NULL;
    if (k->qfirst == c)
      k->qfirst = NULL;
    c->qnext = NULL;
    if (kube_send(c) != 0) {
      memset(&fail, 0, sizeof(fail));
      fail.curl_code = CURLE_FAILED_INIT;
      fail.error = "request could not be started";
      fail.body = fail.headers = "";
      c->attempts = k->o.attempts;
      kube_http_done(c, &fail);
    }
  }
}

static struct kube_call *kube_call_new(struct kube *k, const char *method,
                                       const char *path, const char *query)
{
  struct kube_call *c;

  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->k = k;
  if (uv_timer_init(k->loop, &c->timer) != 0) {
    free(c);
    return NULL;
  }
  k->nhandles++;
  c->timer.data = c;
  c->method = strdup(method);
  if (asprintf(&c->url, "%s%s%s%s", k->kc.server, path,
               query && query[0] ? "?" : "", query ? query : "") < 0)
    c->url = NULL;
  c->next = k->calls;
  if (k->calls != NULL)
    k->calls->prev = c;
  k->calls = c;
  /* Freed through the timer's close, like every call. */
  c->state = CALL_BACKOFF;
  if (c->method == NULL || c->url == NULL) {
    kube_call_free(c);
    return NULL;
  }
  return c;
}

static int kube_request_queued(struct kube *k, const char *method,
                               const char *path, const char *query,
                               const json_t *body, const char *content_type,
                               int first, kube_done_cb cb, void *arg)
{
  struct kube_call *c;

  if (k->closing)
    return -ESHUTDOWN;
  if (method == NULL || path == NULL || path[0] != '/' || cb == NULL)
    return -EINVAL;
  c = kube_call_new(k, method, path, query);
  if (c == NULL)
    return -ENOMEM;
  c->cb = cb;
  c->arg = arg;
  if (body != NULL) {
    c->body = json_dumps(body, JSON_COMPACT);
    c->content_type = kube_dup(content_type);
    if (c->body == NULL || (content_type != NULL && c->content_type == NULL)) {
      kube_call_free(c);
      return -ENOMEM;
    }
    c->body_len = strlen(c->body);
  }
  c->first = first;
  kube_enqueue(c);
  return 0;
}

int kube_request(struct kube *k, const char *method, const char *path,
                 const char *query, const json_t *body,
                 const char *content_type, kube_done_cb cb, void *arg)
{
  return kube_request_queued(k, method, path, query, body, content_type, 0, cb,
                             arg);
}

/* Typed helpers: one object (name) or its collection (name NULL). */

static int object_request(struct kube *k, const char *method,
                          enum kube_kind kind, const char *ns, const char *name,
                          const char *query, const json_t *body,
                          const char *content_type, int first, kube_done_cb cb,
                          void *arg)
{
  char path[512];
  int rc = kube_path(kind, ns, name, path, sizeof(path));

  if (rc != 0)
    return rc;
  return kube_request_queued(k, method, path, query, body, content_type, first,
                             cb, arg);
}

int kube_create(struct kube *k, enum kube_kind kind, const char *ns,
                const json_t *obj, kube_done_cb cb, void *arg)
{
  return object_request(k, "POST", kind, ns, NULL, NULL, obj, NULL, 0, cb, arg);
}

int kube_create_first(struct kube *k, enum kube_kind kind, const char *ns,
                      const json_t *obj, kube_done_cb cb, void *arg)
{
  return object_request(k, "POST", kind, ns, NULL, NULL, obj, NULL, 1, cb, arg);
}

int kube_get(struct kube *k, enum kube_kind kind, const char *ns,
             const char *name, kube_done_cb cb, void *arg)
{
  if (name == NULL)
    return -EINVAL;
  return object_request(k, "GET", kind, ns, name, NULL, NULL, NULL, 0, cb, arg);
}

int kube_patch(struct kube *k, enum kube_kind kind, const char *ns,
               const char *name, enum kube_patch_type type, const json_t *patch,
               kube_done_cb cb, void *arg)
{
  if (name == NULL || patch == NULL)
    return -EINVAL;
  return object_request(k, "PATCH", kind, ns, name, NULL, patch,
                        type == KUBE_PATCH_STRATEGIC
                            ? "application/strategic-merge-patch+json"
                            : "application/merge-patch+json",
                        0, cb, arg);
}

int kube_delete(struct kube *k, enum kube_kind kind, const char *ns,
                const char *name, kube_done_cb cb, void *arg)
{
  if (name == NULL)
    return -EINVAL;
  return object_request(k, "DELETE", kind, ns, name,
                        "propagationPolicy=Background", NULL, NULL, 0, cb, arg);
}

/* Streams. */

struct kube_stream {
  struct kube_call call;
};

static int kube_stream_event(void *arg, enum kube_event_type type, json_t *obj)
{
  struct kube_call *c = arg;
  int rc;

  if (c->silent)
    return -ECANCELED;
  rc = c->event_cb(c->arg, type, obj);
  /* The consumer may have stopped the stream from its callback. */
  return c->silent ? -ECANCELED : rc;
}

static int kube_stream_data(void *arg, const char *data, size_t len)
{
  struct kube_call *c = arg;
  int rc;

  if (c->silent)
    return -1;
  rc = kube_watch_parser_feed(&c->parser, data, len, kube_stream_event, c);
  if (rc != 0 || c->silent) {
    c->stream_error = rc != 0 ? rc : -ECANCELED;
    return -1;
  }
  return 0;
}

static void kube_stream_finish(struct kube_call *c,
                               const struct http_client_response *resp)
{
  struct kube_response r;
  json_t *obj = NULL;
  long code;
  int error = 0;

  memset(&r, 0, sizeof(r));
  r.status = resp->status;
  r.attempts = c->attempts;
  r.reason = r.message = "";
  if (c->stream_error != 0) {
    error = c->stream_error;
  } else if (resp->status != 0 && (resp->status < 200 || resp->status >= 300)) {
    error = -EPROTO;
    obj = kube_decode(resp->body, resp->body_len);
    r.object = obj;
    kube_status_fields(obj, &r.reason, &r.message, &code);
  } else if (resp->curl_code != CURLE_OK) {
    error = resp->curl_code == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
    r.message = resp->error ? resp->error : "";
  } else {
    error = kube_watch_parser_finish(&c->parser);
  }
  r.error = error;
  c->sdone_cb(c->arg, error, &r);
  json_decref(obj);
  kube_call_free(c);
}

int kube_stream_start(struct kube *k, const char *path, const char *query,
                      kube_stream_event_cb event_cb,
                      kube_stream_done_cb done_cb, void *arg,
                      struct kube_stream **out)
{
  struct kube_call *c;

  if (k->closing)
    return -ESHUTDOWN;
  c = kube_call_new(k, "GET", path, query);
  if (c == NULL)
    return -ENOMEM;
  c->stream = 1;
  c->event_cb = event_cb;
  c->sdone_cb = done_cb;
  c->arg = arg;
  kube_watch_parser_init(&c->parser, k->o.max_event_bytes);
  kube_enqueue(c);
  *out = (struct kube_stream *)c;
  return 0;
}

void kube_stream_cancel(struct kube_stream *s)
{
  struct kube_call *c = (struct kube_call *)s;

  if (c->silent || c->state == CALL_FINISHING)
    return;
  c->silent = 1;
  if (c->state == CALL_SENT && c->xfer != NULL)
    http_client_cancel(c->xfer); /* frees c, now or after the callback */
  else
    kube_call_free(c);
}

/* Watch registry, for kube_close. */

void kube_watch_register(struct kube *k, struct kube_watch *w)
{
  struct kube_watch_link *l = malloc(sizeof(*l));

  if (l == NULL)
    return;
  l->w = w;
  l->next = k->watches;
  k->watches = l;
}

void kube_watch_unregister(struct kube *k, struct kube_watch *w)
{
  struct kube_watch_link **l, *gone;

  for (l = &k->watches; *l != NULL; l = &(*l)->next) {
    if ((*l)->w == w) {
      gone = *l;
      *l = gone->next;
      free(gone);
      return;
    }
  }
}

/* Closing. */

static void kube_http_closed(void *arg)
{
  struct kube *k = arg;

  k->http_closed = 1;
  kube_maybe_closed(k);
}

static void kube_pump_closed(uv_handle_t *h)
{
  struct kube *k = h->data;

  k->nhandles--;
  kube_maybe_closed(k);
}

void kube_close(struct kube *k, void (*done_cb)(void *arg), void *arg)
{
  struct kube_call *c;
  struct http_client_response cancelled;

  if (k->closing)
    return;
  k->closing = 1;
  k->close_cb = done_cb;
  k->close_arg = arg;
  while (k->watches != NULL)
    kube_watch_close(k->watches->w);
  memset(&cancelled, 0, sizeof(cancelled));
  cancelled.curl_code = CURLE_ABORTED_BY_CALLBACK;
  cancelled.error = "client closing";
  cancelled.body = cancelled.headers = "";
  /* A callback may start nothing now (closing), so the list only shrinks. */
  for (;;) {
    for (c = k->calls;
         c != NULL && (c->state == CALL_FINISHING || c->delivering);
         c = c->next)
      ;
    if (c == NULL)
      break;
    if (c->state == CALL_SENT && c->xfer != NULL) {
      http_client_cancel(c->xfer); /* runs kube_http_done */
      continue;
    }
    if (c->stream)
      c->silent = 1;
    if (c->silent) {
      kube_call_free(c);
      continue;
    }
    kube_http_done(c, &cancelled);
  }
  uv_close((uv_handle_t *)&k->pump, kube_pump_closed);
  http_client_close(k->http, kube_http_closed, k);
}

void kube_destroy(struct kube *k)
{
  if (k == NULL)
    return;
  http_client_destroy(k->http);
  kube_token_file_free(&k->tf);
  kube_config_free(&k->kc);
  free(k);
}
