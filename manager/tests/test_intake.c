/* intake: dedupe by delivery id in bounded memory, events applied to the
 * scheduler in the order they came, each answered only after it was
 * applied, the commit step between dedupe and apply, and the outcomes
 * counted. Deliveries come through webhook_parse as route_webhook sends
 * them. */
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

#include "intake.h"
#include "metrics.h"
#include "scheduler.h"
#include "webhook.h"
#include "webhook_sig.h"
#include "sched_stub.h"
#include "webhook_deliver.h"

#define SECRET "It's a Secret to Everybody"

struct fixture {
  struct config cfg;
  struct scheduler *s;
  struct webhook *w;
  struct intake *in;
  struct metrics *m;
  char jobs_seen[256]; /* on_job calls: "action:job's status " */
};

static void on_job(void *arg, const char *action, const struct sched_job *job)
{
  static const char *const status[] = {"waiting", "queued", "in_progress",
                                       "completed"};
  struct fixture *f = arg;
  size_t len = strlen(f->jobs_seen);

  snprintf(f->jobs_seen + len, sizeof(f->jobs_seen) - len, "%s:%s ", action,
           job != NULL && (size_t)job->status < 4 ? status[job->status] : "-");
}

/* Job times are wall-clock: a fixed one makes them exact. */
static uint64_t fixed_wall_ms(void *arg)
{
  (void)arg;
  return 1767225600000ull; /* 2026-01-01T00:00:00Z */
}

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
  sched_set_wall_clock(f->s, fixed_wall_ms, NULL);
  f->m = metrics_new();
  f->w = webhook_new((const unsigned char *)SECRET, strlen(SECRET), f->m);
  f->in = intake_new(f->s, f->m);
  intake_on_job(f->in, on_job, f);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  intake_destroy(f->in);
  webhook_destroy(f->w);
  sched_destroy(f->s);
  metrics_destroy(f->m);
  free(f->cfg.pools[0].name);
  free(f->cfg.pools[0].labels[0]);
  free(f->cfg.pools[0].labels[1]);
  free(f);
  return 0;
}

static int deliver(struct fixture *f, const char *event, const char *id,
                   const char *body, const char *sig_override)
{
  char msg[256];

  return deliver_signed(f->w, f->in, SECRET, event, id, body, sig_override, msg,
                        sizeof(msg));
}

/* Parses a signed delivery and submits it with done_cb(arg). */
static void submit_with(struct fixture *f, const char *event, const char *id,
                        const char *body, intake_done_cb done_cb, void *arg)
{
  struct webhook_delivery d;
  struct event ev;
  char sig[80], msg[256];

  webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                   (const unsigned char *)body, strlen(body), sig, sizeof(sig));
  d.event = event;
  d.id = id;
  d.signature = sig;
  d.body = body;
  d.body_len = strlen(body);
  assert_int_equal(webhook_parse(f->w, &d, &ev, msg, sizeof(msg)), 0);
  assert_int_equal(intake_submit(f->in, &ev, 1000, done_cb, arg), 0);
  /* intake owns what the event held now. */
  assert_null(ev.action);
  assert_int_equal(ev.nlabels, 0);
}

/* Submits; the answer lands in *a. */
static void submit(struct fixture *f, const char *event, const char *id,
                   const char *body, struct answer *a)
{
  submit_with(f, event, id, body, answer_cb, a);
}

static double webhooks(struct fixture *f, const char *event, const char *result)
{
  char labels[128];

  snprintf(labels, sizeof(labels), "event=\"%s\",result=\"%s\"", event, result);
  return metrics_value(f->m, "runfleet_webhooks_total", labels);
}

#define QUEUED                                                                 \
  "{\"action\":\"queued\",\"workflow_job\":{\"id\":11,\"run_id\":5,"           \
  "\"name\":\"build\",\"labels\":[\"self-hosted\",\"Linux\"],"                 \
  "\"runner_name\":null,\"conclusion\":null},"                                 \
  "\"repository\":{\"full_name\":\"acme/widgets\"}}"
