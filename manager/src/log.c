#include "log.h"

#include <stdarg.h>
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

/* Appends s as a quoted string, escaping quotes, backslashes and control
 * characters the same way for logfmt and JSON. */
static size_t put_quoted(char *out, size_t pos, size_t size, const char *s)
{
  if (pos < size)
    out[pos++] = '"';
  for (; *s != '\0' && pos + 7 < size; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[pos++] = '\\';
      out[pos++] = (char)c;
    } else if (c == '\n') {
      out[pos++] = '\\';
      out[pos++] = 'n';
    } else if (c < 0x20) {
      pos += (size_t)snprintf(out + pos, size - pos, "\\u%04x", c);
    } else {
      out[pos++] = (char)c;
    }
  }
  if (pos < size)
    out[pos++] = '"';
  return pos;
}

/* Converts logfmt fields (k=v k2="quoted v") to JSON members. */
static size_t put_json_fields(char *out, size_t pos, size_t size,
                              const char *fields)
{
  const char *p = fields;
  char key[64], val[1024];

  while (*p != '\0' && pos + 8 < size) {
    size_t k = 0, v = 0;
    while (*p == ' ')
      p++;
    if (*p == '\0')
      break;
    while (*p != '\0' && *p != '=' && *p != ' ' && k + 1 < sizeof(key))
      key[k++] = *p++;
    key[k] = '\0';
    if (*p == '=')
      p++;
    if (*p == '"') {
      p++;
      while (*p != '\0' && *p != '"' && v + 1 < sizeof(val)) {
        if (*p == '\\' && p[1] != '\0')
          p++;
        val[v++] = *p++;
      }
      if (*p == '"')
        p++;
    } else {
      while (*p != '\0' && *p != ' ' && v + 1 < sizeof(val))
        val[v++] = *p++;
    }
    val[v] = '\0';
    if (k == 0)
      continue;
    pos += (size_t)snprintf(out + pos, size - pos, ",");
    pos = put_quoted(out, pos, size, key);
    if (pos < size)
      out[pos++] = ':';
    pos = put_quoted(out, pos, size, val);
  }
  return pos;
}

void log_write(enum log_level level, const char *mod, const char *msg,
               const char *fields, ...)
{
  char ts[40], buf[4096], formatted[2048] = "";
  size_t pos;
  va_list ap;

  if (level < log_threshold)
    return;
  timestamp(ts, sizeof(ts));
  if (fields != NULL) {
    va_start(ap, fields);
    vsnprintf(formatted, sizeof(formatted), fields, ap);
    va_end(ap);
  }
  if (log_json) {
    pos = (size_t)snprintf(buf, sizeof(buf),
                           "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":", ts,
                           level_names[level]);
    pos = put_quoted(buf, pos, sizeof(buf), mod);
    pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, ",\"msg\":");
    pos = put_quoted(buf, pos, sizeof(buf), msg);
    pos = put_json_fields(buf, pos, sizeof(buf) - 2, formatted);
    pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, "}");
  } else {
    pos = (size_t)snprintf(buf, sizeof(buf), "ts=%s level=%s mod=%s msg=", ts,
                           level_names[level], mod);
    pos = put_quoted(buf, pos, sizeof(buf), msg);
    if (formatted[0] != '\0')
      pos += (size_t)snprintf(buf + pos, sizeof(buf) - pos, " %s", formatted);
  }
  if (pos >= sizeof(buf) - 1)
    pos = sizeof(buf) - 2;
  buf[pos++] = '\n';
  fwrite(buf, 1, pos, stderr);
}
