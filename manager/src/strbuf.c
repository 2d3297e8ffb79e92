#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_FIRST_CAP 512u

void strbuf_append(struct strbuf *b, const char *s, size_t n)
{
  size_t max = b->max ? b->max : STRBUF_DEFAULT_MAX;

  if (b->failed)
    return;
  if (n > max - b->len) {
    b->failed = 1;
    return;
  }
  if (b->data == NULL || b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : STRBUF_FIRST_CAP;
    char *p;

    while (cap < b->len + n + 1)
      cap *= 2;
    p = realloc(b->data, cap);
    if (p == NULL) {
      b->failed = 1;
      return;
    }
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void strbuf_puts(struct strbuf *b, const char *s)
{
  strbuf_append(b, s, strlen(s));
}

void strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
  char small[256];
  char *big;
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = 1;
    return;
  }
  if ((size_t)n < sizeof(small)) {
    strbuf_append(b, small, (size_t)n);
    return;
  }
  big = malloc((size_t)n + 1);
  if (big == NULL) {
    b->failed = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  strbuf_append(b, big, (size_t)n);
  free(big);
}

char *strbuf_take(struct strbuf *b, size_t *len)
{
  char *out;

  strbuf_append(b, "", 0); /* an empty text is "" */
  if (b->failed) {
    strbuf_free(b);
    return NULL;
  }
  out = b->data;
  if (len != NULL)
    *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return out;
}

void strbuf_free(struct strbuf *b)
{
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  b->failed = 0;
}
