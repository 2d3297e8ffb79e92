/* The local backend against small shell-script runners in a temp dir. */
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
#include "fs.h"

#define JIT "eyJqaXQiOiJzZWNyZXQtY29uZmlnIn0="
#define MAX_EXITS 16

struct fixture {
  char dir[64];   /* temp root: scripts, outputs */
  char work[128]; /* work_root, two levels below dir so it gets created */
  uv_loop_t loop;
  struct config cfg;
  struct cfg_pool cpu, gpu1, gpu2;
  struct backend *b;
  size_t nexits;
  char exit_names[MAX_EXITS][64];
  int exit_status[MAX_EXITS];
  int done;
  const struct cfg_pool *restart; /* on_exit starts "<name>-next" in it */
  int restart_rc;
};

/* --- helpers ------------------------------------------------------------ */

static void on_exit_cb(void *ctx, const char *name, int status)
{
  struct fixture *f = ctx;
  char path[256];

  assert_true(f->nexits < MAX_EXITS);
  snprintf(f->exit_names[f->nexits], sizeof(f->exit_names[0]), "%s", name);
  f->exit_status[f->nexits] = status;
  f->nexits++;
  /* The work directory is gone before the exit is reported. */
  snprintf(path, sizeof(path), "%s/%s", f->work, name);
  assert_int_equal(access(path, F_OK), -1);
  if (f->restart != NULL) {
    struct backend_runner_spec spec = {NULL, f->restart, "jit", NULL};
    struct backend_runner_info info;
    char next[80];

    snprintf(next, sizeof(next), "%s-next", name);
    spec.name = next;
    f->restart = NULL;
    f->restart_rc = f->b->ops->start(f->b, &spec, &info);
  }
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

/* Creates the backend, then wipes the config strings, as a reload would. */
static void backend_up(struct fixture *f)
{
  f->done = 0;
  f->b = backend_local_new(&f->loop, &f->cfg, on_exit_cb, f);
  assert_non_null(f->b);
  cfg_local_free(&f->cfg);
  backend_local_set_grace_ms(f->b, 200);
}

static void backend_down(struct fixture *f)
{
  if (f->b == NULL)
    return;
  if (!f->done) {
    f->b->ops->close(f->b, done_cb, f);
    assert_true(run_until(&f->loop, is_done, f, 10000));
  }
  assert_int_equal(f->b->ops->count(f->b), 0);
  f->b->ops->destroy(f->b);
  f->b = NULL;
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

static int start(struct fixture *f, const char *name,
                 const struct cfg_pool *pool, const char *const *env,
                 struct backend_runner_info *info)
{
  struct backend_runner_spec spec = {name, pool, JIT, env};
  struct backend_runner_info scratch;

  return f->b->ops->start(f->b, &spec, info != NULL ? info : &scratch);
}

static void assert_gpus(const struct backend_runner_info *info, size_t n,
                        const int *want)
{
  size_t i;

  assert_int_equal(info->ngpus, n);
  for (i = 0; i < n; i++)
    assert_int_equal(info->gpus[i], want[i]);
}

/* A script that records cwd, args and environment, then exits 3. */
#define ENV_SCRIPT                                                             \
  "{ echo \"cwd=$(pwd)\"; for a in \"$@\"; do echo \"arg=$a\"; done; env; }"   \
  " > \"$OUT/$RUNFLEET_RUNNER_NAME.env\"\nexit 3"

/* --- tests -------------------------------------------------------------- */

static void test_command_cwd_and_env(void **state)
{
  struct fixture *f = *state;
  char out_env[128], path[256], line[512];
  const char *env[] = {out_env, "RF_TEST_PARENT=spec", NULL};
  struct backend_runner_info info;
  const char *text;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  assert_int_equal(setenv("RUNFLEET_SECRET_TEST", "hunter2", 1), 0);
  assert_int_equal(setenv("RF_TEST_PARENT", "parent", 1), 0);
  assert_int_equal(setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3", 1), 0);
  pool_command(&f->cpu, script(f, "env.sh", ENV_SCRIPT));
  backend_up(f);

  assert_int_equal(start(f, "cpu-a", &f->cpu, env, &info), 0);
  assert_true(info.pid > 0);
  assert_int_equal(info.ngpus, 0);
  assert_int_equal(info.cpus, 1);
  assert_int_equal(f->b->ops->count(f->b), 1);
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
  struct backend_runner_info info;
  const char *text;

  snprintf(out_env, sizeof(out_env), "OUT=%s", f->dir);
  pool_command(&f->gpu2, script(f, "env.sh", ENV_SCRIPT));
  free(f->cfg.local.hook_started);
  free(f->cfg.local.hook_completed);
  f->cfg.local.hook_started = f->cfg.local.hook_completed = NULL;
  backend_up(f);

  assert_int_equal(start(f, "gpu-a", &f->gpu2, env, &info), 0);
  assert_gpus(&info, 2, (const int[]){0, 1});
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
  struct backend_runner_info info;
  struct backend_capacity cap;

  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  pool_command(&f->gpu2, script(f, "sleep2.sh", "exec sleep 30"));
  pool_command(&f->cpu, script(f, "sleep3.sh", "exec sleep 30"));
  backend_up(f);

  assert_int_equal(f->b->ops->fits(f->b, &f->gpu2), 1);
  assert_int_equal(start(f, "a", &f->gpu2, NULL, &info), 0);
  assert_gpus(&info, 2, (const int[]){0, 1});
  assert_int_equal(start(f, "b", &f->gpu1, NULL, &info), 0);
  assert_gpus(&info, 1, (const int[]){2});
  assert_int_equal(f->b->ops->fits(f->b, &f->gpu2), 0);
  assert_int_equal(start(f, "c", &f->gpu2, NULL, &info), -ENOSPC);
  assert_int_equal(start(f, "c", &f->gpu1, NULL, &info), 0);
  assert_gpus(&info, 1, (const int[]){3});
  assert_int_equal(f->b->ops->fits(f->b, &f->gpu1), 0);
  assert_int_equal(start(f, "d", &f->gpu1, NULL, NULL), -ENOSPC);
  assert_int_equal(start(f, "b", &f->cpu, NULL, NULL), -EEXIST);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_total, 4);
  assert_int_equal(cap.gpus_used, 4);
  assert_int_equal(cap.gpus_unhealthy, 0);
  assert_int_equal(cap.cpus_used, 3);
  assert_int_equal(f->b->ops->count(f->b), 3);

  /* Stopping frees the GPUs only once the exit is reaped. */
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  assert_int_equal(f->b->ops->stop(f->b, "nobody"), -ENOENT);
  wait_exits(f, 1);
  assert_int_equal(exit_status_of(f, "a"), 128 + SIGTERM);
  assert_int_equal(f->b->ops->stop(f->b, "a"), -ENOENT);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_used, 2);
  assert_int_equal(f->b->ops->count(f->b), 2);
  assert_int_equal(start(f, "d", &f->gpu1, NULL, &info), 0);
  assert_gpus(&info, 1, (const int[]){0});
  assert_int_equal(start(f, "e", &f->gpu2, NULL, NULL), -ENOSPC);
  assert_int_equal(start(f, "e", &f->gpu1, NULL, &info), 0);
  assert_gpus(&info, 1, (const int[]){1});
  /* The name of a reaped runner is free again. */
  assert_int_equal(f->b->ops->stop(f->b, "d"), 0);
  wait_exits(f, 2);
  assert_int_equal(start(f, "a", &f->gpu1, NULL, &info), 0);
  assert_gpus(&info, 1, (const int[]){0});

  /* Closing stops the rest, reports each exit, then says done. */
  f->b->ops->close(f->b, done_cb, f);
  assert_int_equal(start(f, "late", &f->cpu, NULL, NULL), -ECANCELED);
  assert_true(run_until(&f->loop, is_done, f, 10000));
  assert_int_equal(f->nexits, 6);
  assert_int_equal(exit_status_of(f, "b"), 128 + SIGTERM);
  assert_int_equal(exit_status_of(f, "c"), 128 + SIGTERM);
  assert_int_equal(exit_status_of(f, "e"), 128 + SIGTERM);
  assert_int_equal(f->b->ops->count(f->b), 0);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_used, 0);
  assert_int_equal(cap.cpus_used, 0);
}

