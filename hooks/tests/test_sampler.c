/* The sampler's state file and its aggregates. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampler.h"

static void test_round_trip(void **state)
{
  char dir[] = "/tmp/hook-sampler-XXXXXX", path[256], sub[128];
  struct sampler_state *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(sub, sizeof(sub), "%s/deeper/state", dir);
  assert_int_equal(sampler_state_path(sub, path, sizeof(path)), 0);
  a->pid = 4242;
  a->started_at = 1700000000.25;
  a->samples = 4;
  a->ngpus = 2;
  a->gpus[0].index = 2;
  snprintf(a->gpus[0].uuid, sizeof(a->gpus[0].uuid), "GPU-a");
  a->gpus[0].peak_memory_bytes = 80ULL << 30;
  a->gpus[0].utilization_sum = 400; /* 100% four times */
  a->gpus[1].index = 3;
  snprintf(a->gpus[1].uuid, sizeof(a->gpus[1].uuid), "GPU-b");
  a->gpus[1].peak_memory_bytes = 1ULL << 30;
  a->gpus[1].utilization_sum = 200; /* 50% four times */
  assert_int_equal(sampler_state_write(path, a), 0);
  assert_int_equal(sampler_state_read(path, b), 0);
  assert_int_equal(b->pid, 4242);
  assert_true(b->started_at > 1700000000.24 && b->started_at < 1700000000.26);
  assert_int_equal(b->samples, 4);
  assert_int_equal(b->ngpus, 2);
  assert_int_equal(b->gpus[1].index, 3);
  assert_string_equal(b->gpus[1].uuid, "GPU-b");
  assert_int_equal(sampler_peak_memory(b), 80ULL << 30);
  assert_true(sampler_mean_utilization(b) > 0.7499 &&
              sampler_mean_utilization(b) < 0.7501);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(sampler_state_read(path, b), -ENOENT);
  snprintf(sub, sizeof(sub), "%s/deeper/state", dir);
  assert_int_equal(rmdir(sub), 0);
  snprintf(sub, sizeof(sub), "%s/deeper", dir);
  assert_int_equal(rmdir(sub), 0);
  assert_int_equal(rmdir(dir), 0);
  free(a);
  free(b);
}

static void test_garbage_state(void **state)
{
  char path[] = "/tmp/hook-sampler-bad-XXXXXX";
  struct sampler_state st;
  int fd;

  (void)state;
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "{\"pid\":", 7), 7);
  close(fd);
  assert_int_equal(sampler_state_read(path, &st), -EINVAL);
  unlink(path);
}

static void test_no_samples(void **state)
{
  struct sampler_state st;

  (void)state;
  memset(&st, 0, sizeof(st));
  assert_true(sampler_mean_utilization(&st) == 0.0);
  assert_int_equal(sampler_peak_memory(&st), 0);
}

static void test_stop_refuses_other_process(void **state)
{
  (void)state;
  /* The state file's pid may be reused by then: only our sampler dies. */
  assert_int_equal(sampler_stop(getpid(), 100), -ESRCH);
  assert_int_equal(sampler_stop(1, 100), -EINVAL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_garbage_state),
      cmocka_unit_test(test_no_samples),
      cmocka_unit_test(test_stop_refuses_other_process),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
