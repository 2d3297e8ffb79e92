/* The sshd_config of a local dev server: its text, refused values, and
 * OpenSSH's own check of it (sshd -t, with a host key from ssh-keygen). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "devserver.h"

static const int held[] = {2, 5};

static struct dev_sshd_spec spec_of(const char *dir)
{
  static char key[128], auth[128];
  struct dev_sshd_spec s;

  snprintf(key, sizeof(key), "%s/host_ed25519", dir);
  snprintf(auth, sizeof(auth), "%s/authorized_keys", dir);
  memset(&s, 0, sizeof(s));
  s.id = "0123456789abcdef";
  s.listen = "127.0.0.1";
  s.port = 40022;
  s.host_key = key;
  s.authorized_keys = auth;
  s.user = "runfleet";
  s.gpus = held;
  s.ngpus = 2;
  return s;
}

static void test_config_text(void **state)
{
  struct dev_sshd_spec s = spec_of("/srv/dev");
  char out[2048];

  (void)state;
  assert_true(dev_sshd_config(&s, out, sizeof(out)) > 0);
  assert_non_null(strstr(out, "\nPort 40022\n"));
  assert_non_null(strstr(out, "\nListenAddress 127.0.0.1\n"));
  assert_non_null(strstr(out, "\nHostKey /srv/dev/host_ed25519\n"));
  assert_non_null(
      strstr(out, "\nAuthorizedKeysFile /srv/dev/authorized_keys\n"));
  assert_non_null(strstr(out, "\nAllowUsers runfleet\n"));
  assert_non_null(strstr(out, "\nPasswordAuthentication no\n"));
  assert_non_null(strstr(out, "\nSetEnv CUDA_VISIBLE_DEVICES=2,5 "
                              "RUNFLEET_DEVSERVER=0123456789abcdef\n"));
  s.home = "/srv/homes/alice";
  assert_true(dev_sshd_config(&s, out, sizeof(out)) > 0);
  assert_non_null(strstr(out, " RUNFLEET_DEVSERVER=0123456789abcdef "
                              "HOME=/srv/homes/alice\n"));
  s.ngpus = 0;
  assert_true(dev_sshd_config(&s, out, sizeof(out)) > 0);
  assert_non_null(strstr(out, "\nSetEnv CUDA_VISIBLE_DEVICES= "));
  assert_int_equal(dev_sshd_config(&s, out, 64), -ENOSPC);
}

static void test_values_that_would_add_options(void **state)
{
  struct dev_sshd_spec s = spec_of("/srv/dev");
  char out[2048];

  (void)state;
  s.user = "runfleet\nPermitRootLogin yes";
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
  s = spec_of("/srv/dev");
  s.authorized_keys = "/srv/my keys";
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
  s = spec_of("/srv/dev");
  s.host_key = "relative/key";
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
  s = spec_of("/srv/dev");
  s.port = 0;
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
  s = spec_of("/srv/dev");
  s.listen = "#";
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
  s = spec_of("/srv/dev");
  s.home = "home";
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
  s = spec_of("/srv/dev");
  s.id = "a=b";
  assert_int_equal(dev_sshd_config(&s, out, sizeof(out)), -EINVAL);
}

/* sshd -t of cfg as runfleetd would run it: never as root (as root sshd
 * also wants /run/sshd, which a dev server's sshd does not use). */
static int sshd_check(const char *dir, const char *cfg)
{
  char cmd[512];

  if (geteuid() != 0) {
    snprintf(cmd, sizeof(cmd), "/usr/sbin/sshd -t -f '%s' 2>&1", cfg);
    return system(cmd);
  }
  snprintf(cmd, sizeof(cmd), "chown -R 65534:65534 '%s'", dir);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof(cmd),
           "setpriv --reuid=65534 --regid=65534 --clear-groups "
           "/usr/sbin/sshd -t -f '%s' 2>&1",
           cfg);
  return system(cmd);
}

/* OpenSSH takes the file as it is: sshd -t exits 0 (scripts/dev.sh
 * installs openssh-server). */
static void test_sshd_accepts_it(void **state)
{
  char dir[] = "/tmp/test_devserver_sshd.XXXXXX", cfg[128], cmd[256];
  char out[2048];
  struct dev_sshd_spec s;
  FILE *f;
  int n;

  (void)state;
  assert_non_null(mkdtemp(dir));
  s = spec_of(dir);
  s.home = dir;
  snprintf(cmd, sizeof(cmd), "ssh-keygen -q -t ed25519 -N '' -f '%s'",
           s.host_key);
  assert_int_equal(system(cmd), 0);
  n = dev_sshd_config(&s, out, sizeof(out));
  assert_true(n > 0);
  snprintf(cfg, sizeof(cfg), "%s/sshd_config", dir);
  f = fopen(cfg, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(out, 1, (size_t)n, f), (size_t)n);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(sshd_check(dir, cfg), 0);
  /* And refuses a broken one, so the check above means something. */
  f = fopen(cfg, "a");
  assert_non_null(f);
  assert_true(fputs("NoSuchOption yes\n", f) >= 0);
  assert_int_equal(fclose(f), 0);
  assert_int_not_equal(sshd_check(dir, cfg), 0);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_text),
      cmocka_unit_test(test_values_that_would_add_options),
      cmocka_unit_test(test_sshd_accepts_it),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
