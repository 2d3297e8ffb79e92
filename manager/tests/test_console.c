/* The status page's pure parts: quantiles of waits and the history ring
 * as the charts read it (oldest first, an hour at most). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "console.h"

static void test_quantile_nearest_rank(void **state)
{
  double v[] = {9, 1, 5, 3, 7, 2, 8, 4, 6, 10};
  double one[] = {42};

  (void)state;
  assert_true(console_quantile(v, 10, 0.5) == 5);
  assert_true(console_quantile(v, 10, 0.95) == 10);
  assert_true(console_quantile(v, 10, 0.1) == 1);
  assert_true(console_quantile(one, 1, 0.95) == 42);
  assert_true(console_quantile(NULL, 0, 0.5) == -1);
}

static void put(struct console_history *h, uint64_t at_ms, unsigned queued)
{
  struct console_sample *s = &h->s[(h->first + h->n) % CONSOLE_SAMPLES];

  if (h->n == CONSOLE_SAMPLES)
    h->first = (h->first + 1) % CONSOLE_SAMPLES;
  else
    h->n++;
  memset(s, 0, sizeof(*s));
  s->at_ms = at_ms;
  s->queued = queued;
  s->wait_p50 = queued % 2 ? -1 : 1.5;
  s->wait_p95 = -1;
}

static void test_history_oldest_first_after_wrap(void **state)
{
  struct console_history *h = calloc(1, sizeof(*h));
  json_t *doc, *samples;
  unsigned i;

  (void)state;
  assert_non_null(h);
  for (i = 0; i < CONSOLE_SAMPLES + 7; i++)
    put(h, 1000000 + (uint64_t)i * CONSOLE_SAMPLE_MS, i);
  doc = console_history_json(h);
  assert_non_null(doc);
  assert_int_equal(json_integer_value(json_object_get(doc, "interval_seconds")),
                   10);
  samples = json_object_get(doc, "samples");
  assert_int_equal(json_array_size(samples), CONSOLE_SAMPLES);
  /* The first seven fell out: the oldest left is the eighth. */
  assert_int_equal(
      json_integer_value(json_object_get(json_array_get(samples, 0), "queued")),
      7);
  assert_int_equal(json_integer_value(json_object_get(
                       json_array_get(samples, CONSOLE_SAMPLES - 1), "queued")),
                   CONSOLE_SAMPLES + 6);
  /* No job started in a sample's interval: null, not a made-up 0. */
  assert_true(
      json_is_null(json_object_get(json_array_get(samples, 0), "wait_p50")));
  assert_true(json_real_value(json_object_get(json_array_get(samples, 1),
                                              "wait_p50")) == 1.5);
  json_decref(doc);
  doc = console_history_json(NULL);
  assert_int_equal(json_array_size(json_object_get(doc, "samples")), 0);
  json_decref(doc);
  free(h);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quantile_nearest_rank),
      cmocka_unit_test(test_history_oldest_first_after_wrap),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
