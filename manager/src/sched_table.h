#ifndef RUNFLEET_SCHED_TABLE_H
#define RUNFLEET_SCHED_TABLE_H

#include <stddef.h>
#include <stdint.h>

/* Part of the scheduler, used by its files only: the hash tables it finds
 * jobs, runners and groups in, and the interned strings and label sets
 * its jobs share. */

/* Open addressing with linear probing over pointers to elements, at most
 * half full. An element's hash comes from a callback, so a deletion can
 * shift the rest of its probe run back instead of leaving tombstones, and
 * the table shrinks again after a burst. Zeroed is empty. */
struct sched_table {
  void **slots; /* NULL while empty */
  size_t mask;  /* capacity - 1 */
  size_t n;
};

typedef uint64_t (*sched_hash_cb)(const void *elem);

/* A 64-bit mix of x, and a hash of n bytes. */
uint64_t sched_mix64(uint64_t x);
uint64_t sched_hash_bytes(const char *p, size_t n);

/* Adds elem, whose hash is h. Returns 0, or -1 when memory runs out. */
int sched_table_add(struct sched_table *t, void *elem, uint64_t h,
                    sched_hash_cb hash);
/* Visits the elements that may match hash h: set *k = h, then call until
 * it returns NULL; the caller compares keys. */
void *sched_table_probe(const struct sched_table *t, size_t *k);
/* Removes elem, whose hash is h, if it is there. */
void sched_table_del(struct sched_table *t, const void *elem, uint64_t h,
                     sched_hash_cb hash);
/* Frees the slots (not the elements) and empties t. */
void sched_table_free(struct sched_table *t);

/* The length of src cut to fit size bytes with its NUL, at a UTF-8
 * character boundary, so what is kept stays valid UTF-8 (the API encodes
 * it as JSON). */
size_t sched_cut_len(const char *src, size_t size);

/* Interned strings, one copy per distinct value with a count of its
 * holders: a repository's name goes when its last job does, so churn
 * through many repositories leaves nothing behind. Returns src (NULL as
 * ""), cut to size bytes, with one more reference, or NULL when memory
 * runs out. "" is never counted. */
const char *sched_intern(struct sched_table *t, const char *src, size_t size);
/* Drops a reference taken by sched_intern (NULL is ignored). */
void sched_intern_drop(struct sched_table *t, const char *s);
/* References held on str in t, 0 when it is not there. */
unsigned sched_intern_refs_of(const struct sched_table *t, const char *str);

/* Interned label sets: the first n (at most max) labels, lower-cased, in
 * order. Returns the set with one more reference, or NULL when memory
 * runs out; sched_labels_count says how many labels it has. */
char *const *sched_labels_intern(struct sched_table *t, char *const *labels,
                                 size_t n, size_t max);
size_t sched_labels_count(char *const *set);
void sched_labels_drop(struct sched_table *t, char *const *set);

#endif
