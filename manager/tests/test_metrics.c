/* Prometheus text exposition: exact output, escaping, type checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdio.h>

#include <cmocka.h>

#include "metrics.h"

static void assert_render(const struct metrics *m, const char *want)
{
  size_t len = 0;
  char *got = metrics_render(m, &len);

  assert_non_null(got);
  assert_string_equal(got, want);
  assert_int_equal(len, strlen(want));
  free(got);
}

static void test_counter_and_gauge_exact(void **state)
{
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_declare(m, "runfleet_webhooks_total",
                                   METRICS_COUNTER, "Webhooks received.", NULL,
                                   0),
                   0);
  assert_int_equal(metrics_declare(m, "runfleet_demand", METRICS_GAUGE,
                                   "Jobs waiting, per pool.", NULL, 0),
                   0);
  assert_int_equal(
      metrics_counter_add(m, "runfleet_webhooks_total", "event=\"job\"", 1), 0);
  assert_int_equal(
      metrics_counter_add(m, "runfleet_webhooks_total", "event=\"job\"", 2), 0);
  assert_int_equal(
      metrics_counter_add(m, "runfleet_webhooks_total", "event=\"ping\"", 1),
      0);
  assert_int_equal(metrics_gauge_set(m, "runfleet_demand", "pool=\"gpu\"", 2.5),
                   0);
  assert_int_equal(metrics_gauge_set(m, "runfleet_demand", "pool=\"cpu\"", 3),
                   0);
  /* Families by name, series by labels, both sorted. */
  assert_render(m, "# HELP runfleet_demand Jobs waiting, per pool.\n"
                   "# TYPE runfleet_demand gauge\n"
                   "runfleet_demand{pool=\"cpu\"} 3\n"
                   "runfleet_demand{pool=\"gpu\"} 2.5\n"
                   "# HELP runfleet_webhooks_total Webhooks received.\n"
                   "# TYPE runfleet_webhooks_total counter\n"
                   "runfleet_webhooks_total{event=\"job\"} 3\n"
                   "runfleet_webhooks_total{event=\"ping\"} 1\n");
  assert_true(metrics_value(m, "runfleet_webhooks_total", "event=\"job\"") ==
              3.0);
  assert_true(metrics_value(m, "runfleet_demand", "pool=\"none\"") == 0.0);
  assert_true(metrics_value(m, "nope", "") == 0.0);
  metrics_destroy(m);
}

static void test_histogram_exact(void **state)
{
  static const double buckets[] = {0.5, 1, 10};
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_declare(m, "runfleet_wait_seconds",
                                   METRICS_HISTOGRAM, "Queue wait.", buckets,
                                   3),
                   0);
  assert_int_equal(
      metrics_histogram_observe(m, "runfleet_wait_seconds", "", 0.25), 0);
  assert_int_equal(metrics_histogram_observe(m, "runfleet_wait_seconds", "", 1),
                   0);
  assert_int_equal(
      metrics_histogram_observe(m, "runfleet_wait_seconds", "", 100), 0);
  assert_int_equal(
      metrics_histogram_observe(m, "runfleet_wait_seconds", "pool=\"gpu\"", 5),
      0);
  assert_render(m, "# HELP runfleet_wait_seconds Queue wait.\n"
                   "# TYPE runfleet_wait_seconds histogram\n"
                   "runfleet_wait_seconds_bucket{le=\"0.5\"} 1\n"
                   "runfleet_wait_seconds_bucket{le=\"1\"} 2\n"
                   "runfleet_wait_seconds_bucket{le=\"10\"} 2\n"
                   "runfleet_wait_seconds_bucket{le=\"+Inf\"} 3\n"
                   "runfleet_wait_seconds_sum 101.25\n"
                   "runfleet_wait_seconds_count 3\n"
                   "runfleet_wait_seconds_bucket{pool=\"gpu\",le=\"0.5\"} 0\n"
                   "runfleet_wait_seconds_bucket{pool=\"gpu\",le=\"1\"} 0\n"
                   "runfleet_wait_seconds_bucket{pool=\"gpu\",le=\"10\"} 1\n"
                   "runfleet_wait_seconds_bucket{pool=\"gpu\",le=\"+Inf\"} 1\n"
                   "runfleet_wait_seconds_sum{pool=\"gpu\"} 5\n"
                   "runfleet_wait_seconds_count{pool=\"gpu\"} 1\n");
  assert_true(metrics_value(m, "runfleet_wait_seconds", "") == 3.0);
  /* "le" is reserved for the buckets. */
  assert_int_equal(
      metrics_histogram_observe(m, "runfleet_wait_seconds", "le=\"1\"", 1), -1);
  assert_int_equal(
      metrics_histogram_observe(m, "runfleet_wait_seconds", "", NAN), -1);
  metrics_destroy(m);
}

