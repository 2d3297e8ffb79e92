/* Names from hostile input: path traversal, UTF-8, NULs, overlong and
 * empty strings, strings of nothing but separators. Every result is
 * checked against the rules of its kind, not only against one expected
 * string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "names.h"

typedef int (*names_fn)(const char *, size_t, char *, size_t);

static int is_alnum(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* The rules every kind shares: bounded, the returned length, alnum ends,
 * and only the allowed bytes. */
static void assert_well_formed(const char *out, int n, size_t max,
                               const char *allowed_punct, int lower_only)
{
  size_t i, len = strlen(out);

  assert_int_equal((size_t)n, len);
  assert_true(len <= max);
  if (len == 0)
    return;
  assert_true(is_alnum(out[0]));
  assert_true(is_alnum(out[len - 1]));
  for (i = 0; i < len; i++) {
    char c = out[i];
    assert_true(is_alnum(c) || strchr(allowed_punct, c) != NULL);
    if (lower_only)
      assert_false(c >= 'A' && c <= 'Z');
  }
}

static const char *const hostile[] = {
    "../../etc",
    "../../../etc/passwd",
    "..",
    ".",
    "/",
    "a/../../b",
    "-rf",
    "--",
    "----------",
    "___...---",
    "",
    " ",
    "acme/widgets",
    "Build & Test (ubuntu-latest, 3.12)",
    "d\xc3\xa9ploiement-\xe6\x97\xa5\xe6\x9c\xac",
    "\xf0\x9f\x9a\x80",
    "\xff\xfe\x80",
    "name\r\nmetric{x=\"1\"} 1",
    "label=\"v\",other=\"w\"",
    "$(reboot)`id`;|&",
    "a..b...c",
    ".hidden",
    "trailing.",
    "UPPER_case.Mixed-123",
};

static void check_all(names_fn fn, size_t max, const char *punct, int lower,
                      int empty_ok)
{
  char out[512];
  size_t i;

  for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
    int n = fn(hostile[i], strlen(hostile[i]), out, sizeof(out));

    if (n < 0) {
      assert_int_equal(n, -1);
      assert_string_equal(out, "");
      continue;
    }
    assert_true(n > 0 || empty_ok);
    assert_well_formed(out, n, max, punct, lower);
    assert_null(strstr(out, ".."));
    assert_null(strchr(out, '/'));
  }
}

static void test_dns_label_rules_hold_for_hostile_input(void **state)
{
  (void)state;
  check_all(names_dns_label, NAMES_LABEL_MAX, "-", 1, 0);
}

static void test_label_value_rules_hold_for_hostile_input(void **state)
{
  (void)state;
  check_all(names_label_value, NAMES_LABEL_MAX, "._-", 0, 1);
}

static void test_file_component_rules_hold_for_hostile_input(void **state)
{
  (void)state;
  check_all(names_file_component, NAMES_FILE_MAX, "._-", 0, 0);
}

static void test_dns_label_examples(void **state)
{
  char out[64];

  (void)state;
  assert_int_equal(names_dns_label("acme/Widgets", 12, out, sizeof(out)), 12);
  assert_string_equal(out, "acme-widgets");
  names_dns_label("Build & Test (3.12)", 19, out, sizeof(out));
  assert_string_equal(out, "build-test-3-12");
  names_dns_label("../../etc", 9, out, sizeof(out));
  assert_string_equal(out, "etc");
  names_dns_label("d\xc3\xa9ploy", 7, out, sizeof(out));
  assert_string_equal(out, "d-ploy");
  assert_int_equal(names_dns_label("----", 4, out, sizeof(out)), -1);
  assert_string_equal(out, "");
  assert_int_equal(names_dns_label("", 0, out, sizeof(out)), -1);
  assert_int_equal(names_dns_label("\xe6\x97\xa5", 3, out, sizeof(out)), -1);
  assert_int_equal(names_dns_label(NULL, 0, out, sizeof(out)), -1);
}

