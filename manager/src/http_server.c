#include "http_server.h"
#include "http_server_int.h"

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>

#include "log.h"
#include "unittest.h"

#define MOD "http"

static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_header_field(http_parser *p, const char *at, size_t len);
static int on_header_value(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_body(http_parser *p, const char *at, size_t len);
static int on_message_complete(http_parser *p);

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void conn_process(struct http_conn *c);
void http_conn_close(struct http_conn *c);

static uint64_t timer_ms(uint64_t ms)
{
  /* 0 would fire at once; treat it as "as soon as possible" but not never. */
  return ms > 0 ? ms : 1;
}

static void server_maybe_done(struct http_server *s)
{
  void (*cb)(void *arg);

  if (!s->stopping || s->handles_open > 0 || s->done_cb == NULL)
    return;
  cb = s->done_cb;
  s->done_cb = NULL;
  /* Last: the callback may destroy the server. */
  cb(s->done_arg);
}

static const char *state_name(enum http_conn_state st)
{
  switch (st) {
  case CONN_IDLE:
    return "idle";
  case CONN_READING:
    return "reading";
  case CONN_WAITING:
    return "waiting";
  case CONN_LINGER:
    return "linger";
  case CONN_CLOSED:
    return "closed";
  }
  return "?";
}

/* Every state change goes through here, so in_flight and deferred stay
 * right. */
static void conn_set_state(struct http_conn *c, enum http_conn_state st)
{
  struct http_server *s = c->server;

  if (c->state == st)
    return;
  if (c->state == CONN_READING || c->state == CONN_WAITING)
    s->stats.in_flight--;
  if (c->state == CONN_WAITING)
    s->stats.deferred--;
  if (st == CONN_READING || st == CONN_WAITING)
    s->stats.in_flight++;
  if (st == CONN_WAITING)
    s->stats.deferred++;
  log_debug(MOD, "connection state", LOG_S("peer", c->req.peer),
            LOG_S("from", state_name(c->state)), LOG_S("to", state_name(st)));
  c->state = st;
}

const char *http_server_name(const struct http_server *s)
{
  return s->limits.name != NULL ? s->limits.name : "http";
}

/* ---- writing ---- */

static void write_free(struct http_write *w)
{
  free(w->head);
  free(w->body);
  free(w);
}

static void conn_start_reading(struct http_conn *c);

static void conn_arm(struct http_conn *c, uint64_t ms);

static void write_cb(uv_write_t *req, int status)
{
  struct http_write *w = req->data;
  struct http_conn *c = w->conn;

  write_free(w);
  c->writes_pending--;
  if (c->state == CONN_CLOSED)
    return;
  if (status < 0) {
    log_debug(MOD, "write failed", LOG_S("peer", c->req.peer),
              LOG_S("err", uv_err_name(status)));
    http_conn_close(c);
    return;
  }
  if (c->state != CONN_IDLE)
    return;
  /* Progress: the idle clock counts from the last thing that happened. */
  conn_arm(c, c->server->limits.idle_timeout_ms);
  if (c->writes_pending < HTTP_MAX_PENDING_WRITES) {
    conn_process(c);
    /* Read more only once what is buffered is parsed. */
    if ((c->state == CONN_IDLE || c->state == CONN_READING) &&
        c->roff >= c->rlen)
      conn_start_reading(c);
  }
}

/* Queues head+body on the connection; takes ownership of both. */
static int conn_write(struct http_conn *c, char *head, size_t head_len,
                      char *body, size_t body_len)
{
  struct http_write *w;
  uv_buf_t bufs[2];
  unsigned nbufs = 1;
  int rc;

  if (c->sink) {
    free(head);
    free(body);
    return 0;
  }
  w = calloc(1, sizeof(*w));
  if (w == NULL) {
    free(head);
    free(body);
    return -1;
  }
  w->conn = c;
  w->head = head;
  w->body = body;
  w->req.data = w;
  bufs[0] = uv_buf_init(head, (unsigned)head_len);
  if (body != NULL && body_len > 0)
    bufs[nbufs++] = uv_buf_init(body, (unsigned)body_len);
  rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, write_cb);
  if (rc < 0) {
    log_debug(MOD, "write refused", LOG_S("peer", c->req.peer),
              LOG_S("err", uv_err_name(rc)));
    write_free(w);
    return -1;
  }
  c->writes_pending++;
  return 0;
}