static void test_cpu_slots_and_memory(void **state)
{
  struct fixture *f = *state;
  struct backend_capacity cap;
  struct cfg_pool big;

  f->cfg.local.cpu_slots = 4;
  f->cpu.cpus = 3;
  pool_command(&f->cpu, script(f, "sleep.sh", "exec sleep 30"));
  backend_up(f);

  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.cpus_total, 4);
  assert_true(cap.memory_total > 0);
  assert_int_equal(start(f, "a", &f->cpu, NULL, NULL), 0);
  assert_int_equal(f->b->ops->fits(f->b, &f->cpu), 0);
  assert_int_equal(start(f, "b", &f->cpu, NULL, NULL), -ENOSPC);

  pool_init(&big, "big", 0, 1);
  pool_command(&big, script(f, "sleep-big.sh", "exec sleep 30"));
  big.memory_bytes = cap.memory_total / 2 + 1;
  assert_int_equal(start(f, "m1", &big, NULL, NULL), 0);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.cpus_used, 4);
  assert_int_equal(cap.memory_used, big.memory_bytes);
  big.cpus = 0; /* only memory stands in the way now */
  assert_int_equal(f->b->ops->fits(f->b, &big), 0);
  assert_int_equal(start(f, "m2", &big, NULL, NULL), -ENOSPC);

  assert_int_equal(f->b->ops->stop(f->b, "m1"), 0);
  wait_exits(f, 1);
  assert_int_equal(f->b->ops->fits(f->b, &big), 1);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.memory_used, 0);
  assert_int_equal(cap.cpus_used, 3);
  pool_free(&big);
}

