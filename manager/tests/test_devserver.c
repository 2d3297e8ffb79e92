/* The dev server state machine with an injected clock: every transition,
 * FIFO per flavor, extensions and their cap, warnings once each and reset
 * by an extension, the timeouts, expiry after the grace, owner checks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "devserver.h"
#include "journal.h"

#define MINUTE (60ull * 1000)
#define HOUR (60 * MINUTE)
#define T0 (1700000000ull * 1000)

struct fixture {
  struct config cfg;
  struct dev_table t;
  uint64_t now;
  /* What the hooks saw. */
  int changes;
  enum dev_state last_from, last_to;
  int warnings;
  uint64_t last_warning;
};

static uint64_t fake_clock(void *arg)
{
  return ((struct fixture *)arg)->now;
}

static void on_changed(void *arg, struct dev_server *d, enum dev_state from)
{
  struct fixture *f = arg;

  f->changes++;
  f->last_from = from;
  f->last_to = d->state;
}

static void on_warning(void *arg, struct dev_server *d, uint64_t before_ms)
{
  struct fixture *f = arg;

  (void)d;
  f->warnings++;
  f->last_warning = before_ms;
}

static const char yaml[] =
    /* The tests run in the source tree: any regular file will do. */
    "github: {pat_file: README.md, webhook_secret_file: README.md, org: a}\n"
    "backend: {type: local, local: {gpus: [0, 1, 2, 3]}}\n"
    "pools: [{name: cpu, labels: [x], max_runners: 1, runner: {command: "
    "/r}}]\n"
    "devservers:\n"
    "  queued_timeout: 1h\n"
    "  preparing_timeout: 5m\n"
    "  expiry_grace: 1m\n"
    "  flavors:\n"
    "    - {name: gpu-1, gpus: 1, max_hours: 8, max_extend_hours: 2, "
    "per_user_max: 2}\n"
    "    - {name: gpu-4, gpus: 4, max_hours: 4, max_extend_hours: 0}\n";

static int setup(void **state)
{
  static struct fixture f;
  char errs[2048];
  struct dev_hooks hooks = {on_changed, on_warning, &f};

  memset(&f, 0, sizeof(f));
  if (cfg_parse(&f.cfg, "t.yaml", yaml, strlen(yaml), errs, sizeof(errs)) !=
      0) {
    fprintf(stderr, "%s", errs);
    return -1;
  }
  f.now = T0;
  dev_table_init(&f.t, &f.cfg.devservers, fake_clock, &f, &hooks);
  *state = &f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  dev_table_free(&f->t);
  cfg_free(&f->cfg);
  return 0;
}

static struct dev_server *reserve(struct fixture *f, const char *user,
                                  const char *flavor, uint64_t ms)
{
  struct dev_server *d = NULL;
  char msg[256];

  if (dev_reserve(&f->t, &f->cfg, user, flavor, ms, &d, msg, sizeof(msg)) != 0)
    fail_msg("reserve failed: %s", msg);
  return d;
}

static const struct dev_caller alice = {"alice", 0};
static const struct dev_caller bob = {"bob", 0};
static const struct dev_caller admin = {"ops", 1};

static int prune_gone;
static char prune_last[DEV_ID_LEN + 1];

static void on_gone(void *arg, const char *id)
{
  (void)arg;
  prune_gone++;
  snprintf(prune_last, sizeof(prune_last), "%s", id);
}

/* Only ended reservations are forgotten, the oldest first, down to keep;
 * the queue of live ones is untouched. */
