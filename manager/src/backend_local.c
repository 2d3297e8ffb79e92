#include "backend_local.h"
#include "backend_local_int.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"
#include "proc.h"
#include "log.h"

/* Runners as child processes. Each runner is started detached (setsid), so
 * its pid is also its process group and kill(-pid) reaches every helper it
 * forks; the uv_process_t stays referenced so libuv still reaps it. The
 * runner's stdout and stderr go to one file, <work_root>/.runfleet-logs/
 * <name>, whose lines are read as it grows and forwarded to the log
 * (mod=runner runner=<name>): a file rather than a pipe, so the runner
 * outlives a crash of runfleetd, and one stream keeps stdout and stderr in
 * the order they were written. Pid files, leftovers and GPU discovery are
 * in backend_local_proc.c and backend_local_gpus.c. */

#define LOCAL_GRACE_MS 10000u /* SIGTERM to SIGKILL */
#define LOCAL_LINE_MAX 1024u  /* longer output lines are split */
#define LOCAL_READ_MAX 4096u
#define LOCAL_DRAIN_MAX (1024u * 1024u) /* output read after the exit */
#define LOCAL_LOG_LINES 200u            /* runner lines logged per window... */
#define LOCAL_LOG_WINDOW_MS 1000 /* ...the rest are counted, not logged */
#define LOCAL_ENV_OWN 12u        /* variables the backend sets itself */

enum local_state {
  LOCAL_RUNNING,  /* process alive */
  LOCAL_STOPPING, /* SIGTERM sent, SIGKILL when the grace period ends */
  LOCAL_REAPING,  /* exited, resources released, work dir being removed */
  LOCAL_CLOSING   /* exit reported (or never started), handles closing */
};

static const char *const local_state_names[] = {"running", "stopping",
                                                "reaping", "closing"};

#define LOCAL_NODE_MAX 128u /* the host's name as capacity's node */

struct local_backend;

struct local_runner {
  uv_process_t process;
  uv_fs_event_t out;     /* changes of the output file */
  uv_poll_t exit_poll;   /* adopted runners: their pidfd, readable at exit */
  uv_timer_t exit_check; /* adopted, where pidfds are missing: a look */
  uv_timer_t timer;
  uv_work_t rm_work;
  struct local_backend *lb;
  struct local_runner *next;
  enum local_state state;
  char *name;
  char *pool;
  char *work_dir;
  long pid;
  struct cap_placement where; /* as capacity placed it */
  int announced;              /* PLACED and RUNNING reported */
  int exit_status;
  int rm_result;       /* written by the threadpool, read after it */
  int strays;          /* likewise: processes killed outside the group */
  unsigned refs;       /* open handles plus a pending removal */
  int out_open;        /* the output file is watched and not yet closing */
  int out_fd;          /* read end of the output file, -1 when none */
  char *out_path;      /* <work_root>/.runfleet-logs/<name> */
  int has_process;     /* uv_spawn was called: the handle needs uv_close */
  int adopted;         /* started by an earlier runfleetd: not our child */
  int pidfd;           /* adopted: pidfd_open of its pid, -1 when none */
  int poll_open;       /* exit_poll is initialised and not yet closing */
  int check_open;      /* exit_check likewise */
  int stop_sent;       /* SIGTERM sent by a stop */
  uint64_t log_window; /* loop time the current output window began */
  unsigned log_lines;  /* lines logged in it */
  unsigned long log_dropped;
  size_t line_len;
  char line[LOCAL_LINE_MAX + 1];
  char rbuf[LOCAL_READ_MAX];
};

struct local_backend {
  struct backend base; /* first: the ops receive &base */
  uv_loop_t *loop;
  char *work_root;
  char *hook_started;
  char *hook_completed;
  char node[LOCAL_NODE_MAX];  /* this host, as capacity names it */
  int gpus[BACKEND_MAX_GPUS]; /* sorted by index */
  size_t ngpus;
  unsigned cpus_total;
  uint64_t memory_total;
  uint64_t grace_ms;
  struct local_runner *runners; /* every record not yet freed */
  /* Reports PLACED and RUNNING of runners started since it last ran, so
   * no event reaches the owner before start() returned. */
  uv_timer_t announce;
  int announce_open;
  int closing;
  void (*done_cb)(void *arg);
  void *done_arg;
};

static struct local_backend *local_of(struct backend *b)
{
  return (struct local_backend *)b;
}

static void runner_set_state(struct local_runner *r, enum local_state state)
{
  log_debug("local", "runner state", LOG_S("runner", r->name),
            LOG_S("from", local_state_names[r->state]),
            LOG_S("to", local_state_names[state]));
  r->state = state;
}

/* --- work directories --------------------------------------------------- */

/* Runner names become directory names and log fields. */
int local_name_valid(const char *name)
{
  size_t len = name != NULL ? strlen(name) : 0, i;

  if (len == 0 || len > LOCAL_NAME_MAX || strcmp(name, ".") == 0 ||
      strcmp(name, "..") == 0)
    return 0;
  for (i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return 0;
  }
  return 1;
}

/* --- placement -------------------------------------------------------- */

/* Whether the placement capacity chose is one this backend can honour: this
 * host, GPUs it has, none held by another live runner. Capacity keeps the
 * books; this only refuses a placement that would share a device. */
