/* The local backend against small shell-script runners in a temp dir. The
 * fixture plays the runner control: it takes a capacity hold, starts the
 * runner where the hold is, and releases the hold when the runner's exit
 * is reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend_local.h"
#include "capacity.h"
#include "fs.h"

#define JIT "eyJqaXQiOiJzZWNyZXQtY29uZmlnIn0="
#define MAX_EXITS 16
#define MAX_EVENTS 64
#define MAX_STARTS 32
#define RUNNER_NAME_MAX 64

/* One event as the callback saw it; the pointers of the event are only
 * valid during the callback, so everything is copied. */
struct event_rec {
  enum backend_event_type type;
  char name[RUNNER_NAME_MAX];
  char node[CAP_NAME_MAX];
  int gpus[BACKEND_MAX_GPUS];
  size_t ngpus;
  long pid;
  int status;
};

/* Where the events of the latest start of a name begin: a name is used
 * again once its runner's exit was reported. */
struct start_rec {
  char name[RUNNER_NAME_MAX];
  size_t first_event;
};

struct fixture {
  char dir[64];   /* temp root: scripts, outputs */
  char work[128]; /* work_root, two levels below dir so it gets created */
  char host[CAP_NAME_MAX]; /* the node the backend described */
  uv_loop_t loop;
  struct config cfg;
  struct cfg_pool cpu, gpu1, gpu2;
  struct capacity *cap;
  struct backend *b;
  int in_start; /* inside ops->start: no event may come */
  size_t nevents;
  struct event_rec events[MAX_EVENTS];
  size_t nstarts;
  struct start_rec starts[MAX_STARTS];
  size_t nexits;
  char exit_names[MAX_EXITS][RUNNER_NAME_MAX];
  int exit_status[MAX_EXITS];
  int done;
  const struct cfg_pool *restart; /* EXITED starts "<name>-next" in it */
  int restart_rc;
};

/* --- helpers ------------------------------------------------------------ */

static int start(struct fixture *f, const char *name,
                 const struct cfg_pool *pool, const char *const *env);

/* The latest event of name, or NULL. */
static const struct event_rec *event_last(const struct fixture *f,
                                          const char *name)
{
  size_t i;

  for (i = f->nevents; i > 0; i--)
    if (strcmp(f->events[i - 1].name, name) == 0)
      return &f->events[i - 1];
  return NULL;
}

/* The event of type of the latest start of name, or NULL. */
static const struct event_rec *event_find(const struct fixture *f,
                                          const char *name,
                                          enum backend_event_type type)
{
  size_t from = 0, i;

  for (i = f->nstarts; i > 0; i--)
    if (strcmp(f->starts[i - 1].name, name) == 0) {
      from = f->starts[i - 1].first_event;
      break;
    }
  for (i = from; i < f->nevents; i++)
    if (f->events[i].type == type && strcmp(f->events[i].name, name) == 0)
      return &f->events[i];
  return NULL;
}

/* Each runner goes PLACED, RUNNING, EXITED, in that order, once. */
static void check_order(const struct fixture *f, const struct backend_event *ev)
{
  const struct event_rec *prev = event_last(f, ev->name);

  switch (ev->type) {
  case BACKEND_PLACED:
    assert_true(prev == NULL || prev->type == BACKEND_EXITED);
    break;
  case BACKEND_RUNNING:
    assert_non_null(prev);
    assert_int_equal(prev->type, BACKEND_PLACED);
    break;
  case BACKEND_EXITED:
    /* An adopted runner is listed, never PLACED or RUNNING: its first
     * event is its EXITED. */
    if (prev != NULL)
      assert_int_equal(prev->type, BACKEND_RUNNING);
    break;
  case BACKEND_LOST:
    fail_msg("the local backend reported %s lost", ev->name);
    break;
  case BACKEND_LISTED:
    fail_msg("the local backend has no watch to report as listed");
    break;
  }
}

static void record_event(struct fixture *f, const struct backend_event *ev)
{
  struct event_rec *rec;

  assert_true(f->nevents < MAX_EVENTS);
  assert_true(strlen(ev->name) < RUNNER_NAME_MAX);
  rec = &f->events[f->nevents++];
  memset(rec, 0, sizeof(*rec));
  rec->type = ev->type;
  snprintf(rec->name, sizeof(rec->name), "%s", ev->name);
  if (ev->type == BACKEND_PLACED) {
    assert_non_null(ev->node);
    assert_true(ev->ngpus <= BACKEND_MAX_GPUS);
    snprintf(rec->node, sizeof(rec->node), "%s", ev->node);
    if (ev->ngpus > 0)
      memcpy(rec->gpus, ev->gpus, ev->ngpus * sizeof(ev->gpus[0]));
    rec->ngpus = ev->ngpus;
  }
  rec->pid = ev->pid;
  rec->status = ev->status;
}

/* PLACED names this host and exactly the GPUs the hold gave. */
static void check_placed(const struct fixture *f,
                         const struct backend_event *ev)
{
  const struct cap_placement *where = capacity_hold_find(f->cap, ev->name);
  size_t i;

  assert_string_equal(ev->node, f->host);
  assert_non_null(where);
  assert_int_equal(ev->ngpus, where->ngpus);
  for (i = 0; i < ev->ngpus; i++)
    assert_int_equal(ev->gpus[i], where->gpus[i]);
}

/* What the runner control does on an exit: the hold goes, and the
 * scheduler may start a replacement at once. */
static void on_exited(struct fixture *f, const struct backend_event *ev)
{
  char path[256];

  assert_true(f->nexits < MAX_EXITS);
  snprintf(f->exit_names[f->nexits], sizeof(f->exit_names[0]), "%s", ev->name);
  f->exit_status[f->nexits] = ev->status;
  f->nexits++;
  /* The work directory is gone before the exit is reported. */
  snprintf(path, sizeof(path), "%s/%s", f->work, ev->name);
  assert_int_equal(access(path, F_OK), -1);
  /* Every runner of these tests was started on a hold of its own. */
  assert_int_equal(capacity_release(f->cap, ev->name), 0);
  if (f->restart != NULL) {
    const struct cfg_pool *pool = f->restart;
    char next[80];

    snprintf(next, sizeof(next), "%s-next", ev->name);
    f->restart = NULL;
    f->restart_rc = start(f, next, pool, NULL);
  }
}

static void on_event_cb(void *ctx, const struct backend_event *ev)
{
  struct fixture *f = ctx;

  assert_int_equal(f->in_start, 0);
  assert_non_null(ev->name);
  check_order(f, ev);
  if (ev->type == BACKEND_PLACED)
    check_placed(f, ev);
  if (ev->type == BACKEND_RUNNING)
    assert_true(ev->pid > 0);
  record_event(f, ev);
  if (ev->type == BACKEND_EXITED)
    on_exited(f, ev);
}

static int exit_status_of(struct fixture *f, const char *name)
{
  size_t i;

  for (i = 0; i < f->nexits; i++)
    if (strcmp(f->exit_names[i], name) == 0)
      return f->exit_status[i];
  return -1000;
}

static void tick_cb(uv_timer_t *t)
{
  (void)t;
}

