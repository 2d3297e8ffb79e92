/* The devservers: section: defaults, every value, and each problem with
 * the line it points at (config_devservers.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define ERRS_SIZE 8192

static char dir[64];
static char errs[ERRS_SIZE];

static void write_file(const char *name, const char *text)
{
  char path[256];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_config_dev.XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  write_file("secret", "s3cret\n");
  write_file("pat", "ghp_x\n");
  return 0;
}

static int group_teardown(void **state)
{
  char path[256];

  (void)state;
  snprintf(path, sizeof(path), "%s/secret", dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/pat", dir);
  unlink(path);
  return rmdir(dir);
}

/* Replaces every @D by the temporary directory. */
static char *subst(const char *in)
{
  static char out[16384];
  size_t pos = 0, dlen = strlen(dir);

  for (; *in != '\0'; in++) {
    assert_true(pos + dlen + 1 < sizeof(out));
    if (in[0] == '@' && in[1] == 'D') {
      memcpy(out + pos, dir, dlen);
      pos += dlen;
      in++;
    } else {
      out[pos++] = *in;
    }
  }
  out[pos] = '\0';
  return out;
}

static int parse(struct config *cfg, const char *yaml)
{
  const char *text = subst(yaml);

  return cfg_parse(cfg, "t.yaml", text, strlen(text), errs, sizeof(errs));
}

static int has_line(const char *line)
{
  size_t n = strlen(line);
  const char *at = errs;

  while ((at = strstr(at, line)) != NULL) {
    if ((at == errs || at[-1] == '\n') && at[n] == '\n')
      return 1;
    at++;
  }
  return 0;
}

static void expect_errors(const char *yaml, int n, ...)
{
  static const struct config zero;
  struct config cfg;
  const char *line;
  va_list ap;
  int rc = parse(&cfg, yaml);

  if (rc != n)
    fail_msg("expected %d problems, got %d:\n%s", n, rc, errs);
  assert_memory_equal(&cfg, &zero, sizeof(cfg));
  va_start(ap, n);
  while ((line = va_arg(ap, const char *)) != NULL)
    if (!has_line(line))
      fail_msg("missing \"%s\" in:\n%s", line, errs);
  va_end(ap);
}

static void expect_ok(const char *yaml, struct config *cfg)
{
  int rc = parse(cfg, yaml);

  if (rc != 0)
    fail_msg("expected no problems, got %d:\n%s", rc, errs);
}

/* Lines 1-9: github, a local backend with four GPUs and 16 CPU slots. */
#define BASE                                                                   \
  "github:\n"                                                                  \
  "  pat_file: @D/pat\n"                                                       \
  "  webhook_secret_file: @D/secret\n"                                         \
  "  org: acme\n"                                                              \
  "backend:\n"                                                                 \
  "  type: local\n"                                                            \
  "  local: {gpus: [0, 1, 2, 3], cpu_slots: 16}\n"                             \
  "pools:\n"                                                                   \
  "  - {name: cpu, labels: [linux], max_runners: 2, runner: {command: /r}}\n"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void test_absent_is_disabled(void **state)
{
  struct config cfg;

  (void)state;
  expect_ok(BASE, &cfg);
  assert_int_equal(cfg.devservers.enabled, 0);
  assert_int_equal(cfg.devservers.nflavors, 0);
  assert_null(cfg_flavor_find(&cfg, "gpu-1"));
  cfg_free(&cfg);
}