static int local_placement_free(const struct local_backend *lb,
                                const struct cap_placement *where)
{
  const struct local_runner *r;
  size_t i, j, k;

  if (strcmp(where->node, lb->node) != 0 || where->ngpus > BACKEND_MAX_GPUS)
    return 0;
  for (i = 0; i < where->ngpus; i++) {
    int found = 0;
    for (j = 0; j < lb->ngpus; j++)
      found |= lb->gpus[j] == where->gpus[i];
    for (j = 0; j < i; j++)
      if (where->gpus[j] == where->gpus[i])
        return 0; /* the same device twice */
    if (!found)
      return 0;
    for (r = lb->runners; r != NULL; r = r->next) {
      /* A reaping runner's leftovers are still being killed: its GPUs
       * are free only once its EXITED came. */
      if (r->state == LOCAL_CLOSING)
        continue;
      for (k = 0; k < r->where.ngpus; k++)
        if (r->where.gpus[k] == where->gpus[i])
          return 0;
    }
  }
  return 1;
}

static void local_emit(struct local_backend *lb, struct backend_event *ev)
{
  if (lb->base.on_event != NULL)
    lb->base.on_event(lb->base.ctx, ev);
}

/* PLACED, then RUNNING, once per runner. */
static void runner_announce(struct local_runner *r)
{
  struct backend_event ev;

  if (r->announced)
    return;
  r->announced = 1;
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_PLACED;
  ev.name = r->name;
  ev.node = r->where.node;
  ev.gpus = r->where.gpus;
  ev.ngpus = r->where.ngpus;
  local_emit(r->lb, &ev);
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_RUNNING;
  ev.name = r->name;
  ev.pid = r->pid;
  local_emit(r->lb, &ev);
}

static void announce_cb(uv_timer_t *timer)
{
  struct local_backend *lb = timer->data;
  struct local_runner *r, *next;

  for (r = lb->runners; r != NULL; r = next) {
    next = r->next;
    if (r->state == LOCAL_RUNNING || r->state == LOCAL_STOPPING)
      runner_announce(r);
  }
}

/* --- runner records ----------------------------------------------------- */

static struct local_runner *local_find(struct local_backend *lb,
                                       const char *name)
{
  struct local_runner *r;

  /* A closing record has reported its exit: its name is free again. */
  for (r = lb->runners; r != NULL; r = r->next)
    if (r->state != LOCAL_CLOSING && strcmp(r->name, name) == 0)
      return r;
  return NULL;
}

/* Once closing, and every record and handle is gone: done_cb. */
static void local_maybe_done(struct local_backend *lb)
{
  if (lb->closing && lb->runners == NULL && !lb->announce_open &&
      lb->done_cb != NULL) {
    void (*done_cb)(void *) = lb->done_cb;
    lb->done_cb = NULL;
    done_cb(lb->done_arg); /* may destroy lb: nothing touches it after */
  }
}

static void runner_free(struct local_runner *r)
{
  struct local_backend *lb = r->lb;
  struct local_runner **pp;

  for (pp = &lb->runners; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  }
  if (r->out_fd >= 0)
    close(r->out_fd);
  if (r->pidfd >= 0)
    close(r->pidfd);
  free(r->name);
  free(r->pool);
  free(r->work_dir);
  free(r->out_path);
  free(r);
  local_maybe_done(lb);
}

static void runner_unref(struct local_runner *r)
{
  assert(r->refs > 0);
  if (--r->refs == 0)
    runner_free(r);
}

static void runner_close_cb(uv_handle_t *handle)
{
  runner_unref(handle->data);
}

static void runner_close_out(struct local_runner *r)
{
  if (!r->out_open)
    return;
  r->out_open = 0;
  uv_close((uv_handle_t *)&r->out, runner_close_cb);
}

static void runner_close_poll(struct local_runner *r)
{
  if (r->poll_open) {
    r->poll_open = 0;
    uv_close((uv_handle_t *)&r->exit_poll, runner_close_cb);
  }
  if (r->check_open) {
    r->check_open = 0;
    uv_close((uv_handle_t *)&r->exit_check, runner_close_cb);
  }
}

/* Closes every handle of r; the record goes with the last close callback. */
static void runner_close(struct local_runner *r)
{
  runner_set_state(r, LOCAL_CLOSING);
  runner_close_out(r);
  runner_close_poll(r);
  if (!uv_is_closing((uv_handle_t *)&r->timer))
    uv_close((uv_handle_t *)&r->timer, runner_close_cb);
  if (r->has_process && !uv_is_closing((uv_handle_t *)&r->process))
    uv_close((uv_handle_t *)&r->process, runner_close_cb);
}

/* --- runner output ------------------------------------------------------ */

/* Says how many lines the rate limit dropped, if any. */
static void runner_report_dropped(struct local_runner *r)
{
  if (r->log_dropped == 0)
    return;
  log_warn("local", "runner output over the log rate limit was dropped",
           LOG_S("runner", r->name), LOG_S("pool", r->pool),
           LOG_U("lines", r->log_dropped),
           LOG_U("limit_per_s", LOCAL_LOG_LINES * 1000u / LOCAL_LOG_WINDOW_MS));
  r->log_dropped = 0;
}

/* Logs the buffered line, at most LOCAL_LOG_LINES per window per runner: a
 * runner stuck in a loop must not flood the log the operator reads. */
