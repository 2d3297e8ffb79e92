#ifndef RUNFLEET_HOOK_GPU_H
#define RUNFLEET_HOOK_GPU_H

#include <stddef.h>
#include <sys/types.h>

#include "hook_config.h"

/* GPU health and usage through NVML, loaded at run time with dlopen so the
 * hook has no build-time dependency on the NVIDIA driver. */

#define GPU_UUID_MAX 96 /* NVML_DEVICE_UUID_V2_BUFFER_SIZE */
#define GPU_MESSAGE_MAX 1024

enum gpu_reason {
  GPU_OK,
  GPU_NVML_UNAVAILABLE,
  GPU_MISSING,
  GPU_ECC,
  GPU_FOREIGN_PROCESS,
  GPU_TEMPERATURE,
  GPU_CLOCKS
};

struct gpu_failure {
  int index;
  char uuid[GPU_UUID_MAX];
  enum gpu_reason reason;
};

struct gpu_health {
  int checked;            /* 0: a CPU runner, nothing to check */
  int ok;                 /* all checks passed (or none were due) */
  enum gpu_reason reason; /* the first failure's kind */
  char message[GPU_MESSAGE_MAX];
  struct gpu_failure failed[HCFG_MAX_GPUS];
  size_t nfailed;
};

struct gpu_nvml;

/* Loads the NVML library at path and initializes it. Returns 0, -ENOENT
 * when the library cannot be loaded, or -EIO when it will not initialize;
 * err (size bytes) says why. */
int gpu_nvml_open(const char *path, struct gpu_nvml **nvml, char *err,
                  size_t size);

/* Shuts NVML down and unloads it; NULL is fine. */
void gpu_nvml_close(struct gpu_nvml *nvml);

/* The number of GPUs NVML sees; 0 or -EIO. */
int gpu_nvml_count(struct gpu_nvml *nvml, unsigned *count);

/* The UUID of GPU index; 0 or -EIO (uuid set to "unknown"). */
int gpu_nvml_uuid(struct gpu_nvml *nvml, int index, char *uuid, size_t size);

/* Memory in use (bytes) and utilisation (percent) of GPU index; 0 or
 * -EIO. */
int gpu_nvml_usage(struct gpu_nvml *nvml, int index,
                   unsigned long long *memory_used, unsigned *utilization);

/* Runs every health check due for cfg; processes outside root's tree are
 * foreign. Fills h; returns 0 (h->ok says the verdict). */
int gpu_check_health(const struct hook_config *cfg, pid_t root,
                     struct gpu_health *h);

/* The report name of a reason: "ecc", "missing_gpu", ... */
const char *gpu_reason_name(enum gpu_reason reason);

#endif
