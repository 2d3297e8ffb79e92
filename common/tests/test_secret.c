/* secret: one reader with one trimming rule for every secret file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "secret.h"

static char path[] = "/tmp/runfleet-secret-XXXXXX";

static void write_file(const char *text, size_t n)
{
  FILE *f = fopen(path, "wb");

  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
  int fd = mkstemp(path);

  (void)state;
  assert_true(fd >= 0);
  close(fd);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  unlink(path);
  return 0;
}

static void test_trailing_newlines_trimmed(void **state)
{
  char *s;
  size_t len;

  (void)state;
  write_file("s3cret \r\n\n", 10);
  assert_int_equal(secret_read_file(path, 64, &s, &len), 0);
  /* Only line ends go: a blank is part of what was written. */
  assert_int_equal(len, 7);
  assert_string_equal(s, "s3cret ");
  secret_wipe_free(s, len);
  /* Bytes after a NUL or a newline inside are kept as they are. */
  write_file("a\nb\n", 4);
  assert_int_equal(secret_read_file(path, 64, &s, &len), 0);
  assert_int_equal(len, 3);
  assert_memory_equal(s, "a\nb", 3);
  secret_wipe_free(s, len);
}

static void test_limits_and_errors(void **state)
{
  char *s = (char *)1;
  size_t len = 99;

  (void)state;
  write_file("12345678", 8);
  assert_int_equal(secret_read_file(path, 8, &s, &len), 0);
  secret_wipe_free(s, len);
  assert_int_equal(secret_read_file(path, 7, &s, &len), -EFBIG);
  assert_null(s);
  assert_int_equal(len, 0);
  write_file("\n\r\n", 3);
  assert_int_equal(secret_read_file(path, 8, &s, &len), -EINVAL);
  write_file("", 0);
  assert_int_equal(secret_read_file(path, 8, &s, &len), -EINVAL);
  assert_int_equal(secret_read_file("/nonexistent/secret", 8, &s, &len),
                   -ENOENT);
  secret_wipe_free(NULL, 0);
  secret_free_str(NULL);
  secret_free_str(strdup("ghp_token"));
}

static void test_exposed_modes(void **state)
{
  unsigned mode = 0;

  (void)state;
  assert_int_equal(chmod(path, 0600), 0);
  assert_int_equal(secret_file_exposed(path, &mode), 0);
  assert_int_equal(chmod(path, 0640), 0);
  assert_int_equal(secret_file_exposed(path, &mode), 1);
  assert_int_equal(mode, 0640);
  assert_int_equal(chmod(path, 0604), 0);
  assert_int_equal(secret_file_exposed(path, &mode), 1);
  assert_int_equal(mode, 0604);
  /* Writable but not readable by others leaks nothing to read. */
  assert_int_equal(chmod(path, 0622), 0);
  assert_int_equal(secret_file_exposed(path, &mode), 0);
  assert_int_equal(secret_file_exposed("/nonexistent/secret", &mode), -ENOENT);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trailing_newlines_trimmed),
      cmocka_unit_test(test_limits_and_errors),
      cmocka_unit_test(test_exposed_modes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
