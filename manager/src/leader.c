/* Leader election on a Lease (see leader.h): one try per retry period, a
 * deadline timer that ends leadership the moment renewals stop succeeding,
 * and a release that clears the holder. */
#include "leader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "unittest.h"

#define LEADER_MOD "leader"
#define LEASE_API "/apis/coordination.k8s.io/v1/namespaces/"
#define LEADER_MAX_KEY 63
#define LEADER_MAX_VALUE 1024

enum leader_phase {
  PHASE_IDLE,
  PHASE_GET,
  PHASE_CREATE,
  PHASE_UPDATE,
  PHASE_RELEASE,
};

struct leader {
  uv_loop_t *loop;
  char *ns, *name, *identity;
  uint64_t lease_duration_ms, renew_deadline_ms, retry_period_ms;
  struct metrics *metrics;
  void (*changed_cb)(void *arg, int leading);
  void *arg;
  leader_request_fn request;
  void *request_arg;
  uint64_t (*now_fn)(void *arg);
  void *clock_arg;

  uv_timer_t retry;    /* one try per retry period */
  uv_timer_t deadline; /* ends leadership at lead_until */
  int timers_open;
  unsigned handles_open;
  int started;
  int closing;
  enum leader_phase phase; /* the request in flight, if any */
  uint64_t send_ms;        /* when the current try began */

  int leading;
  uint64_t lead_until; /* send time of the last renew + renew deadline */
  uint64_t since_ms;   /* start, or when leadership was lost */
  uint64_t takeover_ms;
  json_t *last; /* the Lease as read or written last */
  char observed[512];
  uint64_t observed_ms; /* when the record last changed, our clock */
  uint64_t other_ms;    /* ... last changed with another holder in it */
  char holder[LEADER_MAX_IDENTITY + 1];
  json_t *values;  /* the annotations of ours, as read last */
  json_t *pending; /* to write with the next update */

  void (*close_cb)(void *arg);
  void *close_arg;
};

static void try_done_cb(void *arg, const struct kube_response *resp);

static uint64_t now_ms(const struct leader *l)
{
  return l->now_fn != NULL ? l->now_fn(l->clock_arg) : uv_now(l->loop);
}

static int request_kube(void *arg, const char *method, const char *path,
                        const json_t *body, kube_done_cb cb, void *cb_arg)
{
  return kube_request(arg, method, path, NULL, body, NULL, cb, cb_arg);
}

int leader_default_identity(char *out, size_t size)
{
  const char *pod = getenv("POD_NAME");
  char host[256];

  if (pod != NULL && pod[0] != '\0') {
    if (strlen(pod) >= size || strlen(pod) > LEADER_MAX_IDENTITY)
      return -1;
    snprintf(out, size, "%s", pod);
    return 0;
  }
  if (gethostname(host, sizeof(host)) != 0)
    return -1;
  host[sizeof(host) - 1] = '\0';
  if (strlen(host) >= size || host[0] == '\0')
    return -1;
  snprintf(out, size, "%s", host);
  return 0;
}

/* Static outside the tests (unittest.h): declared ahead of their use. */
UNITTEST void leader_check_deadline(struct leader *l);
UNITTEST void leader_try(struct leader *l);

UNITTEST void leader_micro_time(uint64_t unix_us, char *out, size_t size)
{
  time_t s = (time_t)(unix_us / 1000000);
  struct tm tm;
  char date[32];

  gmtime_r(&s, &tm);
  strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, size, "%s.%06uZ", date, (unsigned)(unix_us % 1000000));
}

static void wall_micro_time(char *out, size_t size)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  leader_micro_time(
      (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u, out, size);
}

/* ---- state ---- */

static void metrics_update(struct leader *l)
{
  if (l->metrics == NULL)
    return;
  metrics_gauge_set(l->metrics, "runfleet_leader", "", l->leading ? 1 : 0);
}

