/* fs: mkdir -p with a mode, the parent of a path, and a tree removal that
 * gets through read-only and unreadable directories without following
 * symbolic links out of the tree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fs.h"

static int setup(void **state)
{
  char *dir = strdup("/tmp/runfleet-fs-XXXXXX");

  assert_non_null(dir);
  assert_non_null(mkdtemp(dir));
  *state = dir;
  return 0;
}

static int teardown(void **state)
{
  char *dir = *state;
  struct stat st;

  assert_int_equal(fs_rmtree(dir), 0);
  assert_int_equal(lstat(dir, &st), -1);
  free(dir);
  return 0;
}

static void path_in(char *out, size_t size, const char *dir, const char *rel)
{
  assert_true((size_t)snprintf(out, size, "%s/%s", dir, rel) < size);
}

static mode_t mode_of(const char *path)
{
  struct stat st;

  assert_int_equal(lstat(path, &st), 0);
  return st.st_mode & 07777;
}

static void touch(const char *path)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  assert_true(fd >= 0);
  assert_int_equal(close(fd), 0);
}

static void test_mkdir_p(void **state)
{
  const char *dir = *state;
  char p[PATH_MAX], q[PATH_MAX];
  mode_t old = umask(0);
  char *huge;

  path_in(p, sizeof(p), dir, "a/b/c");
  assert_int_equal(fs_mkdir_p(p, 0700), 0);
  assert_int_equal(mode_of(p), 0700);
  path_in(q, sizeof(q), dir, "a");
  assert_int_equal(mode_of(q), 0700);
  /* Existing directories are fine, a trailing slash too. */
  assert_int_equal(fs_mkdir_p(p, 0700), 0);
  path_in(p, sizeof(p), dir, "x/y/");
  assert_int_equal(fs_mkdir_p(p, 0755), 0);
  path_in(q, sizeof(q), dir, "x/y");
  assert_int_equal(mode_of(q), 0755);
  /* A file in the way is an error, not a success. */
  path_in(p, sizeof(p), dir, "file");
  touch(p);
  path_in(p, sizeof(p), dir, "file/sub");
  assert_int_equal(fs_mkdir_p(p, 0700), -ENOTDIR);
  assert_int_equal(fs_mkdir_p("", 0700), -ENAMETOOLONG);
  huge = malloc(PATH_MAX + 10);
  assert_non_null(huge);
  memset(huge, 'a', PATH_MAX + 9);
  huge[0] = '/';
  huge[PATH_MAX + 9] = '\0';
  assert_int_equal(fs_mkdir_p(huge, 0700), -ENAMETOOLONG);
  free(huge);
  umask(old);
}

static void test_mkdir_parent(void **state)
{
  const char *dir = *state;
  char p[PATH_MAX], q[PATH_MAX];
  struct stat st;

  path_in(p, sizeof(p), dir, "s/t/state.json");
  assert_int_equal(fs_mkdir_parent(p, 0700), 0);
  path_in(q, sizeof(q), dir, "s/t");
  assert_int_equal(lstat(q, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(lstat(p, &st), -1); /* the file itself is not made */
  assert_int_equal(fs_mkdir_parent("state.json", 0700), 0);
  assert_int_equal(fs_mkdir_parent("/state.json", 0700), 0);
}

static void test_rmtree(void **state)
{
  const char *dir = *state;
  char root[PATH_MAX], p[PATH_MAX], outside[PATH_MAX];

  path_in(root, sizeof(root), dir, "tree");
  path_in(p, sizeof(p), dir, "tree/ro/deep");
  assert_int_equal(fs_mkdir_p(p, 0700), 0);
  path_in(p, sizeof(p), dir, "tree/ro/deep/f");
  touch(p);
  path_in(p, sizeof(p), dir, "tree/unreadable/g");
  assert_int_equal(fs_mkdir_parent(p, 0700), 0);
  touch(p);
  /* Something outside the tree, linked from inside: it must survive. */
  path_in(outside, sizeof(outside), dir, "keep");
  touch(outside);
  path_in(p, sizeof(p), dir, "tree/link");
  assert_int_equal(symlink(outside, p), 0);
  path_in(p, sizeof(p), dir, "tree/dirlink");
  assert_int_equal(symlink(dir, p), 0);
  path_in(p, sizeof(p), dir, "tree/ro/deep");
  assert_int_equal(chmod(p, 0500), 0);
  path_in(p, sizeof(p), dir, "tree/ro");
  assert_int_equal(chmod(p, 0500), 0);
  path_in(p, sizeof(p), dir, "tree/unreadable");
  assert_int_equal(chmod(p, 0), 0);
  assert_int_equal(fs_rmtree(root), 0);
  assert_int_equal(access(root, F_OK), -1);
  assert_int_equal(access(outside, F_OK), 0);
  assert_int_equal(mode_of(outside), 0600);
  /* Gone already, or a single file: both fine. */
  assert_int_equal(fs_rmtree(root), 0);
  assert_int_equal(fs_rmtree(outside), 0);
  assert_int_equal(access(outside, F_OK), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_mkdir_p, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mkdir_parent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rmtree, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
