/* Workspace removal: read-only trees go, symbolic links are not followed,
 * kept entries stay. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "workspace.h"

struct fixture {
  char root[64];
  char path[512];
};

static const char *at(struct fixture *f, const char *rel)
{
  snprintf(f->path, sizeof(f->path), "%s/%s", f->root, rel);
  return f->path;
}

static void put(struct fixture *f, const char *rel, const char *text)
{
  int fd = open(at(f, rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);

  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  assert_int_equal(close(fd), 0);
}

static int exists(struct fixture *f, const char *rel)
{
  struct stat st;

  return lstat(at(f, rel), &st) == 0;
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  snprintf(f->root, sizeof(f->root), "/tmp/hook-ws-XXXXXX");
  assert_non_null(mkdtemp(f->root));
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  (void)ws_clear(f->root, NULL);
  (void)rmdir(f->root);
  free(f);
  return 0;
}

static void test_clear_read_only_tree(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(mkdir(at(f, "ws"), 0755), 0);
  assert_int_equal(mkdir(at(f, "ws/a"), 0755), 0);
  assert_int_equal(mkdir(at(f, "ws/a/b"), 0755), 0);
  put(f, "ws/a/b/file", "x");
  put(f, "ws/top", "y");
  assert_int_equal(chmod(at(f, "ws/a/b/file"), 0444), 0);
  assert_int_equal(chmod(at(f, "ws/a/b"), 0555), 0);
  assert_int_equal(chmod(at(f, "ws/a"), 0000), 0);
  assert_int_equal(ws_clear(at(f, "ws"), NULL), 0);
  assert_true(exists(f, "ws"));
  assert_false(exists(f, "ws/a"));
  assert_false(exists(f, "ws/top"));
}

static void test_symlinks_not_followed(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(mkdir(at(f, "outside"), 0755), 0);
  put(f, "outside/precious", "keep me");
  assert_int_equal(chmod(at(f, "outside"), 0555), 0);
  assert_int_equal(mkdir(at(f, "ws"), 0755), 0);
  assert_int_equal(symlink("../outside", at(f, "ws/link")), 0);
  assert_int_equal(symlink("../outside/precious", at(f, "ws/flink")), 0);
  assert_int_equal(ws_clear(at(f, "ws"), NULL), 0);
  assert_false(exists(f, "ws/link"));
  assert_false(exists(f, "ws/flink"));
  assert_true(exists(f, "outside/precious"));
  {
    struct stat st;

    /* Not even the mode of the link's target changes. */
    assert_int_equal(stat(at(f, "outside"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0555);
  }
  assert_int_equal(chmod(at(f, "outside"), 0755), 0);
}

static void test_keep_entries(void **state)
{
  struct fixture *f = *state;
  const char *const keep[] = {"_runner_file_commands", NULL};

  assert_int_equal(mkdir(at(f, "_runner_file_commands"), 0755), 0);
  put(f, "_runner_file_commands/set_env_1", "");
  put(f, "stale", "");
  assert_int_equal(ws_clear(f->root, keep), 0);
  assert_true(exists(f, "_runner_file_commands/set_env_1"));
  assert_false(exists(f, "stale"));
}

static void test_missing_dir_is_fine(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(ws_clear(at(f, "nope"), NULL), 0);
}

static void test_disk_used_and_free(void **state)
{
  struct fixture *f = *state;
  char buf[65536];
  uint64_t used = 0, free_bytes = 0;
  int fd;

  memset(buf, 'x', sizeof(buf));
  assert_int_equal(mkdir(at(f, "ws"), 0755), 0);
  fd = open(at(f, "ws/big"), O_WRONLY | O_CREAT, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
  assert_int_equal(fsync(fd), 0);
  close(fd);
  assert_int_equal(ws_disk_used(at(f, "ws"), &used), 0);
  assert_true(used >= sizeof(buf));
  assert_int_equal(ws_disk_free(f->root, &free_bytes), 0);
  assert_true(free_bytes > 0);
  assert_int_equal(ws_disk_used(at(f, "absent"), &used), 0);
  assert_int_equal(used, 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_clear_read_only_tree, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_symlinks_not_followed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_keep_entries, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_dir_is_fine, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_disk_used_and_free, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