/* The one place leadership changes. */
static void set_leading(struct leader *l, int leading, const char *why)
{
  uint64_t now = now_ms(l);

  if (l->leading == leading)
    return;
  l->leading = leading;
  if (leading) {
    /* From the last sign of life of the holder before us (or from the
     * start, or from our own loss of the Lease, when later). */
    l->takeover_ms =
        now - (l->other_ms > l->since_ms ? l->other_ms : l->since_ms);
    log_info(LEADER_MOD, "leading", LOG_S("lease", l->name),
             LOG_S("identity", l->identity), LOG_S("why", why),
             LOG_U("takeover_ms", l->takeover_ms));
    if (l->metrics != NULL) {
      metrics_counter_add(l->metrics, "runfleet_leader_transitions_total", "",
                          1);
      metrics_gauge_set(l->metrics, "runfleet_leader_takeover_seconds", "",
                        (double)l->takeover_ms / 1e3);
    }
  } else {
    l->since_ms = now;
    (void)uv_timer_stop(&l->deadline);
    log_warn(LEADER_MOD, "not leading", LOG_S("lease", l->name),
             LOG_S("identity", l->identity), LOG_S("why", why));
  }
  metrics_update(l);
  if (l->changed_cb != NULL)
    l->changed_cb(l->arg, leading);
}

static void deadline_cb(uv_timer_t *t)
{
  leader_check_deadline(t->data);
}

UNITTEST void leader_check_deadline(struct leader *l)
{
  if (l->leading && now_ms(l) >= l->lead_until)
    set_leading(l, 0, "renew deadline passed");
}

/* Remembers the record of lease; a change restarts the expiry clock. */
static void observe(struct leader *l, const json_t *lease)
{
  const json_t *spec = json_object_get(lease, "spec");
  const json_t *ann =
      json_object_get(json_object_get(lease, "metadata"), "annotations");
  const char *holder =
      json_string_value(json_object_get(spec, "holderIdentity"));
  const char *renew = json_string_value(json_object_get(spec, "renewTime"));
  json_int_t transitions =
      json_integer_value(json_object_get(spec, "leaseTransitions"));
  const char *key;
  json_t *v;
  char rec[sizeof(l->observed)];

  snprintf(l->holder, sizeof(l->holder), "%s", holder != NULL ? holder : "");
  snprintf(rec, sizeof(rec), "%s|%s|%lld", l->holder,
           renew != NULL ? renew : "", (long long)transitions);
  if (strcmp(rec, l->observed) != 0) {
    snprintf(l->observed, sizeof(l->observed), "%s", rec);
    l->observed_ms = now_ms(l);
    if (l->holder[0] != '\0' && strcmp(l->holder, l->identity) != 0)
      l->other_ms = l->observed_ms;
  }
  json_object_clear(l->values);
  json_object_foreach((json_t *)ann, key, v)
  {
    size_t n = strlen(LEADER_ANNOTATION_PREFIX);
    if (strncmp(key, LEADER_ANNOTATION_PREFIX, n) == 0 && json_is_string(v))
      json_object_set(l->values, key + n, v);
  }
}

/* Whether another holder's record may still be live: it changed less than
 * its lease duration ago, by our clock. */
static int other_holds(const struct leader *l, const json_t *lease)
{
  json_int_t secs = json_integer_value(
      json_object_get(json_object_get(lease, "spec"), "leaseDurationSeconds"));
  uint64_t dur = secs > 0 ? (uint64_t)secs * 1000u : l->lease_duration_ms;

  if (l->holder[0] == '\0' || strcmp(l->holder, l->identity) == 0)
    return 0;
  return now_ms(l) < l->observed_ms + dur;
}

static int lease_send(struct leader *l, enum leader_phase phase,
                      const char *method, const json_t *body)
{
  char path[512];
  int rc;

  if (phase == PHASE_CREATE)
    snprintf(path, sizeof(path), LEASE_API "%s/leases", l->ns);
  else
    snprintf(path, sizeof(path), LEASE_API "%s/leases/%s", l->ns, l->name);
  l->phase = phase;
  rc = l->request(l->request_arg, method, path, body, try_done_cb, l);
  if (rc != 0)
    l->phase = PHASE_IDLE;
  return rc;
}

/* The spec we hold: ourselves as holder, renewed now. acquire: 0 a
 * renewal, 1 taking over from another holder (or none, after a release):
 * one more transition, as client-go counts them; 2 a new Lease. */
