#include "gpu.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "procs.h"

/* The few NVML declarations the hook needs, matching nvml.h's ABI. The
 * return type nvmlReturn_t is an int-sized enum; a device is an opaque
 * pointer. */
#define NVML_SUCCESS 0
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_MEMORY_ERROR_TYPE_UNCORRECTED 1
#define NVML_VOLATILE_ECC 0
#define NVML_TEMPERATURE_GPU 0
#define NVML_FEATURE_ENABLED 1
#define NVML_THROTTLE_SW_THERMAL 0x20ULL
#define NVML_THROTTLE_HW_SLOWDOWN 0x08ULL
#define NVML_THROTTLE_HW_THERMAL 0x40ULL
#define NVML_THROTTLE_HW_POWER_BRAKE 0x80ULL
#define GPU_THROTTLE_BAD                                                       \
  (NVML_THROTTLE_SW_THERMAL | NVML_THROTTLE_HW_SLOWDOWN |                      \
   NVML_THROTTLE_HW_THERMAL | NVML_THROTTLE_HW_POWER_BRAKE)
#define GPU_MAX_PROCS 256

typedef int nvml_return;   /* nvmlReturn_t */
typedef void *nvml_device; /* nvmlDevice_t */

struct nvml_process_info { /* nvmlProcessInfo_t (v2 and v3 calls) */
  unsigned int pid;
  unsigned long long used_gpu_memory;
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};

struct nvml_utilization { /* nvmlUtilization_t */
  unsigned int gpu;
  unsigned int memory;
};

