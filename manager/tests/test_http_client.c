/* The libcurl-on-libuv client against a canned server on the same loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "fake_http.h"
#include "http_client.h"

struct fixture {
  uv_loop_t loop;
  struct fake_http srv;
  struct http_client *client;
  int mode; /* what the handler answers */
  char last_method[16];
  char last_target[1024];
  char last_body[256];
  char last_header[128];
  struct fake_http_conn *stream_conn; /* ANSWER_STREAM's connection */
};

enum { ANSWER_OK, ANSWER_NEVER, ANSWER_HUGE, ANSWER_STREAM, ANSWER_404 };

/* Writes raw bytes on a connection (a chunked body, piece by piece). */
static void write_raw(struct fake_http_conn *conn, const char *text)
{
  uv_write_t *w = malloc(sizeof(*w));
  uv_buf_t b;

  assert_non_null(w);
  b.len = strlen(text);
  b.base = malloc(b.len);
  assert_non_null(b.base);
  memcpy(b.base, text, b.len);
  w->data = b.base;
  assert_int_equal(
      uv_write(w, (uv_stream_t *)&conn->tcp, &b, 1, fake_http_write_cb), 0);
}

struct result {
  int done;
  int calls;
  long status;
  int curl_code;
  char error[256];
  char body[256];
  size_t body_len;
  char header[128];
  int header_rc;
};

static void handler(void *arg, struct fake_http_req *req)
{
  struct fixture *f = arg;
  char *huge;

  snprintf(f->last_method, sizeof(f->last_method), "%s", req->method);
  snprintf(f->last_target, sizeof(f->last_target), "%s", req->target);
  snprintf(f->last_body, sizeof(f->last_body), "%s", req->body);
  if (fake_http_req_header(req, "X-Test", f->last_header,
                           sizeof(f->last_header)) != 0)
    f->last_header[0] = '\0';
  switch (f->mode) {
  case ANSWER_NEVER:
    break;
  case ANSWER_STREAM:
    f->stream_conn = req->conn;
    write_raw(req->conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5\r\nhello\r\n");
    break;
  case ANSWER_404:
    fake_http_respond(req->conn, 404, NULL, "nope");
    break;
  case ANSWER_HUGE:
    huge = calloc(1, HTTP_CLIENT_MAX_RESPONSE + 16);
    if (huge != NULL)
      fake_http_respond_len(req->conn, 200, NULL, huge,
                            HTTP_CLIENT_MAX_RESPONSE + 16);
    free(huge);
    break;
  default:
    fake_http_respond(req->conn, 201,
                      "Content-Type: text/plain\r\nX-Reply:  echo \r\n",
                      "hello");
  }
}

static void done_cb(void *arg, const struct http_client_response *resp)
{
  struct result *r = arg;

  r->calls++;
  r->done = 1;
  r->status = resp->status;
  r->curl_code = resp->curl_code;
  snprintf(r->error, sizeof(r->error), "%s", resp->error ? resp->error : "");
  snprintf(r->body, sizeof(r->body), "%s", resp->body ? resp->body : "");
  r->body_len = resp->body_len;
  r->header_rc =
      http_client_header(resp, "x-reply", r->header, sizeof(r->header));
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(fake_http_start(&f->srv, &f->loop, handler, f), 0);
  f->client = http_client_new(&f->loop);
  assert_non_null(f->client);
  *state = f;
  return 0;
}

static void closed_cb(void *arg)
{
  int *closed = arg;

  (*closed)++;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  int closed = 0;

  http_client_close(f->client, closed_cb, &closed);
  assert_int_equal(fake_http_run_until(&f->loop, &closed, 5000), 1);
  http_client_destroy(f->client);
  fake_http_stop(&f->srv);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(f->srv.handles, 0);
  assert_int_equal(closed, 1);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

static void url(struct fixture *f, char *out, size_t size, const char *path)
{
  snprintf(out, size, "http://127.0.0.1:%d%s", f->srv.port, path);
}

static void test_get(void **state)
{
  struct fixture *f = *state;
  const char *headers[] = {"X-Test: one", NULL};
  struct http_client_request req = {0};
  struct result r = {0};
  char u[128];

  url(f, u, sizeof(u), "/a?b=c");
  req.method = "GET";
  req.url = u;
  req.headers = headers;
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(http_client_pending(f->client), 1);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 201);
  assert_int_equal(r.curl_code, CURLE_OK);
  assert_string_equal(r.error, "");
  assert_string_equal(r.body, "hello");
  assert_int_equal(r.body_len, 5);
  assert_int_equal(r.header_rc, 0);
  assert_string_equal(r.header, "echo");
  assert_string_equal(f->last_method, "GET");
  assert_string_equal(f->last_target, "/a?b=c");
  assert_string_equal(f->last_header, "one");
  assert_int_equal(http_client_pending(f->client), 0);
}

static void test_post_and_delete_with_body(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct result r = {0};
  char u[128];

  url(f, u, sizeof(u), "/post");
  req.method = "POST";
  req.url = u;
  req.body = "{\"a\":1}";
  req.body_len = strlen(req.body);
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 201);
  assert_string_equal(f->last_method, "POST");
  assert_string_equal(f->last_body, "{\"a\":1}");

  memset(&r, 0, sizeof(r));
  req.method = "DELETE";
  req.body = NULL;
  req.body_len = 0;
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 201);
  assert_string_equal(f->last_method, "DELETE");
  assert_string_equal(f->last_body, "");
}

