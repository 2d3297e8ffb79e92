/* Parsing of the hook's environment. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hook_config.h"

static void test_sizes(void **state)
{
  uint64_t v;

  (void)state;
  assert_int_equal(hcfg_parse_size("1234", &v), 0);
  assert_int_equal(v, 1234);
  assert_int_equal(hcfg_parse_size("10Gi", &v), 0);
  assert_int_equal(v, 10ULL << 30);
  assert_int_equal(hcfg_parse_size("10G", &v), 0);
  assert_int_equal(v, 10000000000ULL);
  assert_int_equal(hcfg_parse_size("512MiB", &v), 0);
  assert_int_equal(v, 512ULL << 20);
  assert_int_equal(hcfg_parse_size("1k", &v), 0);
  assert_int_equal(v, 1000);
  assert_int_equal(hcfg_parse_size("", &v), -EINVAL);
  assert_int_equal(hcfg_parse_size("Gi", &v), -EINVAL);
  assert_int_equal(hcfg_parse_size("10Q", &v), -EINVAL);
  assert_int_equal(hcfg_parse_size("10Gix", &v), -EINVAL);
  assert_int_equal(hcfg_parse_size("99999999999Pi", &v), -EINVAL);
}

static void test_gpu_lists(void **state)
{
  int gpus[4];
  size_t n;

  (void)state;
  assert_int_equal(hcfg_parse_gpus("0,2, 3", gpus, 4, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(gpus[2], 3);
  assert_int_equal(hcfg_parse_gpus("", gpus, 4, &n), 0);
  assert_int_equal(n, 0);
  assert_int_equal(hcfg_parse_gpus(NULL, gpus, 4, &n), 0);
  assert_int_equal(hcfg_parse_gpus("0,,1", gpus, 4, &n), -EINVAL);
  assert_int_equal(hcfg_parse_gpus("0,", gpus, 4, &n), -EINVAL);
  assert_int_equal(hcfg_parse_gpus("a", gpus, 4, &n), -EINVAL);
  assert_int_equal(hcfg_parse_gpus("0,1,2,3,4", gpus, 4, &n), -EINVAL);
}

static void test_load(void **state)
{
  struct hook_config cfg;

  (void)state;
  setenv("RUNFLEET_GPUS", "1,2", 1);
  unsetenv("RUNFLEET_EXPECTED_GPUS");
  setenv("RUNFLEET_MIN_FREE_DISK", "10Gi", 1);
  setenv("RUNFLEET_NODE_NAME", "node-1", 1);
  setenv("RUNNER_WORKSPACE", "/w/_work/repo", 1);
  unsetenv("RUNFLEET_WORK_DIR");
  setenv("RUNFLEET_GIT_CACHE", "0", 1);
  setenv("GITHUB_RUN_ID", "77", 1);
  hcfg_load(&cfg);
  assert_int_equal(cfg.ngpus, 2);
  assert_int_equal(cfg.expected_gpus, 2); /* defaults to the list's size */
  assert_true(hcfg_gpu_runner(&cfg));
  assert_int_equal(cfg.min_free_disk, 10ULL << 30);
  assert_string_equal(cfg.node, "node-1");
  assert_string_equal(cfg.work_root, "/w/_work");
  assert_false(cfg.git_cache);
  assert_int_equal(cfg.run_id, 77);
  assert_int_equal(cfg.pre_job_timeout_s, HCFG_PRE_JOB_TIMEOUT_S);
  setenv("RUNFLEET_GPUS", "", 1);
  setenv("RUNFLEET_EXPECTED_GPUS", "0", 1);
  setenv("RUNFLEET_WORK_DIR", "/data/work", 1);
  hcfg_load(&cfg);
  assert_false(hcfg_gpu_runner(&cfg));
  assert_string_equal(cfg.work_root, "/data/work");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_gpu_lists),
      cmocka_unit_test(test_load),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