static void test_label_value_examples(void **state)
{
  char out[64];

  (void)state;
  names_label_value("acme/widgets", 12, out, sizeof(out));
  assert_string_equal(out, "acme_widgets");
  names_label_value("UPPER_case.Mixed-123", 20, out, sizeof(out));
  assert_string_equal(out, "UPPER_case.Mixed-123");
  names_label_value("v1..2", 5, out, sizeof(out));
  assert_string_equal(out, "v1.2");
  /* Nothing usable is a valid, empty label value. */
  assert_int_equal(names_label_value("-._", 3, out, sizeof(out)), 0);
  assert_string_equal(out, "");
  assert_int_equal(names_label_value("", 0, out, sizeof(out)), 0);
  /* A metric or log injection attempt loses its quotes and newlines. */
  names_label_value("x\"}\n", 4, out, sizeof(out));
  assert_string_equal(out, "x");
}

static void test_file_component_examples(void **state)
{
  char out[NAMES_FILE_MAX + 1];

  (void)state;
  names_file_component("../../etc", 9, out, sizeof(out));
  assert_string_equal(out, "etc");
  names_file_component("a/../../b", 9, out, sizeof(out));
  assert_string_equal(out, "a_._._b");
  names_file_component(".hidden", 7, out, sizeof(out));
  assert_string_equal(out, "hidden");
  names_file_component("-rf", 3, out, sizeof(out));
  assert_string_equal(out, "rf");
  assert_int_equal(names_file_component("..", 2, out, sizeof(out)), -1);
  assert_int_equal(names_file_component(".", 1, out, sizeof(out)), -1);
  assert_int_equal(names_file_component("/", 1, out, sizeof(out)), -1);
  assert_int_equal(names_file_component("", 0, out, sizeof(out)), -1);
}

/* An embedded NUL (JSON's \u0000) is one more byte to replace: it neither
 * ends the name early nor reaches the result. */
static void test_embedded_nul_is_replaced(void **state)
{
  static const char s[] = "ok\0../../etc";
  char out[64];
  int n;

  (void)state;
  n = names_file_component(s, sizeof(s) - 1, out, sizeof(out));
  assert_int_equal((size_t)n, strlen(out));
  assert_string_equal(out, "ok_._._etc");
  names_dns_label(s, sizeof(s) - 1, out, sizeof(out));
  assert_string_equal(out, "ok-etc");
  names_label_value(s, sizeof(s) - 1, out, sizeof(out));
  assert_string_equal(out, "ok_._._etc");
}

/* 300 characters: cut at the kind's maximum, and the cut never leaves a
 * separator at the end. */
static void test_long_names_are_bounded(void **state)
{
  char in[301], out[512];
  int n;

  (void)state;
  memset(in, 'a', 300);
  in[300] = '\0';
  assert_int_equal(names_dns_label(in, 300, out, sizeof(out)), NAMES_LABEL_MAX);
  assert_int_equal(names_label_value(in, 300, out, sizeof(out)),
                   NAMES_LABEL_MAX);
  assert_int_equal(names_file_component(in, 300, out, sizeof(out)),
                   NAMES_FILE_MAX);
  /* A separator right at the cut is dropped with it. */
  in[NAMES_LABEL_MAX - 1] = '/';
  n = names_dns_label(in, 300, out, sizeof(out));
  assert_int_equal(n, NAMES_LABEL_MAX - 1);
  assert_true(is_alnum(out[n - 1]));
  /* A small buffer bounds the result too. */
  assert_int_equal(names_dns_label(in, 300, out, 8), 7);
  assert_string_equal(out, "aaaaaaa");
  assert_int_equal(names_dns_label(in, 300, out, 1), -1);
  assert_int_equal(names_dns_label(in, 300, NULL, 0), -1);
  assert_int_equal(names_file_component(in, 300, out, 0), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dns_label_rules_hold_for_hostile_input),
      cmocka_unit_test(test_label_value_rules_hold_for_hostile_input),
      cmocka_unit_test(test_file_component_rules_hold_for_hostile_input),
      cmocka_unit_test(test_dns_label_examples),
      cmocka_unit_test(test_label_value_examples),
      cmocka_unit_test(test_file_component_examples),
      cmocka_unit_test(test_embedded_nul_is_replaced),
      cmocka_unit_test(test_long_names_are_bounded),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
