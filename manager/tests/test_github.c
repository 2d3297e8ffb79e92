/* The GitHub client: JWT, encodings, and the token, retry, pacing and
 * pagination logic against a fake API on the test's own loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "fake_http.h"
#include "gh_call.h"
#include "github.h"

/* ---- metrics test double ----
 * Weak, so the real registry wins once metrics.c is linked in; either way
 * the assertions below read back through metrics_value(). */

struct metrics_series {
  char key[256];
  double value;
};

struct metrics {
  struct metrics_series series[64];
  size_t n;
};

__attribute__((weak)) struct metrics *metrics_new(void)
{
  return calloc(1, sizeof(struct metrics));
}

__attribute__((weak)) void metrics_destroy(struct metrics *m)
{
  free(m);
}

__attribute__((weak)) int
metrics_declare(struct metrics *m, const char *name, enum metrics_type type,
                const char *help, const double *buckets, size_t nbuckets)
{
  (void)m, (void)name, (void)type, (void)help, (void)buckets, (void)nbuckets;
  return 0;
}

static struct metrics_series *series(struct metrics *m, const char *name,
                                     const char *labels)
{
  char key[256];
  size_t i;

  snprintf(key, sizeof(key), "%s{%s}", name, labels);
  for (i = 0; i < m->n; i++)
    if (strcmp(m->series[i].key, key) == 0)
      return &m->series[i];
  if (m->n == 64)
    return NULL;
  snprintf(m->series[m->n].key, sizeof(m->series[m->n].key), "%s", key);
  return &m->series[m->n++];
}

__attribute__((weak)) int metrics_counter_add(struct metrics *m,
                                              const char *name,
                                              const char *labels, double delta)
{
  struct metrics_series *s = series(m, name, labels);

  if (s == NULL)
    return -1;
  s->value += delta;
  return 0;
}

__attribute__((weak)) int metrics_gauge_set(struct metrics *m, const char *name,
                                            const char *labels, double value)
{
  struct metrics_series *s = series(m, name, labels);

  if (s == NULL)
    return -1;
  s->value = value;
  return 0;
}

__attribute__((weak)) double metrics_value(const struct metrics *m,
                                           const char *name, const char *labels)
{
  char key[256];
  size_t i;

  snprintf(key, sizeof(key), "%s{%s}", name, labels);
  for (i = 0; i < m->n; i++)
    if (strcmp(m->series[i].key, key) == 0)
      return m->series[i].value;
  return 0;
}

/* ---- shared key ---- */

static EVP_PKEY *test_key;
static char key_path[64];
static char pat_path[64];

static int write_temp(char *path, size_t size, const char *data, size_t len)
{
  int fd;

  snprintf(path, size, "/tmp/runfleet-gh-XXXXXX");
  fd = mkstemp(path);
  if (fd < 0)
    return -1;
  if (write(fd, data, len) != (ssize_t)len) {
    close(fd);
    return -1;
  }
  return close(fd);
}

static int group_setup(void **state)
{
  BIO *bio;
  char *pem;
  long len;

  (void)state;
  test_key = EVP_RSA_gen(2048);
  if (test_key == NULL)
    return -1;
  bio = BIO_new(BIO_s_mem());
  if (bio == NULL ||
      PEM_write_bio_PrivateKey(bio, test_key, NULL, NULL, 0, NULL, NULL) != 1)
    return -1;
  len = BIO_get_mem_data(bio, &pem);
  if (write_temp(key_path, sizeof(key_path), pem, (size_t)len) != 0)
    return -1;
  BIO_free(bio);
  return write_temp(pat_path, sizeof(pat_path), "ghp_testpat\n", 12);
}

static int group_teardown(void **state)
{
  (void)state;
  unlink(key_path);
  unlink(pat_path);
  EVP_PKEY_free(test_key);
  return 0;
}

/* ---- encodings and JWT ---- */

static int b64url_decode(const char *in, size_t len, unsigned char *out,
                         size_t *out_len)
{
  uint32_t acc = 0;
  int bits = 0;
  size_t i, o = 0;
  int v;

  for (i = 0; i < len; i++) {
    char c = in[i];
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '-')
      v = 62;
    else if (c == '_')
      v = 63;
    else
      return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits & 0xff);
    }
  }
  *out_len = o;
  return 0;
}

static void test_base64url(void **state)
{
  const unsigned char bin[] = {0xfb, 0xff, 0xbf};
  char out[16];

  (void)state;
  assert_int_equal(gh_base64url((const unsigned char *)"", 0, out, 16), 0);
  assert_string_equal(out, "");
  assert_int_equal(gh_base64url((const unsigned char *)"f", 1, out, 16), 2);
  assert_string_equal(out, "Zg");
  assert_int_equal(gh_base64url((const unsigned char *)"fo", 2, out, 16), 3);
  assert_string_equal(out, "Zm8");
  assert_int_equal(gh_base64url((const unsigned char *)"foo", 3, out, 16), 4);
  assert_string_equal(out, "Zm9v");
  assert_int_equal(gh_base64url((const unsigned char *)"foob", 4, out, 16), 6);
  assert_string_equal(out, "Zm9vYg");
  assert_int_equal(gh_base64url(bin, 3, out, 16), 4);
  assert_string_equal(out, "-_-_");
  assert_int_equal(gh_base64url(bin, 2, out, 16), 3);
  assert_string_equal(out, "-_8");
  assert_int_equal(gh_base64url((const unsigned char *)"foo", 3, out, 4), -1);
}

