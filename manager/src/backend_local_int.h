#ifndef RUNFLEET_BACKEND_LOCAL_INT_H
#define RUNFLEET_BACKEND_LOCAL_INT_H

/* What the files of the local backend share (backend_local.c, the
 * backend; backend_local_proc.c, pid files, leftovers and processes by
 * work dir; backend_local_gpus.c, GPU discovery). Not for other modules. */

#include <stddef.h>

#include "backend.h"
#include "capacity.h"

#define LOCAL_NAME_MAX 128u  /* runner names are also directory names */
#define LOCAL_PATH_MAX 4096u /* pid files and leftover work dirs */
#define LOCAL_ENVIRON_MAX (256u * 1024u) /* of /proc/<pid>/environ read */
#define LOCAL_STRAY_PASSES 3 /* rescans catch forks made while killing */
/* Under work_root, beside the runners' work dirs: runner names cannot
 * start with a dot, so these never collide. */
#define PIDS_DIR ".runfleet-pids"
#define LOGS_DIR ".runfleet-logs"

/* Whether name is a runner name this backend accepts (also a directory
 * name: letters, digits, '-', '_', '.', not "." or ".."). */
int local_name_valid(const char *name);
/* "0,3" for GPUs 0 and 3, into out. */
void local_gpu_list(const struct cap_placement *where, char *out, size_t size);

/* Whether pid still runs in dir (its cwd): a recycled pid never does. */
int local_pid_in_dir(long pid, const char *dir);
/* Whether pid is a zombie or dying: killing it again changes nothing. */
int local_pid_gone(long pid);
/* Kills every process started with RUNFLEET_WORK_DIR at or below dir, and
 * with by_cwd every process whose working directory lies there, except the
 * caller. Returns how many it killed or a negative errno. Safe off the
 * loop thread. */
int backend_local_kill_strays(const char *dir, int by_cwd);

/* <work_root>/.runfleet-pids/<name>: the runner's pid (0 before the
 * fork), pool and where it runs, written through a rename; and its
 * removal. Failures are logged. */
void local_pidfile_write(const char *work_root, const char *name, long pid,
                         const char *pool, const struct cap_placement *where);
void local_pidfile_remove(const char *work_root, const char *name);

/* A runner an earlier runfleetd left, as its pid file describes it. */
struct local_leftover {
  struct local_leftover *next;
  char name[LOCAL_NAME_MAX + 1];
  long pid;
  char pool[128];
  struct cap_placement where;
  int described; /* the pid file has what adoption needs */
};

/* Looks at what an earlier runfleetd left under work_root. Runners still
 * alive whose pid file says where they run are kept for adoption (the
 * list returned, each malloc'd); the process groups of the others are
 * killed, and every other work dir, pid file and output file removed. */
struct local_leftover *local_scan_leftovers(const char *work_root);

/* Runs "nvidia-smi -L" (or $RUNFLEET_NVIDIA_SMI) and parses its device
 * indices into gpus; none on a machine without it. */
int local_discover_gpus(int *gpus, size_t max, size_t *ngpus);

#endif
