/* A tiny HTTP/1.1 server on the test's own libuv loop, for the client
 * tests: it parses requests (Content-Length bodies only), counts accepted
 * connections and hands each request to the test's handler, which answers
 * with fake_http_respond() or not at all. Included by the test programs
 * (header-only, so the build's test_*.c glob needs no helper source). */
#ifndef RUNFLEET_FAKE_HTTP_H
#define RUNFLEET_FAKE_HTTP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#define FAKE_HTTP_BUF (64u << 10)

struct fake_http;
struct fake_http_conn;

struct fake_http_req {
  struct fake_http_conn *conn;
  char method[16];
  char target[1024];
  char headers[8192];
  char *body; /* NUL-terminated, valid during the handler only */
  size_t body_len;
  uint64_t at_ms; /* loop time when the request arrived */
};

typedef void (*fake_http_handler)(void *arg, struct fake_http_req *req);

struct fake_http_conn {
  uv_tcp_t tcp;
  struct fake_http *srv;
  char buf[FAKE_HTTP_BUF];
  size_t len;
  int closing;
  struct fake_http_conn *prev, *next;
};

struct fake_http {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  unsigned accepts;
  unsigned requests;
  unsigned handles;
  fake_http_handler handler;
  void *handler_arg;
  struct fake_http_conn *conns;
};

static void fake_http_conn_close_cb(uv_handle_t *h)
{
  struct fake_http_conn *conn = h->data;

  conn->srv->handles--;
  free(conn);
}

static void fake_http_conn_close(struct fake_http_conn *conn)
{
  struct fake_http *srv = conn->srv;

  if (conn->closing)
    return;
  conn->closing = 1;
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    srv->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  uv_close((uv_handle_t *)&conn->tcp, fake_http_conn_close_cb);
}

static void fake_http_write_cb(uv_write_t *w, int status)
{
  (void)status;
  free(w->data);
  free(w);
}

/* Writes a response with a Content-Length; extra is a block of
 * "Name: value\r\n" lines or NULL. */
static void fake_http_respond_len(struct fake_http_conn *conn, int status,
                                  const char *extra, const char *body,
                                  size_t body_len)
{
  uv_write_t *w;
  uv_buf_t b;
  char head[4096];
  int n;

  if (conn->closing)
    return;
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 %d Canned\r\nContent-Length: %zu\r\n%s\r\n", status,
               body_len, extra ? extra : "");
  w = malloc(sizeof(*w));
  b.base = malloc((size_t)n + body_len);
  if (w == NULL || b.base == NULL || n <= 0) {
    free(w);
    free(b.base);
    return;
  }
  memcpy(b.base, head, (size_t)n);
  if (body_len > 0)
    memcpy(b.base + n, body, body_len);
  b.len = (size_t)n + body_len;
  w->data = b.base;
  if (uv_write(w, (uv_stream_t *)&conn->tcp, &b, 1, fake_http_write_cb) != 0) {
    free(b.base);
    free(w);
  }
}

static void fake_http_respond(struct fake_http_conn *conn, int status,
                              const char *extra, const char *body)
{
  fake_http_respond_len(conn, status, extra, body, body ? strlen(body) : 0);
}

/* Copies the value of request header name into out; 0 or -1. */
static int fake_http_req_header(const struct fake_http_req *req,
                                const char *name, char *out, size_t size)
{
  size_t nlen = strlen(name);
  const char *p = req->headers;
  const char *eol;
  size_t n;

  while (*p != '\0') {
    eol = strstr(p, "\r\n");
    if (eol == NULL)
      eol = p + strlen(p);
    if ((size_t)(eol - p) > nlen && p[nlen] == ':' &&
        strncasecmp(p, name, nlen) == 0) {
      p += nlen + 1;
      while (*p == ' ')
        p++;
      n = (size_t)(eol - p);
      if (n >= size)
        n = size - 1;
      memcpy(out, p, n);
      out[n] = '\0';
      return 0;
    }
    p = *eol ? eol + 2 : eol;
  }
  return -1;
}