static void test_prune_keeps_live_and_newest_ended(void **state)
{
  struct fixture *f = *state;
  struct dev_server *a = reserve(f, "alice", "gpu-1", HOUR);
  struct dev_server *b = reserve(f, "bob", "gpu-1", HOUR);
  struct dev_server *c = reserve(f, "alice", "gpu-1", HOUR);
  char a_id[DEV_ID_LEN + 1], b_id[DEV_ID_LEN + 1];

  (void)state;
  snprintf(a_id, sizeof(a_id), "%s", a->id);
  snprintf(b_id, sizeof(b_id), "%s", b->id);
  assert_int_equal(dev_cancel(&f->t, a, &alice), 0);
  assert_int_equal(dev_cancel(&f->t, b, &bob), 0);
  prune_gone = 0;
  assert_int_equal(dev_prune(&f->t, 2, on_gone, NULL), 0);
  assert_int_equal(dev_prune(&f->t, 1, on_gone, NULL), 1);
  assert_int_equal(prune_gone, 1);
  assert_string_equal(prune_last, a_id);
  assert_int_equal(f->t.n, 2);
  assert_string_equal(f->t.all[0]->id, b_id);
  assert_ptr_equal(f->t.all[1], c);
  assert_int_equal(dev_prune(&f->t, 0, on_gone, NULL), 1);
  assert_int_equal(f->t.n, 1);
  assert_ptr_equal(dev_queue_head(&f->t, "gpu-1"), c);
  assert_int_equal(dev_prune(&f->t, 0, NULL, NULL), 0);
}

static void test_lifecycle_to_expiry(void **state)
{
  struct fixture *f = *state;
  struct dev_server *d = reserve(f, "alice", "gpu-1", HOUR);

  assert_int_equal(d->state, DEV_QUEUED);
  assert_int_equal(strlen(d->id), DEV_ID_LEN);
  assert_int_equal(d->gpus, 1);
  assert_int_equal(d->created_ms, T0);
  assert_int_equal(f->changes, 1);
  assert_int_equal(dev_queue_position(&f->t, d), 1);
  f->now += 10;
  assert_int_equal(dev_start(&f->t, d), 0);
  assert_int_equal(d->state, DEV_PREPARING);
  assert_int_equal(f->last_from, DEV_QUEUED);
  assert_int_equal(dev_queue_position(&f->t, d), 0);
  assert_int_equal(dev_start(&f->t, d), -ESTALE);
  f->now += MINUTE;
  assert_int_equal(dev_ready(&f->t, d), 0);
  assert_int_equal(d->state, DEV_ACTIVE);
  assert_int_equal(d->expires_at_ms, f->now + HOUR);
  /* Due at expiry plus the grace, not before. */
  assert_int_equal(dev_tick(&f->t), d->expires_at_ms - 30 * MINUTE);
  f->now = d->expires_at_ms + MINUTE - 1;
  dev_tick(&f->t);
  assert_int_equal(d->state, DEV_ACTIVE);
  f->now++;
  assert_int_equal(dev_tick(&f->t), UINT64_MAX);
  assert_int_equal(d->state, DEV_EXPIRED);
  assert_int_equal(d->ended_ms, f->now);
  assert_string_equal(d->reason, "reservation time is over");
  /* Terminal states never change. */
  assert_int_equal(dev_cancel(&f->t, d, &alice), -ESTALE);
  assert_int_equal(dev_fail(&f->t, d, "x"), -ESTALE);
  assert_int_equal(dev_ready(&f->t, d), -ESTALE);
  assert_int_equal(d->state, DEV_EXPIRED);
}

static void test_cancel_from_each_live_state(void **state)
{
  struct fixture *f = *state;
  struct dev_server *q = reserve(f, "alice", "gpu-1", HOUR);
  struct dev_server *p = reserve(f, "bob", "gpu-4", HOUR);
  struct dev_server *a;

  assert_int_equal(dev_cancel(&f->t, q, &alice), 0);
  assert_int_equal(q->state, DEV_CANCELLED);
  assert_string_equal(q->reason, "cancelled by alice");
  assert_int_equal(dev_start(&f->t, p), 0);
  /* A cancel during preparing wins over the backend's later "ready". */
  assert_int_equal(dev_cancel(&f->t, p, &bob), 0);
  assert_int_equal(dev_ready(&f->t, p), -ESTALE);
  assert_int_equal(p->state, DEV_CANCELLED);
  assert_int_equal(f->last_to, DEV_CANCELLED);
  a = reserve(f, "alice", "gpu-1", HOUR);
  assert_int_equal(dev_start(&f->t, a), 0);
  assert_int_equal(dev_ready(&f->t, a), 0);
  assert_int_equal(dev_cancel(&f->t, a, &admin), 0);
  assert_int_equal(a->state, DEV_CANCELLED);
  assert_string_equal(a->reason, "cancelled by ops");
}

