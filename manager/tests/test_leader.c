/* The leader elector's state machine against a fake API server that keeps
 * one Lease with a resourceVersion (GET, POST, optimistic PUT, 409 on a
 * stale version), on a clock the tests move: acquiring, renewing, the
 * renew-deadline fence, observed-time expiry whatever the holder's clock
 * says, two electors racing, and the release on stop. Requests wait in a
 * queue until the test answers them, so a renewal can be late or lost. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "leader.h"
#include "metrics.h"

#define NS "runfleet-system"
#define NAME "runfleetd"
#define LEASE_PATH "/apis/coordination.k8s.io/v1/namespaces/" NS "/leases"
#define MAX_CALLS 16

/* The API server: the Lease (NULL: none) and the requests not answered. */
struct apiserver {
  json_t *lease;
  long version;
  struct call {
    char method[8];
    char path[256];
    json_t *body;
    kube_done_cb cb;
    void *arg;
  } calls[MAX_CALLS];
  size_t ncalls;
};

/* One replica: its elector and what it was told. */
struct replica {
  uv_loop_t loop; /* its own: closing one runs no timer of the other */
  struct leader *l;
  struct metrics *m;
  int leading;
  unsigned changes;
};

struct fixture {
  uint64_t now; /* the replicas' monotonic clock, ms */
  struct apiserver api;
  struct replica a, b;
  int closed;
};

static int fake_request(void *arg, const char *method, const char *path,
                        const json_t *body, kube_done_cb cb, void *cb_arg)
{
  struct apiserver *api = arg;
  struct call *c;

  assert_true(api->ncalls < MAX_CALLS);
  c = &api->calls[api->ncalls++];
  snprintf(c->method, sizeof(c->method), "%s", method);
  snprintf(c->path, sizeof(c->path), "%s", path);
  c->body = body != NULL ? json_deep_copy(body) : NULL;
  c->cb = cb;
  c->arg = cb_arg;
  return 0;
}

static uint64_t fake_now(void *arg)
{
  return ((struct fixture *)arg)->now;
}

static void changed_cb(void *arg, int leading)
{
  struct replica *r = arg;

  assert_int_not_equal(r->leading, leading);
  r->leading = leading;
  r->changes++;
}

