/* hook_handle on arbitrary reports, against a fixture like
 * manager/tests/test_hook_report.c's: one gpu-2 pool, a host with four
 * GPUs and a running runner holding GPUs 2 and 3. The first byte steers:
 * bit 0 picks "completed" over "started", bit 1 sends a wrong token
 * (bit 2 none at all), so most inputs pass the token check and reach the
 * JSON. A "@R@" in the body becomes the fixture's runner name, which the
 * fuzzer could not guess. The fixture is rebuilt for each input: a report
 * that takes GPUs out of capacity must not change what the next input
 * meets. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hook_report.h"
#include "sched_stub.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Refusals log a warning each: at thousands of inputs a second, that
 * would be most of the time spent. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_setup(LOG_ERROR, 0);
  return 0;
}

static const int host_gpus[] = {0, 1, 2, 3};

struct fixture {
  struct config cfg;
  struct scheduler *s;
  struct metrics *m;
  struct hook_reports *h;
  struct capacity *cap;
  char runner[SCHED_NAME_MAX];
  char auth[8 + HOOK_TOKEN_SIZE];
};

static void fixture_init(struct fixture *f)
{
  static char pool_name[] = "gpu-2", l0[] = "self-hosted", l1[] = "gpu";
  struct cfg_pool *p = &f->cfg.pools[0];
  char *labels[] = {l1};
  struct sched_job_event ev = {.job_id = 1,
                               .repo = "acme/a",
                               .name = "t",
                               .labels = labels,
                               .nlabels = 1};
  struct cap_node_desc d = {.source = "local",
                            .name = "host",
                            .gpus = host_gpus,
                            .ngpus = 4,
                            .cpu_milli = 4000};
  struct cap_placement where = {.node = "host", .gpus = {2, 3}, .ngpus = 2};
  int gpus[] = {2, 3};
  char token[HOOK_TOKEN_SIZE];

  memset(f, 0, sizeof(*f));
  f->cfg.npools = 1;
  p->name = pool_name;
  p->labels[0] = l0;
  p->labels[1] = l1;
  p->nlabels = 2;
  p->max_runners = 2;
  p->gpus = 2;
  p->cpus = 1;
  f->s = sched_new(&f->cfg, &stub_sched_ops, NULL);
  f->m = metrics_new();
  f->cap = capacity_new();
  if (f->s == NULL || f->m == NULL || f->cap == NULL)
    abort();
  f->h = hook_reports_new(f->m);
  if (f->h == NULL || capacity_node_set(f->cap, &d) != 0)
    abort();
  sched_job_queued(f->s, &ev, 1);
  sched_reconcile(f->s, 2);
  snprintf(f->runner, sizeof(f->runner), "%s", sched_runner_at(f->s, 0)->name);
  if (capacity_hold_at(f->cap, f->runner, CAP_HOLDER_RUNNER, &where) != 0)
    abort();
  sched_runner_running(f->s, f->runner, 9, gpus, 2, 3);
  if (hook_token(f->h, f->runner, token, sizeof(token)) != 0)
    abort();
  snprintf(f->auth, sizeof(f->auth), "Bearer %s", token);
}

static void fixture_free(struct fixture *f)
{
  hook_reports_destroy(f->h);
  capacity_destroy(f->cap);
  metrics_destroy(f->m);
  sched_destroy(f->s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct fixture f;
  const char *auth;
  char msg[128];
  char *body;
  size_t len = size - 1, rlen, i;
  int status;

  if (size == 0)
    return 0;
  fixture_init(&f);
  rlen = strlen(f.runner);
  body = malloc(len + rlen + 1);
  if (body == NULL)
    abort();
  memcpy(body, data + 1, len);
  for (i = 0; i + 3 <= len; i++)
    if (memcmp(body + i, "@R@", 3) == 0) {
      memmove(body + i + rlen, body + i + 3, len - i - 3);
      memcpy(body + i, f.runner, rlen);
      len = len - 3 + rlen;
      break;
    }
  if (data[0] & 4)
    auth = NULL;
  else if (data[0] & 2)
    auth = "Bearer 0000";
  else
    auth = f.auth;
  status = hook_handle(f.h, f.s, f.cap, (data[0] & 1) ? "completed" : "started",
                       auth, body, len, msg, sizeof(msg));
  if (status != 204 && status != 400 && status != 401 && status != 404)
    abort();
  free(body);
  fixture_free(&f);
  return 0;
}