static int fill_spec(struct leader *l, json_t *lease, int acquire)
{
  json_t *spec = json_object_get(lease, "spec");
  char now[40];

  if (!json_is_object(spec)) {
    spec = json_object();
    if (spec == NULL || json_object_set_new(lease, "spec", spec) != 0)
      return -ENOMEM;
  }
  wall_micro_time(now, sizeof(now));
  if (acquire) {
    json_int_t t =
        json_integer_value(json_object_get(spec, "leaseTransitions"));
    if (json_object_set_new(spec, "acquireTime", json_string(now)) != 0 ||
        json_object_set_new(spec, "leaseTransitions",
                            json_integer(acquire == 2 ? 0 : t + 1)) != 0)
      return -ENOMEM;
  }
  if (json_object_set_new(spec, "holderIdentity", json_string(l->identity)) !=
          0 ||
      json_object_set_new(
          spec, "leaseDurationSeconds",
          json_integer((json_int_t)((l->lease_duration_ms + 999) / 1000))) !=
          0 ||
      json_object_set_new(spec, "renewTime", json_string(now)) != 0)
    return -ENOMEM;
  return 0;
}

/* Adds the pending values as annotations of lease. */
static int fill_values(struct leader *l, json_t *lease)
{
  json_t *meta = json_object_get(lease, "metadata"), *ann;
  const char *key;
  json_t *v;
  char name[sizeof(LEADER_ANNOTATION_PREFIX) + LEADER_MAX_KEY];

  if (json_object_size(l->pending) == 0)
    return 0;
  ann = json_object_get(meta, "annotations");
  if (!json_is_object(ann)) {
    ann = json_object();
    if (ann == NULL || json_object_set_new(meta, "annotations", ann) != 0)
      return -ENOMEM;
  }
  json_object_foreach(l->pending, key, v)
  {
    snprintf(name, sizeof(name), "%s%s", LEADER_ANNOTATION_PREFIX, key);
    if (json_object_set(ann, name, v) != 0)
      return -ENOMEM;
  }
  return 0;
}

static int send_create(struct leader *l)
{
  json_t *lease = json_pack("{s:s, s:s, s:{s:s, s:s}}", "apiVersion",
                            "coordination.k8s.io/v1", "kind", "Lease",
                            "metadata", "name", l->name, "namespace", l->ns);
  int rc;

  if (lease == NULL)
    return -ENOMEM;
  l->holder[0] = '\0';
  rc = fill_spec(l, lease, 2);
  if (rc == 0)
    rc = fill_values(l, lease);
  if (rc == 0)
    rc = lease_send(l, PHASE_CREATE, "POST", lease);
  json_decref(lease);
  return rc;
}

/* The update of what was read: optimistic, on its resourceVersion. */
static int send_update(struct leader *l, const json_t *read)
{
  json_t *lease = json_deep_copy(read);
  int rc;

  if (lease == NULL)
    return -ENOMEM;
  rc = fill_spec(l, lease, strcmp(l->holder, l->identity) != 0);
  if (rc == 0)
    rc = fill_values(l, lease);
  if (rc == 0)
    rc = lease_send(l, PHASE_UPDATE, "PUT", lease);
  json_decref(lease);
  return rc;
}

static void keep_last(struct leader *l, const json_t *lease)
{
  json_t *copy = json_deep_copy(lease);

  if (copy == NULL)
    return;
  json_decref(l->last);
  l->last = copy;
}

/* What the GET found: create, update, or wait for the next try. */
static void got(struct leader *l, const struct kube_response *resp)
{
  int rc;

  if (resp->status == 404) {
    rc = send_create(l);
  } else if (resp->error != 0 || !json_is_object(resp->object)) {
    log_warn(LEADER_MOD, "cannot read the lease", LOG_S("lease", l->name),
             LOG_I("status", resp->status), LOG_S("error", resp->message));
    return;
  } else {
    keep_last(l, resp->object);
    observe(l, resp->object);
    if (other_holds(l, resp->object)) {
      if (l->leading)
        set_leading(l, 0, "held by another");
      return;
    }
    rc = send_update(l, resp->object);
  }
  if (rc != 0)
    log_warn(LEADER_MOD, "cannot send to the lease", LOG_S("lease", l->name),
             LOG_S("error", strerror(-rc)));
}

/* Values sent and now in the Lease are no longer pending. */
static void drop_written(struct leader *l)
{
  const char *key;
  json_t *v;
  void *tmp;

  json_object_foreach_safe(l->pending, tmp, key, v)
  {
    if (json_equal(v, json_object_get(l->values, key)))
      json_object_del(l->pending, key);
  }
}

