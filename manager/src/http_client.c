#include "http_client.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "log.h"

#define HTTP_DEFAULT_TIMEOUT_MS 30000
#define HTTP_CONNECT_TIMEOUT_MS 10000
#define HTTP_MAX_HEADER_BLOCK (64u << 10)
#define HTTP_DEFAULT_IDLE_TIMEOUT_MS 60000

/* One watched socket: curl tells us which events it wants through the
 * socket callback; the poll handle is freed only in its close callback. */
struct http_socket {
  uv_poll_t poll;
  curl_socket_t fd;
  struct http_client *client;
  int closing;
  struct http_socket *prev, *next;
};

struct http_buf {
  char *data;
  size_t len, cap, max;
  int too_big;
};

/* One request in flight, from http_client_send to its done callback. */
struct http_transfer {
  struct http_client *client;
  CURL *easy;
  struct curl_slist *headers;
  struct http_buf body;
  struct http_buf head;
  http_client_done_cb done_cb;
  http_client_data_cb data_cb; /* NULL: buffer the whole body */
  void *arg;
  int decided;   /* streaming: the status was looked at */
  int streaming; /* 2xx with a data_cb: chunks go to data_cb */
  int cancelled; /* http_client_cancel or data_cb asked to stop */
  char errbuf[CURL_ERROR_SIZE];
  struct http_transfer *prev, *next;
};

struct http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  unsigned nhandles; /* initialised uv handles not yet closed */
  unsigned pending;
  int in_curl; /* inside curl_multi_socket_action: no multi calls */
  int closing;
  int close_notified;
  void (*close_cb)(void *arg);
  void *close_arg;
  struct http_transfer *transfers;
  struct http_socket *sockets;
};

