#ifndef RUNFLEET_SECRET_H
#define RUNFLEET_SECRET_H

#include <stddef.h>

/* Secrets kept in files (webhook secret, PAT, App key): one reader with
 * one trimming rule, and wiping before freeing. */

/* Reads the file at path, at most max bytes, into a new NUL-terminated
 * buffer with trailing newlines and carriage returns removed (editors and
 * `echo` add them; they are never part of a secret). Returns 0 with *out
 * and *len set, or a negative errno: -EFBIG past max bytes, -EINVAL when
 * nothing is left. Free *out with secret_wipe_free. */
int secret_read_file(const char *path, size_t max, char **out, size_t *len);

/* Whether the file at path is readable by its group or by others: 1 with
 * *mode set to its permission bits when it is, 0 when only its owner can
 * read it, or a negative errno when it cannot be examined. */
int secret_file_exposed(const char *path, unsigned *mode);

/* Overwrites the len bytes at s with zeros the compiler cannot drop, then
 * frees s. NULL is fine. */
void secret_wipe_free(char *s, size_t len);

/* secret_wipe_free for a NUL-terminated secret (a token). NULL is fine. */
void secret_free_str(char *s);

#endif