static void test_defaults(void **state)
{
  struct config cfg;
  const struct cfg_flavor *f;

  (void)state;
  expect_ok(BASE "devservers:\n"
                 "  flavors: [{name: gpu-1, gpus: 1}]\n",
            &cfg);
  assert_int_equal(cfg.devservers.enabled, 1);
  assert_string_equal(cfg.devservers.keys_url, CFG_DEFAULT_DEV_KEYS_URL);
  assert_string_equal(cfg.devservers.keys_url,
                      "https://github.com/{user}.keys");
  assert_string_equal(cfg.devservers.sshd, "/usr/sbin/sshd");
  assert_string_equal(cfg.devservers.run_as, "runfleet");
  assert_int_equal(cfg.devservers.nwarnings, 3);
  assert_int_equal(cfg.devservers.warnings_ms[0], 30 * 60000);
  assert_int_equal(cfg.devservers.warnings_ms[1], 15 * 60000);
  assert_int_equal(cfg.devservers.warnings_ms[2], 5 * 60000);
  assert_int_equal(cfg.devservers.queued_timeout_ms, 24ull * 3600000);
  assert_int_equal(cfg.devservers.preparing_timeout_ms, 300000);
  assert_int_equal(cfg.devservers.expiry_grace_ms, 60000);
  assert_int_equal(cfg.devservers.ci_min_gpus, 0);
  assert_int_equal(cfg.devservers.max_gpus, CFG_DEV_GPUS_UNLIMITED);
  assert_int_equal(cfg.devservers.nusers, 0);
  assert_int_equal(cfg.devservers.min_duration_ms, 300000);
  assert_string_equal(cfg.devservers.listen, "127.0.0.1");
  assert_int_equal(cfg.devservers.port_first, 0);
  assert_int_equal(cfg.devservers.port_last, 0);
  f = cfg_flavor_find(&cfg, "gpu-1");
  assert_non_null(f);
  assert_int_equal(f->gpus, 1);
  assert_int_equal(f->cpus, 1);
  assert_int_equal(f->memory_bytes, 0);
  assert_int_equal(f->max_hours, 8);
  assert_int_equal(f->max_extend_hours, 8);
  assert_int_equal(f->per_user_max, 1);
  assert_int_equal(f->priority, 0);
  assert_null(f->command);
  assert_int_equal(f->line, 11);
  assert_null(cfg_flavor_find(&cfg, "gpu-2"));
  cfg_free(&cfg);
}

static void test_values(void **state)
{
  struct config cfg;
  const struct cfg_flavor *f;
  const struct cfg_dev_user *u;

  (void)state;
  expect_ok(BASE
            "devservers:\n"
            "  keys_url: http://127.0.0.1:9/{user}.keys\n"
            "  sshd: /opt/sshd\n"
            "  run_as: dev\n"
            "  warnings: [1h, 10m, 1m]\n"
            "  queued_timeout: 2h\n"
            "  preparing_timeout: 90s\n"
            "  expiry_grace: 0s\n"
            "  ci_min_gpus: 1\n"
            "  devservers_max_gpus: 3\n"
            "  flavors:\n"
            "    - name: gpu-4\n"
            "      gpus: 4\n"
            "      cpus: 8\n"
            "      memory: 32Gi\n"
            "      max_hours: 12\n"
            "      max_extend_hours: 4\n"
            "      per_user_max: 2\n"
            "      priority: -5\n"
            "      command: /bin/devbox\n"
            "  users:\n"
            "    - {name: alice, github_user: alice-gh, token_sha256: " SHA_A
            "}\n"
            "    - {name: ops, github_user: ops, token_sha256: " SHA_B
            ", role: admin}\n",
            &cfg);
  assert_string_equal(cfg.devservers.keys_url,
                      "http://127.0.0.1:9/{user}.keys");
  assert_string_equal(cfg.devservers.sshd, "/opt/sshd");
  assert_string_equal(cfg.devservers.run_as, "dev");
  assert_int_equal(cfg.devservers.nwarnings, 3);
  assert_int_equal(cfg.devservers.warnings_ms[0], 3600000);
  assert_int_equal(cfg.devservers.warnings_ms[2], 60000);
  assert_int_equal(cfg.devservers.queued_timeout_ms, 7200000);
  assert_int_equal(cfg.devservers.preparing_timeout_ms, 90000);
  assert_int_equal(cfg.devservers.expiry_grace_ms, 0);
  assert_int_equal(cfg.devservers.ci_min_gpus, 1);
  assert_int_equal(cfg.devservers.max_gpus, 3);
  f = cfg_flavor_find(&cfg, "gpu-4");
  assert_non_null(f);
  assert_int_equal(f->gpus, 4);
  assert_int_equal(f->cpus, 8);
  assert_int_equal(f->memory_bytes, 32ull << 30);
  assert_int_equal(f->max_hours, 12);
  assert_int_equal(f->max_extend_hours, 4);
  assert_int_equal(f->per_user_max, 2);
  assert_int_equal(f->priority, -5);
  assert_string_equal(f->command, "/bin/devbox");
  assert_int_equal(cfg.devservers.nusers, 2);
  u = &cfg.devservers.users[0];
  assert_string_equal(u->name, "alice");
  assert_string_equal(u->github_user, "alice-gh");
  assert_int_equal(u->token_sha256[0], 0xaa);
  assert_int_equal(u->role, CFG_DEV_ROLE_USER);
  assert_int_equal(cfg.devservers.users[1].role, CFG_DEV_ROLE_ADMIN);
  cfg_free(&cfg);
}

