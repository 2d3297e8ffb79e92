/* The floor of webhook ingest: what every delivery costs before runfleetd
 * does anything of its own, on one core. Reads the requests bench_webhook.py
 * sends (a file of records "<length>\n<raw HTTP request>"), and for each
 * copies the body into a buffer (as reading it from a socket does), checks
 * X-Hub-Signature-256 over it (webhook_sig.c, as the daemon does) and
 * parses it with jansson, over and over for a while.
 * Prints "bodies/s <n>".
 *
 *   bench_floor REQUESTS SECRET_FILE [SECONDS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "webhook_sig.h"

struct body {
  const char *data;
  size_t len;
  char signature[80];
};

static double now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long size;

  if (f == NULL)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
      fseek(f, 0, SEEK_SET) == 0) {
    buf = malloc((size_t)size + 1);
    if (buf != NULL && fread(buf, 1, (size_t)size, f) != (size_t)size) {
      free(buf);
      buf = NULL;
    }
    if (buf != NULL) {
      buf[size] = '\0';
      *len = (size_t)size;
    }
  }
  fclose(f);
  return buf;
}

/* Finds the body and the signature header of one raw request. */
static int parse_request(const char *req, size_t len, struct body *b)
{
  const char *end = NULL, *p;
  size_t i;

  for (i = 0; i + 3 < len; i++) {
    if (memcmp(req + i, "\r\n\r\n", 4) == 0) {
      end = req + i;
      break;
    }
  }
  if (end == NULL)
    return -1;
  b->data = end + 4;
  b->len = len - (size_t)(b->data - req);
  b->signature[0] = '\0';
  for (p = req; p < end;) {
    const char *eol = strstr(p, "\r\n");
    static const char name[] = "X-Hub-Signature-256:";
    if (eol == NULL || eol > end)
      eol = end;
    if ((size_t)(eol - p) > sizeof(name) &&
        strncasecmp(p, name, sizeof(name) - 1) == 0) {
      const char *v = p + sizeof(name) - 1;
      while (*v == ' ')
        v++;
      snprintf(b->signature, sizeof(b->signature), "%.*s", (int)(eol - v), v);
    }
    p = eol + 2;
  }
  return b->signature[0] != '\0' ? 0 : -1;
}

int main(int argc, char **argv)
{
  size_t file_len, secret_len, n = 0, cap = 0, done = 0, i;
  double seconds = argc > 3 ? atof(argv[3]) : 3.0, t0, elapsed;
  char *file, *secret, *p, *end;
  struct body *bodies = NULL;
  char *buf;
  size_t buf_len = 0;

  if (argc < 3) {
    fprintf(stderr, "usage: bench_floor REQUESTS SECRET_FILE [SECONDS]\n");
    return 2;
  }
  file = read_file(argv[1], &file_len);
  secret = read_file(argv[2], &secret_len);
  if (file == NULL || secret == NULL) {
    fprintf(stderr, "bench_floor: cannot read %s or %s\n", argv[1], argv[2]);
    return 1;
  }
  while (secret_len > 0 &&
         (secret[secret_len - 1] == '\n' || secret[secret_len - 1] == '\r'))
    secret_len--;
  for (p = file, end = file + file_len; p < end;) {
    char *nl;
    size_t len = strtoul(p, &nl, 10);
    if (*nl != '\n' || len > (size_t)(end - nl - 1))
      break;
    if (n == cap) {
      struct body *b = realloc(bodies, (cap ? cap * 2 : 1024) * sizeof(*b));
      if (b == NULL)
        return 1;
      bodies = b;
      cap = cap ? cap * 2 : 1024;
    }
    if (parse_request(nl + 1, len, &bodies[n]) == 0)
      n++;
    p = nl + 1 + len;
  }
  if (n == 0) {
    fprintf(stderr, "bench_floor: no requests in %s\n", argv[1]);
    return 1;
  }
  for (i = 0; i < n; i++)
    if (bodies[i].len > buf_len)
      buf_len = bodies[i].len;
  buf = malloc(buf_len + 1);
  if (buf == NULL)
    return 1;
  t0 = now_s();
  do {
    for (i = 0; i < n; i++, done++) {
      json_error_t err;
      json_t *root;
      memcpy(buf, bodies[i].data, bodies[i].len);
      if (webhook_sig_verify((const unsigned char *)secret, secret_len,
                             (const unsigned char *)buf, bodies[i].len,
                             bodies[i].signature) != 0) {
        fprintf(stderr, "bench_floor: request %zu: bad signature\n", i);
        return 1;
      }
      root = json_loadb(buf, bodies[i].len, JSON_REJECT_DUPLICATES, &err);
      if (root == NULL) {
        fprintf(stderr, "bench_floor: request %zu: %s\n", i, err.text);
        return 1;
      }
      json_decref(root);
    }
    elapsed = now_s() - t0;
  } while (elapsed < seconds);
  printf("bodies/s %.0f\n", (double)done / elapsed);
  free(buf);
  free(bodies);
  free(secret);
  free(file);
  return 0;
}
