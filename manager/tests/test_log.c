/* The logger escapes every value itself: whatever a value holds (newlines,
 * quotes, '=', control bytes, bytes that are not UTF-8), a call writes
 * exactly one line whose keys are the fields' keys, in logfmt and in JSON,
 * and each type prints as its printf conversion did. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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
  log_warn("hook", "report", LOG_S("runner", v), LOG_S("message", v),
           LOG_I("n", -3), LOG_U("at", (size_t)7));
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
  log_info("x", "long", LOG_S("a", big), LOG_S("b", big), LOG_I("c", 1));
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

static void write_types(const char *v)
{
  (void)v;
  log_info("x", "conv", LOG_S("w", "   42"), LOG_SN("p", 3, "abcdef"),
           LOG_U("u", (uint64_t)1 << 40), LOG_I("ll", -5LL),
           LOG_FN("f", 2, 1.5), LOG_S("c", "q"), LOG_S("pct", "100%"),
           LOG_S("s", "end"));
}

static void write_extremes(const char *v)
{
  (void)v;
  log_info("x", "extremes", LOG_I("min", INTMAX_MIN), LOG_I("zero", 0),
           LOG_U("max", UINTMAX_MAX), LOG_X("hex", 0xbeefu),
           LOG_F("tenth", 0.1), LOG_F("big", 1e300), LOG_F("neg", -2.5),
           LOG_F("third", 1.0 / 3), LOG_FN("round", 0, 2.7),
           LOG_FN("ms", 3, 0.0125));
}

/* Each type prints as the printf conversion it replaces (%jd, %ju, %jx,
 * %g, %.*f, %.*s), bare in logfmt where the text is safe. */
static void test_types_print_as_printf(void **state)
{
  (void)state;
  log_setup(LOG_DEBUG, 0);
  assert_non_null(strstr(capture(write_types, NULL),
                         " w=\"   42\" p=abc u=1099511627776 ll=-5 f=1.50 c=q "
                         "pct=100% s=end\n"));
  assert_non_null(strstr(capture(write_extremes, NULL),
                         " min=-9223372036854775808 zero=0"
                         " max=18446744073709551615 hex=beef tenth=0.1"
                         " big=1e+300 neg=-2.5 third=0.333333 round=3"
                         " ms=0.013\n"));
}

/* Numbers are JSON strings, as they were when every value was text. */
static void test_types_in_json(void **state)
{
  const char *line;
  json_t *obj;

  (void)state;
  log_setup(LOG_DEBUG, 1);
  line = capture(write_extremes, NULL);
  assert_true(one_line(line));
  obj = json_loads(line, 0, NULL);
  assert_non_null(obj);
  assert_string_equal(json_string_value(json_object_get(obj, "min")),
                      "-9223372036854775808");
  assert_string_equal(json_string_value(json_object_get(obj, "max")),
                      "18446744073709551615");
  assert_string_equal(json_string_value(json_object_get(obj, "hex")), "beef");
  assert_string_equal(json_string_value(json_object_get(obj, "ms")), "0.013");
  json_decref(obj);
}

static void write_null(const char *v)
{
  (void)v;
  log_info("x", "null", LOG_S("runner", NULL), LOG_SN("cut", 4, NULL),
           LOG_I("n", 1));
}

/* A NULL string logs as the empty string, never as "(null)". */
static void test_null_string_is_empty(void **state)
{
  const char *line;
  json_t *obj;

  (void)state;
  log_setup(LOG_DEBUG, 0);
  line = capture(write_null, NULL);
  assert_true(one_line(line));
  assert_non_null(strstr(line, " msg=\"null\" runner=\"\" cut=\"\" n=1\n"));
  log_setup(LOG_DEBUG, 1);
  line = capture(write_null, NULL);
  obj = json_loads(line, 0, NULL);
  assert_non_null(obj);
  assert_string_equal(json_string_value(json_object_get(obj, "runner")), "");
  assert_string_equal(json_string_value(json_object_get(obj, "cut")), "");
  assert_null(strstr(line, "(null)"));
  json_decref(obj);
}

