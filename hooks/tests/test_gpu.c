/* GPU health through the fake NVML (nvml_fake.c), whose path ctest passes
 * in RUNFLEET_TEST_NVML_FAKE. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "hook_config.h"

static const char *const fake_vars[] = {
    "FAKE_NVML_INIT",     "FAKE_NVML_COUNT", "FAKE_NVML_ECC",
    "FAKE_NVML_PENDING",  "FAKE_NVML_PROCS", "FAKE_NVML_TEMP",
    "FAKE_NVML_THROTTLE", "FAKE_NVML_UTIL",  "FAKE_NVML_MEM"};

static int setup(void **state)
{
  struct hook_config *cfg = calloc(1, sizeof(*cfg));
  size_t i;

  assert_non_null(cfg);
  for (i = 0; i < sizeof(fake_vars) / sizeof(fake_vars[0]); i++)
    unsetenv(fake_vars[i]);
  cfg->nvml_lib = getenv("RUNFLEET_TEST_NVML_FAKE");
  assert_non_null(cfg->nvml_lib);
  cfg->max_temp_c = 90;
  cfg->gpus[0] = 0;
  cfg->gpus[1] = 1;
  cfg->ngpus = 2;
  cfg->expected_gpus = 2;
  setenv("FAKE_NVML_COUNT", "2", 1);
  *state = cfg;
  return 0;
}

static int teardown(void **state)
{
  free(*state);
  return 0;
}

static void check(struct hook_config *cfg, struct gpu_health *h)
{
  assert_int_equal(gpu_check_health(cfg, getpid(), h), 0);
}

static void test_healthy(void **state)
{
  struct gpu_health h;

  check(*state, &h);
  assert_true(h.checked);
  assert_true(h.ok);
  assert_int_equal(h.nfailed, 0);
  assert_string_equal(h.message, "");
}

static void test_healthy_all_visible(void **state)
{
  struct hook_config *cfg = *state;
  struct gpu_health h;

  /* A container sees only its GPUs: no index list, just a count. */
  cfg->ngpus = 0;
  cfg->expected_gpus = 2;
  check(cfg, &h);
  assert_true(h.ok);
}

static void test_ecc(void **state)
{
  struct gpu_health h;

  setenv("FAKE_NVML_ECC", "1:3", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_ECC);
  assert_string_equal(gpu_reason_name(h.reason), "ecc");
  assert_int_equal(h.nfailed, 1);
  assert_int_equal(h.failed[0].index, 1);
  assert_string_equal(h.failed[0].uuid, "GPU-fake-0001-0000-0000-000000000000");
  assert_non_null(strstr(h.message, "GPU 1 (GPU-fake-0001-0000-0000-"
                                    "000000000000) has 3 uncorrectable ECC "
                                    "errors"));
}

static void test_retired_pages_pending(void **state)
{
  struct gpu_health h;

  setenv("FAKE_NVML_PENDING", "0", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_ECC);
  assert_int_equal(h.failed[0].index, 0);
  assert_non_null(strstr(h.message, "retired pages pending"));
}

static void test_missing_gpu_listed(void **state)
{
  struct hook_config *cfg = *state;
  struct gpu_health h;

  /* The runner was given GPUs 0 and 1, NVML sees one. */
  setenv("FAKE_NVML_COUNT", "1", 1);
  check(cfg, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_MISSING);
  assert_string_equal(gpu_reason_name(h.reason), "missing_gpu");
  assert_int_equal(h.nfailed, 1);
  assert_int_equal(h.failed[0].index, 1);
  assert_non_null(strstr(h.message, "GPU 1 is missing (1 GPUs visible)"));
}

static void test_missing_gpu_count(void **state)
{
  struct hook_config *cfg = *state;
  struct gpu_health h;

  cfg->ngpus = 0;
  cfg->expected_gpus = 4;
  check(cfg, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_MISSING);
  assert_non_null(strstr(h.message, "2 GPUs are visible, the pool promised 4"));
}

static void test_foreign_process(void **state)
{
  struct gpu_health h;

  /* pid 1 is not in the test's process tree. */
  setenv("FAKE_NVML_PROCS", "0:1", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_FOREIGN_PROCESS);
  assert_string_equal(gpu_reason_name(h.reason), "foreign_process");
  assert_int_equal(h.failed[0].index, 0);
  assert_non_null(strstr(h.message, "process 1,"));
}

