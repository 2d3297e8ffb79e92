#include "hook_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define HLOG_LINE_MAX 2048u

int hlog_escape(char *out, size_t size, const char *text, int property)
{
  size_t n = 0;
  const char *p;

  if (size == 0)
    return -ENOSPC;
  for (p = text; *p != '\0'; p++) {
    const char *rep = NULL;
    size_t len;

    /* The runner's escaping rules (ActionCommand.cs). */
    if (*p == '%')
      rep = "%25";
    else if (*p == '\r')
      rep = "%0D";
    else if (*p == '\n')
      rep = "%0A";
    else if (property && *p == ':')
      rep = "%3A";
    else if (property && *p == ',')
      rep = "%2C";
    len = rep != NULL ? 3 : 1;
    if (n + len >= size) {
      out[n] = '\0';
      return -ENOSPC;
    }
    if (rep != NULL)
      memcpy(out + n, rep, 3);
    else
      out[n] = *p;
    n += len;
  }
  out[n] = '\0';
  return 0;
}

void hlog_info(const char *fmt, ...)
{
  char line[HLOG_LINE_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  fprintf(stderr, "runfleet-hook: %s\n", line);
  fflush(stderr);
}

static void hlog_command(const char *cmd, const char *title, const char *fmt,
                         va_list ap)
{
  char line[HLOG_LINE_MAX];
  char msg[HLOG_LINE_MAX * 3];
  char prop[HLOG_LINE_MAX];

  vsnprintf(line, sizeof(line), fmt, ap);
  /* A truncated message is still worth printing. */
  (void)hlog_escape(msg, sizeof(msg), line, 0);
  if (title != NULL) {
    (void)hlog_escape(prop, sizeof(prop), title, 1);
    printf("::%s title=%s::%s\n", cmd, prop, msg);
  } else {
    printf("::%s::%s\n", cmd, msg);
  }
  fflush(stdout);
}

void hlog_warning(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  hlog_command("warning", NULL, fmt, ap);
  va_end(ap);
}

void hlog_error(const char *title, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  hlog_command("error", title, fmt, ap);
  va_end(ap);
}