static void test_iso8601(void **state)
{
  int64_t t = 0;

  (void)state;
  assert_int_equal(gh_parse_iso8601("2016-07-11T22:14:10Z", &t), 0);
  assert_int_equal(t, 1468275250);
  assert_int_equal(gh_parse_iso8601("1970-01-01T00:00:00Z", &t), 0);
  assert_int_equal(t, 0);
  assert_int_equal(gh_parse_iso8601("2024-02-29T12:00:00.123Z", &t), 0);
  assert_int_equal(t, 1709208000);
  assert_int_equal(gh_parse_iso8601("2016-07-12T00:14:10+02:00", &t), 0);
  assert_int_equal(t, 1468275250);
  assert_int_equal(gh_parse_iso8601("2016-07-11T17:14:10-0500", &t), 0);
  assert_int_equal(t, 1468275250);
  assert_int_equal(gh_parse_iso8601("2016-07-11T22:14:10", &t), -1);
  assert_int_equal(gh_parse_iso8601("2016-13-11T22:14:10Z", &t), -1);
  assert_int_equal(gh_parse_iso8601("2016-07-11 22:14Z", &t), -1);
  assert_int_equal(gh_parse_iso8601("2016-07-11T22:14:10Zjunk", &t), -1);
  assert_int_equal(gh_parse_iso8601("", &t), -1);
  assert_int_equal(gh_parse_iso8601(NULL, &t), -1);
}

static char *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  char *buf = malloc(65536);

  assert_non_null(f);
  assert_non_null(buf);
  *len = fread(buf, 1, 65535, f);
  buf[*len] = '\0';
  fclose(f);
  return buf;
}

static int verify_jwt(const char *jwt, EVP_PKEY *key, json_t **claims)
{
  const char *dot1 = strchr(jwt, '.');
  const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  unsigned char part[2048];
  size_t n;
  EVP_MD_CTX *ctx;
  json_t *header;
  int ok;

  if (dot2 == NULL || strchr(dot2 + 1, '.') != NULL ||
      strpbrk(jwt, "=+/") != NULL)
    return -1;
  if (b64url_decode(jwt, (size_t)(dot1 - jwt), part, &n) != 0)
    return -1;
  header = json_loadb((const char *)part, n, 0, NULL);
  ok =
      header != NULL &&
      strcmp(json_string_value(json_object_get(header, "alg")), "RS256") == 0 &&
      strcmp(json_string_value(json_object_get(header, "typ")), "JWT") == 0;
  json_decref(header);
  if (!ok)
    return -1;
  if (b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), part, &n) != 0)
    return -1;
  *claims = json_loadb((const char *)part, n, 0, NULL);
  if (*claims == NULL)
    return -1;
  if (b64url_decode(dot2 + 1, strlen(dot2 + 1), part, &n) != 0)
    return -1;
  ctx = EVP_MD_CTX_new();
  ok = ctx != NULL &&
       EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
       EVP_DigestVerify(ctx, part, n, (const unsigned char *)jwt,
                        (size_t)(dot2 - jwt)) == 1;
  EVP_MD_CTX_free(ctx);
  return ok ? 0 : -1;
}

static void test_jwt(void **state)
{
  json_t *claims = NULL;
  size_t len;
  char *pem = read_file(key_path, &len);
  char *jwt;
  EVP_PKEY *other;

  (void)state;
  jwt = gh_app_jwt(pem, len, 12345, 1700000000);
  assert_non_null(jwt);
  assert_int_equal(verify_jwt(jwt, test_key, &claims), 0);
  assert_int_equal(json_integer_value(json_object_get(claims, "iat")),
                   1700000000 - 60);
  assert_int_equal(json_integer_value(json_object_get(claims, "exp")),
                   1700000000 + 540);
  assert_string_equal(json_string_value(json_object_get(claims, "iss")),
                      "12345");
  json_decref(claims);
  claims = NULL;

  /* Another key must not verify it, nor a changed signature. */
  other = EVP_RSA_gen(1024);
  assert_non_null(other);
  assert_int_equal(verify_jwt(jwt, other, &claims), -1);
  json_decref(claims);
  claims = NULL;
  EVP_PKEY_free(other);
  jwt[strlen(jwt) - 2] = jwt[strlen(jwt) - 2] == 'A' ? 'B' : 'A';
  assert_int_equal(verify_jwt(jwt, test_key, &claims), -1);
  json_decref(claims);
  free(jwt);

  assert_null(gh_app_jwt("not a key", 9, 1, 1));
  free(pem);
}

/* ---- fake GitHub ---- */

enum jit_mode {
  JIT_OK,
  JIT_401_ONCE,
  JIT_401_ALWAYS,
  JIT_429_ONCE,
  JIT_403_SECONDARY_ONCE,
  JIT_502_ONCE,
  JIT_DROP_ALWAYS
};

struct fixture {
  uv_loop_t loop;
  struct fake_http srv;
  struct http_client *http;
  struct metrics *m;
  struct cfg_github cfg;
  char api_url[64];
  struct gh_client *gh;
  enum jit_mode jit_mode;
  int token_ttl[4]; /* seconds of validity of the n-th token */
  unsigned token_requests;
  unsigned jit_requests;
  unsigned delete_requests;
  unsigned list_requests;
  unsigned bad_requests;
  char last_auth[256];
  uint64_t jit_at[32];
  uint64_t delete_at[32];
  int ratelimit_zero; /* answer with x-ratelimit-remaining: 0 once */
  unsigned deliveries_requests;
  uint64_t deliveries_at;
  int deliveries_jwt; /* the last deliveries request carried a JWT */
};

