#ifndef RUNFLEET_HOOK_SAMPLER_H
#define RUNFLEET_HOOK_SAMPLER_H

#include <stddef.h>
#include <sys/types.h>

#include "gpu.h"
#include "hook_config.h"

/* The GPU usage sampler: a detached process the pre-job hook starts and
 * the post-job hook stops. It keeps its aggregates in a small JSON state
 * file (STATE_DIR/sampler.json), replaced atomically after each sample. */

#define SAMPLER_STATE_FILE "sampler.json"

struct sampler_gpu {
  int index;
  char uuid[GPU_UUID_MAX];
  unsigned long long peak_memory_bytes;
  double utilization_sum; /* percent, summed over samples */
};

struct sampler_state {
  long pid;          /* the sampler; 0 when none runs */
  double started_at; /* the pre-job hook's start, seconds since the epoch */
  unsigned long long samples;
  size_t ngpus;
  struct sampler_gpu gpus[HCFG_MAX_GPUS];
};

/* Writes dir/SAMPLER_STATE_FILE into path (size bytes); 0 or -ENAMETOOLONG.
 */
int sampler_state_path(const char *dir, char *path, size_t size);

/* Replaces the state file at path atomically (write, fsync, rename),
 * creating its directory. 0 or a negative errno. */
int sampler_state_write(const char *path, const struct sampler_state *st);

/* Reads the state file at path; 0, -ENOENT or -EINVAL. */
int sampler_state_read(const char *path, struct sampler_state *st);

/* Mean GPU utilisation over samples and GPUs, 0..1; 0 without samples. */
double sampler_mean_utilization(const struct sampler_state *st);

/* The highest peak memory of any one GPU, in bytes. */
unsigned long long sampler_peak_memory(const struct sampler_state *st);

/* Starts the sampler detached (setsid, stdio on /dev/null) by running this
 * program again as "runfleet-hook sampler", and waits until it has written
 * its first state. Returns its pid or a negative errno. */
pid_t sampler_start(double started_at);

/* The sampler's main loop ("runfleet-hook sampler STARTED READY_FD"):
 * samples until SIGTERM or cfg->sampler_max_s. Returns an exit status. */
int sampler_main(const struct hook_config *cfg, int argc, char **argv);

/* Sends SIGTERM to the sampler and waits up to timeout_ms for it to exit
 * (SIGKILL past that). 0 or a negative errno. */
int sampler_stop(pid_t pid, unsigned timeout_ms);

#endif
