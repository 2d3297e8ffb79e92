/* capacity: a request fits only where one node can take all of it; holds
 * are taken once, on one node, and released; health takes units out. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "capacity.h"

#define GIB (1024ull * 1024 * 1024)

static const struct cap_label gpu_group[] = {
    {"runfleet.dev/node-group", "gpu"}};

static void add_node(struct capacity *c, const char *source, const char *name,
                     const int *gpus, size_t ngpus, unsigned cpu_milli,
                     uint64_t memory)
{
  struct cap_node_desc d;

  memset(&d, 0, sizeof(d));
  d.source = source;
  d.name = name;
  d.gpus = gpus;
  d.ngpus = ngpus;
  d.cpu_milli = cpu_milli;
  d.memory = memory;
  if (strcmp(source, "gpu") == 0) {
    d.labels = gpu_group;
    d.nlabels = 1;
  }
  assert_int_equal(capacity_node_set(c, &d), 0);
}

static struct cap_request req_of(unsigned gpus, unsigned cpu_milli,
                                 uint64_t memory)
{
  struct cap_request r;

  memset(&r, 0, sizeof(r));
  r.gpus = gpus;
  r.cpu_milli = cpu_milli;
  r.memory = memory;
  return r;
}

/* Two nodes with one free GPU each: three GPUs free in all, yet a 2-GPU
 * runner fits neither. */
static void test_no_sum_across_nodes(void **state)
{
  struct capacity *c = capacity_new();
  static const int two[] = {0, 1};
  struct cap_request one = req_of(1, 1000, 0), pair = req_of(2, 1000, 0);
  struct cap_placement p;
  struct cap_totals t;

  (void)state;
  add_node(c, "gpu", "node-a", two, 2, 8000, 0);
  add_node(c, "gpu", "node-b", two, 2, 8000, 0);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(p.node, "node-a");
  /* Best fit: the second 1-GPU runner goes where the first one is, and
   * node-b stays whole for a 2-GPU runner. */
  assert_int_equal(capacity_hold(c, "r2", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(p.node, "node-a");
  assert_int_equal(capacity_hold(c, "r3", CAP_HOLDER_RUNNER, &pair, &p), 0);
  assert_string_equal(p.node, "node-b");
  assert_int_equal(capacity_release(c, "r1"), 0);
  assert_int_equal(capacity_release(c, "r3"), 0);
  assert_int_equal(capacity_hold(c, "r4", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(p.node, "node-a"); /* node-a has one free: best fit */
  /* node-a is full: the next one goes to node-b, and releasing r2 leaves
   * one free GPU on each node. */
  assert_int_equal(capacity_hold(c, "r5", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(p.node, "node-b");
  assert_int_equal(capacity_release(c, "r2"), 0);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_free, 2); /* one on each node */
  assert_int_equal(capacity_fits(c, &pair), 0);
  assert_int_equal(capacity_hold(c, "r6", CAP_HOLDER_RUNNER, &pair, &p),
                   -ENOSPC);
  assert_int_equal(capacity_fits(c, &one), 1);
  capacity_destroy(c);
}

static void test_hold_once_and_release(void **state)
{
  struct capacity *c = capacity_new();
  static const int gpus[] = {3, 1, 2, 0};
  struct cap_request r = req_of(2, 2000, 4 * GIB);
  struct cap_placement p;
  struct cap_totals t;

  (void)state;
  add_node(c, "local", "host", gpus, 4, 4000, 16 * GIB);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &r, &p), 0);
  /* The lowest indices, in order, whatever order the node listed. */
  assert_int_equal(p.ngpus, 2);
  assert_int_equal(p.gpus[0], 0);
  assert_int_equal(p.gpus[1], 1);
  assert_int_equal(p.memory, 4 * GIB);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &r, &p), -EEXIST);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_held, 2);
  assert_int_equal(t.cpu_milli_held, 2000);
  assert_int_equal(t.holds, 1);
  assert_int_equal(capacity_hold(c, "r2", CAP_HOLDER_RUNNER, &r, &p), 0);
  assert_int_equal(p.gpus[0], 2);
  /* CPU is used up even though memory is not. */
  assert_int_equal(capacity_fits(c, &(struct cap_request){.cpu_milli = 1000}),
                   0);
  assert_non_null(capacity_hold_find(c, "r2"));
  assert_int_equal(capacity_release(c, "r2"), 0);
  assert_null(capacity_hold_find(c, "r2"));
  assert_int_equal(capacity_release(c, "r2"), -ENOENT);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_held, 2);
  assert_int_equal(t.cpu_milli_held, 2000);
  assert_int_equal(t.memory_held, 4 * GIB);
  assert_int_equal(capacity_release(c, "r1"), 0);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_held + t.cpu_milli_held + t.holds, 0);
  assert_int_equal(t.memory_held, 0);
  capacity_destroy(c);
}

