/* recovery: which deliveries are redelivered, and the file store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gh_recovery.h"
#include "recovery.h"

static struct gh_delivery dv(int64_t id, const char *guid, int code,
                             const char *event, int64_t inst)
{
  struct gh_delivery d;

  memset(&d, 0, sizeof(d));
  d.id = id;
  snprintf(d.guid, sizeof(d.guid), "%s", guid);
  d.status_code = code;
  snprintf(d.event, sizeof(d.event), "%s", event);
  d.installation_id = inst;
  return d;
}

static void test_pick_redeliveries(void **state)
{
  /* Newest first, as the list comes. */
  struct gh_delivery items[] = {
      dv(10, "a", 200, "workflow_job", 7), /* a redelivery that worked */
      dv(9, "b", 0, "workflow_job", 7),    /* b failed twice: once */
      dv(8, "c", 503, "workflow_job", 7),  /* c failed */
      dv(7, "b", 0, "workflow_job", 7),
      dv(6, "a", 0, "workflow_job", 7),   /* a's success is later */
      dv(5, "d", 0, "ping", 0),           /* not a job */
      dv(4, "e", 0, "workflow_job", 8),   /* another installation's */
      dv(3, "f", 202, "workflow_job", 7), /* 2xx is a success */
      dv(2, "g", 0, "workflow_job", 0),   /* no installation named */
  };
  int64_t ids[16];
  size_t n;

  (void)state;
  n = recovery_pick_redeliveries(items, 9, 7, ids, 16);
  assert_int_equal(n, 3);
  assert_int_equal(ids[0], 9);
  assert_int_equal(ids[1], 8);
  assert_int_equal(ids[2], 2);
  /* Any installation when none is configured. */
  n = recovery_pick_redeliveries(items, 9, 0, ids, 16);
  assert_int_equal(n, 4);
  assert_int_equal(ids[2], 4);
  /* The output is bounded. */
  assert_int_equal(recovery_pick_redeliveries(items, 9, 7, ids, 1), 1);
  assert_int_equal(recovery_pick_redeliveries(items, 0, 7, ids, 16), 0);
}

static void test_dir_store(void **state)
{
  char dir[] = "/tmp/runfleet-rec-XXXXXX";
  char buf[32], path[128];
  struct recovery_store st;

  (void)state;
  assert_non_null(mkdtemp(dir));
  assert_int_equal(recovery_dir_store(&st, dir), 0);
  assert_int_equal(st.get(st.ctx, RECOVERY_KEY_CURSOR, buf, sizeof(buf)),
                   -ENOENT);
  assert_int_equal(st.put(st.ctx, RECOVERY_KEY_CURSOR, "80000001234"), 0);
  assert_int_equal(st.get(st.ctx, RECOVERY_KEY_CURSOR, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "80000001234");
  assert_int_equal(st.put(st.ctx, RECOVERY_KEY_CURSOR, "9"), 0);
  assert_int_equal(st.get(st.ctx, RECOVERY_KEY_CURSOR, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "9");
  /* Keys are names, never paths. */
  assert_int_equal(st.put(st.ctx, "../x", "1"), -EINVAL);
  assert_int_equal(st.get(st.ctx, "a/b", buf, sizeof(buf)), -EINVAL);
  snprintf(path, sizeof(path), "%s/%s", dir, RECOVERY_KEY_CURSOR);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(rmdir(dir), 0);
  recovery_dir_store_free(&st);
  assert_null(st.ctx);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pick_redeliveries),
      cmocka_unit_test(test_dir_store),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