static void test_bad_buckets_refused(void **state)
{
  static const double unsorted[] = {1, 0.5};
  static const double inf[] = {1, INFINITY};
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_declare(m, "h1", METRICS_HISTOGRAM, "", unsorted, 2),
                   -1);
  assert_int_equal(metrics_declare(m, "h2", METRICS_HISTOGRAM, "", inf, 2), -1);
  assert_int_equal(metrics_declare(m, "h3", METRICS_HISTOGRAM, "", NULL, 2),
                   -1);
  /* No buckets at all still gives +Inf, _sum and _count. */
  assert_int_equal(metrics_declare(m, "h4", METRICS_HISTOGRAM, "", NULL, 0), 0);
  assert_int_equal(metrics_histogram_observe(m, "h4", "", 2), 0);
  assert_render(m, "# HELP h4 \n"
                   "# TYPE h4 histogram\n"
                   "h4_bucket{le=\"+Inf\"} 1\n"
                   "h4_sum 2\n"
                   "h4_count 1\n");
  metrics_destroy(m);
}

static void test_escaping(void **state)
{
  struct metrics *m = metrics_new();
  char esc[64];
  char labels[128];

  (void)state;
  assert_non_null(m);
  assert_string_equal(metrics_escape("a\\b\"c\nd", esc, sizeof(esc)),
                      "a\\\\b\\\"c\\nd");
  /* Truncation never leaves half an escape sequence. */
  assert_string_equal(metrics_escape("ab\"", esc, 4), "ab");
  assert_string_equal(metrics_escape("abcdef", esc, 4), "abc");
  assert_int_equal(metrics_declare(m, "runfleet_info", METRICS_GAUGE,
                                   "Help with \\ and\nnewline.", NULL, 0),
                   0);
  metrics_escape("acme/\"w\"\n", esc, sizeof(esc));
  snprintf(labels, sizeof(labels), "repo=\"%s\"", esc);
  assert_int_equal(metrics_gauge_set(m, "runfleet_info", labels, 1), 0);
  assert_render(m, "# HELP runfleet_info Help with \\\\ and\\nnewline.\n"
                   "# TYPE runfleet_info gauge\n"
                   "runfleet_info{repo=\"acme/\\\"w\\\"\\n\"} 1\n");
  metrics_destroy(m);
}

static void test_wrong_type_and_bad_input(void **state)
{
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_declare(m, "c_total", METRICS_COUNTER, "", NULL, 0),
                   0);
  assert_int_equal(metrics_declare(m, "g", METRICS_GAUGE, "", NULL, 0), 0);
  /* Same name, other type; the same type again is fine. */
  assert_int_equal(metrics_declare(m, "c_total", METRICS_GAUGE, "", NULL, 0),
                   -1);
  assert_int_equal(metrics_declare(m, "c_total", METRICS_COUNTER, "", NULL, 0),
                   0);
  assert_int_equal(metrics_gauge_set(m, "c_total", "", 1), -1);
  assert_int_equal(metrics_counter_add(m, "g", "", 1), -1);
  assert_int_equal(metrics_histogram_observe(m, "g", "", 1), -1);
  assert_int_equal(metrics_counter_add(m, "undeclared", "", 1), -1);
  assert_int_equal(metrics_counter_add(m, "c_total", "", -1), -1);
  /* Names: Prometheus rules. */
  assert_int_equal(metrics_declare(m, "9bad", METRICS_GAUGE, "", NULL, 0), -1);
  assert_int_equal(metrics_declare(m, "bad-name", METRICS_GAUGE, "", NULL, 0),
                   -1);
  assert_int_equal(metrics_declare(m, "", METRICS_GAUGE, "", NULL, 0), -1);
  assert_int_equal(metrics_declare(m, NULL, METRICS_GAUGE, "", NULL, 0), -1);
  assert_int_equal(metrics_declare(m, "ns:sub_x9", METRICS_GAUGE, "", NULL, 0),
                   0);
  /* Malformed label strings. */
  assert_int_equal(metrics_gauge_set(m, "g", "pool=gpu", 1), -1);
  assert_int_equal(metrics_gauge_set(m, "g", "pool=\"gpu", 1), -1);
  assert_int_equal(metrics_gauge_set(m, "g", "a=\"1\",a=\"2\"", 1), -1);
  assert_int_equal(metrics_gauge_set(m, "g", "1a=\"x\"", 1), -1);
  assert_int_equal(metrics_gauge_set(m, "g", "a=\"x\"b=\"y\"", 1), -1);
  assert_int_equal(metrics_gauge_set(m, "g", "a=\"bad\\escape\"", 1), -1);
  assert_int_equal(metrics_gauge_set(m, "g", "a=\"x\",", 1), 0);
  assert_true(metrics_value(m, "g", "a=\"x\"") == 1.0);
  metrics_destroy(m);
  metrics_destroy(NULL);
}