static const char *rv_of(const json_t *obj)
{
  return json_string_value(
      json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
}

static void store(struct apiserver *api, json_t *lease)
{
  char rv[32];

  snprintf(rv, sizeof(rv), "%ld", ++api->version);
  json_object_set_new(json_object_get(lease, "metadata"), "resourceVersion",
                      json_string(rv));
  json_decref(api->lease);
  api->lease = lease;
}

/* Takes request i off the queue; its body is the caller's. */
static struct call take_at(struct apiserver *api, size_t i)
{
  struct call c;

  assert_true(api->ncalls > i);
  c = api->calls[i];
  memmove(&api->calls[i], &api->calls[i + 1],
          (api->ncalls - i - 1) * sizeof(api->calls[0]));
  api->ncalls--;
  return c;
}

static struct call take(struct apiserver *api)
{
  return take_at(api, 0);
}

static void reply(const struct call *c, long status, json_t *obj)
{
  struct kube_response resp;

  memset(&resp, 0, sizeof(resp));
  resp.status = status;
  resp.error = status >= 200 && status < 300 ? 0
               : status == 0                 ? -ETIMEDOUT
                                             : -EPROTO;
  resp.object = obj;
  resp.reason = status == 409 ? "Conflict" : "";
  resp.message = "";
  resp.attempts = 1;
  c->cb(c->arg, &resp);
  json_decref(obj);
}

/* Answers request i as an API server would; returns its status. */
static long serve_at(struct apiserver *api, size_t i)
{
  struct call c = take_at(api, i);
  long status;

  if (strcmp(c.method, "GET") == 0) {
    assert_string_equal(c.path, LEASE_PATH "/" NAME);
    status = api->lease != NULL ? 200 : 404;
    reply(&c, status, api->lease != NULL ? json_deep_copy(api->lease) : NULL);
  } else if (strcmp(c.method, "POST") == 0) {
    assert_string_equal(c.path, LEASE_PATH);
    if (api->lease != NULL) {
      status = 409;
      reply(&c, status, NULL);
    } else {
      status = 201;
      store(api, json_deep_copy(c.body));
      reply(&c, status, json_deep_copy(api->lease));
    }
  } else {
    assert_string_equal(c.method, "PUT");
    assert_string_equal(c.path, LEASE_PATH "/" NAME);
    assert_non_null(api->lease);
    if (rv_of(c.body) == NULL ||
        strcmp(rv_of(c.body), rv_of(api->lease)) != 0) {
      status = 409;
      reply(&c, status, NULL);
    } else {
      status = 200;
      store(api, json_deep_copy(c.body));
      reply(&c, status, json_deep_copy(api->lease));
    }
  }
  json_decref(c.body);
  return status;
}

static long serve(struct apiserver *api)
{
  return serve_at(api, 0);
}

/* Fails the oldest request with status (0: no answer came in time). */
static void refuse(struct apiserver *api, long status)
{
  struct call c = take(api);

  reply(&c, status, NULL);
  json_decref(c.body);
}

static const char *holder(const struct apiserver *api)
{
  return json_string_value(
      json_object_get(json_object_get(api->lease, "spec"), "holderIdentity"));
}

static json_int_t spec_int(const struct apiserver *api, const char *key)
{
  return json_integer_value(
      json_object_get(json_object_get(api->lease, "spec"), key));
}

static const char *spec_str(const struct apiserver *api, const char *key)
{
  return json_string_value(
      json_object_get(json_object_get(api->lease, "spec"), key));
}

static struct leader *elector(struct fixture *f, struct replica *r,
                              const char *identity)
{
  struct leader_options o;

  memset(&o, 0, sizeof(o));
  o.ns = NS;
  o.name = NAME;
  o.identity = identity;
  o.lease_duration_ms = 15000;
  o.renew_deadline_ms = 10000;
  o.retry_period_ms = 2000;
  o.metrics = r->m = metrics_new();
  o.changed_cb = changed_cb;
  o.arg = r;
  o.request = fake_request;
  o.request_arg = &f->api;
  o.now_ms = fake_now;
  o.clock_arg = f;
  r->l = leader_new(&r->loop, &o);
  assert_non_null(r->l);
  assert_int_equal(leader_start(r->l), 0);
  return r->l;
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->a.loop), 0);
  assert_int_equal(uv_loop_init(&f->b.loop), 0);
  f->now = 1000000;
  elector(f, &f->a, "runfleetd-a");
  elector(f, &f->b, "runfleetd-b");
  *state = f;
  return 0;
}

static void closed_cb(void *arg)
{
  ((struct fixture *)arg)->closed++;
}

static void close_replica(struct fixture *f, struct replica *r)
{
  if (r->l == NULL)
    return;
  leader_close(r->l, closed_cb, f);
  while (f->api.ncalls > 0)
    serve(&f->api);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  leader_destroy(r->l);
  metrics_destroy(r->m);
  r->l = NULL;
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  close_replica(f, &f->a);
  close_replica(f, &f->b);
  assert_int_equal(uv_loop_close(&f->a.loop), 0);
  assert_int_equal(uv_loop_close(&f->b.loop), 0);
  while (f->api.ncalls > 0)
    json_decref(take(&f->api).body);
  json_decref(f->api.lease);
  free(f);
  return 0;
}

/* One try of r, answered in full (GET, then the create or update). */
static void try_once(struct fixture *f, struct replica *r)
{
  leader_try(r->l);
  while (f->api.ncalls > 0)
    serve(&f->api);
}

/* ---- tests ---- */

