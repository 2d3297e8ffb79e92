/* Mirror naming, validation and the $GITHUB_ENV line; fetching is covered
 * by tests/test_hooks_git_cache.py against a real git server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "git_cache.h"
#include "workspace.h"

static void test_mirror_name(void **state)
{
  char name[256];

  (void)state;
  assert_int_equal(
      gcache_mirror_name("https://github.com/octo/big", name, sizeof(name)), 0);
  assert_string_equal(name, "github.com_octo_big.git");
  assert_int_equal(gcache_mirror_name("http://x-access-token:s3cret@"
                                      "127.0.0.1:8080/a/b.git/",
                                      name, sizeof(name)),
                   0);
  assert_string_equal(name, "127.0.0.1_8080_a_b.git");
  assert_int_equal(gcache_mirror_name("../../etc", name, sizeof(name)), 0);
  assert_null(strchr(name, '/'));
  assert_true(name[0] != '.');
  assert_int_equal(gcache_mirror_name("https://", name, sizeof(name)), -EINVAL);
}

static void test_validate_rejects_non_mirror(void **state)
{
  char dir[] = "/tmp/hook-gcache-XXXXXX", head[64];
  int fd;

  (void)state;
  assert_non_null(mkdtemp(dir));
  assert_int_equal(gcache_validate(dir), -EINVAL);
  snprintf(head, sizeof(head), "%s/HEAD", dir);
  fd = open(head, O_WRONLY | O_CREAT, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "garbage\n", 8), 8);
  close(fd);
  assert_int_equal(gcache_validate(dir), -EINVAL);
  assert_int_equal(ws_clear(dir, NULL), 0);
  assert_int_equal(rmdir(dir), 0);
}

static void test_export(void **state)
{
  char path[] = "/tmp/hook-gcache-env-XXXXXX", buf[256];
  ssize_t n;
  int fd;

  (void)state;
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "A=1\n", 4), 4);
  close(fd);
  assert_int_equal(gcache_export(path, "/cache/m.git/objects"), 0);
  assert_int_equal(gcache_export(path, "/bad\npath"), -EINVAL);
  fd = open(path, O_RDONLY);
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_string_equal(buf, "A=1\nGIT_ALTERNATE_OBJECT_DIRECTORIES=/cache/m.git/"
                           "objects\n");
  unlink(path);
}

static void test_disabled(void **state)
{
  struct hook_config cfg;
  struct gcache_result res;

  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  cfg.git_cache = 0;
  cfg.server_url = "https://github.com";
  cfg.repository = "octo/big";
  gcache_update(&cfg, 1000, &res);
  assert_int_equal(res.outcome, GCACHE_DISABLED);
  assert_string_equal(gcache_outcome_name(res.outcome), "disabled");
  cfg.git_cache = 1;
  cfg.repository = NULL;
  gcache_update(&cfg, 1000, &res);
  assert_int_equal(res.outcome, GCACHE_DISABLED);
}

static void test_unreachable_server_falls_back(void **state)
{
  char dir[] = "/tmp/hook-gcache-XXXXXX";
  struct hook_config cfg;
  struct gcache_result res;

  (void)state;
  assert_non_null(mkdtemp(dir));
  memset(&cfg, 0, sizeof(cfg));
  cfg.git_cache = 1;
  cfg.cache_dir = dir;
  cfg.server_url = "http://127.0.0.1:1";
  cfg.repository = "octo/big";
  gcache_update(&cfg, 5000, &res);
  assert_int_equal(res.outcome, GCACHE_ERROR);
  assert_string_equal(res.objects, "");
  /* Nothing half-made is left behind, only the lock file. */
  assert_int_equal(access("/nonexistent", F_OK), -1);
  assert_int_equal(ws_clear(dir, NULL), 0);
  assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mirror_name),
      cmocka_unit_test(test_validate_rejects_non_mirror),
      cmocka_unit_test(test_export),
      cmocka_unit_test(test_disabled),
      cmocka_unit_test(test_unreachable_server_falls_back),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