/* Writes resp (taking its body and extra headers); head_only for HEAD. */
static int conn_send(struct http_conn *c, struct http_response *resp,
                     int keep_alive, int head_only)
{
  char date[40];
  char *head = NULL;
  const char *extra = resp->extra_headers ? resp->extra_headers : "";
  size_t extra_len = strlen(extra);
  int status = resp->status;
  int n;
  int rc;

  /* Header lines from the handler must each end in CRLF, or they would
   * run into ours. */
  if (extra_len > 0 &&
      (extra_len < 2 || strcmp(extra + extra_len - 2, "\r\n") != 0)) {
    log_error(MOD, "handler gave malformed extra headers",
              LOG_S("path", c->req.path != NULL ? c->req.path : "-"));
    extra = "";
    extra_len = 0;
  }
  if (resp->body_len > UINT32_MAX) {
    log_error(MOD, "response body too large", LOG_U("len", resp->body_len));
    status = 500;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
  }
  head = malloc(HTTP_HEAD_MAX + extra_len);
  if (head == NULL) {
    free(resp->body);
    free(resp->extra_headers);
    return -1;
  }
  if (status < 200 || status > 999) {
    log_error(MOD, "handler gave no valid status", LOG_I("status", status),
              LOG_S("path", c->req.path != NULL ? c->req.path : "-"));
    status = 500;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
  }
  http_date(time(NULL), date, sizeof(date));
  n = snprintf(head, HTTP_HEAD_MAX + extra_len,
               "HTTP/1.1 %d %s\r\n"
               "Date: %s\r\n"
               "Content-Type: %s\r\n"
               "Content-Length: %zu\r\n"
               "Connection: %s\r\n"
               "%s\r\n",
               status, http_reason(status), date,
               resp->content_type ? resp->content_type : "text/plain",
               resp->body_len, keep_alive ? "keep-alive" : "close", extra);
  free(resp->extra_headers);
  resp->extra_headers = NULL;
  if (n < 0 || (size_t)n >= HTTP_HEAD_MAX + extra_len) {
    free(head);
    free(resp->body);
    return -1;
  }
  if (head_only) {
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
  }
  rc = conn_write(c, head, (size_t)n, resp->body, resp->body_len);
  resp->body = NULL;
  return rc;
}

/* ---- closing ---- */

/* The head holds bearer tokens (admin callers, runners' hook reports). */
static void request_wipe(struct http_conn *c)
{
  if (c->hbuf != NULL)
    explicit_bzero(c->hbuf, c->hcap);
}

static void conn_close_cb(uv_handle_t *h)
{
  struct http_conn *c = h->data;
  struct http_server *s = c->server;

  if (--c->handles_open > 0)
    return;
  request_wipe(c);
  free(c->hbuf);
  free(c->body);
  explicit_bzero(c->rbuf, sizeof(c->rbuf));
  free(c);
  s->handles_open--;
  server_maybe_done(s);
}

void http_conn_close(struct http_conn *c)
{
  struct http_server *s = c->server;

  if (c->state == CONN_CLOSED)
    return;
  /* A holder of the deferral may still answer: it then finds no one. */
  if (c->deferred != NULL) {
    c->deferred->conn = NULL;
    c->deferred = NULL;
  }
  conn_set_state(c, CONN_CLOSED);
  if (c->peer != NULL) {
    c->peer->conns--;
    c->peer = NULL;
  }
  if (s->conns_tail == c)
    s->conns_tail = c->prev;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (s->conns == c)
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  s->stats.open--;
  uv_close((uv_handle_t *)&c->timer, conn_close_cb);
  uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void linger_timer_cb(uv_timer_t *t)
{
  http_conn_close(t->data);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
  struct http_conn *c = req->data;

  if (c->state == CONN_CLOSED)
    return;
  c->shut_down = 1;
  /* Everything is written: now only wait a little for the peer's EOF. */
  if (status < 0 || c->peer_eof ||
      uv_timer_start(&c->timer, linger_timer_cb, HTTP_LINGER_MS, 0) < 0)
    http_conn_close(c);
}

/* No more requests on this connection: send FIN once the responses are
 * out, and drain input until EOF or HTTP_LINGER_MS. */
static void conn_linger(struct http_conn *c)
{
  int rc;

  if (c->state == CONN_LINGER || c->state == CONN_CLOSED)
    return;
  conn_set_state(c, CONN_LINGER);
  c->shutdown_req.data = c;
  rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb);
  /* Until the responses are out, a peer that does not read gets as long
   * as an idle one; shutdown_cb then shortens it to HTTP_LINGER_MS. */
  if (rc == 0)
    rc = uv_timer_start(&c->timer, linger_timer_cb,
                        timer_ms(c->server->limits.idle_timeout_ms), 0);
  if (rc == 0 && !c->reading && !c->peer_eof)
    conn_start_reading(c);
  if (rc < 0)
    http_conn_close(c);
}

/* Refuses the request with status and closes the connection after; one
 * log line unless the refusal is summed in the periodic one. */
static void conn_fail_as(struct http_conn *c, int status, int summed)
{
  struct http_response resp = {0};
  const char *reason = http_reason(status);

  if (c->state == CONN_LINGER || c->state == CONN_CLOSED)
    return;
  log_at(summed ? LOG_DEBUG : LOG_INFO, MOD, "request refused",
         LOG_S("peer", c->req.peer), LOG_I("status", status),
         LOG_S("reason", reason));
  resp.status = status;
  if (http_response_set(&resp, status, "text/plain", reason, strlen(reason)) <
          0 ||
      conn_send(c, &resp, 0, 0) < 0) {
    free(resp.body);
    http_conn_close(c);
    return;
  }
  conn_linger(c);
}

static void conn_fail(struct http_conn *c, int status)
{
  conn_fail_as(c, status, 0);
}

/* ---- timers ---- */

static void conn_expire(struct http_conn *c);

