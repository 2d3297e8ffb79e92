#include "workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "hook_log.h"

#define WS_MAX_DEPTH 256 /* one descriptor per level */

static void ws_note(int *first, int rc)
{
  if (rc < 0 && *first == 0)
    *first = rc;
}

static int ws_remove_at(int parent, const char *name, dev_t dev, int depth);

/* Removes the entries of the open directory fd (consumed). */
static int ws_empty_fd(int fd, dev_t dev, int depth, const char *const *keep)
{
  struct dirent *de;
  int first = 0;
  DIR *d;

  d = fdopendir(fd);
  if (d == NULL) {
    first = -errno;
    close(fd);
    return first;
  }
  while ((de = readdir(d)) != NULL) {
    const char *const *k;
    int kept = 0;

    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    for (k = keep; k != NULL && *k != NULL; k++)
      if (strcmp(*k, de->d_name) == 0)
        kept = 1;
    if (!kept)
      ws_note(&first, ws_remove_at(dirfd(d), de->d_name, dev, depth + 1));
  }
  closedir(d);
  return first;
}

static int ws_remove_at(int parent, const char *name, dev_t dev, int depth)
{
  struct stat st;
  int fd, rc;

  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : -errno;
  if (!S_ISDIR(st.st_mode)) {
    /* Files, symbolic links (the link itself), sockets, fifos: a file's
     * own mode does not matter, only its directory's. */
    if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
      return -errno;
    return 0;
  }
  if (st.st_dev != dev) {
    hlog_info("not removing %s: another filesystem is mounted there", name);
    return -EXDEV;
  }
  if (depth > WS_MAX_DEPTH)
    return -ELOOP;
  /* A directory the job made read-only (or unreadable) keeps its entries
   * until it is u+rwx again. */
  if ((st.st_mode & S_IRWXU) != S_IRWXU &&
      fchmodat(parent, name, (st.st_mode & 07777) | S_IRWXU, 0) < 0)
    return -errno;
  fd = openat(parent, name,
              O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return -errno;
  rc = ws_empty_fd(fd, dev, depth, NULL);
  if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && rc == 0)
    rc = -errno;
  return rc;
}

int ws_clear(const char *dir, const char *const *keep)
{
  struct stat st;
  int fd;

  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;
  if (fstat(fd, &st) < 0) {
    int rc = -errno;

    close(fd);
    return rc;
  }
  if ((st.st_mode & S_IRWXU) != S_IRWXU)
    (void)fchmod(fd, (st.st_mode & 07777) | S_IRWXU);
  return ws_empty_fd(fd, st.st_dev, 0, keep);
}

int ws_disk_free(const char *path, uint64_t *bytes)
{
  struct statvfs vfs;

  if (statvfs(path, &vfs) < 0)
    return -errno;
  *bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
  return 0;
}

static uint64_t ws_used_at(int parent, const char *name, dev_t dev, int depth)
{
  struct dirent *de;
  struct stat st;
  uint64_t total;
  DIR *d;
  int fd;

  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return 0;
  total = (uint64_t)st.st_blocks * 512u;
  if (!S_ISDIR(st.st_mode) || st.st_dev != dev || depth > WS_MAX_DEPTH)
    return total;
  fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return total;
  d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return total;
  }
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
      total += ws_used_at(dirfd(d), de->d_name, dev, depth + 1);
  }
  closedir(d);
  return total;
}

int ws_disk_used(const char *path, uint64_t *bytes)
{
  struct stat st;

  *bytes = 0;
  if (lstat(path, &st) < 0)
    return errno == ENOENT ? 0 : -errno;
  *bytes = ws_used_at(AT_FDCWD, path, st.st_dev, 0);
  return 0;
}
