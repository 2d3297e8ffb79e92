/* The Kubernetes client's pure parts (watch parser, kubeconfig and
 * in-cluster config, token files, token bucket, backoff, Retry-After) and
 * its loop behaviour against a canned server: retries, 409, lost POSTs,
 * the rate limiter and a reflector's relist after 410 Gone. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "config.h"
#include "fake_http.h"
#include "kube.h"
#include "kube_int.h"
#include "log.h"
#include "metrics.h"

/* Parser. */

struct events {
  int n;
  enum kube_event_type types[16];
  char names[16][32];
  char rvs[16][32];
  int stop_at; /* return non-zero at this event (1-based), 0: never */
};

static int collect_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  struct events *e = arg;
  json_t *md = json_object_get(obj, "metadata");
  const char *name = json_string_value(json_object_get(md, "name"));
  const char *rv = json_string_value(json_object_get(md, "resourceVersion"));

  if (e->n < 16) {
    e->types[e->n] = type;
    snprintf(e->names[e->n], sizeof(e->names[0]), "%s", name ? name : "");
    snprintf(e->rvs[e->n], sizeof(e->rvs[0]), "%s", rv ? rv : "");
  }
  e->n++;
  return e->stop_at != 0 && e->n == e->stop_at ? 7 : 0;
}

static const char stream[] =
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":"
    "\"a\",\"resourceVersion\":\"11\"}}}\n"
    "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\","
    "\"resourceVersion\":\"12\"}}}\n"
    "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{"
    "\"resourceVersion\":\"15\"}}}\n"
    "{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\","
    "\"resourceVersion\":\"16\"}}}\n";

static void check_stream_events(const struct events *e)
{
  assert_int_equal(e->n, 4);
  assert_int_equal(e->types[0], KUBE_EVENT_ADDED);
  assert_int_equal(e->types[1], KUBE_EVENT_MODIFIED);
  assert_int_equal(e->types[2], KUBE_EVENT_BOOKMARK);
  assert_int_equal(e->types[3], KUBE_EVENT_DELETED);
  assert_string_equal(e->names[0], "a");
  assert_string_equal(e->rvs[2], "15");
  assert_string_equal(e->rvs[3], "16");
}

static void test_parser_whole_and_every_split(void **state)
{
  struct kube_watch_parser p;
  size_t len = strlen(stream), cut, chunk;

  (void)state;
  /* One chunk with several events. */
  {
    struct events e = {0};

    kube_watch_parser_init(&p, 4096);
    assert_int_equal(kube_watch_parser_feed(&p, stream, len, collect_cb, &e),
                     0);
    assert_int_equal(kube_watch_parser_finish(&p), 0);
    check_stream_events(&e);
    kube_watch_parser_free(&p);
  }
  /* Two chunks, cut at every byte. */
  for (cut = 0; cut <= len; cut++) {
    struct events e = {0};

    kube_watch_parser_init(&p, 4096);
    assert_int_equal(kube_watch_parser_feed(&p, stream, cut, collect_cb, &e),
                     0);
    assert_int_equal(
        kube_watch_parser_feed(&p, stream + cut, len - cut, collect_cb, &e), 0);
    assert_int_equal(kube_watch_parser_finish(&p), 0);
    check_stream_events(&e);
    kube_watch_parser_free(&p);
  }
  /* Chunks of every small size. */
  for (chunk = 1; chunk < 9; chunk++) {
    struct events e = {0};
    size_t off;

    kube_watch_parser_init(&p, 4096);
    for (off = 0; off < len; off += chunk) {
      size_t n = len - off < chunk ? len - off : chunk;

      assert_int_equal(
          kube_watch_parser_feed(&p, stream + off, n, collect_cb, &e), 0);
    }
    check_stream_events(&e);
    kube_watch_parser_free(&p);
  }
}

static void test_parser_blank_lines_and_crlf(void **state)
{
  static const char s[] =
      "\n\r\n{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"x\"}}}"
      "\r\n  \n";
  struct kube_watch_parser p;
  struct events e = {0};

  (void)state;
  kube_watch_parser_init(&p, 1024);
  assert_int_equal(kube_watch_parser_feed(&p, s, strlen(s), collect_cb, &e), 0);
  assert_int_equal(e.n, 1);
  assert_string_equal(e.names[0], "x");
  assert_int_equal(kube_watch_parser_finish(&p), 0);
  kube_watch_parser_free(&p);
}

static void test_parser_oversize(void **state)
{
  struct kube_watch_parser p;
  struct events e = {0};
  char big[300];
  size_t i, first;

  (void)state;
  first = strchr(stream, '\n') - stream; /* the first event's length */
  /* Exactly at the limit passes, in one chunk or split. */
  kube_watch_parser_init(&p, first);
  assert_int_equal(
      kube_watch_parser_feed(&p, stream, first + 1, collect_cb, &e), 0);
  assert_int_equal(e.n, 1);
  kube_watch_parser_reset(&p);
  assert_int_equal(kube_watch_parser_feed(&p, stream, 10, collect_cb, &e), 0);
  assert_int_equal(
      kube_watch_parser_feed(&p, stream + 10, first + 1 - 10, collect_cb, &e),
      0);
  assert_int_equal(e.n, 2);
  kube_watch_parser_free(&p);

  /* One byte over: refused, in place or across chunks. */
  kube_watch_parser_init(&p, first - 1);
  assert_int_equal(
      kube_watch_parser_feed(&p, stream, first + 1, collect_cb, &e),
      KUBE_ERR_OVERSIZE);
  /* Refused until reset, even with good input. */
  assert_int_equal(kube_watch_parser_feed(&p, "\n", 1, collect_cb, &e),
                   KUBE_ERR_OVERSIZE);
  kube_watch_parser_reset(&p);
  assert_int_equal(kube_watch_parser_feed(&p, stream, 20, collect_cb, &e), 0);
  assert_int_equal(
      kube_watch_parser_feed(&p, stream + 20, first + 1 - 20, collect_cb, &e),
      KUBE_ERR_OVERSIZE);
  kube_watch_parser_free(&p);

  /* A line that never ends is refused once it passes the limit. */
  memset(big, 'x', sizeof(big));
  kube_watch_parser_init(&p, 1000);
  for (i = 0; i < 3; i++)
    assert_int_equal(
        kube_watch_parser_feed(&p, big, sizeof(big), collect_cb, &e), 0);
  assert_int_equal(kube_watch_parser_feed(&p, big, sizeof(big), collect_cb, &e),
                   KUBE_ERR_OVERSIZE);
  assert_int_equal(e.n, 2);
  kube_watch_parser_free(&p);
}

