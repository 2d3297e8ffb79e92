#include "proc.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

ssize_t proc_read(long pid, const char *file, char *buf, size_t max)
{
  char path[64];
  size_t len = 0;
  ssize_t n;
  int fd;

  snprintf(path, sizeof(path), "/proc/%ld/%s", pid, file);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  while (len < max && (n = read(fd, buf + len, max - len)) > 0)
    len += (size_t)n;
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

const char *proc_environ_value(long pid, const char *name, char *buf,
                               size_t max)
{
  size_t nlen = strlen(name), off = 0, elen;
  ssize_t len = proc_read(pid, "environ", buf, max);

  /* Entries are NUL-terminated; the last may be cut at max, and buf[len]
   * is a NUL, so strnlen never runs past the data. */
  while (len > 0 && off < (size_t)len) {
    elen = strnlen(buf + off, (size_t)len - off);
    if (elen > nlen && buf[off + nlen] == '=' &&
        memcmp(buf + off, name, nlen) == 0)
      return buf + off + nlen + 1;
    off += elen + 1;
  }
  return NULL;
}