/* Runs the loop until pred(arg) holds or ms pass; returns pred(arg). */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg,
                     unsigned ms)
{
  uv_timer_t tick;
  uint64_t deadline;
  int ok;

  assert_int_equal(uv_timer_init(loop, &tick), 0);
  assert_int_equal(uv_timer_start(&tick, tick_cb, 10, 10), 0);
  uv_update_time(loop);
  deadline = uv_now(loop) + ms;
  while (!pred(arg) && uv_now(loop) < deadline)
    uv_run(loop, UV_RUN_ONCE);
  ok = pred(arg);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

static int never(void *arg)
{
  (void)arg;
  return 0;
}

/* Lets the loop run for ms, for what must not happen. */
static void run_for(struct fixture *f, unsigned ms)
{
  assert_false(run_until(&f->loop, never, NULL, ms));
}

struct nexits_wait {
  struct fixture *f;
  size_t n;
};

static int nexits_reached(void *arg)
{
  struct nexits_wait *w = arg;

  return w->f->nexits >= w->n;
}

static void wait_exits(struct fixture *f, size_t n)
{
  struct nexits_wait w = {f, n};

  assert_true(run_until(&f->loop, nexits_reached, &w, 10000));
}

struct event_wait {
  struct fixture *f;
  const char *name;
  enum backend_event_type type;
};

static int event_came(void *arg)
{
  struct event_wait *w = arg;

  return event_find(w->f, w->name, w->type) != NULL;
}

/* Runs the loop until the latest start of name reported type. */
static const struct event_rec *wait_event(struct fixture *f, const char *name,
                                          enum backend_event_type type)
{
  struct event_wait w = {f, name, type};

  assert_true(run_until(&f->loop, event_came, &w, 10000));
  return event_find(f, name, type);
}

/* The pid RUNNING reported for name. */
static long running_pid(struct fixture *f, const char *name)
{
  return wait_event(f, name, BACKEND_RUNNING)->pid;
}

/* Waits for PLACED of name and checks its node and GPUs. */
static void assert_placed(struct fixture *f, const char *name, size_t n,
                          const int *want)
{
  const struct event_rec *ev = wait_event(f, name, BACKEND_PLACED);
  size_t i;

  assert_string_equal(ev->node, f->host);
  assert_int_equal(ev->ngpus, n);
  for (i = 0; i < n; i++)
    assert_int_equal(ev->gpus[i], want[i]);
}

static int file_exists(void *arg)
{
  return access(arg, F_OK) == 0;
}

static int is_done(void *arg)
{
  return ((struct fixture *)arg)->done;
}

static void done_cb(void *arg)
{
  ((struct fixture *)arg)->done = 1;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
  FILE *fp = fopen(path, "w");

  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(chmod(path, mode), 0);
}

/* Writes <dir>/<name> as an executable shell script; returns its path. */
static char *script(struct fixture *f, const char *name, const char *body)
{
  char path[256], text[2048];

  snprintf(path, sizeof(path), "%s/%s", f->dir, name);
  snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
  write_file(path, text, 0755);
  return strdup(path);
}

static char *read_all(const char *path)
{
  static char buf[65536];
  FILE *fp = fopen(path, "r");
  size_t n;

  assert_non_null(fp);
  n = fread(buf, 1, sizeof(buf) - 1, fp);
  buf[n] = '\0';
  assert_int_equal(fclose(fp), 0);
  return buf;
}

/* Whether text has line as one whole line. */
static int has_line(const char *text, const char *line)
{
  size_t len = strlen(line);
  const char *p = text;

  while ((p = strstr(p, line)) != NULL) {
    if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
      return 1;
    p += len;
  }
  return 0;
}

/* Sends the backend's log (our stderr) to <dir>/stderr.log; returns the
 * descriptor to give to capture_end. */
static int capture_begin(struct fixture *f)
{
  char path[256];
  int saved, fd;

  snprintf(path, sizeof(path), "%s/stderr.log", f->dir);
  fflush(stderr);
  saved = dup(2);
  assert_true(saved >= 0);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(dup2(fd, 2), 2);
  close(fd);
  return saved;
}

/* Restores stderr; returns what was logged meanwhile. */
static const char *capture_end(struct fixture *f, int saved)
{
  char path[256];

  snprintf(path, sizeof(path), "%s/stderr.log", f->dir);
  fflush(stderr);
  assert_int_equal(dup2(saved, 2), 2);
  close(saved);
  return read_all(path);
}

static void pool_init(struct cfg_pool *p, const char *name, unsigned gpus,
                      unsigned cpus)
{
  memset(p, 0, sizeof(*p));
  p->name = strdup(name);
  assert_non_null(p->name);
  p->gpus = gpus;
  p->cpus = cpus;
  p->max_runners = 8;
}

static void pool_command(struct cfg_pool *p, char *command)
{
  assert_non_null(command);
  free(p->runner_command);
  p->runner_command = command;
}

static void pool_free(struct cfg_pool *p)
{
  free(p->name);
  free(p->runner_command);
  memset(p, 0, sizeof(*p));
}

static void cfg_local_free(struct config *cfg)
{
  free(cfg->local.work_root);
  free(cfg->local.hook_started);
  free(cfg->local.hook_completed);
  memset(&cfg->local, 0, sizeof(cfg->local));
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  size_t i;

  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/rf-local-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->work, sizeof(f->work), "%s/work/runners", f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->cfg.backend = CFG_BACKEND_LOCAL;
  f->cfg.local.work_root = strdup(f->work);
  f->cfg.local.hook_started = strdup("/opt/hooks/started.sh");
  f->cfg.local.hook_completed = strdup("/opt/hooks/completed.sh");
  for (i = 0; i < 4; i++)
    f->cfg.local.gpus[i] = (int)(3 - i); /* unsorted on purpose */
  f->cfg.local.ngpus = 4;
  f->cfg.local.cpu_slots = 64;
  pool_init(&f->cpu, "cpu", 0, 1);
  pool_init(&f->gpu1, "gpu-1", 1, 1);
  pool_init(&f->gpu2, "gpu-2", 2, 1);
  *state = f;
  return 0;
}

/* The host the backend describes: one node of source "local", named by
 * the host name. */
static void learn_host(struct fixture *f)
{
  struct cap_gpu_view gpus[CAP_MAX_NODE_GPUS];
  const char *name, *source;
  char want[CAP_NAME_MAX];
  size_t ngpus;
  int ready;

  assert_int_equal(capacity_nnodes(f->cap), 1);
  assert_int_equal(capacity_node_view(f->cap, 0, &name, &source, &ready, gpus,
                                      CAP_MAX_NODE_GPUS, &ngpus),
                   0);
  assert_string_equal(source, "local");
  assert_int_equal(ready, 1);
  memset(want, 0, sizeof(want));
  if (gethostname(want, sizeof(want) - 1) != 0 || want[0] == '\0')
    snprintf(want, sizeof(want), "local");
  assert_string_equal(name, want);
  snprintf(f->host, sizeof(f->host), "%s", name);
}

/* Creates the capacity and the backend, then wipes the config strings, as
 * a reload would. */
static void backend_up(struct fixture *f)
{
  f->done = 0;
  f->cap = capacity_new();
  assert_non_null(f->cap);
  f->b = backend_local_new(&f->loop, &f->cfg, f->cap, on_event_cb, f);
  assert_non_null(f->b);
  cfg_local_free(&f->cfg);
  backend_local_set_grace_ms(f->b, 200);
  learn_host(f);
}

static void backend_down(struct fixture *f)
{
  struct cap_totals t;

  f->in_start = 0; /* a failed assertion may have left start early */
  if (f->b != NULL) {
    if (!f->done) {
      f->b->ops->close(f->b, BACKEND_CLOSE_STOP, done_cb, f);
      assert_true(run_until(&f->loop, is_done, f, 10000));
    }
    assert_int_equal(f->b->ops->count(f->b), 0);
    f->b->ops->destroy(f->b);
    f->b = NULL;
  }
  if (f->cap != NULL) {
    /* Every hold went with its runner's EXITED. */
    capacity_totals(f->cap, &t);
    assert_int_equal(t.holds, 0);
    capacity_destroy(f->cap);
    f->cap = NULL;
  }
  f->nevents = f->nstarts = 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  backend_down(f);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  cfg_local_free(&f->cfg);
  pool_free(&f->cpu);
  pool_free(&f->gpu1);
  pool_free(&f->gpu2);
  assert_int_equal(fs_rmtree(f->dir), 0);
  assert_int_equal(access(f->dir, F_OK), -1);
  unsetenv("RUNFLEET_NVIDIA_SMI");
  free(f);
  return 0;
}

/* Starts a runner at where, as given, bypassing capacity. */
static int start_at(struct fixture *f, const char *name,
                    const struct cfg_pool *pool, const char *const *env,
                    const struct cap_placement *where)
{
  struct backend_runner_spec spec;
  int rc;

  memset(&spec, 0, sizeof(spec));
  spec.name = name;
  spec.pool = pool;
  spec.jit_config = JIT;
  spec.env = env;
  spec.placement = where;
  f->in_start++;
  rc = f->b->ops->start(f->b, &spec);
  f->in_start--;
  if (rc == 0) {
    assert_true(f->nstarts < MAX_STARTS);
    snprintf(f->starts[f->nstarts].name, sizeof(f->starts[0].name), "%s", name);
    f->starts[f->nstarts++].first_event = f->nevents;
  }
  return rc;
}

/* As the runner control starts a runner: a hold for the pool's request,
 * then the backend at the held placement; the hold goes if the start
 * fails. -ENOSPC or -EEXIST from capacity start nothing. */
static int start(struct fixture *f, const char *name,
                 const struct cfg_pool *pool, const char *const *env)
{
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request req;
  int rc;

  capacity_request_for_pool(pool, &req, selector);
  rc = capacity_hold(f->cap, name, CAP_HOLDER_RUNNER, &req, NULL);
  if (rc < 0)
    return rc;
  rc = start_at(f, name, pool, env, capacity_hold_find(f->cap, name));
  if (rc < 0)
    assert_int_equal(capacity_release(f->cap, name), 0);
  return rc;
}

/* Whether a runner of pool would fit now, as the scheduler asks. */
static int pool_fits(struct fixture *f, const struct cfg_pool *pool)
{
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request req;

  capacity_request_for_pool(pool, &req, selector);
  return capacity_fits(f->cap, &req);
}

static struct cap_totals totals(struct fixture *f)
{
  struct cap_totals t;

  capacity_totals(f->cap, &t);
  return t;
}

/* A placement on node with the given GPUs and one CPU. */
static struct cap_placement placement_on(const char *node, const int *gpus,
                                         size_t ngpus)
{
  struct cap_placement p;

  memset(&p, 0, sizeof(p));
  snprintf(p.source, sizeof(p.source), "local");
  snprintf(p.node, sizeof(p.node), "%s", node);
  if (ngpus > 0)
    memcpy(p.gpus, gpus, ngpus * sizeof(gpus[0]));
  p.ngpus = ngpus;
  p.cpu_milli = 1000;
  return p;
}

/* A script that records cwd, args and environment, then exits 3. */
#define ENV_SCRIPT                                                             \
  "{ echo \"cwd=$(pwd)\"; for a in \"$@\"; do echo \"arg=$a\"; done; env; }"   \
  " > \"$OUT/$RUNFLEET_RUNNER_NAME.env\"\nexit 3"

/* --- tests -------------------------------------------------------------- */
/* --- tests -------------------------------------------------------------- */

static void test_command_cwd_and_env(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256], line[512];
  const char *env[] = {out_env, "RF_TEST_PARENT=spec", NULL};
  const struct cap_placement *where;
  const char *text;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  assert_int_equal(setenv("RUNFLEET_SECRET_TEST", "hunter2", 1), 0);
  assert_int_equal(setenv("RF_TEST_PARENT", "parent", 1), 0);
  assert_int_equal(setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3", 1), 0);
  pool_command(&f->cpu, script(f, "env.sh", ENV_SCRIPT));
  backend_up(f);

  assert_int_equal(start(f, "cpu-a", &f->cpu, env), 0);
  where = capacity_hold_find(f->cap, "cpu-a");
  assert_non_null(where);
  assert_int_equal(where->cpu_milli, 1000);
  assert_int_equal(f->b->ops->count(f->b), 1);
  assert_true(running_pid(f, "cpu-a") > 0);
  assert_placed(f, "cpu-a", 0, NULL);
  wait_exits(f, 1);
  assert_string_equal(f->exit_names[0], "cpu-a");
  assert_int_equal(f->exit_status[0], 3);
  assert_int_equal(f->b->ops->count(f->b), 0);
  unsetenv("RUNFLEET_SECRET_TEST");
  unsetenv("RF_TEST_PARENT");
  unsetenv("CUDA_VISIBLE_DEVICES");

  snprintf(path, sizeof(path), "%s/cpu-a.env", f->dir);
  text = read_all(path);
  snprintf(line, sizeof(line), "cwd=%s/cpu-a", f->work);
  assert_true(has_line(text, line));
  assert_true(has_line(text, "arg=--jitconfig"));
  assert_true(has_line(text, "arg=" JIT));
  assert_true(has_line(text, "RUNFLEET_RUNNER_NAME=cpu-a"));
  assert_true(has_line(text, "RUNFLEET_POOL=cpu"));
  snprintf(line, sizeof(line), "RUNFLEET_WORK_DIR=%s/cpu-a", f->work);
  assert_true(has_line(text, line));
  assert_true(
      has_line(text, "ACTIONS_RUNNER_HOOK_JOB_STARTED=/opt/hooks/started.sh"));
  assert_true(has_line(
      text, "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/opt/hooks/completed.sh"));
  /* A CPU runner sees no GPU, whatever runfleetd itself was given. */
  assert_true(has_line(text, "CUDA_VISIBLE_DEVICES="));
  assert_null(strstr(text, "CUDA_VISIBLE_DEVICES=0"));
  assert_true(has_line(text, "NVIDIA_VISIBLE_DEVICES=void"));
  assert_true(has_line(text, "RUNFLEET_GPUS="));
  assert_null(strstr(text, "RUNFLEET_SECRET"));
  assert_null(strstr(text, "hunter2"));
  assert_true(has_line(text, "RF_TEST_PARENT=spec"));
  assert_null(strstr(text, "RF_TEST_PARENT=parent"));
  snprintf(line, sizeof(line), "OUT=%s", f->dir);
  assert_true(has_line(text, line));
}

static void test_gpu_env(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256];
  const char *env[] = {out_env, NULL};
  const char *text;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  pool_command(&f->gpu2, script(f, "env.sh", ENV_SCRIPT));
  free(f->cfg.local.hook_started);
  free(f->cfg.local.hook_completed);
  f->cfg.local.hook_started = f->cfg.local.hook_completed = NULL;
  backend_up(f);

  assert_int_equal(start(f, "gpu-a", &f->gpu2, env), 0);
  assert_placed(f, "gpu-a", 2, (const int[]){0, 1});
  wait_exits(f, 1);
  snprintf(path, sizeof(path), "%s/gpu-a.env", f->dir);
  text = read_all(path);
  assert_true(has_line(text, "CUDA_VISIBLE_DEVICES=0,1"));
  assert_true(has_line(text, "NVIDIA_VISIBLE_DEVICES=0,1"));
  assert_true(has_line(text, "RUNFLEET_GPUS=0,1"));
  assert_true(has_line(text, "RUNFLEET_POOL=gpu-2"));
  assert_null(strstr(text, "ACTIONS_RUNNER_HOOK_JOB_STARTED"));
  assert_null(strstr(text, "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"));
}

