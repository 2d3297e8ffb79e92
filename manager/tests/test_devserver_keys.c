/* SSH public key lines for dev servers: every type OpenSSH takes for users
 * passes (ECDSA and security keys too), anything else is refused. The
 * keys were made with ssh-keygen's formats; ssh-keygen -l reads each. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "devserver.h"

#define ED25519                                                                \
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKLtI+u+mIXCb09WXvmklS8D3P3lhjVehqQBxn" \
  "YzJpnJ"
#define ECDSA256                                                               \
  "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBM" \
  "4Pmgz2uU9A/9PnmOXG8vjOJ12uoGGlnnh2UfVSh+zUD42YXBB2jiGWdPhyBlQXJIbyQMmaMAwy" \
  "46bWIW7CxRI="
#define ECDSA384                                                               \
  "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBK" \
  "Fi34OmVRivtrCSvbMtyKW1iKLurgWWhvfXFBwEUdGqUFpNWoMya6Jx+tLM1Q8nWum4uh50n/Nk" \
  "+6HSSomcnxYY5/Cth9cIVMjzMhnLoK6YiyHe4XhkfSCWIs1LFRftoQ=="
#define ECDSA521                                                               \
  "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBA" \
  "DS4jP+FMav8Hqec0cYIsPphZbXAtngL/homxJ9x1THOvFygF71MFGwRYwos1vlMxWsCfCfpipu" \
  "o7I69aXqTpWGkgC6tIHi4t26SaF+PTgMuO9QsJilp7Hx0xFMGpsiA8RsBYzeK1UDq8E6xWoWR/" \
  "DoKBLrWpI1Csp4ik4r7f+kCBDiXQ=="
#define RSA                                                                    \
  "ssh-rsa "                                                                   \
  "AAAAB3NzaC1yc2EAAAADAQABAAABAQDd3PwNFtJp+rxO/UMPGn8ZNp3+ko2jYI1a9d6"        \
  "//MQX/OFSKSFxM2dZ+3EAAY5miv442G7NDJtVuOBZ+oq+18DcT9S3SCGzj+zYJWGQpW8di8BJA" \
  "wJP4UCREKRI2HB3z5AtxIpPilLpR0+DWiOcjhVt7u23qpC4eej+NvF+uVclrgJ1/nRC9Q8AF6f" \
  "ATJs/z0yKpeV286KLGw5pWpbKocP4yu+Uy6c9ZO5N1V3yPEQveZuueLUOXruRM/BJUpwA2UoTt" \
  "qob2vYHzBpihFlGTh0141bQjw0BfKL5+lGVlbJIzRJVBZK73XFFrp2UOPBTs7iyN9mNhOq7C2f" \
  "FadSwzCjV"
#define SK_ED25519                                                             \
  "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAICQ" \
  "FBsjo2fFh1agpubCFvN4bppSJ9Xttc3jsNjKg15daAAAABHNzaDo="
#define SK_ECDSA                                                               \
  "sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3B" \
  "lbnNzaC5jb20AAAAIbmlzdHAyNTYAAABBBMuy24KgPjqcPbeIgMw6EeGO8Abkw/HY64fwdnOVO" \
  "+puSDypnNF7L/FuJFGyl6C+eUbN7hF/Z3BZdDCA6rePTlwAAAAEc3NoOg=="

static int check(const char *line)
{
  return dev_key_check(line, strlen(line));
}

static void test_every_user_key_type_passes(void **state)
{
  (void)state;
  assert_int_equal(check(ED25519), 0);
  assert_int_equal(check(ED25519 " alice@laptop"), 0);
  assert_int_equal(check(ECDSA256), 0);
  assert_int_equal(check(ECDSA384 " work key"), 0);
  assert_int_equal(check(ECDSA521), 0);
  assert_int_equal(check(RSA), 0);
  assert_int_equal(check(SK_ED25519 " yubikey"), 0);
  assert_int_equal(check(SK_ECDSA), 0);
}

static void test_malformed_keys_are_refused(void **state)
{
  static const char ed_blob[] =
      "AAAAC3NzaC1lZDI1NTE5AAAAIKLtI+u+mIXCb09WXvmklS8D3P3lhjVehqQBxnYzJpnJ";
  char buf[256];

  (void)state;
  assert_int_equal(check(""), -EINVAL);
  assert_int_equal(check("ssh-ed25519"), -EINVAL);
  assert_int_equal(check("ssh-ed25519 "), -EINVAL);
  /* An unknown type, and DSA, which OpenSSH no longer takes. */
  snprintf(buf, sizeof(buf), "ssh-foo %s", ed_blob);
  assert_int_equal(check(buf), -EINVAL);
  assert_int_equal(check("ssh-dss AAAAB3NzaC1kc3MAAACBAP8="), -EINVAL);
  /* The blob names another type than the line. */
  snprintf(buf, sizeof(buf), "ssh-rsa %s", ed_blob);
  assert_int_equal(check(buf), -EINVAL);
  /* Not base64, cut short, or options in front. */
  assert_int_equal(check("ssh-ed25519 AAAA!!!!"), -EINVAL);
  snprintf(buf, sizeof(buf), "ssh-ed25519 %.20s", ed_blob);
  assert_int_equal(check(buf), -EINVAL);
  snprintf(buf, sizeof(buf), "command=\"/bin/sh\" ssh-ed25519 %s", ed_blob);
  assert_int_equal(check(buf), -EINVAL);
  /* A newline or another control character would start a second line. */
  snprintf(buf, sizeof(buf), "ssh-ed25519 %s a\nssh-rsa x", ed_blob);
  assert_int_equal(check(buf), -EINVAL);
  snprintf(buf, sizeof(buf), "ssh-ed25519 %s a\tb", ed_blob);
  assert_int_equal(check(buf), -EINVAL);
  /* Only the type name, no key after it. */
  assert_int_equal(check("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"), -EINVAL);
}

static void test_keys_list_is_filtered(void **state)
{
  static const char list[] = ED25519 "\r\n"
                                     "\n"
                                     "not a key\n" ECDSA256 "\n"
                                     "ssh-rsa AAAA\n" SK_ECDSA;
  char out[2048], small[64];
  size_t kept, dropped;

  (void)state;
  assert_int_equal(
      dev_keys_filter(list, strlen(list), out, sizeof(out), &kept, &dropped),
      0);
  assert_int_equal(kept, 3);
  assert_int_equal(dropped, 2);
  assert_string_equal(out, ED25519 "\n" ECDSA256 "\n" SK_ECDSA "\n");
  assert_int_equal(dev_keys_filter("", 0, out, sizeof(out), &kept, &dropped),
                   0);
  assert_string_equal(out, "");
  assert_int_equal(kept, 0);
  assert_int_equal(dev_keys_filter(list, strlen(list), small, sizeof(small),
                                   &kept, &dropped),
                   -ENOSPC);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_user_key_type_passes),
      cmocka_unit_test(test_malformed_keys_are_refused),
      cmocka_unit_test(test_keys_list_is_filtered),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
