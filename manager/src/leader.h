#ifndef RUNFLEET_LEADER_H
#define RUNFLEET_LEADER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "kube.h"

/* Leader election on a coordination.k8s.io/v1 Lease, as client-go does it:
 * every retry period a GET of the Lease, then a create (none yet) or an
 * update carrying the resourceVersion read (a 409 is a lost race). The
 * other holder's renewTime is never compared with our clock: a record is
 * taken as expired only when it has not changed for lease duration of our
 * own monotonic time since we first saw it. A leader leads until the send
 * time of its last successful renew plus the renew deadline (shorter than
 * the lease duration, so it stops before anyone could take over); past
 * that it stops at once and competes again like a standby. On release the
 * holder is cleared so a standby takes over at its next retry.
 *
 * The Lease also carries small string values both replicas read
 * (annotations "runfleet.dev/<key>"): the leader writes them with its next
 * renew. */

struct metrics;

#define LEADER_DEFAULT_LEASE_DURATION_MS 15000
#define LEADER_DEFAULT_RENEW_DEADLINE_MS 10000
#define LEADER_DEFAULT_RETRY_PERIOD_MS 2000
#define LEADER_ANNOTATION_PREFIX "runfleet.dev/"
#define LEADER_MAX_IDENTITY 253
#define LEADER_MAX_VALUES 8
/* The help of runfleet_leader and runfleet_leader_transitions_total, which
 * fleet also declares for a single replica (always the leader). */
#define LEADER_METRIC_HELP                                                     \
  "1 while this replica leads (holds the leader Lease; always 1 without "      \
  "leader election)"
#define LEADER_TRANSITIONS_HELP "Times this replica became the leader"
/* The values runfleetd keeps on the Lease. */
#define LEADER_VALUE_FLEET_TAG "fleet-tag"

/* The requests the elector sends; kube_request in production. */
typedef int (*leader_request_fn)(void *arg, const char *method,
                                 const char *path, const json_t *body,
                                 kube_done_cb cb, void *cb_arg);

struct leader_options {
  const char *ns;       /* the Lease's namespace */
  const char *name;     /* the Lease's name */
  const char *identity; /* holderIdentity: the pod name */
  uint64_t lease_duration_ms;
  uint64_t renew_deadline_ms;
  uint64_t retry_period_ms;
  struct metrics *metrics; /* runfleet_leader*; may be NULL */
  /* Called on each change, leading 1 or 0. */
  void (*changed_cb)(void *arg, int leading);
  void *arg;
  /* NULL: kube_request on request_arg (a struct kube *). */
  leader_request_fn request;
  void *request_arg;
  /* NULL: uv_now(loop). */
  uint64_t (*now_ms)(void *arg);
  void *clock_arg;
};

struct leader; /* opaque */

/* The identity to use: $POD_NAME, else the host name, into out. 0 or -1. */
int leader_default_identity(char *out, size_t size);

/* An elector on loop (copies o's strings), not started. NULL when out of
 * memory or o is invalid (renew deadline not below the lease duration,
 * retry period not below the renew deadline). */
struct leader *leader_new(uv_loop_t *loop, const struct leader_options *o);

/* Tries at once, then every retry period. 0 or a negative code. */
int leader_start(struct leader *l);

/* 1 while this replica may act as the leader. */
int leader_is_leader(const struct leader *l);

/* The holder seen last ("" when none). */
const char *leader_holder(const struct leader *l);

/* Milliseconds to the last acquisition from the last renewal of the
 * holder before (as this replica saw the record change), or from the
 * start or the loss of the Lease when later; 0 before the first. */
uint64_t leader_takeover_ms(const struct leader *l);

/* A value of the Lease as read last: 0 with it copied, -ENOENT, or
 * -ENOSPC. */
int leader_value_get(const struct leader *l, const char *key, char *buf,
                     size_t size);
/* Sets a value, written with the next renew (leader only; a standby's
 * value is kept until it leads). 0, -EINVAL (key or value too long, too
 * many keys) or -ENOMEM. */
int leader_value_put(struct leader *l, const char *key, const char *value);

/* Stops trying; when leading, stops leading at once (changed_cb runs) and
 * clears the holder. done_cb(arg) runs when that answer came (or failed)
 * and the handles are closed. */
void leader_close(struct leader *l, void (*done_cb)(void *arg), void *arg);
void leader_destroy(struct leader *l);

#ifdef RUNFLEET_UNITTEST
/* One try as the retry timer would start it. */
void leader_try(struct leader *l);
/* The renew deadline check as its timer would run it. */
void leader_check_deadline(struct leader *l);
/* RFC 3339 with microseconds, as metav1.MicroTime. */
void leader_micro_time(uint64_t unix_us, char *out, size_t size);
#endif

#endif