static void acquire_creates_the_lease(void **state)
{
  struct fixture *f = *state;

  assert_int_equal(leader_is_leader(f->a.l), 0);
  assert_true(metrics_value(f->a.m, "runfleet_leader", "") == 0);
  f->now += 300;
  leader_try(f->a.l);
  assert_string_equal(f->api.calls[0].method, "GET");
  assert_int_equal(serve(&f->api), 404);
  assert_string_equal(f->api.calls[0].method, "POST");
  assert_int_equal(leader_is_leader(f->a.l), 0); /* not before it is ours */
  assert_int_equal(serve(&f->api), 201);
  assert_int_equal(leader_is_leader(f->a.l), 1);
  assert_int_equal(f->a.leading, 1);
  assert_int_equal(f->a.changes, 1);
  assert_string_equal(holder(&f->api), "runfleetd-a");
  assert_int_equal(spec_int(&f->api, "leaseDurationSeconds"), 15);
  assert_int_equal(spec_int(&f->api, "leaseTransitions"), 0);
  assert_non_null(spec_str(&f->api, "acquireTime"));
  assert_non_null(spec_str(&f->api, "renewTime"));
  assert_string_equal(leader_holder(f->a.l), "runfleetd-a");
  assert_true(metrics_value(f->a.m, "runfleet_leader", "") == 1);
  assert_true(metrics_value(f->a.m, "runfleet_leader_transitions_total", "") ==
              1);
  assert_int_equal(leader_takeover_ms(f->a.l), 300);
  assert_true(metrics_value(f->a.m, "runfleet_leader_takeover_seconds", "") ==
              0.3);

  /* The other replica sees a live holder and stays a standby. */
  try_once(f, &f->b);
  assert_int_equal(leader_is_leader(f->b.l), 0);
  assert_int_equal(f->b.changes, 0);
  assert_string_equal(leader_holder(f->b.l), "runfleetd-a");
  assert_true(metrics_value(f->b.m, "runfleet_leader", "") == 0);
}

static void renewal_is_an_optimistic_update(void **state)
{
  struct fixture *f = *state;
  const char *rv;
  char rv1[32];
  int i;

  try_once(f, &f->a);
  snprintf(rv1, sizeof(rv1), "%s", rv_of(f->api.lease));
  for (i = 0; i < 20; i++) {
    f->now += 2000;
    leader_try(f->a.l);
    assert_int_equal(serve(&f->api), 200);
    /* The update carries the version just read, and the same holder. */
    rv = rv_of(f->api.calls[0].body);
    assert_string_equal(rv, rv_of(f->api.lease));
    assert_int_equal(serve(&f->api), 200);
    leader_check_deadline(f->a.l);
    assert_int_equal(leader_is_leader(f->a.l), 1);
  }
  /* Forty seconds of renewals: one acquisition, one transition. */
  assert_int_equal(f->a.changes, 1);
  assert_string_equal(holder(&f->api), "runfleetd-a");
  assert_int_equal(spec_int(&f->api, "leaseTransitions"), 0);
  assert_string_not_equal(rv_of(f->api.lease), rv1);
  assert_true(metrics_value(f->a.m, "runfleet_leader_transitions_total", "") ==
              1);
}

/* A leader whose renewals fail stops at the send time of its last good
 * one plus the renew deadline, even before its timer runs, and leads
 * again only once it holds the Lease again. */
static void missed_renew_deadline_fences(void **state)
{
  struct fixture *f = *state;
  uint64_t renewed_at;

  try_once(f, &f->a);
  f->now += 2000;
  renewed_at = f->now;
  try_once(f, &f->a);
  /* Then every try fails: the API server cannot be reached. */
  f->now += 2000;
  leader_try(f->a.l);
  refuse(&f->api, 0);
  f->now += 2000;
  leader_try(f->a.l);
  refuse(&f->api, 503);
  f->now = renewed_at + 10000 - 1;
  assert_int_equal(leader_is_leader(f->a.l), 1);
  f->now = renewed_at + 10000;
  assert_int_equal(leader_is_leader(f->a.l), 0); /* fenced at once */
  assert_int_equal(f->a.leading, 1);             /* the timer has not run */
  leader_check_deadline(f->a.l);
  assert_int_equal(f->a.leading, 0);
  assert_int_equal(f->a.changes, 2);
  assert_true(metrics_value(f->a.m, "runfleet_leader", "") == 0);

  /* A try whose GET hangs past the deadline does not make it lead: the
   * retry timer sends no second try while one is out. */
  f->now += 2000;
  leader_try(f->a.l);
  assert_int_equal(f->api.ncalls, 1);
  leader_try(f->a.l);
  assert_int_equal(f->api.ncalls, 1);
  /* Meanwhile b took over (the Lease had not changed for 15 s of b's
   * clock since b last saw it change). */
  f->now += 100;
  leader_try(f->b.l); /* b first sees the record: its clock starts now */
  assert_int_equal(serve_at(&f->api, 1), 200);
  assert_int_equal(f->api.ncalls, 1);
  assert_int_equal(leader_is_leader(f->b.l), 0);
  f->now += 15000;
  leader_try(f->b.l);
  assert_int_equal(serve_at(&f->api, 1), 200);
  assert_int_equal(serve_at(&f->api, 1), 200); /* b's update */
  assert_int_equal(leader_is_leader(f->b.l), 1);
  assert_string_equal(holder(&f->api), "runfleetd-b");
  assert_int_equal(spec_int(&f->api, "leaseTransitions"), 1);
  /* a's hung GET finally comes back with b's record: a stays a standby,
   * and sends nothing. */
  assert_int_equal(serve(&f->api), 200);
  assert_int_equal(f->api.ncalls, 0);
  assert_int_equal(leader_is_leader(f->a.l), 0);
  assert_string_equal(leader_holder(f->a.l), "runfleetd-b");
  assert_int_equal(f->a.changes, 2);
}

