#ifndef RUNFLEET_STRBUF_H
#define RUNFLEET_STRBUF_H

#include <stddef.h>

/* A growable, NUL-terminated text buffer with a ceiling (curl's dynbuf):
 * appends past max, or when memory runs out, mark it failed and are
 * ignored from then on, so a writer checks once at the end. */

struct strbuf {
  char *data; /* NULL until the first append */
  size_t len;
  size_t cap;
  size_t max; /* most bytes of text it may hold; 0: STRBUF_DEFAULT_MAX */
  int failed;
};

#define STRBUF_DEFAULT_MAX (64u << 20)

/* Appends n bytes of s. */
void strbuf_append(struct strbuf *b, const char *s, size_t n);

/* Appends a NUL-terminated string. */
void strbuf_puts(struct strbuf *b, const char *s);

/* Appends printf-formatted text. */
void strbuf_printf(struct strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Gives the text to the caller (who frees it), with its length in *len;
 * NULL (and the buffer freed) when it failed. The buffer is empty after. */
char *strbuf_take(struct strbuf *b, size_t *len);

/* Frees the text. */
void strbuf_free(struct strbuf *b);

#endif