static void test_fifo_per_flavor(void **state)
{
  struct fixture *f = *state;
  struct dev_server *a1 = reserve(f, "alice", "gpu-4", HOUR);
  struct dev_server *b1 = reserve(f, "bob", "gpu-1", HOUR);
  struct dev_server *b2 = reserve(f, "bob", "gpu-4", HOUR);
  struct dev_server *c1 = reserve(f, "carol", "gpu-1", HOUR);
  struct dev_server *c2 = reserve(f, "carol", "gpu-4", HOUR);

  /* Positions count only the reservations of the same flavor. */
  assert_int_equal(dev_queue_position(&f->t, a1), 1);
  assert_int_equal(dev_queue_position(&f->t, b2), 2);
  assert_int_equal(dev_queue_position(&f->t, c2), 3);
  assert_int_equal(dev_queue_position(&f->t, b1), 1);
  assert_int_equal(dev_queue_position(&f->t, c1), 2);
  assert_ptr_equal(dev_queue_head(&f->t, "gpu-4"), a1);
  assert_null(dev_queue_head(&f->t, "gpu-8"));
  /* Strict FIFO: only the head starts. */
  assert_int_equal(dev_start(&f->t, b2), -EBUSY);
  assert_int_equal(b2->state, DEV_QUEUED);
  assert_int_equal(dev_start(&f->t, c1), -EBUSY);
  assert_int_equal(dev_start(&f->t, b1), 0);
  assert_int_equal(dev_start(&f->t, c1), 0);
  /* Leaving the queue moves the ones behind up. */
  assert_int_equal(dev_cancel(&f->t, a1, &alice), 0);
  assert_int_equal(dev_queue_position(&f->t, b2), 1);
  assert_int_equal(dev_queue_position(&f->t, c2), 2);
  assert_ptr_equal(dev_queue_head(&f->t, "gpu-4"), b2);
}

static void test_bad_requests_change_nothing(void **state)
{
  struct fixture *f = *state;
  struct dev_server *d = NULL;
  char msg[256];

  assert_int_equal(
      dev_reserve(&f->t, &f->cfg, "alice", "gpu-9", HOUR, &d, msg, sizeof(msg)),
      -EINVAL);
  assert_string_equal(msg, "unknown flavor 'gpu-9'");
  assert_int_equal(dev_reserve(&f->t, &f->cfg, "alice", "gpu-4", 4 * HOUR + 1,
                               &d, msg, sizeof(msg)),
                   -EINVAL);
  assert_string_equal(msg, "duration must be 300 seconds to 4 hours for flavor "
                           "'gpu-4'");
  assert_int_equal(dev_reserve(&f->t, &f->cfg, "alice", "gpu-4", 5 * MINUTE - 1,
                               &d, msg, sizeof(msg)),
                   -EINVAL);
  assert_int_equal(f->t.n, 0);
  assert_int_equal(f->changes, 0);
  assert_null(d);
  reserve(f, "alice", "gpu-1", HOUR);
  reserve(f, "alice", "gpu-1", 5 * MINUTE);
  assert_int_equal(
      dev_reserve(&f->t, &f->cfg, "alice", "gpu-1", HOUR, &d, msg, sizeof(msg)),
      -EDQUOT);
  assert_string_equal(msg, "user 'alice' already has 2 live reservations of "
                           "flavor 'gpu-1' (the most allowed)");
  assert_int_equal(f->t.n, 2);
  /* Another user and another flavor are counted apart. */
  reserve(f, "bob", "gpu-1", HOUR);
  reserve(f, "alice", "gpu-4", HOUR);
}