static void test_connection_reused(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct result r1 = {0}, r2 = {0};
  char u[128];

  url(f, u, sizeof(u), "/x");
  req.method = "GET";
  req.url = u;
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r1), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r1.done, 5000), 1);
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r2), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r2.done, 5000), 1);
  assert_int_equal(r1.status, 201);
  assert_int_equal(r2.status, 201);
  assert_int_equal(f->srv.requests, 2);
  assert_int_equal(f->srv.accepts, 1);
}

static void test_timeout(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct result r = {0};
  uint64_t start;
  char u[128];

  f->mode = ANSWER_NEVER;
  url(f, u, sizeof(u), "/slow");
  req.method = "GET";
  req.url = u;
  req.timeout_ms = 200;
  start = uv_now(&f->loop);
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.curl_code, CURLE_OPERATION_TIMEDOUT);
  assert_true(r.error[0] != '\0');
  assert_true(uv_now(&f->loop) - start >= 190);
}

static void test_connection_refused(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct fake_http other;
  struct result r = {0};
  char u[128];
  int port;

  /* A port that was just free and is closed again. */
  assert_int_equal(fake_http_start(&other, &f->loop, handler, f), 0);
  port = other.port;
  fake_http_stop(&other);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(other.handles, 0);
  snprintf(u, sizeof(u), "http://127.0.0.1:%d/", port);
  req.method = "GET";
  req.url = u;
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.curl_code, CURLE_COULDNT_CONNECT);
  assert_true(r.error[0] != '\0');
}

static void test_oversized_body_fails(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct result r = {0};
  char u[128];

  f->mode = ANSWER_HUGE;
  url(f, u, sizeof(u), "/huge");
  req.method = "GET";
  req.url = u;
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 10000), 1);
  assert_int_equal(r.status, 0);
  assert_int_not_equal(r.curl_code, CURLE_OK);
  assert_true(r.error[0] != '\0');
}

static void test_close_aborts_in_flight(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct result r = {0};
  struct http_client *c = f->client;
  char u[128];
  int closed = 0;

  f->mode = ANSWER_NEVER;
  url(f, u, sizeof(u), "/hang");
  req.method = "GET";
  req.url = u;
  assert_int_equal(http_client_send(c, &req, done_cb, &r), 0);
  /* Wait until the server has the request, so a socket is being polled. */
  while (f->srv.requests == 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  http_client_close(c, closed_cb, &closed);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.curl_code, CURLE_ABORTED_BY_CALLBACK);
  assert_int_equal(http_client_pending(c), 0);
  assert_int_equal(closed, 0); /* handles close on the loop, later */
  assert_int_equal(http_client_send(c, &req, done_cb, &r), -ESHUTDOWN);
  assert_int_equal(fake_http_run_until(&f->loop, &closed, 5000), 1);
  assert_int_equal(r.calls, 1);
  http_client_destroy(c);
  f->client = http_client_new(&f->loop); /* for teardown */
  assert_non_null(f->client);
}

struct stream {
  char data[256];
  size_t len;
  unsigned chunks;
  const char *cancel_on; /* cancel from data_cb when this arrives */
  struct http_transfer *t;
  struct result r;
};

static int stream_data_cb(void *arg, const char *data, size_t len)
{
  struct stream *s = arg;

  s->chunks++;
  if (s->len + len < sizeof(s->data)) {
    memcpy(s->data + s->len, data, len);
    s->len += len;
    s->data[s->len] = '\0';
  }
  if (s->cancel_on != NULL && strstr(s->data, s->cancel_on) != NULL)
    http_client_cancel(s->t);
  return 0;
}

static void stream_done_cb(void *arg, const struct http_client_response *resp)
{
  struct stream *s = arg;

  done_cb(&s->r, resp);
}

static void start_stream(struct fixture *f, struct stream *s, uint64_t idle_ms)
{
  struct http_client_request req = {0};
  char u[128];

  url(f, u, sizeof(u), "/watch");
  req.method = "GET";
  req.url = u;
  req.data_cb = stream_data_cb;
  req.idle_timeout_ms = idle_ms;
  assert_int_equal(http_client_start(f->client, &req, stream_done_cb, s, &s->t),
                   0);
}

static void run_until_len(struct fixture *f, struct stream *s, size_t len)
{
  uint64_t until = uv_now(&f->loop) + 5000;

  while (s->len < len && !s->r.done && uv_now(&f->loop) < until)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(s->len >= len);
}

