#include "backend_local.h"
#include "backend_local_int.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "proc.h"

/* The local backend's records on disk and its look at /proc: which
 * processes belong to a runner's work dir, the pid files that let the next
 * start find runners a crashed runfleetd left, and the scan that keeps
 * the live ones for adoption and removes the rest. */

/* --- processes by work dir -------------------------------------------- */

/* Whether path is dir or lies below it ("a/b" is not below "a/bc"). */
static int path_under(const char *path, const char *dir)
{
  size_t n = strlen(dir);

  while (n > 1 && dir[n - 1] == '/')
    n--;
  return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Whether pid still runs in dir (its cwd): a recycled pid never does. */
int local_pid_in_dir(long pid, const char *dir)
{
  char link[64], target[LOCAL_PATH_MAX];
  ssize_t n;

  snprintf(link, sizeof(link), "/proc/%ld/cwd", pid);
  n = readlink(link, target, sizeof(target) - 1);
  if (n < 0)
    return 0;
  target[n] = '\0';
  return path_under(target, dir);
}

/* Whether pid was started with RUNFLEET_WORK_DIR at or below dir: every
 * process a runner starts inherits it unless it clears its environment.
 * Unreadable environments (other users', kernel threads) do not match. */
static int pid_env_under(long pid, const char *dir, char *buf)
{
  const char *v =
      proc_environ_value(pid, "RUNFLEET_WORK_DIR", buf, LOCAL_ENVIRON_MAX);

  return v != NULL && path_under(v, dir);
}

/* Whether pid is a zombie or dying: killing it again changes nothing. */
int local_pid_gone(long pid)
{
  char buf[512], *p;

  if (proc_read(pid, "stat", buf, sizeof(buf) - 1) <= 0)
    return 1;
  p = strrchr(buf, ')'); /* the command name may hold spaces and parens */
  return p == NULL || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X';
}

/* When pid started, in clock ticks after boot (field 22 of its stat
 * line); 0 when it cannot be read. */
static unsigned long long pid_start_time(long pid)
{
  char buf[512], *p;
  unsigned long long t = 0;
  int field;

  if (proc_read(pid, "stat", buf, sizeof(buf) - 1) <= 0)
    return 0;
  p = strrchr(buf, ')'); /* the command name may hold spaces and parens */
  if (p == NULL)
    return 0;
  /* p[1] is the space before field 3. */
  for (field = 2; field < 22 && p != NULL; field++)
    p = strchr(p + 1, ' ');
  if (p != NULL)
    t = strtoull(p + 1, NULL, 10);
  return t;
}

/* The runner process started in dir: of the process group leaders whose
 * RUNFLEET_WORK_DIR is dir itself, the one started first (every process
 * the runner starts inherits the variable, and one that called setsid
 * leads a group too, but starts later). 0 when none runs. */
static long pid_leader_of(const char *dir)
{
  char *buf = malloc(LOCAL_ENVIRON_MAX + 1);
  unsigned long long best_t = 0, t;
  long best = 0;
  struct dirent *e;
  DIR *d;

  if (buf == NULL)
    return 0;
  d = opendir("/proc");
  while (d != NULL && (e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    const char *v;

    if (*end != '\0' || pid <= 1 || getpgid((pid_t)pid) != (pid_t)pid ||
        local_pid_gone(pid))
      continue;
    v = proc_environ_value(pid, "RUNFLEET_WORK_DIR", buf, LOCAL_ENVIRON_MAX);
    if (v == NULL || strcmp(v, dir) != 0)
      continue;
    t = pid_start_time(pid);
    if (best == 0 || t < best_t) {
      best = pid;
      best_t = t;
    }
  }
  if (d != NULL)
    closedir(d);
  free(buf);
  return best;
}

/* Kills the processes a runner left outside its process group: a job step
 * that called setsid (a daemon, a "nohup ... &" in its own session) stays
 * alive after kill(-pgid). A process belongs to dir when it was started
 * with RUNFLEET_WORK_DIR at or below dir or, with by_cwd, when its working
 * directory lies there. Passes repeat while they find some, since a process
 * may fork between the scan and its kill. Returns how many it killed, or a
 * negative errno when /proc cannot be read. Safe off the loop thread. */
int backend_local_kill_strays(const char *dir, int by_cwd)
{
  long self = (long)getpid(), *killed = NULL;
  size_t nkilled = 0, cap = 0, i;
  int pass, found = 1, rc = 0;
  char *buf = malloc(LOCAL_ENVIRON_MAX + 1);

  if (buf == NULL)
    return -ENOMEM;
  for (pass = 0; pass < LOCAL_STRAY_PASSES && found && rc == 0; pass++) {
    struct dirent *e;
    DIR *d = opendir("/proc");

    if (d == NULL) {
      rc = -errno;
      break;
    }
    found = 0;
    while ((e = readdir(d)) != NULL) {
      char *end;
      long pid = strtol(e->d_name, &end, 10);

      if (*end != '\0' || pid <= 1 || pid == self || local_pid_gone(pid))
        continue;
      if (!((by_cwd && local_pid_in_dir(pid, dir)) ||
            pid_env_under(pid, dir, buf)))
        continue;
      if (kill((pid_t)pid, SIGKILL) < 0)
        continue;
      /* A killed process shows until it is gone: count it once. */
      for (i = 0; i < nkilled && killed[i] != pid; i++)
        ;
      if (i < nkilled)
        continue;
      if (nkilled == cap) {
        size_t ncap = cap == 0 ? 16 : cap * 2;
        long *grown = realloc(killed, ncap * sizeof(*killed));

        if (grown == NULL) {
          rc = -ENOMEM;
          break;
        }
        killed = grown;
        cap = ncap;
      }
      killed[nkilled++] = pid;
      found = 1;
    }
    closedir(d);
  }
  free(buf);
  free(killed);
  return rc < 0 ? rc : (int)nkilled;
}

/* --- pid files and leftovers ------------------------------------------ */

/* Each live runner has <work_root>/.runfleet-pids/<name> holding its
 * process group id, so that after a crash of runfleetd the next start can
 * find runners it no longer knows, which would otherwise keep their GPUs.
 * Runner names cannot start with a dot, so the folder never collides. */
static void pidfile_path(const char *work_root, const char *name, char *out,
                         size_t size)
{
  snprintf(out, size, "%s/" PIDS_DIR "/%s", work_root, name);
}

void local_gpu_list(const struct cap_placement *where, char *out, size_t size)
{
  size_t i, pos = 0;

  out[0] = '\0';
  for (i = 0; i < where->ngpus && pos < size; i++)
    pos += (size_t)snprintf(out + pos, size - pos, "%s%d", i > 0 ? "," : "",
                            where->gpus[i]);
}

void local_pidfile_write(const char *work_root, const char *name, long pid,
                         const char *pool, const struct cap_placement *where)
{
  char path[LOCAL_PATH_MAX], tmp[LOCAL_PATH_MAX], gpus[BACKEND_MAX_GPUS * 12];
  FILE *f;

  snprintf(path, sizeof(path), "%s/" PIDS_DIR, work_root);
  if (mkdir(path, 0700) < 0 && errno != EEXIST)
    goto fail;
  pidfile_path(work_root, name, path, sizeof(path));
  /* Names starting with a dot are no runner's: the scan removes them. */
  snprintf(tmp, sizeof(tmp), "%s/" PIDS_DIR "/.tmp-%s", work_root, name);
  f = fopen(tmp, "w");
  if (f == NULL)
    goto fail;
  local_gpu_list(where, gpus, sizeof(gpus));
  /* The pid first (as earlier versions wrote it), then what the next
   * runfleetd needs to adopt the runner after a crash. */
  fprintf(f, "%ld\npool=%s\ngpus=%s\ncpu_milli=%u\nmemory=%llu\n", pid, pool,
          gpus, where->cpu_milli, (unsigned long long)where->memory);
  if (fclose(f) != 0 || rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    goto fail;
  }
  return;
fail:
  log_warn("local", "cannot record runner pid", LOG_S("runner", name),
           LOG_S("error", strerror(errno)));
}

void local_pidfile_remove(const char *work_root, const char *name)
{
  char path[LOCAL_PATH_MAX];

  pidfile_path(work_root, name, path, sizeof(path));
  if (unlink(path) < 0 && errno != ENOENT)
    log_warn("local", "cannot remove runner pid file", LOG_S("runner", name),
             LOG_S("error", strerror(errno)));
}

static void leftover_parse(FILE *f, struct local_leftover *l)
{
  char line[512];
  int have_pool = 0, have_gpus = 0;

  if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "%ld", &l->pid) != 1)
    l->pid = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "pool=", 5) == 0 && line[5] != '\0' &&
        strlen(line + 5) < sizeof(l->pool)) {
      memcpy(l->pool, line + 5, strlen(line + 5) + 1);
      have_pool = 1;
    } else if (strncmp(line, "gpus=", 5) == 0) {
      const char *p = line + 5;
      char *end;
      have_gpus = 1;
      while (*p != '\0' && l->where.ngpus < BACKEND_MAX_GPUS) {
        long v = strtol(p, &end, 10);
        if (end == p || v < 0) {
          have_gpus = 0;
          break;
        }
        l->where.gpus[l->where.ngpus++] = (int)v;
        p = *end == ',' ? end + 1 : end;
      }
    } else if (strncmp(line, "cpu_milli=", 10) == 0) {
      l->where.cpu_milli = (unsigned)strtoul(line + 10, NULL, 10);
    } else if (strncmp(line, "memory=", 7) == 0) {
      l->where.memory = strtoull(line + 7, NULL, 10);
    }
  }
  l->described = have_pool && have_gpus;
}