static void runner_flush_line(struct local_runner *r)
{
  uint64_t now;

  if (r->line_len == 0)
    return;
  now = uv_now(r->lb->loop);
  if (now - r->log_window >= LOCAL_LOG_WINDOW_MS) {
    runner_report_dropped(r);
    r->log_window = now;
    r->log_lines = 0;
  }
  r->line[r->line_len] = '\0';
  r->line_len = 0;
  if (r->log_lines >= LOCAL_LOG_LINES) {
    r->log_dropped++;
    return;
  }
  r->log_lines++;
  log_info("runner", r->line, LOG_S("runner", r->name), LOG_S("pool", r->pool));
}

/* Splits output into lines and logs each one. */
static void runner_feed(struct local_runner *r, const char *data, size_t len)
{
  size_t i;

  for (i = 0; i < len; i++) {
    char c = data[i];
    if (c == '\n') {
      runner_flush_line(r);
      continue;
    }
    if (c == '\r')
      continue;
    if (r->line_len == LOCAL_LINE_MAX)
      runner_flush_line(r);
    r->line[r->line_len++] = c;
  }
}

/* Reads what the runner wrote to its output file since the last read, at
 * most max bytes (a runner that writes without pause must not hold the
 * loop). Regular files never block. */
static void runner_read_out(struct local_runner *r, size_t max)
{
  size_t total = 0;
  ssize_t n;

  if (r->out_fd < 0)
    return;
  while (total < max && (n = read(r->out_fd, r->rbuf, sizeof(r->rbuf))) > 0) {
    runner_feed(r, r->rbuf, (size_t)n);
    total += (size_t)n;
  }
}

/* Reads what is still in the output file at the exit: a runner's last
 * lines (why it failed) are often written just before it exits. */
static void runner_drain_out(struct local_runner *r)
{
  runner_read_out(r, LOCAL_DRAIN_MAX);
}

static void runner_out_cb(uv_fs_event_t *handle, const char *filename,
                          int events, int status)
{
  struct local_runner *r = handle->data;

  (void)filename;
  (void)events;
  if (status < 0) {
    log_warn("local", "cannot watch runner output", LOG_S("runner", r->name),
             LOG_S("error", uv_err_name(status)));
    return;
  }
  runner_read_out(r, LOCAL_DRAIN_MAX);
}

/* The runner's stdout and stderr go to a file, not a pipe: a runner must
 * outlive a runfleetd that crashed (a pipe would break under it) so the
 * next one can adopt it. The file is read as it grows and removed with
 * the runner. Opens the read end at its end (at_end) or start, and
 * watches it; the record holds one reference more while it is watched. */
