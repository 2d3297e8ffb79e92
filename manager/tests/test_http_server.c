/* The HTTP server against real sockets: the server runs on a libuv loop in
 * the test's main thread, a scripted blocking client in a uv thread. The
 * client only records what it saw; assertions run after the thread joined,
 * as cmocka's are not thread-safe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "http_server.h"
#include "http_server_int.h"

#define RESULTS 8
#define RESULT_MAX 8192
/* HTTP_MAX_PENDING_WRITES in http_server.c: responses it queues on one
 * connection before it stops parsing the requests behind them. */
#define SERVER_PENDING_WRITES 8
/* Many times what the socket buffers of client_backpressure hold, so no
 * write of a /big response completes while the client does not read. */
#define BIG_BODY (256 * 1024)

struct fixture {
  uv_loop_t loop;
  struct http_server *server;
  uv_async_t stop_async;
  uv_sem_t stopped;
  int stop_requested;
  int port;
  void (*client)(struct fixture *f);
  int done_called;
  unsigned handled;               /* atomic: the client thread reads it too */
  struct http_server_stats stats; /* as done_cb saw them */
  char r[RESULTS][RESULT_MAX];    /* what the client read */
  long n[RESULTS];                /* numbers the client recorded */
  char trace[1024]; /* loop thread: "H:path" handled, "A:path=rc" answered */
};

/* ---- deferred answers: a timer answers (or releases) later ---- */

struct later {
  uv_timer_t timer;
  struct fixture *f;
  struct http_deferred *d;
  int release;
  char path[64];
};

static void trace(struct fixture *f, const char *what, const char *path, int rc,
                  int with_rc)
{
  size_t len = strlen(f->trace);

  if (with_rc)
    snprintf(f->trace + len, sizeof(f->trace) - len, "%s%s=%d ", what, path,
             rc);
  else
    snprintf(f->trace + len, sizeof(f->trace) - len, "%s%s ", what, path);
}

/* Answers l's request: 200 "later PATH" with a header of its own. */
static int later_answer(struct later *l)
{
  char body[96];
  int n = snprintf(body, sizeof(body), "later %s", l->path);

  return http_deferred_answer_headers(l->d, 200, "text/plain", "X-Later: 1\r\n",
                                      body, (size_t)n);
}

static void later_close_cb(uv_handle_t *h)
{
  free(h->data);
}

static void later_cb(uv_timer_t *t)
{
  struct later *l = t->data;
  int rc = 0;

  if (l->release)
    http_deferred_release(l->d);
  else
    rc = later_answer(l);
  trace(l->f, l->release ? "R:" : "A:", l->path, rc, 1);
  uv_close((uv_handle_t *)t, later_close_cb);
}

/* /defer/MS/LIMIT[/...]: answered MS ms later (in the handler when MS is
 * negative), with LIMIT ms as the deferral's limit; /release/MS/LIMIT
 * gives the handle up instead. */
static int defer_request(struct fixture *f, const struct http_request *req,
                         struct http_response *resp)
{
  struct later *l;
  long ms;
  unsigned long limit;
  int release = 0;

  if (sscanf(req->path, "/defer/%ld/%lu", &ms, &limit) != 2) {
    if (sscanf(req->path, "/release/%ld/%lu", &ms, &limit) != 2)
      return 0;
    release = 1;
  }
  l = calloc(1, sizeof(*l));
  assert_non_null(l);
  l->f = f;
  l->release = release;
  snprintf(l->path, sizeof(l->path), "%s", req->path);
  l->d = http_response_defer(resp, limit);
  assert_non_null(l->d);
  /* Once per request. */
  assert_null(http_response_defer(resp, limit));
  if (ms < 0) {
    trace(f, "A:", l->path, later_answer(l), 1);
    free(l);
    return 1;
  }
  assert_int_equal(uv_timer_init(&f->loop, &l->timer), 0);
  l->timer.data = l;
  assert_int_equal(uv_timer_start(&l->timer, later_cb, (uint64_t)ms, 0), 0);
  return 1;
}

/* ---- the server side ---- */

static void handler(void *ctx, const struct http_request *req,
                    struct http_response *resp)
{
  struct fixture *f = ctx;
  char out[4096];
  const char *t = http_request_header(req, "x-test");
  int n;

  __atomic_add_fetch(&f->handled, 1, __ATOMIC_SEQ_CST);
  trace(f, "H:", req->path, 0, 0);
  if (defer_request(f, req, resp))
    return;
  if (strcmp(req->path, "/nostatus") == 0)
    return;
  if (strcmp(req->path, "/fail") == 0) {
    if (!http_response_failed(resp))
      http_response_set(resp, 401, "text/plain", "no\n", 3);
    return;
  }
  if (strncmp(req->path, "/big", 4) == 0) {
    resp->body = malloc(BIG_BODY);
    assert_non_null(resp->body);
    memset(resp->body, 'x', BIG_BODY);
    resp->body_len = BIG_BODY;
    resp->status = 200;
    return;
  }
  if (strcmp(req->path, "/extra") == 0) {
    resp->extra_headers = strdup("X-Extra: 1\r\n");
    assert_non_null(resp->extra_headers);
  }
  n = snprintf(out, sizeof(out), "%s %s q=%s t=%s b=%.*s", req->method,
               req->path, req->query ? req->query : "-", t ? t : "-",
               (int)(req->body_len < 2048 ? req->body_len : 2048), req->body);
  assert_int_equal(http_response_set(resp, 200, "text/plain", out, (size_t)n),
                   0);
}

static void done_cb(void *arg)
{
  struct fixture *f = arg;

  f->done_called++;
  http_server_get_stats(f->server, &f->stats);
}

static void stop_async_cb(uv_async_t *a)
{
  struct fixture *f = a->data;

  http_server_stop(f->server, done_cb, f);
  uv_close((uv_handle_t *)a, NULL);
  uv_sem_post(&f->stopped);
}

/* Called by the client thread: stops the server gracefully and waits
 * until http_server_stop has run on the loop. */
static void client_stop(struct fixture *f)
{
  if (f->stop_requested)
    return;
  f->stop_requested = 1;
  uv_async_send(&f->stop_async);
  uv_sem_wait(&f->stopped);
}

static void client_main(void *arg)
{
  struct fixture *f = arg;

  f->client(f);
  client_stop(f);
}

static const struct http_server_limits default_limits = {
    .max_header_bytes = 1024,
    .max_body_bytes = 100,
    .max_connections = 8,
    .read_timeout_ms = 2000,
    .idle_timeout_ms = 2000,
};

