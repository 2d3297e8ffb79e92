/* The report bodies, field by field: they are the contract with
 * runfleetd (docs/HOOKS.md). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static void fill_cfg(struct hook_config *cfg)
{
  memset(cfg, 0, sizeof(*cfg));
  cfg->runner_name = "gpu-1-abc";
  cfg->pool = "gpu-1";
  snprintf(cfg->node, sizeof(cfg->node), "node-7");
  cfg->repository = "octo/big";
  cfg->run_id = 9876543210LL;
  cfg->job = "train";
}

static void assert_json(json_t *got, const char *want_text)
{
  json_error_t err;
  json_t *want = json_loads(want_text, 0, &err);
  char *a, *b;

  assert_non_null(want);
  assert_non_null(got);
  if (!json_equal(got, want)) {
    a = json_dumps(got, JSON_SORT_KEYS);
    b = json_dumps(want, JSON_SORT_KEYS);
    print_error("got  %s\nwant %s\n", a, b);
    free(a);
    free(b);
    fail();
  }
  json_decref(want);
}

static void test_started_gpu_failure(void **state)
{
  struct hook_config cfg;
  struct gpu_health h;
  struct gcache_result git;
  struct report_started r;
  json_t *body;

  (void)state;
  fill_cfg(&cfg);
  memset(&h, 0, sizeof(h));
  h.checked = 1;
  h.ok = 0;
  h.reason = GPU_ECC;
  snprintf(h.message, sizeof(h.message), "GPU 1 (GPU-b) has 3 errors");
  h.nfailed = 1;
  h.failed[0].index = 1;
  h.failed[0].reason = GPU_ECC;
  snprintf(h.failed[0].uuid, sizeof(h.failed[0].uuid), "GPU-b");
  memset(&git, 0, sizeof(git));
  git.outcome = GCACHE_SKIPPED;
  r.health = &h;
  r.git = &git;
  r.disk_free_bytes = 123456789012ULL;
  r.ok = 0;
  body = report_started_json(&cfg, &r);
  assert_json(body,
              "{\"runner\":\"gpu-1-abc\",\"pool\":\"gpu-1\",\"node\":"
              "\"node-7\",\"repository\":\"octo/big\",\"run_id\":9876543210,"
              "\"job\":\"train\",\"gpu_health\":{\"checked\":true,\"ok\":"
              "false,\"reason\":\"ecc\",\"message\":\"GPU 1 (GPU-b) has 3 "
              "errors\",\"failed_gpus\":[{\"index\":1,\"uuid\":\"GPU-b\","
              "\"reason\":\"ecc\"}]},\"git_cache\":{\"result\":\"skipped\","
              "\"bytes_fetched\":0,\"bytes_saved\":0,\"seconds\":0.0},"
              "\"disk_free_bytes\":123456789012,\"ok\":false}");
  json_decref(body);
}

static void test_started_ok_cpu(void **state)
{
  struct hook_config cfg;
  struct gpu_health h;
  struct gcache_result git;
  struct report_started r;
  json_t *body;

  (void)state;
  fill_cfg(&cfg);
  cfg.pool = NULL; /* unset variables are null, never missing */
  memset(&h, 0, sizeof(h));
  h.ok = 1;
  memset(&git, 0, sizeof(git));
  git.outcome = GCACHE_HIT;
  git.bytes_fetched = 100;
  git.bytes_saved = 5000000;
  git.seconds = 1.5;
  r.health = &h;
  r.git = &git;
  r.disk_free_bytes = 42;
  r.ok = 1;
  body = report_started_json(&cfg, &r);
  assert_json(body,
              "{\"runner\":\"gpu-1-abc\",\"pool\":null,\"node\":\"node-7\","
              "\"repository\":\"octo/big\",\"run_id\":9876543210,\"job\":"
              "\"train\",\"gpu_health\":{\"checked\":false,\"ok\":true,"
              "\"reason\":null,\"message\":\"\",\"failed_gpus\":[]},"
              "\"git_cache\":{\"result\":\"hit\",\"bytes_fetched\":100,"
              "\"bytes_saved\":5000000,\"seconds\":1.5},\"disk_free_bytes\":"
              "42,\"ok\":true}");
  json_decref(body);
}

static void test_started_git_error_has_message(void **state)
{
  struct hook_config cfg;
  struct gpu_health h;
  struct gcache_result git;
  struct report_started r;
  json_t *body, *g;

  (void)state;
  fill_cfg(&cfg);
  memset(&h, 0, sizeof(h));
  h.ok = 1;
  memset(&git, 0, sizeof(git));
  git.outcome = GCACHE_ERROR;
  snprintf(git.message, sizeof(git.message), "fetch timed out");
  r.health = &h;
  r.git = &git;
  r.disk_free_bytes = 0;
  r.ok = 1;
  body = report_started_json(&cfg, &r);
  assert_non_null(body);
  g = json_object_get(body, "git_cache");
  assert_string_equal(json_string_value(json_object_get(g, "result")), "error");
  assert_string_equal(json_string_value(json_object_get(g, "message")),
                      "fetch timed out");
  json_decref(body);
}

static void test_completed(void **state)
{
  struct hook_config cfg;
  struct report_completed r;
  json_t *body;

  (void)state;
  fill_cfg(&cfg);
  memset(&r, 0, sizeof(r));
  r.duration_seconds = 12.5;
  r.gpu_samples = 12;
  r.gpu_peak_memory_bytes = 34359738368ULL;
  r.gpu_mean_utilization = 0.75;
  r.disk_used_bytes = 4096;
  r.processes_killed = 2;
  r.status = "unknown";
  body = report_completed_json(&cfg, &r);
  assert_json(body,
              "{\"runner\":\"gpu-1-abc\",\"pool\":\"gpu-1\",\"node\":"
              "\"node-7\",\"repository\":\"octo/big\",\"run_id\":9876543210,"
              "\"job\":\"train\",\"duration_seconds\":12.5,\"gpu\":{"
              "\"samples\":12,\"peak_memory_bytes\":34359738368,"
              "\"mean_utilization\":0.75},\"disk_used_bytes\":4096,"
              "\"processes_killed\":2,\"status\":\"unknown\"}");
  json_decref(body);
}

static void test_post_without_url(void **state)
{
  struct hook_config cfg;
  json_t *body = json_object();

  (void)state;
  fill_cfg(&cfg);
  assert_int_equal(report_post(&cfg, REPORT_STARTED_PATH, body, 1000), -ENOENT);
  json_decref(body);
}

static void test_post_unreachable_is_bounded(void **state)
{
  struct hook_config cfg;
  json_t *body = json_object();

  (void)state;
  fill_cfg(&cfg);
  /* Port 1 on loopback refuses: three tries, then a warning, no crash. */
  cfg.url = "http://127.0.0.1:1";
  cfg.token = "secret-token";
  assert_int_equal(report_post(&cfg, REPORT_STARTED_PATH, body, 3000), -EIO);
  json_decref(body);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_started_gpu_failure),
      cmocka_unit_test(test_started_ok_cpu),
      cmocka_unit_test(test_started_git_error_has_message),
      cmocka_unit_test(test_completed),
      cmocka_unit_test(test_post_without_url),
      cmocka_unit_test(test_post_unreachable_is_bounded),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
