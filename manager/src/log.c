#include "log.h"

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "unittest.h"

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

UNITTEST int log_key_valid(const char *key)
{
  size_t n;

  if (key == NULL)
    return 0;
  for (n = 0; key[n] != '\0'; n++)
    if (!((key[n] >= 'a' && key[n] <= 'z') ||
          (key[n] >= '0' && key[n] <= '9') || key[n] == '_'))
      return 0;
  return n > 0 && n <= LOG_KEY_MAX;
}

/* Formats one field's value as text into val, cut to size - 1 bytes like
 * the strings it holds; a NULL string is the empty string. */
static void format_value(char *val, size_t size, const struct log_field *f)
{
  switch (f->type) {
  case LOG_T_STR:
    snprintf(val, size, "%.*s", f->prec >= 0 ? f->prec : (int)(size - 1),
             f->v.s != NULL ? f->v.s : "");
    break;
  case LOG_T_INT:
    snprintf(val, size, "%jd", f->v.i);
    break;
  case LOG_T_UINT:
    snprintf(val, size, "%ju", f->v.u);
    break;
  case LOG_T_HEX:
    snprintf(val, size, "%jx", f->v.u);
    break;
  case LOG_T_DOUBLE:
    if (f->prec >= 0)
      snprintf(val, size, "%.*f", f->prec, f->v.f);
    else
      snprintf(val, size, "%g", f->v.f);
    break;
  default:
    val[0] = '\0';
    break;
  }
}

/* Appends a logfmt value: bare when it is safe, else quoted. */
static size_t put_logfmt_value(char *out, size_t pos, size_t size,
                               const char *val)
{
  size_t vlen = strlen(val);

  if (logfmt_bare(val) && pos + vlen + 2 < size) {
    memcpy(out + pos, val, vlen);
    return pos + vlen;
  }
  return put_quoted(out, pos, size, val);
}

/* Appends one field: logfmt ` k=v` or JSON `,"k":"v"`, the value quoted
 * and escaped by the logger, never by the caller. The key was checked. */
static size_t put_field(char *out, size_t pos, size_t size, int json,
                        const char *key, const char *val)
{
  size_t klen = strlen(key);

  if (pos + klen + 16 >= size)
    return pos;
  if (json) {
    out[pos++] = ',';
    out[pos++] = '"';
    memcpy(out + pos, key, klen);
    pos += klen;
    out[pos++] = '"';
    out[pos++] = ':';
    return put_quoted(out, pos, size, val);
  }
  out[pos++] = ' ';
  memcpy(out + pos, key, klen);
  pos += klen;
  out[pos++] = '=';
  return put_logfmt_value(out, pos, size, val);
}

/* Appends the fields up to the first NULL key. A key that is not valid is
 * a bug in the caller; without asserts its field says so instead of
 * writing a key that could break the line. */
static size_t put_fields(char *out, size_t pos, size_t size, int json,
                         const struct log_field *fields)
{
  const struct log_field *f;
  char val[LOG_VALUE_MAX + 1];

  for (f = fields; f->key != NULL && pos + 16 < size; f++) {
    if (!log_key_valid(f->key)) {
      assert(!"log key must be [a-z0-9_]{1,LOG_KEY_MAX}");
      snprintf(val, sizeof(val), "%s", f->key);
      pos = put_field(out, pos, size, json, "bad_key", val);
      continue;
    }
    format_value(val, sizeof(val), f);
    pos = put_field(out, pos, size, json, f->key, val);
  }
  return pos;
}

void log_fields(enum log_level level, const char *mod, const char *msg,
                const struct log_field *fields)
{
  char ts[40], buf[4096];
  size_t pos;

  if (level < log_threshold)
    return;
  if (mod == NULL)
    mod = "";
  if (msg == NULL)
    msg = "";
  timestamp(ts, sizeof(ts));
  if (log_json) {
    pos = (size_t)snprintf(buf, sizeof(buf),
                           "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":", ts,
                           level_names[level]);
    pos = put_quoted(buf, pos, sizeof(buf), mod);
    pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, ",\"msg\":");
    pos = put_quoted(buf, pos, sizeof(buf), msg);
  } else {
    /* The module comes from code; it is escaped all the same. */
    pos = (size_t)snprintf(buf, sizeof(buf), "ts=%s level=%s mod=", ts,
                           level_names[level]);
    pos = put_logfmt_value(buf, pos, sizeof(buf), mod);
    pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, " msg=");
    pos = put_quoted(buf, pos, sizeof(buf), msg);
  }
  /* Room kept for the closing brace and the newline. */
  if (fields != NULL)
    pos = put_fields(buf, pos, sizeof(buf) - 2, log_json, fields);
  if (log_json)
    buf[pos++] = '}';
  buf[pos++] = '\n';
  fwrite(buf, 1, pos, stderr);
}
