#include "rand.h"

#include <errno.h>
#include <sys/random.h>

int rand_bytes(void *buf, size_t n)
{
  unsigned char *p = buf;
  ssize_t got;

  while (n > 0) {
    got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += got;
    n -= (size_t)got;
  }
  return 0;
}