static int runner_watch_out(struct local_runner *r, int at_end)
{
  int rc;

  r->out_fd = open(r->out_path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (r->out_fd < 0)
    return -errno;
  if (at_end && lseek(r->out_fd, 0, SEEK_END) < 0)
    return -errno;
  rc = uv_fs_event_init(r->lb->loop, &r->out);
  if (rc < 0)
    return rc;
  r->refs++;
  r->out_open = 1;
  rc = uv_fs_event_start(&r->out, runner_out_cb, r->out_path, 0);
  if (rc < 0) {
    /* Running without its output forwarded beats killing it. */
    log_warn("local", "cannot watch runner output", LOG_S("runner", r->name),
             LOG_S("error", uv_err_name(rc)));
    runner_close_out(r);
  }
  return 0;
}

static void runner_out_remove(const struct local_runner *r)
{
  if (r->out_path != NULL && unlink(r->out_path) < 0 && errno != ENOENT)
    log_warn("local", "cannot remove runner output file",
             LOG_S("runner", r->name), LOG_S("error", strerror(errno)));
}

/* --- exit --------------------------------------------------------------- */

static void runner_rm_work_cb(uv_work_t *req)
{
  struct local_runner *r = req->data;

  r->strays = backend_local_kill_strays(r->work_dir, 1);
  r->rm_result = fs_rmtree(r->work_dir);
}

static void runner_rm_after_cb(uv_work_t *req, int status)
{
  struct local_runner *r = req->data;
  struct local_backend *lb = r->lb;

  if (status < 0)
    r->rm_result = status;
  if (r->strays > 0)
    log_warn("local", "killed processes the runner left outside its group",
             LOG_S("runner", r->name), LOG_S("pool", r->pool),
             LOG_I("count", r->strays));
  else if (r->strays < 0)
    log_warn("local", "cannot look for processes the runner left",
             LOG_S("runner", r->name), LOG_S("error", strerror(-r->strays)));
  if (r->rm_result < 0)
    log_warn("local", "cannot remove runner work dir", LOG_S("runner", r->name),
             LOG_S("dir", r->work_dir),
             LOG_S("error", strerror(-r->rm_result)));
  /* The exit is reported once the directory is gone, so a runner started
   * in reaction never finds its predecessor's files. */
  runner_drain_out(r);
  runner_flush_line(r);
  runner_report_dropped(r);
  runner_out_remove(r);
  runner_close(r);
  {
    struct backend_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = BACKEND_EXITED;
    ev.name = r->name;
    ev.status = r->exit_status;
    local_emit(lb, &ev);
  }
  runner_unref(r); /* the removal's reference, taken last */
}

static void runner_exited(struct local_runner *r, int status);

/* An adopted runner is not our child: its exit shows as its pidfd
 * becoming readable. Its exit status is not ours to read: 128 + SIGTERM
 * when a stop ended it, else 0 (an ephemeral runner ends after its job). */
static void adopted_exited(struct local_runner *r)
{
  if (r->state != LOCAL_RUNNING && r->state != LOCAL_STOPPING)
    return;
  if (r->poll_open)
    uv_poll_stop(&r->exit_poll);
  if (r->check_open)
    uv_timer_stop(&r->exit_check);
  log_info("local", "adopted runner ended; its exit status is not known",
           LOG_S("runner", r->name), LOG_I("pid", r->pid));
  runner_exited(r, r->stop_sent ? 128 + SIGTERM : 0);
}

static void adopted_exit_cb(uv_poll_t *handle, int status, int events)
{
  struct local_runner *r = handle->data;

  (void)events;
  if (status < 0)
    log_warn("local", "cannot watch an adopted runner",
             LOG_S("runner", r->name), LOG_S("error", uv_err_name(status)));
  adopted_exited(r);
}

/* Without pidfds (kernels before 5.3, valgrind): a look twice a second. */
static void adopted_check_cb(uv_timer_t *timer)
{
  struct local_runner *r = timer->data;

  if (local_pid_gone(r->pid))
    adopted_exited(r);
}

/* Takes l on as a runner of this backend: its exit watched through a
 * pidfd, its output file read from where it is now. 0, or a negative code
 * (nothing kept: the caller kills it). */
static int local_adopt_one(struct local_backend *lb,
                           const struct local_leftover *l)
{
  struct local_runner *r = calloc(1, sizeof(*r));
  int rc = -ENOMEM;

  if (r == NULL)
    return -ENOMEM;
  r->lb = lb;
  r->process.data = r->out.data = r->timer.data = r->exit_poll.data = r;
  r->exit_check.data = r;
  r->out_fd = r->pidfd = -1;
  r->state = LOCAL_RUNNING;
  r->adopted = 1;
  r->announced = 1; /* list() reports it; no PLACED or RUNNING */
  r->pid = l->pid;
  r->where = l->where;
  snprintf(r->where.source, sizeof(r->where.source), "local");
  snprintf(r->where.node, sizeof(r->where.node), "%s", lb->node);
  r->name = strdup(l->name);
  r->pool = strdup(l->pool);
  if (r->name == NULL || r->pool == NULL ||
      asprintf(&r->work_dir, "%s/%s", lb->work_root, l->name) < 0 ||
      asprintf(&r->out_path, "%s/" LOGS_DIR "/%s", lb->work_root, l->name) <
          0) {
    r->work_dir = r->out_path = NULL;
    goto fail;
  }
  r->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)l->pid, 0);
  if (r->pidfd < 0 && errno != ENOSYS) {
    rc = -errno;
    goto fail;
  }
  if (r->pidfd >= 0) {
    rc = uv_poll_init(lb->loop, &r->exit_poll, r->pidfd);
    if (rc < 0)
      goto fail;
    r->poll_open = 1;
  } else {
    (void)uv_timer_init(lb->loop, &r->exit_check);
    r->check_open = 1;
  }
  (void)uv_timer_init(lb->loop, &r->timer);
  r->refs = 2;
  r->next = lb->runners;
  lb->runners = r;
  if (r->poll_open)
    rc = uv_poll_start(&r->exit_poll, UV_READABLE, adopted_exit_cb);
  else
    rc = uv_timer_start(&r->exit_check, adopted_check_cb, 500, 500);
  if (rc == 0 && runner_watch_out(r, 1) < 0)
    log_warn("local", "cannot read an adopted runner's output",
             LOG_S("runner", r->name));
  if (rc < 0) {
    runner_close(r);
    return rc;
  }
  log_info("local", "runner of an earlier runfleetd still runs; kept",
           LOG_S("runner", r->name), LOG_S("pool", r->pool),
           LOG_I("pid", r->pid), LOG_U("gpus", r->where.ngpus));
  return 0;
fail:
  if (r->pidfd >= 0)
    close(r->pidfd);
  free(r->name);
  free(r->pool);
  free(r->work_dir);
  free(r->out_path);
  free(r);
  return rc;
}

/* Keeps the leftovers still alive as this backend's runners (listed, so
 * runner control adopts or stops them); one that cannot be watched is
 * killed and its files removed. Frees the list. */
static void local_adopt(struct local_backend *lb, struct local_leftover *kept)
{
  char path[LOCAL_PATH_MAX];

  while (kept != NULL) {
    struct local_leftover *l = kept;
    int rc;

    kept = l->next;
    rc = local_adopt_one(lb, l);
    if (rc < 0) {
      log_warn("local",
               "cannot keep a runner of an earlier runfleetd; "
               "killing it",
               LOG_S("runner", l->name), LOG_S("error", strerror(-rc)));
      if (kill(-(pid_t)l->pid, SIGKILL) < 0 && errno != ESRCH)
        log_warn("local", "cannot kill runner", LOG_S("runner", l->name));
      local_pidfile_remove(lb->work_root, l->name);
      snprintf(path, sizeof(path), "%s/%s", lb->work_root, l->name);
      backend_local_kill_strays(path, 1);
      if (fs_rmtree(path) < 0)
        log_warn("local", "cannot remove leftover work dir",
                 LOG_S("dir", path));
      snprintf(path, sizeof(path), "%s/" LOGS_DIR "/%s", lb->work_root,
               l->name);
      unlink(path);
    }
    free(l);
  }
}