static int buf_append(struct http_buf *b, const char *p, size_t n)
{
  size_t cap;
  char *data;

  if (n > b->max - b->len) {
    b->too_big = 1;
    return -1;
  }
  if (b->len + n + 1 > b->cap) {
    cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    if (cap > b->max + 1)
      cap = b->max + 1;
    /* Not realloc: it would free the old block with the part of a token
     * or JIT config read so far still in it. */
    data = malloc(cap);
    if (data == NULL)
      return -1;
    if (b->data != NULL) {
      memcpy(data, b->data, b->len);
      explicit_bzero(b->data, b->cap);
      free(b->data);
    }
    b->data = data;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

/* A streamed body goes to data_cb only once the status says it is the
 * resource (2xx); an error body is kept whole for done_cb. */
static void decide_streaming(struct http_transfer *t)
{
  long status = 0;

  t->decided = 1;
  if (curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
    status = 0;
  t->streaming = status >= 200 && status < 300;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct http_transfer *t = userdata;
  size_t n = size * nmemb;

  /* Returning less than n aborts the transfer with CURLE_WRITE_ERROR. */
  if (t->cancelled)
    return 0;
  if (t->data_cb != NULL && !t->decided)
    decide_streaming(t);
  if (t->streaming) {
    if (t->data_cb(t->arg, ptr, n) != 0 || t->cancelled) {
      t->cancelled = 1;
      return 0;
    }
    return n;
  }
  if (buf_append(&t->body, ptr, n) != 0)
    return 0;
  return n;
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct http_transfer *t = userdata;
  size_t n = size * nmemb;

  /* Keep only the last block: interim 1xx responses come first. */
  if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0)
    t->head.len = 0;
  if (buf_append(&t->head, ptr, n) != 0)
    return 0;
  return n;
}

static void transfer_free(struct http_transfer *t)
{
  struct curl_slist *h;

  if (t->easy != NULL)
    curl_easy_cleanup(t->easy);
  /* The slist holds its own copy of the Authorization header. */
  for (h = t->headers; h != NULL; h = h->next)
    explicit_bzero(h->data, strlen(h->data));
  curl_slist_free_all(t->headers);
  /* Responses carry tokens and JIT configs. */
  if (t->body.data != NULL)
    explicit_bzero(t->body.data, t->body.cap);
  if (t->head.data != NULL)
    explicit_bzero(t->head.data, t->head.cap);
  free(t->body.data);
  free(t->head.data);
  free(t);
}

static void transfer_unlink(struct http_transfer *t)
{
  struct http_client *c = t->client;

  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    c->transfers = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  t->prev = t->next = NULL;
  c->pending--;
}

/* Removes t from the multi, runs its callback once and frees it. */
static void transfer_finish(struct http_transfer *t, CURLcode code)
{
  struct http_client *c = t->client;
  struct http_client_response resp;
  CURLMcode mc;
  long status = 0;
  double total = 0;

  memset(&resp, 0, sizeof(resp));
  if (code != CURLE_ABORTED_BY_CALLBACK) {
    if (curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
      status = 0;
    if (curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total) != CURLE_OK)
      total = 0;
  }
  if (t->cancelled) {
    code = CURLE_ABORTED_BY_CALLBACK;
    snprintf(t->errbuf, sizeof(t->errbuf), "transfer cancelled");
  } else if (t->body.too_big) {
    code = CURLE_FILESIZE_EXCEEDED;
    snprintf(t->errbuf, sizeof(t->errbuf), "response body over %u bytes",
             HTTP_CLIENT_MAX_RESPONSE);
  } else if (t->head.too_big) {
    code = CURLE_WRITE_ERROR;
    snprintf(t->errbuf, sizeof(t->errbuf), "response headers over %u bytes",
             HTTP_MAX_HEADER_BLOCK);
  }
  if (code != CURLE_OK)
    status = 0;
  if (c->multi != NULL) {
    mc = curl_multi_remove_handle(c->multi, t->easy);
    if (mc != CURLM_OK)
      log_error("http_client", "curl_multi_remove_handle failed",
                LOG_S("error", curl_multi_strerror(mc)));
  }
  transfer_unlink(t);

  resp.status = status;
  resp.curl_code = (int)code;
  if (code != CURLE_OK)
    resp.error = t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(code);
  resp.body = t->body.data != NULL ? t->body.data : "";
  resp.body_len = t->body.len;
  resp.headers = t->head.data != NULL ? t->head.data : "";
  resp.total_seconds = total;
  t->done_cb(t->arg, &resp);
  transfer_free(t);
}

/* Delivers every finished transfer. A callback may close the client, after
 * which the multi is gone and nothing more is read. */
static void check_multi_info(struct http_client *c)
{
  struct http_transfer *t;
  CURLMsg *msg;
  int left;

  while (!c->closing) {
    msg = curl_multi_info_read(c->multi, &left);
    if (msg == NULL)
      break;
    if (msg->msg != CURLMSG_DONE)
      continue;
    t = NULL;
    if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t) !=
            CURLE_OK ||
        t == NULL) {
      log_error("http_client", "finished transfer without owner", LOG_NONE);
      continue;
    }
    transfer_finish(t, msg->data.result);
  }
}

/* Transfers cancelled from inside a curl callback end here, once curl has
 * returned; a done callback may cancel or close more, so start over. */
static void reap_cancelled(struct http_client *c)
{
  struct http_transfer *t;

  while (!c->closing) {
    for (t = c->transfers; t != NULL && !t->cancelled; t = t->next)
      ;
    if (t == NULL)
      break;
    transfer_finish(t, CURLE_ABORTED_BY_CALLBACK);
  }
}

static void socket_action(struct http_client *c, curl_socket_t fd, int flags)
{
  CURLMcode mc;
  int running = 0;

  c->in_curl = 1;
  mc = curl_multi_socket_action(c->multi, fd, flags, &running);
  c->in_curl = 0;
  if (mc != CURLM_OK)
    log_error("http_client", "curl_multi_socket_action failed",
              LOG_S("error", curl_multi_strerror(mc)));
  check_multi_info(c);
  reap_cancelled(c);
}

static void poll_cb(uv_poll_t *handle, int status, int events)
{
  struct http_socket *s = handle->data;
  int flags = 0;

  if (s->closing || s->client->closing)
    return;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  socket_action(s->client, s->fd, flags);
}