static int check_common_headers(struct fake_http_req *req, int json_body)
{
  char v[256];

  if (fake_http_req_header(req, "Accept", v, sizeof(v)) != 0 ||
      strcmp(v, "application/vnd.github+json") != 0)
    return -1;
  if (fake_http_req_header(req, "X-GitHub-Api-Version", v, sizeof(v)) != 0 ||
      strcmp(v, "2022-11-28") != 0)
    return -1;
  if (fake_http_req_header(req, "User-Agent", v, sizeof(v)) != 0 ||
      strncmp(v, "runfleet/", 9) != 0)
    return -1;
  if (json_body &&
      (fake_http_req_header(req, "Content-Type", v, sizeof(v)) != 0 ||
       strcmp(v, "application/json") != 0))
    return -1;
  return 0;
}

static void answer_token(struct fixture *f, struct fake_http_req *req)
{
  char auth[1024], body[256], when[32];
  json_t *claims = NULL;
  time_t exp;
  struct tm tm;
  int ttl;

  if (fake_http_req_header(req, "Authorization", auth, sizeof(auth)) != 0 ||
      strncmp(auth, "Bearer ", 7) != 0 ||
      verify_jwt(auth + 7, test_key, &claims) != 0 ||
      strcmp(json_string_value(json_object_get(claims, "iss")), "77") != 0) {
    f->bad_requests++;
    json_decref(claims);
    fake_http_respond(req->conn, 401, NULL, "{\"message\":\"Bad JWT\"}");
    return;
  }
  json_decref(claims);
  ttl = f->token_ttl[f->token_requests < 4 ? f->token_requests : 3];
  f->token_requests++;
  exp = time(NULL) + ttl;
  gmtime_r(&exp, &tm);
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  snprintf(body, sizeof(body),
           "{\"token\":\"tok-%u\",\"expires_at\":\"%s\","
           "\"permissions\":{}}",
           f->token_requests, when);
  fake_http_respond(req->conn, 201, NULL, body);
}

static void answer_jit(struct fixture *f, struct fake_http_req *req)
{
  json_t *body = json_loadb(req->body, req->body_len, 0, NULL);
  json_t *labels = json_object_get(body, "labels");
  char reply[256];
  unsigned n = f->jit_requests++;

  if (n < 32)
    f->jit_at[n] = req->at_ms;
  if (fake_http_req_header(req, "Authorization", f->last_auth,
                           sizeof(f->last_auth)) != 0)
    f->last_auth[0] = '\0';
  if (body == NULL || json_array_size(labels) != 2 ||
      strcmp(json_string_value(json_array_get(labels, 1)), "gpu-1") != 0 ||
      strcmp(json_string_value(json_object_get(body, "work_folder")),
             "_work") != 0 ||
      json_integer_value(json_object_get(body, "runner_group_id")) != 3 ||
      json_string_value(json_object_get(body, "name")) == NULL ||
      json_object_size(body) != 4 || check_common_headers(req, 1) != 0)
    f->bad_requests++;
  json_decref(body);
  if ((f->jit_mode == JIT_401_ONCE && n == 0) ||
      f->jit_mode == JIT_401_ALWAYS) {
    fake_http_respond(req->conn, 401, NULL, "{\"message\":\"Bad creds\"}");
    return;
  }
  if (f->jit_mode == JIT_429_ONCE && n == 0) {
    fake_http_respond(req->conn, 429, "Retry-After: 1\r\n",
                      "{\"message\":\"slow down\"}");
    return;
  }
  if (f->jit_mode == JIT_502_ONCE && n == 0) {
    fake_http_respond(req->conn, 502, NULL, "{\"message\":\"Bad gateway\"}");
    return;
  }
  if (f->jit_mode == JIT_DROP_ALWAYS) {
    fake_http_conn_close(req->conn); /* taken, never answered */
    return;
  }
  if (f->jit_mode == JIT_403_SECONDARY_ONCE && n == 0) {
    fake_http_respond(req->conn, 403, "Retry-After: 1\r\n",
                      "{\"message\":\"You have exceeded a secondary rate "
                      "limit.\"}");
    return;
  }
  snprintf(reply, sizeof(reply),
           "{\"runner\":{\"id\":%u,\"name\":\"r\",\"os\":\"linux\","
           "\"status\":\"offline\",\"busy\":false,\"labels\":[]},"
           "\"encoded_jit_config\":\"c2VjcmV0\"}",
           1000 + n);
  fake_http_respond(req->conn, 201,
                    f->ratelimit_zero ? "x-ratelimit-remaining: 0\r\n"
                                        "x-ratelimit-reset: 0\r\n"
                                      : "x-ratelimit-remaining: 4999\r\n"
                                        "x-ratelimit-reset: 1\r\n",
                    reply);
  f->ratelimit_zero = 0;
}