static void test_stream_chunks_then_cancel_in_callback(void **state)
{
  struct fixture *f = *state;
  struct stream s = {.cancel_on = "world"};

  f->mode = ANSWER_STREAM;
  start_stream(f, &s, 0);
  run_until_len(f, &s, 5);
  assert_string_equal(s.data, "hello");
  assert_int_equal(s.r.done, 0);
  write_raw(f->stream_conn, "3\r\n, w\r\n4\r\norld\r\n");
  assert_int_equal(fake_http_run_until(&f->loop, &s.r.done, 5000), 1);
  assert_string_equal(s.data, "hello, world");
  assert_int_equal(s.r.calls, 1);
  assert_int_equal(s.r.curl_code, CURLE_ABORTED_BY_CALLBACK);
  assert_int_equal(s.r.status, 0);
  assert_string_equal(s.r.body, "");
  assert_int_equal(http_client_pending(f->client), 0);
}

static void test_stream_cancel_outside_callback(void **state)
{
  struct fixture *f = *state;
  struct stream s = {0};

  f->mode = ANSWER_STREAM;
  start_stream(f, &s, 0);
  run_until_len(f, &s, 5);
  http_client_cancel(s.t);
  assert_int_equal(s.r.calls, 1);
  assert_int_equal(s.r.curl_code, CURLE_ABORTED_BY_CALLBACK);
  assert_int_equal(http_client_pending(f->client), 0);
}

static void test_stream_ends_cleanly(void **state)
{
  struct fixture *f = *state;
  struct stream s = {0};

  f->mode = ANSWER_STREAM;
  start_stream(f, &s, 0);
  run_until_len(f, &s, 5);
  write_raw(f->stream_conn, "1\r\n!\r\n0\r\n\r\n");
  assert_int_equal(fake_http_run_until(&f->loop, &s.r.done, 5000), 1);
  assert_string_equal(s.data, "hello!");
  assert_int_equal(s.r.curl_code, CURLE_OK);
  assert_int_equal(s.r.status, 200);
}

static void test_stream_idle_timeout(void **state)
{
  struct fixture *f = *state;
  struct stream s = {0};

  f->mode = ANSWER_STREAM;
  start_stream(f, &s, 1000);
  assert_int_equal(fake_http_run_until(&f->loop, &s.r.done, 10000), 1);
  assert_string_equal(s.data, "hello");
  assert_int_equal(s.r.curl_code, CURLE_OPERATION_TIMEDOUT);
}

static void test_stream_error_status_is_buffered(void **state)
{
  struct fixture *f = *state;
  struct stream s = {0};

  f->mode = ANSWER_404;
  start_stream(f, &s, 0);
  assert_int_equal(fake_http_run_until(&f->loop, &s.r.done, 5000), 1);
  assert_int_equal(s.chunks, 0);
  assert_int_equal(s.r.status, 404);
  assert_string_equal(s.r.body, "nope");
}

static void test_tls_options_reach_curl(void **state)
{
  struct fixture *f = *state;
  struct http_client_tls tls = {.ca_file = "/nonexistent/ca.pem"};
  struct http_client_request req = {0};
  struct result r = {0};
  char u[128];

  /* TLS material is only used for https; an http request still works,
   * and a bad CA file fails an https one without a crash. */
  url(f, u, sizeof(u), "/plain");
  req.method = "GET";
  req.url = u;
  req.tls = &tls;
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 201);
  memset(&r, 0, sizeof(r));
  snprintf(u, sizeof(u), "https://127.0.0.1:%d/tls", f->srv.port);
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_not_equal(r.curl_code, CURLE_OK);
}

static void test_header_lookup(void **state)
{
  struct http_client_response resp = {0};
  char out[16];

  (void)state;
  resp.headers = "HTTP/1.1 200 OK\r\nRetry-After: 7\r\n"
                 "x-ratelimit-remaining:42\r\nLong: 0123456789abcdef\r\n\r\n";
  assert_int_equal(http_client_header(&resp, "retry-after", out, sizeof(out)),
                   0);
  assert_string_equal(out, "7");
  assert_int_equal(
      http_client_header(&resp, "X-RateLimit-Remaining", out, sizeof(out)), 0);
  assert_string_equal(out, "42");
  assert_int_equal(http_client_header(&resp, "retry", out, sizeof(out)), -1);
  assert_int_equal(http_client_header(&resp, "absent", out, sizeof(out)), -1);
  assert_int_equal(http_client_header(&resp, "long", out, sizeof(out)), -1);
}

static void test_bad_arguments(void **state)
{
  struct fixture *f = *state;
  struct http_client_request req = {0};
  struct result r = {0};

  req.method = "GET";
  assert_int_equal(http_client_send(f->client, &req, done_cb, &r), -EINVAL);
  assert_int_equal(http_client_pending(f->client), 0);
  assert_int_equal(r.calls, 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_post_and_delete_with_body, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_connection_reused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oversized_body_fails, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_close_aborts_in_flight, setup,
                                      teardown),
      cmocka_unit_test(test_header_lookup),
      cmocka_unit_test_setup_teardown(
          test_stream_chunks_then_cancel_in_callback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_cancel_outside_callback,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_ends_cleanly, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stream_idle_timeout, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stream_error_status_is_buffered,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_options_reach_curl, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
