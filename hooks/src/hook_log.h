#ifndef RUNFLEET_HOOK_LOG_H
#define RUNFLEET_HOOK_LOG_H

#include <stddef.h>

/* Output of runfleet-hook lands in the job's log. Plain lines go to stderr
 * prefixed "runfleet-hook: "; GitHub Actions workflow commands (::error::,
 * ::warning::) go to stdout, where the runner looks for them. No secret is
 * ever passed to these functions. */

/* Logs one plain line to stderr. */
void hlog_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "::warning::<message>" with the message escaped. */
void hlog_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "::error title=<title>::<message>", both escaped. */
void hlog_error(const char *title, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Escapes text for a workflow command's message (property != 0: for a
 * property value, which also escapes ':' and ','). Writes at most size
 * bytes including the terminator; returns 0 or -ENOSPC (truncated). */
int hlog_escape(char *out, size_t size, const char *text, int property);

#endif