static void answer_list(struct fixture *f, struct fake_http_req *req)
{
  unsigned page = 0, i, first, count;
  json_t *root, *arr;
  char *text;

  f->list_requests++;
  if (strcmp(req->target,
             "/orgs/acme/actions/runners?per_page=100&page=1&name=rf-a-1") ==
      0) {
    fake_http_respond(req->conn, 200, NULL,
                      "{\"total_count\":1,\"runners\":[{\"id\":77,"
                      "\"name\":\"rf-a-1\",\"status\":\"offline\","
                      "\"busy\":false}]}");
    return;
  }
  if (sscanf(req->target, "/orgs/acme/actions/runners?per_page=100&page=%u",
             &page) != 1 ||
      page < 1 || check_common_headers(req, 0) != 0) {
    f->bad_requests++;
    fake_http_respond(req->conn, 400, NULL, "{}");
    return;
  }
  first = (page - 1) * 100;
  count = first >= 250 ? 0 : (250 - first > 100 ? 100 : 250 - first);
  arr = json_array();
  for (i = 0; i < count; i++)
    json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:b}", "id",
                                         (json_int_t)(first + i + 1), "name",
                                         "runner", "status",
                                         (first + i) % 2 ? "online" : "offline",
                                         "busy", (first + i) % 3 == 0));
  root = json_pack("{s:i, s:o}", "total_count", 250, "runners", arr);
  text = json_dumps(root, JSON_COMPACT);
  fake_http_respond(req->conn, 200, NULL, text);
  free(text);
  json_decref(root);
}

/* The deliveries list, empty: what matters is when and how it came. */
static void answer_deliveries(struct fixture *f, struct fake_http_req *req)
{
  const char *auth = strstr(req->headers, "Authorization: Bearer ");
  size_t i, dots = 0;

  f->deliveries_requests++;
  f->deliveries_at = req->at_ms;
  for (i = auth ? strlen("Authorization: Bearer ") : 0;
       auth != NULL && auth[i] != '\0' && auth[i] != '\r'; i++)
    dots += auth[i] == '.';
  f->deliveries_jwt = dots == 2;
  fake_http_respond(req->conn, 200, "X-RateLimit-Remaining: 4000\r\n", "[]");
}

static void handler(void *arg, struct fake_http_req *req)
{
  struct fixture *f = arg;
  long id;
  unsigned n;

  if (strcmp(req->method, "POST") == 0 &&
      strcmp(req->target, "/app/installations/99/access_tokens") == 0) {
    answer_token(f, req);
  } else if (strcmp(req->method, "POST") == 0 &&
             strcmp(req->target,
                    "/orgs/acme/actions/runners/generate-jitconfig") == 0) {
    answer_jit(f, req);
  } else if (strcmp(req->method, "DELETE") == 0 &&
             sscanf(req->target, "/orgs/acme/actions/runners/%ld", &id) == 1) {
    n = f->delete_requests++;
    if (n < 32)
      f->delete_at[n] = req->at_ms;
    if (check_common_headers(req, 0) != 0)
      f->bad_requests++;
    fake_http_respond(req->conn,
                      id == 404   ? 404
                      : id == 500 ? 500
                                  : 204,
                      NULL, id == 404 ? "{\"message\":\"Not Found\"}" : NULL);
  } else if (strcmp(req->method, "GET") == 0 &&
             strncmp(req->target, "/orgs/acme/actions/runners?", 27) == 0) {
    answer_list(f, req);
  } else if (strcmp(req->method, "GET") == 0 &&
             strncmp(req->target, "/app/hook/deliveries?", 21) == 0) {
    answer_deliveries(f, req);
  } else {
    f->bad_requests++;
    fake_http_respond(req->conn, 404, NULL, "{\"message\":\"Not Found\"}");
  }
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(fake_http_start(&f->srv, &f->loop, handler, f), 0);
  f->http = http_client_new(&f->loop);
  assert_non_null(f->http);
  f->m = metrics_new();
  assert_non_null(f->m);
  snprintf(f->api_url, sizeof(f->api_url), "http://127.0.0.1:%d/", f->srv.port);
  f->cfg.api_url = f->api_url;
  f->cfg.app_id = 77;
  f->cfg.installation_id = 99;
  f->cfg.app_private_key_file = key_path;
  f->cfg.org = "acme";
  f->cfg.runner_group_id = 3;
  f->cfg.mutations_per_minute = 60000;
  f->token_ttl[0] = f->token_ttl[1] = f->token_ttl[2] = f->token_ttl[3] = 3600;
  *state = f;
  return 0;
}

static void start(struct fixture *f)
{
  f->gh = gh_new(&f->loop, f->http, &f->cfg, f->m);
  assert_non_null(f->gh);
  gh_set_backoff_ms(f->gh, 2);
}

static void closed_cb(void *arg)
{
  int *closed = arg;

  (*closed)++;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  int gh_closed = 0, http_closed = 0;

  if (f->gh != NULL) {
    gh_close(f->gh, closed_cb, &gh_closed);
    assert_int_equal(fake_http_run_until(&f->loop, &gh_closed, 5000), 1);
    gh_destroy(f->gh);
  }
  http_client_close(f->http, closed_cb, &http_closed);
  assert_int_equal(fake_http_run_until(&f->loop, &http_closed, 5000), 1);
  http_client_destroy(f->http);
  fake_http_stop(&f->srv);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  assert_int_equal(f->bad_requests, 0);
  metrics_destroy(f->m);
  free(f);
  return 0;
}

struct jit_result {
  int done;
  int status;
  int http_status;
  int64_t runner_id;
  char config[64];
};

