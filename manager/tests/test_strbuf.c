/* The text buffer: growth, formatting past the small stack buffer, the
 * ceiling, and what a failed buffer gives back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strbuf.h"

static void test_append_and_take(void **state)
{
  struct strbuf b = {0};
  size_t len = 0;
  char *out;
  int i;

  (void)state;
  for (i = 0; i < 1000; i++)
    strbuf_puts(&b, "abc");
  strbuf_printf(&b, "%d-%s", 42, "x");
  out = strbuf_take(&b, &len);
  assert_non_null(out);
  assert_int_equal(len, 3004);
  assert_string_equal(out + 3000, "42-x");
  assert_null(b.data);
  free(out);
}

static void test_empty_take_is_empty_string(void **state)
{
  struct strbuf b = {0};
  char *out;

  (void)state;
  out = strbuf_take(&b, NULL);
  assert_non_null(out);
  assert_string_equal(out, "");
  free(out);
}

static void test_long_printf(void **state)
{
  struct strbuf b = {0};
  char big[2000];
  char *out;

  (void)state;
  memset(big, 'z', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  strbuf_printf(&b, "[%s]", big);
  out = strbuf_take(&b, NULL);
  assert_int_equal(strlen(out), sizeof(big) + 1);
  assert_int_equal(out[0], '[');
  assert_int_equal(out[sizeof(big)], ']');
  free(out);
}

static void test_ceiling_fails_the_buffer(void **state)
{
  struct strbuf b = {.max = 10};

  (void)state;
  strbuf_puts(&b, "0123456789");
  assert_false(b.failed);
  strbuf_puts(&b, "x");
  assert_true(b.failed);
  /* Later appends are ignored, and take gives NULL and frees. */
  strbuf_puts(&b, "y");
  assert_null(strbuf_take(&b, NULL));
  assert_null(b.data);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append_and_take),
      cmocka_unit_test(test_empty_take_is_empty_string),
      cmocka_unit_test(test_long_printf),
      cmocka_unit_test(test_ceiling_fails_the_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