/* A create or update came back. */
static void written(struct leader *l, const struct kube_response *resp)
{
  uint64_t now = now_ms(l);

  if (resp->error != 0 || !json_is_object(resp->object)) {
    log_warn(LEADER_MOD,
             resp->status == 409 ? "lost the race for the lease"
                                 : "cannot write the lease",
             LOG_S("lease", l->name), LOG_I("status", resp->status),
             LOG_S("error", resp->message));
    return;
  }
  keep_last(l, resp->object);
  observe(l, resp->object);
  drop_written(l);
  /* The others see the record change no earlier than we sent it: leading
   * until then plus the renew deadline is inside their lease duration.
   * An answer that came later than that holds nothing any more. */
  if (now >= l->send_ms + l->renew_deadline_ms) {
    log_warn(LEADER_MOD, "the lease was renewed too late to lead on it",
             LOG_S("lease", l->name), LOG_U("ms", now - l->send_ms));
    return;
  }
  l->lead_until = l->send_ms + l->renew_deadline_ms;
  (void)uv_timer_start(&l->deadline, deadline_cb, l->lead_until - now, 0);
  set_leading(
      l, 1, l->phase == PHASE_CREATE ? "created the lease" : "holds the lease");
}

static void finish_close(struct leader *l);
static void release(struct leader *l);

static void try_done_cb(void *arg, const struct kube_response *resp)
{
  struct leader *l = arg;
  enum leader_phase phase = l->phase;

  l->phase = PHASE_IDLE;
  if (phase == PHASE_RELEASE) {
    if (resp->error != 0)
      log_warn(LEADER_MOD, "cannot release the lease", LOG_S("lease", l->name),
               LOG_I("status", resp->status), LOG_S("error", resp->message));
    else
      log_info(LEADER_MOD, "released the lease", LOG_S("lease", l->name));
    finish_close(l);
    return;
  }
  if (phase == PHASE_GET && !l->closing)
    got(l, resp);
  else if (!l->closing)
    written(l, resp);
  else if (resp->error == 0 && json_is_object(resp->object))
    keep_last(l, resp->object); /* the newest resourceVersion to release */
  if (l->closing && l->phase == PHASE_IDLE)
    release(l);
}

UNITTEST void leader_try(struct leader *l)
{
  if (l->closing || l->phase != PHASE_IDLE)
    return; /* the last try is still out */
  leader_check_deadline(l);
  l->send_ms = now_ms(l);
  if (lease_send(l, PHASE_GET, "GET", NULL) != 0)
    log_warn(LEADER_MOD, "cannot send to the lease", LOG_S("lease", l->name),
             LOG_NONE);
}

static void retry_cb(uv_timer_t *t)
{
  leader_try(t->data);
}

/* ---- life ---- */

struct leader *leader_new(uv_loop_t *loop, const struct leader_options *o)
{
  struct leader *l;

  if (o->ns == NULL || o->name == NULL || o->identity == NULL ||
      o->identity[0] == '\0' || strlen(o->identity) > LEADER_MAX_IDENTITY ||
      o->retry_period_ms == 0 || o->renew_deadline_ms <= o->retry_period_ms ||
      o->lease_duration_ms <= o->renew_deadline_ms)
    return NULL;
  l = calloc(1, sizeof(*l));
  if (l == NULL)
    return NULL;
  l->loop = loop;
  l->ns = strdup(o->ns);
  l->name = strdup(o->name);
  l->identity = strdup(o->identity);
  l->values = json_object();
  l->pending = json_object();
  if (l->ns == NULL || l->name == NULL || l->identity == NULL ||
      l->values == NULL || l->pending == NULL) {
    leader_destroy(l);
    return NULL;
  }
  l->lease_duration_ms = o->lease_duration_ms;
  l->renew_deadline_ms = o->renew_deadline_ms;
  l->retry_period_ms = o->retry_period_ms;
  l->metrics = o->metrics;
  l->changed_cb = o->changed_cb;
  l->arg = o->arg;
  l->request = o->request != NULL ? o->request : request_kube;
  l->request_arg = o->request_arg;
  l->now_fn = o->now_ms;
  l->clock_arg = o->clock_arg;
  /* uv_timer_init only records the handle in the loop; it cannot fail. */
  (void)uv_timer_init(loop, &l->retry);
  (void)uv_timer_init(loop, &l->deadline);
  l->retry.data = l->deadline.data = l;
  l->timers_open = 1;
  if (l->metrics != NULL) {
    metrics_declare(l->metrics, "runfleet_leader", METRICS_GAUGE,
                    LEADER_METRIC_HELP, NULL, 0);
    metrics_declare(l->metrics, "runfleet_leader_transitions_total",
                    METRICS_COUNTER, LEADER_TRANSITIONS_HELP, NULL, 0);
    metrics_declare(l->metrics, "runfleet_leader_takeover_seconds",
                    METRICS_GAUGE,
                    "From the last renewal of the holder before (or the "
                    "start) to the last acquisition",
                    NULL, 0);
    metrics_update(l);
  }
  return l;
}