static void conn_timer_cb(uv_timer_t *t)
{
  struct http_conn *c = t->data;
  struct http_server *s = c->server;

  if (c->state == CONN_READING) {
    if (!c->head_done && s->limits.header_timeout_ms > 0) {
      http_refused(s, REFUSED_HEADER_TIMEOUT, c->req.peer);
      conn_fail_as(c, 408, 1);
      return;
    }
    s->stats.timed_out++;
    conn_fail(c, 408);
  } else if (c->state == CONN_WAITING) {
    /* The timer is the deferral's limit here, not a read or idle one. */
    conn_expire(c);
  } else if (c->state == CONN_IDLE) {
    /* Idle keep-alive, a new connection that sent nothing, or a peer that
     * stopped reading our responses. */
    if (c->writes_pending > 0)
      s->stats.timed_out++;
    else if (c->served == 0 && s->limits.header_timeout_ms > 0)
      http_refused(s, REFUSED_HEADER_TIMEOUT, c->req.peer);
    http_conn_close(c);
  }
}

static void conn_arm(struct http_conn *c, uint64_t ms)
{
  if (uv_timer_start(&c->timer, conn_timer_cb, timer_ms(ms), 0) < 0)
    http_conn_close(c);
}

/* ---- reading and parsing ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct http_conn *c = h->data;

  (void)suggested;
  if (c->state == CONN_LINGER) {
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
    return;
  }
  /* Reading only resumes once the buffer was fully parsed. */
  assert(c->roff == c->rlen);
  c->roff = c->rlen = 0;
  *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void conn_stop_reading(struct http_conn *c);

/* The client sent FIN. A half-closed client may still read: answers
 * already queued are delivered before we close; a partly read request
 * can never complete and dies here. */