/* Parses as many whole requests as the buffer holds. */
static void fake_http_parse(struct fake_http_conn *conn)
{
  struct fake_http_req req;
  char *end, *line_end, *sp1, *sp2;
  char cl[32];
  size_t head_len, body_len, total;

  for (;;) {
    conn->buf[conn->len] = '\0';
    end = strstr(conn->buf, "\r\n\r\n");
    if (end == NULL)
      return;
    head_len = (size_t)(end - conn->buf) + 4;
    memset(&req, 0, sizeof(req));
    line_end = strstr(conn->buf, "\r\n");
    sp1 = memchr(conn->buf, ' ', (size_t)(line_end - conn->buf));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL) {
      fake_http_conn_close(conn);
      return;
    }
    snprintf(req.method, sizeof(req.method), "%.*s", (int)(sp1 - conn->buf),
             conn->buf);
    snprintf(req.target, sizeof(req.target), "%.*s", (int)(sp2 - sp1 - 1),
             sp1 + 1);
    snprintf(req.headers, sizeof(req.headers), "%.*s",
             (int)(end + 2 - (line_end + 2)), line_end + 2);
    body_len = 0;
    if (fake_http_req_header(&req, "Content-Length", cl, sizeof(cl)) == 0)
      body_len = (size_t)strtoul(cl, NULL, 10);
    total = head_len + body_len;
    if (total >= FAKE_HTTP_BUF) {
      fake_http_conn_close(conn);
      return;
    }
    if (conn->len < total)
      return;
    req.conn = conn;
    req.body = malloc(body_len + 1);
    if (req.body == NULL)
      return;
    memcpy(req.body, conn->buf + head_len, body_len);
    req.body[body_len] = '\0';
    req.body_len = body_len;
    req.at_ms = uv_now(conn->srv->loop);
    memmove(conn->buf, conn->buf + total, conn->len - total);
    conn->len -= total;
    conn->srv->requests++;
    conn->srv->handler(conn->srv->handler_arg, &req);
    free(req.body);
    if (conn->closing)
      return;
  }
}

static void fake_http_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  struct fake_http_conn *conn = h->data;

  (void)hint;
  buf->base = conn->buf + conn->len;
  buf->len = FAKE_HTTP_BUF - 1 - conn->len;
}

static void fake_http_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct fake_http_conn *conn = s->data;

  (void)buf;
  if (n < 0) {
    fake_http_conn_close(conn);
    return;
  }
  conn->len += (size_t)n;
  fake_http_parse(conn);
  if (!conn->closing && conn->len >= FAKE_HTTP_BUF - 1)
    fake_http_conn_close(conn);
}

static void fake_http_accept_cb(uv_stream_t *server, int status)
{
  struct fake_http *srv = server->data;
  struct fake_http_conn *conn;

  if (status != 0)
    return;
  conn = calloc(1, sizeof(*conn));
  if (conn == NULL || uv_tcp_init(srv->loop, &conn->tcp) != 0) {
    free(conn);
    return;
  }
  srv->handles++;
  conn->tcp.data = conn;
  conn->srv = srv;
  conn->next = srv->conns;
  if (srv->conns != NULL)
    srv->conns->prev = conn;
  srv->conns = conn;
  if (uv_accept(server, (uv_stream_t *)&conn->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&conn->tcp, fake_http_alloc_cb,
                    fake_http_read_cb) != 0) {
    fake_http_conn_close(conn);
    return;
  }
  srv->accepts++;
}

/* Listens on 127.0.0.1 on a free port; 0 or -1. */
static int fake_http_start(struct fake_http *srv, uv_loop_t *loop,
                           fake_http_handler handler, void *arg)
{
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  memset(srv, 0, sizeof(*srv));
  srv->loop = loop;
  srv->handler = handler;
  srv->handler_arg = arg;
  if (uv_ip4_addr("127.0.0.1", 0, &addr) != 0 ||
      uv_tcp_init(loop, &srv->listener) != 0)
    return -1;
  srv->handles = 1;
  srv->listener.data = srv;
  if (uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&srv->listener, 16, fake_http_accept_cb) != 0 ||
      uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len) != 0)
    return -1;
  srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  return 0;
}

static void fake_http_listener_close_cb(uv_handle_t *h)
{
  struct fake_http *srv = h->data;

  srv->handles--;
}

/* Closes the listener and every connection; srv->handles reaches 0 once
 * the loop has run their close callbacks. */
static void fake_http_stop(struct fake_http *srv)
{
  while (srv->conns != NULL)
    fake_http_conn_close(srv->conns);
  if (!uv_is_closing((uv_handle_t *)&srv->listener))
    uv_close((uv_handle_t *)&srv->listener, fake_http_listener_close_cb);
}

/* Guard timer for test_run_until. */
static void fake_http_guard_cb(uv_timer_t *t)
{
  int *expired = t->data;

  *expired = 1;
}

/* Runs the loop until *flag becomes non-zero or limit_ms pass; returns
 * the flag's value (0 on timeout). */
static int fake_http_run_until(uv_loop_t *loop, const int *flag,
                               uint64_t limit_ms)
{
  uv_timer_t guard;
  int expired = 0;

  if (uv_timer_init(loop, &guard) != 0)
    return 0;
  guard.data = &expired;
  if (uv_timer_start(&guard, fake_http_guard_cb, limit_ms, 0) != 0)
    return 0;
  while (!*flag && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return *flag;
}

#endif
