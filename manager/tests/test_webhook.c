/* Webhook handling: signature before parsing, status codes for bad input
 * with no state change, dedupe by delivery id, hand-off to the scheduler. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scheduler.h"
#include "webhook.h"
#include "webhook_sig.h"
#include "sched_stub.h"

#define SECRET "It's a Secret to Everybody"

struct fixture {
  struct config cfg;
  struct scheduler *s;
  struct webhook *w;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct cfg_pool *p = &f->cfg.pools[0];

  f->cfg.npools = 1;
  p->name = strdup("cpu");
  p->labels[0] = strdup("self-hosted");
  p->labels[1] = strdup("linux");
  p->nlabels = 2;
  p->max_runners = 4;
  p->cpus = 1;
  f->s = sched_new(&f->cfg, &stub_sched_ops, NULL);
  f->w = webhook_new((const unsigned char *)SECRET, strlen(SECRET), NULL);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  webhook_destroy(f->w);
  sched_destroy(f->s);
  free(f->cfg.pools[0].name);
  free(f->cfg.pools[0].labels[0]);
  free(f->cfg.pools[0].labels[1]);
  free(f);
  return 0;
}

static int deliver(struct fixture *f, const char *event, const char *id,
                   const char *body, const char *sig_override)
{
  char sig[80], msg[256];
  struct webhook_delivery d;

  webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                   (const unsigned char *)body, strlen(body), sig, sizeof(sig));
  d.event = event;
  d.id = id;
  d.signature = sig_override != NULL ? sig_override : sig;
  d.body = body;
  d.body_len = strlen(body);
  return webhook_handle(f->w, f->s, &d, 1000, msg, sizeof(msg));
}

#define QUEUED                                                                 \
  "{\"action\":\"queued\",\"workflow_job\":{\"id\":11,\"run_id\":5,"           \
  "\"name\":\"build\",\"labels\":[\"self-hosted\",\"Linux\"],"                 \
  "\"runner_name\":null,\"conclusion\":null},"                                 \
  "\"repository\":{\"full_name\":\"acme/widgets\"}}"

static void test_accepts_signed_job(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(deliver(f, "workflow_job", "d-1", QUEUED, NULL), 200);
  assert_int_equal(sched_njobs(f->s), 1);
  assert_int_equal(sched_job_at(f->s, 0)->status, SCHED_JOB_QUEUED);
  assert_string_equal(sched_job_at(f->s, 0)->repo, "acme/widgets");
}

static void test_bad_signatures_change_nothing(void **state)
{
  struct fixture *f = *state;
  char truncated[80];

  assert_int_equal(deliver(f, "workflow_job", "d-1", QUEUED, ""), 401);
  assert_int_equal(
      deliver(
          f, "workflow_job", "d-1", QUEUED,
          "sha256="
          "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
      401);
  webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                   (const unsigned char *)QUEUED, strlen(QUEUED), truncated,
                   sizeof(truncated));
  truncated[40] = '\0';
  assert_int_equal(deliver(f, "workflow_job", "d-1", QUEUED, truncated), 401);
  assert_int_equal(sched_njobs(f->s), 0);
  /* The same delivery id still counts as new afterwards. */
  assert_int_equal(deliver(f, "workflow_job", "d-1", QUEUED, NULL), 200);
  assert_int_equal(sched_njobs(f->s), 1);
}

static void test_malformed_json_400(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(deliver(f, "workflow_job", "d-2", "{\"action\":", NULL),
                   400);
  assert_int_equal(deliver(f, "workflow_job", "d-3", "[1,2]", NULL), 400);
  assert_int_equal(
      deliver(f, "workflow_job", "d-4",
              "{\"action\":\"queued\",\"workflow_job\":{\"id\":\"x\"}}", NULL),
      400);
  assert_int_equal(deliver(f, "workflow_job", "d-5",
                           "{\"action\":\"queued\",\"workflow_job\":{\"id\":1,"
                           "\"labels\":[1]}}",
                           NULL),
                   400);
  assert_int_equal(sched_njobs(f->s), 0);
}

static void test_ping_and_other_events(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(
      deliver(f, "ping", "p-1", "{\"zen\":\"Keep it simple\"}", NULL), 200);
  assert_int_equal(deliver(f, "push", "p-2", "{\"ref\":\"main\"}", NULL), 200);
  assert_int_equal(deliver(f, "", "p-3", "{}", NULL), 400);
  assert_int_equal(deliver(f, "push", NULL, "{}", NULL), 400);
  assert_int_equal(sched_njobs(f->s), 0);
}

