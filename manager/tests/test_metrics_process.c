/* Process metrics from /proc: parsing of stat, /proc/stat's btime and
 * limits text as the kernel writes it, and one live reading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"
#include "metrics_process.h"

/* A command with spaces and parentheses, as prctl(PR_SET_NAME) allows:
 * fields are counted from the last ')'. utime 250 + stime 150 ticks,
 * starttime 1922132 ticks, vsize 3133440, rss 358 pages. */
static const char stat_line[] =
    "13040 (run (fleet) d) R 13038 13038 20574 0 -1 4194304 99 0 0 0 250 150 "
    "0 0 20 0 1 0 1922132 3133440 358 18446744073709551615 94434832044032 "
    "94434832063913 140733742634960 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";

static void test_stat_fields_after_the_last_paren(void **state)
{
  struct proc_sample s;

  (void)state;
  memset(&s, 0, sizeof(s));
  assert_int_equal(
      metrics_process_parse_stat(stat_line, 100, 4096, 1796200753, &s), 0);
  assert_true(s.cpu_seconds == 4.0);
  assert_true(s.start_time == 1796200753.0 + 19221.32);
  assert_true(s.virtual_bytes == 3133440.0);
  assert_true(s.resident_bytes == 358.0 * 4096);
}

static void test_stat_refuses_what_it_cannot_read(void **state)
{
  struct proc_sample s;

  (void)state;
  assert_int_equal(
      metrics_process_parse_stat("13040 cat R 1 2 3", 100, 4096, 0, &s),
      -EINVAL);
  assert_int_equal(
      metrics_process_parse_stat("13040 (cat) R 1 2", 100, 4096, 0, &s),
      -EINVAL);
  assert_int_equal(metrics_process_parse_stat(stat_line, 0, 4096, 0, &s),
                   -EINVAL);
}

static void test_btime_line_among_others(void **state)
{
  double b = 0;

  (void)state;
  assert_int_equal(metrics_process_parse_btime("cpu  1 2 3\nintr 5 6\n"
                                               "ctxt 99\nbtime 1796200753\n"
                                               "processes 20\n",
                                               &b),
                   0);
  assert_true(b == 1796200753.0);
  assert_int_equal(metrics_process_parse_btime("cpu 1\nbtimes 4\n", &b),
                   -EINVAL);
}

static void test_soft_limit_of_open_files(void **state)
{
  double v = 0;

  (void)state;
  assert_int_equal(
      metrics_process_parse_limits(
          "Limit                     Soft Limit           Hard Limit           "
          "Units     \n"
          "Max processes             94720                94720                "
          "processes \n"
          "Max open files            1024                 524288               "
          "files     \n",
          &v),
      0);
  assert_true(v == 1024.0);
  assert_int_equal(metrics_process_parse_limits(
                       "Max open files            unlimited            "
                       "unlimited            files     \n",
                       &v),
                   0);
  assert_true(v == -1.0);
  assert_int_equal(metrics_process_parse_limits("Max processes 5\n", &v),
                   -EINVAL);
}

/* The live reading agrees with what this process knows of itself. */
static void test_sync_reads_this_process(void **state)
{
  struct metrics *m = metrics_new();
  double fds;
  char *text;
  size_t len;

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_process_declare(m), 0);
  assert_int_equal(metrics_process_sync(m), 0);
  assert_true(metrics_value(m, "process_resident_memory_bytes", "") > 0);
  assert_true(metrics_value(m, "process_virtual_memory_bytes", "") >=
              metrics_value(m, "process_resident_memory_bytes", ""));
  assert_true(metrics_value(m, "process_max_fds", "") ==
                  (double)sysconf(_SC_OPEN_MAX) ||
              metrics_value(m, "process_max_fds", "") == -1);
  fds = metrics_value(m, "process_open_fds", "");
  assert_true(fds >= 3);
  assert_true(metrics_value(m, "process_start_time_seconds", "") > 1.5e9);
  assert_int_equal(metrics_process_sync(m), 0);
  text = metrics_render(m, &len);
  assert_non_null(text);
  assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
  assert_non_null(strstr(text, "\nprocess_open_fds "));
  free(text);
  metrics_destroy(m);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stat_fields_after_the_last_paren),
      cmocka_unit_test(test_stat_refuses_what_it_cannot_read),
      cmocka_unit_test(test_btime_line_among_others),
      cmocka_unit_test(test_soft_limit_of_open_files),
      cmocka_unit_test(test_sync_reads_this_process),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
