#ifndef RUNFLEET_TEST_SCHED_STUB_H
#define RUNFLEET_TEST_SCHED_STUB_H

/* Scheduler operations that accept everything and do nothing, for tests
 * that need a scheduler but not a backend. */

#include "scheduler.h"

static int stub_fits(void *ctx, const struct cfg_pool *pool)
{
  (void)ctx;
  (void)pool;
  return 1;
}

static int stub_start(void *ctx, struct sched_runner *r)
{
  (void)ctx;
  (void)r;
  return 0;
}

static int stub_retire(void *ctx, struct sched_runner *r)
{
  (void)ctx;
  (void)r;
  return 0;
}

static const struct sched_ops stub_sched_ops = {
    .start = stub_start, .retire = stub_retire, .fits = stub_fits};

#endif
