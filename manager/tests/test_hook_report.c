/* Hook reports: the runner token, malformed reports, a failed GPU health
 * check taking only the runner's own GPUs out of capacity, and metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hook_report.h"
#include "sched_stub.h"

static const int host_gpus[] = {0, 1, 2, 3};

struct fixture {
  struct config cfg;
  struct scheduler *s;
  struct metrics *m;
  struct hook_reports *h;
  struct capacity *cap;
  char runner[SCHED_NAME_MAX];
  char auth[8 + HOOK_TOKEN_SIZE];
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct cfg_pool *p = &f->cfg.pools[0];
  char *labels[] = {"gpu"};
  struct sched_job_event ev = {.job_id = 1,
                               .repo = "acme/a",
                               .name = "t",
                               .labels = labels,
                               .nlabels = 1};
  int gpus[] = {2, 3};
  char token[HOOK_TOKEN_SIZE];

  f->cfg.npools = 1;
  p->name = strdup("gpu-2");
  p->labels[0] = strdup("self-hosted");
  p->labels[1] = strdup("gpu");
  p->nlabels = 2;
  p->max_runners = 2;
  p->gpus = 2;
  p->cpus = 1;
  f->s = sched_new(&f->cfg, &stub_sched_ops, NULL);
  f->m = metrics_new();
  f->h = hook_reports_new(f->m);
  f->cap = capacity_new();
  {
    struct cap_node_desc d = {.source = "local",
                              .name = "host",
                              .gpus = host_gpus,
                              .ngpus = 4,
                              .cpu_milli = 4000};
    struct cap_placement where = {.node = "host", .gpus = {2, 3}, .ngpus = 2};
    assert_int_equal(capacity_node_set(f->cap, &d), 0);
    sched_job_queued(f->s, &ev, 1);
    sched_reconcile(f->s, 2);
    snprintf(f->runner, sizeof(f->runner), "%s",
             sched_runner_at(f->s, 0)->name);
    assert_int_equal(
        capacity_hold_at(f->cap, f->runner, CAP_HOLDER_RUNNER, &where), 0);
  }
  sched_runner_running(f->s, f->runner, 9, gpus, 2, 3);
  assert_int_equal(hook_token(f->h, f->runner, token, sizeof(token)), 0);
  snprintf(f->auth, sizeof(f->auth), "Bearer %s", token);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  size_t i;

  hook_reports_destroy(f->h);
  capacity_destroy(f->cap);
  metrics_destroy(f->m);
  sched_destroy(f->s);
  free(f->cfg.pools[0].name);
  for (i = 0; i < f->cfg.pools[0].nlabels; i++)
    free(f->cfg.pools[0].labels[i]);
  free(f);
  return 0;
}

static int report(struct fixture *f, const char *kind, const char *auth,
                  const char *body)
{
  char msg[128];

  return hook_handle(f->h, f->s, f->cap, kind, auth, body, strlen(body), msg,
                     sizeof(msg));
}

static void test_token_is_per_runner(void **state)
{
  struct fixture *f = *state;
  char body[256], other[HOOK_TOKEN_SIZE], mine[HOOK_TOKEN_SIZE];

  snprintf(body, sizeof(body), "{\"runner\":\"%s\"}", f->runner);
  assert_int_equal(report(f, "started", f->auth, body), 204);
  assert_int_equal(report(f, "started", NULL, body), 401);
  assert_int_equal(report(f, "started", "Bearer abc", body), 401);
  /* Another runner's token does not work for this one. */
  hook_token(f->h, "rf-other-1", other, sizeof(other));
  hook_token(f->h, f->runner, mine, sizeof(mine));
  assert_string_not_equal(other, mine);
  snprintf(f->auth, sizeof(f->auth), "Bearer %s", other);
  assert_int_equal(report(f, "started", f->auth, body), 401);
  assert_true(metrics_value(f->m, "runfleet_hook_reports_total",
                            "hook=\"started\",result=\"unauthorized\"") == 3);
}

static void test_malformed_and_unknown(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(report(f, "started", f->auth, "{\"runner\":"), 400);
  assert_int_equal(report(f, "started", f->auth, "{\"no\":1}"), 400);
  assert_int_equal(report(f, "bogus", f->auth, "{}"), 404);
}

