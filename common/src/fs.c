#include "fs.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_RMTREE_PASSES 8 /* chmod passes for unreadable directories */

int fs_mkdir_p(const char *path, mode_t mode)
{
  char buf[PATH_MAX];
  size_t len = strlen(path), i;

  if (len == 0 || len >= sizeof(buf))
    return -ENAMETOOLONG;
  memcpy(buf, path, len + 1);
  for (i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != '\0')
      continue;
    buf[i] = '\0';
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
      return -errno;
    buf[i] = i < len ? '/' : '\0';
  }
  return 0;
}

int fs_mkdir_parent(const char *path, mode_t mode)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  size_t len;

  if (slash == NULL || slash == path)
    return 0;
  len = (size_t)(slash - path);
  if (len >= sizeof(dir))
    return -ENAMETOOLONG;
  memcpy(dir, path, len);
  dir[len] = '\0';
  return fs_mkdir_p(dir, mode);
}

/* nftw passes no user pointer; a walk runs on one thread, so thread-local
 * results are enough. */
static _Thread_local int rmtree_unreadable;
static _Thread_local int rmtree_error;

static int rmtree_chmod_cb(const char *path, const struct stat *st, int type,
                           struct FTW *ftw)
{
  (void)ftw;
  /* Only directories: chmod follows symbolic links, and FTW_PHYS reports
   * those as FTW_SL, so nothing outside the tree is touched. */
  if (type == FTW_D || type == FTW_DNR) {
    if ((st->st_mode & S_IRWXU) != S_IRWXU &&
        chmod(path, (st->st_mode & 07777) | S_IRWXU) < 0 && rmtree_error == 0)
      rmtree_error = -errno;
    if (type == FTW_DNR)
      rmtree_unreadable = 1;
  }
  return 0;
}

static int rmtree_remove_cb(const char *path, const struct stat *st, int type,
                            struct FTW *ftw)
{
  int rc;

  (void)st;
  (void)ftw;
  if (type == FTW_DP)
    rc = rmdir(path);
  else
    rc = unlink(path);
  if (rc < 0 && errno != ENOENT && rmtree_error == 0)
    rmtree_error = -errno;
  return 0;
}

int fs_rmtree(const char *path)
{
  struct stat st;
  int pass;

  rmtree_error = 0;
  if (lstat(path, &st) < 0)
    return errno == ENOENT ? 0 : -errno;
  /* A read-only directory cannot lose its entries, and an unreadable one
   * cannot even be listed: make every directory u+rwx first, again while
   * a pass finds one it could not read before. */
  for (pass = 0; pass < FS_RMTREE_PASSES; pass++) {
    rmtree_unreadable = 0;
    if (nftw(path, rmtree_chmod_cb, 16, FTW_PHYS | FTW_MOUNT) < 0)
      return errno == ENOENT ? 0 : -errno;
    if (!rmtree_unreadable)
      break;
  }
  rmtree_error = 0;
  if (nftw(path, rmtree_remove_cb, 16, FTW_PHYS | FTW_MOUNT | FTW_DEPTH) < 0)
    return errno == ENOENT ? 0 : -errno;
  if (lstat(path, &st) == 0)
    return rmtree_error < 0 ? rmtree_error : -ENOTEMPTY;
  return 0;
}