/* Memory not known on a node (0) does not limit it; known memory does. */
static void test_memory(void **state)
{
  struct capacity *c = capacity_new();
  struct cap_request big = req_of(0, 1000, 8 * GIB);
  struct cap_placement p;

  (void)state;
  add_node(c, "local", "unknown", NULL, 0, 1000, 0);
  assert_int_equal(capacity_fits(c, &big), 1);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &big, &p), 0);
  assert_int_equal(p.memory, 0);
  assert_int_equal(capacity_release(c, "r1"), 0);
  add_node(c, "local", "unknown", NULL, 0, 4000, 12 * GIB);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &big, &p), 0);
  assert_int_equal(capacity_fits(c, &big), 0);
  assert_int_equal(capacity_release(c, "r1"), 0);
  assert_int_equal(capacity_fits(c, &big), 1);
  capacity_destroy(c);
}

static void test_unhealthy_gpu_leaves_capacity(void **state)
{
  struct capacity *c = capacity_new();
  static const int gpus[] = {0, 1};
  struct cap_request one = req_of(1, 0, 0), two = req_of(2, 0, 0);
  struct cap_placement p;
  struct cap_totals t;

  (void)state;
  add_node(c, "local", "host", gpus, 2, 8000, 0);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(p.gpus[0], 0);
  /* The held GPU fails its check: it stays held until released, and then
   * it is not free. */
  assert_int_equal(capacity_gpu_set_health(c, "host", 0, 0), 0);
  assert_int_equal(capacity_gpu_set_health(c, "host", 7, 0), -ENOENT);
  assert_int_equal(capacity_gpu_set_health(c, "nowhere", 0, 0), -ENOENT);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_held, 1);
  assert_int_equal(t.gpus_unhealthy, 1);
  assert_int_equal(t.gpus_free, 1);
  assert_int_equal(capacity_release(c, "r1"), 0);
  assert_int_equal(capacity_fits(c, &two), 0);
  assert_int_equal(capacity_hold(c, "r2", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(p.gpus[0], 1);
  assert_int_equal(capacity_fits(c, &one), 0);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_free, 0);
  capacity_destroy(c);
}

static void test_node_ready_and_removed(void **state)
{
  struct capacity *c = capacity_new();
  static const int gpus[] = {0, 1, 2, 3};
  struct cap_request one = req_of(1, 1000, 0);
  struct cap_placement p;
  struct cap_totals t;

  (void)state;
  add_node(c, "gpu", "n1", gpus, 4, 8000, 0);
  add_node(c, "gpu", "n2", gpus, 4, 8000, 0);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(p.node, "n1");
  assert_int_equal(capacity_node_set_ready(c, "n2", 0), 0);
  assert_int_equal(capacity_node_remove(c, "n1"), 0);
  assert_int_equal(capacity_node_remove(c, "n1"), -ENOENT);
  /* Neither node takes a hold now; the hold on the removed node stays. */
  assert_int_equal(capacity_fits(c, &one), 0);
  assert_non_null(capacity_hold_find(c, "r1"));
  assert_int_equal(capacity_nnodes(c), 2);
  capacity_totals(c, &t);
  assert_int_equal(t.nodes, 1);
  assert_int_equal(t.nodes_ready, 0);
  assert_int_equal(capacity_node_set_ready(c, "n2", 1), 0);
  assert_int_equal(capacity_hold(c, "r2", CAP_HOLDER_DEVSERVER, &one, &p), 0);
  assert_string_equal(p.node, "n2");
  /* The last hold on the removed node goes, and with it the node; the
   * hold on the node that moved into its slot still releases right. */
  assert_int_equal(capacity_release(c, "r1"), 0);
  assert_int_equal(capacity_nnodes(c), 1);
  assert_string_equal(capacity_hold_find(c, "r2")->node, "n2");
  assert_int_equal(capacity_release(c, "r2"), 0);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_free, 4);
  assert_int_equal(t.holds, 0);
  capacity_destroy(c);
}