#define COMPLETED                                                              \
  "{\"action\":\"completed\",\"workflow_job\":{\"id\":11,"                     \
  "\"labels\":[\"linux\"],\"conclusion\":\"cancelled\"}}"

static void test_duplicates_ignored_bounded(void **state)
{
  struct fixture *f = *state;
  char id[32];
  int i;

  assert_int_equal(deliver(f, "workflow_job", "dup", QUEUED, NULL), 200);
  /* Same delivery again (a redelivery) does nothing more; the job is
   * completed meanwhile, and the duplicate queued must not revive it. */
  assert_int_equal(deliver(f, "workflow_job", "done", COMPLETED, NULL), 200);
  assert_int_equal(deliver(f, "workflow_job", "dup", QUEUED, NULL), 200);
  assert_int_equal(sched_job_at(f->s, 0)->status, SCHED_JOB_COMPLETED);
  /* Past INTAKE_DEDUPE_SIZE newer ids, the oldest is forgotten, and every
   * recent one is still known. */
  for (i = 0; i < INTAKE_DEDUPE_SIZE + 10; i++) {
    snprintf(id, sizeof(id), "ping-%d", i);
    assert_int_equal(deliver(f, "ping", id, "{}", NULL), 200);
  }
  for (i = 11; i < INTAKE_DEDUPE_SIZE + 10; i += 97) {
    char msg[64];

    snprintf(id, sizeof(id), "ping-%d", i);
    deliver_signed(f->w, f->in, SECRET, "ping", id, "{}", NULL, msg,
                   sizeof(msg));
    assert_string_equal(msg, "duplicate delivery");
  }
}

/* Delivers a signed ping; 1 when it was taken as new, 0 as a duplicate. */
static int ping_is_new(struct fixture *f, const char *id)
{
  char msg[64];

  assert_int_equal(deliver_signed(f->w, f->in, SECRET, "ping", id, "{}", NULL,
                                  msg, sizeof(msg)),
                   200);
  if (strcmp(msg, "duplicate delivery") == 0)
    return 0;
  assert_string_equal(msg, "pong");
  return 1;
}

/* cmocka has no timeout: a dedupe index that never frees its slots makes
 * intake_submit spin forever once it is full, and this turns that into a
 * failure. Leaving through fail_msg is what cmocka does for its own
 * signals; SA_NODEFER keeps SIGALRM unblocked after the longjmp. */
static void dedupe_alarm_cb(int sig)
{
  (void)sig;
  fail_msg("intake_submit hung: the dedupe index filled up");
}

static void test_dedupe_forgets_evicted_ids(void **state)
{
  struct fixture *f = *state;
  struct sigaction sa, old;
  const int total = 2 * INTAKE_DEDUPE_SIZE + INTAKE_DEDUPE_SIZE / 2;
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
  /* Every id of the last INTAKE_DEDUPE_SIZE is still known, whatever
   * the evictions before it moved in the probe runs. */
  for (i = total - INTAKE_DEDUPE_SIZE; i < total; i++) {
    snprintf(id, sizeof(id), "ev-%d", i);
    assert_int_equal(ping_is_new(f, id), 0);
  }
  /* Evicted ids, from the first round of the ring to the one evicted
   * last, count as new again, and then as duplicates. */
  for (i = 0; i < total - INTAKE_DEDUPE_SIZE; i += 1021) {
    snprintf(id, sizeof(id), "ev-%d", i);
    assert_int_equal(ping_is_new(f, id), 1);
    assert_int_equal(ping_is_new(f, id), 0);
  }
  snprintf(id, sizeof(id), "ev-%d", total - INTAKE_DEDUPE_SIZE - 1);
  assert_int_equal(ping_is_new(f, id), 1);
  alarm(0);
  assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
}

/* The answer callback of test_answer_after_apply: records what the
 * scheduler held when the answer came. */
struct seen_at_answer {
  struct fixture *f;
  size_t njobs;
  int status;
  char jobs_seen[256];
};