static struct fixture *run_server(const struct http_server_limits *limits,
                                  void (*client)(struct fixture *f))
{
  struct fixture *f = calloc(1, sizeof(*f));
  uv_thread_t thread;

  assert_non_null(f);
  f->client = client;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->server = http_server_new(&f->loop, limits, handler, f);
  assert_non_null(f->server);
  assert_int_equal(http_server_port(f->server), -1);
  assert_int_equal(http_server_listen(f->server, "127.0.0.1:0"), 0);
  f->port = http_server_port(f->server);
  assert_true(f->port > 0);
  assert_int_equal(uv_async_init(&f->loop, &f->stop_async, stop_async_cb), 0);
  f->stop_async.data = f;
  assert_int_equal(uv_sem_init(&f->stopped, 0), 0);
  assert_int_equal(uv_thread_create(&thread, client_main, f), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_int_equal(f->done_called, 1);
  assert_int_equal(f->stats.open, 0);
  assert_int_equal(f->stats.in_flight, 0);
  http_server_destroy(f->server);
  f->server = NULL;
  assert_int_equal(uv_loop_close(&f->loop), 0);
  uv_sem_destroy(&f->stopped);
  return f;
}

/* ---- the client side (blocking sockets, runs on the client thread) ---- */

static long now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

  nanosleep(&ts, NULL);
}

/* Connects with a receive buffer of rcvbuf bytes (0: the default); it is
 * set before connect, as the window offered depends on it. */