static void test_gpu_exclusive_and_reused(void **state)
{
  struct fixture *f = *state;
  struct cap_placement cpu_only;
  struct cap_totals t;

  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  pool_command(&f->gpu2, script(f, "sleep2.sh", "exec sleep 30"));
  pool_command(&f->cpu, script(f, "sleep3.sh", "exec sleep 30"));
  backend_up(f);

  assert_int_equal(pool_fits(f, &f->gpu2), 1);
  assert_int_equal(start(f, "a", &f->gpu2, NULL), 0);
  assert_placed(f, "a", 2, (const int[]){0, 1});
  assert_int_equal(start(f, "b", &f->gpu1, NULL), 0);
  assert_placed(f, "b", 1, (const int[]){2});
  assert_int_equal(pool_fits(f, &f->gpu2), 0);
  assert_int_equal(start(f, "c", &f->gpu2, NULL), -ENOSPC);
  assert_int_equal(start(f, "c", &f->gpu1, NULL), 0);
  assert_placed(f, "c", 1, (const int[]){3});
  assert_int_equal(pool_fits(f, &f->gpu1), 0);
  assert_int_equal(start(f, "d", &f->gpu1, NULL), -ENOSPC);
  assert_int_equal(start(f, "b", &f->cpu, NULL), -EEXIST);
  /* The backend itself refuses a name in use, wherever it is placed. */
  cpu_only = placement_on(f->host, NULL, 0);
  assert_int_equal(start_at(f, "b", &f->cpu, NULL, &cpu_only), -EEXIST);
  t = totals(f);
  assert_int_equal(t.gpus_total, 4);
  assert_int_equal(t.gpus_held, 4);
  assert_int_equal(t.gpus_unhealthy, 0);
  assert_int_equal(t.cpu_milli_held, 3000);
  assert_int_equal(f->b->ops->count(f->b), 3);

  /* Stopping frees the GPUs only once the exit is reaped. */
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  assert_int_equal(f->b->ops->stop(f->b, "nobody"), -ENOENT);
  assert_int_equal(totals(f).gpus_held, 4);
  wait_exits(f, 1);
  assert_int_equal(exit_status_of(f, "a"), 128 + SIGTERM);
  assert_int_equal(f->b->ops->stop(f->b, "a"), -ENOENT);
  assert_int_equal(totals(f).gpus_held, 2);
  assert_int_equal(f->b->ops->count(f->b), 2);
  assert_int_equal(start(f, "d", &f->gpu1, NULL), 0);
  assert_placed(f, "d", 1, (const int[]){0});
  assert_int_equal(start(f, "e", &f->gpu2, NULL), -ENOSPC);
  assert_int_equal(start(f, "e", &f->gpu1, NULL), 0);
  assert_placed(f, "e", 1, (const int[]){1});
  /* The name of a reaped runner is free again. */
  assert_int_equal(f->b->ops->stop(f->b, "d"), 0);
  wait_exits(f, 2);
  assert_int_equal(start(f, "a", &f->gpu1, NULL), 0);
  assert_placed(f, "a", 1, (const int[]){0});

  /* Closing stops the rest, reports each exit, then says done. */
  f->b->ops->close(f->b, BACKEND_CLOSE_STOP, done_cb, f);
  assert_int_equal(start(f, "late", &f->cpu, NULL), -ECANCELED);
  assert_true(run_until(&f->loop, is_done, f, 10000));
  assert_int_equal(f->nexits, 6);
  assert_int_equal(exit_status_of(f, "b"), 128 + SIGTERM);
  assert_int_equal(exit_status_of(f, "c"), 128 + SIGTERM);
  assert_int_equal(exit_status_of(f, "e"), 128 + SIGTERM);
  assert_int_equal(f->b->ops->count(f->b), 0);
  t = totals(f);
  assert_int_equal(t.gpus_held, 0);
  assert_int_equal(t.cpu_milli_held, 0);
}

