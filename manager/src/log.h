#ifndef RUNFLEET_LOG_H
#define RUNFLEET_LOG_H

#include <stddef.h>
#include <stdint.h>

/* Leveled, structured logging to stderr: logfmt
 * (ts=... level=info mod=webhook msg="..." key=value) or JSON lines.
 * Callers pass the message and then typed key/value fields; the logger
 * formats, quotes and escapes every value itself, so no value can start a
 * new line or a new key:
 *
 *   log_info("fleet", "runner exited", LOG_S("runner", name),
 *            LOG_I("status", status));
 *   log_warn("fleet", "stopped", LOG_NONE);
 *
 * Keys come from code, never from input: [a-z0-9_]+, at most LOG_KEY_MAX
 * bytes. Secrets are never passed here. */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Longest key; a value is cut to LOG_VALUE_MAX bytes before escaping. */
#define LOG_KEY_MAX 64
#define LOG_VALUE_MAX 1023

/* How a field's value is held and printed. */
enum log_type {
  LOG_T_STR,    /* v.s, at most prec bytes of it when prec >= 0 */
  LOG_T_INT,    /* v.i as %jd */
  LOG_T_UINT,   /* v.u as %ju */
  LOG_T_HEX,    /* v.u as %jx */
  LOG_T_DOUBLE, /* v.f as %.*f with prec digits, or %g when prec < 0 */
};

/* One key/value pair; a list of them ends at the first NULL key. */
struct log_field {
  const char *key;
  enum log_type type;
  int prec;
  union {
    const char *s;
    intmax_t i;
    uintmax_t u;
    double f;
  } v;
};

/* A string (NULL logs as the empty string), an integer, an unsigned, an
 * unsigned in hex, a double as %g. LOG_SN keeps at most n bytes of the
 * string (printf's %.ns); LOG_FN prints n digits after the point (%.nf). */
#define LOG_S(k, val)                                                          \
  ((struct log_field){.key = (k), .type = LOG_T_STR, .prec = -1, .v.s = (val)})
#define LOG_SN(k, n, val)                                                      \
  ((struct log_field){.key = (k), .type = LOG_T_STR, .prec = (n), .v.s = (val)})
#define LOG_I(k, val)                                                          \
  ((struct log_field){.key = (k), .type = LOG_T_INT, .v.i = (val)})
#define LOG_U(k, val)                                                          \
  ((struct log_field){.key = (k), .type = LOG_T_UINT, .v.u = (val)})
#define LOG_X(k, val)                                                          \
  ((struct log_field){.key = (k), .type = LOG_T_HEX, .v.u = (val)})
#define LOG_F(k, val)                                                          \
  ((struct log_field){                                                         \
      .key = (k), .type = LOG_T_DOUBLE, .prec = -1, .v.f = (val)})
#define LOG_FN(k, n, val)                                                      \
  ((struct log_field){                                                         \
      .key = (k), .type = LOG_T_DOUBLE, .prec = (n), .v.f = (val)})

/* The only field of a line that has none; also ends every list. */
#define LOG_NONE ((struct log_field){.key = NULL})

/* Sets the threshold and the format (json != 0: JSON lines). */
void log_setup(enum log_level level, int json);

/* Writes one line at level for module mod if level passes the threshold,
 * with the fields up to the first NULL key. A key that is not
 * [a-z0-9_]{1,LOG_KEY_MAX} is a bug: it fails an assert, and where asserts
 * are off the field is written as bad_key="<key>" instead. */
void log_fields(enum log_level level, const char *mod, const char *msg,
                const struct log_field *fields);

#ifdef RUNFLEET_UNITTEST
/* Whether key may name a field: [a-z0-9_]{1,LOG_KEY_MAX}. */
int log_key_valid(const char *key);
#endif

/* Each takes at least one field: LOG_NONE where there is none. */
#define log_at(level, mod, msg, ...)                                           \
  log_fields((level), (mod), (msg),                                            \
             (const struct log_field[]){__VA_ARGS__, LOG_NONE})
#define log_debug(mod, msg, ...) log_at(LOG_DEBUG, mod, msg, __VA_ARGS__)
#define log_info(mod, msg, ...) log_at(LOG_INFO, mod, msg, __VA_ARGS__)
#define log_warn(mod, msg, ...) log_at(LOG_WARN, mod, msg, __VA_ARGS__)
#define log_error(mod, msg, ...) log_at(LOG_ERROR, mod, msg, __VA_ARGS__)

#endif