static void write_none(const char *v)
{
  (void)v;
  log_error("x", "nothing", LOG_NONE);
}

static void write_in_msg(const char *v)
{
  log_info(v, v, LOG_S("k", v));
}

/* No fields, and hostile text in the module and message, still give one
 * line with the keys the call names. */
static void test_no_fields_and_hostile_message(void **state)
{
  char keys[256];
  size_t i;

  (void)state;
  log_setup(LOG_DEBUG, 0);
  logfmt_keys(capture(write_none, NULL), keys, sizeof(keys));
  assert_string_equal(keys, "ts level mod msg ");
  assert_non_null(strstr(capture(write_none, NULL),
                         " level=error mod=x msg=\"nothing\"\n"));
  for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
    const char *line = capture(write_in_msg, hostile[i]);
    if (!one_line(line))
      fail_msg("value %zu: not one line: %s", i, line);
  }
  log_setup(LOG_DEBUG, 1);
  {
    json_t *obj = json_loads(capture(write_none, NULL), 0, NULL);
    assert_non_null(obj);
    assert_int_equal(json_object_size(obj), 4);
    json_decref(obj);
  }
  for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
    const char *line = capture(write_in_msg, hostile[i]);
    json_t *obj = json_loads(line, 0, NULL);
    if (!one_line(line) || obj == NULL)
      fail_msg("value %zu: not one JSON line: %s", i, line);
    assert_int_equal(json_object_size(obj), 5);
    json_decref(obj);
  }
}

static void write_cut(const char *v)
{
  log_info("x", "cut", LOG_SN("s", 3, v));
}

/* LOG_SN cuts bytes, as %.3s did; a sequence cut in two is then one byte
 * that is not UTF-8 and becomes U+FFFD. */
static void test_cut_string(void **state)
{
  json_t *obj;

  (void)state;
  log_setup(LOG_DEBUG, 0);
  assert_non_null(strstr(capture(write_cut, "caf\xc3\xa9"), " s=caf\n"));
  assert_non_null(strstr(capture(write_cut, "\xc3\xa9\xc3\xa9"),
                         " s=\"\xc3\xa9\\ufffd\"\n"));
  log_setup(LOG_DEBUG, 1);
  obj = json_loads(capture(write_cut, "\xc3\xa9\xc3\xa9"), 0, NULL);
  assert_non_null(obj);
  assert_string_equal(json_string_value(json_object_get(obj, "s")),
                      "\xc3\xa9\xef\xbf\xbd");
  json_decref(obj);
}

/* Keys come from code: lower-case letters, digits and '_', 1 to 64. */
static void test_key_valid(void **state)
{
  char longest[LOG_KEY_MAX + 2];

  (void)state;
  assert_true(log_key_valid("a"));
  assert_true(log_key_valid("http_status"));
  assert_true(log_key_valid("retry_after_s2"));
  assert_false(log_key_valid(NULL));
  assert_false(log_key_valid(""));
  assert_false(log_key_valid("Runner"));
  assert_false(log_key_valid("a-b"));
  assert_false(log_key_valid("a=b"));
  assert_false(log_key_valid("a b"));
  assert_false(log_key_valid("a\n"));
  assert_false(log_key_valid("a\""));
  assert_false(log_key_valid("caf\xc3\xa9"));
  memset(longest, 'k', LOG_KEY_MAX);
  longest[LOG_KEY_MAX] = '\0';
  assert_true(log_key_valid(longest));
  longest[LOG_KEY_MAX] = 'k';
  longest[LOG_KEY_MAX + 1] = '\0';
  assert_false(log_key_valid(longest));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_logfmt_one_line_same_keys),
      cmocka_unit_test(test_json_one_object_same_keys),
      cmocka_unit_test(test_long_values_still_one_line),
      cmocka_unit_test(test_types_print_as_printf),
      cmocka_unit_test(test_types_in_json),
      cmocka_unit_test(test_null_string_is_empty),
      cmocka_unit_test(test_no_fields_and_hostile_message),
      cmocka_unit_test(test_cut_string),
      cmocka_unit_test(test_key_valid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
