/* /proc parsing and process trees. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <unistd.h>

#include "procs.h"

static void test_parse_stat(void **state)
{
  struct procs_stat st;

  (void)state;
  /* comm may hold spaces and parentheses. */
  assert_int_equal(procs_parse_stat("123 (a) b (c)) S 45 67 89 0 -1", &st), 0);
  assert_int_equal(st.pid, 123);
  assert_string_equal(st.comm, "a) b (c)");
  assert_int_equal(st.state, 'S');
  assert_int_equal(st.ppid, 45);
  assert_int_equal(st.sid, 89);
  assert_int_equal(procs_parse_stat("garbage", &st), -EINVAL);
  assert_int_equal(procs_parse_stat("1 (x) S", &st), -EINVAL);
}

static void test_tree(void **state)
{
  struct procs_stat st;

  (void)state;
  assert_int_equal(procs_read_stat(getpid(), &st), 0);
  assert_int_equal(st.ppid, getppid());
  assert_true(procs_in_tree(getpid(), getpid()));
  assert_true(procs_in_tree(getpid(), getppid()));
  assert_false(procs_in_tree(getppid(), getpid()));
  assert_false(procs_in_tree(1, getpid()));
  assert_true(procs_in_tree(getpid(), 1));
  assert_false(procs_exited(getpid()));
  assert_true(procs_runner_root(1234) == 1234);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_stat),
      cmocka_unit_test(test_tree),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
