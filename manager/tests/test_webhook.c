/* Webhook handling: signature before parsing, status codes for bad input
 * with no state change, parsing into struct event; deliveries go on to
 * intake as route_webhook sends them (dedupe is tested in test_intake). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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
  f->m = metrics_new();
  f->w = webhook_new((const unsigned char *)SECRET, strlen(SECRET), f->m);
  f->in = intake_new(f->s, f->m);
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

/* Parses a signed delivery into ev; returns webhook_parse's status. */
static int parse(struct fixture *f, const char *event, const char *id,
                 const char *body, struct event *ev, char *msg, size_t msg_size)
{
  struct webhook_delivery d;
  char sig[80];

  webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                   (const unsigned char *)body, strlen(body), sig, sizeof(sig));
  d.event = event;
  d.id = id;
  d.signature = sig;
  d.body = body;
  d.body_len = strlen(body);
  return webhook_parse(f->w, &d, ev, msg, msg_size);
}

static int is_empty(const struct event *ev)
{
  static const struct event zero;

  return memcmp(ev, &zero, sizeof(zero)) == 0;
}

static void test_parse_fills_the_event(void **state)
{
  struct fixture *f = *state;
  struct event ev;
  char msg[256];

  assert_int_equal(
      parse(f, "workflow_job", "d-1", QUEUED, &ev, msg, sizeof(msg)), 0);
  assert_int_equal(ev.type, EVENT_JOB_QUEUED);
  assert_string_equal(event_type_name(ev.type), "queued");
  assert_true(event_is_job(ev.type));
  assert_string_equal(ev.delivery, "d-1");
  assert_string_equal(ev.source, "workflow_job");
  assert_string_equal(ev.action, "queued");
  assert_int_equal(ev.job_id, 11);
  assert_int_equal(ev.run_id, 5);
  assert_string_equal(ev.job_name, "build");
  assert_string_equal(ev.repo, "acme/widgets");
  assert_int_equal(ev.nlabels, 2);
  assert_string_equal(ev.labels[0], "self-hosted");
  assert_string_equal(ev.labels[1], "Linux");
  assert_null(ev.runner_name);
  assert_null(ev.conclusion);
  assert_int_equal(ev.too_many_labels, 0);
  event_free(&ev);
  assert_true(is_empty(&ev));

  assert_int_equal(
      parse(f, "workflow_job", "d-2",
            "{\"action\":\"completed\",\"workflow_job\":{\"id\":11,"
            "\"labels\":[],\"runner_name\":\"rf-cpu-1\","
            "\"conclusion\":\"success\"}}",
            &ev, msg, sizeof(msg)),
      0);
  assert_int_equal(ev.type, EVENT_JOB_COMPLETED);
  assert_string_equal(ev.runner_name, "rf-cpu-1");
  assert_string_equal(ev.conclusion, "success");
  assert_null(ev.repo);
  event_free(&ev);
}

static void test_parse_pings_and_ignored(void **state)
{
  struct fixture *f = *state;
  char labels[40 * 8] = "";
  char body[512];
  struct event ev;
  char msg[256];
  int i;

  assert_int_equal(parse(f, "ping", "p-1", "{}", &ev, msg, sizeof(msg)), 0);
  assert_int_equal(ev.type, EVENT_PING);
  assert_string_equal(ev.source, "ping");
  event_free(&ev);
  assert_int_equal(
      parse(f, "push", "p-2", "{\"ref\":\"main\"}", &ev, msg, sizeof(msg)), 0);
  assert_int_equal(ev.type, EVENT_IGNORED);
  assert_string_equal(ev.note, "event push ignored");
  /* Events no App for runners is sent share one label. */
  assert_string_equal(ev.source, "other");
  event_free(&ev);
  assert_int_equal(parse(f, "workflow_job", "p-3",
                         "{\"action\":\"dreaming\",\"workflow_job\":{\"id\":1,"
                         "\"labels\":[]}}",
                         &ev, msg, sizeof(msg)),
                   0);
  assert_int_equal(ev.type, EVENT_IGNORED);
  assert_string_equal(ev.note, "action dreaming ignored");
  assert_string_equal(ev.action, "dreaming");
  event_free(&ev);
  /* More labels than a pool can have: kept up to the limit, marked. */
  for (i = 0; i <= EVENT_MAX_LABELS; i++)
    snprintf(labels + strlen(labels), sizeof(labels) - strlen(labels),
             "%s\"l%d\"", i ? "," : "", i);
  snprintf(body, sizeof(body),
           "{\"action\":\"queued\",\"workflow_job\":{\"id\":3,"
           "\"labels\":[%s]}}",
           labels);
  assert_int_equal(parse(f, "workflow_job", "p-4", body, &ev, msg, sizeof(msg)),
                   0);
  assert_int_equal(ev.too_many_labels, 1);
  assert_int_equal(ev.nlabels, EVENT_MAX_LABELS);
  event_free(&ev);
}

static void test_parse_changes_nothing(void **state)
{
  struct fixture *f = *state;
  struct webhook_delivery d = {"workflow_job", "d-9", "", QUEUED,
                               strlen(QUEUED)};
  struct event ev;
  char msg[256];

  /* No dedupe here: the same delivery parses every time. */
  assert_int_equal(
      parse(f, "workflow_job", "d-1", QUEUED, &ev, msg, sizeof(msg)), 0);
  event_free(&ev);
  assert_int_equal(
      parse(f, "workflow_job", "d-1", QUEUED, &ev, msg, sizeof(msg)), 0);
  event_free(&ev);
  assert_int_equal(sched_njobs(f->s), 0);
  /* What is refused leaves the event empty and says why. */
  assert_int_equal(webhook_parse(f->w, &d, &ev, msg, sizeof(msg)), 401);
  assert_true(is_empty(&ev));
  assert_string_equal(msg, "signature missing or wrong");
  assert_int_equal(
      parse(f, "workflow_job", "d-2", "{\"action\":", &ev, msg, sizeof(msg)),
      400);
  assert_true(is_empty(&ev));
  assert_non_null(strstr(msg, "malformed JSON at line 1"));
  assert_int_equal(parse(f, "workflow_job", "d-3",
                         "{\"action\":\"queued\",\"workflow_job\":{"
                         "\"id\":1,\"labels\":[\"a\",2]}}",
                         &ev, msg, sizeof(msg)),
                   400);
  assert_true(is_empty(&ev));
  assert_string_equal(msg, "workflow_job.labels[1] must be a string");
  assert_int_equal(parse(f, "", "d-4", "{}", &ev, msg, sizeof(msg)), 400);
  assert_true(is_empty(&ev));
  /* Each refusal is counted by what it was. */
  assert_int_equal(
      metrics_value(f->m, "runfleet_webhooks_total",
                    "event=\"workflow_job\",result=\"bad_signature\""),
      1);
  assert_int_equal(metrics_value(f->m, "runfleet_webhooks_total",
                                 "event=\"workflow_job\",result=\"bad_json\""),
                   1);
  assert_int_equal(
      metrics_value(f->m, "runfleet_webhooks_total",
                    "event=\"workflow_job\",result=\"bad_payload\""),
      1);
  assert_int_equal(metrics_value(f->m, "runfleet_webhooks_total",
                                 "event=\"other\",result=\"bad_request\""),
                   1);
  assert_int_equal(sched_njobs(f->s), 0);
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
      cmocka_unit_test_setup_teardown(test_parse_fills_the_event, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_parse_pings_and_ignored, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_parse_changes_nothing, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