static void jit_cb(void *arg, int status, int http_status, int64_t runner_id,
                   const char *config)
{
  struct jit_result *r = arg;

  r->done++;
  r->status = status;
  r->http_status = http_status;
  r->runner_id = runner_id;
  snprintf(r->config, sizeof(r->config), "%s", config ? config : "(null)");
}

static char *labels[] = {"self-hosted", "gpu-1"};

static void jit(struct fixture *f, struct jit_result *r)
{
  memset(r, 0, sizeof(*r));
  assert_int_equal(gh_jit_config(f->gh, "runner-1", labels, 2, jit_cb, r), 0);
  assert_int_equal(r->done, 0); /* never from inside the call */
}

static double requests_metric(struct fixture *f, const char *endpoint,
                              const char *code)
{
  char labels_text[128];

  snprintf(labels_text, sizeof(labels_text), "endpoint=\"%s\",code=\"%s\"",
           endpoint, code);
  return metrics_value(f->m, "runfleet_github_requests_total", labels_text);
}

static void test_token_fetched_once_and_reused(void **state)
{
  struct fixture *f = *state;
  struct jit_result r1, r2, r3, r4;

  start(f);
  assert_int_equal(gh_ratelimit_remaining(f->gh), -1);
  jit(f, &r1);
  assert_int_equal(fake_http_run_until(&f->loop, &r1.done, 5000), 1);
  assert_int_equal(r1.status, 0);
  assert_int_equal(r1.http_status, 201);
  assert_int_equal(r1.runner_id, 1000);
  assert_string_equal(r1.config, "c2VjcmV0");
  assert_string_equal(f->last_auth, "Bearer tok-1");
  jit(f, &r2);
  assert_int_equal(fake_http_run_until(&f->loop, &r2.done, 5000), 1);
  assert_int_equal(r2.status, 0);
  assert_int_equal(r2.runner_id, 1001);
  assert_string_equal(f->last_auth, "Bearer tok-1");
  assert_int_equal(f->token_requests, 1);
  assert_int_equal(f->jit_requests, 2);
  assert_int_equal(gh_requests_total(f->gh), 3);
  assert_int_equal(gh_ratelimit_remaining(f->gh), 4999);
  assert_true(requests_metric(f, "jitconfig", "201") == 2);
  assert_true(requests_metric(f, "access_token", "201") == 1);
  assert_true(metrics_value(f->m, "runfleet_github_ratelimit_remaining", "") ==
              4999);
  (void)r3, (void)r4;
}

static void test_one_refresh_shared_by_waiters(void **state)
{
  struct fixture *f = *state;
  struct jit_result r[3];
  int i;

  start(f);
  for (i = 0; i < 3; i++)
    jit(f, &r[i]);
  for (i = 0; i < 3; i++) {
    assert_int_equal(fake_http_run_until(&f->loop, &r[i].done, 5000), 1);
    assert_int_equal(r[i].status, 0);
  }
  assert_int_equal(f->token_requests, 1);
  assert_int_equal(f->jit_requests, 3);
}

static void test_token_refreshed_before_expiry(void **state)
{
  struct fixture *f = *state;
  struct jit_result r;

  /* The first token is inside the 5-minute margin: used once, then
   * replaced; the second lasts an hour. */
  f->token_ttl[0] = 120;
  start(f);
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_string_equal(f->last_auth, "Bearer tok-1");
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_string_equal(f->last_auth, "Bearer tok-2");
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_string_equal(f->last_auth, "Bearer tok-2");
  assert_int_equal(f->token_requests, 2);
}

static void test_401_refreshes_and_retries_once(void **state)
{
  struct fixture *f = *state;
  struct jit_result r;

  f->jit_mode = JIT_401_ONCE;
  start(f);
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.http_status, 201);
  assert_int_equal(f->token_requests, 2);
  assert_int_equal(f->jit_requests, 2);
  assert_string_equal(f->last_auth, "Bearer tok-2");

  f->jit_mode = JIT_401_ALWAYS;
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, -EACCES);
  assert_int_equal(r.http_status, 401);
  assert_int_equal(r.runner_id, 0);
  assert_string_equal(r.config, "(null)");
  assert_int_equal(f->token_requests, 3);
  assert_int_equal(f->jit_requests, 4);
  assert_true(requests_metric(f, "jitconfig", "401") == 3);
}

static void test_retry_after_obeyed(void **state)
{
  struct fixture *f = *state;
  struct jit_result r;

  f->jit_mode = JIT_429_ONCE;
  start(f);
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.http_status, 201);
  assert_int_equal(f->jit_requests, 2);
  assert_true(f->jit_at[1] - f->jit_at[0] >= 1000);
  assert_true(requests_metric(f, "jitconfig", "429") == 1);
}

static void raw_cb(void *arg, int status, int http_status,
                   const struct http_client_response *resp)
{
  struct jit_result *r = arg;

  r->done++;
  r->status = status;
  r->http_status = http_status;
  r->runner_id = resp != NULL ? (int64_t)resp->body_len : -1;
}

/* A recovery call made while a JIT request waits out its Retry-After goes
 * only after the JIT request was sent again, and authenticates as the
 * App. */