/* Lines 10 on, after BASE. */
static void test_flavor_errors(void **state)
{
  (void)state;
  expect_errors(BASE "devservers:\n"
                     "  flavors:\n"
                     "    - {name: gpu-9, gpus: 9}\n"
                     "    - {name: Bad_Name, gpus: 1}\n"
                     "    - {name: big, gpus: 8}\n"
                     "    - {name: cpu-heavy, gpus: 1, cpus: 32}\n"
                     "    - {name: big, gpus: 1, max_hours: 0, color: red}\n"
                     "    - {gpus: 1, max_hours: 169}\n",
                9,
                "t.yaml:12: devservers.flavors[0].gpus: 9 is out of range "
                "(1 to 8)",
                "t.yaml:13: devservers.flavors[1].name: 'Bad_Name' must be 1 "
                "to 32 characters of [a-z0-9-], starting with a letter",
                "t.yaml:14: devservers.flavors[2].gpus: flavor needs 8 GPUs "
                "but backend.local.gpus lists 4",
                "t.yaml:15: devservers.flavors[3].cpus: flavor needs 32 CPU "
                "slots but backend.local.cpu_slots is 16",
                "t.yaml:16: devservers.flavors[4].color: unknown key",
                "t.yaml:16: devservers.flavors[4].name: flavor 'big' is "
                "defined twice",
                "t.yaml:16: devservers.flavors[4].max_hours: 0 is out of "
                "range (1 to 168)",
                "t.yaml:17: devservers.flavors[5].name: required",
                "t.yaml:17: devservers.flavors[5].max_hours: 169 is out of "
                "range (1 to 168)",
                NULL);
  expect_errors(BASE "devservers:\n"
                     "  flavors:\n"
                     "    - {name: a, gpus: 1}\n"
                     "    - {name: a, gpus: 2, max_hours: 0}\n",
                2,
                "t.yaml:13: devservers.flavors[1].name: flavor 'a' is "
                "defined twice",
                "t.yaml:13: devservers.flavors[1].max_hours: 0 is out of "
                "range (1 to 168)",
                NULL);
  expect_errors(BASE "devservers: {run_as: dev}\n", 1,
                "t.yaml:10: devservers.flavors: required", NULL);
  expect_errors(BASE "devservers: {flavors: []}\n", 1,
                "t.yaml:10: devservers.flavors: at least one flavor", NULL);
  expect_errors(BASE "devservers: {flavors: gpu}\n", 1,
                "t.yaml:10: devservers.flavors: expected a list", NULL);
}

static void test_section_errors(void **state)
{
  (void)state;
  expect_errors(BASE "devservers:\n"
                     "  flavors: [{name: g, gpus: 1}]\n"
                     "  keys_url: ftp://x/{user}\n"
                     "  sshd: sshd\n"
                     "  run_as: 'a b'\n"
                     "  warnings: [5m, 15m, 10s]\n"
                     "  queued_timeout: 10s\n"
                     "  ci_min_gpus: 5\n"
                     "  shape: round\n",
                8,
                "t.yaml:12: devservers.keys_url: 'ftp://x/{user}' must start "
                "with https:// or http://",
                "t.yaml:13: devservers.sshd: 'sshd' must be an absolute path",
                "t.yaml:14: devservers.run_as: 'a b' is not a user name",
                "t.yaml:15: devservers.warnings[1]: warnings must be listed "
                "from the earliest (longest before expiry) down",
                "t.yaml:15: devservers.warnings[2]: 10s is out of range "
                "(60000ms to 86400000ms)",
                "t.yaml:16: devservers.queued_timeout: 10s is out of range "
                "(60000ms to 2592000000ms)",
                "t.yaml:17: devservers.ci_min_gpus: 5 is more than the 4 "
                "GPUs of backend.local.gpus",
                "t.yaml:18: devservers.shape: unknown key", NULL);
  expect_errors(BASE "devservers:\n"
                     "  flavors: [{name: g, gpus: 1}]\n"
                     "  keys_url: https://github.com/alice.keys\n",
                1,
                "t.yaml:12: devservers.keys_url: "
                "'https://github.com/alice.keys' must contain {user} exactly "
                "once",
                NULL);
}