static void timer_cb(uv_timer_t *handle)
{
  struct http_client *c = handle->data;

  if (!c->closing)
    socket_action(c, CURL_SOCKET_TIMEOUT, 0);
}

static void maybe_notify_closed(struct http_client *c)
{
  if (c->closing && !c->close_notified && c->nhandles == 0) {
    c->close_notified = 1;
    if (c->close_cb != NULL)
      c->close_cb(c->close_arg);
  }
}

static void socket_close_cb(uv_handle_t *handle)
{
  struct http_socket *s = handle->data;
  struct http_client *c = s->client;

  free(s);
  c->nhandles--;
  maybe_notify_closed(c);
}

static void socket_close(struct http_socket *s)
{
  struct http_client *c = s->client;

  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    c->sockets = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  s->closing = 1;
  uv_close((uv_handle_t *)&s->poll, socket_close_cb);
}

static struct http_socket *socket_new(struct http_client *c, curl_socket_t fd)
{
  struct http_socket *s;
  int rc;

  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  rc = uv_poll_init_socket(c->loop, &s->poll, fd);
  if (rc != 0) {
    log_error("http_client", "uv_poll_init_socket failed",
              LOG_S("error", uv_strerror(rc)));
    free(s);
    return NULL;
  }
  c->nhandles++;
  s->poll.data = s;
  s->fd = fd;
  s->client = c;
  s->next = c->sockets;
  if (c->sockets != NULL)
    c->sockets->prev = s;
  c->sockets = s;
  return s;
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching fd. */
static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp)
{
  struct http_client *c = userp;
  struct http_socket *s = socketp;
  int events = 0;
  int rc;

  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      socket_close(s);
      if (c->multi != NULL && curl_multi_assign(c->multi, fd, NULL) != CURLM_OK)
        log_warn("http_client", "curl_multi_assign failed", LOG_NONE);
    }
    return 0;
  }
  if (c->closing)
    return 0;
  if (s == NULL) {
    s = socket_new(c, fd);
    if (s == NULL)
      return -1;
    if (curl_multi_assign(c->multi, fd, s) != CURLM_OK) {
      socket_close(s);
      return -1;
    }
  }
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    events |= UV_WRITABLE;
  rc = uv_poll_start(&s->poll, events, poll_cb);
  if (rc != 0) {
    log_error("http_client", "uv_poll_start failed",
              LOG_S("error", uv_strerror(rc)));
    return -1;
  }
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: one timer; -1 stops it. A zero timeout still goes
 * through the loop, as curl forbids re-entering socket_action here. */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
  struct http_client *c = userp;
  int rc;

  (void)multi;
  if (timeout_ms < 0) {
    rc = uv_timer_stop(&c->timer);
  } else {
    rc = uv_timer_start(&c->timer, timer_cb, (uint64_t)timeout_ms, 0);
  }
  if (rc != 0) {
    log_error("http_client", "timer update failed",
              LOG_S("error", uv_strerror(rc)));
    return -1;
  }
  return 0;
}

struct http_client *http_client_new(uv_loop_t *loop)
{
  struct http_client *c;
  int rc;

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return NULL;
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    curl_global_cleanup();
    return NULL;
  }
  c->loop = loop;
  c->multi = curl_multi_init();
  if (c->multi == NULL)
    goto fail;
  if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb) !=
          CURLM_OK ||
      curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
      curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb) !=
          CURLM_OK ||
      curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK)
    goto fail;
  rc = uv_timer_init(loop, &c->timer);
  if (rc != 0)
    goto fail;
  c->timer.data = c;
  c->nhandles = 1;
  return c;

fail:
  if (c->multi != NULL)
    curl_multi_cleanup(c->multi);
  free(c);
  curl_global_cleanup();
  return NULL;
}