static void test_parser_malformed(void **state)
{
  static const char *const bad[] = {
      "not json\n",
      "[1,2]\n",
      "{\"type\":\"ADDED\"}\n",
      "{\"type\":\"ADDED\",\"object\":3}\n",
      "{\"type\":\"UPSERTED\",\"object\":{}}\n",
      "{\"type\":7,\"object\":{}}\n",
      "{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{}}\n",
      "{\"type\":\"ADDED\",\"object\":{}} trailing\n",
  };
  struct kube_watch_parser p;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct events e = {0};

    kube_watch_parser_init(&p, 1024);
    assert_int_equal(
        kube_watch_parser_feed(&p, bad[i], strlen(bad[i]), collect_cb, &e),
        KUBE_ERR_MALFORMED);
    assert_int_equal(e.n, 0);
    kube_watch_parser_free(&p);
  }
  /* A stream that ends inside an event. */
  {
    struct events e = {0};

    kube_watch_parser_init(&p, 1024);
    assert_int_equal(kube_watch_parser_feed(&p, stream, 30, collect_cb, &e), 0);
    assert_int_equal(kube_watch_parser_finish(&p), KUBE_ERR_MALFORMED);
    kube_watch_parser_free(&p);
  }
  /* The good events before a bad line are delivered. */
  {
    struct events e = {0};
    char buf[1024];

    snprintf(buf, sizeof(buf), "%.*s{oops}\n",
             (int)(strchr(stream, '\n') - stream + 1), stream);
    kube_watch_parser_init(&p, 1024);
    assert_int_equal(
        kube_watch_parser_feed(&p, buf, strlen(buf), collect_cb, &e),
        KUBE_ERR_MALFORMED);
    assert_int_equal(e.n, 1);
    kube_watch_parser_free(&p);
  }
}

static void test_parser_callback_stops(void **state)
{
  struct kube_watch_parser p;
  struct events e = {.stop_at = 2};

  (void)state;
  kube_watch_parser_init(&p, 4096);
  assert_int_equal(
      kube_watch_parser_feed(&p, stream, strlen(stream), collect_cb, &e), 7);
  assert_int_equal(e.n, 2);
  kube_watch_parser_free(&p);
}

/* Files in a temporary directory. */

static void write_file(const char *dir, const char *name, const char *text)
{
  char path[512];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static char *make_dir(void)
{
  static char tmpl[64];

  snprintf(tmpl, sizeof(tmpl), "/tmp/test_kube.XXXXXX");
  assert_non_null(mkdtemp(tmpl));
  return tmpl;
}

static void remove_dir(const char *dir)
{
  char cmd[256];

  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static const char kubeconfig_yaml[] =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: dev\n"
    "clusters:\n"
    "- name: prod\n"
    "  cluster:\n"
    "    server: https://prod.example:6443/\n"
    "    certificate-authority-data: LS0tLS1CRUdJTg==\n"
    "- name: dev\n"
    "  cluster:\n"
    "    server: https://127.0.0.1:6443\n"
    "    certificate-authority: certs/ca.crt\n"
    "    insecure-skip-tls-verify: true\n"
    "users:\n"
    "- name: tok\n"
    "  user:\n"
    "    token: abc.def\n"
    "- name: cert\n"
    "  user:\n"
    "    client-certificate-data: aGVsbG8=\n"
    "    client-key: /etc/key.pem\n"
    "- name: file\n"
    "  user: {tokenFile: tok}\n"
    "- name: half\n"
    "  user: {client-certificate: a.crt}\n"
    "contexts:\n"
    "- name: dev\n"
    "  context: {cluster: dev, user: tok, namespace: ci}\n"
    "- name: prod\n"
    "  context: {cluster: prod, user: cert}\n"
    "- name: file\n"
    "  context: {cluster: dev, user: file}\n"
    "- name: half\n"
    "  context: {cluster: dev, user: half}\n"
    "- name: nouser\n"
    "  context: {cluster: nowhere, user: tok}\n";

static void test_kubeconfig(void **state)
{
  struct kube_config kc;
  char *dir = make_dir(), path[256], want[300], err[256];

  (void)state;
  write_file(dir, "config", kubeconfig_yaml);
  snprintf(path, sizeof(path), "%s/config", dir);

  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, NULL, err, sizeof(err)), 0);
  assert_string_equal(kc.server, "https://127.0.0.1:6443");
  snprintf(want, sizeof(want), "%s/certs/ca.crt", dir);
  assert_string_equal(kc.ca_file, want);
  assert_null(kc.ca_pem);
  assert_int_equal(kc.insecure, 1);
  assert_string_equal(kc.token, "abc.def");
  assert_string_equal(kc.namespace_, "ci");
  kube_config_free(&kc);

  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, "prod", err, sizeof(err)), 0);
  assert_string_equal(kc.server, "https://prod.example:6443");
  assert_int_equal(kc.ca_pem_len, 10);
  assert_memory_equal(kc.ca_pem, "-----BEGIN", 10);
  assert_int_equal(kc.cert_pem_len, 5);
  assert_string_equal(kc.cert_pem, "hello");
  assert_string_equal(kc.key_file, "/etc/key.pem");
  assert_null(kc.token);
  assert_int_equal(kc.insecure, 0);
  assert_null(kc.namespace_);
  kube_config_free(&kc);

  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, "file", err, sizeof(err)), 0);
  snprintf(want, sizeof(want), "%s/tok", dir);
  assert_string_equal(kc.token_file, want);
  kube_config_free(&kc);

  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, "half", err, sizeof(err)), -1);
  assert_non_null(strstr(err, "go together"));
  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, "nouser", err, sizeof(err)), -1);
  assert_non_null(strstr(err, "cluster"));
  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, "missing", err, sizeof(err)), -1);
  assert_non_null(strstr(err, "'missing' not found"));

  /* JSON is YAML too (the test harness writes JSON). */
  write_file(dir, "json",
             "{\"clusters\":[{\"name\":\"c\",\"cluster\":{\"server\":"
             "\"https://h:1\"}}],\"users\":[{\"name\":\"u\",\"user\":{"
             "\"token\":\"t\"}}],\"contexts\":[{\"name\":\"x\",\"context\":{"
             "\"cluster\":\"c\",\"user\":\"u\"}}],\"current-context\":\"x\"}");
  snprintf(path, sizeof(path), "%s/json", dir);
  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, NULL, err, sizeof(err)), 0);
  assert_string_equal(kc.server, "https://h:1");
  assert_string_equal(kc.token, "t");
  kube_config_free(&kc);

  write_file(dir, "bad", "- just\n- a list\n");
  snprintf(path, sizeof(path), "%s/bad", dir);
  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, NULL, err, sizeof(err)), -1);
  write_file(dir, "bomb",
             "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
             "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
             "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
             "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
             "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n");
  snprintf(path, sizeof(path), "%s/bomb", dir);
  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, NULL, err, sizeof(err)), -1);
  snprintf(path, sizeof(path), "%s/absent", dir);
  assert_int_equal(
      kube_config_load_kubeconfig(&kc, path, NULL, err, sizeof(err)), -1);
  remove_dir(dir);
}