static void test_recovery_call_waits_for_jit(void **state)
{
  struct fixture *f = *state;
  struct jit_result r, rec;
  struct gh_budget b;

  f->jit_mode = JIT_429_ONCE;
  start(f);
  jit(f, &r);
  /* Until the 429 came back: the JIT request waits for its retry. */
  do {
    assert_int_equal(uv_run(&f->loop, UV_RUN_ONCE) >= 0, 1);
    gh_budget_get(f->gh, &b);
  } while (f->jit_requests == 0 || b.runner_waiting == 0);
  assert_int_equal(f->jit_requests, 1);
  assert_true(b.hold_mutations_ms > 0);
  memset(&rec, 0, sizeof(rec));
  assert_int_equal(gh_raw_request(f->gh, GH_AUTH_APP, "list_deliveries", "GET",
                                  "/app/hook/deliveries?per_page=100", raw_cb,
                                  &rec),
                   0);
  assert_int_equal(fake_http_run_until(&f->loop, &rec.done, 5000), 1);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(rec.status, 0);
  assert_int_equal(rec.http_status, 200);
  assert_int_equal(f->deliveries_requests, 1);
  assert_true(f->deliveries_at >= f->jit_at[1]);
  assert_true(f->deliveries_jwt);
  assert_true(requests_metric(f, "list_deliveries", "200") == 1);
  gh_budget_get(f->gh, &b);
  assert_int_equal(b.recovery_requests, 1);
  assert_int_equal(b.app_remaining, 4000);
  assert_int_equal(b.runner_waiting, 0);
  assert_int_equal(b.secondary_limited, 1); /* the 429 with Retry-After */
}

static void test_recovery_gate(void **state)
{
  struct gh_recovery_gate g;
  uint64_t wait;

  (void)state;
  memset(&g, 0, sizeof(g));
  g.remaining = -1;
  g.reserve = 100;
  g.per_ms = 0.001;
  g.bucket = 1.0;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 1);
  /* A runner call waiting, or another recovery call in flight: no. */
  g.runner_waiting = 1;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  assert_int_equal(wait, 0);
  g.runner_waiting = 0;
  g.in_flight = 1;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  g.in_flight = 0;
  /* Every hold counts, the latest decides. */
  g.hold_mut_until = 3000;
  g.hold_rec_until = 5000;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  assert_int_equal(wait, 4000);
  g.hold_mut_until = g.hold_rec_until = 0;
  g.hold_all_until = 1500;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  assert_int_equal(wait, 500);
  g.hold_all_until = 0;
  /* The reserve is kept for runners, until the reset. */
  g.remaining = 100;
  g.reset_in_ms = 7000;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  assert_int_equal(wait, 7000);
  g.reset_in_ms = 0;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  assert_int_equal(wait, 60000);
  g.remaining = 101;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 1);
  /* A POST takes a token of the pace. */
  g.mutating = 1;
  g.bucket = 5.5; /* half the burst of 10 stays for runner calls */
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 0);
  assert_int_equal(wait, 501);
  g.bucket = 6.0;
  assert_int_equal(gh_recovery_gate(&g, 1000, &wait), 1);
}

static void test_recovery_pat_mode_has_no_app_calls(void **state)
{
  struct fixture *f = *state;
  struct jit_result rec;

  f->cfg.app_private_key_file = NULL;
  f->cfg.app_id = 0;
  f->cfg.pat_file = pat_path;
  start(f);
  assert_int_equal(gh_app_mode(f->gh), 0);
  assert_int_equal(gh_raw_request(f->gh, GH_AUTH_APP, "list_deliveries", "GET",
                                  "/app/hook/deliveries", raw_cb, &rec),
                   -ENOTSUP);
  assert_int_equal(gh_raw_request(f->gh, GH_AUTH_INSTALLATION, "x", "GET",
                                  "no-slash", raw_cb, &rec),
                   -EINVAL);
}

static void test_ratelimit_exhausted_holds(void **state)
{
  struct fixture *f = *state;
  struct jit_result r;

  f->ratelimit_zero = 1; /* with a reset already past: hold about 1 s */
  start(f);
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(gh_ratelimit_remaining(f->gh), 0);
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_true(f->jit_at[1] - f->jit_at[0] >= 900);
  assert_int_equal(gh_ratelimit_remaining(f->gh), 4999);
}

struct done_result {
  int done;
  int status;
  int http_status;
};

static void done_cb(void *arg, int status, int http_status)
{
  struct done_result *r = arg;

  r->done++;
  r->status = status;
  r->http_status = http_status;
}

static void test_pacing_spaces_mutations(void **state)
{
  struct fixture *f = *state;
  struct done_result r[14];
  int i;

  /* 1200 a minute: one per 50 ms after a burst of 10. */
  f->cfg.mutations_per_minute = 1200;
  f->cfg.app_private_key_file = NULL;
  f->cfg.pat_file = pat_path;
  start(f);
  memset(r, 0, sizeof(r));
  for (i = 0; i < 14; i++)
    assert_int_equal(gh_delete_runner(f->gh, 7, done_cb, &r[i]), 0);
  for (i = 0; i < 14; i++) {
    assert_int_equal(fake_http_run_until(&f->loop, &r[i].done, 5000), 1);
    assert_int_equal(r[i].status, 0);
    assert_int_equal(r[i].http_status, 204);
  }
  assert_int_equal(f->delete_requests, 14);
  assert_true(f->delete_at[13] - f->delete_at[0] >= 150);
  assert_true(f->delete_at[9] - f->delete_at[0] < 150);
}

/* A Retry-After holds every mutating call, not only the one it answered:
 * the queued one behind it waits out the second too, although the pacer
 * alone would have let it go half a second after the first. */
