#include "secret.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int secret_read_file(const char *path, size_t max, char **out, size_t *len)
{
  char *buf;
  size_t n;
  FILE *f;
  int rc = 0;

  *out = NULL;
  *len = 0;
  f = fopen(path, "rb");
  if (f == NULL)
    return -errno;
  buf = malloc(max + 1);
  if (buf == NULL) {
    fclose(f);
    return -ENOMEM;
  }
  n = fread(buf, 1, max + 1, f);
  if (ferror(f))
    rc = -EIO;
  else if (n > max)
    rc = -EFBIG;
  fclose(f);
  while (rc == 0 && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  if (rc == 0 && n == 0)
    rc = -EINVAL;
  if (rc != 0) {
    secret_wipe_free(buf, max + 1);
    return rc;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

int secret_file_exposed(const char *path, unsigned *mode)
{
  struct stat st;

  if (stat(path, &st) != 0)
    return -errno;
  *mode = (unsigned)(st.st_mode & 07777);
  return (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
}

void secret_wipe_free(char *s, size_t len)
{
  if (s == NULL)
    return;
  explicit_bzero(s, len);
  free(s);
}

void secret_free_str(char *s)
{
  if (s != NULL)
    secret_wipe_free(s, strlen(s));
}