static void seen_cb(void *arg, int status, const char *msg)
{
  struct seen_at_answer *s = arg;

  (void)msg;
  s->njobs = sched_njobs(s->f->s);
  s->status = status;
  snprintf(s->jobs_seen, sizeof(s->jobs_seen), "%s", s->f->jobs_seen);
}

static void test_answer_after_apply(void **state)
{
  struct fixture *f = *state;
  struct seen_at_answer seen = {f, 0, 0, ""};
  struct webhook_delivery d = {"workflow_job", "d-1", NULL, QUEUED,
                               strlen(QUEUED)};
  struct event ev;
  char sig[80], msg[256];

  webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                   (const unsigned char *)QUEUED, strlen(QUEUED), sig,
                   sizeof(sig));
  d.signature = sig;
  assert_int_equal(webhook_parse(f->w, &d, &ev, msg, sizeof(msg)), 0);
  assert_int_equal(intake_submit(f->in, &ev, 1000, seen_cb, &seen), 0);
  /* By the answer, the job was queued and on_job had run. */
  assert_int_equal(seen.status, 200);
  assert_int_equal(seen.njobs, 1);
  assert_string_equal(seen.jobs_seen, "queued:queued ");
  assert_int_equal(sched_job_at(f->s, 0)->queued_ms, 1767225600000ull);
  assert_int_equal(intake_npending(f->in), 0);
}

static void test_commit_step_keeps_order(void **state)
{
  struct fixture *f = *state;
  struct answer a[5];

  memset(a, 0, sizeof(a));
  /* The commit step does not complete: events wait, deduped already,
   * neither applied nor answered. */
  intake_hold_commits(f->in, 1);
  submit(f, "workflow_job", "q", QUEUED, &a[0]);
  submit(f, "workflow_job", "c", COMPLETED, &a[1]);
  submit(f, "workflow_job", "q", QUEUED, &a[2]);
  submit(f, "ping", "p", "{}", &a[3]);
  submit(f, "push", "x", "{}", &a[4]);
  assert_int_equal(intake_npending(f->in), 5);
  assert_int_equal(sched_njobs(f->s), 0);
  assert_int_equal(
      a[0].calls + a[1].calls + a[2].calls + a[3].calls + a[4].calls, 0);
  assert_string_equal(f->jobs_seen, "");
  /* Once committed: applied in the order they came (the job ends up
   * completed, not queued again), each answered once. */
  intake_hold_commits(f->in, 0);
  assert_int_equal(intake_npending(f->in), 0);
  assert_string_equal(f->jobs_seen, "queued:queued completed:completed ");
  assert_int_equal(sched_njobs(f->s), 1);
  assert_int_equal(sched_job_at(f->s, 0)->status, SCHED_JOB_COMPLETED);
  assert_string_equal(a[0].msg, "accepted");
  assert_string_equal(a[1].msg, "accepted");
  /* Redelivered before the original committed: still a duplicate. */
  assert_string_equal(a[2].msg, "duplicate delivery");
  assert_string_equal(a[3].msg, "pong");
  assert_string_equal(a[4].msg, "event push ignored");
  assert_int_equal(a[0].status + a[1].status + a[2].status + a[3].status +
                       a[4].status,
                   5 * 200);
  assert_int_equal(
      a[0].calls + a[1].calls + a[2].calls + a[3].calls + a[4].calls, 5);
}

/* An answer callback that submits another event. */
struct chained {
  struct fixture *f;
  struct answer inner;
  int outer_calls;
  int inner_calls_at_return; /* of the nested intake_submit */
};

static void chained_cb(void *arg, int status, const char *msg)
{
  struct chained *c = arg;

  (void)status;
  (void)msg;
  c->outer_calls++;
  submit(c->f, "ping", "inner", "{}", &c->inner);
  c->inner_calls_at_return = c->inner.calls;
}