/* Where the local backend's sshds listen, and the shortest reservation. */
static void test_listen_ports_min_duration(void **state)
{
  struct config cfg;

  (void)state;
  expect_ok(BASE "devservers:\n"
                 "  flavors: [{name: g, gpus: 1}]\n"
                 "  listen: 0.0.0.0\n"
                 "  ports: 22000-22099\n"
                 "  min_duration: 30s\n",
            &cfg);
  assert_string_equal(cfg.devservers.listen, "0.0.0.0");
  assert_int_equal(cfg.devservers.port_first, 22000);
  assert_int_equal(cfg.devservers.port_last, 22099);
  assert_int_equal(cfg.devservers.min_duration_ms, 30000);
  cfg_free(&cfg);
  expect_errors(BASE "devservers:\n"
                     "  flavors: [{name: g, gpus: 1}]\n"
                     "  listen: 'host name'\n"
                     "  ports: 80-90\n"
                     "  min_duration: 2h\n",
                3,
                "t.yaml:12: devservers.listen: 'host name' is not an IPv4 "
                "address",
                "t.yaml:13: devservers.ports: '80-90' must be FIRST-LAST "
                "within 1024-65535",
                "t.yaml:14: devservers.min_duration: 2h is out of range "
                "(1000ms to 3600000ms)",
                NULL);
  expect_errors(BASE "devservers:\n"
                     "  flavors: [{name: g, gpus: 1}]\n"
                     "  ports: 30000-20000\n",
                1,
                "t.yaml:12: devservers.ports: '30000-20000' must be "
                "FIRST-LAST within 1024-65535",
                NULL);
}

static void test_user_errors(void **state)
{
  (void)state;
  expect_errors(BASE "devservers:\n"
                     "  flavors: [{name: g, gpus: 1}]\n"
                     "  users:\n"
                     "    - {name: alice, github_user: 'a b', token_sha256: "
                     "abc}\n"
                     "    - {name: alice, github_user: a, token_sha256: " SHA_A
                     "}\n"
                     "    - {name: bob, github_user: b, token_sha256: " SHA_A
                     ", role: root}\n"
                     "    - {name: carol}\n",
                7,
                "t.yaml:13: devservers.users[0].github_user: 'a b' is not "
                "a GitHub user name",
                "t.yaml:15: devservers.users[2].role: 'root' is not one of "
                "user, admin",
                "t.yaml:13: devservers.users[0].token_sha256: must be 64 hex "
                "digits (the SHA-256 of the token, as sha256sum prints it)",
                "t.yaml:14: devservers.users[1].name: user 'alice' is listed "
                "twice",
                "t.yaml:15: devservers.users[2].token_sha256: the same token "
                "as user 'alice'",
                "t.yaml:16: devservers.users[3].github_user: required",
                "t.yaml:16: devservers.users[3].token_sha256: required", NULL);
  /* A user's token may not be an admin token: the token says who calls. */
  expect_errors(BASE "admin:\n"
                     "  tokens: [{name: ops, sha256: " SHA_B "}]\n"
                     "devservers:\n"
                     "  flavors: [{name: g, gpus: 1}]\n"
                     "  users: [{name: a, github_user: a, token_sha256: " SHA_B
                     "}]\n",
                1,
                "t.yaml:14: devservers.users[0].token_sha256: the same token "
                "as admin token 'ops'",
                NULL);
}

static void test_kubernetes_not_yet(void **state)
{
  (void)state;
  expect_errors("github:\n"
                "  pat_file: @D/pat\n"
                "  webhook_secret_file: @D/secret\n"
                "  org: acme\n"
                "backend: {type: kubernetes}\n"
                "pools:\n"
                "  - {name: cpu, labels: [linux], max_runners: 2, runner: "
                "{image: 'r:1'}}\n"
                "devservers:\n"
                "  flavors: [{name: g, gpus: 1}]\n",
                1,
                "t.yaml:8: devservers: not available with backend kubernetes "
                "yet (only local)",
                NULL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_absent_is_disabled),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_values),
      cmocka_unit_test(test_flavor_errors),
      cmocka_unit_test(test_section_errors),
      cmocka_unit_test(test_listen_ports_min_duration),
      cmocka_unit_test(test_user_errors),
      cmocka_unit_test(test_kubernetes_not_yet),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