struct nvml_memory { /* nvmlMemory_t */
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct gpu_nvml {
  void *lib;
  nvml_return (*init)(void);
  nvml_return (*shutdown)(void);
  const char *(*error_string)(nvml_return);
  nvml_return (*get_count)(unsigned int *);
  nvml_return (*get_handle)(unsigned int, nvml_device *);
  nvml_return (*get_uuid)(nvml_device, char *, unsigned int);
  nvml_return (*get_ecc)(nvml_device, int, int, unsigned long long *);
  nvml_return (*get_pending_retired)(nvml_device, int *);
  nvml_return (*get_procs)(nvml_device, unsigned int *,
                           struct nvml_process_info *);
  nvml_return (*get_temperature)(nvml_device, int, unsigned int *);
  nvml_return (*get_throttle)(nvml_device, unsigned long long *);
  nvml_return (*get_utilization)(nvml_device, struct nvml_utilization *);
  nvml_return (*get_memory)(nvml_device, struct nvml_memory *);
};

const char *gpu_reason_name(enum gpu_reason reason)
{
  switch (reason) {
  case GPU_OK:
    return "ok";
  case GPU_NVML_UNAVAILABLE:
    return "nvml_unavailable";
  case GPU_MISSING:
    return "missing_gpu";
  case GPU_ECC:
    return "ecc";
  case GPU_FOREIGN_PROCESS:
    return "foreign_process";
  case GPU_TEMPERATURE:
    return "temperature";
  case GPU_CLOCKS:
    return "clocks";
  }
  return "unknown";
}

static const char *nvml_err(const struct gpu_nvml *n, nvml_return rc)
{
  const char *s = n->error_string != NULL ? n->error_string(rc) : NULL;

  return s != NULL ? s : "NVML error";
}

/* dlsym returns void *; POSIX guarantees it converts to a function
 * pointer. */
#define NVML_SYM(n, field, name)                                               \
  do {                                                                         \
    void *sym_ = dlsym((n)->lib, name);                                        \
    memcpy(&(n)->field, &sym_, sizeof(sym_));                                  \
  } while (0)

int gpu_nvml_open(const char *path, struct gpu_nvml **nvml, char *err,
                  size_t size)
{
  struct gpu_nvml *n;
  const char *dlerr;
  nvml_return rc;

  *nvml = NULL;
  n = calloc(1, sizeof(*n));
  if (n == NULL) {
    snprintf(err, size, "out of memory");
    return -ENOMEM;
  }
  n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (n->lib == NULL) {
    dlerr = dlerror();
    snprintf(err, size, "cannot load %s: %s", path,
             dlerr != NULL ? dlerr : "unknown error");
    free(n);
    return -ENOENT;
  }
  NVML_SYM(n, init, "nvmlInit_v2");
  NVML_SYM(n, shutdown, "nvmlShutdown");
  NVML_SYM(n, error_string, "nvmlErrorString");
  NVML_SYM(n, get_count, "nvmlDeviceGetCount_v2");
  NVML_SYM(n, get_handle, "nvmlDeviceGetHandleByIndex_v2");
  NVML_SYM(n, get_uuid, "nvmlDeviceGetUUID");
  NVML_SYM(n, get_ecc, "nvmlDeviceGetTotalEccErrors");
  NVML_SYM(n, get_pending_retired, "nvmlDeviceGetRetiredPagesPendingStatus");
  NVML_SYM(n, get_procs, "nvmlDeviceGetComputeRunningProcesses_v3");
  if (n->get_procs == NULL)
    NVML_SYM(n, get_procs, "nvmlDeviceGetComputeRunningProcesses_v2");
  NVML_SYM(n, get_temperature, "nvmlDeviceGetTemperature");
  NVML_SYM(n, get_throttle, "nvmlDeviceGetCurrentClocksThrottleReasons");
  NVML_SYM(n, get_utilization, "nvmlDeviceGetUtilizationRates");
  NVML_SYM(n, get_memory, "nvmlDeviceGetMemoryInfo");
  if (n->init == NULL || n->shutdown == NULL || n->get_count == NULL ||
      n->get_handle == NULL || n->get_uuid == NULL) {
    snprintf(err, size, "%s lacks the NVML entry points", path);
    dlclose(n->lib);
    free(n);
    return -ENOENT;
  }
  rc = n->init();
  if (rc != NVML_SUCCESS) {
    snprintf(err, size, "nvmlInit failed: %s", nvml_err(n, rc));
    dlclose(n->lib);
    free(n);
    return -EIO;
  }
  *nvml = n;
  return 0;
}

void gpu_nvml_close(struct gpu_nvml *nvml)
{
  if (nvml == NULL)
    return;
  (void)nvml->shutdown();
  dlclose(nvml->lib);
  free(nvml);
}

int gpu_nvml_count(struct gpu_nvml *nvml, unsigned *count)
{
  unsigned int c = 0;

  if (nvml->get_count(&c) != NVML_SUCCESS)
    return -EIO;
  *count = c;
  return 0;
}

static int nvml_handle(struct gpu_nvml *nvml, int index, nvml_device *dev)
{
  if (index < 0 || nvml->get_handle((unsigned)index, dev) != NVML_SUCCESS)
    return -EIO;
  return 0;
}

int gpu_nvml_uuid(struct gpu_nvml *nvml, int index, char *uuid, size_t size)
{
  nvml_device dev;

  if (nvml_handle(nvml, index, &dev) < 0 ||
      nvml->get_uuid(dev, uuid, (unsigned)size) != NVML_SUCCESS) {
    snprintf(uuid, size, "unknown");
    return -EIO;
  }
  uuid[size - 1] = '\0';
  return 0;
}

int gpu_nvml_usage(struct gpu_nvml *nvml, int index,
                   unsigned long long *memory_used, unsigned *utilization)
{
  struct nvml_utilization util;
  struct nvml_memory mem;
  nvml_device dev;

  if (nvml->get_utilization == NULL || nvml->get_memory == NULL ||
      nvml_handle(nvml, index, &dev) < 0)
    return -EIO;
  if (nvml->get_memory(dev, &mem) != NVML_SUCCESS ||
      nvml->get_utilization(dev, &util) != NVML_SUCCESS)
    return -EIO;
  *memory_used = mem.used;
  *utilization = util.gpu;
  return 0;
}

/* Records a failing GPU and appends a sentence to the message. */
static void health_fail(struct gpu_health *h, enum gpu_reason reason, int index,
                        const char *uuid, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void health_fail(struct gpu_health *h, enum gpu_reason reason, int index,
                        const char *uuid, const char *fmt, ...)
{
  size_t len = strlen(h->message);
  va_list ap;

  if (h->ok) {
    h->ok = 0;
    h->reason = reason;
  }
  if (index >= 0 && h->nfailed < HCFG_MAX_GPUS &&
      (h->nfailed == 0 || h->failed[h->nfailed - 1].index != index)) {
    struct gpu_failure *f = &h->failed[h->nfailed++];

    f->index = index;
    f->reason = reason;
    snprintf(f->uuid, sizeof(f->uuid), "%s", uuid != NULL ? uuid : "");
  }
  if (len > 0 && len + 2 < sizeof(h->message)) {
    memcpy(h->message + len, "; ", 3);
    len += 2;
  }
  va_start(ap, fmt);
  vsnprintf(h->message + len, sizeof(h->message) - len, fmt, ap);
  va_end(ap);
}

static void check_ecc(struct gpu_nvml *n, nvml_device dev, int index,
                      const char *uuid, struct gpu_health *h)
{
  unsigned long long count = 0;
  int pending = 0;
  nvml_return rc;

  /* NOT_SUPPORTED: a GPU without ECC (or ECC off) has nothing to count. */
  if (n->get_ecc != NULL) {
    rc = n->get_ecc(dev, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC,
                    &count);
    if (rc == NVML_SUCCESS && count > 0)
      health_fail(h, GPU_ECC, index, uuid,
                  "GPU %d (%s) has %llu uncorrectable ECC errors", index, uuid,
                  count);
  }
  if (n->get_pending_retired != NULL) {
    rc = n->get_pending_retired(dev, &pending);
    if (rc == NVML_SUCCESS && pending == NVML_FEATURE_ENABLED)
      health_fail(h, GPU_ECC, index, uuid,
                  "GPU %d (%s) has retired pages pending a reset", index, uuid);
  }
}

static void check_procs(struct gpu_nvml *n, nvml_device dev, int index,
                        const char *uuid, pid_t root, struct gpu_health *h)
{
  struct nvml_process_info procs[GPU_MAX_PROCS];
  unsigned int count = GPU_MAX_PROCS, i;
  nvml_return rc;

  if (n->get_procs == NULL)
    return;
  rc = n->get_procs(dev, &count, procs);
  if (rc == NVML_ERROR_INSUFFICIENT_SIZE) {
    health_fail(h, GPU_FOREIGN_PROCESS, index, uuid,
                "GPU %d (%s) runs more than %d processes", index, uuid,
                GPU_MAX_PROCS);
    return;
  }
  if (rc != NVML_SUCCESS)
    return;
  for (i = 0; i < count && i < GPU_MAX_PROCS; i++) {
    if (procs_in_tree((pid_t)procs[i].pid, root))
      continue;
    health_fail(h, GPU_FOREIGN_PROCESS, index, uuid,
                "GPU %d (%s) is in use by process %u, which is not this "
                "runner's (%llu bytes of GPU memory)",
                index, uuid, procs[i].pid, procs[i].used_gpu_memory);
    return;
  }
}

static void check_thermal(struct gpu_nvml *n, nvml_device dev, int index,
                          const char *uuid, unsigned max_temp,
                          struct gpu_health *h)
{
  unsigned long long reasons = 0;
  unsigned int temp = 0;

  if (n->get_temperature != NULL &&
      n->get_temperature(dev, NVML_TEMPERATURE_GPU, &temp) == NVML_SUCCESS &&
      temp >= max_temp)
    health_fail(h, GPU_TEMPERATURE, index, uuid,
                "GPU %d (%s) is at %u C, the limit is %u C", index, uuid, temp,
                max_temp);
  if (n->get_throttle != NULL &&
      n->get_throttle(dev, &reasons) == NVML_SUCCESS &&
      (reasons & GPU_THROTTLE_BAD) != 0)
    health_fail(h, GPU_CLOCKS, index, uuid,
                "GPU %d (%s) clocks are throttled (reasons 0x%llx:%s%s%s%s)",
                index, uuid, reasons & GPU_THROTTLE_BAD,
                (reasons & NVML_THROTTLE_HW_SLOWDOWN) ? " hw_slowdown" : "",
                (reasons & NVML_THROTTLE_HW_THERMAL) ? " hw_thermal" : "",
                (reasons & NVML_THROTTLE_SW_THERMAL) ? " sw_thermal" : "",
                (reasons & NVML_THROTTLE_HW_POWER_BRAKE) ? " power_brake" : "");
}

/* The indices to check: the runner's own GPUs, else every GPU NVML sees
 * (a container sees only its own). Flags listed GPUs NVML lacks. */
static size_t health_indices(const struct hook_config *cfg, unsigned count,
                             int *out, struct gpu_health *h)
{
  size_t n = 0, i;

  if (cfg->ngpus == 0) {
    for (i = 0; i < count && i < HCFG_MAX_GPUS; i++)
      out[n++] = (int)i;
    if (cfg->expected_gpus > 0 && count != cfg->expected_gpus)
      health_fail(h, GPU_MISSING, -1, NULL,
                  "%u GPUs are visible, the pool promised %u", count,
                  cfg->expected_gpus);
    return n;
  }
  if (cfg->expected_gpus > 0 && cfg->ngpus != cfg->expected_gpus)
    health_fail(h, GPU_MISSING, -1, NULL,
                "the runner was given %zu GPUs, the pool promised %u",
                cfg->ngpus, cfg->expected_gpus);
  for (i = 0; i < cfg->ngpus; i++) {
    if (cfg->gpus[i] >= 0 && (unsigned)cfg->gpus[i] < count)
      out[n++] = cfg->gpus[i];
    else
      health_fail(h, GPU_MISSING, cfg->gpus[i], "",
                  "GPU %d is missing (%u GPUs visible)", cfg->gpus[i], count);
  }
  return n;
}

int gpu_check_health(const struct hook_config *cfg, pid_t root,
                     struct gpu_health *h)
{
  struct gpu_nvml *n = NULL;
  int indices[HCFG_MAX_GPUS];
  char err[512], uuid[GPU_UUID_MAX];
  unsigned count = 0;
  size_t nidx, i;
  int rc;

  memset(h, 0, sizeof(*h));
  h->ok = 1;
  h->reason = GPU_OK;
  if (!hcfg_gpu_runner(cfg))
    return 0; /* a CPU runner: NVML, present or not, is not our business */
  h->checked = 1;
  rc = gpu_nvml_open(cfg->nvml_lib, &n, err, sizeof(err));
  if (rc < 0) {
    health_fail(h, GPU_NVML_UNAVAILABLE, -1, NULL,
                "this runner expects GPUs but NVML is unavailable (%s)", err);
    return 0;
  }
  if (gpu_nvml_count(n, &count) < 0) {
    health_fail(h, GPU_NVML_UNAVAILABLE, -1, NULL,
                "NVML cannot count the GPUs");
    goto out;
  }
  nidx = health_indices(cfg, count, indices, h);
  for (i = 0; i < nidx; i++) {
    nvml_device dev;

    if (nvml_handle(n, indices[i], &dev) < 0) {
      health_fail(h, GPU_MISSING, indices[i], "",
                  "GPU %d cannot be opened through NVML", indices[i]);
      continue;
    }
    (void)gpu_nvml_uuid(n, indices[i], uuid, sizeof(uuid));
    check_ecc(n, dev, indices[i], uuid, h);
    check_procs(n, dev, indices[i], uuid, root, h);
    check_thermal(n, dev, indices[i], uuid, cfg->max_temp_c, h);
  }
out:
  gpu_nvml_close(n);
  return 0;
}
