#ifndef RUNFLEET_RAND_H
#define RUNFLEET_RAND_H

#include <stddef.h>

/* Fills buf with n bytes from the kernel's random source (getrandom(2)),
 * for secrets and for identifiers that must not repeat across processes.
 * Returns 0 or a negative errno. */
int rand_bytes(void *buf, size_t n);

#endif
