#include "sampler.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "hook_log.h"
#include "procs.h"

#define SAMPLER_READY_TIMEOUT_MS 5000
#define SAMPLER_STATE_MAX 65536

int sampler_state_path(const char *dir, char *path, size_t size)
{
  int n = snprintf(path, size, "%s/%s", dir, SAMPLER_STATE_FILE);

  return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static json_t *sampler_state_json(const struct sampler_state *st)
{
  json_t *root = NULL, *gpus, *g;
  size_t i;

  gpus = json_array();
  if (gpus == NULL)
    return NULL;
  for (i = 0; i < st->ngpus; i++) {
    g = json_pack("{s:i, s:s, s:I, s:f}", "index", st->gpus[i].index, "uuid",
                  st->gpus[i].uuid, "peak_memory_bytes",
                  (json_int_t)st->gpus[i].peak_memory_bytes, "utilization_sum",
                  st->gpus[i].utilization_sum);
    if (g == NULL || json_array_append_new(gpus, g) < 0)
      goto fail;
  }
  root = json_pack("{s:I, s:f, s:I, s:o}", "pid", (json_int_t)st->pid,
                   "started_at", st->started_at, "samples",
                   (json_int_t)st->samples, "gpus", gpus);
  return root; /* json_pack's "o" took gpus, even on failure */
fail:
  json_decref(gpus);
  return NULL;
}

int sampler_state_write(const char *path, const struct sampler_state *st)
{
  char tmp[4200];
  json_t *root = NULL;
  char *text = NULL;
  size_t len;
  int fd = -1, rc;

  if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >=
      (int)sizeof(tmp))
    return -ENAMETOOLONG;
  rc = fs_mkdir_parent(path, 0700);
  if (rc < 0)
    return rc;
  root = sampler_state_json(st);
  if (root == NULL)
    return -ENOMEM;
  text = json_dumps(root, JSON_COMPACT);
  if (text == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  len = strlen(text);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    goto out;
  }
  if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0) {
    rc = errno != 0 ? -errno : -EIO;
    goto out;
  }
  if (close(fd) < 0) {
    fd = -1;
    rc = -errno;
    goto out;
  }
  fd = -1;
  if (rename(tmp, path) < 0) {
    rc = -errno;
    goto out;
  }
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  if (rc < 0)
    (void)unlink(tmp);
  free(text);
  json_decref(root);
  return rc;
}

int sampler_state_read(const char *path, struct sampler_state *st)
{
  json_error_t jerr;
  json_t *root, *gpus, *g;
  json_int_t pid = 0, samples = 0;
  double started = 0;
  size_t i;
  int rc = -EINVAL;

  memset(st, 0, sizeof(*st));
  root = json_load_file(path, 0, &jerr);
  if (root == NULL)
    return access(path, F_OK) < 0 ? -ENOENT : -EINVAL;
  if (json_unpack(root, "{s:I, s:F, s:I, s:o}", "pid", &pid, "started_at",
                  &started, "samples", &samples, "gpus", &gpus) < 0 ||
      !json_is_array(gpus) || pid < 0 || samples < 0)
    goto out;
  st->pid = (long)pid;
  st->started_at = started;
  st->samples = (unsigned long long)samples;
  json_array_foreach(gpus, i, g)
  {
    struct sampler_gpu *sg;
    const char *uuid;
    json_int_t peak;
    int index;

    if (st->ngpus >= HCFG_MAX_GPUS)
      break;
    sg = &st->gpus[st->ngpus];
    if (json_unpack(g, "{s:i, s:s, s:I, s:F}", "index", &index, "uuid", &uuid,
                    "peak_memory_bytes", &peak, "utilization_sum",
                    &sg->utilization_sum) < 0 ||
        peak < 0)
      goto out;
    sg->index = index;
    sg->peak_memory_bytes = (unsigned long long)peak;
    snprintf(sg->uuid, sizeof(sg->uuid), "%s", uuid);
    st->ngpus++;
  }
  rc = 0;
out:
  json_decref(root);
  return rc;
}

