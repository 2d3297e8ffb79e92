/* The dev server ETA: per node, the queue ahead first, strict order, and
 * "unknown" rather than a made-up number. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devserver_eta.h"

#define NOW 1000000000ull
#define MIN (60ull * 1000)
#define HOUR (60 * MIN)

static void test_free_node_starts_now(void **state)
{
  struct dev_eta_node n = {8, NULL, 0};
  struct dev_eta_request q = {8, 2 * HOUR};
  uint64_t at = 0;

  (void)state;
  assert_int_equal(dev_eta(&n, 1, &q, 1, NOW, &at), 0);
  assert_true(at == NOW);
}

/* The reference system's weakness: 4 + 4 free GPUs on two nodes are not
 * an 8-GPU machine. */
static void test_gpus_are_never_summed_across_nodes(void **state)
{
  struct dev_eta_node n[] = {{4, NULL, 0}, {4, NULL, 0}};
  struct dev_eta_request q = {8, HOUR};
  uint64_t at = 0;

  (void)state;
  assert_int_equal(dev_eta(n, 2, &q, 1, NOW, &at), 0);
  assert_true(at == DEV_ETA_UNKNOWN);
}

static void test_waits_for_the_holds_on_one_node(void **state)
{
  struct dev_eta_hold h[] = {{NOW + 20 * MIN, 2}, {NOW + 50 * MIN, 2}};
  struct dev_eta_hold other[] = {{NOW + 10 * MIN, 3}};
  struct dev_eta_node n[] = {{4, h, 2}, {5, other, 1}};
  struct dev_eta_request q = {8, HOUR};
  uint64_t at = 0;

  (void)state;
  /* Node 2 frees 3 at +10 min (8 in all) before node 1 reaches 8 at +50. */
  assert_int_equal(dev_eta(n, 2, &q, 1, NOW, &at), 0);
  assert_true(at == NOW + 10 * MIN);
  other[0].gpus = 2; /* now node 2 never gets past 7 */
  assert_int_equal(dev_eta(n, 2, &q, 1, NOW, &at), 0);
  assert_true(at == NOW + 50 * MIN);
}

/* The reference system's weakness: an ETA that ignores the queue ahead. */
static void test_the_queue_ahead_goes_first(void **state)
{
  struct dev_eta_node n = {8, NULL, 0};
  struct dev_eta_request q[] = {{8, 2 * HOUR}, {4, HOUR}, {4, HOUR}};
  uint64_t at[3];

  (void)state;
  assert_int_equal(dev_eta(&n, 1, q, 3, NOW, at), 0);
  assert_true(at[0] == NOW);
  assert_true(at[1] == NOW + 2 * HOUR);
  assert_true(at[2] == NOW + 2 * HOUR); /* beside the second */
}

/* Strict order: a small request behind a big one waits for it even when
 * another node could take it now (that is what keeps the head from
 * starving). */
static void test_no_one_overtakes_the_head(void **state)
{
  struct dev_eta_hold h[] = {{NOW + 30 * MIN, 8}};
  struct dev_eta_node n[] = {{0, h, 1}, {2, NULL, 0}};
  struct dev_eta_request q[] = {{8, HOUR}, {1, HOUR}};
  uint64_t at[2];

  (void)state;
  assert_int_equal(dev_eta(n, 2, q, 2, NOW, at), 0);
  assert_true(at[0] == NOW + 30 * MIN);
  assert_true(at[1] == NOW + 30 * MIN);
}

static void test_unknown_releases_make_it_unknown_only_in_the_way(void **state)
{
  struct dev_eta_hold unknown[] = {{DEV_ETA_UNKNOWN, 4}};
  struct dev_eta_node n[] = {{4, unknown, 1}};
  struct dev_eta_node two[] = {{4, unknown, 1}, {8, NULL, 0}};
  struct dev_eta_request q[] = {{8, HOUR}, {1, HOUR}};
  uint64_t at[2];

  (void)state;
  assert_int_equal(dev_eta(n, 1, q, 2, NOW, at), 0);
  assert_true(at[0] == DEV_ETA_UNKNOWN);
  assert_true(at[1] == DEV_ETA_UNKNOWN); /* it waits behind the head */
  assert_int_equal(dev_eta(two, 2, q, 2, NOW, at), 0);
  assert_true(at[0] == NOW);
  assert_true(at[1] == NOW); /* best fit: the 4 left on the first node */
}

static void test_overdue_holds_count_as_free(void **state)
{
  struct dev_eta_hold h[] = {{NOW - MIN, 4}};
  struct dev_eta_node n = {4, h, 1};
  struct dev_eta_request q = {8, HOUR};
  uint64_t at = 0;

  (void)state;
  assert_int_equal(dev_eta(&n, 1, &q, 1, NOW, &at), 0);
  assert_true(at == NOW);
}

/* Best fit, as capacity places: the small one takes the small gap and the
 * big one still fits now. */
static void test_best_fit_keeps_the_big_gap(void **state)
{
  struct dev_eta_node n[] = {{8, NULL, 0}, {2, NULL, 0}};
  struct dev_eta_request q[] = {{2, HOUR}, {8, HOUR}};
  uint64_t at[2];

  (void)state;
  assert_int_equal(dev_eta(n, 2, q, 2, NOW, at), 0);
  assert_true(at[0] == NOW);
  assert_true(at[1] == NOW);
}

static void test_limits(void **state)
{
  struct dev_eta_request q = {1, HOUR};
  uint64_t at;

  (void)state;
  assert_int_equal(dev_eta(NULL, DEV_ETA_MAX_NODES + 1, &q, 1, NOW, &at),
                   -EINVAL);
  assert_int_equal(dev_eta(NULL, 0, &q, 1, NOW, &at), 0);
  assert_true(at == DEV_ETA_UNKNOWN);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_free_node_starts_now),
      cmocka_unit_test(test_gpus_are_never_summed_across_nodes),
      cmocka_unit_test(test_waits_for_the_holds_on_one_node),
      cmocka_unit_test(test_the_queue_ahead_goes_first),
      cmocka_unit_test(test_no_one_overtakes_the_head),
      cmocka_unit_test(test_unknown_releases_make_it_unknown_only_in_the_way),
      cmocka_unit_test(test_overdue_holds_count_as_free),
      cmocka_unit_test(test_best_fit_keeps_the_big_gap),
      cmocka_unit_test(test_limits),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