static void test_failed_health_check_takes_own_gpus_out(void **state)
{
  struct fixture *f = *state;
  char body[512];

  snprintf(body, sizeof(body),
           "{\"runner\":\"%s\",\"ok\":false,\"gpu_health\":{\"checked\":true,"
           "\"ok\":false,\"reason\":\"ecc\",\"message\":\"GPU 3 has 2 "
           "uncorrectable ECC errors\",\"failed_gpus\":[{\"index\":3,"
           "\"uuid\":\"GPU-x\"},{\"index\":0,\"uuid\":\"GPU-y\"}]}}",
           f->runner);
  assert_int_equal(report(f, "started", f->auth, body), 204);
  /* GPU 0 is not this runner's: ignored. */
  {
    struct cap_gpu_view v[4];
    const char *name, *source;
    int ready;
    size_t n;

    assert_int_equal(
        capacity_node_view(f->cap, 0, &name, &source, &ready, v, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_true(v[0].healthy && v[1].healthy && v[2].healthy);
    assert_false(v[3].healthy);
  }
  assert_true(metrics_value(f->m, "runfleet_gpu_health_failures_total",
                            "pool=\"gpu-2\"") == 1);
  assert_true(metrics_value(f->m, "runfleet_hook_failures_total",
                            "hook=\"pre-job\",reason=\"ecc\"") == 1);
}

/* A backend that takes nodes out itself (Kubernetes): what it was told. */
struct node_backend {
  struct backend base;
  int calls;
  char node[64], runner[64], reason[32], message[128], uuid1[32];
  int gpu0;
  size_t ngpus;
};

static int nb_gpu_unhealthy(struct backend *b,
                            const struct backend_gpu_report *r)
{
  struct node_backend *nb = (struct node_backend *)b;

  nb->calls++;
  snprintf(nb->node, sizeof(nb->node), "%s", r->node);
  snprintf(nb->runner, sizeof(nb->runner), "%s", r->runner);
  snprintf(nb->reason, sizeof(nb->reason), "%s", r->reason);
  snprintf(nb->message, sizeof(nb->message), "%s", r->message);
  nb->ngpus = r->ngpus;
  nb->gpu0 = r->ngpus > 0 ? r->gpus[0] : -1;
  snprintf(nb->uuid1, sizeof(nb->uuid1), "%s", r->ngpus > 1 ? r->uuids[1] : "");
  return nb->calls == 1 ? 0 : 1;
}

static void test_failed_check_goes_to_a_backend_that_takes_nodes(void **state)
{
  static const struct backend_ops ops = {.gpu_unhealthy = nb_gpu_unhealthy};
  struct fixture *f = *state;
  struct node_backend nb;
  struct cap_totals t;
  char body[512];

  memset(&nb, 0, sizeof(nb));
  nb.base.ops = &ops;
  hook_reports_set_backend(f->h, &nb.base);
  /* The report names another node: the runner's hold decides. */
  snprintf(body, sizeof(body),
           "{\"runner\":\"%s\",\"node\":\"elsewhere\",\"ok\":false,"
           "\"gpu_health\":{\"checked\":true,\"ok\":false,\"reason\":\"ecc\","
           "\"message\":\"2 uncorrectable ECC errors\",\"failed_gpus\":["
           "{\"index\":0,\"uuid\":\"GPU-a\"},{\"index\":1}]}}",
           f->runner);
  assert_int_equal(report(f, "started", f->auth, body), 204);
  assert_int_equal(nb.calls, 1);
  assert_string_equal(nb.node, "host");
  assert_string_equal(nb.runner, f->runner);
  assert_string_equal(nb.reason, "ecc");
  assert_string_equal(nb.message, "2 uncorrectable ECC errors");
  assert_int_equal(nb.ngpus, 2);
  assert_int_equal(nb.gpu0, 0);
  assert_string_equal(nb.uuid1, "");
  /* Indices inside a pod are not the node's: none is marked by index. */
  capacity_totals(f->cap, &t);
  assert_int_equal(t.gpus_unhealthy, 0);
  assert_true(metrics_value(f->m, "runfleet_gpu_health_failures_total",
                            "pool=\"gpu-2\"") == 1);
  /* A passing check sends nothing. */
  snprintf(body, sizeof(body),
           "{\"runner\":\"%s\",\"gpu_health\":{\"ok\":true}}", f->runner);
  assert_int_equal(report(f, "started", f->auth, body), 204);
  assert_int_equal(nb.calls, 1);
}

static void test_completed_report_becomes_metrics(void **state)
{
  struct fixture *f = *state;
  char body[512];

  snprintf(body, sizeof(body),
           "{\"runner\":\"%s\",\"duration_seconds\":42.5,\"gpu\":{"
           "\"samples\":10,\"peak_memory_bytes\":2147483648,"
           "\"mean_utilization\":0.75},\"git_cache\":{}}",
           f->runner);
  assert_int_equal(report(f, "completed", f->auth, body), 204);
  /* Histogram values read back as observation counts. */
  assert_true(metrics_value(f->m, "runfleet_job_duration_seconds",
                            "pool=\"gpu-2\"") == 1);
  assert_true(metrics_value(f->m, "runfleet_gpu_utilization_ratio",
                            "pool=\"gpu-2\"") == 1);
  snprintf(body, sizeof(body),
           "{\"runner\":\"%s\",\"git_cache\":{\"result\":\"hit\","
           "\"bytes_saved\":1000,\"bytes_fetched\":10}}",
           f->runner);
  assert_int_equal(report(f, "started", f->auth, body), 204);
  assert_true(
      metrics_value(f->m, "runfleet_git_cache_total", "result=\"hit\"") == 1);
  assert_true(metrics_value(f->m, "runfleet_git_cache_bytes_saved_total", "") ==
              1000);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_token_is_per_runner, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_malformed_and_unknown, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_failed_health_check_takes_own_gpus_out, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_failed_check_goes_to_a_backend_that_takes_nodes, setup,
          teardown),
      cmocka_unit_test_setup_teardown(test_completed_report_becomes_metrics,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