static void runner_exited(struct local_runner *r, int status)
{
  struct local_backend *lb = r->lb;
  int rc;

  r->exit_status = status;
  log_info("local", "runner exited", LOG_S("runner", r->name),
           LOG_S("pool", r->pool), LOG_I("pid", r->pid),
           LOG_I("status", status));
  /* Helpers the runner left behind share its process group; the group
   * outlives the leader's pid while any member lives, so this cannot hit
   * an unrelated process. */
  if (kill(-(pid_t)r->pid, SIGKILL) < 0 && errno != ESRCH)
    log_warn("local", "cannot kill runner process group",
             LOG_S("runner", r->name), LOG_S("error", strerror(errno)));
  rc = uv_timer_stop(&r->timer);
  if (rc < 0)
    log_warn("local", "cannot stop grace timer", LOG_S("runner", r->name),
             LOG_S("error", uv_err_name(rc)));
  /* Its start is reported before its end, even when it ended at once. */
  runner_announce(r);
  local_pidfile_remove(lb->work_root, r->name);
  runner_set_state(r, LOCAL_REAPING);
  /* Work dirs hold checkouts and build trees: remove them off the loop. */
  r->rm_work.data = r;
  r->refs++;
  rc = uv_queue_work(lb->loop, &r->rm_work, runner_rm_work_cb,
                     runner_rm_after_cb);
  if (rc < 0) {
    r->strays = backend_local_kill_strays(r->work_dir, 1);
    r->rm_result = fs_rmtree(r->work_dir);
    runner_rm_after_cb(&r->rm_work, 0);
  }
}

static void runner_exit_cb(uv_process_t *process, int64_t exit_status,
                           int term_signal)
{
  struct local_runner *r = process->data;

  runner_exited(r, term_signal != 0 ? 128 + term_signal : (int)exit_status);
}

static void runner_grace_cb(uv_timer_t *timer)
{
  struct local_runner *r = timer->data;

  if (r->state != LOCAL_STOPPING)
    return;
  log_warn("local", "runner ignored SIGTERM, killing it",
           LOG_S("runner", r->name), LOG_U("grace_ms", r->lb->grace_ms));
  if (kill(-(pid_t)r->pid, SIGKILL) < 0 && errno != ESRCH)
    log_warn("local", "cannot kill runner", LOG_S("runner", r->name),
             LOG_S("error", strerror(errno)));
}

/* --- start -------------------------------------------------------------- */

struct local_env {
  char *owned[LOCAL_ENV_OWN];
  size_t nowned;
  char **envp;
};

static size_t env_name_len(const char *entry)
{
  return strcspn(entry, "=");
}

static int env_add(struct local_env *e, const char *name, const char *value)
{
  char *s;

  assert(e->nowned < LOCAL_ENV_OWN);
  if (asprintf(&s, "%s=%s", name, value) < 0)
    return -ENOMEM;
  e->owned[e->nowned++] = s;
  return 0;
}

static void env_free(struct local_env *e)
{
  size_t i;

  for (i = 0; i < e->nowned; i++)
    free(e->owned[i]);
  free(e->envp);
  memset(e, 0, sizeof(*e));
}

/* Builds runfleetd's environment without RUNFLEET_SECRET*, then the
 * runner's variables, then spec->env; a later entry replaces an earlier
 * one of the same name. */
static int runner_env(const struct local_backend *lb,
                      const struct local_runner *r,
                      const struct backend_runner_spec *spec,
                      struct local_env *e)
{
  char gpus[BACKEND_MAX_GPUS * 12];
  const char **all = NULL;
  size_t nparent = 0, nspec = 0, n = 0, i, j, k = 0;
  int rc = -ENOMEM;

  local_gpu_list(&r->where, gpus, sizeof(gpus));
  if ((lb->hook_started != NULL &&
       env_add(e, "ACTIONS_RUNNER_HOOK_JOB_STARTED", lb->hook_started) < 0) ||
      (lb->hook_completed != NULL &&
       env_add(e, "ACTIONS_RUNNER_HOOK_JOB_COMPLETED", lb->hook_completed) <
           0) ||
      env_add(e, "RUNFLEET_RUNNER_NAME", r->name) < 0 ||
      env_add(e, "RUNFLEET_POOL", r->pool) < 0 ||
      env_add(e, "RUNFLEET_WORK_DIR", r->work_dir) < 0 ||
      env_add(e, "RUNFLEET_GPUS", gpus) < 0 ||
      env_add(e, "CUDA_VISIBLE_DEVICES", gpus) < 0 ||
      /* "void" hides every device from the NVIDIA container runtime. */
      env_add(e, "NVIDIA_VISIBLE_DEVICES", r->where.ngpus > 0 ? gpus : "void") <
          0)
    goto fail;

  while (environ != NULL && environ[nparent] != NULL)
    nparent++;
  while (spec->env != NULL && spec->env[nspec] != NULL)
    nspec++;
  all = calloc(nparent + e->nowned + nspec, sizeof(*all));
  if (all == NULL)
    goto fail;
  for (i = 0; i < nparent; i++)
    if (strncmp(environ[i], "RUNFLEET_SECRET", 15) != 0)
      all[n++] = environ[i];
  for (i = 0; i < e->nowned; i++)
    all[n++] = e->owned[i];
  for (i = 0; i < nspec; i++)
    all[n++] = spec->env[i];

  e->envp = calloc(n + 1, sizeof(*e->envp));
  if (e->envp == NULL)
    goto fail;
  for (i = 0; i < n; i++) {
    size_t len = env_name_len(all[i]);
    for (j = i + 1; j < n; j++)
      if (env_name_len(all[j]) == len && strncmp(all[i], all[j], len) == 0)
        break;
    if (j == n)
      e->envp[k++] = (char *)all[i];
  }
  rc = 0;
fail:
  free(all);
  return rc;
}