static void test_nvidia_smi_discovery(void **state)
{
  struct fixture *f = *state;
  struct backend_capacity cap;
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
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_total, 3);
  assert_int_equal(f->b->ops->mark_gpu_unhealthy(f->b, 3), 0);
  assert_int_equal(f->b->ops->mark_gpu_unhealthy(f->b, 2), -ENOENT);
  backend_down(f);
}

static void test_nvidia_smi_absent_or_failing(void **state)
{
  struct fixture *f = *state;
  struct backend_capacity cap;
  char path[256], *smi;

  snprintf(path, sizeof(path), "%s/no-such-nvidia-smi", f->dir);
  assert_int_equal(setenv("RUNFLEET_NVIDIA_SMI", path, 1), 0);
  f->cfg.local.gpus_auto = 1;
  backend_up(f);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_total, 0);
  assert_int_equal(f->b->ops->fits(f->b, &f->gpu1), 0);
  backend_down(f);

  f->cfg.local.work_root = strdup(f->work);
  f->cfg.local.gpus_auto = 1;
  smi = script(f, "smi-fail.sh",
               "echo 'GPU 0: NVIDIA H100 (UUID: GPU-aaaa)'\n"
               "echo 'NVIDIA-SMI has failed'\nexit 9");
  assert_int_equal(setenv("RUNFLEET_NVIDIA_SMI", smi, 1), 0);
  free(smi);
  backend_up(f);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_total, 0);
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
  assert_int_equal(start(f, "stubborn", &f->cpu, env, NULL), 0);
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
  assert_int_equal(start(f, "stubborn", &f->cpu, env, NULL), 0);
  assert_int_equal(start(f, "meek", &f->gpu1, env, NULL), 0);
  assert_true(run_until(&f->loop, file_exists, ready, 10000));
  f->b->ops->close(f->b, done_cb, f);
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
  struct backend_capacity cap;

  pool_command(&f->gpu2, script(f, "quick.sh", "exit 0"));
  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  f->cfg.local.ngpus = 2; /* GPUs 3 and 2 */
  backend_up(f);
  f->restart = &f->gpu1;
  f->restart_rc = 1;
  assert_int_equal(start(f, "first", &f->gpu2, NULL, NULL), 0);
  wait_exits(f, 1);
  assert_int_equal(f->restart_rc, 0);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_total, 2);
  assert_int_equal(cap.gpus_used, 1);
  assert_int_equal(f->b->ops->count(f->b), 1);
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
  assert_int_equal(start(f, "parent", &f->cpu, env, NULL), 0);
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
  assert_int_equal(start(f, "esc", &f->cpu, env, NULL), 0);
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
  assert_int_equal(start(f, "ro", &f->cpu, env, NULL), 0);
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
  struct backend_runner_info info;
  struct backend_capacity cap;

  pool_command(&f->gpu1, script(f, "sleep.sh", "exec sleep 30"));
  pool_command(&f->gpu2, script(f, "sleep2.sh", "exec sleep 30"));
  backend_up(f);
  assert_int_equal(f->b->ops->mark_gpu_unhealthy(f->b, 0), 0);
  assert_int_equal(f->b->ops->mark_gpu_unhealthy(f->b, 0), 0);
  assert_int_equal(f->b->ops->mark_gpu_unhealthy(f->b, 99), -ENOENT);
  assert_int_equal(start(f, "a", &f->gpu1, NULL, &info), 0);
  assert_gpus(&info, 1, (const int[]){1});
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_total, 4);
  assert_int_equal(cap.gpus_unhealthy, 1);
  assert_int_equal(cap.gpus_used, 1);

  /* A held GPU that fails stays out after its runner exits. */
  assert_int_equal(f->b->ops->mark_gpu_unhealthy(f->b, 1), 0);
  assert_int_equal(f->b->ops->stop(f->b, "a"), 0);
  wait_exits(f, 1);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_unhealthy, 2);
  assert_int_equal(cap.gpus_used, 0);
  assert_int_equal(start(f, "b", &f->gpu2, NULL, &info), 0);
  assert_gpus(&info, 2, (const int[]){2, 3});
  assert_int_equal(f->b->ops->fits(f->b, &f->gpu1), 0);
  assert_int_equal(start(f, "c", &f->gpu1, NULL, NULL), -ENOSPC);
}