double sampler_mean_utilization(const struct sampler_state *st)
{
  double sum = 0;
  size_t i;

  if (st->samples == 0 || st->ngpus == 0)
    return 0;
  for (i = 0; i < st->ngpus; i++)
    sum += st->gpus[i].utilization_sum;
  return sum / 100.0 / (double)st->samples / (double)st->ngpus;
}

unsigned long long sampler_peak_memory(const struct sampler_state *st)
{
  unsigned long long peak = 0;
  size_t i;

  for (i = 0; i < st->ngpus; i++)
    if (st->gpus[i].peak_memory_bytes > peak)
      peak = st->gpus[i].peak_memory_bytes;
  return peak;
}

/* In the grandchild: detach and become "runfleet-hook sampler". */
static void sampler_exec(double started_at, int ready_fd)
{
  char started[64], fd[16];
  char *argv[5];
  int null;

  null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    (void)dup2(null, 0);
    (void)dup2(null, 1);
    (void)dup2(null, 2);
  }
  /* The runner kills processes that carry its tracking id when a job ends;
   * the sampler must outlive the job until the post-job hook stops it. */
  (void)unsetenv("RUNNER_TRACKING_ID");
  snprintf(started, sizeof(started), "%.3f", started_at);
  snprintf(fd, sizeof(fd), "%d", ready_fd);
  argv[0] = "runfleet-hook";
  argv[1] = "sampler";
  argv[2] = started;
  argv[3] = fd;
  argv[4] = NULL;
  execv("/proc/self/exe", argv);
  _exit(127);
}

pid_t sampler_start(double started_at)
{
  struct pollfd pfd;
  pid_t child, sampler = -1;
  int fds[2], status, rc;
  ssize_t n;

  if (pipe2(fds, O_CLOEXEC) < 0)
    return -errno;
  child = fork();
  if (child < 0) {
    rc = -errno;
    close(fds[0]);
    close(fds[1]);
    return rc;
  }
  if (child == 0) {
    pid_t grandchild;

    close(fds[0]);
    if (setsid() < 0)
      _exit(1);
    grandchild = fork();
    if (grandchild < 0)
      _exit(1);
    if (grandchild > 0) {
      /* Tell the hook the sampler's pid, then let init adopt it. */
      n = write(fds[1], &grandchild, sizeof(grandchild));
      _exit(n == (ssize_t)sizeof(grandchild) ? 0 : 1);
    }
    /* The ready byte goes on the same pipe, past the pid. */
    if (fcntl(fds[1], F_SETFD, 0) < 0)
      _exit(1);
    sampler_exec(started_at, fds[1]);
  }
  close(fds[1]);
  while (waitpid(child, &status, 0) < 0 && errno == EINTR)
    ;
  n = read(fds[0], &sampler, sizeof(sampler));
  if (n != (ssize_t)sizeof(sampler) || sampler <= 0) {
    close(fds[0]);
    return -ECHILD;
  }
  pfd.fd = fds[0];
  pfd.events = POLLIN;
  rc = poll(&pfd, 1, SAMPLER_READY_TIMEOUT_MS);
  if (rc <= 0) {
    hlog_info("the sampler (pid %ld) did not report ready", (long)sampler);
  } else {
    char c;

    if (read(fds[0], &c, 1) != 1)
      hlog_info("the sampler (pid %ld) exited early", (long)sampler);
  }
  close(fds[0]);
  return sampler;
}