/* Creates <work_root>/<name>, replacing a stale one left by a crash. */
static int runner_mkdir(const struct local_backend *lb,
                        const struct local_runner *r)
{
  int rc = fs_mkdir_p(lb->work_root, 0700);

  if (rc < 0)
    return rc;
  if (mkdir(r->work_dir, 0700) == 0)
    return 0;
  if (errno != EEXIST)
    return -errno;
  log_warn("local", "removing stale runner work dir", LOG_S("runner", r->name),
           LOG_S("dir", r->work_dir));
  rc = fs_rmtree(r->work_dir);
  if (rc < 0)
    return rc;
  return mkdir(r->work_dir, 0700) < 0 ? -errno : 0;
}

/* Creates the runner's output file (<work_root>/.runfleet-logs/<name>,
 * truncated) and opens its write end for the child into *fd. */
static int runner_out_open(const struct local_backend *lb,
                           struct local_runner *r, int *fd)
{
  char dir[LOCAL_PATH_MAX];

  snprintf(dir, sizeof(dir), "%s/" LOGS_DIR, lb->work_root);
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return -errno;
  if (r->out_path == NULL &&
      asprintf(&r->out_path, "%s/%s", dir, r->name) < 0) {
    r->out_path = NULL;
    return -ENOMEM;
  }
  *fd = open(r->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
             0600);
  return *fd < 0 ? -errno : 0;
}

/* Spawns the runner process of r; on failure every handle of r is closing
 * and r is freed by the loop. */
static int runner_spawn(struct local_backend *lb, struct local_runner *r,
                        const struct backend_runner_spec *spec)
{
  struct local_env env;
  uv_stdio_container_t stdio[3];
  uv_process_options_t opts;
  char *args[4];
  uv_file fds[2] = {-1, -1};
  int rc;

  memset(&env, 0, sizeof(env));
  rc = uv_timer_init(lb->loop, &r->timer);
  if (rc < 0)
    return rc; /* no handle yet: the caller frees r */
  r->refs++;
  rc = runner_env(lb, r, spec, &env);
  if (rc < 0)
    goto fail;
  rc = runner_out_open(lb, r, &fds[1]);
  if (rc < 0)
    goto fail;
  rc = runner_watch_out(r, 0);
  if (rc < 0)
    goto fail;

  /* actions/runner takes its JIT config only on the command line, so the
   * secret is visible in /proc/<pid>/cmdline to the same user; it is never
   * copied or logged here. */
  args[0] = spec->pool->runner_command;
  args[1] = "--jitconfig";
  args[2] = (char *)spec->jit_config;
  args[3] = NULL;
  r->pid = 0;
  local_pidfile_write(lb->work_root, r->name, r->pid, r->pool,
                      &r->where); /* before the fork: see pidfile_write */
  memset(&opts, 0, sizeof(opts));
  opts.file = spec->pool->runner_command;
  opts.args = args;
  opts.env = env.envp;
  opts.cwd = r->work_dir;
  opts.flags = UV_PROCESS_DETACHED;
  opts.exit_cb = runner_exit_cb;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = fds[1];
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = fds[1];
  rc = uv_spawn(lb->loop, &r->process, &opts);
  r->has_process = 1; /* a failed spawn still needs uv_close */
  r->refs++;
  if (rc < 0)
    goto fail;
  r->pid = r->process.pid;
  local_pidfile_write(lb->work_root, r->name, r->pid, r->pool, &r->where);
  goto out;

fail:
  local_pidfile_remove(lb->work_root, r->name);
  runner_close(r);
  runner_out_remove(r);
out:
  if (fds[1] >= 0)
    close(fds[1]);
  env_free(&env);
  return rc;
}

static int local_start(struct backend *b,
                       const struct backend_runner_spec *spec)
{
  struct local_backend *lb = local_of(b);
  const struct cfg_pool *pool = spec->pool;
  struct local_runner *r;
  int rc;

  if (lb->closing)
    return -ECANCELED;
  if (!local_name_valid(spec->name) || pool == NULL || pool->name == NULL ||
      pool->runner_command == NULL || spec->jit_config == NULL ||
      spec->placement == NULL) {
    log_error("local", "invalid runner spec",
              LOG_S("runner",
                    local_name_valid(spec->name) ? spec->name : "(invalid)"));
    return -EINVAL;
  }
  if (local_find(lb, spec->name) != NULL)
    return -EEXIST;
  if (!local_placement_free(lb, spec->placement)) {
    log_warn("local", "placement not free on this host",
             LOG_S("runner", spec->name), LOG_S("node", spec->placement->node));
    return -ENOSPC;
  }

  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return -ENOMEM;
  r->lb = lb;
  r->process.data = r->out.data = r->timer.data = r->exit_poll.data = r;
  r->out_fd = r->pidfd = -1;
  r->state = LOCAL_RUNNING;
  r->name = strdup(spec->name);
  r->pool = strdup(pool->name);
  if (r->name == NULL || r->pool == NULL ||
      asprintf(&r->work_dir, "%s/%s", lb->work_root, spec->name) < 0) {
    r->work_dir = NULL;
    rc = -ENOMEM;
    goto fail;
  }
  rc = runner_mkdir(lb, r);
  if (rc < 0) {
    log_error("local", "cannot create runner work dir",
              LOG_S("runner", r->name), LOG_S("dir", r->work_dir),
              LOG_S("error", strerror(-rc)));
    goto fail;
  }
  r->where = *spec->placement;
  r->next = lb->runners;
  lb->runners = r;
  rc = runner_spawn(lb, r, spec);
  if (rc < 0) {
    log_error("local", "cannot start runner", LOG_S("runner", r->name),
              LOG_S("pool", r->pool), LOG_S("command", pool->runner_command),
              LOG_S("error", uv_err_name(rc)));
    if (fs_rmtree(r->work_dir) < 0)
      log_warn("local", "cannot remove runner work dir",
               LOG_S("runner", r->name));
    if (r->refs == 0)
      runner_free(r);
    return rc;
  }

  {
    char gpus[BACKEND_MAX_GPUS * 12];
    local_gpu_list(&r->where, gpus, sizeof(gpus));
    log_info("local", "runner started", LOG_S("runner", r->name),
             LOG_S("pool", r->pool), LOG_I("pid", r->pid), LOG_S("gpus", gpus),
             LOG_U("cpu_milli", r->where.cpu_milli));
  }
  if (uv_timer_start(&lb->announce, announce_cb, 0, 0) < 0)
    runner_announce(r); /* cannot happen with a zero timeout; never lost */
  return 0;

fail:
  free(r->name);
  free(r->pool);
  free(r->work_dir);
  free(r);
  return rc;
}

