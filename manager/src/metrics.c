#include "metrics.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"
#include "unittest.h"

/* A label string longer than this, or with more pairs, is refused: the
 * registry is fed by our own code, so anything past it is a bug, and the
 * bound keeps one bad caller from growing the exposition without end. */
#define METRICS_MAX_LABELS_LEN 1024
#define METRICS_MAX_LABEL_PAIRS 16
#define METRICS_MAX_BUCKETS 64
/* Enough for any double printed by metrics_format_value. */
#define METRICS_NUM_LEN 32

struct metrics_series {
  char *labels; /* canonical: pairs sorted by label name */
  double value; /* counter or gauge */
  double sum;   /* histogram */
  unsigned long long count;
  unsigned long long *buckets; /* histogram, per bucket, not cumulative */
};

struct metrics_family {
  char *name;
  char *help;
  enum metrics_type type;
  double *bounds;
  size_t nbounds;
  struct metrics_series *series; /* sorted by labels */
  size_t nseries;
  size_t cap;
};

struct metrics {
  struct metrics_family *families; /* sorted by name */
  size_t nfamilies;
  size_t cap;
};

/* A growable output buffer; on allocation failure it remembers the error and
 * ignores further appends. */
struct metrics_label_pair {
  const char *name;
  size_t name_len;
  const char *value; /* escaped, without the quotes */
  size_t value_len;
};

