/* recovery: which deliveries are redelivered, the file store, and whole
 * runs against a fake GitHub on the test's own loop: paging back to the
 * cursor, redelivery, the scan handing an unknown queued job to intake,
 * and the call budget cutting a run short without moving the cursor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "fake_http.h"
#include "gh_recovery.h"
#include "intake.h"
#include "recovery.h"
#include "sched_stub.h"

static struct gh_delivery dv(int64_t id, const char *guid, int code,
                             const char *event, int64_t inst)
{
  struct gh_delivery d;

  memset(&d, 0, sizeof(d));
  d.id = id;
  snprintf(d.guid, sizeof(d.guid), "%s", guid);
  d.status_code = code;
  snprintf(d.event, sizeof(d.event), "%s", event);
  d.installation_id = inst;
  return d;
}

static void test_pick_redeliveries(void **state)
{
  /* Newest first, as the list comes. */
  struct gh_delivery items[] = {
      dv(10, "a", 200, "workflow_job", 7), /* a redelivery that worked */
      dv(9, "b", 0, "workflow_job", 7),    /* b failed twice: once */
      dv(8, "c", 503, "workflow_job", 7),  /* c failed */
      dv(7, "b", 0, "workflow_job", 7),
      dv(6, "a", 0, "workflow_job", 7),   /* a's success is later */
      dv(5, "d", 0, "ping", 0),           /* not a job */
      dv(4, "e", 0, "workflow_job", 8),   /* another installation's */
      dv(3, "f", 202, "workflow_job", 7), /* 2xx is a success */
      dv(2, "g", 0, "workflow_job", 0),   /* no installation named */
  };
  int64_t ids[16];
  size_t n;

  (void)state;
  n = recovery_pick_redeliveries(items, 9, 7, ids, 16);
  assert_int_equal(n, 3);
  assert_int_equal(ids[0], 9);
  assert_int_equal(ids[1], 8);
  assert_int_equal(ids[2], 2);
  /* Any installation when none is configured. */
  n = recovery_pick_redeliveries(items, 9, 0, ids, 16);
  assert_int_equal(n, 4);
  assert_int_equal(ids[2], 4);
  /* The output is bounded. */
  assert_int_equal(recovery_pick_redeliveries(items, 9, 7, ids, 1), 1);
  assert_int_equal(recovery_pick_redeliveries(items, 0, 7, ids, 16), 0);
}

