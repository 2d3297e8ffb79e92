/* The logger escapes every value itself: whatever a value holds (newlines,
 * quotes, '=', control bytes, bytes that are not UTF-8), a call writes
 * exactly one line whose keys are the format's, in logfmt and in JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "log.h"

/* Values a job or a client can send (a hook report's message, a runner
 * name from a webhook). */
static const char *const hostile[] = {
    "a\nts=2026-01-01T00:00:00.000Z level=error mod=x msg=\"forged\"",
    "quote\" key=\"v",
    "k=v",
    "back\\slash\\",
    "ctrl\x01\x1b[31mred\x7f\r\t",
    "\xff\xfe not utf-8",
    "\xc0\xaf overlong, \xed\xa0\x80 surrogate, \xe2\x82 cut",
    "",
    "plain",
};

/* Runs fn with stderr going to a temporary file; returns what it wrote. */
static char *capture(void (*fn)(const char *), const char *value)
{
  static char out[16384];
  FILE *tmp = tmpfile();
  int saved, n;

  assert_non_null(tmp);
  fflush(stderr);
  saved = dup(2);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fileno(tmp), 2), 2);
  fn(value);
  fflush(stderr);
  assert_int_equal(dup2(saved, 2), 2);
  close(saved);
  rewind(tmp);
  n = (int)fread(out, 1, sizeof(out) - 1, tmp);
  out[n] = '\0';
  fclose(tmp);
  return out;
}

static void write_one(const char *v)
{
  log_write(LOG_WARN, "hook", "report", "runner=%s message=\"%s\" n=%d at=%zu",
            v, v, -3, (size_t)7);
}

static int one_line(const char *s)
{
  const char *nl = strchr(s, '\n');
  return nl != NULL && nl[1] == '\0';
}

/* Splits a logfmt line into its keys (in order, space separated) and
 * checks every value is bare or a closed quoted string. */
static void logfmt_keys(const char *line, char *keys, size_t size)
{
  const char *p = line;
  size_t k = 0;

  keys[0] = '\0';
  while (*p != '\n' && *p != '\0') {
    while (*p == ' ')
      p++;
    while (*p != '=' && *p != '\n') {
      assert_true(*p != ' ' && *p != '"');
      keys[k++] = *p++;
      assert_true(k + 2 < size);
    }
    assert_int_equal(*p, '=');
    keys[k++] = ' ';
    keys[k] = '\0';
    p++;
    if (*p == '"') {
      for (p++; *p != '"'; p++) {
        assert_true(*p != '\n' && *p != '\0');
        assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
        if (*p == '\\')
          p++;
      }
      p++;
    } else {
      for (; *p != ' ' && *p != '\n'; p++)
        assert_true(*p > ' ' && *p <= '~' && *p != '"' && *p != '=');
    }
    assert_true(*p == ' ' || *p == '\n');
  }
}

static void test_logfmt_one_line_same_keys(void **state)
{
  char keys[256];
  size_t i;

  (void)state;
  log_setup(LOG_DEBUG, 0);
  for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
    const char *line = capture(write_one, hostile[i]);
    if (!one_line(line))
      fail_msg("value %zu: not one line: %s", i, line);
    logfmt_keys(line, keys, sizeof(keys));
    assert_string_equal(keys, "ts level mod msg runner message n at ");
    assert_non_null(strstr(line, " n=-3 at=7\n"));
  }
  /* A safe value stays bare, others are quoted and escaped. */
  assert_non_null(strstr(capture(write_one, "plain"), " runner=plain "));
  assert_non_null(
      strstr(capture(write_one, "k=v"), " runner=\"k=v\" message=\"k=v\" "));
  assert_non_null(
      strstr(capture(write_one, "a\"b\nc"), "runner=\"a\\\"b\\nc\""));
  assert_non_null(strstr(capture(write_one, ""), " runner=\"\" "));
}

static void test_json_one_object_same_keys(void **state)
{
  static const char *const want[] = {"ts",     "level",   "mod", "msg",
                                     "runner", "message", "n",   "at"};
  size_t i, k;

  (void)state;
  log_setup(LOG_DEBUG, 1);
  for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
    const char *line = capture(write_one, hostile[i]);
    json_error_t err;
    json_t *obj, *v;
    const char *key;

    if (!one_line(line))
      fail_msg("value %zu: not one line: %s", i, line);
    obj = json_loads(line, 0, &err);
    if (obj == NULL)
      fail_msg("value %zu: not JSON (%s): %s", i, err.text, line);
    assert_int_equal(json_object_size(obj), sizeof(want) / sizeof(want[0]));
    for (k = 0; k < sizeof(want) / sizeof(want[0]); k++)
      assert_non_null(json_object_get(obj, want[k]));
    json_object_foreach(obj, key, v) assert_true(json_is_string(v));
    assert_string_equal(json_string_value(json_object_get(obj, "n")), "-3");
    json_decref(obj);
  }
  /* Valid UTF-8 and escapes come back as they were sent. */
  {
    json_t *obj =
        json_loads(capture(write_one, "caf\xc3\xa9 \"x\"\n"), 0, NULL);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "runner")),
                        "caf\xc3\xa9 \"x\"\n");
    json_decref(obj);
  }
  /* Bytes that are not UTF-8 become U+FFFD, one per byte. */
  {
    json_t *obj = json_loads(capture(write_one, "\xff"), 0, NULL);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "runner")),
                        "\xef\xbf\xbd");
    json_decref(obj);
  }
}

static void write_long(const char *v)
{
  static char big[3000];

  (void)v;
  memset(big, '\n', sizeof(big) - 1);
  log_write(LOG_INFO, "x", "long", "a=%s b=%s c=%d", big, big, 1);
}

static void test_long_values_still_one_line(void **state)
{
  (void)state;
  log_setup(LOG_DEBUG, 0);
  assert_true(one_line(capture(write_long, NULL)));
  log_setup(LOG_DEBUG, 1);
  {
    const char *line = capture(write_long, NULL);
    json_t *obj = json_loads(line, 0, NULL);
    assert_true(one_line(line));
    assert_non_null(obj);
    json_decref(obj);
  }
}

static void write_conversions(const char *v)
{
  (void)v;
  log_write(LOG_INFO, "x", "conv",
            "w=%*d p=%.*s u=%" PRIu64 " ll=%lld f=%.2f c=%c pct=100%% s=%s", 5,
            42, 3, "abcdef", (uint64_t)1 << 40, -5LL, 1.5, 'q', "end");
}

/* Every argument is consumed in step with its conversion, whatever its
 * type, so the values after it are the right ones. */
static void test_conversions_keep_arguments_in_step(void **state)
{
  (void)state;
  log_setup(LOG_DEBUG, 0);
  assert_non_null(strstr(capture(write_conversions, NULL),
                         " w=\"   42\" p=abc u=1099511627776 ll=-5 f=1.50 c=q "
                         "pct=100% s=end\n"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_logfmt_one_line_same_keys),
      cmocka_unit_test(test_json_one_object_same_keys),
      cmocka_unit_test(test_long_values_still_one_line),
      cmocka_unit_test(test_conversions_keep_arguments_in_step),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
