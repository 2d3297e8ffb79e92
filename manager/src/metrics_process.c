#include "metrics_process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unittest.h"

/* /proc/self/stat is one line of about 300 bytes; /proc/stat grows with the
 * number of CPUs (a line each) and interrupts, so it gets more room. */
#define STAT_MAX 4096
#define PROC_STAT_MAX (256 * 1024)
#define LIMITS_MAX 4096

int metrics_process_declare(struct metrics *m)
{
  int rc = 0;

  rc |= metrics_declare(m, "process_cpu_seconds_total", METRICS_COUNTER,
                        "Total user and system CPU time spent in seconds.",
                        NULL, 0);
  rc |= metrics_declare(m, "process_open_fds", METRICS_GAUGE,
                        "Number of open file descriptors.", NULL, 0);
  rc |= metrics_declare(m, "process_max_fds", METRICS_GAUGE,
                        "Maximum number of open file descriptors.", NULL, 0);
  rc |= metrics_declare(m, "process_virtual_memory_bytes", METRICS_GAUGE,
                        "Virtual memory size in bytes.", NULL, 0);
  rc |= metrics_declare(m, "process_resident_memory_bytes", METRICS_GAUGE,
                        "Resident memory size in bytes.", NULL, 0);
  rc |= metrics_declare(m, "process_start_time_seconds", METRICS_GAUGE,
                        "Start time of the process since unix epoch in "
                        "seconds.",
                        NULL, 0);
  return rc == 0 ? 0 : -1;
}

UNITTEST int metrics_process_parse_stat(const char *text, double ticks,
                                        double page, double boot,
                                        struct proc_sample *out)
{
  unsigned long long utime, stime, start, vsize;
  long long rss;
  const char *p = strrchr(text, ')');
  int n;

  /* Fields after the command, from 3 (state): utime is 14, stime 15,
   * starttime 22, vsize 23, rss 24 (proc(5)). */
  if (p == NULL || ticks <= 0 || page <= 0)
    return -EINVAL;
  n = sscanf(p + 1,
             " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
             "%*d %*d %*d %*d %llu %llu %lld",
             &utime, &stime, &start, &vsize, &rss);
  if (n != 5 || rss < 0)
    return -EINVAL;
  out->cpu_seconds = (double)(utime + stime) / ticks;
  out->start_time = boot + (double)start / ticks;
  out->virtual_bytes = (double)vsize;
  out->resident_bytes = (double)rss * page;
  return 0;
}

UNITTEST int metrics_process_parse_btime(const char *text, double *out)
{
  const char *p = text;
  unsigned long long v;

  while (p != NULL && *p != '\0') {
    if (strncmp(p, "btime ", 6) == 0) {
      if (sscanf(p + 6, "%llu", &v) != 1)
        return -EINVAL;
      *out = (double)v;
      return 0;
    }
    p = strchr(p, '\n');
    if (p != NULL)
      p++;
  }
  return -EINVAL;
}

UNITTEST int metrics_process_parse_limits(const char *text, double *out)
{
  static const char key[] = "Max open files";
  const char *p = strstr(text, key);
  unsigned long long v;

  if (p == NULL)
    return -EINVAL;
  p += sizeof(key) - 1;
  while (*p == ' ')
    p++;
  if (strncmp(p, "unlimited", 9) == 0) {
    *out = -1;
    return 0;
  }
  if (sscanf(p, "%llu", &v) != 1)
    return -EINVAL;
  *out = (double)v;
  return 0;
}

/* Reads at most size - 1 bytes of path into buf, NUL-terminated. */
static int read_text(const char *path, char *buf, size_t size)
{
  size_t len = 0;
  ssize_t n;
  int fd = open(path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return -errno;
  while (len + 1 < size) {
    n = read(fd, buf + len, size - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      n = -errno;
      close(fd);
      return (int)n;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  return 0;
}

/* Entries of /proc/self/fd but the one the directory stream itself holds,
 * as procfs counts them. */
static int count_fds(double *out)
{
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  long n = 0;

  if (d == NULL)
    return -errno;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  *out = (double)(n > 0 ? n - 1 : 0);
  return 0;
}

int metrics_process_sync(struct metrics *m)
{
  struct proc_sample s;
  char stat[STAT_MAX], limits[LIMITS_MAX];
  char *proc_stat = malloc(PROC_STAT_MAX);
  double boot = 0, have;
  long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  int rc;

  memset(&s, 0, sizeof(s));
  if (proc_stat == NULL)
    return -ENOMEM;
  rc = read_text("/proc/stat", proc_stat, PROC_STAT_MAX);
  if (rc == 0)
    rc = metrics_process_parse_btime(proc_stat, &boot);
  free(proc_stat);
  if (rc == 0)
    rc = read_text("/proc/self/stat", stat, sizeof(stat));
  if (rc == 0)
    rc =
        metrics_process_parse_stat(stat, (double)ticks, (double)page, boot, &s);
  if (rc == 0)
    rc = read_text("/proc/self/limits", limits, sizeof(limits));
  if (rc == 0)
    rc = metrics_process_parse_limits(limits, &s.max_fds);
  if (rc == 0)
    rc = count_fds(&s.open_fds);
  if (rc != 0)
    return rc;
  have = metrics_value(m, "process_cpu_seconds_total", "");
  metrics_counter_add(m, "process_cpu_seconds_total", "",
                      s.cpu_seconds > have ? s.cpu_seconds - have : 0);
  metrics_gauge_set(m, "process_open_fds", "", s.open_fds);
  metrics_gauge_set(m, "process_max_fds", "", s.max_fds);
  metrics_gauge_set(m, "process_virtual_memory_bytes", "", s.virtual_bytes);
  metrics_gauge_set(m, "process_resident_memory_bytes", "", s.resident_bytes);
  metrics_gauge_set(m, "process_start_time_seconds", "", s.start_time);
  return 0;
}