static void test_bad_start_leaves_nothing(void **state)
{
  struct fixture *f = *state;
  struct backend_capacity cap;
  char path[256];

  pool_command(&f->gpu1, strdup("/nonexistent/runner/run.sh"));
  pool_command(&f->cpu, script(f, "sleep.sh", "exec sleep 30"));
  backend_up(f);
  assert_true(start(f, "bad", &f->gpu1, NULL, NULL) < 0);
  assert_int_equal(f->b->ops->count(f->b), 0);
  f->b->ops->capacity(f->b, &cap);
  assert_int_equal(cap.gpus_used, 0);
  assert_int_equal(cap.cpus_used, 0);
  snprintf(path, sizeof(path), "%s/bad", f->work);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(start(f, "../escape", &f->cpu, NULL, NULL), -EINVAL);
  assert_int_equal(start(f, "", &f->cpu, NULL, NULL), -EINVAL);
  assert_int_equal(start(f, "..", &f->cpu, NULL, NULL), -EINVAL);
  assert_int_equal(start(f, "a b", &f->cpu, NULL, NULL), -EINVAL);
  /* The failed name can be used again at once. */
  pool_command(&f->gpu1, script(f, "sleep1.sh", "exec sleep 30"));
  assert_int_equal(start(f, "bad", &f->gpu1, NULL, NULL), 0);
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
  assert_int_equal(start(f, "stale", &f->cpu, NULL, NULL), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 0);
  f->b->ops->close(f->b, done_cb, f);
  assert_int_equal(f->done, 1);
}

/* Runs one cpu runner named name to its exit with the backend's log (our
 * stderr) captured; returns the log. */
static const char *run_logged(struct fixture *f, const char *name)
{
  char path[256];
  int saved, fd;

  backend_up(f);
  snprintf(path, sizeof(path), "%s/stderr.log", f->dir);
  fflush(stderr);
  saved = dup(2);
  assert_true(saved >= 0);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(dup2(fd, 2), 2);
  close(fd);
  assert_int_equal(start(f, name, &f->cpu, NULL, NULL), 0);
  wait_exits(f, 1);
  backend_down(f);
  fflush(stderr);
  assert_int_equal(dup2(saved, 2), 2);
  close(saved);
  return read_all(path);
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
  assert_int_equal(start(f, "linger", &f->cpu, env, NULL), 0);
  wait_exits(f, 1);
  assert_int_equal(f->exit_status[0], 4);
  snprintf(path, sizeof(path), "%s/linger.pid", f->dir);
  pid = strtol(read_all(path), NULL, 10);
  assert_true(pid > 1);
  assert_false(pid_dead(&pid));
  kill((pid_t)pid, SIGKILL);
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
      cmocka_unit_test_setup_teardown(test_rmtree, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