static void conn_peer_eof(struct http_conn *c)
{
  c->peer_eof = 1;
  conn_stop_reading(c);
  /* The deferred answer still goes out; then the connection closes. */
  if (c->state == CONN_WAITING)
    return;
  if (c->state == CONN_LINGER) {
    if (c->shut_down)
      http_conn_close(c);
    return;
  }
  if (c->state == CONN_IDLE && c->writes_pending > 0 && c->roff >= c->rlen) {
    conn_linger(c);
    return;
  }
  http_conn_close(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct http_conn *c = stream->data;

  (void)buf;
  if (c->state == CONN_CLOSED)
    return;
  if (nread == 0)
    return;
  if (nread == UV_EOF) {
    conn_peer_eof(c);
    return;
  }
  if (nread < 0) {
    log_debug(MOD, "read failed", LOG_S("peer", c->req.peer),
              LOG_S("err", uv_err_name((int)nread)));
    http_conn_close(c);
    return;
  }
  if (c->state == CONN_LINGER) {
    c->lingered += (size_t)nread;
    if (c->lingered > HTTP_LINGER_MAX_BYTES)
      http_conn_close(c);
    return;
  }
  c->rlen = (size_t)nread;
  c->roff = 0;
  if (c->state == CONN_WAITING) {
    /* Pipelined requests are parsed once the answer before them is out;
     * until then the buffer holds them and nothing more is read. */
    conn_stop_reading(c);
    return;
  }
  conn_process(c);
}

static void conn_start_reading(struct http_conn *c)
{
  int rc;

  if (c->reading || c->peer_eof || c->state == CONN_CLOSED)
    return;
  rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (rc < 0) {
    http_conn_close(c);
    return;
  }
  c->reading = 1;
}

static void conn_stop_reading(struct http_conn *c)
{
  if (!c->reading)
    return;
  (void)uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

static void request_reset(struct http_conn *c)
{
  request_wipe(c);
  free(c->hbuf);
  free(c->body);
  c->hbuf = NULL;
  c->body = NULL;
  c->hlen = c->hcap = 0;
  c->body_cap = 0;
  c->header_bytes = 0;
  c->part = PART_NONE;
  c->url = NULL;
  c->req.method = NULL;
  c->req.path = NULL;
  c->req.query = NULL;
  c->req.nheaders = 0;
  c->req.body = c->empty;
  c->req.body_len = 0;
  c->error_status = 0;
}

static int on_message_begin(http_parser *p)
{
  struct http_conn *c = p->data;
  struct http_server *s = c->server;

  request_reset(c);
  c->hcap = s->limits.max_header_bytes + 2 * HTTP_MAX_HEADERS + 2;
  c->hbuf = malloc(c->hcap);
  if (c->hbuf == NULL) {
    c->error_status = 500;
    return -1;
  }
  c->header_bytes = HTTP_REQUEST_LINE_OVERHEAD;
  c->head_done = 0;
  c->begin_ms = c->active_ms = uv_now(s->loop);
  conn_set_state(c, CONN_READING);
  /* The whole request must arrive within read_timeout_ms of its start,
   * and its head within header_timeout_ms when that is shorter. */
  if (s->limits.header_timeout_ms > 0 &&
      s->limits.header_timeout_ms < s->limits.read_timeout_ms)
    conn_arm(c, s->limits.header_timeout_ms);
  else
    conn_arm(c, s->limits.read_timeout_ms);
  return 0;
}

/* Appends header-section bytes to the current string, switching strings
 * (and NUL-terminating the previous one) when part changes. */
static int hdr_append(struct http_conn *c, enum http_hdr_part part,
                      const char *at, size_t len)
{
  struct http_server *s = c->server;
  size_t extra = 0;

  if (c->part != part) {
    /* A new header line costs ": " and CRLF on the wire. */
    if (part == PART_FIELD)
      extra = 4;
    if (c->part != PART_NONE)
      c->hbuf[c->hlen++] = '\0';
    if (part == PART_URL) {
      c->url = c->hbuf + c->hlen;
    } else if (part == PART_FIELD) {
      if (c->req.nheaders == HTTP_MAX_HEADERS) {
        c->error_status = 431;
        return -1;
      }
      c->req.headers[c->req.nheaders].name = c->hbuf + c->hlen;
      c->req.headers[c->req.nheaders].value = c->empty;
      c->req.nheaders++;
    } else {
      c->req.headers[c->req.nheaders - 1].value = c->hbuf + c->hlen;
    }
    c->part = part;
  }
  if (c->header_bytes + len + extra > s->limits.max_header_bytes) {
    c->error_status = 431;
    return -1;
  }
  c->header_bytes += len + extra;
  /* Stored bytes never exceed counted ones, and hcap leaves room for one
   * NUL per string. */
  assert(c->hlen + len < c->hcap);
  memcpy(c->hbuf + c->hlen, at, len);
  c->hlen += len;
  return 0;
}

/* Trailer fields after a chunked body: counted against the header limit
 * but not kept. Storing them would add headers after the head was closed,
 * which the handler would read past their end (no NUL follows). */
static int trailer_skip(struct http_conn *c, size_t len)
{
  if (c->header_bytes + len > c->server->limits.max_header_bytes) {
    c->error_status = 431;
    return -1;
  }
  c->header_bytes += len;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
  return hdr_append(p->data, PART_URL, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
  struct http_conn *c = p->data;

  if (c->head_done)
    return trailer_skip(c, len);
  return hdr_append(c, PART_FIELD, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
  struct http_conn *c = p->data;

  if (c->head_done)
    return trailer_skip(c, len);
  /* A value without a field cannot happen; guard the index anyway. */
  if (c->req.nheaders == 0) {
    c->error_status = 400;
    return -1;
  }
  return hdr_append(c, PART_VALUE, at, len);
}

/* Splits the URL into path and query (in place) and fixes the request. */
static int request_finish_head(struct http_conn *c)
{
  struct http_parser_url u;
  size_t url_len;

  if (c->url == NULL)
    return -1;
  c->hbuf[c->hlen++] = '\0';
  c->part = PART_NONE;
  c->req.method = http_method_str((enum http_method)c->parser.method);
  url_len = strlen(c->url);
  http_parser_url_init(&u);
  if (http_parser_parse_url(c->url, url_len, c->parser.method == HTTP_CONNECT,
                            &u) != 0)
    return -1;
  if (u.field_set & (1 << UF_QUERY)) {
    c->req.query = c->url + u.field_data[UF_QUERY].off;
    c->req.query[u.field_data[UF_QUERY].len] = '\0';
  }
  if (u.field_set & (1 << UF_PATH)) {
    c->req.path = c->url + u.field_data[UF_PATH].off;
    c->req.path[u.field_data[UF_PATH].len] = '\0';
  } else {
    c->req.path = c->root;
  }
  return 0;
}

static int expects_continue(struct http_conn *c)
{
  const char *v = http_request_header(&c->req, "Expect");

  return v != NULL && strcasecmp(v, "100-continue") == 0 &&
         c->parser.http_major == 1 && c->parser.http_minor >= 1;
}

static int on_headers_complete(http_parser *p)
{
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  struct http_conn *c = p->data;
  struct http_server *s = c->server;
  int has_length = (p->flags & F_CONTENTLENGTH) != 0;
  int has_body = (p->flags & F_CHUNKED) || (has_length && p->content_length);
  char *copy;

  if (c->header_bytes + 2 > s->limits.max_header_bytes) {
    c->error_status = 431;
    return -1;
  }
  if (request_finish_head(c) < 0) {
    c->error_status = 400;
    return -1;
  }
  c->head_done = 1;
  if (s->limits.header_timeout_ms > 0 &&
      s->limits.header_timeout_ms < s->limits.read_timeout_ms) {
    uint64_t spent = uv_now(s->loop) - c->begin_ms;

    conn_arm(c, spent < s->limits.read_timeout_ms
                    ? s->limits.read_timeout_ms - spent
                    : 1);
  }
  if (has_length && p->content_length > s->limits.max_body_bytes) {
    c->error_status = 413;
    return -1;
  }
  if (has_length && p->content_length > 0) {
    c->body = malloc((size_t)p->content_length + 1);
    if (c->body == NULL) {
      c->error_status = 500;
      return -1;
    }
    c->body_cap = (size_t)p->content_length + 1;
  }
  if (has_body && expects_continue(c)) {
    copy = malloc(sizeof(cont));
    if (copy == NULL) {
      c->error_status = 500;
      return -1;
    }
    memcpy(copy, cont, sizeof(cont));
    if (conn_write(c, copy, sizeof(cont) - 1, NULL, 0) < 0) {
      c->error_status = 500;
      return -1;
    }
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
  struct http_conn *c = p->data;
  struct http_server *s = c->server;
  size_t have = c->req.body_len;

  /* Chunked bodies have no length up front: check as they stream. */
  if (len > s->limits.max_body_bytes - have) {
    c->error_status = 413;
    return -1;
  }
  if (have + len + 1 > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 1024;
    char *nb;

    while (cap < have + len + 1)
      cap *= 2;
    if (cap > s->limits.max_body_bytes + 1)
      cap = s->limits.max_body_bytes + 1;
    nb = realloc(c->body, cap);
    if (nb == NULL) {
      c->error_status = 500;
      return -1;
    }
    c->body = nb;
    c->body_cap = cap;
  }
  memcpy(c->body + have, at, len);
  c->req.body_len = have + len;
  return 0;
}

static int on_message_complete(http_parser *p)
{
  struct http_conn *c = p->data;

  if (c->body != NULL) {
    c->body[c->req.body_len] = '\0';
    c->req.body = c->body;
  }
  c->keep_alive = http_should_keep_alive(p);
  c->request_done = 1;
  /* Hand one request at a time to conn_process, which answers it before
   * parsing the next: pipelined responses then go out in order. */
  http_parser_pause(p, 1);
  return 0;
}

/* The handler deferred its answer: the connection waits for it, within
 * the deferral's limit instead of the read and idle timeouts. */
static void conn_wait(struct http_conn *c, struct http_response *resp)
{
  log_debug(MOD, "request deferred", LOG_S("peer", c->req.peer),
            LOG_S("method", c->req.method), LOG_S("path", c->req.path),
            LOG_U("limit_ms", (unsigned long long)c->deferred->limit_ms));
  free(resp->body);
  free(resp->extra_headers);
  request_reset(c);
  conn_set_state(c, CONN_WAITING);
  /* Requests behind this one stay in the buffer, unparsed. */
  if (c->roff < c->rlen)
    conn_stop_reading(c);
  conn_arm(c, c->deferred->limit_ms);
}

/* Answers the request the parser just completed. */
static void conn_dispatch(struct http_conn *c)
{
  struct http_server *s = c->server;
  struct http_response resp = {0};
  int keep;
  int rc;

  c->request_done = 0;
  c->dispatching = 1;
  c->deferred_once = 0;
  c->close_after = 0;
  c->served++;
  c->head_only = c->parser.method == HTTP_HEAD;
  c->resp = &resp;
  resp.status = 0;
  resp.content_type = "text/plain";
  resp.conn = c;
  s->handler(s->ctx, &c->req, &resp);
  c->dispatching = 0;
  c->resp = NULL;
  if (c->deferred != NULL) {
    conn_wait(c, &resp);
    return;
  }
  keep = c->keep_alive && !s->stopping && !c->parser.upgrade && !c->close_after;
  c->active_ms = uv_now(s->loop);
  log_debug(MOD, "request", LOG_S("peer", c->req.peer),
            LOG_S("method", c->req.method), LOG_S("path", c->req.path),
            LOG_I("status", resp.status));
  rc = conn_send(c, &resp, keep, c->head_only);
  request_reset(c);
  if (rc < 0) {
    http_conn_close(c);
    return;
  }
  if (!keep) {
    conn_linger(c);
    return;
  }
  conn_set_state(c, CONN_IDLE);
  conn_arm(c, s->limits.idle_timeout_ms);
}

/* Sends the answer a waiting connection got (from its holder, or the
 * server's own at the limit), then goes on as after any answer. */
static void conn_answer_deferred(struct http_conn *c,
                                 struct http_response *resp)
{
  struct http_server *s = c->server;
  int keep =
      c->keep_alive && !s->stopping && !c->peer_eof && !c->parser.upgrade;

  c->active_ms = uv_now(s->loop);

  log_debug(MOD, "deferred answer", LOG_S("peer", c->req.peer),
            LOG_I("status", resp->status));
  if (conn_send(c, resp, keep, c->head_only) < 0) {
    http_conn_close(c);
    return;
  }
  if (!keep) {
    conn_linger(c);
    return;
  }
  conn_set_state(c, CONN_IDLE);
  conn_arm(c, s->limits.idle_timeout_ms);
  /* Requests already buffered are parsed from write_cb once this answer
   * is written, never from inside the caller, which may be another
   * connection's handler. */
  if (c->roff >= c->rlen)
    conn_start_reading(c);
}

/* The deferral's limit passed: 503, and the holder's answer is dropped. */
static void conn_expire(struct http_conn *c)
{
  struct http_deferred *d = c->deferred;
  struct http_response resp = {0};
  char msg[96];
  int n;

  c->server->stats.deferred_expired++;
  log_warn(MOD, "deferred answer not given in time", LOG_S("peer", c->req.peer),
           LOG_S("path", d->path),
           LOG_U("limit_ms", (unsigned long long)d->limit_ms));
  d->conn = NULL;
  c->deferred = NULL;
  n = snprintf(msg, sizeof(msg), "no answer within %llu ms; try again\n",
               (unsigned long long)d->limit_ms);
  http_response_set(&resp, 503, "text/plain", msg, (size_t)n);
  conn_answer_deferred(c, &resp);
}

static int parse_error_status(struct http_conn *c)
{
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);

  if (c->error_status != 0)
    return c->error_status;
  if (err == HPE_HEADER_OVERFLOW)
    return 431;
  return 400;
}

/* Parses what is buffered, answering each complete request in turn. Stops
 * when the buffer is used up, the connection is done, or too many
 * responses are waiting to be written. */
static void conn_process(struct http_conn *c)
{
  struct http_server *s = c->server;

  while (c->roff < c->rlen &&
         (c->state == CONN_IDLE || c->state == CONN_READING)) {
    size_t n;
    enum http_errno err;

    if (c->writes_pending >= HTTP_MAX_PENDING_WRITES) {
      conn_stop_reading(c);
      return;
    }
    n = http_parser_execute(&c->parser, &parser_settings, c->rbuf + c->roff,
                            c->rlen - c->roff);
    c->roff += n;
    err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED && c->request_done) {
      http_parser_pause(&c->parser, 0);
      conn_dispatch(c);
      continue;
    }
    if (err != HPE_OK) {
      int status = parse_error_status(c);

      if (status == 400)
        s->stats.bad_requests++;
      else if (status == 413 || status == 431)
        s->stats.too_large++;
      log_debug(MOD, "parse error", LOG_S("peer", c->req.peer),
                LOG_S("err", http_errno_name(err)));
      request_reset(c);
      conn_fail(c, status);
      return;
    }
    if (c->parser.upgrade) {
      /* Upgrades are not offered; what follows is not HTTP. */
      conn_fail(c, 400);
      return;
    }
  }
  if (c->roff >= c->rlen)
    c->roff = c->rlen = 0;
  if (c->state == CONN_IDLE && s->stopping && c->writes_pending == 0)
    http_conn_close(c);
  else if (c->state == CONN_IDLE && s->stopping)
    conn_linger(c);
}

#ifdef RUNFLEET_UNITTEST
static void parse_test_close_cb(uv_handle_t *h)
{
  free(h->data);
}

/* The parsing half of conn_process for a connection without a socket:
 * the same parser callbacks and limits, each complete request handed to
 * the server's handler, whose response is dropped. */
int http_server_parse_for_test(struct http_server *s, const char *data,
                               size_t len, size_t chunk)
{
  struct http_conn *c = calloc(1, sizeof(*c));
  struct http_response resp;
  size_t off = 0, end, n;
  enum http_errno err;
  int status = 0;

  if (c == NULL)
    return 500;
  c->server = s;
  c->sink = 1;
  c->root[0] = '/';
  c->req.body = c->empty;
  snprintf(c->req.peer, sizeof(c->req.peer), "test");
  if (uv_timer_init(s->loop, &c->timer) < 0) {
    free(c);
    return 500;
  }
  c->timer.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (chunk == 0)
    chunk = HTTP_READ_BUF;
  while (off < len && status == 0) {
    end = len - off < chunk ? len : off + chunk;
    while (off < end) {
      n = http_parser_execute(&c->parser, &parser_settings, data + off,
                              end - off);
      off += n;
      err = HTTP_PARSER_ERRNO(&c->parser);
      if (err == HPE_PAUSED && c->request_done) {
        http_parser_pause(&c->parser, 0);
        c->request_done = 0;
        memset(&resp, 0, sizeof(resp));
        resp.content_type = "text/plain";
        s->handler(s->ctx, &c->req, &resp);
        free(resp.body);
        free(resp.extra_headers);
        request_reset(c);
        conn_set_state(c, CONN_IDLE);
        if (!c->keep_alive) {
          off = len; /* the connection would linger: the rest is dropped */
          break;
        }
        continue;
      }
      if (err != HPE_OK) {
        status = parse_error_status(c);
        break;
      }
      if (c->parser.upgrade) {
        status = 400;
        break;
      }
    }
  }
  request_reset(c);
  conn_set_state(c, CONN_IDLE);
  uv_close((uv_handle_t *)&c->timer, parse_test_close_cb);
  return status;
}
#endif

/* ---- failure budgets ---- */

int http_response_failed(struct http_response *resp)
{
  struct http_conn *c = resp != NULL ? resp->conn : NULL;
  struct http_server *s;
  struct http_peer *p;
  double rate;
  unsigned retry;
  static const char msg[] = "too many failed requests\n";

  if (c == NULL || !c->dispatching || c->resp != resp || c->peer == NULL)
    return 0;
  s = c->server;
  p = c->peer;
  rate = s->limits.failures_per_minute;
  if (rate <= 0)
    return 0;
  http_peer_refill(s, p, uv_now(s->loop));
  if (p->tokens >= 1.0) {
    p->tokens -= 1.0;
    return 0;
  }
  http_refused(s, REFUSED_RATE, c->req.peer);
  /* Seconds until the next token, rounded up. */
  retry = (unsigned)((1.0 - p->tokens) * 60.0 / rate) + 1;
  free(resp->extra_headers);
  resp->extra_headers = NULL;
  http_response_set(resp, 429, "text/plain", msg, sizeof(msg) - 1);
  if (asprintf(&resp->extra_headers, "Retry-After: %u\r\n", retry) < 0)
    resp->extra_headers = NULL;
  c->close_after = 1;
  return 1;
}

/* ---- deferred answers ---- */

struct http_deferred *http_response_defer(struct http_response *resp,
                                          uint64_t limit_ms)
{
  struct http_conn *c = resp != NULL ? resp->conn : NULL;
  struct http_deferred *d;

  if (c == NULL || !c->dispatching || c->resp != resp || c->deferred_once)
    return NULL;
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    return NULL;
  d->conn = c;
  d->limit_ms = limit_ms;
  snprintf(d->path, sizeof(d->path), "%s",
           c->req.path != NULL ? c->req.path : "-");
  c->deferred = d;
  c->deferred_once = 1;
  return d;
}

/* Frees d and answers its request with resp's fields, if it still waits.
 * Inside its own handler the answer goes into the handler's response,
 * which conn_dispatch then sends as if it had never been deferred. */
static int deferred_finish(struct http_deferred *d, int status,
                           const char *content_type, const char *headers,
                           const char *body, size_t len)
{
  struct http_conn *c = d->conn;
  struct http_response resp = {0};
  struct http_response *out;

  free(d);
  if (c == NULL)
    return -1;
  c->deferred = NULL;
  out = c->dispatching ? c->resp : &resp;
  free(out->extra_headers);
  out->extra_headers = NULL;
  if (http_response_set(out, status, content_type, body, len) == 0 &&
      headers != NULL && headers[0] != '\0') {
    out->extra_headers = strdup(headers);
    if (out->extra_headers == NULL)
      http_response_set(out, 500, "text/plain", "", 0);
  }
  if (!c->dispatching)
    conn_answer_deferred(c, &resp);
  return 0;
}

int http_deferred_answer_headers(struct http_deferred *d, int status,
                                 const char *content_type, const char *headers,
                                 const char *body, size_t len)
{
  if (d == NULL)
    return -1;
  return deferred_finish(d, status, content_type, headers, body, len);
}

int http_deferred_answer(struct http_deferred *d, int status,
                         const char *content_type, const char *body, size_t len)
{
  return http_deferred_answer_headers(d, status, content_type, NULL, body, len);
}

void http_deferred_release(struct http_deferred *d)
{
  static const char msg[] = "the answer was abandoned; try again\n";

  if (d == NULL)
    return;
  if (d->conn != NULL)
    log_warn(MOD, "deferred answer abandoned", LOG_S("peer", d->conn->req.peer),
             LOG_S("path", d->path));
  deferred_finish(d, 503, "text/plain", NULL, msg, sizeof(msg) - 1);
}

/* ---- accepting ---- */

static struct http_conn *conn_new(struct http_server *s)
{
  struct http_conn *c = calloc(1, sizeof(*c));
  int rc;

  if (c == NULL)
    return NULL;
  c->server = s;
  c->root[0] = '/';
  c->req.body = c->empty;
  rc = uv_tcp_init(s->loop, &c->tcp);
  if (rc < 0) {
    free(c);
    return NULL;
  }
  c->tcp.data = c;
  c->handles_open = 1;
  rc = uv_timer_init(s->loop, &c->timer);
  if (rc == 0)
    c->handles_open = 2;
  c->timer.data = c;
  s->handles_open++;
  c->state = CONN_IDLE;
  c->active_ms = uv_now(s->loop);
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  else
    s->conns_tail = c;
  s->conns = c;
  s->stats.open++;
  if (rc < 0) {
    /* Only the TCP handle exists: close it, conn_close_cb frees. */
    c->state = CONN_CLOSED;
    s->conns = c->next;
    if (s->conns != NULL)
      s->conns->prev = NULL;
    else
      s->conns_tail = NULL;
    s->stats.open--;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    return NULL;
  }
  return c;
}

static void connection_cb(uv_stream_t *server, int status)
{
  struct http_listener *l = server->data;
  struct http_server *s = l->server;
  struct sockaddr_storage ss;
  int sslen = sizeof(ss);
  struct http_conn *c;
  struct http_peer *peer = NULL;
  enum http_refusal refused;

  if (s == NULL || s->stopping)
    return;
  /* Out of descriptors, libuv drops the connection itself: that is a
   * refusal too, summed like the others rather than logged each time. */
  if (status == UV_EMFILE || status == UV_ENFILE) {
    http_refused(s, REFUSED_BUSY, "-");
    return;
  }
  if (status < 0) {
    log_warn(MOD, "accept failed", LOG_S("listener", http_server_name(s)),
             LOG_S("err", uv_err_name(status)));
    return;
  }
  c = conn_new(s);
  if (c == NULL) {
    log_error(MOD, "out of memory accepting", LOG_NONE);
    return;
  }
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    http_conn_close(c);
    return;
  }
  memset(&ss, 0, sizeof(ss));
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
    http_format_peer(&ss, c->req.peer, sizeof(c->req.peer));
    peer = http_peer_get(s, &ss);
  } else {
    snprintf(c->req.peer, sizeof(c->req.peer), "unknown");
  }
  refused = http_conn_admit(s, c, peer);
  if (refused != REFUSED_NONE) {
    http_refused(s, refused, c->req.peer);
    http_conn_close(c);
    return;
  }
  if (peer != NULL) {
    c->peer = peer;
    peer->conns++;
  }
  s->stats.accepted++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  conn_arm(c, s->limits.header_timeout_ms > 0 ? s->limits.header_timeout_ms
                                              : s->limits.idle_timeout_ms);
  conn_start_reading(c);
}

/* ---- the server ---- */

struct http_server *http_server_new(uv_loop_t *loop,
                                    const struct http_server_limits *limits,
                                    http_handler_cb handler, void *ctx)
{
  struct http_server *s;

  if (loop == NULL || limits == NULL || handler == NULL)
    return NULL;
  /* The header store and body sizes derive from these: refuse nonsense. */
  if (limits->max_header_bytes < 64 || limits->max_header_bytes > (1 << 24) ||
      limits->max_body_bytes > ((size_t)1 << 32) ||
      limits->max_connections == 0)
    return NULL;
  /* A peer that resets the connection while we write to it must cost
   * an EPIPE on that connection, not the process. */
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
    return NULL;
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->loop = loop;
  s->limits = *limits;
  s->handler = handler;
  s->ctx = ctx;
  s->port = -1;
  return s;
}

/* Parses "a.b.c.d:port" or "[v6]:port". */
UNITTEST int http_parse_addr(const char *addr, struct sockaddr_storage *ss)
{
  char host[INET6_ADDRSTRLEN + 2];
  const char *colon;
  const char *port_s;
  char *end;
  long port;
  size_t hlen;

  if (addr == NULL)
    return UV_EINVAL;
  colon = strrchr(addr, ':');
  if (colon == NULL || colon == addr)
    return UV_EINVAL;
  port_s = colon + 1;
  port = strtol(port_s, &end, 10);
  if (*port_s == '\0' || *end != '\0' || port < 0 || port > 65535)
    return UV_EINVAL;
  hlen = (size_t)(colon - addr);
  if (addr[0] == '[') {
    if (hlen < 3 || addr[hlen - 1] != ']' || hlen - 2 >= sizeof(host))
      return UV_EINVAL;
    memcpy(host, addr + 1, hlen - 2);
    host[hlen - 2] = '\0';
    return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
  }
  if (hlen >= sizeof(host))
    return UV_EINVAL;
  memcpy(host, addr, hlen);
  host[hlen] = '\0';
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

static void listener_close_cb(uv_handle_t *h)
{
  struct http_listener *l = h->data;
  struct http_server *s = l->server;

  free(l);
  if (s == NULL)
    return;
  s->handles_open--;
  server_maybe_done(s);
}

int http_server_listen(struct http_server *s, const char *addr)
{
  struct sockaddr_storage ss;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  struct http_listener *l;
  int rc;

  if (s == NULL || s->listener != NULL || s->stopping)
    return UV_EINVAL;
  memset(&ss, 0, sizeof(ss));
  rc = http_parse_addr(addr, &ss);
  if (rc < 0)
    return rc;
  l = calloc(1, sizeof(*l));
  if (l == NULL)
    return UV_ENOMEM;
  rc = uv_tcp_init(s->loop, &l->tcp);
  if (rc < 0) {
    free(l);
    return rc;
  }
  l->tcp.data = l;
  rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&l->tcp, 511, connection_cb);
  if (rc == 0)
    rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len);
  if (rc < 0)
    goto fail;
  s->port = ntohs(bound.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&bound)->sin6_port
                      : ((struct sockaddr_in *)&bound)->sin_port);
  l->server = s;
  s->listener = l;
  s->handles_open++;
  log_info(MOD, "listening", LOG_S("addr", addr), LOG_I("port", s->port));
  return 0;