static void test_own_process_is_fine(void **state)
{
  char procs[64];
  struct gpu_health h;

  /* A process of this runner's tree (here: the test itself) may use it. */
  snprintf(procs, sizeof(procs), "0:%ld", (long)getpid());
  setenv("FAKE_NVML_PROCS", procs, 1);
  check(*state, &h);
  assert_true(h.ok);
}

static void test_temperature(void **state)
{
  struct gpu_health h;

  setenv("FAKE_NVML_TEMP", "1:95", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_TEMPERATURE);
  assert_non_null(strstr(h.message, "is at 95 C, the limit is 90 C"));
}

static void test_clocks(void **state)
{
  struct gpu_health h;

  /* Power capping (0x4) is normal; HW slowdown (0x8) is not. */
  setenv("FAKE_NVML_THROTTLE", "0:0x4", 1);
  check(*state, &h);
  assert_true(h.ok);
  setenv("FAKE_NVML_THROTTLE", "0:0xc", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_CLOCKS);
  assert_non_null(strstr(h.message, "hw_slowdown"));
}

static void test_nvml_absent_cpu_runner(void **state)
{
  struct hook_config *cfg = *state;
  struct gpu_health h;

  cfg->ngpus = 0;
  cfg->expected_gpus = 0;
  cfg->nvml_lib = "/nonexistent/libnvidia-ml.so.1";
  check(cfg, &h);
  assert_false(h.checked);
  assert_true(h.ok);
}

static void test_nvml_absent_gpu_runner(void **state)
{
  struct hook_config *cfg = *state;
  struct gpu_health h;

  cfg->nvml_lib = "/nonexistent/libnvidia-ml.so.1";
  check(cfg, &h);
  assert_true(h.checked);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_NVML_UNAVAILABLE);
  assert_string_equal(gpu_reason_name(h.reason), "nvml_unavailable");
  assert_int_equal(h.nfailed, 0);
}

static void test_nvml_init_fails(void **state)
{
  struct gpu_health h;

  setenv("FAKE_NVML_INIT", "fail", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_NVML_UNAVAILABLE);
  assert_non_null(strstr(h.message, "Driver Not Loaded"));
}

static void test_several_failures(void **state)
{
  struct gpu_health h;

  /* The first failure names the reason; every failing GPU is listed. */
  setenv("FAKE_NVML_ECC", "0:1", 1);
  setenv("FAKE_NVML_TEMP", "0:99,1:99", 1);
  check(*state, &h);
  assert_false(h.ok);
  assert_int_equal(h.reason, GPU_ECC);
  assert_int_equal(h.nfailed, 2);
  assert_int_equal(h.failed[0].index, 0);
  assert_int_equal(h.failed[1].index, 1);
  assert_int_equal(h.failed[1].reason, GPU_TEMPERATURE);
}

static void test_usage(void **state)
{
  struct hook_config *cfg = *state;
  struct gpu_nvml *nvml = NULL;
  unsigned long long mem;
  unsigned util, count;
  char err[256];

  setenv("FAKE_NVML_UTIL", "1:10/20", 1);
  setenv("FAKE_NVML_MEM", "1:1000/2000", 1);
  assert_int_equal(gpu_nvml_open(cfg->nvml_lib, &nvml, err, sizeof(err)), 0);
  assert_int_equal(gpu_nvml_count(nvml, &count), 0);
  assert_int_equal(count, 2);
  assert_int_equal(gpu_nvml_usage(nvml, 1, &mem, &util), 0);
  assert_int_equal(mem, 1000);
  assert_int_equal(util, 10);
  assert_int_equal(gpu_nvml_usage(nvml, 1, &mem, &util), 0);
  assert_int_equal(mem, 2000);
  assert_int_equal(util, 20);
  assert_int_equal(gpu_nvml_usage(nvml, 5, &mem, &util), -EIO);
  gpu_nvml_close(nvml);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_healthy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_healthy_all_visible, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ecc, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retired_pages_pending, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_missing_gpu_listed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_gpu_count, setup, teardown),
      cmocka_unit_test_setup_teardown(test_foreign_process, setup, teardown),
      cmocka_unit_test_setup_teardown(test_own_process_is_fine, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_temperature, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clocks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nvml_absent_cpu_runner, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_nvml_absent_gpu_runner, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_nvml_init_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(test_several_failures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