static void test_dir_store(void **state)
{
  char dir[] = "/tmp/runfleet-rec-XXXXXX";
  char buf[32], path[128];
  struct recovery_store st;

  (void)state;
  assert_non_null(mkdtemp(dir));
  assert_int_equal(recovery_dir_store(&st, dir), 0);
  assert_int_equal(st.get(st.ctx, RECOVERY_KEY_CURSOR, buf, sizeof(buf)),
                   -ENOENT);
  assert_int_equal(st.put(st.ctx, RECOVERY_KEY_CURSOR, "80000001234"), 0);
  assert_int_equal(st.get(st.ctx, RECOVERY_KEY_CURSOR, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "80000001234");
  assert_int_equal(st.put(st.ctx, RECOVERY_KEY_CURSOR, "9"), 0);
  assert_int_equal(st.get(st.ctx, RECOVERY_KEY_CURSOR, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "9");
  /* Keys are names, never paths. */
  assert_int_equal(st.put(st.ctx, "../x", "1"), -EINVAL);
  assert_int_equal(st.get(st.ctx, "a/b", buf, sizeof(buf)), -EINVAL);
  snprintf(path, sizeof(path), "%s/%s", dir, RECOVERY_KEY_CURSOR);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(rmdir(dir), 0);
  recovery_dir_store_free(&st);
  assert_null(st.ctx);
}

/* ---- whole runs ---- */

static char key_path[64] = "/tmp/runfleet-rec-key-XXXXXX";

static int group_setup(void **state)
{
  EVP_PKEY *key = EVP_RSA_gen(2048);
  BIO *bio = BIO_new(BIO_s_mem());
  char *pem;
  long len;
  int fd, rc = -1;

  (void)state;
  if (key == NULL || bio == NULL ||
      PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)
    goto out;
  len = BIO_get_mem_data(bio, &pem);
  fd = mkstemp(key_path);
  if (fd >= 0 && write(fd, pem, (size_t)len) == (ssize_t)len)
    rc = 0;
  if (fd >= 0)
    close(fd);
out:
  BIO_free(bio);
  EVP_PKEY_free(key);
  return rc;
}

static int group_teardown(void **state)
{
  (void)state;
  return unlink(key_path);
}

struct fixture {
  uv_loop_t loop;
  struct fake_http srv;
  struct http_client *http;
  struct config cfg;
  char api_url[64];
  struct gh_client *gh;
  struct scheduler *sched;
  struct intake *in;
  struct recovery *rec;
  char cursor[32]; /* the in-memory store: the cursor */
  char repos[RECOVERY_REPOS_VALUE_MAX + 1]; /* and the repositories */
  int64_t redelivered[8];
  unsigned nredelivered;
  unsigned deliveries_pages;
  unsigned bad_requests;
};

static int mem_get(void *ctx, const char *key, char *buf, size_t size)
{
  struct fixture *f = ctx;
  const char *v = strcmp(key, RECOVERY_KEY_CURSOR) == 0  ? f->cursor
                  : strcmp(key, RECOVERY_KEY_REPOS) == 0 ? f->repos
                                                         : "";

  if (v[0] == '\0')
    return -ENOENT;
  snprintf(buf, size, "%s", v);
  return 0;
}

static int mem_put(void *ctx, const char *key, const char *value)
{
  struct fixture *f = ctx;

  if (strcmp(key, RECOVERY_KEY_REPOS) == 0) {
    snprintf(f->repos, sizeof(f->repos), "%s", value);
    return 0;
  }
  if (strcmp(key, RECOVERY_KEY_CURSOR) != 0)
    return -EINVAL;
  snprintf(f->cursor, sizeof(f->cursor), "%s", value);
  return 0;
}

/* One delivery item delivered now. */
static void item(char *out, size_t size, int64_t id, const char *guid, int code)
{
  char when[32];
  time_t now = time(NULL);
  struct tm tm;

  gmtime_r(&now, &tm);
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  snprintf(out, size,
           "{\"id\":%lld,\"guid\":\"%s\",\"delivered_at\":\"%s\","
           "\"redelivery\":false,\"duration\":0.1,\"status\":\"x\","
           "\"status_code\":%d,\"event\":\"workflow_job\",\"action\":"
           "\"queued\",\"installation_id\":77,\"repository_id\":1}",
           (long long)id, guid, when, code);
}

/* Three pages, newest first: 30 ok, 29 failed | 28 failed, 27 ok (the
 * success of 29's guid) | 26 failed. */
static void answer_deliveries(struct fixture *f, struct fake_http_req *req)
{
  char a[512], b[512], body[1200], link[256];
  const char *cursor = strstr(req->target, "cursor=");

  f->deliveries_pages++;
  if (cursor == NULL) {
    item(a, sizeof(a), 30, "g30", 200);
    item(b, sizeof(b), 29, "g29", 0);
    snprintf(link, sizeof(link),
             "Link: <%s/app/hook/deliveries?per_page=100&cursor=p2>; "
             "rel=\"next\"\r\n",
             f->api_url);
  } else if (strcmp(cursor, "cursor=p2") == 0) {
    item(a, sizeof(a), 28, "g28", 502);
    item(b, sizeof(b), 27, "g29", 200);
    snprintf(link, sizeof(link),
             "Link: <%s/app/hook/deliveries?per_page=100&cursor=p3>; "
             "rel=\"next\"\r\n",
             f->api_url);
  } else {
    item(a, sizeof(a), 26, "g26", 0);
    snprintf(body, sizeof(body), "[%s]", a);
    fake_http_respond(req->conn, 200, NULL, body);
    return;
  }
  snprintf(body, sizeof(body), "[%s,%s]", a, b);
  fake_http_respond(req->conn, 200, link, body);
}

static void handler(void *arg, struct fake_http_req *req)
{
  struct fixture *f = arg;
  long long id;

  if (strcmp(req->method, "POST") == 0 &&
      strcmp(req->target, "/app/installations/77/access_tokens") == 0) {
    fake_http_respond(req->conn, 201, NULL,
                      "{\"token\":\"tok\",\"expires_at\":"
                      "\"2099-01-01T00:00:00Z\"}");
  } else if (strcmp(req->method, "GET") == 0 &&
             strncmp(req->target, "/app/hook/deliveries?per_page=100", 33) ==
                 0) {
    answer_deliveries(f, req);
  } else if (strcmp(req->method, "POST") == 0 &&
             sscanf(req->target, "/app/hook/deliveries/%lld/attempts", &id) ==
                 1) {
    if (f->nredelivered < 8)
      f->redelivered[f->nredelivered++] = (int64_t)id;
    fake_http_respond(req->conn, 202, NULL, "{}");
  } else if (strcmp(req->method, "GET") == 0 &&
             strcmp(req->target, "/repos/acme/widgets/actions/runs?status="
                                 "queued&per_page=100&page=1") == 0) {
    fake_http_respond(req->conn, 200, NULL,
                      "{\"total_count\":1,\"workflow_runs\":[{\"id\":500,"
                      "\"status\":\"queued\",\"repository\":{"
                      "\"full_name\":\"acme/widgets\"}}]}");
  } else if (strcmp(req->method, "GET") == 0 &&
             strcmp(req->target, "/repos/acme/widgets/actions/runs/500/jobs?"
                                 "per_page=100&page=1") == 0) {
    fake_http_respond(req->conn, 200, NULL,
                      "{\"total_count\":2,\"jobs\":[{\"id\":601,\"run_id\":"
                      "500,\"status\":\"queued\",\"name\":\"build\","
                      "\"labels\":[\"self-hosted\",\"linux\"]},{\"id\":602,"
                      "\"run_id\":500,\"status\":\"completed\",\"name\":"
                      "\"done\",\"labels\":[\"linux\"]}]}");
  } else {
    f->bad_requests++;
    fake_http_respond(req->conn, 404, NULL, "{\"message\":\"Not Found\"}");
  }
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct cfg_pool *p;

  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(fake_http_start(&f->srv, &f->loop, handler, f), 0);
  f->http = http_client_new(&f->loop);
  assert_non_null(f->http);
  snprintf(f->api_url, sizeof(f->api_url), "http://127.0.0.1:%d", f->srv.port);
  f->cfg.github.api_url = f->api_url;
  f->cfg.github.app_id = 77;
  f->cfg.github.installation_id = 77;
  f->cfg.github.app_private_key_file = key_path;
  f->cfg.github.org = "acme";
  f->cfg.github.mutations_per_minute = 60000;
  f->cfg.recovery.enabled = 1;
  f->cfg.recovery.interval_ms = 3600000;
  f->cfg.recovery.window_ms = 3600000;
  f->cfg.recovery.call_budget = 100;
  f->cfg.recovery.wait_threshold_ms = 3600000;
  f->cfg.recovery.seen_within_ms = 3600000;
  f->cfg.recovery.repositories[0] = "acme/widgets";
  f->cfg.recovery.nrepositories = 1;
  p = &f->cfg.pools[0];
  f->cfg.npools = 1;
  p->name = "cpu";
  p->labels[0] = "self-hosted";
  p->labels[1] = "linux";
  p->nlabels = 2;
  p->max_runners = 4;
  p->cpus = 1;
  *state = f;
  return 0;
}

static void start(struct fixture *f)
{
  struct recovery_store st = {f, mem_get, mem_put};

  f->gh = gh_new(&f->loop, f->http, &f->cfg.github, NULL);
  assert_non_null(f->gh);
  f->sched = sched_new(&f->cfg, &stub_sched_ops, NULL);
  assert_non_null(f->sched);
  f->in = intake_new(f->sched, NULL);
  assert_non_null(f->in);
  f->rec = recovery_new(&f->loop, &f->cfg, f->gh, f->sched, f->in, &st, NULL);
  assert_non_null(f->rec);
  assert_int_equal(recovery_start(f->rec), 0);
}

static void closed_cb(void *arg)
{
  (*(int *)arg)++;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  int rec_closed = 0, gh_closed = 0, http_closed = 0;

  recovery_close(f->rec, closed_cb, &rec_closed);
  gh_close(f->gh, closed_cb, &gh_closed);
  assert_int_equal(fake_http_run_until(&f->loop, &rec_closed, 5000), 1);
  assert_int_equal(fake_http_run_until(&f->loop, &gh_closed, 5000), 1);
  http_client_close(f->http, closed_cb, &http_closed);
  assert_int_equal(fake_http_run_until(&f->loop, &http_closed, 5000), 1);
  intake_destroy(f->in);
  recovery_destroy(f->rec);
  sched_destroy(f->sched);
  gh_destroy(f->gh);
  http_client_destroy(f->http);
  fake_http_stop(&f->srv);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  assert_int_equal(f->bad_requests, 0);
  free(f);
  return 0;
}

/* Runs the loop until the first run finished; returns its report. */
static void run_once(struct fixture *f, struct recovery_report *r)
{
  uint64_t end = uv_now(&f->loop) + 10000;

  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    recovery_report(f->rec, r);
  } while (r->runs == 0 && uv_now(&f->loop) < end);
  assert_int_equal(r->runs, 1);
}

static void test_run_redelivers_and_finds(void **state)
{
  struct fixture *f = *state;
  struct recovery_report r;
  const struct sched_job *j;

  start(f);
  run_once(f, &r);
  assert_string_equal(r.trigger, "start");
  assert_int_equal(r.deliveries_api, 1);
  assert_int_equal(f->deliveries_pages, 3);
  assert_int_equal(r.deliveries_seen, 5);
  assert_int_equal(r.deliveries_failed, 3);
  /* 29's guid succeeded later (27 is a redelivery that worked). */
  assert_int_equal(f->nredelivered, 2);
  assert_int_equal(f->redelivered[0], 28);
  assert_int_equal(f->redelivered[1], 26);
  assert_int_equal(r.redelivered, 2);
  assert_string_equal(f->cursor, "30");
  assert_int_equal(r.repos_scanned, 1);
  assert_int_equal(r.runs_scanned, 1);
  assert_int_equal(r.jobs_found, 1);
  assert_int_equal(r.errors, 0);
  assert_int_equal(r.budget_spent, 0);
  /* 3 pages, 2 redeliveries, runs, jobs (the token is no recovery call). */
  assert_int_equal(r.calls, 7);
  j = sched_job_find(f->sched, 601);
  assert_non_null(j);
  assert_int_equal(j->status, SCHED_JOB_QUEUED);
  assert_int_equal(j->run_id, 500);
  assert_string_equal(j->repo, "acme/widgets");
  assert_null(sched_job_find(f->sched, 602));
}

/* The repositories another replica noted (it saw their jobs; this one
 * saw none) are scanned too; noting keeps each once, newest last. */
static void test_noted_repositories_are_scanned(void **state)
{
  struct fixture *f = *state;
  struct recovery_report r;
  char big[64];
  int i;

  f->cfg.recovery.nrepositories = 0;
  snprintf(f->repos, sizeof(f->repos), "acme/widgets");
  start(f);
  run_once(f, &r);
  assert_int_equal(r.repos_scanned, 1);
  assert_int_equal(r.jobs_found, 1);
  assert_non_null(sched_job_find(f->sched, 601));
  recovery_note_repo(f->rec, "acme/gadgets");
  assert_string_equal(f->repos, "acme/widgets,acme/gadgets");
  recovery_note_repo(f->rec, "acme/widgets");
  recovery_note_repo(f->rec, "acme/gadget");
  recovery_note_repo(f->rec, "not a repo");
  assert_string_equal(f->repos, "acme/widgets,acme/gadgets,acme/gadget");
  /* Past the size the oldest go. */
  for (i = 0; i < 60; i++) {
    snprintf(big, sizeof(big), "acme/repository-number-%02d", i);
    recovery_note_repo(f->rec, big);
  }
  assert_true(strlen(f->repos) <= RECOVERY_REPOS_VALUE_MAX);
  assert_null(strstr(f->repos, "acme/widgets"));
  assert_non_null(strstr(f->repos, "acme/repository-number-59"));
  assert_int_equal(f->repos[strlen(f->repos) - 1], '9');
}

static void test_cursor_stops_the_paging(void **state)
{
  struct fixture *f = *state;
  struct recovery_report r;

  snprintf(f->cursor, sizeof(f->cursor), "28");
  start(f);
  run_once(f, &r);
  assert_int_equal(f->deliveries_pages, 2);
  assert_int_equal(r.deliveries_seen, 2); /* 30 and 29 */
  assert_int_equal(f->nredelivered, 1);
  assert_int_equal(f->redelivered[0], 29);
  assert_string_equal(f->cursor, "30");
}

static void test_budget_cuts_the_run_and_keeps_the_cursor(void **state)
{
  struct fixture *f = *state;
  struct recovery_report r;

  f->cfg.recovery.call_budget = 2;
  start(f);
  run_once(f, &r);
  assert_int_equal(f->deliveries_pages, 2);
  assert_int_equal(r.calls, 2);
  assert_int_equal(r.budget_spent, 1);
  /* Nothing redelivered or scanned past the budget; the cursor stays so
   * the next run reads these pages again. */
  assert_int_equal(f->nredelivered, 0);
  assert_int_equal(r.jobs_found, 0);
  assert_string_equal(f->cursor, "");
  assert_null(sched_job_find(f->sched, 601));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pick_redeliveries),
      cmocka_unit_test(test_dir_store),
      cmocka_unit_test_setup_teardown(test_run_redelivers_and_finds, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_noted_repositories_are_scanned,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_cursor_stops_the_paging, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_budget_cuts_the_run_and_keeps_the_cursor, setup, teardown),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