/* --- stop, capacity, close ---------------------------------------------- */

static int runner_stop(struct local_runner *r)
{
  int rc;

  if (r->state == LOCAL_STOPPING)
    return 0;
  if (r->state != LOCAL_RUNNING)
    return -ENOENT;
  runner_set_state(r, LOCAL_STOPPING);
  r->stop_sent = 1;
  if (kill(-(pid_t)r->pid, SIGTERM) < 0 && errno != ESRCH)
    log_warn("local", "cannot signal runner", LOG_S("runner", r->name),
             LOG_S("error", strerror(errno)));
  rc = uv_timer_start(&r->timer, runner_grace_cb, r->lb->grace_ms, 0);
  if (rc < 0) {
    log_warn("local", "cannot arm grace timer, killing now",
             LOG_S("runner", r->name), LOG_S("error", uv_err_name(rc)));
    if (kill(-(pid_t)r->pid, SIGKILL) < 0 && errno != ESRCH)
      return -errno;
  }
  return 0;
}

static int local_stop(struct backend *b, const char *name)
{
  struct local_runner *r = name != NULL ? local_find(local_of(b), name) : NULL;

  if (r == NULL)
    return -ENOENT;
  log_info("local", "stopping runner", LOG_S("runner", r->name),
           LOG_I("pid", r->pid));
  return runner_stop(r);
}

static size_t local_list(struct backend *b, struct backend_item *items,
                         size_t max)
{
  struct local_runner *r;
  size_t n = 0;

  for (r = local_of(b)->runners; r != NULL; r = r->next) {
    if (r->state == LOCAL_CLOSING)
      continue;
    if (n < max) {
      items[n].name = r->name;
      items[n].pool = r->pool;
      items[n].where = r->where;
      items[n].running = r->state == LOCAL_RUNNING;
    }
    n++;
  }
  return n;
}

/* Runners whose exit has not been reported yet. */
static size_t local_count(struct backend *b)
{
  struct local_runner *r;
  size_t n = 0;

  for (r = local_of(b)->runners; r != NULL; r = r->next)
    if (r->state != LOCAL_CLOSING)
      n++;
  return n;
}

static void announce_closed_cb(uv_handle_t *handle)
{
  struct local_backend *lb = handle->data;

  lb->announce_open = 0;
  local_maybe_done(lb);
}

static void local_close(struct backend *b, enum backend_close_mode mode,
                        void (*done_cb)(void *arg), void *arg)
{
  struct local_backend *lb = local_of(b);
  struct local_runner *r;

  if (lb->closing)
    return;
  lb->closing = 1;
  lb->done_cb = done_cb;
  lb->done_arg = arg;
  if (mode == BACKEND_CLOSE_KEEP) {
    /* Runners go on; their pid and output files stay for the next
     * runfleetd, which adopts them. Only the handles close. */
    size_t kept = 0;
    struct local_runner *next;
    for (r = lb->runners; r != NULL; r = next) {
      next = r->next;
      if (r->state != LOCAL_RUNNING)
        continue;
      kept++;
      uv_timer_stop(&r->timer);
      runner_close(r);
    }
    log_info("local", "leaving runners running for the next runfleetd",
             LOG_U("runners", kept), LOG_U("stopping", local_count(b)));
  } else {
    log_info("local", "stopping every runner",
             LOG_U("runners", local_count(b)));
    for (r = lb->runners; r != NULL; r = r->next)
      if (r->state == LOCAL_RUNNING && runner_stop(r) < 0)
        log_warn("local", "cannot stop runner", LOG_S("runner", r->name));
  }
  if (lb->announce_open && !uv_is_closing((uv_handle_t *)&lb->announce))
    uv_close((uv_handle_t *)&lb->announce, announce_closed_cb);
  local_maybe_done(lb);
}

static void local_destroy(struct backend *b)
{
  struct local_backend *lb = local_of(b);

  if (lb == NULL)
    return;
  /* Records hold uv handles of the loop: close() must have finished. */
  assert(lb->runners == NULL && !lb->announce_open);
  free(lb->work_root);
  free(lb->hook_started);
  free(lb->hook_completed);
  free(lb);
}

