/* Watch streams: the parser of newline-separated JSON events (pure, for
 * the fuzzer too) and the reflector: list, then watch from the list's
 * resourceVersion, re-watch from the last one seen, relist on 410 Gone and
 * deliver only what changed meanwhile. */
#include "kube.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "kube_int.h"
#include "log.h"
#include "metrics.h"
#include "rand.h"

#define KUBE_RV_MAX 64
/* A watch ERROR with this code, or an HTTP 410: the resourceVersion we
 * hold is older than what etcd kept. */
#define KUBE_GONE 410
/* Internal: an ERROR event said 410. */
#define KUBE_WATCH_GONE (-4100)
#define KUBE_WATCH_ERROR_EVENT (-4101)
/* A watch that ends cleanly sooner than this without an event is retried
 * after a backoff, not at once. */
#define KUBE_WATCH_MIN_LIFE_MS 1000

/* The parser. */

void kube_watch_parser_init(struct kube_watch_parser *p, size_t max)
{
  memset(p, 0, sizeof(*p));
  p->max = max;
}

void kube_watch_parser_free(struct kube_watch_parser *p)
{
  /* Secrets come through watches too. */
  if (p->buf != NULL)
    explicit_bzero(p->buf, p->cap);
  free(p->buf);
  p->buf = NULL;
  p->len = p->cap = 0;
}

void kube_watch_parser_reset(struct kube_watch_parser *p)
{
  if (p->buf != NULL)
    explicit_bzero(p->buf, p->len);
  p->len = 0;
  p->failed = 0;
}

static int kube_parser_append(struct kube_watch_parser *p, const char *s,
                              size_t n)
{
  size_t cap;
  char *grown;

  if (n > p->max - p->len)
    return KUBE_ERR_OVERSIZE;
  if (p->len + n > p->cap) {
    cap = p->cap ? p->cap : 4096;
    while (cap < p->len + n)
      cap *= 2;
    if (cap > p->max)
      cap = p->max;
    grown = malloc(cap);
    if (grown == NULL)
      return -ENOMEM;
    if (p->buf != NULL) {
      memcpy(grown, p->buf, p->len);
      explicit_bzero(p->buf, p->cap);
      free(p->buf);
    }
    p->buf = grown;
    p->cap = cap;
  }
  memcpy(p->buf + p->len, s, n);
  p->len += n;
  return 0;
}

static int kube_event_type_of(const char *s, enum kube_event_type *t)
{
  static const char *const names[] = {"ADDED", "MODIFIED", "DELETED",
                                      "BOOKMARK", "ERROR"};
  size_t i;

  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (strcmp(s, names[i]) == 0) {
      *t = (enum kube_event_type)i;
      return 0;
    }
  }
  return -1;
}

static int kube_is_blank(const char *s, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
      return 0;
  return 1;
}

static int kube_parse_line(const char *line, size_t n, kube_watch_parser_cb cb,
                           void *arg)
{
  enum kube_event_type type;
  json_t *ev, *obj;
  const char *ts;
  int rc;

  if (kube_is_blank(line, n))
    return 0;
  ev = json_loadb(line, n, JSON_REJECT_DUPLICATES, NULL);
  if (ev == NULL)
    return KUBE_ERR_MALFORMED;
  ts = json_string_value(json_object_get(ev, "type"));
  obj = json_object_get(ev, "object");
  if (!json_is_object(ev) || ts == NULL || kube_event_type_of(ts, &type) != 0 ||
      !json_is_object(obj)) {
    json_decref(ev);
    return KUBE_ERR_MALFORMED;
  }
  rc = cb(arg, type, obj);
  json_decref(ev);
  return rc;
}