static void retry_after_holds_queue(struct fixture *f)
{
  struct done_result r[10];
  struct jit_result j;
  int i;

  /* 120 a minute: one per 500 ms once the burst of 10 is spent, by nine
   * deletes and the JIT call; the last delete waits in the queue. */
  f->cfg.mutations_per_minute = 120;
  f->cfg.app_private_key_file = NULL;
  f->cfg.pat_file = pat_path;
  start(f);
  memset(r, 0, sizeof(r));
  for (i = 0; i < 9; i++)
    assert_int_equal(gh_delete_runner(f->gh, 7, done_cb, &r[i]), 0);
  jit(f, &j);
  assert_int_equal(gh_delete_runner(f->gh, 7, done_cb, &r[9]), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &j.done, 5000), 1);
  assert_int_equal(fake_http_run_until(&f->loop, &r[9].done, 5000), 1);
  assert_int_equal(j.status, 0);
  assert_int_equal(j.http_status, 201);
  for (i = 0; i < 10; i++) {
    assert_int_equal(r[i].done, 1);
    assert_int_equal(r[i].status, 0);
  }
  assert_int_equal(f->jit_requests, 2);
  assert_int_equal(f->delete_requests, 10);
  assert_true(f->jit_at[1] - f->jit_at[0] >= 1000);
  assert_true(f->delete_at[9] - f->jit_at[0] >= 1000);
}

static void test_retry_after_429_holds_queued(void **state)
{
  struct fixture *f = *state;

  f->jit_mode = JIT_429_ONCE;
  retry_after_holds_queue(f);
  assert_true(requests_metric(f, "jitconfig", "429") == 1);
}

static void test_retry_after_403_holds_queued(void **state)
{
  struct fixture *f = *state;

  f->jit_mode = JIT_403_SECONDARY_ONCE;
  retry_after_holds_queue(f);
  assert_true(requests_metric(f, "jitconfig", "403") == 1);
}

