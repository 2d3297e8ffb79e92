#include "names.h"

/* The three kinds differ in which bytes they keep, what replaces the
 * others, how long they may be and which bytes may start or end them; one
 * loop does the mapping for all of them. */
struct names_kind {
  int fold_case;  /* upper case becomes lower case (DNS labels) */
  int keep_punct; /* '.', '_' and '-' are kept as they are */
  char repl;      /* what a run of other bytes becomes */
  size_t max;     /* longest result */
};

static int names_is_alnum(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* The byte s[i] stands for in the result, or 0 when it is replaced. */
static char names_map(const struct names_kind *k, unsigned char c)
{
  if (c >= 'A' && c <= 'Z')
    return k->fold_case ? (char)(c - 'A' + 'a') : (char)c;
  if (names_is_alnum(c))
    return (char)c;
  if (k->keep_punct && (c == '.' || c == '_' || c == '-'))
    return (char)c;
  if (!k->keep_punct && c == '-')
    return '-';
  return 0;
}

/* Maps s into out, collapsing runs of replaced bytes (and of dots) and
 * dropping anything but letters and digits at either end. */
static int names_build(const struct names_kind *k, const char *s, size_t len,
                       char *out, size_t out_size)
{
  size_t i, n = 0, max;

  if (out == NULL || out_size == 0)
    return -1;
  max = out_size - 1 < k->max ? out_size - 1 : k->max;
  for (i = 0; s != NULL && i < len && n < max; i++) {
    char c = names_map(k, (unsigned char)s[i]);

    if (c == 0)
      c = k->repl;
    if (n == 0 && !names_is_alnum((unsigned char)c))
      continue; /* nothing but a letter or digit may start it */
    if (c == k->repl && out[n - 1] == k->repl)
      continue;
    if (c == '.' && out[n - 1] == '.')
      continue; /* never "..", not even inside a name */
    out[n++] = c;
  }
  while (n > 0 && !names_is_alnum((unsigned char)out[n - 1]))
    n--;
  out[n] = '\0';
  return (int)n;
}

int names_dns_label(const char *s, size_t len, char *out, size_t out_size)
{
  static const struct names_kind dns = {1, 0, '-', NAMES_LABEL_MAX};
  int n = names_build(&dns, s, len, out, out_size);

  return n > 0 ? n : -1;
}

int names_label_value(const char *s, size_t len, char *out, size_t out_size)
{
  static const struct names_kind value = {0, 1, '_', NAMES_LABEL_MAX};

  return names_build(&value, s, len, out, out_size);
}

int names_file_component(const char *s, size_t len, char *out, size_t out_size)
{
  static const struct names_kind file = {0, 1, '_', NAMES_FILE_MAX};
  int n = names_build(&file, s, len, out, out_size);

  return n > 0 ? n : -1;
}