static const struct backend_ops local_ops = {
    .start = local_start,
    .stop = local_stop,
    .list = local_list,
    .count = local_count,
    .close = local_close,
    .destroy = local_destroy,
};

/* --- creation ----------------------------------------------------------- */

static int gpu_cmp(const void *a, const void *b)
{
  const int *x = a, *y = b;

  return (*x > *y) - (*x < *y);
}

static void local_set_gpus(struct local_backend *lb, const int *idx, size_t n)
{
  size_t i, j;

  for (i = 0; i < n && lb->ngpus < BACKEND_MAX_GPUS; i++) {
    if (idx[i] < 0)
      continue;
    for (j = 0; j < lb->ngpus; j++)
      if (lb->gpus[j] == idx[i])
        break;
    if (j == lb->ngpus)
      lb->gpus[lb->ngpus++] = idx[i];
  }
  qsort(lb->gpus, lb->ngpus, sizeof(lb->gpus[0]), gpu_cmp);
}

/* Describes this host to capacity: one node of source "local". */
static int local_describe(struct local_backend *lb, struct capacity *cap)
{
  struct cap_node_desc d;

  if (gethostname(lb->node, sizeof(lb->node)) != 0 || lb->node[0] == '\0')
    snprintf(lb->node, sizeof(lb->node), "local");
  lb->node[sizeof(lb->node) - 1] = '\0';
  memset(&d, 0, sizeof(d));
  d.source = "local";
  d.name = lb->node;
  d.gpus = lb->gpus;
  d.ngpus = lb->ngpus;
  d.cpu_milli = lb->cpus_total * 1000u;
  d.memory = lb->memory_total;
  return capacity_node_set(cap, &d);
}

static int dup_opt(char **dst, const char *src)
{
  *dst = NULL;
  if (src == NULL)
    return 0;
  *dst = strdup(src);
  return *dst != NULL ? 0 : -ENOMEM;
}

struct backend *backend_local_new(uv_loop_t *loop, const struct config *cfg,
                                  struct capacity *cap,
                                  backend_event_cb on_event, void *ctx)
{
  const struct cfg_local *lc = &cfg->local;
  struct local_backend *lb;
  struct local_leftover *kept = NULL;
  int found[BACKEND_MAX_GPUS];
  size_t nfound = 0;
  long pages, page_size;
  int rc;

  lb = calloc(1, sizeof(*lb));
  if (lb == NULL) {
    log_error("local", "out of memory", LOG_NONE);
    return NULL;
  }
  lb->base.ops = &local_ops;
  lb->base.on_event = on_event;
  lb->base.ctx = ctx;
  lb->base.capacity = cap;
  lb->loop = loop;
  lb->grace_ms = LOCAL_GRACE_MS;
  if (lc->work_root == NULL || lc->work_root[0] != '/') {
    log_error(
        "local", "work_root must be an absolute path",
        LOG_S("work_root", lc->work_root != NULL ? lc->work_root : "(none)"));
    goto fail;
  }
  if (dup_opt(&lb->work_root, lc->work_root) < 0 ||
      dup_opt(&lb->hook_started, lc->hook_started) < 0 ||
      dup_opt(&lb->hook_completed, lc->hook_completed) < 0) {
    log_error("local", "out of memory", LOG_NONE);
    goto fail;
  }
  rc = fs_mkdir_p(lb->work_root, 0700);
  if (rc < 0) {
    log_error("local", "cannot create work_root",
              LOG_S("work_root", lb->work_root), LOG_S("error", strerror(-rc)));
    goto fail;
  }

  kept = local_scan_leftovers(lb->work_root);

  if (lc->gpus_auto) {
    rc = local_discover_gpus(found, BACKEND_MAX_GPUS, &nfound);
    if (rc < 0)
      goto fail;
    local_set_gpus(lb, found, nfound);
  } else {
    local_set_gpus(lb, lc->gpus, lc->ngpus);
  }

  lb->cpus_total = lc->cpu_slots;
  if (lb->cpus_total == 0)
    lb->cpus_total = uv_available_parallelism();
  pages = sysconf(_SC_PHYS_PAGES);
  page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0)
    lb->memory_total = (uint64_t)pages * (uint64_t)page_size;
  rc = local_describe(lb, cap);
  if (rc < 0) {
    log_error("local", "cannot describe this host to capacity",
              LOG_S("error", strerror(-rc)));
    goto fail;
  }
  /* The last step: nothing after it can fail, so a failed start never
   * leaves a handle in the loop. */
  (void)uv_timer_init(loop, &lb->announce);
  lb->announce.data = lb;
  lb->announce_open = 1;
  local_adopt(lb, kept);
  log_info("local", "local backend ready", LOG_S("work_root", lb->work_root),
           LOG_S("node", lb->node), LOG_U("gpus", lb->ngpus),
           LOG_U("cpus", lb->cpus_total),
           LOG_U("memory_bytes", lb->memory_total));
  return &lb->base;

fail:
  /* Runners kept for adoption go on running: the next start finds them. */
  while (kept != NULL) {
    struct local_leftover *l = kept;
    kept = l->next;
    free(l);
  }
  local_destroy(&lb->base);
  return NULL;
}

void backend_local_set_grace_ms(struct backend *b, uint64_t ms)
{
  local_of(b)->grace_ms = ms;
}