/* An update that comes back after the renew deadline (measured from when
 * the try began) leads on nothing: the others may count the lease out. */
static void late_renewal_answer_is_not_trusted(void **state)
{
  struct fixture *f = *state;

  try_once(f, &f->a);
  f->now += 2000;
  leader_try(f->a.l);
  assert_int_equal(serve(&f->api), 200); /* the GET */
  f->now += 10000;                       /* the PUT hangs */
  leader_check_deadline(f->a.l);
  assert_int_equal(f->a.leading, 0);
  assert_int_equal(serve(&f->api), 200); /* the PUT lands, late */
  assert_int_equal(leader_is_leader(f->a.l), 0);
  assert_int_equal(f->a.leading, 0);
  /* The next try in time makes it the leader again. */
  f->now += 2000;
  try_once(f, &f->a);
  assert_int_equal(leader_is_leader(f->a.l), 1);
  assert_int_equal(f->a.changes, 3);
}

/* The holder's renewTime is never compared with the standby's clock: a
 * record written by a clock hours behind is live while it changes, and
 * one written by a clock hours ahead expires once it stops changing. */
static void expiry_uses_observed_time_not_the_holders_clock(void **state)
{
  struct fixture *f = *state;
  json_t *lease;
  int i;

  lease = json_pack(
      "{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:i, s:s, s:s, s:i}}", "apiVersion",
      "coordination.k8s.io/v1", "kind", "Lease", "metadata", "name", NAME,
      "namespace", NS, "spec", "holderIdentity", "runfleetd-old",
      "leaseDurationSeconds", 15, "acquireTime", "2001-01-01T00:00:00.000000Z",
      "renewTime", "2001-01-01T00:00:00.000000Z", "leaseTransitions", 4);
  store(&f->api, lease);
  /* Skewed hours behind, but renewed every 2 s: never taken. */
  for (i = 0; i < 15; i++) {
    char t[64];

    snprintf(t, sizeof(t), "2001-01-01T00:00:%02d.000000Z", 2 * i + 2);
    json_object_set_new(json_object_get(f->api.lease, "spec"), "renewTime",
                        json_string(t));
    store(&f->api, json_deep_copy(f->api.lease));
    try_once(f, &f->a);
    assert_int_equal(leader_is_leader(f->a.l), 0);
    f->now += 2000;
  }
  /* Now written from hours ahead, then silent (the holder died). */
  json_object_set_new(json_object_get(f->api.lease, "spec"), "renewTime",
                      json_string("2099-12-31T23:59:59.000000Z"));
  store(&f->api, json_deep_copy(f->api.lease));
  try_once(f, &f->a);
  assert_int_equal(leader_is_leader(f->a.l), 0);
  f->now += 14999;
  try_once(f, &f->a);
  assert_int_equal(leader_is_leader(f->a.l), 0);
  f->now += 1;
  try_once(f, &f->a);
  assert_int_equal(leader_is_leader(f->a.l), 1);
  assert_string_equal(holder(&f->api), "runfleetd-a");
  assert_int_equal(spec_int(&f->api, "leaseTransitions"), 5);
  /* From the first sight of the dead holder's last record to leading. */
  assert_int_equal(leader_takeover_ms(f->a.l), 15000);
}

