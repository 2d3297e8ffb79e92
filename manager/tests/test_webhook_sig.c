/* Signature checks against GitHub's documented test vector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "webhook_sig.h"

#define SECRET "It's a Secret to Everybody"
#define BODY "Hello, World!"
#define GOOD                                                                   \
  "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

static int verify(const char *secret, const char *body, const char *header)
{
  return webhook_sig_verify((const unsigned char *)secret, strlen(secret),
                            (const unsigned char *)body, strlen(body), header);
}

static void test_github_vector_accepted(void **state)
{
  (void)state;
  assert_int_equal(verify(SECRET, BODY, GOOD), 0);
}

static void test_uppercase_hex_accepted(void **state)
{
  char upper[] = GOOD;
  size_t i;

  (void)state;
  for (i = 7; upper[i] != '\0'; i++)
    if (upper[i] >= 'a' && upper[i] <= 'f')
      upper[i] = (char)(upper[i] - 'a' + 'A');
  assert_int_equal(verify(SECRET, BODY, upper), 0);
}

static void test_sign_matches_vector(void **state)
{
  char out[80];

  (void)state;
  assert_int_equal(webhook_sig_sign((const unsigned char *)SECRET,
                                    strlen(SECRET), (const unsigned char *)BODY,
                                    strlen(BODY), out, sizeof(out)),
                   0);
  assert_string_equal(out, GOOD);
  assert_int_equal(webhook_sig_sign((const unsigned char *)SECRET,
                                    strlen(SECRET), (const unsigned char *)BODY,
                                    strlen(BODY), out, 70),
                   -1);
}

static void test_wrong_secret_rejected(void **state)
{
  (void)state;
  assert_int_equal(verify("It's a secret to everybody", BODY, GOOD), -1);
}

static void test_changed_body_rejected(void **state)
{
  (void)state;
  assert_int_equal(verify(SECRET, "Hello, World?", GOOD), -1);
  assert_int_equal(verify(SECRET, "", GOOD), -1);
}

static void test_malformed_headers_rejected(void **state)
{
  char flipped[] = GOOD;

  (void)state;
  flipped[sizeof(flipped) - 2] =
      flipped[sizeof(flipped) - 2] == '7' ? '8' : '7';
  assert_int_equal(verify(SECRET, BODY, NULL), -1);
  assert_int_equal(verify(SECRET, BODY, ""), -1);
  assert_int_equal(verify(SECRET, BODY, "sha256="), -1);
  /* Truncated by one digit. */
  assert_int_equal(
      verify(SECRET, BODY,
             "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b"
             "043e1"),
      -1);
  /* The SHA-1 header form is not accepted. */
  assert_int_equal(
      verify(SECRET, BODY,
             "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b0"
             "43e17zz"),
      -1);
  assert_int_equal(
      verify(SECRET, BODY,
             "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b"
             "043e17"),
      -1);
  assert_int_equal(verify(SECRET, BODY, flipped), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_github_vector_accepted),
      cmocka_unit_test(test_uppercase_hex_accepted),
      cmocka_unit_test(test_sign_matches_vector),
      cmocka_unit_test(test_wrong_secret_rejected),
      cmocka_unit_test(test_changed_body_rejected),
      cmocka_unit_test(test_malformed_headers_rejected),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
