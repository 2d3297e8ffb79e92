#ifndef RUNFLEET_HOOK_CONFIG_H
#define RUNFLEET_HOOK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* What runfleet-hook reads from its environment (docs/HOOKS.md lists every
 * variable). Strings point into the environment, which the hook never
 * changes after hcfg_load; NULL when unset or empty. */

#define HCFG_MAX_GPUS 64
#define HCFG_NODE_MAX 256

#define HCFG_PRE_JOB_TIMEOUT_S 60u
#define HCFG_POST_JOB_TIMEOUT_S 30u
#define HCFG_GPU_MAX_TEMP_C 90u
#define HCFG_SAMPLE_INTERVAL_MS 1000u
#define HCFG_SAMPLER_MAX_S 86400u
#define HCFG_KILL_GRACE_MS 2000u
#define HCFG_CACHE_DIR "/var/cache/runfleet/git"
#define HCFG_NVML_LIB "libnvidia-ml.so.1"

struct hook_config {
  /* runfleetd */
  const char *url;
  const char *token; /* secret: never logged */
  const char *runner_name;
  const char *pool;
  char node[HCFG_NODE_MAX];
  /* the job, as the runner describes it */
  const char *server_url;
  const char *repository;
  long long run_id;
  const char *job;
  const char *job_status;
  const char *workspace;
  const char *runner_temp;
  const char *github_env;
  const char *tracking_id;
  /* GPUs */
  int gpus[HCFG_MAX_GPUS];
  size_t ngpus;
  unsigned expected_gpus;
  const char *nvml_lib;
  unsigned max_temp_c;
  long runner_pid; /* 0: the session leader of the hook's parent */
  /* git cache */
  int git_cache; /* 0: disabled */
  const char *cache_dir;
  const char *git_token; /* secret: never logged */
  /* workspace */
  char work_root[4096];
  uint64_t min_free_disk;
  char state_dir[4096];
  /* time */
  unsigned pre_job_timeout_s;
  unsigned post_job_timeout_s;
  unsigned sample_interval_ms;
  unsigned sampler_max_s;
  unsigned kill_grace_ms;
};

/* Fills cfg from the environment. Malformed values are reported as
 * ::warning:: lines and replaced by their defaults; never fails. */
void hcfg_load(struct hook_config *cfg);

/* Whether this runner was promised GPUs. */
int hcfg_gpu_runner(const struct hook_config *cfg);

/* Parses "1234", "10G" (10^9), "10Gi" (2^30), "512MiB"; returns 0 or
 * -EINVAL. */
int hcfg_parse_size(const char *text, uint64_t *bytes);

/* Parses "0,2,3" into at most max indices; "" gives none. Returns 0 or
 * -EINVAL. */
int hcfg_parse_gpus(const char *text, int *gpus, size_t max, size_t *n);

/* Parses a decimal unsigned integer no larger than max; 0 or -EINVAL. */
int hcfg_parse_uint(const char *text, unsigned long long max,
                    unsigned long long *value);

#endif
