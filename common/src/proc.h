#ifndef RUNFLEET_PROC_H
#define RUNFLEET_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Reading /proc/<pid>/: both binaries find the processes a runner left by
 * what their environment says. */

/* Reads at most max bytes of /proc/<pid>/<file> into buf (max + 1 bytes)
 * and terminates them; returns the length, or -1 when it cannot be read. */
ssize_t proc_read(long pid, const char *file, char *buf, size_t max);

/* The value of the first name=value entry of /proc/<pid>/environ, read
 * into buf (max + 1 bytes), as getenv(name) in that process would have
 * given it at its start; NULL when it has none or the file is unreadable
 * (another user's process, a kernel thread). */
const char *proc_environ_value(long pid, const char *name, char *buf,
                               size_t max);

#endif
