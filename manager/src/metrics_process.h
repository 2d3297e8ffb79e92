#ifndef RUNFLEET_METRICS_PROCESS_H
#define RUNFLEET_METRICS_PROCESS_H

/* The process metrics every Prometheus client library exports by default
 * (process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_cpu_seconds_total, process_open_fds, process_max_fds,
 * process_start_time_seconds), read from /proc as client_golang's procfs
 * collector reads them. */

#include <stddef.h>

#include "metrics.h"

/* What one reading of /proc gives. */
struct proc_sample {
  double cpu_seconds;   /* utime + stime */
  double start_time;    /* unix seconds */
  double virtual_bytes; /* vsize */
  double resident_bytes;
  double open_fds;
  double max_fds; /* the soft limit; -1 when unlimited */
};

/* Declares the six metrics in m. 0 or -1. */
int metrics_process_declare(struct metrics *m);
/* Reads /proc/self and sets them, at scrape time. 0, or a negative code
 * (the metrics keep their last values). */
int metrics_process_sync(struct metrics *m);

#ifdef RUNFLEET_UNITTEST
/* Parses /proc/<pid>/stat text (the command may hold spaces and ')').
 * ticks: clock ticks a second; page: page size; boot: the btime of
 * /proc/stat. Fills cpu_seconds, start_time, virtual_bytes and
 * resident_bytes. 0 or -EINVAL. */
int metrics_process_parse_stat(const char *text, double ticks, double page,
                               double boot, struct proc_sample *out);
/* The btime line of /proc/stat text. 0 or -EINVAL. */
int metrics_process_parse_btime(const char *text, double *out);
/* The soft "Max open files" of /proc/<pid>/limits text; -1 for
 * "unlimited". 0 or -EINVAL. */
int metrics_process_parse_limits(const char *text, double *out);
#endif

#endif