/* Two standbys see the same expired record and update it at once: the
 * second update carries a stale resourceVersion, gets 409 and leads on
 * nothing. */
static void conflict_on_update_is_a_lost_race(void **state)
{
  struct fixture *f = *state;

  try_once(f, &f->a);
  leader_close(f->a.l, closed_cb, f); /* releases: the holder is cleared */
  assert_int_equal(serve(&f->api), 200);
  uv_run(&f->a.loop, UV_RUN_DEFAULT);
  leader_destroy(f->a.l);
  metrics_destroy(f->a.m);
  f->a.l = NULL;
  elector(f, &f->a, "runfleetd-c");

  leader_try(f->a.l);
  leader_try(f->b.l);
  assert_int_equal(serve(&f->api), 200); /* c's GET */
  assert_int_equal(serve(&f->api), 200); /* b's GET */
  /* Both PUTs carry the same version; the first one wins. */
  assert_string_equal(f->api.calls[0].method, "PUT");
  assert_string_equal(f->api.calls[1].method, "PUT");
  assert_int_equal(serve(&f->api), 200);
  assert_int_equal(serve(&f->api), 409);
  assert_int_equal(leader_is_leader(f->a.l), 1);
  assert_int_equal(leader_is_leader(f->b.l), 0);
  assert_int_equal(f->b.changes, 0);
  assert_string_equal(holder(&f->api), "runfleetd-c");
}

static void conflict_on_create_is_a_lost_race(void **state)
{
  struct fixture *f = *state;

  leader_try(f->a.l);
  leader_try(f->b.l);
  assert_int_equal(serve(&f->api), 404);
  assert_int_equal(serve(&f->api), 404);
  assert_int_equal(serve(&f->api), 201);
  assert_int_equal(serve(&f->api), 409);
  assert_int_equal(leader_is_leader(f->a.l) + leader_is_leader(f->b.l), 1);
  assert_int_equal(leader_is_leader(f->a.l), 1);
  /* b's next try sees a live holder. */
  f->now += 2000;
  try_once(f, &f->a);
  try_once(f, &f->b);
  assert_int_equal(leader_is_leader(f->b.l), 0);
}

/* A renewal that loses to someone else's update drops the leader at the
 * next try that sees the new holder, and never after its deadline. */
static void another_holder_ends_leadership(void **state)
{
  struct fixture *f = *state;

  try_once(f, &f->a);
  json_object_set_new(json_object_get(f->api.lease, "spec"), "holderIdentity",
                      json_string("runfleetd-x"));
  store(&f->api, json_deep_copy(f->api.lease));
  f->now += 2000;
  try_once(f, &f->a);
  assert_int_equal(leader_is_leader(f->a.l), 0);
  assert_int_equal(f->a.leading, 0);
  assert_int_equal(f->a.changes, 2);
  assert_string_equal(holder(&f->api), "runfleetd-x");
}

/* On stop the leader stops leading first, then clears the holder; the
 * standby takes over at its next try without waiting out the lease. */
static void release_on_stop_hands_over_at_once(void **state)
{
  struct fixture *f = *state;

  try_once(f, &f->a);
  f->now += 1000;
  try_once(f, &f->b);
  assert_int_equal(leader_is_leader(f->b.l), 0);
  leader_close(f->a.l, closed_cb, f);
  assert_int_equal(f->a.leading, 0); /* before the answer */
  assert_int_equal(leader_is_leader(f->a.l), 0);
  assert_string_equal(f->api.calls[0].method, "PUT");
  assert_int_equal(serve(&f->api), 200);
  assert_string_equal(holder(&f->api), "");
  assert_int_equal(spec_int(&f->api, "leaseDurationSeconds"), 1);
  uv_run(&f->a.loop, UV_RUN_DEFAULT);
  assert_int_equal(f->closed, 1);
  leader_destroy(f->a.l);
  metrics_destroy(f->a.m);
  f->a.l = NULL;

  f->now += 100;
  try_once(f, &f->b);
  assert_int_equal(leader_is_leader(f->b.l), 1);
  /* From a's last renewal that b saw (at +1000). */
  assert_int_equal(leader_takeover_ms(f->b.l), 100);
  assert_string_equal(holder(&f->api), "runfleetd-b");
  assert_int_equal(spec_int(&f->api, "leaseDurationSeconds"), 15);
  assert_int_equal(spec_int(&f->api, "leaseTransitions"), 1);
}