static void test_extend_and_its_cap(void **state)
{
  struct fixture *f = *state;
  struct dev_server *d = reserve(f, "alice", "gpu-1", HOUR);
  struct dev_server *e = reserve(f, "bob", "gpu-4", HOUR);
  uint64_t expires;
  char msg[256];

  assert_int_equal(dev_start(&f->t, d), 0);
  assert_int_equal(dev_ready(&f->t, d), 0);
  expires = d->expires_at_ms;
  assert_int_equal(dev_extend(&f->t, &f->cfg, d, &bob, HOUR, msg, sizeof(msg)),
                   -EPERM);
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, d, &alice, 90 * MINUTE, msg, sizeof(msg)), 0);
  assert_int_equal(d->expires_at_ms, expires + 90 * MINUTE);
  assert_int_equal(d->extended_ms, 90 * MINUTE);
  /* The cap is two hours in all: 31 more minutes is too many. */
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, d, &alice, 31 * MINUTE, msg, sizeof(msg)),
      -EINVAL);
  assert_string_equal(msg, "extensions of flavor 'gpu-1' are capped at 120 "
                           "minutes in all; 30 minutes left");
  assert_int_equal(d->expires_at_ms, expires + 90 * MINUTE);
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, d, &admin, 30 * MINUTE, msg, sizeof(msg)), 0);
  assert_int_equal(d->expires_at_ms, expires + 2 * HOUR);
  /* A flavor without extensions refuses any. */
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, e, &bob, MINUTE, msg, sizeof(msg)), -EINVAL);
  assert_int_equal(dev_cancel(&f->t, d, &alice), 0);
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, d, &alice, MINUTE, msg, sizeof(msg)), -ESTALE);
}

static void test_warnings_once_each_and_reset_by_extend(void **state)
{
  struct fixture *f = *state;
  struct dev_server *d = reserve(f, "alice", "gpu-1", HOUR);
  char msg[256];

  dev_start(&f->t, d);
  dev_ready(&f->t, d);
  f->now = d->expires_at_ms - 30 * MINUTE - 1;
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 0);
  f->now++;
  assert_int_equal(dev_tick(&f->t), d->expires_at_ms - 15 * MINUTE);
  assert_int_equal(f->warnings, 1);
  assert_int_equal(f->last_warning, 30 * MINUTE);
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 1);
  f->now = d->expires_at_ms - 15 * MINUTE;
  dev_tick(&f->t);
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 2);
  assert_int_equal(f->last_warning, 15 * MINUTE);
  /* 20 minutes more: 35 left, so all three are ahead again. */
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, d, &alice, 20 * MINUTE, msg, sizeof(msg)), 0);
  assert_int_equal(dev_tick(&f->t), d->expires_at_ms - 30 * MINUTE);
  assert_int_equal(f->warnings, 2);
  f->now = d->expires_at_ms - 30 * MINUTE;
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 3);
  /* A late tick past both the 15 and 5 minute marks sends one warning. */
  f->now = d->expires_at_ms - 4 * MINUTE;
  assert_int_equal(dev_tick(&f->t), d->expires_at_ms + MINUTE);
  assert_int_equal(f->warnings, 4);
  assert_int_equal(f->last_warning, 5 * MINUTE);
  /* An extension of 2 minutes leaves 6: only the 5 minute one again. */
  assert_int_equal(
      dev_extend(&f->t, &f->cfg, d, &alice, 2 * MINUTE, msg, sizeof(msg)), 0);
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 4);
  f->now = d->expires_at_ms - 5 * MINUTE;
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 5);
  assert_int_equal(f->last_warning, 5 * MINUTE);
  /* None in the grace. */
  f->now = d->expires_at_ms + 30000;
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 5);
  assert_int_equal(d->state, DEV_ACTIVE);
}

static void test_short_reservation_skips_longer_warnings(void **state)
{
  struct fixture *f = *state;
  struct dev_server *d = reserve(f, "alice", "gpu-1", 10 * MINUTE);

  dev_start(&f->t, d);
  dev_ready(&f->t, d);
  assert_int_equal(dev_tick(&f->t), d->expires_at_ms - 5 * MINUTE);
  assert_int_equal(f->warnings, 0);
  f->now = d->expires_at_ms - 5 * MINUTE;
  dev_tick(&f->t);
  assert_int_equal(f->warnings, 1);
  assert_int_equal(f->last_warning, 5 * MINUTE);
}