static void test_in_cluster(void **state)
{
  struct kube_config kc;
  char *dir = make_dir(), want[300], err[256];

  (void)state;
  write_file(dir, "token", "tok-1\n");
  write_file(dir, "ca.crt", "-----BEGIN CERTIFICATE-----\n");
  write_file(dir, "namespace", "runners\n");
  unsetenv("KUBERNETES_SERVICE_HOST");
  assert_int_equal(kube_config_in_cluster(&kc, dir, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));

  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  assert_int_equal(kube_config_in_cluster(&kc, dir, err, sizeof(err)), 0);
  assert_string_equal(kc.server, "https://10.96.0.1:443");
  snprintf(want, sizeof(want), "%s/token", dir);
  assert_string_equal(kc.token_file, want);
  snprintf(want, sizeof(want), "%s/ca.crt", dir);
  assert_string_equal(kc.ca_file, want);
  assert_string_equal(kc.namespace_, "runners");
  assert_null(kc.token);
  kube_config_free(&kc);

  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  assert_int_equal(kube_config_in_cluster(&kc, dir, err, sizeof(err)), 0);
  assert_string_equal(kc.server, "https://[fd00::1]:443");
  kube_config_free(&kc);

  write_file(dir, "token", "\n");
  assert_int_equal(kube_config_in_cluster(&kc, dir, err, sizeof(err)), -1);
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  remove_dir(dir);
}

static void test_from_config_section(void **state)
{
  struct cfg_kubernetes c = {0};
  struct kube_config kc;
  struct kube_options o;
  char *dir = make_dir(), path[256], err[256];

  (void)state;
  write_file(dir, "config", kubeconfig_yaml);
  snprintf(path, sizeof(path), "%s/config", dir);
  c.kubeconfig = path;
  c.context = "prod";
  c.qps = 0;
  c.burst = 7;
  c.max_event_bytes = 1 << 20;
  c.request_timeout_ms = 5000;
  c.watch_timeout_ms = 120000;
  assert_int_equal(kube_config_from_cfg(&c, &kc, &o, err, sizeof(err)), 0);
  assert_string_equal(kc.server, "https://prod.example:6443");
  assert_true(o.qps < 0);
  assert_int_equal(o.burst, 7);
  assert_int_equal(o.max_event_bytes, 1 << 20);
  assert_int_equal(o.timeout_ms, 5000);
  assert_int_equal(o.watch_timeout_s, 120);
  kube_config_free(&kc);
  c.qps = 15;
  c.kubeconfig = NULL;
  c.service_account_dir = dir; /* no token there */
  setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  assert_int_equal(kube_config_from_cfg(&c, &kc, &o, err, sizeof(err)), -1);
  write_file(dir, "token", "t");
  write_file(dir, "ca.crt", "c");
  assert_int_equal(kube_config_from_cfg(&c, &kc, &o, err, sizeof(err)), 0);
  assert_true(o.qps == 15);
  assert_string_equal(kc.server, "https://10.0.0.1:443");
  kube_config_free(&kc);
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  remove_dir(dir);
}

static void test_token_rotation(void **state)
{
  struct kube_token_file tf = {0};
  char *dir = make_dir(), path[256], tmp[256];

  (void)state;
  snprintf(path, sizeof(path), "%s/token", dir);
  snprintf(tmp, sizeof(tmp), "%s/token.new", dir);
  tf.path = strdup(path);
  assert_non_null(tf.path);
  assert_int_equal(kube_token_file_refresh(&tf, 1000, 60000), -1);
  write_file(dir, "token", "first\n");
  assert_int_equal(kube_token_file_refresh(&tf, 1000, 60000), 1);
  assert_string_equal(tf.token, "first");
  assert_int_equal(kube_token_file_refresh(&tf, 2000, 60000), 0);
  /* kubelet swaps the file atomically: a new inode. */
  write_file(dir, "token.new", "second");
  assert_int_equal(rename(tmp, path), 0);
  assert_int_equal(kube_token_file_refresh(&tf, 3000, 60000), 1);
  assert_string_equal(tf.token, "second");
  /* Past the age limit it is read again, unchanged is not news. */
  assert_int_equal(kube_token_file_refresh(&tf, 70000, 60000), 0);
  assert_int_equal(tf.read_ms, 70000);
  /* A vanished file keeps the token we have. */
  assert_int_equal(unlink(path), 0);
  assert_int_equal(kube_token_file_refresh(&tf, 80000, 60000), -1);
  assert_string_equal(tf.token, "second");
  kube_token_file_free(&tf);
  remove_dir(dir);
}

/* Pure policy. */

static void test_bucket(void **state)
{
  struct kube_bucket b;
  int i;

  (void)state;
  kube_bucket_init(&b, 10, 3, 1000);
  for (i = 0; i < 3; i++)
    assert_int_equal(kube_bucket_take(&b, 1000), 0);
  assert_int_equal(kube_bucket_take(&b, 1000), 100);
  assert_int_equal(kube_bucket_take(&b, 1050), 50);
  assert_int_equal(kube_bucket_take(&b, 1100), 0);
  assert_int_equal(kube_bucket_take(&b, 1100), 100);
  /* Idle time refills only up to the burst. */
  for (i = 0; i < 3; i++)
    assert_int_equal(kube_bucket_take(&b, 100000), 0);
  assert_true(kube_bucket_take(&b, 100000) > 0);
  /* Unlimited. */
  kube_bucket_init(&b, -1, 1, 0);
  for (i = 0; i < 1000; i++)
    assert_int_equal(kube_bucket_take(&b, 0), 0);
  /* Fractional rates. */
  kube_bucket_init(&b, 0.5, 1, 0);
  assert_int_equal(kube_bucket_take(&b, 0), 0);
  assert_int_equal(kube_bucket_take(&b, 0), 2000);
  assert_int_equal(kube_bucket_take(&b, 2000), 0);
}

