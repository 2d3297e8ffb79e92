/* A stand-in for libnvidia-ml.so.1, for the hook's tests: the entry points
 * runfleet-hook uses, with the ABI of nvml.h, behaving as FAKE_NVML_*
 * variables say (read at each call, so a test can change them):
 *
 *   FAKE_NVML_INIT=fail          nvmlInit_v2 fails (driver not loaded)
 *   FAKE_NVML_COUNT=N            N GPUs (default 1)
 *   FAKE_NVML_ECC=k:n,...        GPU k has n uncorrectable volatile errors
 *   FAKE_NVML_PENDING=k,...      GPU k has retired pages pending
 *   FAKE_NVML_PROCS=k:pid,...    GPU k runs a compute process pid
 *   FAKE_NVML_TEMP=k:c,...       GPU k is at c degrees (default 40)
 *   FAKE_NVML_THROTTLE=k:mask    GPU k's clock throttle reasons
 *   FAKE_NVML_UTIL=k:a/b/c,...   GPU k's utilisation, one value per call
 *   FAKE_NVML_MEM=k:a/b/c,...    GPU k's memory in use, one value per call
 *
 * Values may be decimal or 0x hex; the last value of a sequence repeats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_MAX_GPUS 64

typedef void *nvml_device;

struct fake_process_info {
  unsigned int pid;
  unsigned long long used_gpu_memory;
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};

struct fake_utilization {
  unsigned int gpu;
  unsigned int memory;
};

struct fake_memory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

int nvmlInit_v2(void);
int nvmlShutdown(void);
const char *nvmlErrorString(int rc);
int nvmlDeviceGetCount_v2(unsigned int *count);
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvml_device *dev);
int nvmlDeviceGetUUID(nvml_device dev, char *uuid, unsigned int len);
int nvmlDeviceGetTotalEccErrors(nvml_device dev, int type, int counter,
                                unsigned long long *count);
int nvmlDeviceGetRetiredPagesPendingStatus(nvml_device dev, int *pending);
int nvmlDeviceGetComputeRunningProcesses_v3(nvml_device dev,
                                            unsigned int *count,
                                            struct fake_process_info *infos);
int nvmlDeviceGetTemperature(nvml_device dev, int sensor, unsigned int *temp);
int nvmlDeviceGetCurrentClocksThrottleReasons(nvml_device dev,
                                              unsigned long long *reasons);
int nvmlDeviceGetUtilizationRates(nvml_device dev,
                                  struct fake_utilization *util);
int nvmlDeviceGetMemoryInfo(nvml_device dev, struct fake_memory *mem);

static int fake_initialized;
static unsigned fake_calls[FAKE_MAX_GPUS][2];

/* Finds "k:v" for GPU k in the variable; the call-th value of a '/'
 * sequence. Returns 1 when found. */
static int fake_lookup(const char *var, unsigned k, unsigned call,
                       unsigned long long *value)
{
  const char *p = getenv(var);

  while (p != NULL && *p != '\0') {
    char *end;
    unsigned long idx = strtoul(p, &end, 0);

    if (idx == k && *end != ':' && (*end == ',' || *end == '\0')) {
      *value = 1; /* a bare index: a flag */
      return 1;
    }
    if (idx == k && *end == ':') {
      const char *v = end + 1;
      unsigned i;

      for (i = 0;; i++) {
        unsigned long long n = strtoull(v, &end, 0);

        if (i == call || *end != '/') {
          *value = n;
          return 1;
        }
        v = end + 1;
      }
    }
    p = strchr(end, ',');
    if (p != NULL)
      p++;
  }
  return 0;
}

static unsigned fake_count(void)
{
  const char *c = getenv("FAKE_NVML_COUNT");

  return c != NULL ? (unsigned)strtoul(c, NULL, 0) : 1u;
}

static int fake_index(nvml_device dev, unsigned *k)
{
  unsigned long v = (unsigned long)dev;

  if (!fake_initialized)
    return 1; /* NVML_ERROR_UNINITIALIZED */
  if (v == 0 || v > fake_count())
    return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *k = (unsigned)(v - 1);
  return 0;
}