static void test_timeouts(void **state)
{
  struct fixture *f = *state;
  struct dev_server *q = reserve(f, "alice", "gpu-4", HOUR);
  struct dev_server *p = reserve(f, "bob", "gpu-1", HOUR);

  assert_int_equal(dev_start(&f->t, p), 0);
  assert_int_equal(dev_tick(&f->t), T0 + 5 * MINUTE);
  f->now = T0 + 5 * MINUTE - 1;
  dev_tick(&f->t);
  assert_int_equal(p->state, DEV_PREPARING);
  f->now++;
  assert_int_equal(dev_tick(&f->t), T0 + HOUR);
  assert_int_equal(p->state, DEV_FAILED);
  assert_string_equal(p->reason, "not ready within preparing_timeout");
  assert_int_equal(dev_ready(&f->t, p), -ESTALE);
  f->now = T0 + HOUR - 1;
  dev_tick(&f->t);
  assert_int_equal(q->state, DEV_QUEUED);
  f->now++;
  assert_int_equal(dev_tick(&f->t), UINT64_MAX);
  assert_int_equal(q->state, DEV_FAILED);
  assert_string_equal(q->reason, "queued longer than queued_timeout");
  assert_int_equal(dev_fail(&f->t, q, "again"), -ESTALE);
}

static void test_find_by_prefix_and_owner(void **state)
{
  struct fixture *f = *state;
  struct dev_server *a = reserve(f, "alice", "gpu-1", HOUR);
  struct dev_server *b = reserve(f, "bob", "gpu-1", HOUR);
  struct dev_server *out = NULL;
  char prefix[DEV_ID_LEN + 1];

  assert_int_equal(dev_find(&f->t, a->id, &alice, &out), 0);
  assert_ptr_equal(out, a);
  /* Another user's reservation is not found, nor cancelled. */
  assert_int_equal(dev_find(&f->t, b->id, &alice, &out), -ENOENT);
  assert_int_equal(dev_cancel(&f->t, b, &alice), -EPERM);
  assert_int_equal(b->state, DEV_QUEUED);
  assert_int_equal(dev_find(&f->t, b->id, &admin, &out), 0);
  assert_ptr_equal(out, b);
  memcpy(prefix, a->id, 4);
  prefix[4] = '\0';
  assert_int_equal(dev_find(&f->t, prefix, &alice, &out), 0);
  assert_int_equal(dev_find(&f->t, "abc", &admin, &out), -ENOENT);
  /* Make a prefix both share: admin sees an ambiguity, alice does not. */
  memcpy(b->id, a->id, 8);
  memcpy(prefix, a->id, 8);
  prefix[8] = '\0';
  assert_int_equal(dev_find(&f->t, prefix, &admin, &out), -EEXIST);
  assert_int_equal(dev_find(&f->t, prefix, &alice, &out), 0);
  assert_ptr_equal(out, a);
}

/* What the journal keeps puts the table back as it was: the same queue
 * order, the same times and warnings, and new reservations behind. */
