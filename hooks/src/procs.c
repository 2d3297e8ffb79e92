#include "procs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hook_log.h"
#include "proc.h"

#define PROCS_MAX_DEPTH 4096 /* ppid chains are shorter; loops are not */
#define PROCS_MAX_VICTIMS 4096
#define PROCS_ENV_MAX (256u * 1024u)
#define PROCS_PASSES 3 /* rescans catch processes forked while killing */

int procs_parse_stat(const char *text, struct procs_stat *st)
{
  const char *open = strchr(text, '(');
  const char *close = strrchr(text, ')');
  size_t len;
  int pid, ppid, pgrp, sid;
  char state;

  if (open == NULL || close == NULL || close < open)
    return -EINVAL;
  if (sscanf(text, "%d", &pid) != 1)
    return -EINVAL;
  if (sscanf(close + 1, " %c %d %d %d", &state, &ppid, &pgrp, &sid) != 4)
    return -EINVAL;
  len = (size_t)(close - open - 1);
  if (len >= sizeof(st->comm))
    len = sizeof(st->comm) - 1;
  memcpy(st->comm, open + 1, len);
  st->comm[len] = '\0';
  st->pid = pid;
  st->ppid = ppid;
  st->sid = sid;
  st->state = state;
  return 0;
}

int procs_read_stat(pid_t pid, struct procs_stat *st)
{
  char path[64], buf[1024];
  ssize_t n;
  int fd, rc;

  snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  n = read(fd, buf, sizeof(buf) - 1);
  rc = n < 0 ? -errno : 0;
  close(fd);
  if (rc < 0)
    return rc == -ESRCH ? -ENOENT : rc;
  buf[n] = '\0';
  return procs_parse_stat(buf, st);
}

int procs_in_tree(pid_t pid, pid_t root)
{
  struct procs_stat st;
  int depth;

  if (procs_read_stat(pid, &st) < 0)
    return 0; /* not visible here: not ours */
  if (root <= 1)
    return 1;
  for (depth = 0; depth < PROCS_MAX_DEPTH; depth++) {
    if (st.pid == root)
      return 1;
    if (st.ppid <= 1 || procs_read_stat(st.ppid, &st) < 0)
      return 0;
  }
  return 0;
}

pid_t procs_runner_root(long override)
{
  pid_t sid;

  if (override > 0)
    return (pid_t) override;
  /* Not getsid(getppid()): a parent in another session (a supervisor that
   * runs the hook under setsid) would widen the tree to that session. */
  sid = getsid(0);
  return sid > 0 ? sid : 1;
}

int procs_exited(pid_t pid)
{
  struct procs_stat st;

  if (kill(pid, 0) < 0 && errno == ESRCH)
    return 1;
  if (procs_read_stat(pid, &st) < 0)
    return 1;
  return st.state == 'Z' || st.state == 'X';
}

/* Whether /proc/PID/environ holds RUNNER_TRACKING_ID=id (readable only for
 * our own user's processes, which are the ones we could kill anyway). */
static int procs_has_tracking_id(pid_t pid, const char *id)
{
  char *buf = malloc(PROCS_ENV_MAX + 1);
  const char *v;
  int found;

  if (buf == NULL)
    return 0;
  v = proc_environ_value(pid, "RUNNER_TRACKING_ID", buf, PROCS_ENV_MAX);
  found = v != NULL && strcmp(v, id) == 0;
  free(buf);
  return found;
}

struct procs_scan {
  pid_t self;
  pid_t sid;
  pid_t skip;
  const char *tracking_id;
  pid_t ancestors[PROCS_MAX_DEPTH];
  size_t nancestors;
};

static int procs_is_ancestor(const struct procs_scan *s, pid_t pid)
{
  size_t i;

  for (i = 0; i < s->nancestors; i++)
    if (s->ancestors[i] == pid)
      return 1;
  return 0;
}

static int procs_is_leftover(const struct procs_scan *s, pid_t pid)
{
  struct procs_stat st;

  if (pid == s->self || pid == s->skip || pid <= 1 || procs_is_ancestor(s, pid))
    return 0;
  if (procs_read_stat(pid, &st) < 0 || st.state == 'Z')
    return 0;
  /* The runner's own processes are never the job's. */
  if (strcmp(st.comm, "Runner.Listener") == 0 ||
      strcmp(st.comm, "Runner.Worker") == 0)
    return 0;
  if (st.sid == s->sid)
    return 1;
  return s->tracking_id != NULL && procs_has_tracking_id(pid, s->tracking_id);
}

/* Lists the leftovers now; returns how many (at most max) or -errno. */
static int procs_scan_once(const struct procs_scan *s, const pid_t *seen,
                           size_t nseen, pid_t *out, size_t max)
{
  DIR *d = opendir("/proc");
  struct dirent *de;
  size_t n = 0;

  if (d == NULL)
    return -errno;
  while ((de = readdir(d)) != NULL && n < max) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);

    size_t i;

    if (*end != '\0' || pid <= 0)
      continue;
    for (i = 0; i < nseen && seen[i] != (pid_t)pid; i++)
      ;
    if (i == nseen && procs_is_leftover(s, (pid_t)pid))
      out[n++] = (pid_t)pid;
  }
  closedir(d);
  return (int)n;
}

static void procs_sleep_ms(unsigned ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

static int procs_all_exited(const pid_t *pids, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (!procs_exited(pids[i]))
      return 0;
  return 1;
}

int procs_kill_leftovers(const char *tracking_id, pid_t skip, unsigned grace_ms)
{
  struct procs_scan *s;
  struct procs_stat st;
  pid_t *victims = NULL, pid;
  size_t nvictims = 0, i;
  unsigned waited;
  int pass, rc = 0, n;

  s = calloc(1, sizeof(*s));
  victims = calloc(PROCS_MAX_VICTIMS, sizeof(*victims));
  if (s == NULL || victims == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  s->self = getpid();
  s->sid = getsid(0);
  s->skip = skip;
  /* "0" is how a job opts a process out of the runner's own cleanup. */
  s->tracking_id =
      tracking_id != NULL && strcmp(tracking_id, "0") != 0 ? tracking_id : NULL;
  for (pid = getppid(); pid > 1 && s->nancestors < PROCS_MAX_DEPTH;
       pid = st.ppid) {
    s->ancestors[s->nancestors++] = pid;
    if (procs_read_stat(pid, &st) < 0)
      break;
  }
  for (pass = 0; pass < PROCS_PASSES; pass++) {
    n = procs_scan_once(s, victims, nvictims, victims + nvictims,
                        PROCS_MAX_VICTIMS - nvictims);
    if (n < 0) {
      rc = n;
      goto out;
    }
    if (n == 0)
      break;
    for (i = nvictims; i < nvictims + (size_t)n; i++) {
      if (kill(victims[i], SIGTERM) == 0)
        hlog_info("terminating leftover process %ld", (long)victims[i]);
    }
    nvictims += (size_t)n;
    for (waited = 0; waited < grace_ms && !procs_all_exited(victims, nvictims);
         waited += 50)
      procs_sleep_ms(50);
    for (i = 0; i < nvictims; i++) {
      if (!procs_exited(victims[i]) && kill(victims[i], SIGKILL) == 0)
        hlog_info("killed leftover process %ld", (long)victims[i]);
    }
  }
  rc = (int)nvictims;
out:
  free(victims);
  free(s);
  return rc;
}