UNITTEST int metrics_valid_name(const char *name)
{
  size_t i;

  if (name == NULL || name[0] == '\0')
    return 0;
  for (i = 0; name[i] != '\0'; i++) {
    char c = name[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return 0;
  }
  return 1;
}

static int label_name_char(char c, int first)
{
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
    return 1;
  return !first && c >= '0' && c <= '9';
}

static int pair_cmp(const void *a, const void *b)
{
  const struct metrics_label_pair *x = a;
  const struct metrics_label_pair *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);

  if (c != 0)
    return c;
  return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* Parses `a="x",b="y"` (values already escaped) into pairs. Returns the
 * number of pairs, or -1 when the string is not a label set. */
static int labels_parse(const char *s, struct metrics_label_pair *pairs)
{
  int n = 0;

  while (*s != '\0') {
    struct metrics_label_pair *p;

    if (n == METRICS_MAX_LABEL_PAIRS || !label_name_char(*s, 1))
      return -1;
    p = &pairs[n++];
    p->name = s;
    while (label_name_char(*s, 0))
      s++;
    p->name_len = (size_t)(s - p->name);
    if (s[0] != '=' || s[1] != '"')
      return -1;
    s += 2;
    p->value = s;
    while (*s != '"') {
      if (*s == '\0' || *s == '\n')
        return -1;
      if (*s == '\\') {
        if (s[1] != '\\' && s[1] != '"' && s[1] != 'n')
          return -1;
        s++;
      }
      s++;
    }
    p->value_len = (size_t)(s - p->value);
    s++;
    if (*s == ',')
      s++;
    else if (*s != '\0')
      return -1;
  }
  return n;
}

/* Rewrites labels with its pairs sorted by name, so that the same label set
 * written in another order names the same series. Refuses duplicate names
 * and, for histograms, the reserved "le". */
UNITTEST int metrics_canonical_labels(const char *labels, int histogram,
                                      char *out, size_t out_size)
{
  struct metrics_label_pair pairs[METRICS_MAX_LABEL_PAIRS];
  size_t len = 0;
  int n;
  int i;

  if (labels == NULL || strlen(labels) >= METRICS_MAX_LABELS_LEN ||
      out_size < strlen(labels) + 1)
    return -1;
  n = labels_parse(labels, pairs);
  if (n < 0)
    return -1;
  qsort(pairs, (size_t)n, sizeof(pairs[0]), pair_cmp);
  for (i = 0; i < n; i++) {
    if (i > 0 && pair_cmp(&pairs[i - 1], &pairs[i]) == 0)
      return -1;
    if (histogram && pairs[i].name_len == 2 &&
        memcmp(pairs[i].name, "le", 2) == 0)
      return -1;
    if (i > 0)
      out[len++] = ',';
    memcpy(out + len, pairs[i].name, pairs[i].name_len);
    len += pairs[i].name_len;
    out[len++] = '=';
    out[len++] = '"';
    memcpy(out + len, pairs[i].value, pairs[i].value_len);
    len += pairs[i].value_len;
    out[len++] = '"';
  }
  out[len] = '\0';
  return 0;
}

/* Formats v as Prometheus does: NaN, +Inf, -Inf, integers without an
 * exponent, otherwise the shortest decimal that reads back as v. */
UNITTEST char *metrics_format_value(double v, char *out, size_t out_size)
{
  int prec;

  if (isnan(v)) {
    snprintf(out, out_size, "NaN");
  } else if (isinf(v)) {
    snprintf(out, out_size, "%s", v > 0 ? "+Inf" : "-Inf");
  } else if (v == floor(v) && fabs(v) < 1e15) {
    /* Integral and exact in a double: plain digits, and no "-0". */
    snprintf(out, out_size, "%.0f", v == 0 ? 0.0 : v);
  } else {
    for (prec = 1; prec <= 17; prec++) {
      snprintf(out, out_size, "%.*g", prec, v);
      if (strtod(out, NULL) == v)
        break;
    }
  }
  return out;
}

char *metrics_escape(const char *value, char *out, size_t out_size)
{
  size_t o = 0;

  if (out_size == 0)
    return out;
  for (; value != NULL && *value != '\0'; value++) {
    const char *rep = NULL;
    size_t n;

    if (*value == '\\')
      rep = "\\\\";
    else if (*value == '"')
      rep = "\\\"";
    else if (*value == '\n')
      rep = "\\n";
    n = rep != NULL ? 2 : 1;
    /* Never cut an escape sequence in half. */
    if (o + n >= out_size)
      break;
    if (rep != NULL)
      memcpy(out + o, rep, 2);
    else
      out[o] = *value;
    o += n;
  }
  out[o] = '\0';
  return out;
}

/* HELP text escapes only backslash and newline (format 0.0.4). */
static void buf_help(struct strbuf *b, const char *help)
{
  for (; *help != '\0'; help++) {
    if (*help == '\\')
      strbuf_puts(b, "\\\\");
    else if (*help == '\n')
      strbuf_puts(b, "\\n");
    else
      strbuf_append(b, help, 1);
  }
}

static void buf_sample(struct strbuf *b, const char *name, const char *suffix,
                       const char *labels, const char *le, double value)
{
  char num[METRICS_NUM_LEN];
  int any = labels[0] != '\0' || le != NULL;

  strbuf_puts(b, name);
  strbuf_puts(b, suffix);
  if (any) {
    strbuf_puts(b, "{");
    strbuf_puts(b, labels);
    if (le != NULL) {
      if (labels[0] != '\0')
        strbuf_puts(b, ",");
      strbuf_puts(b, "le=\"");
      strbuf_puts(b, le);
      strbuf_puts(b, "\"");
    }
    strbuf_puts(b, "}");
  }
  strbuf_puts(b, " ");
  strbuf_puts(b, metrics_format_value(value, num, sizeof(num)));
  strbuf_puts(b, "\n");
}

static const char *type_name(enum metrics_type type)
{
  switch (type) {
  case METRICS_COUNTER:
    return "counter";
  case METRICS_GAUGE:
    return "gauge";
  case METRICS_HISTOGRAM:
    return "histogram";
  }
  return "untyped";
}

static void render_family(struct strbuf *b, const struct metrics_family *f)
{
  char le[METRICS_NUM_LEN];
  size_t i;
  size_t k;

  strbuf_puts(b, "# HELP ");
  strbuf_puts(b, f->name);
  strbuf_puts(b, " ");
  buf_help(b, f->help);
  strbuf_puts(b, "\n# TYPE ");
  strbuf_puts(b, f->name);
  strbuf_puts(b, " ");
  strbuf_puts(b, type_name(f->type));
  strbuf_puts(b, "\n");
  for (i = 0; i < f->nseries; i++) {
    const struct metrics_series *s = &f->series[i];
    unsigned long long cum = 0;

    if (f->type != METRICS_HISTOGRAM) {
      buf_sample(b, f->name, "", s->labels, NULL, s->value);
      continue;
    }
    for (k = 0; k < f->nbounds; k++) {
      cum += s->buckets[k];
      metrics_format_value(f->bounds[k], le, sizeof(le));
      buf_sample(b, f->name, "_bucket", s->labels, le, (double)cum);
    }
    buf_sample(b, f->name, "_bucket", s->labels, "+Inf", (double)s->count);
    buf_sample(b, f->name, "_sum", s->labels, NULL, s->sum);
    buf_sample(b, f->name, "_count", s->labels, NULL, (double)s->count);
  }
}

char *metrics_render(const struct metrics *m, size_t *len)
{
  struct strbuf b = {0};
  size_t i;

  for (i = 0; m != NULL && i < m->nfamilies; i++)
    render_family(&b, &m->families[i]);
  return strbuf_take(&b, len);
}

/* Binary search of n sorted elements of size bytes each, keyed by the string
 * pointer at offset off; returns the index of the match, or where key would
 * go with *found = 0. */
static size_t sorted_find(const void *base, size_t n, size_t size, size_t off,
                          const char *key, int *found)
{
  size_t lo = 0;
  size_t hi = n;

  *found = 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const char *k = *(char *const *)((const char *)base + mid * size + off);
    int c = strcmp(k, key);

    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static size_t family_find(const struct metrics *m, const char *name, int *found)
{
  return sorted_find(m->families, m->nfamilies, sizeof(*m->families),
                     offsetof(struct metrics_family, name), name, found);
}

static size_t series_find(const struct metrics_family *f, const char *labels,
                          int *found)
{
  return sorted_find(f->series, f->nseries, sizeof(*f->series),
                     offsetof(struct metrics_series, labels), labels, found);
}

static void series_free(struct metrics_series *s)
{
  free(s->labels);
  free(s->buckets);
}

static void family_free(struct metrics_family *f)
{
  size_t i;

  for (i = 0; i < f->nseries; i++)
    series_free(&f->series[i]);
  free(f->series);
  free(f->bounds);
  free(f->help);
  free(f->name);
}

struct metrics *metrics_new(void)
{
  return calloc(1, sizeof(struct metrics));
}

void metrics_destroy(struct metrics *m)
{
  size_t i;

  if (m == NULL)
    return;
  for (i = 0; i < m->nfamilies; i++)
    family_free(&m->families[i]);
  free(m->families);
  free(m);
}

static int valid_buckets(const double *buckets, size_t nbuckets)
{
  size_t i;

  if (nbuckets > METRICS_MAX_BUCKETS || (nbuckets > 0 && buckets == NULL))
    return 0;
  for (i = 0; i < nbuckets; i++) {
    if (isnan(buckets[i]) || isinf(buckets[i]))
      return 0;
    if (i > 0 && !(buckets[i] > buckets[i - 1]))
      return 0;
  }
  return 1;
}

int metrics_declare(struct metrics *m, const char *name, enum metrics_type type,
                    const char *help, const double *buckets, size_t nbuckets)
{
  struct metrics_family f = {0};
  size_t at;
  int found;

  if (m == NULL || !metrics_valid_name(name))
    return -1;
  if (type != METRICS_COUNTER && type != METRICS_GAUGE &&
      type != METRICS_HISTOGRAM)
    return -1;
  at = family_find(m, name, &found);
  if (found) {
    /* Declaring again with the same type is harmless (a reload does it). */
    return m->families[at].type == type ? 0 : -1;
  }
  if (type == METRICS_HISTOGRAM && !valid_buckets(buckets, nbuckets))
    return -1;
  if (m->nfamilies == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct metrics_family *p = realloc(m->families, cap * sizeof(*p));

    if (p == NULL)
      return -1;
    m->families = p;
    m->cap = cap;
  }
  f.type = type;
  f.name = strdup(name);
  f.help = strdup(help != NULL ? help : "");
  if (f.name == NULL || f.help == NULL)
    goto fail;
  if (type == METRICS_HISTOGRAM && nbuckets > 0) {
    f.bounds = malloc(nbuckets * sizeof(double));
    if (f.bounds == NULL)
      goto fail;
    memcpy(f.bounds, buckets, nbuckets * sizeof(double));
    f.nbounds = nbuckets;
  }
  memmove(&m->families[at + 1], &m->families[at],
          (m->nfamilies - at) * sizeof(f));
  m->families[at] = f;
  m->nfamilies++;
  return 0;

fail:
  family_free(&f);
  return -1;
}

/* Finds the series of family name with labels, creating it when create is
 * set. NULL when the family is missing or of another type, the labels are
 * malformed, or out of memory. */
static struct metrics_series *series_get(struct metrics *m, const char *name,
                                         enum metrics_type type,
                                         const char *labels, int create)
{
  char canon[METRICS_MAX_LABELS_LEN];
  struct metrics_family *f;
  struct metrics_series s = {0};
  size_t at;
  int found;

  if (m == NULL || name == NULL)
    return NULL;
  at = family_find(m, name, &found);
  if (!found || m->families[at].type != type)
    return NULL;
  f = &m->families[at];
  if (metrics_canonical_labels(labels != NULL ? labels : "",
                               type == METRICS_HISTOGRAM, canon,
                               sizeof(canon)) != 0)
    return NULL;
  at = series_find(f, canon, &found);
  if (found)
    return &f->series[at];
  if (!create)
    return NULL;
  if (f->nseries == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 8;
    struct metrics_series *p = realloc(f->series, cap * sizeof(*p));

    if (p == NULL)
      return NULL;
    f->series = p;
    f->cap = cap;
  }
  s.labels = strdup(canon);
  if (s.labels == NULL)
    return NULL;
  if (type == METRICS_HISTOGRAM && f->nbounds > 0) {
    s.buckets = calloc(f->nbounds, sizeof(*s.buckets));
    if (s.buckets == NULL) {
      series_free(&s);
      return NULL;
    }
  }
  memmove(&f->series[at + 1], &f->series[at], (f->nseries - at) * sizeof(s));
  f->series[at] = s;
  f->nseries++;
  return &f->series[at];
}

int metrics_counter_add(struct metrics *m, const char *name, const char *labels,
                        double delta)
{
  struct metrics_series *s;

  /* Counters only go up. */
  if (isnan(delta) || delta < 0)
    return -1;
  s = series_get(m, name, METRICS_COUNTER, labels, 1);
  if (s == NULL)
    return -1;
  s->value += delta;
  return 0;
}

int metrics_gauge_set(struct metrics *m, const char *name, const char *labels,
                      double value)
{
  struct metrics_series *s = series_get(m, name, METRICS_GAUGE, labels, 1);

  if (s == NULL)
    return -1;
  s->value = value;
  return 0;
}

int metrics_histogram_observe(struct metrics *m, const char *name,
                              const char *labels, double value)
{
  struct metrics_series *s;
  const struct metrics_family *f;
  size_t at;
  size_t k;
  int found;

  if (isnan(value))
    return -1;
  s = series_get(m, name, METRICS_HISTOGRAM, labels, 1);
  if (s == NULL)
    return -1;
  at = family_find(m, name, &found);
  assert(found);
  f = &m->families[at];
  for (k = 0; k < f->nbounds; k++) {
    if (value <= f->bounds[k]) {
      s->buckets[k]++;
      break;
    }
  }
  s->count++;
  s->sum += value;
  return 0;
}

void metrics_gauge_reset(struct metrics *m, const char *name)
{
  struct metrics_family *f;
  size_t at;
  size_t i;
  int found;

  if (m == NULL || name == NULL)
    return;
  at = family_find(m, name, &found);
  if (!found || m->families[at].type != METRICS_GAUGE)
    return;
  f = &m->families[at];
  for (i = 0; i < f->nseries; i++)
    series_free(&f->series[i]);
  f->nseries = 0;
}

double metrics_value(const struct metrics *m, const char *name,
                     const char *labels)
{
  /* series_get does not modify the registry when create is 0. */
  struct metrics *mm = (struct metrics *)m;
  const struct metrics_series *s;

  s = series_get(mm, name, METRICS_COUNTER, labels, 0);
  if (s == NULL)
    s = series_get(mm, name, METRICS_GAUGE, labels, 0);
  if (s != NULL)
    return s->value;
  /* For a histogram, the number of observations. */
  s = series_get(mm, name, METRICS_HISTOGRAM, labels, 0);
  return s != NULL ? (double)s->count : 0;
}