static void test_label_order_is_one_series(void **state)
{
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_declare(m, "g", METRICS_GAUGE, "G.", NULL, 0), 0);
  assert_int_equal(metrics_gauge_set(m, "g", "state=\"idle\",pool=\"a\"", 1),
                   0);
  assert_int_equal(metrics_gauge_set(m, "g", "pool=\"a\",state=\"idle\"", 4),
                   0);
  assert_render(m, "# HELP g G.\n"
                   "# TYPE g gauge\n"
                   "g{pool=\"a\",state=\"idle\"} 4\n");
  metrics_destroy(m);
}

static void test_gauge_reset(void **state)
{
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_int_equal(metrics_declare(m, "g", METRICS_GAUGE, "G.", NULL, 0), 0);
  assert_int_equal(metrics_declare(m, "c", METRICS_COUNTER, "C.", NULL, 0), 0);
  assert_int_equal(metrics_gauge_set(m, "g", "pool=\"old\"", 1), 0);
  assert_int_equal(metrics_counter_add(m, "c", "", 1), 0);
  metrics_gauge_reset(m, "g");
  /* Resetting a counter is not a gauge reset: nothing happens. */
  metrics_gauge_reset(m, "c");
  metrics_gauge_reset(m, "missing");
  assert_int_equal(metrics_gauge_set(m, "g", "pool=\"new\"", 2), 0);
  assert_render(m, "# HELP c C.\n"
                   "# TYPE c counter\n"
                   "c 1\n"
                   "# HELP g G.\n"
                   "# TYPE g gauge\n"
                   "g{pool=\"new\"} 2\n");
  metrics_destroy(m);
}

static void test_value_format(void **state)
{
  char out[32];

  (void)state;
  assert_string_equal(metrics_format_value(0, out, sizeof(out)), "0");
  assert_string_equal(metrics_format_value(-0.0, out, sizeof(out)), "0");
  assert_string_equal(metrics_format_value(1e6, out, sizeof(out)), "1000000");
  assert_string_equal(metrics_format_value(-42, out, sizeof(out)), "-42");
  assert_string_equal(metrics_format_value(0.1, out, sizeof(out)), "0.1");
  assert_string_equal(metrics_format_value(0.005, out, sizeof(out)), "0.005");
  assert_string_equal(metrics_format_value(2.5e-7, out, sizeof(out)),
                      "2.5e-07");
  assert_string_equal(metrics_format_value(1.0 / 3, out, sizeof(out)),
                      "0.3333333333333333");
  assert_string_equal(metrics_format_value(INFINITY, out, sizeof(out)), "+Inf");
  assert_string_equal(metrics_format_value(-INFINITY, out, sizeof(out)),
                      "-Inf");
  assert_string_equal(metrics_format_value(NAN, out, sizeof(out)), "NaN");
  assert_string_equal(metrics_format_value(1e20, out, sizeof(out)), "1e+20");
}

static void test_empty_registry(void **state)
{
  struct metrics *m = metrics_new();

  (void)state;
  assert_non_null(m);
  assert_render(m, "");
  assert_int_equal(metrics_declare(m, "g", METRICS_GAUGE, "G.", NULL, 0), 0);
  /* A family with no series still says what it is. */
  assert_render(m, "# HELP g G.\n# TYPE g gauge\n");
  metrics_destroy(m);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge_exact),
      cmocka_unit_test(test_histogram_exact),
      cmocka_unit_test(test_bad_buckets_refused),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_wrong_type_and_bad_input),
      cmocka_unit_test(test_label_order_is_one_series),
      cmocka_unit_test(test_gauge_reset),
      cmocka_unit_test(test_value_format),
      cmocka_unit_test(test_empty_registry),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
