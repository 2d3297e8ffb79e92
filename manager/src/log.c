#include "log.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The logger is process-wide by nature (one stderr); its two settings are
 * the only module-level state. */
static enum log_level log_threshold = LOG_INFO;
static int log_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, int json)
{
  log_threshold = level;
  log_json = json;
}

static void timestamp(char *out, size_t size)
{
  struct timespec ts;
  struct tm tm;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  /* strftime bounds the date part; the milliseconds are 0-999. */
  if (strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
    out[0] = '\0';
    return;
  }
  snprintf(out + strlen(out), size - strlen(out), ".%03dZ",
           (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Length of the well-formed UTF-8 sequence at s (1-4), or 0 when the bytes
 * there are not one (overlong, surrogate, past U+10FFFF, cut short). */
static size_t utf8_len(const unsigned char *s)
{
  size_t n, i;
  unsigned cp;

  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) {
    n = 2;
    cp = s[0] & 0x1f;
  } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
    n = 3;
    cp = s[0] & 0x0f;
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    n = 4;
    cp = s[0] & 0x07;
  } else {
    return 0;
  }
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

/* Appends s as a quoted string, escaped the same way for logfmt and JSON:
 * quotes, backslashes and control characters become escapes, and bytes
 * that are not UTF-8 become U+FFFD, so no value can end the line, the
 * string or the field it is in. A value cut for space is still closed. */
static size_t put_quoted(char *out, size_t pos, size_t size, const char *s)
{
  const unsigned char *u = (const unsigned char *)s;
  size_t n;

  if (pos + 2 >= size)
    return pos;
  out[pos++] = '"';
  while (*u != '\0' && pos + 8 < size) {
    if (*u == '"' || *u == '\\') {
      out[pos++] = '\\';
      out[pos++] = (char)*u++;
    } else if (*u == '\n' || *u == '\r' || *u == '\t') {
      out[pos++] = '\\';
      out[pos++] = *u == '\n' ? 'n' : *u == '\r' ? 'r' : 't';
      u++;
    } else if (*u < 0x20 || *u == 0x7f) {
      pos += (size_t)snprintf(out + pos, size - pos, "\\u%04x", *u++);
    } else if ((n = utf8_len(u)) == 0) {
      memcpy(out + pos, "\\ufffd", 6);
      pos += 6;
      u++;
    } else {
      memcpy(out + pos, u, n);
      pos += n;
      u += n;
    }
  }
  out[pos++] = '"';
  return pos;
}

/* Whether v can stand bare in logfmt: not empty, and only printable ASCII
 * that cannot end the value or start another field. */
static int logfmt_bare(const char *v)
{
  if (*v == '\0')
    return 0;
  for (; *v != '\0'; v++)
    if (*v <= ' ' || *v > '~' || *v == '"' || *v == '=' || *v == '\\')
      return 0;
  return 1;
}

/* Consumes from ap the argument(s) of the printf conversion at fmt (just
 * after its '%') and returns where the conversion ends. The format is the
 * caller's literal, checked by the compiler against its arguments. */
static const char *skip_conversion(const char *fmt, va_list *ap)
{
  int longs = 0, size_t_ = 0, intmax = 0, ptrdiff = 0, ldouble = 0;

  while (*fmt != '\0' && strchr("-+ #0'", *fmt) != NULL)
    fmt++;
  if (*fmt == '*') {
    (void)va_arg(*ap, int);
    fmt++;
  }
  while (*fmt >= '0' && *fmt <= '9')
    fmt++;
  if (*fmt == '.') {
    fmt++;
    if (*fmt == '*') {
      (void)va_arg(*ap, int);
      fmt++;
    }
    while (*fmt >= '0' && *fmt <= '9')
      fmt++;
  }
  for (;; fmt++) {
    if (*fmt == 'h')
      continue; /* promoted to int */
    else if (*fmt == 'l')
      longs++;
    else if (*fmt == 'z')
      size_t_ = 1;
    else if (*fmt == 'j')
      intmax = 1;
    else if (*fmt == 't')
      ptrdiff = 1;
    else if (*fmt == 'L')
      ldouble = 1;
    else
      break;
  }
  switch (*fmt) {
  case 'd':
  case 'i':
  case 'u':
  case 'x':
  case 'X':
  case 'o':
  case 'c':
    if (size_t_)
      (void)va_arg(*ap, size_t);
    else if (intmax)
      (void)va_arg(*ap, intmax_t);
    else if (ptrdiff)
      (void)va_arg(*ap, ptrdiff_t);
    else if (longs >= 2)
      (void)va_arg(*ap, long long);
    else if (longs == 1)
      (void)va_arg(*ap, long);
    else
      (void)va_arg(*ap, int);
    break;
  case 'f':
  case 'F':
  case 'e':
  case 'E':
  case 'g':
  case 'G':
  case 'a':
  case 'A':
    if (ldouble)
      (void)va_arg(*ap, long double);
    else
      (void)va_arg(*ap, double);
    break;
  case 's':
  case 'p':
  case 'n':
    (void)va_arg(*ap, void *);
    break;
  case '\0':
    return fmt;
  default:
    break; /* '%%' and the unknown take no argument */
  }
  return fmt + 1;
}

/* Formats one field's value: the printf format in [fmt, end) with the
 * arguments at *ap, which it then moves past them. */
static void format_value(char *val, size_t size, const char *fmt,
                         const char *end, va_list *ap)
{
  char piece[256];
  size_t n = (size_t)(end - fmt);
  const char *p;
  va_list copy;

  if (n >= sizeof(piece))
    n = sizeof(piece) - 1;
  memcpy(piece, fmt, n);
  piece[n] = '\0';
  va_copy(copy, *ap);
  vsnprintf(val, size, piece, copy);
  va_end(copy);
  for (p = piece; *p != '\0'; p++)
    if (*p == '%')
      p = skip_conversion(p + 1, ap) - 1;
}

/* Appends the fields of a "k=v k2=\"v2\" ..." format, each value formatted
 * on its own and then quoted or escaped by the logger, never by the caller:
 * logfmt ` k=v` or JSON `,"k":"v"`. */
static size_t put_fields(char *out, size_t pos, size_t size, int json,
                         const char *fields, va_list *ap)
{
  const char *p = fields, *key, *v, *vend;
  char val[1024];
  size_t klen;

  while (*p != '\0' && pos + 16 < size) {
    while (*p == ' ')
      p++;
    if (*p == '\0')
      break;
    key = p;
    while (*p != '\0' && *p != '=' && *p != ' ')
      p++;
    klen = (size_t)(p - key);
    if (*p == '=')
      p++;
    if (*p == '"') {
      v = ++p;
      while (*p != '\0' && *p != '"')
        p++;
      vend = p;
      if (*p == '"')
        p++;
    } else {
      v = p;
      while (*p != '\0' && *p != ' ')
        p++;
      vend = p;
    }
    format_value(val, sizeof(val), v, vend, ap);
    if (klen == 0 || klen > 64)
      continue;
    if (pos + klen + 16 >= size)
      break;
    if (json) {
      out[pos++] = ',';
      out[pos++] = '"';
      memcpy(out + pos, key, klen);
      pos += klen;
      out[pos++] = '"';
      out[pos++] = ':';
      pos = put_quoted(out, pos, size, val);
    } else {
      out[pos++] = ' ';
      memcpy(out + pos, key, klen);
      pos += klen;
      out[pos++] = '=';
      if (logfmt_bare(val) && pos + strlen(val) + 2 < size) {
        memcpy(out + pos, val, strlen(val));
        pos += strlen(val);
      } else {
        pos = put_quoted(out, pos, size, val);
      }
    }
  }
  return pos;
}

void log_write(enum log_level level, const char *mod, const char *msg,
               const char *fields, ...)
{
  char ts[40], buf[4096];
  size_t pos;
  va_list ap;

  if (level < log_threshold)
    return;
  timestamp(ts, sizeof(ts));
  if (log_json) {
    pos = (size_t)snprintf(buf, sizeof(buf),
                           "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":", ts,
                           level_names[level]);
    pos = put_quoted(buf, pos, sizeof(buf), mod);
    pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, ",\"msg\":");
    pos = put_quoted(buf, pos, sizeof(buf), msg);
  } else {
    pos = (size_t)snprintf(buf, sizeof(buf), "ts=%s level=%s mod=%s msg=", ts,
                           level_names[level], mod);
    pos = put_quoted(buf, pos, sizeof(buf), msg);
  }
  if (fields != NULL) {
    va_start(ap, fields);
    /* Room kept for the closing brace and the newline. */
    pos = put_fields(buf, pos, sizeof(buf) - 2, log_json, fields, &ap);
    va_end(ap);
  }
  if (log_json)
    buf[pos++] = '}';
  buf[pos++] = '\n';
  fwrite(buf, 1, pos, stderr);
}