static void test_cpu_slots_and_memory(void **state)
{
  struct fixture *f = *state;
  struct cap_totals t;
  struct cfg_pool big;
  long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);

  f->cfg.local.cpu_slots = 4;
  f->cpu.cpus = 3;
  pool_command(&f->cpu, script(f, "sleep.sh", "exec sleep 30"));
  backend_up(f);

  /* The host as described: cpu_slots cores and its physical memory. */
  t = totals(f);
  assert_int_equal(t.nodes, 1);
  assert_int_equal(t.cpu_milli_total, 4000);
  assert_true(t.memory_total > 0);
  assert_true(pages > 0 && page_size > 0);
  assert_int_equal(t.memory_total, (uint64_t)pages * (uint64_t)page_size);
  assert_int_equal(start(f, "a", &f->cpu, NULL), 0);
  assert_int_equal(pool_fits(f, &f->cpu), 0);
  assert_int_equal(start(f, "b", &f->cpu, NULL), -ENOSPC);

  pool_init(&big, "big", 0, 1);
  pool_command(&big, script(f, "sleep-big.sh", "exec sleep 30"));
  big.memory_bytes = t.memory_total / 2 + 1;
  assert_int_equal(start(f, "m1", &big, NULL), 0);
  t = totals(f);
  assert_int_equal(t.cpu_milli_held, 4000);
  assert_int_equal(t.memory_held, big.memory_bytes);
  big.cpus = 0; /* only memory stands in the way now */
  assert_int_equal(pool_fits(f, &big), 0);
  assert_int_equal(start(f, "m2", &big, NULL), -ENOSPC);

  assert_int_equal(f->b->ops->stop(f->b, "m1"), 0);
  wait_exits(f, 1);
  assert_int_equal(pool_fits(f, &big), 1);
  t = totals(f);
  assert_int_equal(t.memory_held, 0);
  assert_int_equal(t.cpu_milli_held, 3000);
  pool_free(&big);
}

static void test_nvidia_smi_discovery(void **state)
{
  struct fixture *f = *state;
  struct cap_gpu_view gpus[CAP_MAX_NODE_GPUS];
  const char *name, *source;
  size_t ngpus;
  int ready;
  char *smi;

  smi = script(f, "smi.sh",
               "[ \"$1\" = -L ] || exit 2\n"
               "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\n"
               "echo '  MIG 1g.10gb Device 0: (UUID: MIG-bbbb)'\n"
               "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)'\n"
               "echo 'GPU 3: NVIDIA H100 80GB HBM3 (UUID: GPU-dddd)'");
  assert_int_equal(setenv("RUNFLEET_NVIDIA_SMI", smi, 1), 0);
  free(smi);
  f->cfg.local.gpus_auto = 1;
  backend_up(f);
  assert_int_equal(totals(f).gpus_total, 3);
  assert_int_equal(capacity_node_view(f->cap, 0, &name, &source, &ready, gpus,
                                      CAP_MAX_NODE_GPUS, &ngpus),
                   0);
  assert_int_equal(ngpus, 3);
  assert_int_equal(gpus[0].index, 0);
  assert_int_equal(gpus[1].index, 1);
  assert_int_equal(gpus[2].index, 3);
  assert_int_equal(capacity_gpu_set_health(f->cap, f->host, 3, 0), 0);
  assert_int_equal(capacity_gpu_set_health(f->cap, f->host, 2, 0), -ENOENT);
  assert_int_equal(totals(f).gpus_unhealthy, 1);
  backend_down(f);
}

static void test_nvidia_smi_absent_or_failing(void **state)
{
  struct fixture *f = *state;
  char path[256], *smi;

  snprintf(path, sizeof(path), "%s/no-such-nvidia-smi", f->dir);
  assert_int_equal(setenv("RUNFLEET_NVIDIA_SMI", path, 1), 0);
  f->cfg.local.gpus_auto = 1;
  backend_up(f);
  assert_int_equal(totals(f).gpus_total, 0);
  assert_int_equal(pool_fits(f, &f->gpu1), 0);
  backend_down(f);

  f->cfg.local.work_root = strdup(f->work);
  f->cfg.local.gpus_auto = 1;
  smi = script(f, "smi-fail.sh",
               "echo 'GPU 0: NVIDIA H100 (UUID: GPU-aaaa)'\n"
               "echo 'NVIDIA-SMI has failed'\nexit 9");
  assert_int_equal(setenv("RUNFLEET_NVIDIA_SMI", smi, 1), 0);
  free(smi);
  backend_up(f);
  assert_int_equal(totals(f).gpus_total, 0);
}

static void test_parse_gpus(void **state)
{
  int gpus[4];

  (void)state;
  assert_int_equal(backend_local_parse_gpus("", gpus, 4), 0);
  assert_int_equal(backend_local_parse_gpus("No devices were found\n", gpus, 4),
                   0);
  assert_int_equal(
      backend_local_parse_gpus("GPU 7: Tesla T4 (UUID: GPU-1)\r\n"
                               "  MIG 1g.5gb Device 0: (UUID: MIG-2)\n"
                               "GPU x: broken\nGPU 2: A100 (UUID: GPU-3)",
                               gpus, 4),
      2);
  assert_int_equal(gpus[0], 7);
  assert_int_equal(gpus[1], 2);
  assert_int_equal(
      backend_local_parse_gpus("GPU 0: a\nGPU 1: b\nGPU 2: c\n", gpus, 2), 2);
}

static void test_sigkill_after_grace(void **state)
{
  struct fixture *f = *state;
  char out_env[128], ready[256];
  const char *env[] = {out_env, NULL};

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  snprintf(ready, sizeof(ready), "%s/ready", f->dir);
  pool_command(&f->cpu, script(f, "stubborn.sh",
                               "trap '' TERM\ntouch \"$OUT/ready\"\nsleep 30"));
  backend_up(f);
  assert_int_equal(start(f, "stubborn", &f->cpu, env), 0);
  assert_true(run_until(&f->loop, file_exists, ready, 10000));
  assert_int_equal(f->b->ops->stop(f->b, "stubborn"), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 128 + SIGKILL);
}

static void test_close_kills_stubborn(void **state)
{
  struct fixture *f = *state;
  char out_env[128], ready[256];
  const char *env[] = {out_env, NULL};

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  snprintf(ready, sizeof(ready), "%s/ready", f->dir);
  pool_command(&f->cpu, script(f, "stubborn.sh",
                               "trap '' TERM\ntouch \"$OUT/ready\"\nsleep 30"));
  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  backend_up(f);
  assert_int_equal(start(f, "stubborn", &f->cpu, env), 0);
  assert_int_equal(start(f, "meek", &f->gpu1, env), 0);
  assert_true(run_until(&f->loop, file_exists, ready, 10000));
  f->b->ops->close(f->b, BACKEND_CLOSE_STOP, done_cb, f);
  assert_int_equal(f->b->ops->count(f->b), 2);
  assert_true(run_until(&f->loop, is_done, f, 10000));
  assert_int_equal(f->nexits, 2);
  assert_int_equal(exit_status_of(f, "meek"), 128 + SIGTERM);
  assert_int_equal(exit_status_of(f, "stubborn"), 128 + SIGKILL);
}

/* The scheduler starts replacements from the exit callback. */
static void test_start_from_exit_callback(void **state)
{
  struct fixture *f = *state;
  struct cap_totals t;

  pool_command(&f->gpu2, script(f, "quick.sh", "exit 0"));
  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  f->cfg.local.ngpus = 2; /* GPUs 3 and 2 */
  backend_up(f);
  f->restart = &f->gpu1;
  f->restart_rc = 1;
  assert_int_equal(start(f, "first", &f->gpu2, NULL), 0);
  assert_placed(f, "first", 2, (const int[]){2, 3});
  wait_exits(f, 1);
  /* The replacement got the GPUs its predecessor's hold gave back. */
  assert_int_equal(f->restart_rc, 0);
  t = totals(f);
  assert_int_equal(t.gpus_total, 2);
  assert_int_equal(t.gpus_held, 1);
  assert_int_equal(f->b->ops->count(f->b), 1);
  assert_placed(f, "first-next", 1, (const int[]){2});
  assert_true(running_pid(f, "first-next") > 0);
  assert_int_equal(f->b->ops->stop(f->b, "first-next"), 0);
  wait_exits(f, 2);
  assert_string_equal(f->exit_names[1], "first-next");
}