/* A node update keeps holds and health of the GPUs that stay; a held GPU
 * that disappeared stays booked (as unhealthy) until released. */
static void test_node_update_keeps_holds(void **state)
{
  struct capacity *c = capacity_new();
  static const int four[] = {0, 1, 2, 3}, three[] = {1, 2, 3};
  struct cap_request two = req_of(2, 0, 0);
  struct cap_placement p;
  struct cap_totals t;

  (void)state;
  add_node(c, "gpu", "n1", four, 4, 4000, 0);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &two, &p), 0);
  assert_int_equal(capacity_gpu_set_health(c, "n1", 3, 0), 0);
  add_node(c, "gpu", "n1", three, 3, 4000, 0);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_total, 4); /* 1-3 and the held, vanished 0 */
  assert_int_equal(t.gpus_held, 2);
  assert_int_equal(t.gpus_unhealthy, 2); /* 0 (gone) and 3 */
  assert_int_equal(t.gpus_free, 1);      /* 2 */
  assert_int_equal(capacity_release(c, "r1"), 0);
  add_node(c, "gpu", "n1", three, 3, 4000, 0);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_total, 3);
  assert_int_equal(t.gpus_free, 2);
  capacity_destroy(c);
}

static void test_selector_and_block_keys(void **state)
{
  struct capacity *c = capacity_new();
  static const int eight[] = {0, 1, 2, 3, 4, 5, 6, 7};
  struct cap_request gpu = req_of(1, 1000, 0), cpu = req_of(0, 1000, 0);
  struct cap_placement p;

  (void)state;
  add_node(c, "cpu", "c1", NULL, 0, 16000, 0);
  add_node(c, "gpu", "g1", eight, 8, 96000, 0);
  gpu.selector = gpu_group;
  gpu.nselector = 1;
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &gpu, &p), 0);
  assert_string_equal(p.node, "g1");
  assert_string_equal(p.source, "gpu");
  /* A CPU request with no selector goes where it fits best: the node with
   * no GPUs (fewest free) keeps the GPU node's CPU for GPU runners. */
  assert_int_equal(capacity_hold(c, "r2", CAP_HOLDER_RUNNER, &cpu, &p), 0);
  assert_string_equal(p.node, "c1");
  assert_int_not_equal(capacity_block_key(c, &gpu),
                       capacity_block_key(c, &cpu));
  assert_true(capacity_block_key(c, &gpu) < CAP_MAX_BLOCK_KEYS);
  {
    static const struct cap_label nowhere[] = {{"zone", "moon"}};
    struct cap_request r = gpu;
    r.selector = nowhere;
    assert_int_equal(capacity_fits(c, &r), 0);
  }
  capacity_destroy(c);
}

