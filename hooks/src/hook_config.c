#include "hook_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hook_log.h"

static const char *env_str(const char *name)
{
  const char *v = getenv(name);

  return v != NULL && v[0] != '\0' ? v : NULL;
}

int hcfg_parse_uint(const char *text, unsigned long long max,
                    unsigned long long *value)
{
  unsigned long long v = 0;
  const char *p = text;

  if (p == NULL || *p == '\0')
    return -EINVAL;
  for (; *p != '\0'; p++) {
    if (*p < '0' || *p > '9')
      return -EINVAL;
    if (v > (max - (unsigned long long)(*p - '0')) / 10)
      return -EINVAL;
    v = v * 10 + (unsigned long long)(*p - '0');
  }
  *value = v;
  return 0;
}

int hcfg_parse_size(const char *text, uint64_t *bytes)
{
  static const char units[] = "KMGTP";
  char digits[32];
  unsigned long long v, mult = 1, base = 1000;
  const char *p = text, *u;
  size_t len = 0;
  int i, power;

  if (text == NULL)
    return -EINVAL;
  while (p[len] >= '0' && p[len] <= '9')
    len++;
  if (len == 0 || len >= sizeof(digits))
    return -EINVAL;
  memcpy(digits, p, len);
  digits[len] = '\0';
  if (hcfg_parse_uint(digits, ULLONG_MAX, &v) < 0)
    return -EINVAL;
  p += len;
  if (*p != '\0') {
    u = strchr(units, toupper((unsigned char)*p));
    if (u == NULL)
      return -EINVAL;
    power = (int)(u - units) + 1;
    p++;
    if (*p == 'i') {
      base = 1024;
      p++;
    }
    if (*p == 'B' || *p == 'b')
      p++;
    if (*p != '\0')
      return -EINVAL;
    for (i = 0; i < power; i++)
      mult *= base;
  }
  if (v > ULLONG_MAX / mult)
    return -EINVAL;
  *bytes = v * mult;
  return 0;
}

int hcfg_parse_gpus(const char *text, int *gpus, size_t max, size_t *n)
{
  const char *p = text;

  *n = 0;
  if (text == NULL)
    return 0;
  while (*p != '\0') {
    char item[16];
    size_t len = strcspn(p, ",");
    unsigned long long v;

    /* Surrounding blanks are tolerated, empty items are not. */
    while (len > 0 && isspace((unsigned char)*p)) {
      p++;
      len--;
    }
    while (len > 0 && isspace((unsigned char)p[len - 1]))
      len--;
    if (len == 0 || len >= sizeof(item) || *n >= max)
      return -EINVAL;
    memcpy(item, p, len);
    item[len] = '\0';
    if (hcfg_parse_uint(item, 65535, &v) < 0)
      return -EINVAL;
    gpus[(*n)++] = (int)v;
    p += strcspn(p, ",");
    if (*p == ',') {
      p++;
      if (*p == '\0')
        return -EINVAL;
    }
  }
  return 0;
}

static unsigned env_uint(const char *name, unsigned def, unsigned max)
{
  const char *v = env_str(name);
  unsigned long long n;

  if (v == NULL)
    return def;
  if (hcfg_parse_uint(v, max, &n) < 0) {
    hlog_warning("%s=%s is not a number up to %u, using %u", name, v, max, def);
    return def;
  }
  return (unsigned)n;
}

static void load_paths(struct hook_config *cfg)
{
  const char *work = env_str("RUNFLEET_WORK_DIR");
  const char *rws = env_str("RUNNER_WORKSPACE");
  const char *state = env_str("RUNFLEET_STATE_DIR");
  int n;

  cfg->workspace = env_str("GITHUB_WORKSPACE");
  cfg->runner_temp = env_str("RUNNER_TEMP");
  cfg->github_env = env_str("GITHUB_ENV");
  cfg->work_root[0] = '\0';
  if (work != NULL) {
    n = snprintf(cfg->work_root, sizeof(cfg->work_root), "%s", work);
  } else if (rws != NULL) {
    const char *slash = strrchr(rws, '/');
    int len = slash != NULL ? (int)(slash - rws) : 0;

    n = snprintf(cfg->work_root, sizeof(cfg->work_root), "%.*s",
                 len > 0 ? len : 1, len > 0 ? rws : "/");
  } else {
    n = snprintf(cfg->work_root, sizeof(cfg->work_root), "%s",
                 cfg->workspace != NULL ? cfg->workspace : ".");
  }
  if (n < 0 || (size_t)n >= sizeof(cfg->work_root))
    snprintf(cfg->work_root, sizeof(cfg->work_root), ".");
  cfg->state_dir[0] = '\0';
  if (state != NULL)
    n = snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", state);
  else if (cfg->runner_temp != NULL)
    n = snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s/runfleet",
                 cfg->runner_temp);
  else
    n = snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/tmp/runfleet-%lu",
                 (unsigned long)getuid());
  if (n < 0 || (size_t)n >= sizeof(cfg->state_dir))
    cfg->state_dir[0] = '\0';
}