/* Whether the process in arg (a pid file path) is gone or a zombie. */
static int pid_dead(void *arg)
{
  char path[64], stat[256];
  long pid = *(long *)arg;
  FILE *fp;
  int dead;

  if (kill((pid_t)pid, 0) < 0)
    return errno == ESRCH;
  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  fp = fopen(path, "r");
  if (fp == NULL)
    return 1;
  dead = fgets(stat, sizeof(stat), fp) == NULL || strstr(stat, ") Z") != NULL ||
         strstr(stat, ") X") != NULL;
  fclose(fp);
  return dead;
}

/* A runner left running by a runfleetd that crashed (its pid file and work
 * dir still there) is killed and its dir removed when the backend starts;
 * a pid file whose pid now belongs to another process kills nothing. */
/* Starts "sleep 60" in its own session with RUNFLEET_WORK_DIR=env_dir
 * (unset when NULL), working in cwd. */
static long spawn_sleeper(const char *env_dir, const char *cwd)
{
  long pid = fork();

  assert_true(pid >= 0);
  if (pid == 0) {
    setsid();
    if (env_dir != NULL)
      setenv("RUNFLEET_WORK_DIR", env_dir, 1);
    else
      unsetenv("RUNFLEET_WORK_DIR");
    if (chdir(cwd) == 0)
      execl("/bin/sleep", "sleep", "60", (char *)NULL);
    _exit(127);
  }
  return pid;
}

static void reap_sleeper(long pid)
{
  kill((pid_t)pid, SIGKILL);
  assert_int_equal(waitpid((pid_t)pid, NULL, 0), (pid_t)pid);
}

static void test_leftovers_of_a_crash_reaped(void **state)
{
  struct fixture *f = *state;
  char dir[256], pids[256], path[1024], other[256];
  long pid, bystander, escaped, shell;
  FILE *fp;

  snprintf(dir, sizeof(dir), "%s/rf-old-1", f->work);
  snprintf(pids, sizeof(pids), "%s/.runfleet-pids", f->work);
  snprintf(other, sizeof(other), "%s/rf-old-2", f->work);
  snprintf(path, sizeof(path), "mkdir -p %s %s %s", dir, pids, other);
  assert_int_equal(system(path), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setsid();
    if (chdir(dir) == 0)
      execl("/bin/sleep", "sleep", "60", (char *)NULL);
    _exit(127);
  }
  bystander = fork();
  assert_true(bystander >= 0);
  if (bystander == 0) {
    setsid();
    execl("/bin/sleep", "sleep", "60", (char *)NULL);
    _exit(127);
  }
  usleep(100000);
  snprintf(path, sizeof(path), "%s/rf-old-1", pids);
  fp = fopen(path, "w");
  fprintf(fp, "%ld\n", pid);
  fclose(fp);
  /* rf-old-2's pid was recycled by an unrelated process. */
  snprintf(path, sizeof(path), "%s/rf-old-2", pids);
  fp = fopen(path, "w");
  fprintf(fp, "%ld\n", bystander);
  fclose(fp);
  /* A helper of rf-old-1 that left its session, and an shell's shell
   * sitting in the work root, which must survive. */
  escaped = spawn_sleeper(dir, f->dir);
  shell = spawn_sleeper(NULL, f->work);
  usleep(100000);
  backend_up(f);
  assert_true(run_until(&f->loop, pid_dead, &pid, 5000));
  assert_int_equal(waitpid((pid_t)escaped, NULL, 0), (pid_t)escaped);
  assert_false(pid_dead(&shell));
  reap_sleeper(shell);
  assert_int_equal(waitpid((pid_t)pid, NULL, 0), (pid_t)pid);
  assert_int_equal(access(dir, F_OK), -1);
  assert_int_equal(access(other, F_OK), -1);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(kill((pid_t)bystander, 0), 0);
  kill((pid_t)bystander, SIGKILL);
  waitpid((pid_t)bystander, NULL, 0);
}

/* A crash between the fork and the second pid file write leaves a record
 * with pid 0: the runner is found as the group leader whose
 * RUNFLEET_WORK_DIR is its work dir (not a helper that inherited it) and
 * kept. A pid-0 record with no process is cleaned up; a half-written
 * temporary record is removed. */
static void test_pid_zero_record_adopted(void **state)
{
  struct fixture *f = *state;
  struct backend_item items[4];
  char dir[256], gone[256], path[1024];
  long leader, helper;
  FILE *fp;
  size_t n;

  snprintf(dir, sizeof(dir), "%s/rf-fork-1", f->work);
  snprintf(gone, sizeof(gone), "%s/rf-fork-2", f->work);
  snprintf(path, sizeof(path), "mkdir -p %s %s %s/.runfleet-pids", dir, gone,
           f->work);
  assert_int_equal(system(path), 0);
  /* A helper that left the runner's group leads a group of its own, with
   * the same RUNFLEET_WORK_DIR, but starts after the runner. */
  leader = spawn_sleeper(dir, dir);
  usleep(20000);
  helper = spawn_sleeper(dir, f->dir);
  usleep(100000);
  snprintf(path, sizeof(path), "%s/.runfleet-pids/rf-fork-1", f->work);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fprintf(fp, "0\npool=gpu-1\ngpus=2\ncpu_milli=1000\nmemory=0\n");
  fclose(fp);
  snprintf(path, sizeof(path), "%s/.runfleet-pids/rf-fork-2", f->work);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fprintf(fp, "0\npool=gpu-1\ngpus=3\ncpu_milli=1000\nmemory=0\n");
  fclose(fp);
  snprintf(path, sizeof(path), "%s/.runfleet-pids/.tmp-rf-fork-3", f->work);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fclose(fp);

  backend_up(f);
  n = f->b->ops->list(f->b, items, 4);
  assert_int_equal(n, 1);
  assert_string_equal(items[0].name, "rf-fork-1");
  assert_string_equal(items[0].pool, "gpu-1");
  assert_int_equal(items[0].where.ngpus, 1);
  assert_int_equal(items[0].where.gpus[0], 2);
  assert_int_equal(
      capacity_hold_at(f->cap, "rf-fork-1", CAP_HOLDER_RUNNER, &items[0].where),
      0);
  assert_int_equal(kill((pid_t)leader, 0), 0);
  assert_int_equal(access(gone, F_OK), -1);
  assert_int_equal(access(path, F_OK), -1);
  snprintf(path, sizeof(path), "%s/.runfleet-pids/rf-fork-2", f->work);
  assert_int_equal(access(path, F_OK), -1);
  /* A stop ends the whole runner, helpers included. */
  assert_int_equal(f->b->ops->stop(f->b, "rf-fork-1"), 0);
  wait_exits(f, 1);
  assert_int_equal(waitpid((pid_t)leader, NULL, 0), (pid_t)leader);
  assert_int_equal(waitpid((pid_t)helper, NULL, 0), (pid_t)helper);
  assert_int_equal(access(dir, F_OK), -1);
}

static void test_grandchild_killed_on_exit(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256];
  const char *env[] = {out_env, NULL};
  long pid;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  pool_command(&f->cpu, script(f, "fork.sh",
                               "sleep 30 &\necho $! > \"$OUT/gc.pid\"\n"
                               "exit 0"));
  backend_up(f);
  assert_int_equal(start(f, "parent", &f->cpu, env), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 0);
  snprintf(path, sizeof(path), "%s/gc.pid", f->dir);
  pid = strtol(read_all(path), NULL, 10);
  assert_true(pid > 1);
  assert_true(run_until(&f->loop, pid_dead, &pid, 5000));
}

/* A job step that leaves its session (setsid, a daemon) escapes the group
 * kill; the sweep by environment and by working directory still finds it,
 * and leaves a runner whose name only starts the same alone. */
static void test_escaped_session_killed_on_exit(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256], sibling[256];
  const char *env[] = {out_env, NULL};
  long by_env, by_cwd, other;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  snprintf(sibling, sizeof(sibling), "%s/escx", f->work);
  pool_command(&f->cpu,
               script(f, "escape.sh",
                      "setsid sleep 30 &\necho $! > \"$OUT/env.pid\"\n"
                      "setsid env -i sleep 30 &\necho $! > \"$OUT/cwd.pid\"\n"
                      "sleep 0.2\nexit 0"));
  backend_up(f);
  other = spawn_sleeper(sibling, f->dir);
  assert_int_equal(start(f, "esc", &f->cpu, env), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 0);
  snprintf(path, sizeof(path), "%s/env.pid", f->dir);
  by_env = strtol(read_all(path), NULL, 10);
  snprintf(path, sizeof(path), "%s/cwd.pid", f->dir);
  by_cwd = strtol(read_all(path), NULL, 10);
  assert_true(by_env > 1 && by_cwd > 1);
  assert_true(run_until(&f->loop, pid_dead, &by_env, 5000));
  assert_true(run_until(&f->loop, pid_dead, &by_cwd, 5000));
  assert_false(pid_dead(&other));
  reap_sleeper(other);
}