static void test_backoff(void **state)
{
  (void)state;
  /* r = 0: the low end of the jitter, half the step. */
  assert_int_equal(kube_backoff_ms(1, 100, 10000, 0, 0), 50);
  assert_int_equal(kube_backoff_ms(2, 100, 10000, 0, 0), 100);
  assert_int_equal(kube_backoff_ms(4, 100, 10000, 0, 0), 400);
  assert_int_equal(kube_backoff_ms(1, 100, 10000, 0, UINT32_MAX), 100);
  assert_int_equal(kube_backoff_ms(4, 100, 10000, 0, UINT32_MAX), 800);
  /* Capped, without overflow on huge attempts. */
  assert_int_equal(kube_backoff_ms(40, 100, 10000, 0, UINT32_MAX), 10000);
  assert_int_equal(kube_backoff_ms(1000, 100, 10000, 0, 0), 5000);
  /* Retry-After is a floor, with up to a tenth of jitter on top. */
  assert_int_equal(kube_backoff_ms(1, 100, 10000, 3000, 0), 3000);
  assert_int_equal(kube_backoff_ms(1, 100, 10000, 3000, UINT32_MAX), 3300);
  assert_int_equal(kube_backoff_ms(10, 100, 10000, 1000, 0), 5000);
}

static void test_retry_after(void **state)
{
  uint64_t ms = 1;

  (void)state;
  assert_int_equal(kube_parse_retry_after("3", 0, &ms), 0);
  assert_int_equal(ms, 3000);
  assert_int_equal(kube_parse_retry_after(" 0 ", 0, &ms), 0);
  assert_int_equal(ms, 0);
  assert_int_equal(kube_parse_retry_after("999999999999", 0, &ms), 0);
  assert_int_equal(ms, KUBE_RETRY_AFTER_MAX_MS);
  /* Sun, 06 Nov 1994 08:49:37 GMT is 784111777. */
  assert_int_equal(
      kube_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111770, &ms),
      0);
  assert_int_equal(ms, 7000);
  assert_int_equal(
      kube_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111999, &ms),
      0);
  assert_int_equal(ms, 0);
  assert_int_equal(kube_parse_retry_after("soon", 0, &ms), -1);
  assert_int_equal(kube_parse_retry_after("5s", 0, &ms), -1);
  assert_int_equal(kube_parse_retry_after("", 0, &ms), -1);
}

static void test_retryable(void **state)
{
  (void)state;
  assert_true(kube_retryable("GET", 429, 1));
  assert_true(kube_retryable("POST", 429, 1));
  assert_true(kube_retryable("GET", 503, 1));
  assert_true(kube_retryable("DELETE", 500, 1));
  assert_false(kube_retryable("POST", 500, 1));
  assert_false(kube_retryable("POST", 503, 1));
  assert_false(kube_retryable("GET", 409, 1));
  assert_false(kube_retryable("PATCH", 409, 1));
  assert_false(kube_retryable("POST", 409, 1));
  assert_false(kube_retryable("GET", 404, 1));
  assert_false(kube_retryable("GET", 410, 1));
  assert_true(kube_retryable("GET", 0, 1));
  assert_true(kube_retryable("POST", 0, 0));
  assert_false(kube_retryable("POST", 0, 1));
}

static void test_paths(void **state)
{
  char p[128];

  (void)state;
  assert_int_equal(kube_path(KUBE_PODS, "ci", "rf-a-1", p, sizeof(p)), 0);
  assert_string_equal(p, "/api/v1/namespaces/ci/pods/rf-a-1");
  assert_int_equal(kube_path(KUBE_SECRETS, "ci", NULL, p, sizeof(p)), 0);
  assert_string_equal(p, "/api/v1/namespaces/ci/secrets");
  assert_int_equal(kube_path(KUBE_NODES, "ignored", "n1", p, sizeof(p)), 0);
  assert_string_equal(p, "/api/v1/nodes/n1");
  assert_int_equal(kube_path(KUBE_EVENTS, NULL, NULL, p, sizeof(p)), 0);
  assert_string_equal(p, "/api/v1/events");
  assert_int_equal(kube_path(KUBE_PODS, "ci", "../x", p, sizeof(p)), -EINVAL);
  assert_int_equal(kube_path(KUBE_PODS, "ci", "a/b", p, sizeof(p)), -EINVAL);
  assert_int_equal(kube_path(KUBE_PODS, "c?i", "a", p, sizeof(p)), -EINVAL);
  assert_int_equal(kube_path(KUBE_PODS, "ci", "", p, sizeof(p)), -EINVAL);
  assert_int_equal(kube_path(KUBE_PODS, "ci", "a", p, 10), -ENAMETOOLONG);
}

/* Against a canned server on the loop. */

#define MAX_SCRIPT 16

struct answer {
  int status;
  const char *extra;
  const char *body;
  int drop; /* close without answering */
};

struct fixture {
  uv_loop_t loop;
  struct fake_http srv;
  struct kube *k;
  struct metrics *m;
  struct answer script[MAX_SCRIPT];
  size_t nscript, next;
  char targets[MAX_SCRIPT][1100];
  char auth[MAX_SCRIPT][128];
  uint64_t at[MAX_SCRIPT];
  char ctype[128];
  char body[512];
};

