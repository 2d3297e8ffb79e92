#ifndef RUNFLEET_LOG_H
#define RUNFLEET_LOG_H

/* Leveled, structured logging to stderr: logfmt
 * (ts=... level=info mod=webhook msg="..." key=value) or JSON lines.
 * Callers pass the message and then key/value pairs as one printf format
 * whose output is appended as logfmt fields ("delivery=%s status=%d").
 * Secrets are never passed here. */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the threshold and the format (json != 0: JSON lines). */
void log_setup(enum log_level level, int json);

/* Writes one line at level for module mod if level passes the threshold.
 * fields may be NULL; otherwise a printf format of logfmt key=value pairs. */
void log_write(enum log_level level, const char *mod, const char *msg,
               const char *fields, ...) __attribute__((format(printf, 4, 5)));

#define log_debug(mod, msg, ...) log_write(LOG_DEBUG, mod, msg, __VA_ARGS__)
#define log_info(mod, msg, ...) log_write(LOG_INFO, mod, msg, __VA_ARGS__)
#define log_warn(mod, msg, ...) log_write(LOG_WARN, mod, msg, __VA_ARGS__)
#define log_error(mod, msg, ...) log_write(LOG_ERROR, mod, msg, __VA_ARGS__)

#endif