static void test_kill_strays(void **state)
{
  struct fixture *f = *state;
  char dir[256], below[300], cwd_dir[300], sibling[256];
  long in_env, in_below, in_cwd, in_sibling, none;

  snprintf(dir, sizeof(dir), "%s/w", f->dir);
  snprintf(below, sizeof(below), "%s/r1", dir);
  snprintf(cwd_dir, sizeof(cwd_dir), "%s/r2", dir);
  snprintf(sibling, sizeof(sibling), "%s/w2", f->dir);
  assert_int_equal(mkdir(dir, 0700), 0);
  assert_int_equal(mkdir(cwd_dir, 0700), 0);
  in_env = spawn_sleeper(dir, f->dir);
  in_below = spawn_sleeper(below, f->dir);
  in_cwd = spawn_sleeper(NULL, cwd_dir);
  in_sibling = spawn_sleeper(sibling, f->dir);
  none = spawn_sleeper(NULL, f->dir);
  usleep(100000); /* each child has exec'd sleep */
  /* By environment only: the process merely working there stays. */
  assert_int_equal(backend_local_kill_strays(dir, 0), 2);
  assert_int_equal(waitpid((pid_t)in_env, NULL, 0), (pid_t)in_env);
  assert_int_equal(waitpid((pid_t)in_below, NULL, 0), (pid_t)in_below);
  assert_false(pid_dead(&in_cwd));
  assert_int_equal(backend_local_kill_strays(dir, 1), 1);
  assert_int_equal(waitpid((pid_t)in_cwd, NULL, 0), (pid_t)in_cwd);
  assert_int_equal(backend_local_kill_strays(dir, 1), 0);
  assert_false(pid_dead(&in_sibling));
  assert_false(pid_dead(&none));
  reap_sleeper(in_sibling);
  reap_sleeper(none);
}

static void test_work_dir_removed_read_only(void **state)
{
  struct fixture *f = *state;
  char out_env[128], keep[256], path[256];
  const char *env[] = {out_env, NULL};

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  snprintf(keep, sizeof(keep), "%s/keep", f->dir);
  assert_int_equal(mkdir(keep, 0700), 0);
  snprintf(path, sizeof(path), "%s/keep/file", f->dir);
  write_file(path, "kept\n", 0444);
  pool_command(&f->cpu, script(f, "ro.sh",
                               "mkdir -p ro/sub noread && echo x > ro/sub/f &&"
                               " touch noread/f && chmod 0444 ro/sub/f &&"
                               " chmod 0555 ro/sub ro && chmod 0 noread &&"
                               " ln -s \"$OUT/keep\" link && ln -s / root &&"
                               " chmod 0555 . && exit 7\nexit 1"));
  backend_up(f);
  assert_int_equal(start(f, "ro", &f->cpu, env), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 7);
  snprintf(path, sizeof(path), "%s/ro", f->work);
  assert_int_equal(access(path, F_OK), -1);
  /* Links were removed, not followed. */
  snprintf(path, sizeof(path), "%s/keep/file", f->dir);
  assert_string_equal(read_all(path), "kept\n");
  assert_int_equal(access(f->work, F_OK), 0);
}

static void test_unhealthy_gpu_skipped(void **state)
{
  struct fixture *f = *state;
  struct cap_totals t;

  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  pool_command(&f->gpu2, script(f, "sleep2.sh", "exec sleep 30"));
  backend_up(f);
  assert_int_equal(capacity_gpu_set_health(f->cap, f->host, 0, 0), 0);
  assert_int_equal(capacity_gpu_set_health(f->cap, f->host, 0, 0), 0);
  assert_int_equal(capacity_gpu_set_health(f->cap, f->host, 99, 0), -ENOENT);
  assert_int_equal(start(f, "a", &f->gpu1, NULL), 0);
  assert_placed(f, "a", 1, (const int[]){1});
  t = totals(f);
  assert_int_equal(t.gpus_total, 4);
  assert_int_equal(t.gpus_unhealthy, 1);
  assert_int_equal(t.gpus_held, 1);

  /* A held GPU that fails stays out after its runner exits. */
  assert_int_equal(capacity_gpu_set_health(f->cap, f->host, 1, 0), 0);
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  wait_exits(f, 1);
  t = totals(f);
  assert_int_equal(t.gpus_unhealthy, 2);
  assert_int_equal(t.gpus_held, 0);
  assert_int_equal(start(f, "b", &f->gpu2, NULL), 0);
  assert_placed(f, "b", 2, (const int[]){2, 3});
  assert_int_equal(pool_fits(f, &f->gpu1), 0);
  assert_int_equal(start(f, "c", &f->gpu1, NULL), -ENOSPC);
}

static void test_bad_start_leaves_nothing(void **state)
{
  struct fixture *f = *state;
  struct cap_placement cpu_only;
  struct cap_totals t;
  char path[256];

  pool_command(&f->gpu1, strdup("/nonexistent/runner/run.sh"));
  pool_command(&f->cpu, script(f, "sleep.sh", "exec sleep 30"));
  backend_up(f);
  assert_true(start(f, "bad", &f->gpu1, NULL) < 0);
  assert_int_equal(f->b->ops->count(f->b), 0);
  assert_int_equal(f->b->ops->list(f->b, NULL, 0), 0);
  t = totals(f);
  assert_int_equal(t.gpus_held, 0);
  assert_int_equal(t.cpu_milli_held, 0);
  assert_int_equal(t.holds, 0);
  snprintf(path, sizeof(path), "%s/bad", f->work);
  assert_int_equal(access(path, F_OK), -1);
  /* A start that failed reports nothing, now or later. */
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->nevents, 0);
  assert_int_equal(start(f, "../escape", &f->cpu, NULL), -EINVAL);
  cpu_only = placement_on(f->host, NULL, 0);
  assert_int_equal(start_at(f, "", &f->cpu, NULL, &cpu_only), -EINVAL);
  assert_int_equal(start(f, "..", &f->cpu, NULL), -EINVAL);
  assert_int_equal(start(f, "a b", &f->cpu, NULL), -EINVAL);
  assert_int_equal(start_at(f, "nowhere", &f->cpu, NULL, NULL), -EINVAL);
  assert_int_equal(totals(f).holds, 0);
  /* The failed name can be used again at once. */
  pool_command(&f->gpu1, script(f, "sleep1.sh", "exec sleep 30"));
  assert_int_equal(start(f, "bad", &f->gpu1, NULL), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->nexits, 0);
}

static void test_close_empty_and_stale_dir(void **state)
{
  struct fixture *f = *state;
  char path[256];

  pool_command(&f->cpu, script(f, "true.sh", "exit 0"));
  backend_up(f);
  /* A directory left by a crash is replaced. */
  snprintf(path, sizeof(path), "%s/stale", f->work);
  assert_int_equal(mkdir(path, 0500), 0);
  assert_int_equal(start(f, "stale", &f->cpu, NULL), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 0);
  /* With nothing left to stop, closing is done once the backend's own
   * handle has closed: within one loop turn. */
  f->b->ops->close(f->b, BACKEND_CLOSE_STOP, done_cb, f);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->done, 1);
}

/* Runs one cpu runner named name to its exit with the backend's log (our
 * stderr) captured; returns the log. */
static const char *run_logged(struct fixture *f, const char *name)
{
  int saved;

  backend_up(f);
  saved = capture_begin(f);
  assert_int_equal(start(f, name, &f->cpu, NULL), 0);
  wait_exits(f, 1);
  backend_down(f);
  return capture_end(f, saved);
}

/* Runner output reaches the log, one line per line, the JIT config never. */
static void test_output_forwarded_to_log(void **state)
{
  struct fixture *f = *state;
  char line[1100];
  const char *text;

  pool_command(&f->cpu, script(f, "talk.sh",
                               "echo hello-from-runner\n"
                               "echo on-stderr >&2\n"
                               "head -c 1500 /dev/zero | tr '\\0' x; echo\n"
                               "printf 'no newline'"));
  text = run_logged(f, "talker");
  assert_non_null(strstr(text, "msg=\"hello-from-runner\" runner=talker"));
  assert_non_null(strstr(text, "msg=\"on-stderr\" runner=talker"));
  assert_non_null(strstr(text, "msg=\"no newline\" runner=talker"));
  assert_non_null(strstr(text, "runner started"));
  /* A line past the bound is split, not dropped or overflowed. */
  memset(line, 'x', 1024);
  snprintf(line + 1024, sizeof(line) - 1024, "\" runner=talker");
  assert_non_null(strstr(text, line));
  memset(line, 'x', 476);
  snprintf(line + 476, sizeof(line) - 476, "\" runner=talker");
  assert_non_null(strstr(text, line));
  assert_null(strstr(text, "xxxxx\n"));
  assert_null(strstr(text, JIT));
}