static int set_method(CURL *easy, const struct http_client_request *req)
{
  int has_body = req->body != NULL || strcmp(req->method, "POST") == 0;

  if (has_body) {
    if (curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(req->body ? req->body_len : 0)) !=
            CURLE_OK ||
        curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS,
                         req->body ? req->body : "") != CURLE_OK)
      return -1;
  }
  if (strcmp(req->method, "GET") == 0 && !has_body)
    return curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) == CURLE_OK ? 0 : -1;
  if (strcmp(req->method, "HEAD") == 0)
    return curl_easy_setopt(easy, CURLOPT_NOBODY, 1L) == CURLE_OK ? 0 : -1;
  if (strcmp(req->method, "POST") == 0)
    return 0;
  return curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method) == CURLE_OK
             ? 0
             : -1;
}

static int set_headers(struct http_transfer *t,
                       const struct http_client_request *req)
{
  const char *const *h;
  struct curl_slist *l;

  /* No "Expect: 100-continue" round trip before bodies. */
  l = curl_slist_append(t->headers, "Expect:");
  if (l == NULL)
    return -1;
  t->headers = l;
  for (h = req->headers; h != NULL && *h != NULL; h++) {
    l = curl_slist_append(t->headers, *h);
    if (l == NULL)
      return -1;
    t->headers = l;
  }
  return curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers) == CURLE_OK
             ? 0
             : -1;
}

static int set_blob(CURL *e, CURLoption opt, const char *pem, size_t len)
{
  struct curl_blob blob = {
      .data = (void *)pem, .len = len, .flags = CURL_BLOB_COPY};

  return curl_easy_setopt(e, opt, &blob) == CURLE_OK ? 0 : -1;
}

static int set_tls(CURL *e, const struct http_client_tls *tls)
{
  int rc = 0;

  if (tls == NULL)
    return 0;
  if (tls->ca_pem != NULL)
    rc |= set_blob(e, CURLOPT_CAINFO_BLOB, tls->ca_pem, tls->ca_pem_len);
  else if (tls->ca_file != NULL)
    rc |= curl_easy_setopt(e, CURLOPT_CAINFO, tls->ca_file) != CURLE_OK;
  if (tls->cert_pem != NULL)
    rc |= set_blob(e, CURLOPT_SSLCERT_BLOB, tls->cert_pem, tls->cert_pem_len);
  else if (tls->cert_file != NULL)
    rc |= curl_easy_setopt(e, CURLOPT_SSLCERT, tls->cert_file) != CURLE_OK;
  if (tls->key_pem != NULL)
    rc |= set_blob(e, CURLOPT_SSLKEY_BLOB, tls->key_pem, tls->key_pem_len);
  else if (tls->key_file != NULL)
    rc |= curl_easy_setopt(e, CURLOPT_SSLKEY, tls->key_file) != CURLE_OK;
  if (tls->insecure)
    rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
          curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK;
  return rc != 0 ? -1 : 0;
}

/* A stream has no whole-transfer limit unless asked; it ends when nothing
 * arrives for idle_timeout_ms (libcurl's low-speed check, in seconds). */
static int set_streaming(CURL *e, const struct http_client_request *req)
{
  uint64_t idle = req->idle_timeout_ms ? req->idle_timeout_ms
                                       : HTTP_DEFAULT_IDLE_TIMEOUT_MS;
  long secs = (long)((idle + 999) / 1000);

  if (curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, secs) != CURLE_OK)
    return -1;
  return 0;
}

static int transfer_setup(struct http_transfer *t,
                          const struct http_client_request *req)
{
  CURL *e = t->easy;
  long timeout =
      req->timeout_ms ? (long)req->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
  long connect;

  if (req->data_cb != NULL && req->timeout_ms == 0)
    timeout = 0;
  connect = timeout != 0 && timeout < HTTP_CONNECT_TIMEOUT_MS
                ? timeout
                : HTTP_CONNECT_TIMEOUT_MS;

  if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PRIVATE, t) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, t) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERDATA, t) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
    return -1;
  /* A stream's length is unknown; its error bodies are capped by buf. */
  if (req->data_cb == NULL &&
      curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                       (curl_off_t)HTTP_CLIENT_MAX_RESPONSE) != CURLE_OK)
    return -1;
  if (req->data_cb != NULL && set_streaming(e, req) != 0)
    return -1;
  if (set_method(e, req) != 0 || set_headers(t, req) != 0 ||
      set_tls(e, req->tls) != 0)
    return -1;
  return 0;
}