int leader_start(struct leader *l)
{
  int rc;

  l->since_ms = now_ms(l);
  l->started = 1;
  rc = uv_timer_start(&l->retry, retry_cb, 0, l->retry_period_ms);
  return rc;
}

int leader_is_leader(const struct leader *l)
{
  return l->leading && now_ms(l) < l->lead_until;
}

const char *leader_holder(const struct leader *l)
{
  return l->holder;
}

uint64_t leader_takeover_ms(const struct leader *l)
{
  return l->takeover_ms;
}

int leader_value_get(const struct leader *l, const char *key, char *buf,
                     size_t size)
{
  const json_t *v = json_object_get(l->pending, key);
  const char *s;

  if (v == NULL)
    v = json_object_get(l->values, key);
  s = json_string_value(v);
  if (s == NULL)
    return -ENOENT;
  if (strlen(s) >= size)
    return -ENOSPC;
  snprintf(buf, size, "%s", s);
  return 0;
}

int leader_value_put(struct leader *l, const char *key, const char *value)
{
  json_t *v;
  const char *c;

  if (strlen(key) == 0 || strlen(key) > LEADER_MAX_KEY ||
      strlen(value) > LEADER_MAX_VALUE)
    return -EINVAL;
  for (c = key; *c != '\0'; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
          *c == '.' || *c == '_'))
      return -EINVAL;
  if (json_object_get(l->pending, key) == NULL &&
      json_object_size(l->pending) >= LEADER_MAX_VALUES)
    return -EINVAL;
  v = json_string(value);
  if (v == NULL || json_object_set_new(l->pending, key, v) != 0)
    return -ENOMEM;
  return 0;
}

static void handle_closed_cb(uv_handle_t *h)
{
  struct leader *l = h->data;

  if (--l->handles_open == 0 && l->close_cb != NULL)
    l->close_cb(l->close_arg);
}

static void finish_close(struct leader *l)
{
  if (!l->timers_open) {
    if (l->close_cb != NULL)
      l->close_cb(l->close_arg);
    return;
  }
  l->timers_open = 0;
  l->handles_open = 2;
  uv_close((uv_handle_t *)&l->retry, handle_closed_cb);
  uv_close((uv_handle_t *)&l->deadline, handle_closed_cb);
}

/* Clears the holder (ours only) so a standby takes over at its next try,
 * as client-go's ReleaseOnCancel does. */
static void release(struct leader *l)
{
  json_t *lease, *spec;
  char now[40];

  if (l->last == NULL || strcmp(l->holder, l->identity) != 0) {
    finish_close(l);
    return;
  }
  lease = json_deep_copy(l->last);
  spec = json_object_get(lease, "spec");
  wall_micro_time(now, sizeof(now));
  if (lease == NULL || !json_is_object(spec) ||
      json_object_set_new(spec, "holderIdentity", json_string("")) != 0 ||
      json_object_set_new(spec, "leaseDurationSeconds", json_integer(1)) != 0 ||
      json_object_set_new(spec, "renewTime", json_string(now)) != 0 ||
      fill_values(l, lease) != 0 ||
      lease_send(l, PHASE_RELEASE, "PUT", lease) != 0)
    finish_close(l);
  json_decref(lease);
}

void leader_close(struct leader *l, void (*done_cb)(void *arg), void *arg)
{
  l->close_cb = done_cb;
  l->close_arg = arg;
  if (l->closing)
    return;
  l->closing = 1;
  (void)uv_timer_stop(&l->retry);
  set_leading(l, 0, "stopping");
  if (l->phase == PHASE_IDLE)
    release(l);
}

void leader_destroy(struct leader *l)
{
  if (l == NULL)
    return;
  json_decref(l->last);
  json_decref(l->values);
  json_decref(l->pending);
  free(l->ns);
  free(l->name);
  free(l->identity);
  free(l);
}