/* Builds a tree that only a chmod-first removal can take down, removes it
 * and checks that; returns 0 when all went as expected. */
static int rmtree_scenario(const char *dir)
{
  char path[256], keep[256];
  int rc = 0;

  snprintf(keep, sizeof(keep), "%s/keep", dir);
  snprintf(path, sizeof(path), "%s/none", dir);
  rc |= fs_rmtree(path);
  rc |= mkdir(keep, 0700);
  snprintf(path, sizeof(path), "%s/keep/file", dir);
  rc |= creat(path, 0400) < 0;
  snprintf(path, sizeof(path), "%s/t", dir);
  rc |= mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/t/a", dir);
  rc |= mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/t/a/b", dir);
  rc |= mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/t/a/b/f", dir);
  rc |= creat(path, 0400) < 0;
  snprintf(path, sizeof(path), "%s/t/a/link", dir);
  rc |= symlink(keep, path);
  snprintf(path, sizeof(path), "%s/t/a/b", dir);
  rc |= chmod(path, 0);
  snprintf(path, sizeof(path), "%s/t/a", dir);
  rc |= chmod(path, 0500);
  snprintf(path, sizeof(path), "%s/t", dir);
  rc |= chmod(path, 0);
  if (rc != 0)
    return -1;
  rc = fs_rmtree(path);
  if (rc != 0 || access(path, F_OK) == 0 || errno != ENOENT)
    return -2;
  snprintf(path, sizeof(path), "%s/keep/file", dir);
  if (access(path, F_OK) != 0)
    return -3;
  return 0;
}

/* A runner that floods its output gets LOCAL_LOG_LINES lines a second into
 * the log; the rest are counted and the count is logged. */
static void test_output_rate_limited(void **state)
{
  struct fixture *f = *state;
  const char *text, *p;
  unsigned long logged = 0, dropped = 0;

  pool_command(&f->cpu, script(f, "flood.sh", "seq 1 3000 | sed s/^/flood-/"));
  text = run_logged(f, "flood");
  for (p = text; (p = strstr(p, "msg=\"flood-")) != NULL; p++)
    logged++;
  for (p = text; (p = strstr(p, "was dropped\" runner=flood")) != NULL; p++) {
    const char *n = strstr(p, "lines=");

    assert_non_null(n);
    dropped += strtoul(n + 6, NULL, 10);
  }
  assert_true(logged >= 200);
  assert_true(dropped > 0);
  assert_int_equal(logged + dropped, 3000);
  assert_non_null(strstr(text, "msg=\"flood-1\" runner=flood"));
}

/* A process that escaped every sweep (no environment, elsewhere) and still
 * holds the output pipe does not hold up the exit: the last lines are read
 * without waiting for an end of file that never comes. */
static void test_exit_with_a_lingering_writer(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256];
  const char *env[] = {out_env, NULL};
  long pid;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  pool_command(
      &f->cpu,
      script(f, "linger.sh",
             "(cd / && exec setsid env -i sleep 30) &\np=$!\n"
             "until grep -qx sleep /proc/$p/comm; do sleep 0.05; done\n"
             "echo $p > \"$OUT/linger.pid\"\necho last-words\nexit 4"));
  backend_up(f);
  assert_int_equal(start(f, "linger", &f->cpu, env), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 4);
  snprintf(path, sizeof(path), "%s/linger.pid", f->dir);
  pid = strtol(read_all(path), NULL, 10);
  assert_true(pid > 1);
  assert_false(pid_dead(&pid));
  kill((pid_t)pid, SIGKILL);
}

/* PLACED, RUNNING, EXITED, in that order, each on a loop turn after start
 * returned, even for a runner that ends at once. */
static void test_events_in_order(void **state)
{
  struct fixture *f = *state;
  const struct event_rec *placed, *running, *exited;

  pool_command(&f->cpu, script(f, "quick.sh", "exit 5"));
  pool_command(&f->gpu2, script(f, "sleep.sh", "exec sleep 30"));
  backend_up(f);
  assert_int_equal(start(f, "quick", &f->cpu, NULL), 0);
  assert_int_equal(start(f, "slow", &f->gpu2, NULL), 0);
  assert_int_equal(f->nevents, 0);
  assert_int_equal(f->b->ops->count(f->b), 2);

  exited = wait_event(f, "quick", BACKEND_EXITED);
  placed = event_find(f, "quick", BACKEND_PLACED);
  running = event_find(f, "quick", BACKEND_RUNNING);
  assert_non_null(placed);
  assert_non_null(running);
  assert_true(placed < running && running < exited);
  assert_string_equal(placed->node, f->host);
  assert_int_equal(placed->ngpus, 0);
  assert_true(running->pid > 0);
  assert_int_equal(exited->status, 5);

  placed = wait_event(f, "slow", BACKEND_PLACED);
  running = wait_event(f, "slow", BACKEND_RUNNING);
  assert_true(placed < running);
  assert_placed(f, "slow", 2, (const int[]){0, 1});
  assert_null(event_find(f, "slow", BACKEND_EXITED));
  assert_int_equal(kill((pid_t)running->pid, 0), 0);
  assert_int_equal(f->b->ops->stop(f->b, "slow"), 0);
  exited = wait_event(f, "slow", BACKEND_EXITED);
  assert_true(running < exited);
  assert_int_equal(exited->status, 128 + SIGTERM);
  /* Three each, nothing more. */
  assert_int_equal(f->nevents, 6);
  assert_int_equal(f->b->ops->count(f->b), 0);
}

/* Whether name was ever reported. */
static int any_event(const struct fixture *f, const char *name)
{
  return event_last(f, name) != NULL;
}

/* Checks that a refused start of name left no trace. */
static void assert_nothing_started(struct fixture *f, const char *name,
                                   size_t count)
{
  char path[256];

  assert_int_equal(f->b->ops->count(f->b), count);
  assert_int_equal(f->b->ops->list(f->b, NULL, 0), count);
  snprintf(path, sizeof(path), "%s/%s", f->work, name);
  assert_int_equal(access(path, F_OK), -1);
  snprintf(path, sizeof(path), "%s/%s.ran", f->dir, name);
  assert_int_equal(access(path, F_OK), -1);
  assert_false(any_event(f, name));
}

/* A placement the backend cannot honour (another node, a GPU it does not
 * have, a GPU a live runner of its own has) starts nothing, whatever the
 * caller's books say. */
static void test_placement_refused(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256];
  const char *env[] = {out_env, NULL};
  struct cap_placement p;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  pool_command(&f->gpu1, script(f, "mark.sh",
                                "touch \"$OUT/$RUNFLEET_RUNNER_NAME.ran\"\n"
                                "exec sleep 30"));
  backend_up(f);
  assert_int_equal(start(f, "a", &f->gpu1, env), 0);
  assert_placed(f, "a", 1, (const int[]){0});
  assert_true(running_pid(f, "a") > 0);

  p = placement_on("elsewhere", NULL, 0);
  assert_int_equal(start_at(f, "x", &f->gpu1, env, &p), -ENOSPC);
  p = placement_on("elsewhere", (const int[]){1}, 1);
  assert_int_equal(start_at(f, "x", &f->gpu1, env, &p), -ENOSPC);
  p = placement_on(f->host, (const int[]){7}, 1);
  assert_int_equal(start_at(f, "x", &f->gpu1, env, &p), -ENOSPC);
  p = placement_on(f->host, (const int[]){0}, 1);
  assert_int_equal(start_at(f, "x", &f->gpu1, env, &p), -ENOSPC);
  p = placement_on(f->host, (const int[]){1, 0}, 2);
  assert_int_equal(start_at(f, "x", &f->gpu1, env, &p), -ENOSPC);
  run_for(f, 100);
  assert_nothing_started(f, "x", 1);
  assert_int_equal(totals(f).holds, 1);

  /* A free GPU of this host is honoured as given, not the lowest free. */
  p = placement_on(f->host, (const int[]){2}, 1);
  assert_int_equal(capacity_hold_at(f->cap, "y", CAP_HOLDER_RUNNER, &p), 0);
  assert_int_equal(
      start_at(f, "y", &f->gpu1, env, capacity_hold_find(f->cap, "y")), 0);
  assert_placed(f, "y", 1, (const int[]){2});
  snprintf(path, sizeof(path), "%s/y.ran", f->dir);
  assert_true(run_until(&f->loop, file_exists, path, 10000));

  /* Once a's exit is reported its GPU may be given again. */
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  wait_exits(f, 1);
  p = placement_on(f->host, (const int[]){0}, 1);
  assert_int_equal(capacity_hold_at(f->cap, "x", CAP_HOLDER_RUNNER, &p), 0);
  assert_int_equal(
      start_at(f, "x", &f->gpu1, env, capacity_hold_find(f->cap, "x")), 0);
  assert_placed(f, "x", 1, (const int[]){0});
  assert_int_equal(f->b->ops->count(f->b), 2);
}

