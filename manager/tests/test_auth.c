/* Admin bearer tokens: header shapes, hashing, and which token matched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

/* sha256("test"). */
#define HASH_TEST                                                              \
  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void hex_to_bytes(const char *hex, unsigned char *out)
{
  size_t i;

  for (i = 0; i < CFG_SHA256_LEN; i++) {
    unsigned v;

    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (unsigned char)v;
  }
}

static void admin_with_tokens(struct cfg_admin *a)
{
  char other[AUTH_SHA256_HEX];

  memset(a, 0, sizeof(*a));
  assert_int_equal(auth_sha256_hex("other", 5, other), 0);
  a->tokens[0].name = "ci";
  hex_to_bytes(other, a->tokens[0].sha256);
  a->tokens[1].name = "ops";
  hex_to_bytes(HASH_TEST, a->tokens[1].sha256);
  a->ntokens = 2;
}

static void test_sha256_hex(void **state)
{
  char out[AUTH_SHA256_HEX];

  (void)state;
  assert_int_equal(auth_sha256_hex("test", 4, out), 0);
  assert_string_equal(out, HASH_TEST);
}

static void test_bearer_shapes(void **state)
{
  struct cfg_admin a;
  const char *name = NULL;
  char long_token[AUTH_MAX_TOKEN + 16];

  (void)state;
  admin_with_tokens(&a);
  assert_int_equal(auth_bearer_check(&a, "Bearer test", &name), AUTH_OK);
  assert_string_equal(name, "ops");
  name = NULL;
  assert_int_equal(auth_bearer_check(&a, "bearer   other ", &name), AUTH_OK);
  assert_string_equal(name, "ci");
  assert_int_equal(auth_bearer_check(&a, "Bearer wrong", NULL), AUTH_DENIED);
  assert_int_equal(auth_bearer_check(&a, "Bearer tes", NULL), AUTH_DENIED);
  assert_int_equal(auth_bearer_check(&a, "Bearer test=", NULL), AUTH_DENIED);
  assert_int_equal(auth_bearer_check(&a, NULL, NULL), AUTH_MISSING);
  assert_int_equal(auth_bearer_check(&a, "", NULL), AUTH_MISSING);
  assert_int_equal(auth_bearer_check(&a, "Basic dGVzdA==", NULL), AUTH_MISSING);
  assert_int_equal(auth_bearer_check(&a, "Bearer ", NULL), AUTH_MISSING);
  assert_int_equal(auth_bearer_check(&a, "Bearer a b", NULL), AUTH_MISSING);
  assert_int_equal(auth_bearer_check(&a, "Bearer a\"b", NULL), AUTH_MISSING);
  assert_int_equal(auth_bearer_check(&a, "Bearertest", NULL), AUTH_MISSING);
  memset(long_token, 'a', sizeof(long_token));
  memcpy(long_token, "Bearer ", 7);
  long_token[sizeof(long_token) - 1] = '\0';
  assert_int_equal(auth_bearer_check(&a, long_token, NULL), AUTH_MISSING);
  a.ntokens = 0;
  assert_int_equal(auth_bearer_check(&a, "Bearer test", NULL), AUTH_DENIED);
}

/* Dev server users' tokens: the matching user, or refused. */
static void test_dev_users(void **state)
{
  static struct cfg_devservers dev;
  const struct cfg_dev_user *u = NULL;
  char bob[AUTH_SHA256_HEX];

  (void)state;
  memset(&dev, 0, sizeof(dev));
  dev.users[0].name = "alice";
  hex_to_bytes(HASH_TEST, dev.users[0].token_sha256);
  assert_int_equal(auth_sha256_hex("bob-token", 9, bob), 0);
  dev.users[1].name = "bob";
  hex_to_bytes(bob, dev.users[1].token_sha256);
  dev.users[1].role = CFG_DEV_ROLE_ADMIN;
  dev.nusers = 2;
  assert_int_equal(auth_dev_check(&dev, "Bearer test", &u), AUTH_OK);
  assert_string_equal(u->name, "alice");
  assert_int_equal(auth_dev_check(&dev, "Bearer bob-token", &u), AUTH_OK);
  assert_string_equal(u->name, "bob");
  assert_int_equal(u->role, CFG_DEV_ROLE_ADMIN);
  u = NULL;
  assert_int_equal(auth_dev_check(&dev, "Bearer nope", &u), AUTH_DENIED);
  assert_null(u);
  assert_int_equal(auth_dev_check(&dev, NULL, &u), AUTH_MISSING);
  assert_int_equal(auth_dev_check(&dev, "Basic dGVzdA==", &u), AUTH_MISSING);
  dev.nusers = 0;
  assert_int_equal(auth_dev_check(&dev, "Bearer test", &u), AUTH_DENIED);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sha256_hex),
      cmocka_unit_test(test_bearer_shapes),
      cmocka_unit_test(test_dev_users),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