static void load_gpus(struct hook_config *cfg)
{
  const char *gpus = env_str("RUNFLEET_GPUS");
  const char *pid = env_str("RUNFLEET_RUNNER_PID");
  unsigned long long n;

  if (hcfg_parse_gpus(gpus, cfg->gpus, HCFG_MAX_GPUS, &cfg->ngpus) < 0) {
    hlog_warning("RUNFLEET_GPUS=%s is not a list of GPU indices, ignoring it",
                 gpus);
    cfg->ngpus = 0;
  }
  cfg->expected_gpus =
      env_uint("RUNFLEET_EXPECTED_GPUS", (unsigned)cfg->ngpus, HCFG_MAX_GPUS);
  cfg->nvml_lib = env_str("RUNFLEET_NVML_LIB");
  if (cfg->nvml_lib == NULL)
    cfg->nvml_lib = HCFG_NVML_LIB;
  cfg->max_temp_c = env_uint("RUNFLEET_GPU_MAX_TEMP", HCFG_GPU_MAX_TEMP_C, 200);
  cfg->runner_pid = 0;
  if (pid != NULL && hcfg_parse_uint(pid, INT_MAX, &n) == 0)
    cfg->runner_pid = (long)n;
}

void hcfg_load(struct hook_config *cfg)
{
  const char *node = env_str("RUNFLEET_NODE_NAME");
  const char *v;
  unsigned long long n;

  memset(cfg, 0, sizeof(*cfg));
  cfg->url = env_str("RUNFLEET_URL");
  cfg->token = env_str("RUNFLEET_RUNNER_TOKEN");
  cfg->runner_name = env_str("RUNFLEET_RUNNER_NAME");
  if (cfg->runner_name == NULL)
    cfg->runner_name = env_str("RUNNER_NAME");
  cfg->pool = env_str("RUNFLEET_POOL");
  if (node != NULL)
    snprintf(cfg->node, sizeof(cfg->node), "%s", node);
  else if (gethostname(cfg->node, sizeof(cfg->node) - 1) < 0)
    snprintf(cfg->node, sizeof(cfg->node), "unknown");
  cfg->node[sizeof(cfg->node) - 1] = '\0';
  cfg->server_url = env_str("GITHUB_SERVER_URL");
  cfg->repository = env_str("GITHUB_REPOSITORY");
  v = env_str("GITHUB_RUN_ID");
  if (v != NULL && hcfg_parse_uint(v, LLONG_MAX, &n) == 0)
    cfg->run_id = (long long)n;
  cfg->job = env_str("GITHUB_JOB");
  cfg->job_status = env_str("RUNFLEET_JOB_STATUS");
  cfg->tracking_id = env_str("RUNNER_TRACKING_ID");
  load_gpus(cfg);
  v = env_str("RUNFLEET_GIT_CACHE");
  cfg->git_cache =
      !(v != NULL && (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 ||
                      strcmp(v, "off") == 0));
  cfg->cache_dir = env_str("RUNFLEET_CACHE_DIR");
  if (cfg->cache_dir == NULL)
    cfg->cache_dir = HCFG_CACHE_DIR;
  cfg->git_token = env_str("RUNFLEET_GIT_TOKEN");
  load_paths(cfg);
  v = env_str("RUNFLEET_MIN_FREE_DISK");
  if (v != NULL && hcfg_parse_size(v, &cfg->min_free_disk) < 0) {
    hlog_warning("RUNFLEET_MIN_FREE_DISK=%s is not a size (e.g. 10Gi), "
                 "not checking free disk space",
                 v);
    cfg->min_free_disk = 0;
  }
  cfg->pre_job_timeout_s =
      env_uint("RUNFLEET_PRE_JOB_TIMEOUT", HCFG_PRE_JOB_TIMEOUT_S, 3600);
  cfg->post_job_timeout_s =
      env_uint("RUNFLEET_POST_JOB_TIMEOUT", HCFG_POST_JOB_TIMEOUT_S, 3600);
  cfg->sample_interval_ms =
      env_uint("RUNFLEET_SAMPLE_INTERVAL_MS", HCFG_SAMPLE_INTERVAL_MS, 3600000);
  if (cfg->sample_interval_ms < 10)
    cfg->sample_interval_ms = 10;
  cfg->sampler_max_s =
      env_uint("RUNFLEET_SAMPLER_MAX_SECONDS", HCFG_SAMPLER_MAX_S, 604800);
  cfg->kill_grace_ms =
      env_uint("RUNFLEET_KILL_GRACE_MS", HCFG_KILL_GRACE_MS, 60000);
}

int hcfg_gpu_runner(const struct hook_config *cfg)
{
  return cfg->ngpus > 0 || cfg->expected_gpus > 0;
}