static const struct backend_item *item_named(const struct backend_item *items,
                                             size_t n, const char *name)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp(items[i].name, name) == 0)
      return &items[i];
  return NULL;
}

/* list shows what runs, where capacity placed it; a runner whose exit was
 * reported is gone from it. */
static void test_list_running_not_exited(void **state)
{
  struct fixture *f = *state;
  struct backend_item items[8];
  const struct backend_item *it;
  size_t n;

  pool_command(&f->cpu, script(f, "quick.sh", "exit 0"));
  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  pool_command(&f->gpu2, script(f, "sleep2.sh", "exec sleep 30"));
  backend_up(f);
  assert_int_equal(f->b->ops->list(f->b, items, 8), 0);
  assert_int_equal(start(f, "a", &f->gpu1, NULL), 0);
  assert_int_equal(start(f, "b", &f->gpu2, NULL), 0);
  assert_int_equal(start(f, "c", &f->cpu, NULL), 0);
  assert_int_equal(f->b->ops->list(f->b, items, 8), 3);
  wait_event(f, "c", BACKEND_EXITED);
  wait_event(f, "a", BACKEND_RUNNING);
  wait_event(f, "b", BACKEND_RUNNING);

  n = f->b->ops->list(f->b, items, 8);
  assert_int_equal(n, 2);
  assert_null(item_named(items, n, "c"));
  it = item_named(items, n, "a");
  assert_non_null(it);
  assert_string_equal(it->pool, "gpu-1");
  assert_string_equal(it->where.node, f->host);
  assert_string_equal(it->where.source, "local");
  assert_int_equal(it->where.ngpus, 1);
  assert_int_equal(it->where.gpus[0], 0);
  assert_int_equal(it->where.cpu_milli, 1000);
  assert_int_equal(it->running, 1);
  it = item_named(items, n, "b");
  assert_non_null(it);
  assert_string_equal(it->pool, "gpu-2");
  assert_string_equal(it->where.node, f->host);
  assert_int_equal(it->where.ngpus, 2);
  assert_int_equal(it->where.gpus[0], 1);
  assert_int_equal(it->where.gpus[1], 2);
  assert_int_equal(it->running, 1);

  /* Past max, the count is still all of them and nothing more is
   * written. */
  memset(items, 0, sizeof(items));
  items[1].name = "untouched";
  assert_int_equal(f->b->ops->list(f->b, items, 1), 2);
  assert_non_null(items[0].name);
  assert_string_equal(items[1].name, "untouched");

  /* A stopping runner is listed until its exit is reported. */
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  assert_non_null(item_named(items, f->b->ops->list(f->b, items, 8), "a"));
  wait_exits(f, 2);
  n = f->b->ops->list(f->b, items, 8);
  assert_int_equal(n, 1);
  assert_string_equal(items[0].name, "b");
}

static void cfg_local_init(struct fixture *f)
{
  size_t i;

  f->cfg.local.work_root = strdup(f->work);
  for (i = 0; i < 4; i++)
    f->cfg.local.gpus[i] = (int)(3 - i);
  f->cfg.local.ngpus = 4;
  f->cfg.local.cpu_slots = 64;
}

/* KEEP leaves runners running (a crash does the same); the next backend on
 * the same work_root lists them where they run and watches them: their
 * output still reaches the log, a stop ends them with EXITED, their files
 * go. A leftover whose process is gone is cleaned up, not listed. */
static void test_close_keep_then_adopt(void **state)
{
  struct fixture *f = *state;
  struct backend_item items[4];
  char path[256], marker[300];
  const char *text;
  long pid_a;
  int saved;
  size_t n;

  pool_command(&f->gpu1, script(f, "chatty.sh",
                                "while :; do echo tick-$$; sleep 0.1; done"));
  pool_command(&f->cpu, script(f, "short.sh", "sleep 0.3"));
  backend_up(f);
  assert_int_equal(start(f, "a", &f->gpu1, NULL), 0);
  pid_a = running_pid(f, "a");
  assert_int_equal(start(f, "b", &f->cpu, NULL), 0);
  (void)running_pid(f, "b");
  f->b->ops->close(f->b, BACKEND_CLOSE_KEEP, done_cb, f);
  assert_true(run_until(&f->loop, is_done, f, 10000));
  assert_int_equal(f->nexits, 0);
  f->b->ops->destroy(f->b);
  f->b = NULL;
  capacity_destroy(f->cap);
  f->cap = NULL;
  assert_int_equal(kill((pid_t)pid_a, 0), 0);
  usleep(600000); /* b's process ends while no backend watches it */

  cfg_local_init(f);
  saved = capture_begin(f);
  backend_up(f);
  n = f->b->ops->list(f->b, items, 4);
  assert_int_equal(n, 1);
  assert_string_equal(items[0].name, "a");
  assert_string_equal(items[0].pool, "gpu-1");
  assert_int_equal(items[0].running, 1);
  assert_int_equal(items[0].where.ngpus, 1);
  assert_string_equal(items[0].where.node, f->host);
  assert_int_equal(
      capacity_hold_at(f->cap, "a", CAP_HOLDER_RUNNER, &items[0].where), 0);
  snprintf(path, sizeof(path), "%s/b", f->work);
  assert_int_equal(access(path, F_OK), -1);
  /* Its output is still read, from where it was. */
  snprintf(marker, sizeof(marker), "tick-%ld", pid_a);
  usleep(400000);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  wait_exits(f, 1);
  text = capture_end(f, saved);
  assert_int_equal(exit_status_of(f, "a"), 128 + SIGTERM);
  assert_non_null(strstr(text, marker));
  assert_non_null(strstr(text, "runner of an earlier runfleetd still runs"));
  /* This test process started it: it is reaped here, not by init. */
  assert_int_equal(waitpid((pid_t)pid_a, NULL, 0), (pid_t)pid_a);
  snprintf(path, sizeof(path), "%s/a", f->work);
  assert_int_equal(access(path, F_OK), -1);
  snprintf(path, sizeof(path), "%s/.runfleet-pids/a", f->work);
  assert_int_equal(access(path, F_OK), -1);
  snprintf(path, sizeof(path), "%s/.runfleet-logs/a", f->work);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(f->b->ops->count(f->b), 0);
}

static void test_rmtree(void **state)
{
  struct fixture *f = *state;
  char dir[256];
  pid_t pid;
  int status;

  snprintf(dir, sizeof(dir), "%s/rm", f->dir);
  assert_int_equal(mkdir(dir, 0700), 0);
  if (geteuid() != 0) {
    assert_int_equal(rmtree_scenario(dir), 0);
    return;
  }
  /* Root ignores file modes: run the scenario as nobody so it can fail. */
  assert_int_equal(chmod(f->dir, 0711), 0);
  assert_int_equal(chown(dir, 65534, 65534), 0);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (setgid(65534) < 0 || setuid(65534) < 0)
      _exit(10);
    _exit(rmtree_scenario(dir) == 0 ? 0 : 11);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_command_cwd_and_env, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_gpu_env, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gpu_exclusive_and_reused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cpu_slots_and_memory, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_nvidia_smi_discovery, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_nvidia_smi_absent_or_failing, setup,
                                      teardown),
      cmocka_unit_test(test_parse_gpus),
      cmocka_unit_test_setup_teardown(test_sigkill_after_grace, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_close_kills_stubborn, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_start_from_exit_callback, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_leftovers_of_a_crash_reaped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_pid_zero_record_adopted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_grandchild_killed_on_exit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_escaped_session_killed_on_exit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_strays, setup, teardown),
      cmocka_unit_test_setup_teardown(test_work_dir_removed_read_only, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_unhealthy_gpu_skipped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bad_start_leaves_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_close_empty_and_stale_dir, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_output_forwarded_to_log, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_output_rate_limited, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_exit_with_a_lingering_writer, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_events_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_placement_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_running_not_exited, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_close_keep_then_adopt, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_rmtree, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