/* A stop while a renewal is out waits for it, then releases on the newest
 * version; a standby's stop leaves the Lease alone. */
static void release_waits_for_the_request_in_flight(void **state)
{
  struct fixture *f = *state;

  try_once(f, &f->a);
  try_once(f, &f->b);
  f->now += 2000;
  leader_try(f->a.l);
  leader_close(f->a.l, closed_cb, f);
  assert_int_equal(leader_is_leader(f->a.l), 0);
  assert_int_equal(serve(&f->api), 200); /* the GET: no update follows */
  assert_string_equal(f->api.calls[0].method, "PUT");
  assert_string_equal(rv_of(f->api.calls[0].body), rv_of(f->api.lease));
  assert_int_equal(serve(&f->api), 200);
  assert_string_equal(holder(&f->api), "");
  uv_run(&f->a.loop, UV_RUN_DEFAULT);
  assert_int_equal(f->closed, 1);

  leader_close(f->b.l, closed_cb, f);
  assert_int_equal(f->api.ncalls, 0);
  uv_run(&f->b.loop, UV_RUN_DEFAULT);
  assert_int_equal(f->closed, 2);
  assert_string_equal(holder(&f->api), "");
}

/* Values ride on the Lease: the leader's go out with its next renewal,
 * and the standby reads them from the Lease it watches. */
static void values_travel_on_the_lease(void **state)
{
  struct fixture *f = *state;
  char buf[64];
  json_t *ann;

  assert_int_equal(leader_value_get(f->a.l, "cursor", buf, sizeof(buf)),
                   -ENOENT);
  try_once(f, &f->a);
  assert_int_equal(leader_value_put(f->a.l, "cursor", "12345"), 0);
  assert_int_equal(leader_value_get(f->a.l, "cursor", buf, sizeof(buf)), 0);
  assert_string_equal(buf, "12345");
  assert_int_equal(leader_value_put(f->a.l, "Bad Key", "x"), -EINVAL);
  f->now += 2000;
  try_once(f, &f->a);
  ann =
      json_object_get(json_object_get(f->api.lease, "metadata"), "annotations");
  assert_string_equal(
      json_string_value(json_object_get(ann, "runfleet.dev/cursor")), "12345");
  try_once(f, &f->b);
  assert_int_equal(leader_value_get(f->b.l, "cursor", buf, sizeof(buf)), 0);
  assert_string_equal(buf, "12345");
  assert_int_equal(leader_value_get(f->b.l, "cursor", buf, 3), -ENOSPC);
}

static void invalid_durations_are_refused(void **state)
{
  struct fixture *f = *state;
  struct leader_options o;

  memset(&o, 0, sizeof(o));
  o.ns = NS;
  o.name = NAME;
  o.identity = "x";
  o.lease_duration_ms = 10000;
  o.renew_deadline_ms = 10000;
  o.retry_period_ms = 2000;
  assert_null(leader_new(&f->a.loop, &o));
  o.lease_duration_ms = 15000;
  o.retry_period_ms = 10000;
  assert_null(leader_new(&f->a.loop, &o));
  o.retry_period_ms = 2000;
  o.identity = "";
  assert_null(leader_new(&f->a.loop, &o));
}

static void micro_time_is_rfc3339_with_microseconds(void **state)
{
  char buf[40];

  (void)state;
  leader_micro_time(1700000000123456ull, buf, sizeof(buf));
  assert_string_equal(buf, "2023-11-14T22:13:20.123456Z");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(acquire_creates_the_lease, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(renewal_is_an_optimistic_update, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(missed_renew_deadline_fences, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(late_renewal_answer_is_not_trusted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          expiry_uses_observed_time_not_the_holders_clock, setup, teardown),
      cmocka_unit_test_setup_teardown(conflict_on_update_is_a_lost_race, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(conflict_on_create_is_a_lost_race, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(another_holder_ends_leadership, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(release_on_stop_hands_over_at_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(release_waits_for_the_request_in_flight,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(values_travel_on_the_lease, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(invalid_durations_are_refused, setup,
                                      teardown),
      cmocka_unit_test(micro_time_is_rfc3339_with_microseconds),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