static int leftover_dir(const struct local_leftover *kept, const char *name)
{
  for (; kept != NULL; kept = kept->next)
    if (strcmp(kept->name, name) == 0)
      return 1;
  return 0;
}

struct local_leftover *local_scan_leftovers(const char *work_root)
{
  char path[LOCAL_PATH_MAX], dir[LOCAL_PATH_MAX];
  struct local_leftover *kept = NULL;
  struct dirent *e;
  DIR *d;
  int strays;

  snprintf(path, sizeof(path), "%s/" PIDS_DIR, work_root);
  d = opendir(path);
  while (d != NULL && (e = readdir(d)) != NULL) {
    struct local_leftover *l;
    FILE *f;

    if (e->d_name[0] == '.') {
      /* A temporary record a crash left half written. */
      if (strncmp(e->d_name, ".tmp-", 5) == 0) {
        snprintf(path, sizeof(path), "%s/" PIDS_DIR "/%s", work_root,
                 e->d_name);
        unlink(path);
      }
      continue;
    }
    if (!local_name_valid(e->d_name))
      continue;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
      break;
    /* local_name_valid: at most LOCAL_NAME_MAX, so it fits. */
    memcpy(l->name, e->d_name, strlen(e->d_name) + 1);
    snprintf(dir, sizeof(dir), "%s/%s", work_root, e->d_name);
    pidfile_path(work_root, e->d_name, path, sizeof(path));
    f = fopen(path, "r");
    if (f != NULL) {
      leftover_parse(f, l);
      fclose(f);
    }
    /* Written before the fork, never after it: an earlier runfleetd died
     * in between, and the runner may run all the same. */
    if (l->pid == 0 && l->described)
      l->pid = pid_leader_of(dir);
    if (l->pid > 1 && local_pid_in_dir(l->pid, dir) &&
        !local_pid_gone(l->pid) && l->described) {
      l->next = kept;
      kept = l;
      continue;
    }
    if (l->pid > 1 && local_pid_in_dir(l->pid, dir) &&
        kill(-(pid_t)l->pid, SIGKILL) == 0)
      log_warn("local", "killed a runner left by an earlier runfleetd",
               LOG_S("runner", e->d_name), LOG_I("pid", l->pid));
    local_pidfile_remove(work_root, e->d_name);
    free(l);
  }
  if (d != NULL)
    closedir(d);
  /* Helpers of the runners not kept, which left their group: found by
   * environment only (an operator's shell sitting in the work root is not
   * a runner's), and never those of a kept runner. */
  d = opendir(work_root);
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || leftover_dir(kept, e->d_name))
      continue;
    snprintf(dir, sizeof(dir), "%s/%s", work_root, e->d_name);
    strays = backend_local_kill_strays(dir, 0);
    if (strays > 0)
      log_warn("local",
               "killed processes left by runners of an earlier runfleetd",
               LOG_S("dir", dir), LOG_I("count", strays));
    log_warn("local", "removing a work dir left by an earlier runfleetd",
             LOG_S("dir", dir));
    if (fs_rmtree(dir) < 0)
      log_warn("local", "cannot remove leftover work dir", LOG_S("dir", dir));
  }
  if (d != NULL)
    closedir(d);
  snprintf(path, sizeof(path), "%s/" LOGS_DIR, work_root);
  d = opendir(path);
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || leftover_dir(kept, e->d_name))
      continue;
    snprintf(dir, sizeof(dir), "%s/" LOGS_DIR "/%s", work_root, e->d_name);
    if (unlink(dir) < 0 && errno != ENOENT)
      log_warn("local", "cannot remove a leftover output file",
               LOG_S("file", dir));
  }
  if (d != NULL)
    closedir(d);
  return kept;
}
