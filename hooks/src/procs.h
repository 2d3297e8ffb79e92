#ifndef RUNFLEET_HOOK_PROCS_H
#define RUNFLEET_HOOK_PROCS_H

#include <sys/types.h>

/* Processes as /proc shows them: who descends from whom, and the ones a
 * job left behind. */

struct procs_stat {
  pid_t pid;
  pid_t ppid;
  pid_t sid;
  char state;
  char comm[32];
};

/* Parses the text of /proc/PID/stat (comm may hold spaces and ')').
 * Returns 0 or -EINVAL. */
int procs_parse_stat(const char *text, struct procs_stat *st);

/* Reads /proc/PID/stat; 0, -ENOENT (gone) or another negative errno. */
int procs_read_stat(pid_t pid, struct procs_stat *st);

/* Whether pid is root or descends from it (following ppid). root <= 1
 * accepts every process /proc shows. */
int procs_in_tree(pid_t pid, pid_t root);

/* The process whose tree counts as this runner's: override if > 0, else
 * the leader of the hook's own session, which is the runner's (runfleetd
 * starts each runner in its own session and the runner does not start new
 * ones for its hooks). 1 (everything visible) when the leader lies outside
 * this pid namespace, as when the runner is a container's init. */
pid_t procs_runner_root(long override);

/* Terminates the processes the job left behind: every process in the
 * hook's session or carrying the hook's RUNNER_TRACKING_ID (tracking_id,
 * may be NULL), except the hook, its ancestors, the sampler (skip, 0 for
 * none) and the runner's own processes. SIGTERM, then SIGKILL after
 * grace_ms. Returns how many processes were signalled, or a negative
 * errno when /proc cannot be read. */
int procs_kill_leftovers(const char *tracking_id, pid_t skip,
                         unsigned grace_ms);

/* Whether pid has exited (gone, or a zombie). */
int procs_exited(pid_t pid);

#endif
