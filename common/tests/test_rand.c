/* rand: bytes from the kernel, any length, never the same twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rand.h"

static void test_fills_and_differs(void **state)
{
  unsigned char a[4096], b[4096], zero[4096] = {0};
  unsigned char one = 0;

  (void)state;
  assert_int_equal(rand_bytes(a, sizeof(a)), 0);
  assert_int_equal(rand_bytes(b, sizeof(b)), 0);
  assert_memory_not_equal(a, b, sizeof(a));
  assert_memory_not_equal(a, zero, sizeof(a));
  assert_int_equal(rand_bytes(&one, 1), 0);
  assert_int_equal(rand_bytes(a, 0), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fills_and_differs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
