#include "sched_table.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TABLE_MIN 16

uint64_t sched_mix64(uint64_t x)
{
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

uint64_t sched_hash_bytes(const char *p, size_t n)
{
  uint64_t h = FNV_OFFSET;
  size_t i;

  for (i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * FNV_PRIME;
  return sched_mix64(h);
}

static int table_resize(struct sched_table *t, size_t cap, sched_hash_cb hash)
{
  void **slots = calloc(cap, sizeof(*slots));
  size_t i, k;

  if (slots == NULL)
    return -1;
  for (i = 0; t->slots != NULL && i <= t->mask; i++) {
    if (t->slots[i] == NULL)
      continue;
    k = hash(t->slots[i]) & (cap - 1);
    while (slots[k] != NULL)
      k = (k + 1) & (cap - 1);
    slots[k] = t->slots[i];
  }
  free(t->slots);
  t->slots = slots;
  t->mask = cap - 1;
  return 0;
}

int sched_table_add(struct sched_table *t, void *elem, uint64_t h,
                    sched_hash_cb hash)
{
  size_t k;

  if (t->slots == NULL || (t->n + 1) * 2 > t->mask + 1)
    if (table_resize(t, t->slots == NULL ? TABLE_MIN : (t->mask + 1) * 2,
                     hash) != 0)
      return -1;
  for (k = h & t->mask; t->slots[k] != NULL; k = (k + 1) & t->mask)
    ;
  t->slots[k] = elem;
  t->n++;
  return 0;
}

void *sched_table_probe(const struct sched_table *t, size_t *k)
{
  void *e;

  if (t->slots == NULL)
    return NULL;
  e = t->slots[*k & t->mask];
  *k = (*k & t->mask) + 1;
  return e;
}

void sched_table_del(struct sched_table *t, const void *elem, uint64_t h,
                     sched_hash_cb hash)
{
  size_t i, j, home;

  if (t->slots == NULL)
    return;
  for (i = h & t->mask; t->slots[i] != elem; i = (i + 1) & t->mask)
    if (t->slots[i] == NULL)
      return;
  t->slots[i] = NULL;
  t->n--;
  /* Move back each later element of the run whose home is not in the
   * cyclic range (i, j]: past the hole it would not be found. */
  for (j = (i + 1) & t->mask; t->slots[j] != NULL; j = (j + 1) & t->mask) {
    home = hash(t->slots[j]) & t->mask;
    if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
      continue;
    t->slots[i] = t->slots[j];
    t->slots[j] = NULL;
    i = j;
  }
  /* Shrinking can fail harmlessly: the table stays as it is. */
  if (t->mask + 1 > TABLE_MIN && t->n * 8 < t->mask + 1)
    (void)table_resize(t, (t->mask + 1) / 2, hash);
}

void sched_table_free(struct sched_table *t)
{
  free(t->slots);
  memset(t, 0, sizeof(*t));
}

size_t sched_cut_len(const char *src, size_t size)
{
  size_t len = strlen(src);

  if (len >= size) {
    len = size - 1;
    while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
      len--;
  }
  return len;
}

struct istr {
  uint64_t hash;
  unsigned refs;
  uint32_t len;
  char s[];
};

struct iset {
  uint64_t hash;
  unsigned refs;
  uint32_t n;
  char *labels[]; /* n pointers, then the lower-cased strings */
};

static char empty_str[] = "";

static uint64_t istr_hash_cb(const void *e)
{
  return ((const struct istr *)e)->hash;
}

static uint64_t iset_hash_cb(const void *e)
{
  return ((const struct iset *)e)->hash;
}

static struct istr *istr_of(const char *s)
{
  return (struct istr *)(void *)((char *)(uintptr_t)s -
                                 offsetof(struct istr, s));
}

static struct iset *iset_of(char *const *labels)
{
  return (struct iset *)(void *)((char *)(uintptr_t)labels -
                                 offsetof(struct iset, labels));
}

static struct istr *istr_find(const struct sched_table *t, const char *s,
                              size_t len, uint64_t h)
{
  struct istr *e;
  size_t k;

  for (k = h; (e = sched_table_probe(t, &k)) != NULL;)
    if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0)
      return e;
  return NULL;
}

const char *sched_intern(struct sched_table *t, const char *src, size_t size)
{
  struct istr *e;
  size_t len;
  uint64_t h;

  if (src == NULL || src[0] == '\0')
    return empty_str;
  len = sched_cut_len(src, size);
  h = sched_hash_bytes(src, len);
  e = istr_find(t, src, len, h);
  if (e != NULL) {
    e->refs++;
    return e->s;
  }
  e = malloc(sizeof(*e) + len + 1);
  if (e == NULL)
    return NULL;
  e->hash = h;
  e->refs = 1;
  e->len = (uint32_t)len;
  memcpy(e->s, src, len);
  e->s[len] = '\0';
  if (sched_table_add(t, e, h, istr_hash_cb) != 0) {
    free(e);
    return NULL;
  }
  return e->s;
}

void sched_intern_drop(struct sched_table *t, const char *s)
{
  struct istr *e;

  if (s == NULL || s == empty_str)
    return;
  e = istr_of(s);
  if (--e->refs > 0)
    return;
  sched_table_del(t, e, e->hash, istr_hash_cb);
  free(e);
}

unsigned sched_intern_refs_of(const struct sched_table *t, const char *str)
{
  size_t len = strlen(str);
  struct istr *e = istr_find(t, str, len, sched_hash_bytes(str, len));

  return e != NULL ? e->refs : 0;
}

/* The hash of a label set as it is once lower-cased, with the bytes it
 * takes. */
static uint64_t labels_hash(char *const *labels, size_t n, size_t *bytes)
{
  uint64_t h = FNV_OFFSET;
  size_t i;

  *bytes = 0;
  for (i = 0; i < n; i++) {
    const char *c;
    for (c = labels[i]; *c != '\0'; c++)
      h = (h ^ (unsigned char)tolower((unsigned char)*c)) * FNV_PRIME;
    h = (h ^ 0xffu) * FNV_PRIME; /* no byte of a label: a separator */
    *bytes += (size_t)(c - labels[i]) + 1;
  }
  return sched_mix64(h ^ n);
}

char *const *sched_labels_intern(struct sched_table *t, char *const *labels,
                                 size_t n, size_t max)
{
  size_t i, k, bytes;
  struct iset *e;
  uint64_t h;
  char *p;

  if (n > max)
    n = max;
  h = labels_hash(labels, n, &bytes);
  for (k = h; (e = sched_table_probe(t, &k)) != NULL;) {
    if (e->hash != h || e->n != n)
      continue;
    /* Stored lower-cased: equal ignoring case is equal once lowered. */
    for (i = 0; i < n && strcasecmp(e->labels[i], labels[i]) == 0; i++)
      ;
    if (i == n) {
      e->refs++;
      return e->labels;
    }
  }
  e = malloc(sizeof(*e) + n * sizeof(char *) + bytes);
  if (e == NULL)
    return NULL;
  e->hash = h;
  e->refs = 1;
  e->n = (uint32_t)n;
  p = (char *)&e->labels[n];
  for (i = 0; i < n; i++) {
    const char *c;
    e->labels[i] = p;
    for (c = labels[i]; *c != '\0'; c++)
      *p++ = (char)tolower((unsigned char)*c);
    *p++ = '\0';
  }
  if (sched_table_add(t, e, h, iset_hash_cb) != 0) {
    free(e);
    return NULL;
  }
  return e->labels;
}

size_t sched_labels_count(char *const *set)
{
  return iset_of(set)->n;
}

void sched_labels_drop(struct sched_table *t, char *const *set)
{
  struct iset *e;

  if (set == NULL)
    return;
  e = iset_of(set);
  if (--e->refs > 0)
    return;
  sched_table_del(t, e, e->hash, iset_hash_cb);
  free(e);
}