int nvmlInit_v2(void)
{
  const char *init = getenv("FAKE_NVML_INIT");

  if (init != NULL && strcmp(init, "fail") == 0)
    return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */
  fake_initialized++;
  memset(fake_calls, 0, sizeof(fake_calls));
  return 0;
}

int nvmlShutdown(void)
{
  if (!fake_initialized)
    return 1;
  fake_initialized--;
  return 0;
}

const char *nvmlErrorString(int rc)
{
  switch (rc) {
  case 0:
    return "Success";
  case 9:
    return "Driver Not Loaded";
  default:
    return "Unknown Error";
  }
}

int nvmlDeviceGetCount_v2(unsigned int *count)
{
  if (!fake_initialized)
    return 1;
  *count = fake_count();
  return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvml_device *dev)
{
  if (!fake_initialized)
    return 1;
  if (index >= fake_count())
    return 2;
  *dev = (nvml_device)(unsigned long)(index + 1);
  return 0;
}

int nvmlDeviceGetUUID(nvml_device dev, char *uuid, unsigned int len)
{
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  if (snprintf(uuid, len, "GPU-fake-%04u-0000-0000-000000000000", k) >=
      (int)len)
    return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
  return 0;
}

int nvmlDeviceGetTotalEccErrors(nvml_device dev, int type, int counter,
                                unsigned long long *count)
{
  unsigned long long v = 0;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  if (type != 1 || counter != 0)
    return 3; /* only uncorrected volatile is faked */
  (void)fake_lookup("FAKE_NVML_ECC", k, 0, &v);
  *count = v;
  return 0;
}

int nvmlDeviceGetRetiredPagesPendingStatus(nvml_device dev, int *pending)
{
  unsigned long long v = 0;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  *pending = fake_lookup("FAKE_NVML_PENDING", k, 0, &v) && v != 0;
  return 0;
}

int nvmlDeviceGetComputeRunningProcesses_v3(nvml_device dev,
                                            unsigned int *count,
                                            struct fake_process_info *infos)
{
  unsigned long long pid;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  if (!fake_lookup("FAKE_NVML_PROCS", k, 0, &pid)) {
    *count = 0;
    return 0;
  }
  if (*count < 1) {
    *count = 1;
    return 7;
  }
  memset(&infos[0], 0, sizeof(infos[0]));
  infos[0].pid = (unsigned)pid;
  infos[0].used_gpu_memory = 1ULL << 30;
  *count = 1;
  return 0;
}

int nvmlDeviceGetTemperature(nvml_device dev, int sensor, unsigned int *temp)
{
  unsigned long long v = 40;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  if (sensor != 0)
    return 2;
  (void)fake_lookup("FAKE_NVML_TEMP", k, 0, &v);
  *temp = (unsigned)v;
  return 0;
}

int nvmlDeviceGetCurrentClocksThrottleReasons(nvml_device dev,
                                              unsigned long long *reasons)
{
  unsigned long long v = 0;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  (void)fake_lookup("FAKE_NVML_THROTTLE", k, 0, &v);
  *reasons = v;
  return 0;
}

int nvmlDeviceGetUtilizationRates(nvml_device dev,
                                  struct fake_utilization *util)
{
  unsigned long long v = 0;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  (void)fake_lookup("FAKE_NVML_UTIL", k, fake_calls[k % FAKE_MAX_GPUS][0]++,
                    &v);
  util->gpu = (unsigned)v;
  util->memory = 0;
  return 0;
}

int nvmlDeviceGetMemoryInfo(nvml_device dev, struct fake_memory *mem)
{
  unsigned long long v = 0;
  unsigned k;
  int rc = fake_index(dev, &k);

  if (rc != 0)
    return rc;
  (void)fake_lookup("FAKE_NVML_MEM", k, fake_calls[k % FAKE_MAX_GPUS][1]++, &v);
  mem->total = 80ULL << 30;
  mem->used = v;
  mem->free = mem->total > v ? mem->total - v : 0;
  return 0;
}