static void test_duplicates_ignored_bounded(void **state)
{
  struct fixture *f = *state;
  char id[32];
  int i;

  assert_int_equal(deliver(f, "workflow_job", "dup", QUEUED, NULL), 200);
  /* Same delivery again (a redelivery) does nothing more; the job is
   * completed meanwhile, and the duplicate queued must not revive it. */
  assert_int_equal(
      deliver(f, "workflow_job", "done",
              "{\"action\":\"completed\",\"workflow_job\":{\"id\":11,"
              "\"labels\":[\"linux\"],\"conclusion\":\"cancelled\"}}",
              NULL),
      200);
  assert_int_equal(deliver(f, "workflow_job", "dup", QUEUED, NULL), 200);
  assert_int_equal(sched_job_at(f->s, 0)->status, SCHED_JOB_COMPLETED);
  /* Past WEBHOOK_DEDUPE_SIZE newer ids, the oldest is forgotten, and every
   * recent one is still known. */
  for (i = 0; i < WEBHOOK_DEDUPE_SIZE + 10; i++) {
    snprintf(id, sizeof(id), "ping-%d", i);
    assert_int_equal(deliver(f, "ping", id, "{}", NULL), 200);
  }
  for (i = 11; i < WEBHOOK_DEDUPE_SIZE + 10; i += 97) {
    char msg[64];
    struct webhook_delivery d = {"ping", NULL, NULL, "{}", 2};
    char sig[80];
    snprintf(id, sizeof(id), "ping-%d", i);
    webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                     (const unsigned char *)"{}", 2, sig, sizeof(sig));
    d.id = id;
    d.signature = sig;
    webhook_handle(f->w, f->s, &d, 1, msg, sizeof(msg));
    assert_string_equal(msg, "duplicate delivery");
  }
}

/* Delivers a signed ping; 1 when it was taken as new, 0 as a duplicate. */
static int ping_is_new(struct fixture *f, const char *id)
{
  char sig[80], msg[64];
  struct webhook_delivery d = {"ping", NULL, NULL, "{}", 2};

  webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                   (const unsigned char *)"{}", 2, sig, sizeof(sig));
  d.id = id;
  d.signature = sig;
  assert_int_equal(webhook_handle(f->w, f->s, &d, 1, msg, sizeof(msg)), 200);
  if (strcmp(msg, "duplicate delivery") == 0)
    return 0;
  assert_string_equal(msg, "pong");
  return 1;
}

/* cmocka has no timeout: a dedupe index that never frees its slots makes
 * webhook_handle spin forever once it is full, and this turns that into a
 * failure. Leaving through fail_msg is what cmocka does for its own
 * signals; SA_NODEFER keeps SIGALRM unblocked after the longjmp. */
static void dedupe_alarm_cb(int sig)
{
  (void)sig;
  fail_msg("webhook_handle hung: the dedupe index filled up");
}

static void test_dedupe_forgets_evicted_ids(void **state)
{
  struct fixture *f = *state;
  struct sigaction sa, old;
  const int total = 2 * WEBHOOK_DEDUPE_SIZE + WEBHOOK_DEDUPE_SIZE / 2;
  char id[32];
  int i;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = dedupe_alarm_cb;
  sa.sa_flags = SA_NODEFER | SA_RESETHAND;
  assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
  alarm(10);
  /* More distinct ids than the index has slots: only evicted ids leaving
   * it make room for new ones. */
  for (i = 0; i < total; i++) {
    snprintf(id, sizeof(id), "ev-%d", i);
    assert_int_equal(ping_is_new(f, id), 1);
  }
  /* Every id of the last WEBHOOK_DEDUPE_SIZE is still known, whatever
   * the evictions before it moved in the probe runs. */
  for (i = total - WEBHOOK_DEDUPE_SIZE; i < total; i++) {
    snprintf(id, sizeof(id), "ev-%d", i);
    assert_int_equal(ping_is_new(f, id), 0);
  }
  /* Evicted ids, from the first round of the ring to the one evicted
   * last, count as new again, and then as duplicates. */
  for (i = 0; i < total - WEBHOOK_DEDUPE_SIZE; i += 1021) {
    snprintf(id, sizeof(id), "ev-%d", i);
    assert_int_equal(ping_is_new(f, id), 1);
    assert_int_equal(ping_is_new(f, id), 0);
  }
  snprintf(id, sizeof(id), "ev-%d", total - WEBHOOK_DEDUPE_SIZE - 1);
  assert_int_equal(ping_is_new(f, id), 1);
  alarm(0);
  assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_accepts_signed_job, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_signatures_change_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_malformed_json_400, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ping_and_other_events, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_duplicates_ignored_bounded, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_dedupe_forgets_evicted_ids, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