int kube_watch_parser_feed(struct kube_watch_parser *p, const char *buf,
                           size_t len, kube_watch_parser_cb cb, void *arg)
{
  const char *nl;
  size_t n;
  int rc;

  if (p->failed)
    return p->failed;
  while (len > 0) {
    nl = memchr(buf, '\n', len);
    if (nl == NULL) {
      rc = kube_parser_append(p, buf, len);
      if (rc != 0)
        p->failed = rc;
      return rc;
    }
    n = (size_t)(nl - buf);
    if (p->len > 0) {
      rc = kube_parser_append(p, buf, n);
      if (rc == 0)
        rc = kube_parse_line(p->buf, p->len, cb, arg);
      explicit_bzero(p->buf, p->len);
      p->len = 0;
    } else {
      /* A whole line in this chunk is parsed in place. */
      rc = n > p->max ? KUBE_ERR_OVERSIZE : kube_parse_line(buf, n, cb, arg);
    }
    if (rc != 0) {
      p->failed = rc;
      return rc;
    }
    buf = nl + 1;
    len -= n + 1;
  }
  return 0;
}

int kube_watch_parser_finish(struct kube_watch_parser *p)
{
  if (p->failed)
    return p->failed;
  if (p->len > 0 && !kube_is_blank(p->buf, p->len))
    return KUBE_ERR_MALFORMED;
  return 0;
}

/* The reflector. */

enum kube_watch_state {
  WATCH_LISTING,  /* a page of the list is being fetched */
  WATCH_WATCHING, /* a watch stream is open (or queued) */
  WATCH_WAITING,  /* backoff before a relist or re-watch */
  WATCH_STOPPED,
};

struct kube_watch {
  struct kube *k;
  enum kube_watch_state state;
  enum kube_kind kind;
  char *ns;
  char *label_selector; /* escaped for a query */
  char *field_selector;
  unsigned page_size;
  kube_event_cb event_cb;
  kube_synced_cb synced_cb;
  void *arg;
  char rv[KUBE_RV_MAX];
  json_t *cache;   /* "ns/name" -> object */
  json_t *listing; /* the relist being gathered */
  char *continue_; /* next page's token */
  struct kube_stream *stream;
  int relist_next; /* after the wait: list (1) or watch (0) */
  unsigned failures;
  unsigned relists;
  uint64_t relist_since_ms; /* loop time a relist was decided; 0: none */
  int list_pending;         /* a list request will still call back */
  int timer_closed;
  uint64_t stream_started_ms; /* loop time the current watch was opened */
  unsigned stream_events;     /* events it delivered */
  uv_timer_t timer;
};

static const char *const kube_watch_state_names[] = {"listing", "watching",
                                                     "waiting", "stopped"};

/* The one place the state changes. */
static void kube_watch_set_state(struct kube_watch *w, enum kube_watch_state s)
{
  if (w->state == s)
    return;
  log_debug("kube", "watch state", LOG_S("resource", kube_kind_name(w->kind)),
            LOG_S("from", kube_watch_state_names[w->state]),
            LOG_S("to", kube_watch_state_names[s]));
  w->state = s;
}

static void kube_watch_free(struct kube_watch *w)
{
  free(w->ns);
  free(w->label_selector);
  free(w->field_selector);
  free(w->continue_);
  json_decref(w->cache);
  json_decref(w->listing);
  free(w);
}

static void kube_watch_timer_closed(uv_handle_t *h)
{
  struct kube_watch *w = h->data;

  w->timer_closed = 1;
  if (!w->list_pending)
    kube_watch_free(w);
}

static const char *kube_obj_str(const json_t *obj, const char *a, const char *b)
{
  return json_string_value(json_object_get(json_object_get(obj, a), b));
}

