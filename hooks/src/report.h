#ifndef RUNFLEET_HOOK_REPORT_H
#define RUNFLEET_HOOK_REPORT_H

#include <jansson.h>
#include <stdint.h>

#include "git_cache.h"
#include "gpu.h"
#include "hook_config.h"

/* The hooks' reports to runfleetd (docs/HOOKS.md has the contract):
 * JSON bodies built here, POSTed with libcurl. */

#define REPORT_STARTED_PATH "/api/v1/hooks/started"
#define REPORT_COMPLETED_PATH "/api/v1/hooks/completed"

struct report_started {
  const struct gpu_health *health;
  const struct gcache_result *git;
  uint64_t disk_free_bytes;
  int ok;
};

struct report_completed {
  double duration_seconds;
  unsigned long long gpu_samples;
  unsigned long long gpu_peak_memory_bytes;
  double gpu_mean_utilization;
  uint64_t disk_used_bytes;
  int processes_killed;
  const char *status; /* "success", "failure" or "unknown" */
};

/* The body of POST /api/v1/hooks/started; NULL when out of memory. */
json_t *report_started_json(const struct hook_config *cfg,
                            const struct report_started *r);

/* The body of POST /api/v1/hooks/completed; NULL when out of memory. */
json_t *report_completed_json(const struct hook_config *cfg,
                              const struct report_completed *r);

/* POSTs body to cfg->url + path with the runner's bearer token: 5 s per
 * try, 2 retries with backoff, all within timeout_ms. Returns 0, -ENOENT
 * without RUNFLEET_URL, or a negative errno; failures are logged as
 * ::warning:: lines. */
int report_post(const struct hook_config *cfg, const char *path,
                const json_t *body, unsigned timeout_ms);

#endif