static void test_delete_404_is_success(void **state)
{
  struct fixture *f = *state;
  struct done_result r = {0};

  start(f);
  assert_int_equal(gh_delete_runner(f->gh, 404, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.http_status, 404);
  assert_int_equal(gh_delete_runner(f->gh, 0, done_cb, &r), -EINVAL);
}

static void test_5xx_retried_then_given_up(void **state)
{
  struct fixture *f = *state;
  struct done_result r = {0};

  start(f);
  assert_int_equal(gh_delete_runner(f->gh, 500, done_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.done, 1);
  assert_int_equal(r.status, -EPROTO);
  assert_int_equal(r.http_status, 500);
  assert_int_equal(f->delete_requests, 5);
  assert_true(requests_metric(f, "delete_runner", "500") == 5);
}

struct list_result {
  int done;
  int status;
  size_t n;
  int ids_ok;
  int online;
  int busy;
};

static void list_cb(void *arg, int status, const struct gh_runner *runners,
                    size_t n)
{
  struct list_result *r = arg;
  size_t i;

  r->done++;
  r->status = status;
  r->n = n;
  r->ids_ok = 1;
  for (i = 0; i < n; i++) {
    if (runners[i].id != (int64_t)i + 1 ||
        strcmp(runners[i].name, "runner") != 0)
      r->ids_ok = 0;
    r->online += strcmp(runners[i].status, "online") == 0;
    r->busy += runners[i].busy;
  }
}

static void test_list_paginates(void **state)
{
  struct fixture *f = *state;
  struct list_result r = {0};

  start(f);
  assert_int_equal(gh_list_runners(f->gh, list_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 250);
  assert_true(r.ids_ok);
  assert_int_equal(r.online, 125);
  assert_int_equal(r.busy, 84);
  assert_int_equal(f->list_requests, 3);
  assert_int_equal(f->token_requests, 1);
}

/* A JIT request that may have taken effect (a 5xx, or no answer after it
 * was sent) is not sent again: a second one would collide on the name. */
static void test_jit_not_retried_once_sent(void **state)
{
  static const enum jit_mode modes[] = {JIT_502_ONCE, JIT_DROP_ALWAYS};
  static const int codes[] = {502, 0};
  struct fixture *f = *state;
  struct jit_result r;
  size_t i;

  start(f);
  for (i = 0; i < 2; i++) {
    f->jit_mode = modes[i];
    f->jit_requests = 0;
    jit(f, &r);
    assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
    assert_int_equal(r.status, GH_MAYBE_APPLIED);
    assert_int_equal(r.http_status, codes[i]);
    /* libcurl itself sends a request once more on a fresh connection when
     * a reused one closed before any byte of the answer (it takes that for
     * an idle close); runfleetd adds no attempt of its own. */
    assert_int_equal(f->jit_requests, i == 0 ? 1 : 2);
  }
}

static void find_cb(void *arg, int status, const struct gh_runner *runners,
                    size_t n)
{
  struct list_result *r = arg;

  r->done++;
  r->status = status;
  r->n = n;
  r->ids_ok =
      n == 1 && runners[0].id == 77 && strcmp(runners[0].name, "rf-a-1") == 0;
}

/* The lookup after such a request asks for the one name. */
static void test_find_runner_by_name(void **state)
{
  struct fixture *f = *state;
  struct list_result r = {0};

  start(f);
  assert_int_equal(gh_find_runner(f->gh, "rf-a-1", find_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_true(r.ids_ok);
  assert_int_equal(f->list_requests, 1);
  assert_int_equal(gh_find_runner(f->gh, "a&b=c", find_cb, &r), -EINVAL);
  assert_int_equal(gh_find_runner(f->gh, "", find_cb, &r), -EINVAL);
}

static void test_pat_mode(void **state)
{
  struct fixture *f = *state;
  struct jit_result r;

  f->cfg.app_private_key_file = NULL;
  f->cfg.app_id = 0;
  f->cfg.pat_file = pat_path;
  start(f);
  jit(f, &r);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_string_equal(f->last_auth, "Bearer ghp_testpat");
  assert_int_equal(f->token_requests, 0);
}

static void test_close_cancels_queued(void **state)
{
  struct fixture *f = *state;
  struct done_result r[12];
  int closed = 0, i, cancelled = 0, ok = 0;

  /* One a minute: the burst of 10 goes out, 2 stay queued. */
  f->cfg.mutations_per_minute = 1;
  f->cfg.app_private_key_file = NULL;
  f->cfg.pat_file = pat_path;
  start(f);
  memset(r, 0, sizeof(r));
  for (i = 0; i < 12; i++)
    assert_int_equal(gh_delete_runner(f->gh, 7, done_cb, &r[i]), 0);
  gh_close(f->gh, closed_cb, &closed);
  assert_int_equal(r[10].done, 1);
  assert_int_equal(r[10].status, -ECANCELED);
  assert_int_equal(r[11].status, -ECANCELED);
  assert_int_equal(r[0].done, 0);
  assert_int_equal(gh_delete_runner(f->gh, 7, done_cb, &r[0]), -ESHUTDOWN);
  assert_int_equal(fake_http_run_until(&f->loop, &closed, 5000), 1);
  for (i = 0; i < 12; i++) {
    assert_int_equal(r[i].done, 1);
    cancelled += r[i].status == -ECANCELED;
    ok += r[i].status == 0;
  }
  assert_int_equal(cancelled, 2);
  assert_int_equal(ok, 10);
  gh_destroy(f->gh);
  f->gh = NULL;
}

static void test_new_rejects_bad_config(void **state)
{
  struct fixture *f = *state;

  f->cfg.app_private_key_file = "/nonexistent/key.pem";
  assert_null(gh_new(&f->loop, f->http, &f->cfg, f->m));
  f->cfg.app_private_key_file = pat_path; /* not a PEM key */
  assert_null(gh_new(&f->loop, f->http, &f->cfg, f->m));
  f->cfg.app_private_key_file = key_path;
  f->cfg.org = "acme/evil";
  assert_null(gh_new(&f->loop, f->http, &f->cfg, f->m));
  f->cfg.org = NULL;
  assert_null(gh_new(&f->loop, f->http, &f->cfg, f->m));
  f->cfg.repo = "owner/name";
  f->gh = gh_new(&f->loop, f->http, &f->cfg, f->m);
  assert_non_null(f->gh);
}

/* The decoders the fuzz targets run: what a malformed body yields. */
static void test_decode_jit_and_runners(void **state)
{
  struct gh_runner_page pg = {0};
  static const char page[] =
      "{\"total_count\":-3,\"runners\":[{\"id\":4,\"name\":\"a\","
      "\"status\":\"online\",\"busy\":true},{\"id\":0},7]}";
  int64_t id, total;
  char *config;
  size_t items;

  (void)state;
  assert_int_equal(gh_decode_jit("{\"runner\":{\"id\":5},"
                                 "\"encoded_jit_config\":\"abc\"}",
                                 46, &id, &config),
                   0);
  assert_int_equal(id, 5);
  assert_string_equal(config, "abc");
  free(config);
  assert_int_equal(gh_decode_jit("{\"runner\":{\"id\":5}}", 19, &id, &config),
                   -1);
  assert_null(config);
  assert_int_equal(gh_decode_jit("[", 1, &id, &config), -1);
  assert_int_equal(
      gh_decode_runners(page, sizeof(page) - 1, &pg, &items, &total), 0);
  assert_int_equal(items, 3);
  assert_int_equal(total, 0);
  assert_int_equal(pg.n, 1);
  assert_int_equal(pg.runners[0].id, 4);
  assert_true(pg.runners[0].busy);
  assert_int_equal(
      gh_decode_runners("{\"runners\":{}}", 14, &pg, &items, &total), -EBADMSG);
  assert_int_equal(gh_decode_runners("", 0, &pg, &items, &total), -EBADMSG);
  assert_int_equal(pg.n, 1);
  free(pg.runners);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_base64url),
      cmocka_unit_test(test_iso8601),
      cmocka_unit_test(test_jwt),
      cmocka_unit_test_setup_teardown(test_token_fetched_once_and_reused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_one_refresh_shared_by_waiters, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_token_refreshed_before_expiry, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_401_refreshes_and_retries_once,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_obeyed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_jit_not_retried_once_sent, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_find_runner_by_name, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ratelimit_exhausted_holds, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_pacing_spaces_mutations, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_429_holds_queued, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_403_holds_queued, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_delete_404_is_success, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_5xx_retried_then_given_up, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_list_paginates, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pat_mode, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_cancels_queued, setup,
                                      teardown),
      cmocka_unit_test(test_decode_jit_and_runners),
      cmocka_unit_test(test_recovery_gate),
      cmocka_unit_test_setup_teardown(test_recovery_call_waits_for_jit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_recovery_pat_mode_has_no_app_calls,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_new_rejects_bad_config, setup,
                                      teardown),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