static void handler(void *arg, struct fake_http_req *req)
{
  struct fixture *f = arg;
  struct answer *a;
  size_t i = f->next;

  if (i < MAX_SCRIPT) {
    snprintf(f->targets[i], sizeof(f->targets[0]), "%s %s", req->method,
             req->target);
    if (fake_http_req_header(req, "Authorization", f->auth[i],
                             sizeof(f->auth[0])) != 0)
      f->auth[i][0] = '\0';
    f->at[i] = req->at_ms;
  }
  if (fake_http_req_header(req, "Content-Type", f->ctype, sizeof(f->ctype)) !=
      0)
    f->ctype[0] = '\0';
  snprintf(f->body, sizeof(f->body), "%s", req->body);
  f->next++;
  if (i >= f->nscript) {
    fake_http_respond(req->conn, 500, NULL, "{}");
    return;
  }
  a = &f->script[i];
  if (a->drop) {
    fake_http_conn_close(req->conn);
    return;
  }
  fake_http_respond(req->conn, a->status, a->extra, a->body);
}

static void script(struct fixture *f, int status, const char *extra,
                   const char *body)
{
  assert_true(f->nscript < MAX_SCRIPT);
  f->script[f->nscript++] =
      (struct answer){.status = status, .extra = extra, .body = body};
}

/* Set before fixture_new to change the client's event size limit. */
static size_t fixture_max_event;

static struct fixture *fixture_new(double qps, unsigned burst,
                                   const char *token_file)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct kube_config kc = {0};
  struct kube_options o = {0};
  char server[64];

  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(fake_http_start(&f->srv, &f->loop, handler, f), 0);
  snprintf(server, sizeof(server), "http://127.0.0.1:%d", f->srv.port);
  kc.server = server;
  kc.token = token_file ? NULL : "sekrit";
  kc.token_file = (char *)token_file;
  f->m = metrics_new();
  assert_non_null(f->m);
  o.qps = qps;
  o.burst = burst;
  o.backoff_base_ms = 10;
  o.backoff_max_ms = 40;
  o.metrics = f->m;
  o.watch_timeout_s = 30;
  o.max_event_bytes = fixture_max_event;
  f->k = kube_new(&f->loop, &kc, &o);
  assert_non_null(f->k);
  return f;
}

static void closed_cb(void *arg)
{
  (*(int *)arg)++;
}

static void fixture_free(struct fixture *f)
{
  int closed = 0;

  kube_close(f->k, closed_cb, &closed);
  assert_int_equal(fake_http_run_until(&f->loop, &closed, 5000), 1);
  kube_destroy(f->k);
  fake_http_stop(&f->srv);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  metrics_destroy(f->m);
  free(f);
}

struct result {
  int done;
  long status;
  int error;
  unsigned attempts;
  char reason[64];
  char name[64];
};

static void result_cb(void *arg, const struct kube_response *r)
{
  struct result *res = arg;
  const char *name = json_string_value(
      json_object_get(json_object_get(r->object, "metadata"), "name"));

  res->done++;
  res->status = r->status;
  res->error = r->error;
  res->attempts = r->attempts;
  snprintf(res->reason, sizeof(res->reason), "%s", r->reason);
  snprintf(res->name, sizeof(res->name), "%s", name ? name : "");
}

static const char pod_a[] = "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}}";
static const char conflict[] =
    "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"AlreadyExists\","
    "\"code\":409,\"message\":\"pods \\\"a\\\" already exists\"}";

static void test_get_retries_5xx_and_429(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct result r = {0};

  (void)state;
  script(f, 503, NULL, "{}");
  script(f, 429, "Retry-After: 1\r\n", "{}");
  script(f, 200, NULL, pod_a);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.error, 0);
  assert_int_equal(r.attempts, 3);
  assert_string_equal(r.name, "a");
  assert_string_equal(f->targets[0], "GET /api/v1/namespaces/ci/pods/a");
  assert_string_equal(f->auth[0], "Bearer sekrit");
  /* Retry-After: 1 was waited for. */
  assert_true(f->at[2] - f->at[1] >= 1000);
  assert_true(metrics_value(f->m, "runfleet_kube_requests_total",
                            "code=\"503\",verb=\"GET\"") == 1);
  assert_true(metrics_value(f->m, "runfleet_kube_requests_total",
                            "code=\"200\",verb=\"GET\"") == 1);
  assert_true(metrics_value(f->m, "runfleet_kube_retries_total",
                            "code=\"429\",verb=\"GET\"") == 1);
  fixture_free(f);
}

/* The backend makes its client, and sends its first lists, before it has
 * the registry: handed over before the loop runs, they are all counted. */
static void test_metrics_handed_over_later_count_what_was_sent(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct metrics *later = metrics_new();
  struct result r = {0};

  (void)state;
  assert_non_null(later);
  kube_set_metrics(f->k, NULL);
  script(f, 200, NULL, pod_a);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &r), 0);
  kube_set_metrics(f->k, later);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 200);
  assert_true(metrics_value(later, "runfleet_kube_requests_total",
                            "code=\"200\",verb=\"GET\"") == 1);
  assert_true(metrics_value(f->m, "runfleet_kube_requests_total",
                            "code=\"200\",verb=\"GET\"") == 0);
  fixture_free(f);
  metrics_destroy(later);
}

static void test_gives_up_after_attempts(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct result r = {0};
  int i;

  (void)state;
  for (i = 0; i < KUBE_DEFAULT_ATTEMPTS + 2; i++)
    script(f, 500, NULL, "{\"kind\":\"Status\",\"reason\":\"InternalError\"}");
  assert_int_equal(kube_get(f->k, KUBE_NODES, NULL, "n", result_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 500);
  assert_int_equal(r.error, -EPROTO);
  assert_int_equal(r.attempts, KUBE_DEFAULT_ATTEMPTS);
  assert_string_equal(r.reason, "InternalError");
  assert_int_equal(f->next, KUBE_DEFAULT_ATTEMPTS);
  fixture_free(f);
}

static void test_conflict_not_retried(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct result r = {0};
  json_t *pod = json_loads(pod_a, 0, NULL);

  (void)state;
  script(f, 409, NULL, conflict);
  assert_int_equal(kube_create(f->k, KUBE_PODS, "ci", pod, result_cb, &r), 0);
  json_decref(pod);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 409);
  assert_int_equal(r.error, -EPROTO);
  assert_int_equal(r.attempts, 1);
  assert_string_equal(r.reason, "AlreadyExists");
  assert_string_equal(f->targets[0], "POST /api/v1/namespaces/ci/pods");
  assert_string_equal(f->ctype, "application/json");
  assert_string_equal(f->body, pod_a);
  fixture_free(f);
}