fail:
  /* Not the server's: the close callback only frees the listener, so the
   * server may be destroyed before the loop runs it. */
  l->server = NULL;
  uv_close((uv_handle_t *)&l->tcp, listener_close_cb);
  return rc;
}

int http_server_port(const struct http_server *s)
{
  return s != NULL ? s->port : -1;
}

void http_server_stop(struct http_server *s, void (*done_cb)(void *arg),
                      void *arg)
{
  struct http_conn *c;
  struct http_conn *next;

  if (s == NULL || s->stopping)
    return;
  s->stopping = 1;
  s->done_cb = done_cb;
  s->done_arg = arg;
  if (s->listener != NULL) {
    uv_close((uv_handle_t *)&s->listener->tcp, listener_close_cb);
    s->listener = NULL;
  }
  for (c = s->conns; c != NULL; c = next) {
    next = c->next;
    /* A partly read request may finish (within its read timeout) and is
     * then answered with Connection: close; idle ones go now. */
    if (c->state != CONN_IDLE || c->dispatching)
      continue;
    if (c->writes_pending == 0 && c->roff >= c->rlen)
      http_conn_close(c);
    else if (c->roff >= c->rlen)
      conn_linger(c);
  }
  /* Nothing was open (never listened): done already. */
  server_maybe_done(s);
}

void http_server_destroy(struct http_server *s)
{
  if (s == NULL)
    return;
  /* Only a stopped server, or one without handles, may go. */
  assert(s->handles_open == 0);
  http_peers_free(s);
  free(s);
}

void http_server_get_stats(const struct http_server *s,
                           struct http_server_stats *out)
{
  if (s == NULL || out == NULL)
    return;
  *out = s->stats;
}