static int kube_obj_key(const json_t *obj, char *out, size_t size)
{
  const char *ns = kube_obj_str(obj, "metadata", "namespace");
  const char *name = kube_obj_str(obj, "metadata", "name");
  int n;

  if (name == NULL)
    return -1;
  n = snprintf(out, size, "%s/%s", ns ? ns : "", name);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

static void kube_watch_set_rv(struct kube_watch *w, const char *rv)
{
  if (rv != NULL && rv[0] != '\0' && strlen(rv) < sizeof(w->rv))
    snprintf(w->rv, sizeof(w->rv), "%s", rv);
}

static void kube_watch_list(struct kube_watch *w);
static char *kube_escape(const char *s);
static void kube_watch_watch(struct kube_watch *w);

static void kube_watch_timer_cb(uv_timer_t *t)
{
  struct kube_watch *w = t->data;

  if (w->relist_next)
    kube_watch_list(w);
  else
    kube_watch_watch(w);
}

/* Waits (jittered backoff, or not at all) before listing or watching. */
static void kube_watch_later(struct kube_watch *w, int relist, int backoff)
{
  const struct kube_options *o = kube_opts(w->k);
  uint32_t r = 0;
  uint64_t delay = 0;

  if (w->state == WATCH_STOPPED || kube_closing(w->k))
    return;
  if (backoff) {
    w->failures++;
    if (rand_bytes(&r, sizeof(r)) != 0)
      r = (uint32_t)uv_hrtime();
    delay = kube_backoff_ms(w->failures, o->backoff_base_ms, o->backoff_max_ms,
                            0, r);
  }
  w->relist_next = relist;
  kube_watch_set_state(w, WATCH_WAITING);
  if (uv_timer_start(&w->timer, kube_watch_timer_cb, delay, 0) != 0)
    log_error("kube", "watch timer failed", LOG_NONE);
}

static void kube_watch_restart(struct kube_watch *w, int relist, int backoff,
                               const char *reason)
{
  kube_count_restart(w->k, kube_kind_name(w->kind), reason);
  if (relist && w->relist_since_ms == 0)
    w->relist_since_ms = uv_now(kube_loop(w->k));
  kube_watch_later(w, relist, backoff);
}

static int kube_watch_query(struct kube_watch *w, char *out, size_t size,
                            int watch)
{
  size_t pos = 0;
  int n;

  if (watch)
    n = snprintf(out, size,
                 "watch=1&allowWatchBookmarks=true&resourceVersion=%s&"
                 "timeoutSeconds=%u",
                 w->rv, kube_opts(w->k)->watch_timeout_s);
  else
    n = snprintf(out, size, "limit=%u%s%s", w->page_size,
                 w->continue_ ? "&continue=" : "",
                 w->continue_ ? w->continue_ : "");
  if (n < 0 || (size_t)n >= size)
    return -1;
  pos = (size_t)n;
  if (w->label_selector != NULL) {
    n = snprintf(out + pos, size - pos, "&labelSelector=%s", w->label_selector);
    if (n < 0 || (size_t)n >= size - pos)
      return -1;
    pos += (size_t)n;
  }
  if (w->field_selector != NULL) {
    n = snprintf(out + pos, size - pos, "&fieldSelector=%s", w->field_selector);
    if (n < 0 || (size_t)n >= size - pos)
      return -1;
  }
  return 0;
}

/* What a relist found changed, by event type. */
struct kube_diff_counts {
  unsigned n[KUBE_EVENT_DELETED + 1];
};

/* Delivers one change; 1 when the consumer stopped the watch. */
static int kube_watch_emit(struct kube_watch *w, enum kube_event_type t,
                           json_t *obj, struct kube_diff_counts *c)
{
  c->n[t]++;
  w->event_cb(w->arg, t, obj);
  return w->state == WATCH_STOPPED;
}

/* The relist is complete: report what changed against the cache, then
 * swap. Deletions come first, so a name re-used by a new object (other
 * uid) is seen as DELETED then ADDED. */
static int kube_watch_diff(struct kube_watch *w, struct kube_diff_counts *c)
{
  json_t *old = w->cache, *now = w->listing, *o, *n;
  const char *key, *ouid, *nuid, *orv, *nrv;

  w->cache = now;
  w->listing = NULL;
  json_object_foreach(old, key, o)
  {
    n = json_object_get(now, key);
    ouid = kube_obj_str(o, "metadata", "uid");
    nuid = n ? kube_obj_str(n, "metadata", "uid") : NULL;
    if (n == NULL || (ouid && nuid && strcmp(ouid, nuid) != 0)) {
      if (kube_watch_emit(w, KUBE_EVENT_DELETED, o, c))
        goto stopped;
    }
  }
  json_object_foreach(now, key, n)
  {
    o = json_object_get(old, key);
    ouid = o ? kube_obj_str(o, "metadata", "uid") : NULL;
    nuid = kube_obj_str(n, "metadata", "uid");
    orv = o ? kube_obj_str(o, "metadata", "resourceVersion") : NULL;
    nrv = kube_obj_str(n, "metadata", "resourceVersion");
    if (o == NULL || (ouid && nuid && strcmp(ouid, nuid) != 0)) {
      if (kube_watch_emit(w, KUBE_EVENT_ADDED, n, c))
        goto stopped;
    } else if (orv == NULL || nrv == NULL || strcmp(orv, nrv) != 0) {
      if (kube_watch_emit(w, KUBE_EVENT_MODIFIED, n, c))
        goto stopped;
    }
  }
  json_decref(old);
  return 0;

stopped:
  json_decref(old);
  return 1;
}

static int kube_watch_take_page(struct kube_watch *w, json_t *list)
{
  json_t *items = json_object_get(list, "items"), *it;
  const char *cont = kube_obj_str(list, "metadata", "continue");
  char key[512];
  size_t i;

  if (!json_is_array(items))
    return -1;
  json_array_foreach(items, i, it)
  {
    if (kube_obj_key(it, key, sizeof(key)) != 0)
      continue;
    if (json_object_set(w->listing, key, it) != 0)
      return -1;
  }
  free(w->continue_);
  w->continue_ = NULL;
  if (cont != NULL && cont[0] != '\0') {
    w->continue_ = kube_escape(cont);
    if (w->continue_ == NULL)
      return -1;
    return 1;
  }
  kube_watch_set_rv(w, kube_obj_str(list, "metadata", "resourceVersion"));
  return 0;
}

/* A list after the first is done: counted, and logged with what it found
 * changed and how long it took from the decision to relist. */
static void kube_watch_relisted(struct kube_watch *w,
                                const struct kube_diff_counts *c)
{
  uint64_t ms = w->relist_since_ms != 0
                    ? uv_now(kube_loop(w->k)) - w->relist_since_ms
                    : 0;

  kube_count_relist(w->k, kube_kind_name(w->kind));
  log_info("kube", "watch relisted", LOG_S("resource", kube_kind_name(w->kind)),
           LOG_U("objects", json_object_size(w->cache)),
           LOG_U("added", c->n[KUBE_EVENT_ADDED]),
           LOG_U("modified", c->n[KUBE_EVENT_MODIFIED]),
           LOG_U("deleted", c->n[KUBE_EVENT_DELETED]), LOG_U("ms", ms));
}

static void kube_watch_list_cb(void *arg, const struct kube_response *r)
{
  struct kube_watch *w = arg;
  struct kube_diff_counts counts;
  int rc, paged;

  w->list_pending = 0;
  if (w->state == WATCH_STOPPED) {
    if (w->timer_closed)
      kube_watch_free(w);
    return;
  }
  if (r->error != 0) {
    log_warn("kube", "list failed", LOG_S("resource", kube_kind_name(w->kind)),
             LOG_I("status", r->status), LOG_S("reason", r->reason),
             LOG_S("error", r->message));
    /* An expired continue token (410 on a later page): start the list
     * over at once; anything else waits. */
    paged = w->continue_ != NULL;
    free(w->continue_);
    w->continue_ = NULL;
    json_decref(w->listing);
    w->listing = NULL;
    kube_watch_restart(w, 1, !(paged && r->status == KUBE_GONE), "list_failed");
    return;
  }
  rc = kube_watch_take_page(w, r->object);
  if (rc < 0) {
    json_decref(w->listing);
    w->listing = NULL;
    kube_watch_restart(w, 1, 1, "malformed");
    return;
  }
  if (rc == 1) {
    kube_watch_list(w);
    return;
  }
  memset(&counts, 0, sizeof(counts));
  if (kube_watch_diff(w, &counts))
    return;
  if (w->relists > 0)
    kube_watch_relisted(w, &counts);
  w->relist_since_ms = 0;
  w->relists++;
  if (w->synced_cb != NULL) {
    w->synced_cb(w->arg, w->relists);
    if (w->state == WATCH_STOPPED)
      return;
  }
  kube_watch_watch(w);
}

static void kube_watch_list(struct kube_watch *w)
{
  char path[512], query[2048];
  int rc;

  if (w->state == WATCH_STOPPED || kube_closing(w->k))
    return;
  kube_watch_set_state(w, WATCH_LISTING);
  if (w->listing == NULL && (w->listing = json_object()) == NULL)
    goto fail;
  if (kube_path(w->kind, w->ns, NULL, path, sizeof(path)) != 0 ||
      kube_watch_query(w, query, sizeof(query), 0) != 0)
    goto fail;
  rc =
      kube_request(w->k, "GET", path, query, NULL, NULL, kube_watch_list_cb, w);
  if (rc != 0)
    goto fail;
  w->list_pending = 1;
  return;

fail:
  kube_watch_later(w, 1, 1);
}

static int kube_watch_event_cb(void *arg, enum kube_event_type type,
                               json_t *obj)
{
  struct kube_watch *w = arg;
  const char *rv = kube_obj_str(obj, "metadata", "resourceVersion");
  const char *reason, *message;
  char key[512], labels[128];
  long code;

  if (kube_opts(w->k)->metrics != NULL) {
    snprintf(labels, sizeof(labels), "resource=\"%s\",type=\"%s\"",
             kube_kind_name(w->kind), kube_event_name(type));
    metrics_counter_add(kube_opts(w->k)->metrics,
                        "runfleet_kube_watch_events_total", labels, 1);
  }
  if (type == KUBE_EVENT_ERROR) {
    kube_status_fields(obj, &reason, &message, &code);
    log_info("kube", "watch error event",
             LOG_S("resource", kube_kind_name(w->kind)), LOG_I("code", code),
             LOG_S("reason", reason), LOG_S("message", message));
    return code == KUBE_GONE ? KUBE_WATCH_GONE : KUBE_WATCH_ERROR_EVENT;
  }
  w->failures = 0;
  w->stream_events++;
  kube_watch_set_rv(w, rv);
  if (type == KUBE_EVENT_BOOKMARK)
    return 0;
  if (kube_obj_key(obj, key, sizeof(key)) != 0)
    return 0;
  if (type == KUBE_EVENT_DELETED) {
    json_object_del(w->cache, key);
  } else if (json_object_set(w->cache, key, obj) != 0) {
    return -ENOMEM;
  }
  w->event_cb(w->arg, type, obj);
  return 0;
}

static void kube_watch_stream_done(void *arg, int error,
                                   const struct kube_response *r)
{
  struct kube_watch *w = arg;

  w->stream = NULL;
  if (w->state == WATCH_STOPPED)
    return;
  if (error == 0) {
    /* timeoutSeconds reached: carry on from where we are, at once; but a
     * server (or proxy) that ends every watch straight away is not
     * hammered. */
    kube_watch_restart(w, 0,
                       w->stream_events == 0 &&
                           uv_now(kube_loop(w->k)) - w->stream_started_ms <
                               KUBE_WATCH_MIN_LIFE_MS,
                       "closed");
  } else if (error == KUBE_WATCH_GONE || r->status == KUBE_GONE) {
    kube_watch_restart(w, 1, 0, "gone");
  } else if (error == KUBE_ERR_OVERSIZE) {
    log_warn("kube", "watch event over the size limit",
             LOG_S("resource", kube_kind_name(w->kind)),
             LOG_U("max_bytes", kube_opts(w->k)->max_event_bytes));
    kube_watch_restart(w, 0, 1, "oversize");
  } else if (error == KUBE_ERR_MALFORMED) {
    log_warn("kube", "malformed watch event",
             LOG_S("resource", kube_kind_name(w->kind)));
    kube_watch_restart(w, 0, 1, "malformed");
  } else {
    log_warn("kube", "watch ended", LOG_S("resource", kube_kind_name(w->kind)),
             LOG_I("status", r->status), LOG_S("error", r->message));
    kube_watch_restart(w, 0, 1, "error");
  }
}

static void kube_watch_watch(struct kube_watch *w)
{
  char path[512], query[2048];

  if (w->state == WATCH_STOPPED || kube_closing(w->k))
    return;
  if (w->rv[0] == '\0') {
    kube_watch_list(w);
    return;
  }
  kube_watch_set_state(w, WATCH_WATCHING);
  w->stream_started_ms = uv_now(kube_loop(w->k));
  w->stream_events = 0;
  if (kube_path(w->kind, w->ns, NULL, path, sizeof(path)) != 0 ||
      kube_watch_query(w, query, sizeof(query), 1) != 0 ||
      kube_stream_start(w->k, path, query, kube_watch_event_cb,
                        kube_watch_stream_done, w, &w->stream) != 0) {
    w->stream = NULL;
    kube_watch_later(w, 0, 1);
  }
}

/* A query value, percent-encoded, in memory of our own (free). */
static char *kube_escape(const char *s)
{
  char *e = curl_easy_escape(NULL, s, 0), *d;

  if (e == NULL)
    return NULL;
  d = strdup(e);
  curl_free(e);
  return d;
}

static char *kube_escape_opt(const char *s, int *fail)
{
  char *e;

  if (s == NULL || s[0] == '\0')
    return NULL;
  e = kube_escape(s);
  if (e == NULL)
    *fail = 1;
  return e;
}

struct kube_watch *kube_watch_start(struct kube *k,
                                    const struct kube_watch_options *o)
{
  struct kube_watch *w;
  char path[512];
  int fail = 0;

  if (kube_closing(k) || o == NULL || o->event_cb == NULL ||
      kube_path(o->kind, o->ns, NULL, path, sizeof(path)) != 0)
    return NULL;
  w = calloc(1, sizeof(*w));
  if (w == NULL)
    return NULL;
  w->k = k;
  w->kind = o->kind;
  w->page_size = o->page_size ? o->page_size : KUBE_DEFAULT_PAGE_SIZE;
  w->event_cb = o->event_cb;
  w->synced_cb = o->synced_cb;
  w->arg = o->arg;
  w->ns = o->ns ? strdup(o->ns) : NULL;
  w->label_selector = kube_escape_opt(o->label_selector, &fail);
  w->field_selector = kube_escape_opt(o->field_selector, &fail);
  w->cache = json_object();
  if (fail || (o->ns && w->ns == NULL) || w->cache == NULL ||
      uv_timer_init(kube_loop(k), &w->timer) != 0) {
    kube_watch_free(w);
    return NULL;
  }
  w->timer.data = w;
  kube_watch_register(k, w);
  w->state = WATCH_WAITING;
  kube_watch_list(w);
  return w;
}

void kube_watch_close(struct kube_watch *w)
{
  if (w->state == WATCH_STOPPED)
    return;
  kube_watch_set_state(w, WATCH_STOPPED);
  kube_watch_unregister(w->k, w);
  if (w->stream != NULL) {
    kube_stream_cancel(w->stream);
    w->stream = NULL;
  }
  uv_close((uv_handle_t *)&w->timer, kube_watch_timer_closed);
}

void kube_watch_stop(struct kube_watch *w)
{
  if (w != NULL)
    kube_watch_close(w);
}

const char *kube_watch_resource_version(const struct kube_watch *w)
{
  return w->rv;
}

const json_t *kube_watch_cache(const struct kube_watch *w)
{
  return w->cache;
}