static void test_post_5xx_or_lost_is_uncertain(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct result r = {0}, r2 = {0};
  json_t *pod = json_loads(pod_a, 0, NULL);

  (void)state;
  /* Dropped on a fresh connection (curl re-sends by itself only on a
   * reused one that had gone stale), then a 504. */
  f->script[f->nscript++] = (struct answer){.drop = 1};
  script(f, 504, NULL, "{}");
  assert_int_equal(kube_create(f->k, KUBE_PODS, "ci", pod, result_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.error, KUBE_ERR_UNCERTAIN);
  assert_int_equal(r.attempts, 1);
  assert_int_equal(kube_create(f->k, KUBE_PODS, "ci", pod, result_cb, &r2), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r2.done, 5000), 1);
  assert_int_equal(r2.status, 504);
  assert_int_equal(r2.error, KUBE_ERR_UNCERTAIN);
  assert_int_equal(r2.attempts, 1);
  assert_int_equal(f->next, 2);
  json_decref(pod);
  fixture_free(f);
}

static void test_patch_and_delete(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct result r = {0};
  json_t *patch = json_pack("{s:{s:{s:s}}}", "metadata", "labels", "a", "b");

  (void)state;
  script(f, 200, NULL, pod_a);
  script(f, 200, NULL, pod_a);
  script(f, 200, NULL, pod_a);
  assert_int_equal(kube_patch(f->k, KUBE_PODS, "ci", "a", KUBE_PATCH_MERGE,
                              patch, result_cb, &r),
                   0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_string_equal(f->ctype, "application/merge-patch+json");
  r.done = 0;
  assert_int_equal(kube_patch(f->k, KUBE_SECRETS, "ci", "a",
                              KUBE_PATCH_STRATEGIC, patch, result_cb, &r),
                   0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_string_equal(f->ctype, "application/strategic-merge-patch+json");
  assert_string_equal(f->targets[1], "PATCH /api/v1/namespaces/ci/secrets/a");
  r.done = 0;
  assert_int_equal(kube_delete(f->k, KUBE_PODS, "ci", "a", result_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_string_equal(f->targets[2], "DELETE /api/v1/namespaces/ci/pods/"
                                     "a?propagationPolicy=Background");
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "A", result_cb, &r),
                   -EINVAL);
  json_decref(patch);
  fixture_free(f);
}

static void test_rate_limit_spaces_requests(void **state)
{
  struct fixture *f = fixture_new(20, 2, NULL);
  struct result r[5] = {{0}};
  int i, all = 0;

  (void)state;
  for (i = 0; i < 5; i++) {
    script(f, 200, NULL, pod_a);
    assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &r[i]), 0);
  }
  for (i = 0; i < 5; i++)
    assert_int_equal(fake_http_run_until(&f->loop, &r[i].done, 5000), 1);
  for (i = 0; i < 5; i++)
    all += r[i].done;
  assert_int_equal(all, 5);
  /* Two at once (the burst), then one every 50 ms: 150 ms for the last
   * three, give or take the loop's millisecond clock. */
  assert_true(f->at[4] - f->at[0] >= 140);
  assert_true(f->at[2] - f->at[1] >= 40);
  fixture_free(f);
}

/* Calls queued with kube_create_first go ahead of the others still waiting
 * for a token, in their own order; the others keep theirs. */
static void test_create_first_goes_ahead_of_the_queue(void **state)
{
  struct fixture *f = fixture_new(5, 1, NULL);
  struct result ra = {0}, rb = {0}, rc = {0}, rx = {0}, ry = {0};
  json_t *pod = json_loads(pod_a, 0, NULL);
  int i;

  (void)state;
  for (i = 0; i < 5; i++)
    script(f, 200, NULL, pod_a);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &ra), 0);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "b", result_cb, &rb), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &ra.done, 5000), 1);
  /* b waits 200 ms for its token. */
  assert_int_equal(rb.done, 0);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "c", result_cb, &rc), 0);
  assert_int_equal(
      kube_create_first(f->k, KUBE_PODS, "ci", pod, result_cb, &rx), 0);
  assert_int_equal(
      kube_create_first(f->k, KUBE_SECRETS, "ci", pod, result_cb, &ry), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &rc.done, 5000), 1);
  assert_int_equal(rb.done + rx.done + ry.done, 3);
  assert_int_equal(f->next, 5);
  assert_string_equal(f->targets[0], "GET /api/v1/namespaces/ci/pods/a");
  assert_string_equal(f->targets[1], "POST /api/v1/namespaces/ci/pods");
  assert_string_equal(f->targets[2], "POST /api/v1/namespaces/ci/secrets");
  assert_string_equal(f->targets[3], "GET /api/v1/namespaces/ci/pods/b");
  assert_string_equal(f->targets[4], "GET /api/v1/namespaces/ci/pods/c");
  /* Still one token per call. */
  assert_true(f->at[4] - f->at[0] >= 4 * 200 - 10);
  json_decref(pod);
  fixture_free(f);
}

static void test_close_cancels_queued(void **state)
{
  struct fixture *f = fixture_new(1, 1, NULL);
  struct result r1 = {0}, r2 = {0};
  int closed = 0;

  (void)state;
  script(f, 200, NULL, pod_a);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &r1), 0);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "b", result_cb, &r2), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r1.done, 5000), 1);
  /* The second waits a second for its token; closing ends it now. */
  kube_close(f->k, closed_cb, &closed);
  assert_int_equal(r2.done, 1);
  assert_int_equal(r2.error, -ECANCELED);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "c", result_cb, &r2),
                   -ESHUTDOWN);
  assert_int_equal(fake_http_run_until(&f->loop, &closed, 5000), 1);
  kube_destroy(f->k);
  fake_http_stop(&f->srv);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  metrics_destroy(f->m);
  free(f);
}

struct close_inside {
  struct kube *k;
  int calls, closed;
  int errors[4];
};

static void close_inside_cb(void *arg, const struct kube_response *r)
{
  struct close_inside *ci = arg;

  if (ci->calls < 4)
    ci->errors[ci->calls] = r->error;
  ci->calls++;
  kube_close(ci->k, closed_cb, &ci->closed);
}

/* kube_close from inside a request's callback answers the other calls
 * -ECANCELED and never the one whose callback runs a second time. */