static void test_hold_at_adopts(void **state)
{
  struct capacity *c = capacity_new();
  static const int gpus[] = {0, 1, 2, 3};
  struct cap_placement where, p;
  struct cap_request one = req_of(1, 0, 0);

  (void)state;
  add_node(c, "local", "host", gpus, 4, 4000, 0);
  memset(&where, 0, sizeof(where));
  snprintf(where.node, sizeof(where.node), "host");
  where.gpus[0] = 0;
  where.gpus[1] = 2;
  where.ngpus = 2;
  where.cpu_milli = 1000;
  assert_int_equal(capacity_hold_at(c, "old", CAP_HOLDER_RUNNER, &where), 0);
  assert_int_equal(capacity_hold_at(c, "old2", CAP_HOLDER_RUNNER, &where),
                   -EBUSY);
  where.gpus[0] = 9;
  where.ngpus = 1;
  assert_int_equal(capacity_hold_at(c, "old3", CAP_HOLDER_RUNNER, &where),
                   -ENOENT);
  assert_int_equal(capacity_hold(c, "new", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(p.gpus[0], 1);
  {
    struct cap_gpu_view v[8];
    const char *name, *source;
    int ready;
    size_t n;
    assert_int_equal(capacity_node_view(c, 0, &name, &source, &ready, v, 8, &n),
                     0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].holder, "old");
    assert_string_equal(v[1].holder, "new");
    assert_string_equal(v[2].holder, "old");
    assert_null(v[3].holder);
    assert_int_equal(capacity_node_view(c, 1, &name, &source, &ready, v, 8, &n),
                     -ENOENT);
  }
  capacity_destroy(c);
}

static void test_bad_descriptions(void **state)
{
  struct capacity *c = capacity_new();
  static const int dup[] = {1, 1}, neg[] = {-1};
  struct cap_node_desc d;

  (void)state;
  memset(&d, 0, sizeof(d));
  d.source = "local";
  assert_int_equal(capacity_node_set(c, &d), -EINVAL); /* no name */
  d.name = "host";
  d.gpus = dup;
  d.ngpus = 2;
  assert_int_equal(capacity_node_set(c, &d), -EINVAL);
  d.gpus = neg;
  d.ngpus = 1;
  assert_int_equal(capacity_node_set(c, &d), -EINVAL);
  assert_int_equal(capacity_nnodes(c), 0);
  assert_int_equal(capacity_hold(c, "", CAP_HOLDER_RUNNER,
                                 &(struct cap_request){.gpus = 0}, NULL),
                   -EINVAL);
  capacity_destroy(c);
}

static void test_request_for_pool(void **state)
{
  struct cfg_pool pool;
  struct cfg_kv sel[] = {{"runfleet.dev/node-group", "gpu-p4d"}};
  struct cap_label labels[CAP_MAX_SELECTOR];
  struct cap_request r;

  (void)state;
  memset(&pool, 0, sizeof(pool));
  pool.gpus = 2;
  pool.cpus = 4;
  pool.memory_bytes = 3 * GIB;
  pool.node_selector = sel;
  pool.nnode_selector = 1;
  capacity_request_for_pool(&pool, &r, labels);
  assert_int_equal(r.gpus, 2);
  assert_int_equal(r.cpu_milli, 4000);
  assert_int_equal(r.memory, 3 * GIB);
  assert_int_equal(r.nselector, 1);
  assert_string_equal(r.selector[0].value, "gpu-p4d");
}

/* A dev server of 8 GPUs never fits two nodes of 4 free GPUs each, and
 * cannot claim either: neither could ever take it. */
static void test_devserver_on_one_node_only(void **state)
{
  struct capacity *c = capacity_new();
  static const int four[] = {0, 1, 2, 3};
  struct cap_request eight = req_of(8, 0, 0);
  struct cap_placement p;
  char node[64];

  (void)state;
  add_node(c, "gpu", "n1", four, 4, 8000, 0);
  add_node(c, "gpu", "n2", four, 4, 8000, 0);
  assert_int_equal(capacity_fits_for(c, "dev1", &eight), 0);
  assert_int_equal(capacity_hold(c, "dev1", CAP_HOLDER_DEVSERVER, &eight, &p),
                   -ENOSPC);
  assert_int_equal(capacity_claim(c, "dev1", &eight, node, sizeof(node)),
                   -ENOSPC);
  assert_int_equal(capacity_unclaim(c, "dev1"), -ENOENT);
  capacity_destroy(c);
}

/* The head of a dev server queue claims the node that drains first; no
 * new runner takes the claimed GPUs while the ones running finish, then
 * the dev server's hold takes them and the claim is gone. */
static void test_claim_for_the_queue_head(void **state)
{
  struct capacity *c = capacity_new();
  static const int four[] = {0, 1, 2, 3};
  struct cap_request one = req_of(1, 0, 0), four_gpus = req_of(4, 0, 0);
  struct cap_placement p;
  struct cap_totals t;
  char node[64];

  (void)state;
  add_node(c, "gpu", "n1", four, 4, 8000, 0);
  add_node(c, "gpu", "n2", four, 4, 8000, 0);
  /* Three runners on n1 (best fit packs them), two on n2. */
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(capacity_hold(c, "r2", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(capacity_hold(c, "r3", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(capacity_hold(c, "r4", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(capacity_hold(c, "r5", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(capacity_hold_find(c, "r5")->node, "n2");
  assert_int_equal(capacity_fits_for(c, "dev1", &four_gpus), 0);
  /* n2 has the most free GPUs (3): it drains first. */
  assert_int_equal(capacity_claim(c, "dev1", &four_gpus, node, sizeof(node)),
                   0);
  assert_string_equal(node, "n2");
  /* No new runner on n2's free GPUs; n1 still takes none (it is full). */
  assert_int_equal(capacity_fits(c, &one), 0);
  assert_int_equal(capacity_hold(c, "r6", CAP_HOLDER_RUNNER, &one, &p),
                   -ENOSPC);
  /* A runner leaving n1 frees a GPU there that CI may use. */
  assert_int_equal(capacity_release(c, "r1"), 0);
  assert_int_equal(capacity_hold(c, "r6", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_string_equal(p.node, "n1");
  /* The runner on n2 ends: the claimant fits, and only it. */
  assert_int_equal(capacity_release(c, "r5"), 0);
  assert_int_equal(capacity_fits(c, &one), 0);
  assert_int_equal(capacity_fits_for(c, "dev1", &four_gpus), 1);
  assert_int_equal(
      capacity_hold(c, "dev1", CAP_HOLDER_DEVSERVER, &four_gpus, &p), 0);
  assert_string_equal(p.node, "n2");
  assert_int_equal(p.ngpus, 4);
  assert_int_equal(capacity_unclaim(c, "dev1"), -ENOENT);
  assert_int_equal(capacity_release(c, "dev1"), 0);
  assert_int_equal(capacity_fits(c, &one), 1);
  capacity_totals(c, &t);
  assert_int_equal(t.gpus_free, 4);
  capacity_destroy(c);
}

/* Claiming again keeps the node while it stays best; a node's claim
 * belongs to one holder; a removed node with no holds goes at once, its
 * claim with it (the claimant claims elsewhere on its next try). */
static void test_claim_is_one_per_node(void **state)
{
  struct capacity *c = capacity_new();
  static const int two[] = {0, 1};
  struct cap_request two_gpus = req_of(2, 0, 0), one = req_of(1, 0, 0);
  struct cap_placement p;
  char node[64];

  (void)state;
  add_node(c, "gpu", "n1", two, 2, 8000, 0);
  assert_int_equal(capacity_hold(c, "r1", CAP_HOLDER_RUNNER, &one, &p), 0);
  assert_int_equal(capacity_claim(c, "dev1", &two_gpus, node, sizeof(node)), 0);
  assert_int_equal(capacity_claim(c, "dev1", &two_gpus, node, sizeof(node)), 0);
  assert_int_equal(capacity_claim(c, "dev2", &two_gpus, node, sizeof(node)),
                   -ENOSPC);
  assert_int_equal(capacity_claim(c, "", &two_gpus, node, sizeof(node)),
                   -EINVAL);
  assert_int_equal(capacity_release(c, "r1"), 0);
  assert_int_equal(capacity_node_remove(c, "n1"), 0);
  assert_int_equal(capacity_nnodes(c), 0);
  assert_int_equal(capacity_unclaim(c, "dev1"), -ENOENT);
  capacity_destroy(c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_sum_across_nodes),
      cmocka_unit_test(test_hold_once_and_release),
      cmocka_unit_test(test_memory),
      cmocka_unit_test(test_unhealthy_gpu_leaves_capacity),
      cmocka_unit_test(test_node_ready_and_removed),
      cmocka_unit_test(test_node_update_keeps_holds),
      cmocka_unit_test(test_selector_and_block_keys),
      cmocka_unit_test(test_hold_at_adopts),
      cmocka_unit_test(test_bad_descriptions),
      cmocka_unit_test(test_request_for_pool),
      cmocka_unit_test(test_devserver_on_one_node_only),
      cmocka_unit_test(test_claim_for_the_queue_head),
      cmocka_unit_test(test_claim_is_one_per_node),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