static void test_submit_from_an_answer(void **state)
{
  struct fixture *f = *state;
  struct chained c;

  memset(&c, 0, sizeof(c));
  c.f = f;
  submit_with(f, "ping", "outer", "{}", chained_cb, &c);
  /* The nested submit only queued; the run already going answered it,
   * after the outer one, instead of a run inside the callback. */
  assert_int_equal(c.outer_calls, 1);
  assert_int_equal(c.inner_calls_at_return, 0);
  assert_int_equal(c.inner.calls, 1);
  assert_string_equal(c.inner.msg, "pong");
  assert_int_equal(intake_npending(f->in), 0);
}

static void test_unmatched_ignored_and_counted(void **state)
{
  struct fixture *f = *state;
  char labels[40 * 8] = "";
  char body[512];
  char msg[256];
  int i;

  assert_int_equal(deliver_signed(f->w, f->in, SECRET, "workflow_job", "u-1",
                                  "{\"action\":\"queued\",\"workflow_job\":{"
                                  "\"id\":12,\"labels\":[\"gpu-8\"]}}",
                                  NULL, msg, sizeof(msg)),
                   200);
  assert_string_equal(msg, "job 12 matches no pool");
  for (i = 0; i <= EVENT_MAX_LABELS; i++)
    snprintf(labels + strlen(labels), sizeof(labels) - strlen(labels),
             "%s\"l%d\"", i ? "," : "", i);
  /* Too many labels wins over an action runfleetd ignores. */
  snprintf(body, sizeof(body),
           "{\"action\":\"dreaming\",\"workflow_job\":{\"id\":13,"
           "\"labels\":[%s]}}",
           labels);
  assert_int_equal(deliver_signed(f->w, f->in, SECRET, "workflow_job", "u-2",
                                  body, NULL, msg, sizeof(msg)),
                   200);
  assert_string_equal(msg, "job 13 has more labels than any pool");
  assert_int_equal(deliver_signed(f->w, f->in, SECRET, "workflow_job", "u-3",
                                  "{\"action\":\"dreaming\",\"workflow_job\":{"
                                  "\"id\":14,\"labels\":[]}}",
                                  NULL, msg, sizeof(msg)),
                   200);
  assert_string_equal(msg, "action dreaming ignored");
  assert_int_equal(deliver(f, "workflow_job", "u-4", QUEUED, NULL), 200);
  assert_int_equal(deliver(f, "workflow_job", "u-4", QUEUED, NULL), 200);
  assert_int_equal(deliver(f, "ping", "u-5", "{}", NULL), 200);
  assert_int_equal(deliver(f, "installation", "u-6", "{}", NULL), 200);
  assert_int_equal(sched_njobs(f->s), 1);
  assert_string_equal(f->jobs_seen, "queued:queued ");
  assert_int_equal(webhooks(f, "workflow_job", "unmatched"), 2);
  assert_int_equal(webhooks(f, "workflow_job", "ignored"), 1);
  assert_int_equal(webhooks(f, "workflow_job", "accepted"), 1);
  assert_int_equal(webhooks(f, "workflow_job", "duplicate"), 1);
  assert_int_equal(webhooks(f, "ping", "ok"), 1);
  assert_int_equal(webhooks(f, "installation", "ignored"), 1);
}

static void test_destroy_answers_what_waits(void **state)
{
  struct fixture *f = *state;
  struct answer a = {0};

  intake_hold_commits(f->in, 1);
  submit(f, "workflow_job", "w-1", QUEUED, &a);
  assert_int_equal(a.calls, 0);
  intake_destroy(f->in);
  f->in = NULL;
  assert_int_equal(a.calls, 1);
  assert_int_equal(a.status, 503);
  assert_int_equal(sched_njobs(f->s), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_duplicates_ignored_bounded, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_dedupe_forgets_evicted_ids, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_answer_after_apply, setup, teardown),
      cmocka_unit_test_setup_teardown(test_commit_step_keeps_order, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_submit_from_an_answer, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_unmatched_ignored_and_counted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_destroy_answers_what_waits, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