static void test_close_inside_callback(void **state)
{
  struct fixture *f = fixture_new(1, 1, NULL);
  struct close_inside ci = {0};
  struct result r2 = {0};

  (void)state;
  ci.k = f->k;
  script(f, 200, NULL, pod_a);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", close_inside_cb, &ci),
                   0);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "b", result_cb, &r2), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &ci.closed, 5000), 1);
  assert_int_equal(ci.calls, 1);
  assert_int_equal(ci.errors[0], 0);
  assert_int_equal(r2.done, 1);
  assert_int_equal(r2.error, -ECANCELED);
  kube_destroy(f->k);
  fake_http_stop(&f->srv);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  metrics_destroy(f->m);
  free(f);
}

static void test_token_file_reread_on_401(void **state)
{
  char *dir = make_dir(), path[256], tmp[256];
  struct fixture *f;
  struct result r = {0};

  (void)state;
  snprintf(path, sizeof(path), "%s/token", dir);
  snprintf(tmp, sizeof(tmp), "%s/token.new", dir);
  write_file(dir, "token", "old");
  f = fixture_new(-1, 1, path);
  script(f, 200, NULL, pod_a);
  script(f, 200, NULL, pod_a);
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_string_equal(f->auth[0], "Bearer old");
  /* Rotated: the next request carries the new token. */
  write_file(dir, "token.new", "new");
  assert_int_equal(rename(tmp, path), 0);
  r.done = 0;
  assert_int_equal(kube_get(f->k, KUBE_PODS, "ci", "a", result_cb, &r), 0);
  assert_int_equal(fake_http_run_until(&f->loop, &r.done, 5000), 1);
  assert_string_equal(f->auth[1], "Bearer new");
  fixture_free(f);
  remove_dir(dir);
}

/* A reflector against the canned server: list (two pages), a watch that
 * says 410, a relist with one object gone, one changed and one new. */

struct seen {
  int n;
  char log[32][48];
  int synced;
  unsigned relists;
  struct kube_watch *w;
  int stop_on_synced;
  int stop_on_event; /* stop the watch from the n-th event's callback */
  char rv[32];       /* the resourceVersion at the last sync */
};

static void seen_event_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  struct seen *s = arg;
  const char *name = json_string_value(
      json_object_get(json_object_get(obj, "metadata"), "name"));

  if (s->n < 32)
    snprintf(s->log[s->n], sizeof(s->log[0]), "%s %s", kube_event_name(type),
             name ? name : "");
  s->n++;
  if (s->n == s->stop_on_event)
    kube_watch_stop(s->w);
}

static int seen_has(const struct seen *s, int from, const char *what)
{
  int i;

  for (i = from; i < s->n && i < 32; i++)
    if (strcmp(s->log[i], what) == 0)
      return 1;
  return 0;
}

static void seen_synced_cb(void *arg, unsigned relists)
{
  struct seen *s = arg;

  s->synced++;
  s->relists = relists;
  snprintf(s->rv, sizeof(s->rv), "%s", kube_watch_resource_version(s->w));
  if (s->synced == s->stop_on_synced)
    kube_watch_stop(s->w);
}

#define POD(name, uid, rv)                                                     \
  "{\"metadata\":{\"name\":\"" name "\",\"namespace\":\"ci\",\"uid\":\"" uid   \
  "\",\"resourceVersion\":\"" rv "\"}}"

static void test_reflector_relists_after_gone(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct seen s = {.stop_on_synced = 2};
  struct kube_watch_options o = {.kind = KUBE_PODS,
                                 .ns = "ci",
                                 .label_selector = "app=runner,pool in (a)",
                                 .page_size = 2,
                                 .event_cb = seen_event_cb,
                                 .synced_cb = seen_synced_cb,
                                 .arg = &s};
  int i;

  (void)state;
  script(f, 200, NULL,
         "{\"metadata\":{\"continue\":\"tok/1\"},\"items\":[" POD(
             "a", "u1", "5") "," POD("b", "u2", "6") "]}");
  script(f, 200, NULL,
         "{\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[" POD(
             "c", "u3", "7") "]}");
  /* The watch: one change, a bookmark, then 410 as an ERROR event. */
  script(
      f, 200, NULL,
      "{\"type\":\"MODIFIED\",\"object\":" POD(
          "c", "u3", "11") "}\n"
                           "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{"
                           "\"resourceVersion\":\"12\"}}}\n"
                           "{\"type\":\"ERROR\",\"object\":{\"kind\":"
                           "\"Status\",\"code\":410,"
                           "\"reason\":\"Expired\"}}\n");
  /* Relist: a is gone, b changed, c the same, d new. */
  script(f, 200, NULL,
         "{\"metadata\":{\"resourceVersion\":\"40\"},\"items\":[" POD(
             "b", "u2", "30") "," POD("c", "u3", "11") "," POD("d", "u4",
                                                               "31") "]}");
  s.w = kube_watch_start(f->k, &o);
  assert_non_null(s.w);
  assert_int_equal(fake_http_run_until(&f->loop, &s.synced, 5000), 1);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.log[0], "ADDED a");
  assert_string_equal(s.log[1], "ADDED b");
  assert_string_equal(s.log[2], "ADDED c");
  assert_string_equal(kube_watch_resource_version(s.w), "10");
  for (i = 0; i < 200 && s.synced < 2; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(s.synced, 2);
  assert_int_equal(s.relists, 2);
  /* c changed on the watch; the relist reports a's deletion, b's change
   * and d, and nothing for c, which the watch already delivered. */
  assert_int_equal(s.n, 7);
  assert_string_equal(s.log[3], "MODIFIED c");
  assert_string_equal(s.log[4], "DELETED a");
  assert_true(seen_has(&s, 5, "MODIFIED b"));
  assert_true(seen_has(&s, 5, "ADDED d"));
  assert_string_equal(f->targets[0],
                      "GET /api/v1/namespaces/ci/pods?limit=2&labelSelector="
                      "app%3Drunner%2Cpool%20in%20%28a%29");
  assert_string_equal(f->targets[1],
                      "GET /api/v1/namespaces/ci/pods?limit=2&continue=tok%2F1"
                      "&labelSelector=app%3Drunner%2Cpool%20in%20%28a%29");
  assert_non_null(strstr(f->targets[2],
                         "watch=1&allowWatchBookmarks=true&"
                         "resourceVersion=10&timeoutSeconds=30"));
  assert_true(metrics_value(f->m, "runfleet_kube_watch_restarts_total",
                            "reason=\"gone\",resource=\"pods\"") == 1);
  /* The first list is no relist; the one after the 410 is. */
  assert_true(metrics_value(f->m, "runfleet_kube_watch_relists_total",
                            "resource=\"pods\"") == 1);
  fixture_free(f);
}