static void test_restore_from_the_journal(void **state)
{
  struct fixture *f = *state;
  struct dev_server *a = reserve(f, "alice", "gpu-4", HOUR);
  struct dev_server *b = reserve(f, "bob", "gpu-4", HOUR);
  struct dev_server *c = reserve(f, "carol", "gpu-1", HOUR);
  struct journal_devserver saved[3], bad;
  struct dev_table again;
  struct dev_server *r[3], *late;
  char msg[256];
  size_t i;

  dev_start(&f->t, c);
  dev_ready(&f->t, c);
  c->warned = 1;
  /* Replay gives them in arrival order. */
  dev_to_journal(a, &saved[0]);
  dev_to_journal(b, &saved[1]);
  dev_to_journal(c, &saved[2]);
  dev_table_init(&again, &f->cfg.devservers, fake_clock, f, NULL);
  for (i = 0; i < 3; i++)
    assert_int_equal(dev_restore(&again, &saved[i], &r[i]), 0);
  assert_int_equal(dev_restore(&again, &saved[0], NULL), -EEXIST);
  bad = saved[0];
  snprintf(bad.state, sizeof(bad.state), "lost");
  assert_int_equal(dev_restore(&again, &bad, NULL), -EINVAL);
  bad = saved[0];
  snprintf(bad.id, sizeof(bad.id), "XYZ");
  assert_int_equal(dev_restore(&again, &bad, NULL), -EINVAL);
  assert_string_equal(r[0]->id, a->id);
  assert_int_equal(dev_queue_position(&again, r[0]), 1);
  assert_int_equal(dev_queue_position(&again, r[1]), 2);
  assert_ptr_equal(dev_queue_head(&again, "gpu-4"), r[0]);
  assert_int_equal(r[2]->state, DEV_ACTIVE);
  assert_int_equal(r[2]->expires_at_ms, c->expires_at_ms);
  assert_int_equal(r[2]->warned, 1);
  assert_string_equal(r[2]->user, "carol");
  assert_int_equal(dev_reserve(&again, &f->cfg, "dave", "gpu-4", HOUR, &late,
                               msg, sizeof(msg)),
                   0);
  assert_true(late->seq > r[1]->seq);
  assert_int_equal(dev_queue_position(&again, late), 3);
  /* Expiry still happens after the restart. */
  f->now = c->expires_at_ms + MINUTE;
  dev_tick(&again);
  assert_int_equal(r[2]->state, DEV_EXPIRED);
  dev_table_free(&again);
}

/* The caps on how the GPUs are shared: with ci_min_gpus 1 of 4 GPUs and
 * devservers_max_gpus 4 (the fixture's cfg is changed here). */
static void test_sharing_caps(void **state)
{
  struct fixture *f = *state;
  struct dev_server *a = reserve(f, "alice", "gpu-1", HOUR);
  struct dev_server *b = reserve(f, "bob", "gpu-4", HOUR);
  struct dev_server *c = reserve(f, "carol", "gpu-1", HOUR);

  f->cfg.devservers.ci_min_gpus = 1;
  assert_int_equal(dev_gpus_held(&f->t), 0);
  /* Four GPUs for a dev server would leave CI none. */
  assert_int_equal(dev_within_share(&f->t, b, 4), 0);
  assert_int_equal(dev_within_share(&f->t, b, 5), 1);
  assert_int_equal(dev_within_share(&f->t, a, 4), 1);
  assert_int_equal(dev_start(&f->t, a), 0);
  assert_int_equal(dev_gpus_held(&f->t), 1);
  assert_int_equal(dev_within_share(&f->t, c, 3), 1);
  assert_int_equal(dev_within_share(&f->t, c, 2), 0);
  f->cfg.devservers.ci_min_gpus = 0;
  f->cfg.devservers.max_gpus = 1;
  assert_int_equal(dev_within_share(&f->t, c, 64), 0);
  /* An ended one holds nothing. */
  assert_int_equal(dev_cancel(&f->t, a, &alice), 0);
  assert_int_equal(dev_gpus_held(&f->t), 0);
  assert_int_equal(dev_within_share(&f->t, c, 64), 1);
}

static void test_state_names(void **state)
{
  (void)state;
  assert_string_equal(dev_state_name(DEV_PREPARING), "preparing");
  assert_int_equal(dev_state_parse("cancelled"), DEV_CANCELLED);
  assert_int_equal(dev_state_parse("gone"), -1);
  assert_int_equal(dev_is_live(DEV_ACTIVE), 1);
  assert_int_equal(dev_is_live(DEV_FAILED), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_lifecycle_to_expiry, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_prune_keeps_live_and_newest_ended,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_from_each_live_state, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_fifo_per_flavor, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_requests_change_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_extend_and_its_cap, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_warnings_once_each_and_reset_by_extend, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_short_reservation_skips_longer_warnings, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_find_by_prefix_and_owner, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_restore_from_the_journal, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sharing_caps, setup, teardown),
      cmocka_unit_test(test_state_names),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
