#ifndef RUNFLEET_NAMES_H
#define RUNFLEET_NAMES_H

#include <stddef.h>

/* Names built from strings a webhook or a job sent (repository, job and
 * runner names, labels): each function maps any bytes, including
 * embedded NULs and UTF-8, onto what one kind of name allows, so that such
 * a string can become a Kubernetes object name or label value, or one
 * component of a path, without a parser on the other side ever seeing it
 * raw. The mapping is deterministic but not one-to-one ("a_b" and "a.b"
 * give the same DNS label): callers that need unique names add their own
 * suffix. Each writes a NUL-terminated result into out and returns its
 * length, or -1 when nothing usable is left (out is then "" if it has room). */

/* The longest DNS-1123 label and Kubernetes label value. */
#define NAMES_LABEL_MAX 63
/* The longest file-name component written; far below NAME_MAX (255). */
#define NAMES_FILE_MAX 128

/* A DNS-1123 label (Kubernetes object names such as pods): [a-z0-9-],
 * at most NAMES_LABEL_MAX, starting and ending with a letter or digit.
 * Upper case is folded; every run of other bytes becomes one '-'. */
int names_dns_label(const char *s, size_t len, char *out, size_t out_size);

/* A Kubernetes label value: [A-Za-z0-9._-], at most NAMES_LABEL_MAX,
 * starting and ending with a letter or digit. Every run of other bytes
 * becomes one '_'. Unlike the others, an empty result is valid (returns
 * 0): Kubernetes accepts an empty label value. */
int names_label_value(const char *s, size_t len, char *out, size_t out_size);

/* One file or directory name component: [A-Za-z0-9._-], at most
 * NAMES_FILE_MAX, never two dots in a row (so never "." or ".."), and
 * starting and ending with a letter or digit (no hidden files, nothing a
 * tool reads as an option). Every run of other bytes, '/' and NUL
 * included, becomes one '_'. */
int names_file_component(const char *s, size_t len, char *out, size_t out_size);

#endif