/* An event over the limit restarts the watch from the last good
 * resourceVersion (counted); a consumer may stop the watch from inside an
 * event callback, and nothing more happens after. */
static void test_reflector_oversize_and_stop_inside(void **state)
{
  static char big[2048];
  struct fixture *f;
  struct seen s = {.stop_on_event = 2};
  struct kube_watch_options o = {
      .kind = KUBE_PODS, .ns = "ci", .event_cb = seen_event_cb, .arg = &s};
  int i;

  (void)state;
  fixture_max_event = 512;
  f = fixture_new(-1, 1, NULL);
  fixture_max_event = 0;
  snprintf(big, sizeof(big),
           "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\","
           "\"namespace\":\"ci\",\"resourceVersion\":\"11\",\"annotations\":"
           "{\"x\":\"%01000d\"}}}}\n",
           0);
  script(f, 200, NULL,
         "{\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[" POD(
             "a", "u1", "5") "]}");
  script(f, 200, NULL, big);
  script(f, 200, NULL,
         "{\"type\":\"MODIFIED\",\"object\":" POD(
             "a", "u1", "12") "}\n"
                              "{\"type\":\"MODIFIED\",\"object\":" POD(
                                  "a", "u1", "13") "}\n");
  s.w = kube_watch_start(f->k, &o);
  assert_non_null(s.w);
  for (i = 0; i < 500 && s.n < 2; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(s.n, 2);
  assert_string_equal(s.log[0], "ADDED a");
  assert_string_equal(s.log[1], "MODIFIED a");
  /* The watch after the oversize event resumed from the list's version. */
  assert_non_null(strstr(f->targets[2], "resourceVersion=10&"));
  assert_true(metrics_value(f->m, "runfleet_kube_watch_restarts_total",
                            "reason=\"oversize\",resource=\"pods\"") == 1);
  /* Stopped inside its callback: the second event of that chunk is not
   * delivered and no request follows. */
  for (i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(s.n, 2);
  assert_int_equal(f->next, 3);
  fixture_free(f);
}

/* A watch refused with HTTP 410 relists; a continue token that expired
 * mid-list starts the list over. */
static void test_reflector_http_410_and_expired_continue(void **state)
{
  struct fixture *f = fixture_new(-1, 1, NULL);
  struct seen s = {.stop_on_synced = 2};
  struct kube_watch_options o = {.kind = KUBE_NODES,
                                 .page_size = 1,
                                 .event_cb = seen_event_cb,
                                 .synced_cb = seen_synced_cb,
                                 .arg = &s};
  static const char gone[] =
      "{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\"}";
  int i;

  (void)state;
  script(f, 200, NULL,
         "{\"metadata\":{\"continue\":\"c1\"},\"items\":[{\"metadata\":{"
         "\"name\":\"n1\",\"resourceVersion\":\"3\"}}]}");
  script(f, 410, NULL, gone);
  script(f, 200, NULL,
         "{\"metadata\":{\"resourceVersion\":\"9\"},\"items\":[{"
         "\"metadata\":{\"name\":\"n1\",\"resourceVersion\":\"3\"}}]}");
  script(f, 410, NULL, gone);
  script(f, 200, NULL,
         "{\"metadata\":{\"resourceVersion\":\"20\"},\"items\":[{"
         "\"metadata\":{\"name\":\"n2\",\"resourceVersion\":\"15\"}}]}");
  s.w = kube_watch_start(f->k, &o);
  assert_non_null(s.w);
  for (i = 0; i < 500 && s.synced < 2; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(s.synced, 2);
  assert_string_equal(f->targets[0], "GET /api/v1/nodes?limit=1");
  assert_string_equal(f->targets[1], "GET /api/v1/nodes?limit=1&continue=c1");
  assert_string_equal(f->targets[2], "GET /api/v1/nodes?limit=1");
  assert_non_null(strstr(f->targets[3], "watch=1&"));
  assert_string_equal(f->targets[4], "GET /api/v1/nodes?limit=1");
  /* n1 once, then its deletion and n2 from the relist. */
  assert_int_equal(s.n, 3);
  assert_string_equal(s.log[0], "ADDED n1");
  assert_string_equal(s.log[1], "DELETED n1");
  assert_string_equal(s.log[2], "ADDED n2");
  assert_string_equal(s.rv, "20");
  fixture_free(f);
}

/* Retries and restarts log warnings by design; keep the output short. */
static int quiet_logs(void **state)
{
  (void)state;
  log_setup(LOG_ERROR, 0);
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parser_whole_and_every_split),
      cmocka_unit_test(test_parser_blank_lines_and_crlf),
      cmocka_unit_test(test_parser_oversize),
      cmocka_unit_test(test_parser_malformed),
      cmocka_unit_test(test_parser_callback_stops),
      cmocka_unit_test(test_kubeconfig),
      cmocka_unit_test(test_in_cluster),
      cmocka_unit_test(test_from_config_section),
      cmocka_unit_test(test_token_rotation),
      cmocka_unit_test(test_bucket),
      cmocka_unit_test(test_backoff),
      cmocka_unit_test(test_retry_after),
      cmocka_unit_test(test_retryable),
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_get_retries_5xx_and_429),
      cmocka_unit_test(test_gives_up_after_attempts),
      cmocka_unit_test(test_conflict_not_retried),
      cmocka_unit_test(test_post_5xx_or_lost_is_uncertain),
      cmocka_unit_test(test_patch_and_delete),
      cmocka_unit_test(test_rate_limit_spaces_requests),
      cmocka_unit_test(test_create_first_goes_ahead_of_the_queue),
      cmocka_unit_test(test_close_cancels_queued),
      cmocka_unit_test(test_close_inside_callback),
      cmocka_unit_test(test_token_file_reread_on_401),
      cmocka_unit_test(test_metrics_handed_over_later_count_what_was_sent),
      cmocka_unit_test(test_reflector_relists_after_gone),
      cmocka_unit_test(test_reflector_oversize_and_stop_inside),
      cmocka_unit_test(test_reflector_http_410_and_expired_continue),
  };

  return cmocka_run_group_tests(tests, quiet_logs, NULL);
}