int http_client_send(struct http_client *c,
                     const struct http_client_request *req,
                     http_client_done_cb done_cb, void *arg)
{
  return http_client_start(c, req, done_cb, arg, NULL);
}

int http_client_start(struct http_client *c,
                      const struct http_client_request *req,
                      http_client_done_cb done_cb, void *arg,
                      struct http_transfer **out)
{
  struct http_transfer *t;
  CURLMcode mc;

  if (c->closing)
    return -ESHUTDOWN;
  if (req == NULL || req->method == NULL || req->url == NULL || done_cb == NULL)
    return -EINVAL;
  t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  t->client = c;
  t->done_cb = done_cb;
  t->data_cb = req->data_cb;
  t->arg = arg;
  t->body.max = HTTP_CLIENT_MAX_RESPONSE;
  t->head.max = HTTP_MAX_HEADER_BLOCK;
  t->easy = curl_easy_init();
  if (t->easy == NULL)
    goto fail;
  if (transfer_setup(t, req) != 0)
    goto fail;
  mc = curl_multi_add_handle(c->multi, t->easy);
  if (mc != CURLM_OK) {
    log_error("http_client", "curl_multi_add_handle failed",
              LOG_S("error", curl_multi_strerror(mc)));
    goto fail;
  }
  t->next = c->transfers;
  if (c->transfers != NULL)
    c->transfers->prev = t;
  c->transfers = t;
  c->pending++;
  if (out != NULL)
    *out = t;
  return 0;

fail:
  transfer_free(t);
  return -EIO;
}

void http_client_cancel(struct http_transfer *t)
{
  t->cancelled = 1;
  /* curl forbids removing a handle from inside its callbacks. */
  if (!t->client->in_curl)
    transfer_finish(t, CURLE_ABORTED_BY_CALLBACK);
}

unsigned http_client_pending(const struct http_client *c)
{
  return c->pending;
}

static void timer_close_cb(uv_handle_t *handle)
{
  struct http_client *c = handle->data;

  c->nhandles--;
  maybe_notify_closed(c);
}

void http_client_close(struct http_client *c, void (*done_cb)(void *arg),
                       void *arg)
{
  CURLM *multi;

  if (c->closing)
    return;
  c->closing = 1;
  c->close_cb = done_cb;
  c->close_arg = arg;
  /* A callback below may start a request; closing makes it fail. */
  while (c->transfers != NULL)
    transfer_finish(c->transfers, CURLE_ABORTED_BY_CALLBACK);
  /* Cleaning the multi closes the cached connections, and curl removes
   * their sockets through curl_socket_cb. */
  multi = c->multi;
  c->multi = NULL;
  if (curl_multi_cleanup(multi) != CURLM_OK)
    log_warn("http_client", "curl_multi_cleanup failed", LOG_NONE);
  while (c->sockets != NULL)
    socket_close(c->sockets);
  uv_close((uv_handle_t *)&c->timer, timer_close_cb);
}

void http_client_destroy(struct http_client *c)
{
  if (c == NULL)
    return;
  assert(c->multi == NULL && c->nhandles == 0);
  free(c);
  curl_global_cleanup();
}

int http_client_header(const struct http_client_response *resp,
                       const char *name, char *out, size_t out_size)
{
  const char *p = resp->headers;
  size_t name_len = strlen(name);
  const char *eol, *v, *end;
  size_t n;

  if (p == NULL || out_size == 0)
    return -1;
  for (; *p != '\0'; p = *eol != '\0' ? eol + 1 : eol) {
    eol = strchr(p, '\n');
    if (eol == NULL)
      eol = p + strlen(p);
    if ((size_t)(eol - p) <= name_len || p[name_len] != ':' ||
        strncasecmp(p, name, name_len) != 0)
      continue;
    v = p + name_len + 1;
    end = eol;
    while (v < end && (*v == ' ' || *v == '\t'))
      v++;
    while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
      end--;
    n = (size_t)(end - v);
    if (n >= out_size)
      return -1;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
  }
  return -1;
}