static int cl_connect_rcvbuf(int port, int rcvbuf)
{
  struct sockaddr_in sin;
  struct timeval tv = {3, 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  if (fd < 0)
    return -1;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if ((rcvbuf > 0 &&
       setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0) ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
      connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int cl_connect(int port)
{
  return cl_connect_rcvbuf(port, 0);
}

static int cl_send(int fd, const char *s, size_t len)
{
  while (len > 0) {
    ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

    if (n <= 0)
      return -1;
    s += n;
    len -= (size_t)n;
  }
  return 0;
}

static int cl_sends(int fd, const char *s)
{
  return cl_send(fd, s, strlen(s));
}

/* Counts complete responses (head plus Content-Length body) in buf. */
static int count_responses(const char *buf, size_t len)
{
  size_t off = 0;
  int count = 0;

  for (;;) {
    const char *end = memmem(buf + off, len - off, "\r\n\r\n", 4);
    const char *cl;
    size_t head;
    unsigned long body = 0;

    if (end == NULL)
      return count;
    head = (size_t)(end - (buf + off)) + 4;
    cl = memmem(buf + off, head, "Content-Length: ", 16);
    if (cl != NULL && strncmp(buf + off, "HTTP/1.1 100", 12) != 0)
      body = strtoul(cl + 16, NULL, 10);
    if (off + head + body > len)
      return count;
    off += head + body;
    count++;
  }
}

/* Reads until want responses are complete (0: until EOF or timeout).
 * Returns bytes read; out is NUL-terminated. */
static size_t cl_read(int fd, char *out, size_t cap, int want)
{
  size_t len = 0;

  out[0] = '\0';
  while (len + 1 < cap) {
    ssize_t n = recv(fd, out + len, cap - 1 - len, 0);

    if (n <= 0)
      break;
    len += (size_t)n;
    out[len] = '\0';
    if (want > 0 && count_responses(out, len) >= want)
      break;
  }
  return len;
}

/* 1 when the server closed the connection (EOF or reset), 0 if not. */
static int cl_closed(int fd)
{
  char c;
  ssize_t n = recv(fd, &c, 1, 0);

  if (n == 0)
    return 1;
  return n < 0 && (errno == ECONNRESET || errno == EPIPE);
}

/* ---- helpers for assertions ---- */

static const char *body_of(const char *resp)
{
  const char *p = strstr(resp, "\r\n\r\n");

  return p != NULL ? p + 4 : "";
}

static void assert_contains(const char *hay, const char *needle)
{
  if (strstr(hay, needle) == NULL)
    fail_msg("\"%s\" not found in \"%s\"", needle, hay);
}

/* ---- scenarios ---- */

static void client_get_post(struct fixture *f)
{
  static const char post[] = "POST /echo HTTP/1.1\r\nHost: a\r\n"
                             "Content-Length: 5\r\nConnection: close\r\n"
                             "\r\nhello";
  int fd = cl_connect(f->port);

  cl_sends(fd, "GET /hello?x=1&y=2 HTTP/1.1\r\nHost: a\r\nx-TEST: yes\r\n"
               "Connection: close\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
  fd = cl_connect(f->port);
  cl_send(fd, post, sizeof(post) - 1);
  cl_read(fd, f->r[1], RESULT_MAX, 0);
  close(fd);
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /nostatus HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[2], RESULT_MAX, 0);
  close(fd);
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /extra HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[3], RESULT_MAX, 0);
  close(fd);
}

static void test_get_and_post(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_get_post);
  assert_true(strncmp(f->r[0], "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_contains(f->r[0], "\r\nDate: ");
  assert_contains(f->r[0], " GMT\r\n");
  assert_contains(f->r[0], "\r\nContent-Type: text/plain\r\n");
  assert_contains(f->r[0], "\r\nConnection: close\r\n");
  assert_string_equal(body_of(f->r[0]), "GET /hello q=x=1&y=2 t=yes b=");
  assert_contains(f->r[0], "\r\nContent-Length: 29\r\n");
  assert_string_equal(body_of(f->r[1]), "POST /echo q=- t=- b=hello");
  /* A handler that sets no status is a server error, not a crash. */
  assert_true(strncmp(f->r[2], "HTTP/1.1 500 ", 13) == 0);
  assert_contains(f->r[2], "\r\nContent-Length: 0\r\n");
  assert_contains(f->r[3], "\r\nX-Extra: 1\r\n\r\n");
  assert_int_equal(f->handled, 4);
  assert_int_equal(f->stats.accepted, 4);
  assert_int_equal(f->stats.bad_requests, 0);
  free(f);
}

static void client_keep_alive(struct fixture *f)
{
  int fd = cl_connect(f->port);

  cl_sends(fd, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 1);
  cl_sends(fd, "GET /two HTTP/1.1\r\nHost: a\r\n\r\n");
  cl_read(fd, f->r[1], RESULT_MAX, 1);
  /* HTTP/1.0 keeps the connection only when asked to. */
  cl_sends(fd, "GET /three HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  cl_read(fd, f->r[2], RESULT_MAX, 1);
  cl_sends(fd, "HEAD /four HTTP/1.0\r\n\r\n");
  cl_read(fd, f->r[3], RESULT_MAX, 0);
  close(fd);
}

static void test_keep_alive(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_keep_alive);
  assert_contains(f->r[0], "\r\nConnection: keep-alive\r\n");
  assert_string_equal(body_of(f->r[0]), "GET /one q=- t=- b=");
  assert_contains(f->r[1], "\r\nConnection: keep-alive\r\n");
  assert_string_equal(body_of(f->r[1]), "GET /two q=- t=- b=");
  assert_contains(f->r[2], "\r\nConnection: keep-alive\r\n");
  /* HEAD: the length of the body that GET would get, and no body; then
   * the HTTP/1.0 connection closes (cl_read returned at EOF). */
  assert_contains(f->r[3], "\r\nConnection: close\r\n");
  assert_contains(f->r[3], "\r\nContent-Length: 21\r\n");
  assert_string_equal(body_of(f->r[3]), "");
  assert_int_equal(f->stats.accepted, 1);
  free(f);
}

static void client_pipeline(struct fixture *f)
{
  static const char reqs[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                             "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
                             "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked"
                             "\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n";
  char many[40 * 32];
  size_t len = 0;
  int fd = cl_connect(f->port);
  int i;

  cl_send(fd, reqs, sizeof(reqs) - 1);
  cl_read(fd, f->r[0], RESULT_MAX, 3);
  /* More requests than the server queues responses for: it must stop
   * reading, then go on once we read. */
  for (i = 0; i < 40; i++)
    len += (size_t)snprintf(many + len, sizeof(many) - len,
                            "GET /p%02d HTTP/1.1\r\n\r\n", i);
  cl_send(fd, many, len);
  sleep_ms(50);
  cl_read(fd, f->r[1], RESULT_MAX, 40);
  f->n[0] = count_responses(f->r[1], strlen(f->r[1]));
  close(fd);
}

static void test_pipelining(void **state)
{
  struct fixture *f;
  const char *a;
  const char *b;
  const char *c;
  const char *p;

  (void)state;
  f = run_server(&default_limits, client_pipeline);
  a = strstr(f->r[0], "GET /a q=- t=- b=");
  b = strstr(f->r[0], "POST /b q=- t=- b=xyz");
  c = strstr(f->r[0], "POST /c q=- t=- b=hi!");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_true(a < b && b < c);
  assert_int_equal(f->n[0], 40);
  p = strstr(f->r[1], "GET /p00 ");
  assert_non_null(p);
  p = strstr(p, "GET /p20 ");
  assert_non_null(p);
  assert_non_null(strstr(p, "GET /p39 "));
  assert_int_equal(f->handled, 43);
  free(f);
}

/* The server's end of the client's connection: the test process holds
 * both, and the one whose peer is our address is it. Polls for 1 s, as
 * the loop thread accepts it when it gets to it; -1 if it never does. */
static int cl_server_end(int fd)
{
  struct sockaddr_in me, peer;
  socklen_t len = sizeof(me);
  int tries;
  int s;

  if (getsockname(fd, (struct sockaddr *)&me, &len) != 0)
    return -1;
  for (tries = 0; tries < 1000; tries++) {
    for (s = 0; s < 1024; s++) {
      len = sizeof(peer);
      if (s != fd && getpeername(s, (struct sockaddr *)&peer, &len) == 0 &&
          peer.sin_family == AF_INET && peer.sin_port == me.sin_port &&
          peer.sin_addr.s_addr == me.sin_addr.s_addr)
        return s;
    }
    sleep_ms(1);
  }
  return -1;
}

static void client_backpressure(struct fixture *f)
{
  char reqs[24 * 48];
  char *buf = malloc(65536);
  size_t len = 0;
  long total = 0;
  ssize_t n;
  int fd = cl_connect_rcvbuf(f->port, 4096);
  int sndbuf = 4096;
  int s = fd >= 0 ? cl_server_end(fd) : -1;
  int i;

  /* 24 pipelined requests in one segment, for 6 MiB of answers, and no
   * reading: the server must stop at SERVER_PENDING_WRITES responses in
   * its queue instead of parsing, answering and buffering them all. */
  for (i = 0; i < 24; i++)
    len += (size_t)snprintf(reqs + len, sizeof(reqs) - len,
                            "GET /big%02d HTTP/1.1\r\n%s\r\n", i,
                            i == 23 ? "Connection: close\r\n" : "");
  /* Linux grows a send buffer up to tcp_wmem's maximum (4 MiB or more)
   * unless it is set: pinned small, the server's writes back up after a
   * few KiB and the count of answered requests is exact. */
  if (buf == NULL || s < 0 ||
      setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) != 0 ||
      cl_send(fd, reqs, len) != 0)
    goto out;
  sleep_ms(300);
  f->n[0] = (long)__atomic_load_n(&f->handled, __ATOMIC_SEQ_CST);
  /* Reading lets it go on, up to the last answer and its close. */
  while ((n = recv(fd, buf, 65536, 0)) > 0)
    total += n;
  f->n[1] = total;
  f->n[2] = n;
out:
  if (fd >= 0)
    close(fd);
  free(buf);
}

static void test_pipelining_backpressure(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_backpressure);
  /* At most the limit before the client reads (fewer only if the loop was
   * slower than 300 ms); the mutation without the limit answers all 24. */
  assert_true(f->n[0] >= 1 && f->n[0] <= SERVER_PENDING_WRITES);
  assert_int_equal(f->n[2], 0); /* EOF, not a timeout or a reset */
  assert_true(f->n[1] > 24L * BIG_BODY);
  assert_true(f->n[1] < 24L * (BIG_BODY + 512));
  assert_int_equal(f->handled, 24);
  assert_int_equal(f->stats.timed_out, 0);
  free(f);
}

static void client_too_large(struct fixture *f)
{
  char big[2048];
  size_t len;
  int fd;
  int i;

  /* One header past max_header_bytes. */
  len = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-Big: ");
  memset(big + len, 'a', 1200);
  len += 1200;
  len += (size_t)snprintf(big + len, sizeof(big) - len, "\r\n\r\n");
  fd = cl_connect(f->port);
  cl_send(fd, big, len);
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);

  /* More header lines than HTTP_MAX_HEADERS. */
  len = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n");
  for (i = 0; i < HTTP_MAX_HEADERS + 1; i++)
    len += (size_t)snprintf(big + len, sizeof(big) - len, "H%d: 1\r\n", i);
  len += (size_t)snprintf(big + len, sizeof(big) - len, "\r\n");
  fd = cl_connect(f->port);
  cl_send(fd, big, len);
  cl_read(fd, f->r[1], RESULT_MAX, 0);
  close(fd);

  /* Body too large by Content-Length: refused before the body is sent. */
  fd = cl_connect(f->port);
  cl_sends(fd, "POST / HTTP/1.1\r\nContent-Length: 101\r\n"
               "Expect: 100-continue\r\n\r\n");
  cl_read(fd, f->r[2], RESULT_MAX, 0);
  close(fd);

  /* Body too large while streaming chunks (60 + 60 > 100). */
  fd = cl_connect(f->port);
  cl_sends(fd, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  memset(big, 'b', 60);
  len = (size_t)snprintf(big, sizeof(big), "3c\r\n");
  memset(big + len, 'b', 60);
  len += 60;
  len += (size_t)snprintf(big + len, sizeof(big) - len, "\r\n");
  cl_send(fd, big, len);
  cl_send(fd, big, len);
  cl_read(fd, f->r[3], RESULT_MAX, 0);
  close(fd);

  /* Exactly at the limit is fine. */
  fd = cl_connect(f->port);
  len = (size_t)snprintf(big, sizeof(big),
                         "POST / HTTP/1.1\r\nContent-Length: 100\r\n"
                         "Connection: close\r\n\r\n");
  memset(big + len, 'c', 100);
  cl_send(fd, big, len + 100);
  cl_read(fd, f->r[4], RESULT_MAX, 0);
  close(fd);
}

static void test_limits_431_413(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_too_large);
  assert_true(strncmp(f->r[0], "HTTP/1.1 431 ", 13) == 0);
  assert_contains(f->r[0], "\r\nConnection: close\r\n");
  assert_true(strncmp(f->r[1], "HTTP/1.1 431 ", 13) == 0);
  assert_true(strncmp(f->r[2], "HTTP/1.1 413 ", 13) == 0);
  /* No "100 Continue" for a body that would be refused. */
  assert_null(strstr(f->r[2], "100 Continue"));
  assert_true(strncmp(f->r[3], "HTTP/1.1 413 ", 13) == 0);
  assert_true(strncmp(f->r[4], "HTTP/1.1 200 ", 13) == 0);
  assert_int_equal(strlen(body_of(f->r[4])), strlen("POST / q=- t=- b=") + 100);
  assert_int_equal(f->stats.too_large, 4);
  assert_int_equal(f->handled, 1);
  free(f);
}

static void client_garbage(struct fixture *f)
{
  int fd = cl_connect(f->port);

  cl_sends(fd, "\x01\x02 this is not http\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
  fd = cl_connect(f->port);
  cl_sends(fd, "GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n");
  cl_read(fd, f->r[1], RESULT_MAX, 0);
  close(fd);
  /* A good request, then garbage on the same connection. */
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /ok HTTP/1.1\r\n\r\nBLAH\x7f\r\n\r\n");
  cl_read(fd, f->r[2], RESULT_MAX, 0);
  close(fd);
}

static void test_bad_requests_400(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_garbage);
  assert_true(strncmp(f->r[0], "HTTP/1.1 400 ", 13) == 0);
  assert_contains(f->r[0], "\r\nConnection: close\r\n");
  assert_true(strncmp(f->r[1], "HTTP/1.1 400 ", 13) == 0);
  assert_true(strncmp(f->r[2], "HTTP/1.1 200 ", 13) == 0);
  assert_contains(f->r[2], "\r\n\r\nGET /ok q=- t=- b=HTTP/1.1 400 ");
  assert_int_equal(f->stats.bad_requests, 3);
  assert_int_equal(f->handled, 1);
  free(f);
}

static void client_slow(struct fixture *f)
{
  int fd = cl_connect(f->port);
  long t0 = now_ms();

  /* Slowloris: a byte now and then never completes the request. */
  cl_sends(fd, "GET / HTTP/1.1\r\n");
  sleep_ms(80);
  cl_sends(fd, "X-A: 1\r\n");
  sleep_ms(80);
  cl_sends(fd, "X-B: 1\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  f->n[0] = now_ms() - t0;
  close(fd);

  /* An idle keep-alive connection is closed after idle_timeout_ms. */
  fd = cl_connect(f->port);
  cl_sends(fd, "GET / HTTP/1.1\r\n\r\n");
  cl_read(fd, f->r[1], RESULT_MAX, 1);
  t0 = now_ms();
  f->n[1] = cl_closed(fd);
  f->n[2] = now_ms() - t0;
  close(fd);
}

static void test_slow_client_timeouts(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.read_timeout_ms = 200;
  limits.idle_timeout_ms = 300;
  f = run_server(&limits, client_slow);
  assert_true(strncmp(f->r[0], "HTTP/1.1 408 ", 13) == 0);
  assert_contains(f->r[0], "\r\nConnection: close\r\n");
  /* From the first byte, not reset by later bytes. */
  assert_true(f->n[0] >= 180);
  assert_true(f->n[0] < 1500);
  assert_true(strncmp(f->r[1], "HTTP/1.1 200 ", 13) == 0);
  assert_int_equal(f->n[1], 1);
  assert_true(f->n[2] >= 250);
  assert_true(f->n[2] < 1500);
  assert_int_equal(f->stats.timed_out, 1);
  free(f);
}

static void client_max_conns(struct fixture *f)
{
  int a = cl_connect(f->port);
  int b;
  int c;

  cl_sends(a, "GET /a HTTP/1.1\r\n\r\n");
  cl_read(a, f->r[0], RESULT_MAX, 1);
  /* The second connection is accepted and closed at once. */
  b = cl_connect(f->port);
  f->n[0] = b >= 0 ? cl_closed(b) : -1;
  if (b >= 0)
    close(b);
  close(a);
  sleep_ms(100);
  /* The slot is free again. */
  c = cl_connect(f->port);
  cl_sends(c, "GET /c HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(c, f->r[1], RESULT_MAX, 0);
  close(c);
}

static void test_max_connections(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.max_connections = 1;
  f = run_server(&limits, client_max_conns);
  assert_string_equal(body_of(f->r[0]), "GET /a q=- t=- b=");
  assert_int_equal(f->n[0], 1);
  assert_string_equal(body_of(f->r[1]), "GET /c q=- t=- b=");
  assert_int_equal(f->stats.rejected_busy, 1);
  assert_int_equal(f->stats.accepted, 2);
  free(f);
}

/* ---- crowding: eviction, per-peer limits, header timeout, budgets ---- */

static void client_evict_idle(struct fixture *f)
{
  int idle[4];
  int fresh;
  int i;

  /* Four connections that never send a byte fill max_connections (4);
   * the oldest goes when a new one comes, and the new one is served. */
  for (i = 0; i < 4; i++)
    idle[i] = cl_connect(f->port);
  sleep_ms(50);
  fresh = cl_connect(f->port);
  cl_sends(fresh, "GET /fresh HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fresh, f->r[0], RESULT_MAX, 0);
  close(fresh);
  f->n[0] = cl_closed(idle[0]);
  for (i = 0; i < 4; i++)
    close(idle[i]);
}

static void test_idle_connections_evicted_before_refusing(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.max_connections = 4;
  limits.evict_idle = 1;
  f = run_server(&limits, client_evict_idle);
  assert_string_equal(body_of(f->r[0]), "GET /fresh q=- t=- b=");
  assert_int_equal(f->n[0], 1);
  assert_true(f->stats.evicted >= 1);
  assert_int_equal(f->stats.rejected_busy, 0);
  free(f);
}

static void client_keep_alive_first(struct fixture *f)
{
  int served = cl_connect(f->port);
  int quiet = cl_connect(f->port);
  int fresh;

  /* One keep-alive connection that was served, one new one that sent
   * nothing yet: at the limit the served one goes first. */
  cl_sends(served, "GET /a HTTP/1.1\r\n\r\n");
  cl_read(served, f->r[0], RESULT_MAX, 1);
  fresh = cl_connect(f->port);
  f->n[0] = cl_closed(served);
  cl_sends(quiet, "GET /quiet HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(quiet, f->r[1], RESULT_MAX, 0);
  cl_sends(fresh, "GET /fresh HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fresh, f->r[2], RESULT_MAX, 0);
  close(served);
  close(quiet);
  close(fresh);
}

static void test_idle_keep_alive_evicted_first(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.max_connections = 2;
  limits.evict_idle = 1;
  f = run_server(&limits, client_keep_alive_first);
  assert_int_equal(f->n[0], 1);
  assert_string_equal(body_of(f->r[1]), "GET /quiet q=- t=- b=");
  assert_string_equal(body_of(f->r[2]), "GET /fresh q=- t=- b=");
  assert_int_equal(f->stats.evicted, 1);
  free(f);
}

static void client_busy_not_evictable(struct fixture *f)
{
  int a = cl_connect(f->port);
  int b;

  /* A request in flight (its head is complete, its body is not) is not
   * evicted: the new connection is refused instead. */
  cl_sends(a, "POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
  sleep_ms(50);
  b = cl_connect(f->port);
  f->n[0] = b >= 0 ? cl_closed(b) : -1;
  if (b >= 0)
    close(b);
  cl_sends(a, "cd");
  cl_read(a, f->r[0], RESULT_MAX, 1);
  close(a);
}

static void test_request_in_flight_is_not_evicted(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.max_connections = 1;
  limits.evict_idle = 1;
  f = run_server(&limits, client_busy_not_evictable);
  assert_int_equal(f->n[0], 1);
  assert_string_equal(body_of(f->r[0]), "POST /echo q=- t=- b=abcd");
  assert_int_equal(f->stats.rejected_busy, 1);
  assert_int_equal(f->stats.evicted, 0);
  free(f);
}

static void client_per_peer(struct fixture *f)
{
  int a = cl_connect(f->port);
  int b = cl_connect(f->port);
  int c;

  /* Both of this address's connections are busy mid-request: a third is
   * refused although max_connections has room. */
  cl_sends(a, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n");
  cl_sends(b, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n");
  sleep_ms(50);
  c = cl_connect(f->port);
  f->n[0] = c >= 0 ? cl_closed(c) : -1;
  if (c >= 0)
    close(c);
  cl_sends(a, "ok");
  cl_read(a, f->r[0], RESULT_MAX, 1);
  /* a is idle keep-alive now: the next connection takes its place. */
  c = cl_connect(f->port);
  f->n[1] = cl_closed(a);
  cl_sends(c, "GET /c HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(c, f->r[1], RESULT_MAX, 0);
  cl_sends(b, "ok");
  cl_read(b, f->r[2], RESULT_MAX, 1);
  close(a);
  close(b);
  close(c);
}

static void test_per_peer_limit(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.max_connections = 8;
  limits.max_connections_per_peer = 2;
  limits.evict_idle = 1;
  f = run_server(&limits, client_per_peer);
  assert_int_equal(f->n[0], 1);
  assert_int_equal(f->n[1], 1);
  assert_string_equal(body_of(f->r[0]), "POST /echo q=- t=- b=ok");
  assert_string_equal(body_of(f->r[1]), "GET /c q=- t=- b=");
  assert_string_equal(body_of(f->r[2]), "POST /echo q=- t=- b=ok");
  assert_int_equal(f->stats.rejected_peer, 1);
  assert_int_equal(f->stats.evicted, 1);
  free(f);
}

static void client_header_timeout(struct fixture *f)
{
  int quiet = cl_connect(f->port);
  int slow = cl_connect(f->port);
  long t0 = now_ms();

  /* One sends nothing, one sends a head that never ends: both are closed
   * after the header timeout, well before the read timeout. */
  cl_sends(slow, "GET /slow HTTP/1.1\r\nX-A: 1\r\n");
  f->n[0] = cl_closed(quiet);
  f->n[1] = now_ms() - t0;
  cl_read(slow, f->r[0], RESULT_MAX, 0);
  f->n[2] = now_ms() - t0;
  close(quiet);
  close(slow);
}

static void test_header_timeout(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.header_timeout_ms = 200;
  limits.read_timeout_ms = 2500;
  f = run_server(&limits, client_header_timeout);
  assert_int_equal(f->n[0], 1);
  assert_true(f->n[1] >= 150 && f->n[1] < 1500);
  assert_true(strncmp(f->r[0], "HTTP/1.1 408 ", 13) == 0);
  assert_true(f->n[2] < 1500);
  assert_int_equal(f->stats.header_timed_out, 2);
  assert_int_equal(f->stats.timed_out, 0);
  free(f);
}

static void client_failures(struct fixture *f)
{
  int fd = cl_connect(f->port);
  int i;

  /* A budget of 3 failures a minute: the fourth is 429 and the
   * connection closes after it. */
  for (i = 0; i < 4; i++) {
    cl_sends(fd, "GET /fail HTTP/1.1\r\n\r\n");
    cl_read(fd, f->r[i], RESULT_MAX, 1);
  }
  f->n[0] = cl_closed(fd);
  close(fd);
  /* Requests that do not fail are not limited. */
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[4], RESULT_MAX, 0);
  close(fd);
}

static void test_failure_budget_429(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;
  int i;

  (void)state;
  limits.failures_per_minute = 3;
  f = run_server(&limits, client_failures);
  for (i = 0; i < 3; i++)
    assert_true(strncmp(f->r[i], "HTTP/1.1 401 ", 13) == 0);
  assert_true(strncmp(f->r[3], "HTTP/1.1 429 ", 13) == 0);
  assert_contains(f->r[3], "\r\nRetry-After: ");
  assert_contains(f->r[3], "\r\nConnection: close\r\n");
  assert_int_equal(f->n[0], 1);
  assert_true(strncmp(f->r[4], "HTTP/1.1 200 ", 13) == 0);
  assert_int_equal(f->stats.rate_limited, 1);
  free(f);
}

static void client_stop_idle(struct fixture *f)
{
  int fd = cl_connect(f->port);
  long t0;

  cl_sends(fd, "GET / HTTP/1.1\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 1);
  t0 = now_ms();
  client_stop(f);
  f->n[0] = cl_closed(fd);
  f->n[1] = now_ms() - t0;
  close(fd);
  /* No longer listening. */
  fd = cl_connect(f->port);
  f->n[2] = fd;
  if (fd >= 0)
    close(fd);
}

static void test_stop_with_idle_connection(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_stop_idle);
  assert_true(strncmp(f->r[0], "HTTP/1.1 200 ", 13) == 0);
  assert_int_equal(f->n[0], 1);
  /* At once, not after the 2 s idle timeout. */
  assert_true(f->n[1] < 1000);
  assert_int_equal(f->n[2], -1);
  free(f);
}

static void client_stop_half_sent(struct fixture *f)
{
  int fd = cl_connect(f->port);
  int slow = cl_connect(f->port);

  cl_sends(fd, "POST /late HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
  cl_sends(slow, "GET /never HTTP/1.1\r\n");
  sleep_ms(50);
  client_stop(f);
  sleep_ms(50);
  /* The request in flight still gets its answer, then the close. */
  cl_sends(fd, "cd");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
  /* One that never completes gets 408 at its read timeout. */
  cl_read(slow, f->r[1], RESULT_MAX, 0);
  close(slow);
}

static void test_stop_with_half_sent_request(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.read_timeout_ms = 400;
  f = run_server(&limits, client_stop_half_sent);
  assert_true(strncmp(f->r[0], "HTTP/1.1 200 ", 13) == 0);
  assert_contains(f->r[0], "\r\nConnection: close\r\n");
  assert_string_equal(body_of(f->r[0]), "POST /late q=- t=- b=abcd");
  assert_true(strncmp(f->r[1], "HTTP/1.1 408 ", 13) == 0);
  assert_int_equal(f->stats.timed_out, 1);
  free(f);
}

static void client_expect(struct fixture *f)
{
  int fd = cl_connect(f->port);
  char buf[256];
  ssize_t n;

  cl_sends(fd, "PUT /up HTTP/1.1\r\nContent-Length: 3\r\n"
               "Expect: 100-Continue\r\nConnection: close\r\n\r\n");
  n = recv(fd, buf, sizeof(buf) - 1, 0);
  buf[n > 0 ? n : 0] = '\0';
  snprintf(f->r[0], RESULT_MAX, "%s", buf);
  cl_sends(fd, "abc");
  cl_read(fd, f->r[1], RESULT_MAX, 0);
  close(fd);
}

static void test_expect_continue(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_expect);
  assert_string_equal(f->r[0], "HTTP/1.1 100 Continue\r\n\r\n");
  assert_string_equal(body_of(f->r[1]), "PUT /up q=- t=- b=abc");
  free(f);
}

static void client_vanish(struct fixture *f)
{
  struct linger lg = {1, 0};
  char many[64 * 24];
  size_t len = 0;
  int fd;
  int i;

  /* Send a burst of requests and reset the connection without reading. */
  for (i = 0; i < 64; i++)
    len += (size_t)snprintf(many + len, sizeof(many) - len,
                            "GET /v%02d HTTP/1.1\r\n\r\n", i);
  fd = cl_connect(f->port);
  cl_send(fd, many, len);
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(fd);
  /* Half a request, then gone. */
  fd = cl_connect(f->port);
  cl_sends(fd, "POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\nab");
  close(fd);
  sleep_ms(100);
  /* The server is still fine. */
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /after HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
}

static void client_half_close(struct fixture *f)
{
  int fd = cl_connect(f->port);

  /* Requests, then FIN: the answers must still arrive before the close. */
  cl_sends(fd, "GET /h1 HTTP/1.1\r\n\r\nGET /h2 HTTP/1.1\r\n\r\n");
  shutdown(fd, SHUT_WR);
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /h3 HTTP/1.1\r\nConnection: close\r\n\r\n");
  shutdown(fd, SHUT_WR);
  cl_read(fd, f->r[1], RESULT_MAX, 0);
  close(fd);
  /* Half a request, then FIN: nothing to answer, the server closes. */
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /h4 HTTP/1.1\r\n");
  shutdown(fd, SHUT_WR);
  f->n[0] = (long)cl_read(fd, f->r[2], RESULT_MAX, 0);
  close(fd);
}

static void test_client_half_close(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_half_close);
  assert_int_equal(count_responses(f->r[0], strlen(f->r[0])), 2);
  assert_non_null(strstr(f->r[0], "GET /h2 q=- t=- b="));
  assert_string_equal(body_of(f->r[1]), "GET /h3 q=- t=- b=");
  assert_int_equal(f->n[0], 0);
  assert_int_equal(f->handled, 3);
  free(f);
}

static void test_peer_vanishes(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_vanish);
  assert_string_equal(body_of(f->r[0]), "GET /after q=- t=- b=");
  free(f);
}

/* ---- deferred answers ---- */

static void client_deferred_keep_alive(struct fixture *f)
{
  int fd = cl_connect(f->port);
  long t0 = now_ms();

  /* Answered 400 ms later: past both the read and the idle timeout. */
  cl_sends(fd, "GET /defer/400/3000 HTTP/1.1\r\nHost: a\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 1);
  f->n[0] = now_ms() - t0;
  cl_sends(fd, "GET /two HTTP/1.1\r\nHost: a\r\n\r\n");
  cl_read(fd, f->r[1], RESULT_MAX, 1);
  /* Deferred and answered before the handler returned. */
  cl_sends(fd, "GET /defer/-1/3000 HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[2], RESULT_MAX, 0);
  close(fd);
}

static void test_deferred_answer_on_keep_alive(void **state)
{
  struct http_server_limits limits = default_limits;
  struct fixture *f;

  (void)state;
  limits.read_timeout_ms = 100;
  limits.idle_timeout_ms = 150;
  f = run_server(&limits, client_deferred_keep_alive);
  assert_true(strncmp(f->r[0], "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_contains(f->r[0], "\r\nConnection: keep-alive\r\n");
  assert_contains(f->r[0], "\r\nX-Later: 1\r\n\r\n");
  assert_string_equal(body_of(f->r[0]), "later /defer/400/3000");
  assert_true(f->n[0] >= 380);
  assert_true(f->n[0] < 2500);
  assert_string_equal(body_of(f->r[1]), "GET /two q=- t=- b=");
  assert_contains(f->r[2], "\r\nConnection: close\r\n");
  assert_string_equal(body_of(f->r[2]), "later /defer/-1/3000");
  assert_string_equal(f->trace, "H:/defer/400/3000 A:/defer/400/3000=0 "
                                "H:/two H:/defer/-1/3000 A:/defer/-1/3000=0 ");
  assert_int_equal(f->stats.timed_out, 0);
  assert_int_equal(f->stats.deferred, 0);
  assert_int_equal(f->stats.deferred_expired, 0);
  assert_int_equal(f->stats.accepted, 1);
  free(f);
}

static void client_deferred_pipelined(struct fixture *f)
{
  int fd = cl_connect(f->port);

  /* One segment: a deferred request, a plain one, another deferred one
   * answered sooner than the first. */
  cl_sends(fd, "GET /defer/200/3000 HTTP/1.1\r\n\r\n"
               "GET /after HTTP/1.1\r\n\r\n"
               "GET /defer/20/3000 HTTP/1.1\r\n\r\n"
               "HEAD /defer/10/3000 HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
}

static void test_deferred_answer_keeps_pipelined_order(void **state)
{
  struct fixture *f;
  const char *a;
  const char *b;
  const char *c;
  const char *d;

  (void)state;
  f = run_server(&default_limits, client_deferred_pipelined);
  a = strstr(f->r[0], "\r\n\r\nlater /defer/200/3000");
  b = strstr(f->r[0], "\r\n\r\nGET /after q=- t=- b=");
  c = strstr(f->r[0], "\r\n\r\nlater /defer/20/3000");
  d = strstr(f->r[0], "Content-Length: 20\r\nConnection: close\r\n");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_non_null(d);
  assert_true(a < b && b < c && c < d);
  /* The HEAD answer has the length of the body and no body. */
  assert_string_equal(d, "Content-Length: 20\r\nConnection: close\r\n"
                         "X-Later: 1\r\n\r\n");
  /* Nothing behind a deferred request is even parsed before its answer. */
  assert_string_equal(f->trace,
                      "H:/defer/200/3000 A:/defer/200/3000=0 H:/after "
                      "H:/defer/20/3000 A:/defer/20/3000=0 "
                      "H:/defer/10/3000 A:/defer/10/3000=0 ");
  free(f);
}

static void client_deferred_limit(struct fixture *f)
{
  int fd = cl_connect(f->port);
  long t0 = now_ms();

  cl_sends(fd, "GET /defer/300/100 HTTP/1.1\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 1);
  f->n[0] = now_ms() - t0;
  /* The connection goes on; the late answer, when it comes, is dropped
   * and nothing of it reaches the client. */
  cl_sends(fd, "GET /next HTTP/1.1\r\n\r\n");
  cl_read(fd, f->r[1], RESULT_MAX, 1);
  sleep_ms(400);
  cl_sends(fd, "GET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[2], RESULT_MAX, 0);
  close(fd);
  /* A handle given up without an answer. */
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /release/20/3000 HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[3], RESULT_MAX, 0);
  close(fd);
}

static void test_deferred_limit_answers_503(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_deferred_limit);
  assert_true(strncmp(f->r[0], "HTTP/1.1 503 Service Unavailable\r\n", 34) ==
              0);
  assert_contains(f->r[0], "\r\nContent-Type: text/plain\r\n");
  assert_contains(f->r[0], "\r\nConnection: keep-alive\r\n");
  assert_string_equal(body_of(f->r[0]), "no answer within 100 ms; try again\n");
  assert_true(f->n[0] >= 90);
  assert_true(f->n[0] < 290);
  assert_string_equal(body_of(f->r[1]), "GET /next q=- t=- b=");
  assert_int_equal(count_responses(f->r[2], strlen(f->r[2])), 1);
  assert_string_equal(body_of(f->r[2]), "GET /last q=- t=- b=");
  assert_true(strncmp(f->r[3], "HTTP/1.1 503 ", 13) == 0);
  assert_string_equal(body_of(f->r[3]),
                      "the answer was abandoned; try again\n");
  assert_string_equal(f->trace, "H:/defer/300/100 H:/next "
                                "A:/defer/300/100=-1 H:/last "
                                "H:/release/20/3000 R:/release/20/3000=0 ");
  assert_int_equal(f->stats.deferred_expired, 1);
  free(f);
}

static void client_deferred_gone(struct fixture *f)
{
  struct linger lg = {1, 0};
  int rst = cl_connect(f->port);
  int fin = cl_connect(f->port);
  int fd;

  cl_sends(rst, "GET /defer/200/3000/rst HTTP/1.1\r\n\r\n");
  cl_sends(fin, "GET /defer/250/3000/fin HTTP/1.1\r\n\r\n");
  sleep_ms(50);
  /* One resets the connection, the other closes it, both before the
   * answer: the handles stay good, the answers find no one or a socket
   * that is gone. */
  setsockopt(rst, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(rst);
  close(fin);
  sleep_ms(400);
  fd = cl_connect(f->port);
  cl_sends(fd, "GET /after HTTP/1.1\r\nConnection: close\r\n\r\n");
  cl_read(fd, f->r[0], RESULT_MAX, 0);
  close(fd);
}

static void test_deferred_client_gone(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_deferred_gone);
  assert_string_equal(body_of(f->r[0]), "GET /after q=- t=- b=");
  /* A reset closes the connection at once: the answer is dropped. */
  assert_contains(f->trace, "A:/defer/200/3000/rst=-1 ");
  /* A FIN may be a half-close: the answer is still sent. */
  assert_contains(f->trace, "A:/defer/250/3000/fin=0 ");
  assert_int_equal(f->stats.deferred_expired, 0);
  free(f);
}

static void client_deferred_stop(struct fixture *f)
{
  int a = cl_connect(f->port);
  int b = cl_connect(f->port);
  long t0;

  cl_sends(a, "GET /defer/300/3000 HTTP/1.1\r\n\r\n");
  cl_sends(b, "GET /defer/600/150 HTTP/1.1\r\n\r\n");
  sleep_ms(50);
  t0 = now_ms();
  client_stop(f);
  /* Both still get an answer, then the close: the first its own, the
   * second the server's at its limit. */
  cl_read(a, f->r[0], RESULT_MAX, 0);
  f->n[0] = now_ms() - t0;
  cl_read(b, f->r[1], RESULT_MAX, 0);
  close(a);
  close(b);
}

static void test_stop_with_deferred_answer(void **state)
{
  struct fixture *f;

  (void)state;
  f = run_server(&default_limits, client_deferred_stop);
  assert_true(strncmp(f->r[0], "HTTP/1.1 200 ", 13) == 0);
  assert_contains(f->r[0], "\r\nConnection: close\r\n");
  assert_string_equal(body_of(f->r[0]), "later /defer/300/3000");
  assert_true(f->n[0] >= 150);
  assert_true(strncmp(f->r[1], "HTTP/1.1 503 ", 13) == 0);
  assert_contains(f->r[1], "\r\nConnection: close\r\n");
  /* done_cb ran once both had gone; the late answer was dropped. */
  assert_contains(f->trace, "A:/defer/300/3000=0 ");
  assert_contains(f->trace, "A:/defer/600/150=-1 ");
  assert_int_equal(f->stats.deferred_expired, 1);
  assert_int_equal(f->stats.deferred, 0);
  free(f);
}

static void test_defer_refused_outside_the_server(void **state)
{
  struct http_response resp;

  (void)state;
  memset(&resp, 0, sizeof(resp));
  assert_null(http_response_defer(&resp, 100));
  assert_null(http_response_defer(NULL, 100));
  assert_int_equal(http_deferred_answer(NULL, 200, "text/plain", "", 0), -1);
  http_deferred_release(NULL);
}

static void test_header_lookup(void **state)
{
  struct http_request req;

  (void)state;
  memset(&req, 0, sizeof(req));
  req.headers[0].name = "Content-Type";
  req.headers[0].value = "application/json";
  req.headers[1].name = "X-GitHub-Event";
  req.headers[1].value = "workflow_job";
  req.nheaders = 2;
  assert_string_equal(http_request_header(&req, "content-type"),
                      "application/json");
  assert_string_equal(http_request_header(&req, "x-github-event"),
                      "workflow_job");
  assert_string_equal(http_request_header(&req, "X-GITHUB-EVENT"),
                      "workflow_job");
  assert_null(http_request_header(&req, "X-GitHub"));
  assert_null(http_request_header(&req, NULL));
  assert_null(http_request_header(NULL, "a"));
}

static void test_response_set(void **state)
{
  struct http_response resp;

  (void)state;
  memset(&resp, 0, sizeof(resp));
  assert_int_equal(http_response_set(&resp, 404, "text/plain", "nope", 4), 0);
  assert_int_equal(resp.status, 404);
  assert_int_equal(resp.body_len, 4);
  assert_string_equal(resp.body, "nope");
  /* Setting again replaces the body without leaking it. */
  assert_int_equal(http_response_set(&resp, 200, "application/json", NULL, 0),
                   0);
  assert_int_equal(resp.body_len, 0);
  assert_string_equal(resp.body, "");
  free(resp.body);
}

static void test_date_and_reason(void **state)
{
  char date[40];

  (void)state;
  http_date(784111777, date, sizeof(date));
  assert_string_equal(date, "Sun, 06 Nov 1994 08:49:37 GMT");
  assert_string_equal(http_reason(431), "Request Header Fields Too Large");
  assert_string_equal(http_reason(799), "Unknown");
}

static void never_done(void *arg)
{
  int *called = arg;

  (*called)++;
}

static void test_listen_errors(void **state)
{
  struct sockaddr_storage ss;
  uv_loop_t loop;
  struct http_server *a;
  struct http_server *b;
  char addr[32];
  int called = 0;

  (void)state;
  assert_int_equal(http_parse_addr("127.0.0.1:80", &ss), 0);
  assert_int_equal(http_parse_addr("[::1]:8080", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  assert_true(http_parse_addr("127.0.0.1", &ss) < 0);
  assert_true(http_parse_addr("127.0.0.1:99999", &ss) < 0);
  assert_true(http_parse_addr("127.0.0.1:", &ss) < 0);
  assert_true(http_parse_addr("[::1:80", &ss) < 0);
  assert_true(http_parse_addr("localhost:80", &ss) < 0);
  assert_true(http_parse_addr(":80", &ss) < 0);

  assert_int_equal(uv_loop_init(&loop), 0);
  a = http_server_new(&loop, &default_limits, handler, NULL);
  b = http_server_new(&loop, &default_limits, handler, NULL);
  assert_non_null(a);
  assert_non_null(b);
  assert_null(http_server_new(&loop, NULL, handler, NULL));
  assert_null(http_server_new(&loop, &default_limits, NULL, NULL));
  assert_true(http_server_listen(b, "nonsense") < 0);
  assert_int_equal(http_server_listen(a, "127.0.0.1:0"), 0);
  /* Listening twice is refused. */
  assert_true(http_server_listen(a, "127.0.0.1:0") < 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_server_port(a));
  assert_true(http_server_listen(b, addr) < 0);
  assert_int_equal(http_server_port(b), -1);
  /* A server that failed to listen can go at once. */
  http_server_destroy(b);
  http_server_stop(a, never_done, &called);
  assert_int_equal(called, 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(called, 1);
  http_server_destroy(a);

  /* Never listened: stop is done before it returns. */
  a = http_server_new(&loop, &default_limits, handler, NULL);
  assert_non_null(a);
  http_server_stop(a, never_done, &called);
  assert_int_equal(called, 2);
  http_server_destroy(a);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Trailer fields after a chunked body are not kept as headers: the head
 * was closed already, so a kept one would have no NUL after it (a read
 * past its buffer the fuzzer found). They still count against the header
 * limit. */
static size_t trailer_requests;

static void trailer_handler_cb(void *ctx, const struct http_request *req,
                               struct http_response *resp)
{
  size_t i;

  (void)ctx;
  trailer_requests++;
  assert_int_equal(req->nheaders, 2);
  for (i = 0; i < req->nheaders; i++)
    assert_true(strlen(req->headers[i].name) + strlen(req->headers[i].value) <
                64);
  assert_null(http_request_header(req, "X-Trailer"));
  assert_int_equal(req->body_len, 3);
  assert_memory_equal(req->body, "hi!", 3);
  http_response_set(resp, 200, "text/plain", "ok\n", 3);
}

static void test_chunked_trailers_not_kept(void **state)
{
  static const char req[] = "POST /t HTTP/1.1\r\nHost: a\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "2\r\nhi\r\n1\r\n!\r\n0\r\n"
                            "X-Trailer: 1\r\nX-Other: 2\r\n\r\n";
  const struct http_server_limits limits = {.name = "t",
                                            .max_header_bytes = 128,
                                            .max_body_bytes = 1024,
                                            .max_connections = 4,
                                            .read_timeout_ms = 1000,
                                            .idle_timeout_ms = 1000};
  char big[600];
  uv_loop_t loop;
  struct http_server *s;
  size_t chunk;
  int n;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  s = http_server_new(&loop, &limits, trailer_handler_cb, NULL);
  assert_non_null(s);
  for (chunk = 0; chunk < 8; chunk++) {
    assert_int_equal(http_server_parse_for_test(s, req, sizeof(req) - 1, chunk),
                     0);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  assert_int_equal(trailer_requests, 8);
  /* Trailers past the header limit end the request with 431. */
  n = snprintf(big, sizeof(big),
               "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\nX-Long: %0200d\r\n\r\n",
               0);
  assert_int_equal(http_server_parse_for_test(s, big, (size_t)n, 0), 431);
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(trailer_requests, 8);
  http_server_destroy(s);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_lookup),
      cmocka_unit_test(test_response_set),
      cmocka_unit_test(test_date_and_reason),
      cmocka_unit_test(test_listen_errors),
      cmocka_unit_test(test_get_and_post),
      cmocka_unit_test(test_keep_alive),
      cmocka_unit_test(test_pipelining),
      cmocka_unit_test(test_pipelining_backpressure),
      cmocka_unit_test(test_limits_431_413),
      cmocka_unit_test(test_bad_requests_400),
      cmocka_unit_test(test_slow_client_timeouts),
      cmocka_unit_test(test_max_connections),
      cmocka_unit_test(test_idle_connections_evicted_before_refusing),
      cmocka_unit_test(test_idle_keep_alive_evicted_first),
      cmocka_unit_test(test_request_in_flight_is_not_evicted),
      cmocka_unit_test(test_per_peer_limit),
      cmocka_unit_test(test_header_timeout),
      cmocka_unit_test(test_failure_budget_429),
      cmocka_unit_test(test_stop_with_idle_connection),
      cmocka_unit_test(test_stop_with_half_sent_request),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_peer_vanishes),
      cmocka_unit_test(test_client_half_close),
      cmocka_unit_test(test_defer_refused_outside_the_server),
      cmocka_unit_test(test_deferred_answer_on_keep_alive),
      cmocka_unit_test(test_deferred_answer_keeps_pipelined_order),
      cmocka_unit_test(test_deferred_limit_answers_503),
      cmocka_unit_test(test_deferred_client_gone),
      cmocka_unit_test(test_stop_with_deferred_answer),
      cmocka_unit_test(test_chunked_trailers_not_kept),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