static double sampler_now(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sampler_take(struct gpu_nvml *nvml, struct sampler_state *st)
{
  size_t i;

  for (i = 0; i < st->ngpus; i++) {
    unsigned long long mem;
    unsigned util;

    if (gpu_nvml_usage(nvml, st->gpus[i].index, &mem, &util) < 0)
      continue;
    if (mem > st->gpus[i].peak_memory_bytes)
      st->gpus[i].peak_memory_bytes = mem;
    st->gpus[i].utilization_sum += util;
  }
  st->samples++;
}

static int sampler_gpus(const struct hook_config *cfg, struct gpu_nvml *nvml,
                        struct sampler_state *st)
{
  unsigned count = 0;
  size_t i;

  if (gpu_nvml_count(nvml, &count) < 0)
    return -EIO;
  if (cfg->ngpus > 0) {
    for (i = 0; i < cfg->ngpus; i++)
      if (cfg->gpus[i] >= 0 && (unsigned)cfg->gpus[i] < count)
        st->gpus[st->ngpus++].index = cfg->gpus[i];
  } else {
    for (i = 0; i < count && i < HCFG_MAX_GPUS; i++)
      st->gpus[st->ngpus++].index = (int)i;
  }
  for (i = 0; i < st->ngpus; i++)
    (void)gpu_nvml_uuid(nvml, st->gpus[i].index, st->gpus[i].uuid,
                        sizeof(st->gpus[i].uuid));
  return 0;
}

int sampler_main(const struct hook_config *cfg, int argc, char **argv)
{
  struct sampler_state *st = NULL;
  struct gpu_nvml *nvml = NULL;
  char path[4200], err[256];
  struct timespec wait;
  unsigned long long fd;
  double deadline;
  sigset_t set;
  int ready = -1, rc = 1;

  if (argc < 4 || hcfg_parse_uint(argv[3], 1024, &fd) < 0)
    return 2;
  ready = (int)fd;
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    goto out;
  st->pid = (long)getpid();
  st->started_at = strtod(argv[2], NULL);
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  signal(SIGHUP, SIG_IGN);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
    goto out;
  if (sampler_state_path(cfg->state_dir, path, sizeof(path)) < 0)
    goto out;
  if (gpu_nvml_open(cfg->nvml_lib, &nvml, err, sizeof(err)) == 0)
    (void)sampler_gpus(cfg, nvml, st);
  if (sampler_state_write(path, st) < 0)
    goto out;
  if (write(ready, "1", 1) != 1)
    goto out;
  close(ready);
  ready = -1;
  deadline = sampler_now() + cfg->sampler_max_s;
  wait.tv_sec = cfg->sample_interval_ms / 1000;
  wait.tv_nsec = (long)(cfg->sample_interval_ms % 1000) * 1000000L;
  while (nvml != NULL && sampler_now() < deadline) {
    sampler_take(nvml, st);
    if (sampler_state_write(path, st) < 0)
      break;
    if (sigtimedwait(&set, NULL, &wait) >= 0)
      break; /* SIGTERM or SIGINT: the post-job hook wants the totals */
  }
  rc = 0;
out:
  if (ready >= 0)
    close(ready);
  gpu_nvml_close(nvml);
  free(st);
  return rc;
}

/* Whether pid still runs "runfleet-hook sampler": the state file may
 * outlive its sampler, and its pid may have been reused since. */
static int sampler_is_ours(pid_t pid)
{
  static const char want[] = "runfleet-hook\0sampler";
  char path[64], buf[sizeof(want)];
  ssize_t n;
  int fd;

  snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  n = read(fd, buf, sizeof(buf));
  close(fd);
  return n == (ssize_t)sizeof(buf) && memcmp(buf, want, sizeof(want)) == 0;
}

int sampler_stop(pid_t pid, unsigned timeout_ms)
{
  unsigned waited = 0;
  struct timespec ts = {0, 20 * 1000000L};

  if (pid <= 1)
    return -EINVAL;
  if (!sampler_is_ours(pid))
    return -ESRCH;
  if (kill(pid, SIGTERM) < 0)
    return errno == ESRCH ? 0 : -errno;
  while (!procs_exited(pid)) {
    if (waited >= timeout_ms) {
      (void)kill(pid, SIGKILL);
      return -ETIMEDOUT;
    }
    nanosleep(&ts, NULL);
    waited += 20;
  }
  return 0;
}
