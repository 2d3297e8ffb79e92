#include "backend_kube.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kube_health.h"
#include "kube_nodes.h"
#include "kube_pod.h"
#include "log.h"
#include "metrics.h"
#include "names.h"

#define KB_MOD "backend_kube"
#define KB_PENDING_METRIC "runfleet_pods_pending_seconds"
#define KB_BLOCKED_METRIC "runfleet_kube_pool_blocked"
#define KB_SECRET_NAME_MAX 80

/* A runner's life as the backend sees it; kb_set_state logs each change. */
enum kb_state {
  KB_CREATING, /* the pod's create request is out */
  KB_SECRET,   /* pod made, its secret's create request is out */
  KB_PENDING,  /* both exist, the pod is not bound */
  KB_PLACED,   /* bound to its node */
  KB_RUNNING,
  KB_ENDED, /* its end was reported; pod and secret being deleted */
};

static const char *const kb_state_names[] = {"creating", "secret",  "pending",
                                             "placed",   "running", "ended"};

/* What the backend keeps of a pool: copied, since a reload replaces the
 * config, and its failure state. */
struct kb_pool {
  char name[CAP_NAME_MAX];
  char image[256];
  unsigned cpu_milli;
  uint64_t memory;
  uint64_t pending_timeout_ms;
  unsigned pull_limit;    /* kubernetes.image_pull_failures */
  unsigned pull_failures; /* image pull failures in a row */
  unsigned failures;      /* pods replaced in a row, for backoff */
  uint64_t backoff_until_ms;
  int blocked; /* an image that never pulls: no more runners */
};

struct kb_runner {
  struct kb_runner *next;
  struct kube_backend *kb;
  char name[CAP_NAME_MAX];
  char pod[KUBE_NAME_MAX];
  char secret[KB_SECRET_NAME_MAX];
  char pool[CAP_NAME_MAX];
  uint64_t pending_timeout_ms;
  struct cap_placement where;
  enum kb_state state;
  json_t *secret_obj;    /* until it is sent: the JIT config, wiped */
  json_t *early_pod;     /* the pod as the watch showed it before the
                            Secret was made, applied after */
  unsigned requests_out; /* create/delete requests in flight */
  int pod_exists;        /* created, or seen by the watch */
  int secret_sent;       /* its create went out: it may exist */
  int pod_delete_sent;
  int secret_delete_sent;
  int stop_requested;
  int adopted;   /* found by the watch, not started by this run */
  int watched;   /* the pod watch has shown its pod */
  int uncertain; /* its create went unanswered: lost once the pod is gone */
  int64_t gh_id; /* its registration, from the spec or the pod */
  uint64_t pending_since_ms;
  char pending_reason[64];
  char pending_message[160];
};

struct kube_backend {
  struct backend base;
  uv_loop_t *loop;
  struct cfg_kubernetes access; /* borrowed: used once, in new */
  struct kube *kube;            /* NULL in tests */
  struct backend_kube_api api;
  void *api_arg;
  int (*may_act)(void *arg); /* the leader fence; NULL: always */
  void *may_act_arg;
  uint64_t (*now_ms)(void *arg);
  void *clock_arg;
  struct metrics *metrics;
  struct kube_nodes *nodes;
  struct kube_health *health; /* made once api is set */
  struct kube_watch *pod_watch, *node_watch, *other_watch;
  char fleet[NAMES_LABEL_MAX + 1];
  char selector[NAMES_LABEL_MAX + 64];
  char ns[NAMES_LABEL_MAX + 1];
  struct kb_runner *runners;
  struct kb_pool pools[CFG_MAX_POOLS];
  size_t npools;
  struct backend_item *items; /* list() results, names borrowed */
  uv_timer_t pending_timer;
  int timer_open;
  int pods_synced;
  /* Which of the watches have listed once: the runner pods are reported
   * (LISTED) only after the nodes and the other pods, or their adoption
   * would find no capacity to hold. */
  unsigned listed;
  int secrets_listed;
  int closing;
  int closed; /* close_cb ran, or new failed: no more events */
  enum backend_close_mode close_mode;
  void (*close_cb)(void *arg);
  void *close_arg;
  unsigned lists_out; /* the secret list at start */
  int close_step;     /* the handles' close is under way */
  int kube_closing, kube_closed;
};

static struct kube_backend *kb_of(struct backend *b)
{
  return (struct kube_backend *)b;
}

static uint64_t kb_now(const struct kube_backend *kb)
{
  return kb->now_ms != NULL ? kb->now_ms(kb->clock_arg) : uv_now(kb->loop);
}

static void kb_arm_timer(struct kube_backend *kb);

/* Every create and delete the backend sends passes here: a replica that
 * does not lead sends none (-EPERM, as a request that could not be sent). */
static int kb_create(struct kube_backend *kb, enum kube_kind kind,
                     const char *ns, const json_t *obj, kube_done_cb cb,
                     void *cb_arg)
{
  if (kb->may_act != NULL && !kb->may_act(kb->may_act_arg))
    return -EPERM;
  return kb->api.create(kb->api_arg, kind, ns, obj, cb, cb_arg);
}

/* The same ahead of the requests waiting for the rate limiter, where the
 * client can (create_first), else as kb_create. */
static int kb_create_first(struct kube_backend *kb, enum kube_kind kind,
                           const char *ns, const json_t *obj, kube_done_cb cb,
                           void *cb_arg)
{
  if (kb->may_act != NULL && !kb->may_act(kb->may_act_arg))
    return -EPERM;
  if (kb->api.create_first == NULL)
    return kb->api.create(kb->api_arg, kind, ns, obj, cb, cb_arg);
  return kb->api.create_first(kb->api_arg, kind, ns, obj, cb, cb_arg);
}

static int kb_delete(struct kube_backend *kb, enum kube_kind kind,
                     const char *ns, const char *name, kube_done_cb cb,
                     void *cb_arg)
{
  if (kb->may_act != NULL && !kb->may_act(kb->may_act_arg))
    return -EPERM;
  return kb->api.delete_(kb->api_arg, kind, ns, name, cb, cb_arg);
}
static void kb_maybe_closed(struct kube_backend *kb);

/* ---- runners ---- */

static struct kb_runner *runner_find(const struct kube_backend *kb,
                                     const char *name)
{
  struct kb_runner *r;

  for (r = kb->runners; r != NULL; r = r->next)
    if (strcmp(r->name, name) == 0)
      return r;
  return NULL;
}

static void pool_copy(struct kb_pool *p, const struct cfg_pool *pool)
{
  snprintf(p->name, sizeof(p->name), "%s", pool->name);
  snprintf(p->image, sizeof(p->image), "%s",
           pool->runner_image != NULL ? pool->runner_image : "");
  p->cpu_milli = pool->cpus * 1000u;
  p->memory = pool->memory_bytes;
  p->pending_timeout_ms = pool->kube.pending_timeout_ms;
  p->pull_limit = pool->kube.image_pull_failures;
}

/* The pool named name, or NULL when unknown and there is no room. With
 * pool, its settings are refreshed (a reload may have changed them). */
static struct kb_pool *pool_get(struct kube_backend *kb, const char *name,
                                const struct cfg_pool *pool)
{
  struct kb_pool *p = NULL;
  size_t i;

  for (i = 0; i < kb->npools && p == NULL; i++)
    if (strcmp(kb->pools[i].name, name) == 0)
      p = &kb->pools[i];
  if (p == NULL && pool != NULL && kb->npools < CFG_MAX_POOLS) {
    p = &kb->pools[kb->npools++];
    memset(p, 0, sizeof(*p));
  }
  if (p != NULL && pool != NULL)
    pool_copy(p, pool);
  return p;
}

static void kb_set_state(struct kb_runner *r, enum kb_state to)
{
  if (r->state == to)
    return;
  log_info(KB_MOD, "runner pod state", LOG_S("runner", r->name),
           LOG_S("pod", r->pod), LOG_S("from", kb_state_names[r->state]),
           LOG_S("to", kb_state_names[to]));
  r->state = to;
}

static void runner_wipe_secret(struct kb_runner *r)
{
  if (r->secret_obj == NULL)
    return;
  kube_secret_wipe(r->secret_obj);
  json_decref(r->secret_obj);
  r->secret_obj = NULL;
}

/* Frees r once nothing refers to it: its end reported, no request out, and
 * both objects gone (or never made). */
static void runner_maybe_free(struct kube_backend *kb, struct kb_runner *r)
{
  struct kb_runner **pp;

  if (r->state != KB_ENDED || r->requests_out > 0 || r->pod_exists) {
    kb_maybe_closed(kb); /* closing waits for answers, not for ends */
    return;
  }
  for (pp = &kb->runners; *pp != NULL; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  runner_wipe_secret(r);
  json_decref(r->early_pod);
  free(r);
  kb_maybe_closed(kb);
}

static void emit(struct kube_backend *kb, const struct backend_event *ev)
{
  if (kb->base.on_event != NULL && !kb->closed)
    kb->base.on_event(kb->base.ctx, ev);
}

static void report_end(struct kb_runner *r, enum backend_event_type type,
                       int status)
{
  struct backend_event ev;

  if (r->state == KB_ENDED)
    return;
  kb_set_state(r, KB_ENDED);
  runner_wipe_secret(r);
  memset(&ev, 0, sizeof(ev));
  ev.type = type;
  ev.name = r->name;
  ev.status = status;
  log_info(KB_MOD, type == BACKEND_EXITED ? "runner exited" : "runner lost",
           LOG_S("runner", r->name), LOG_I("status", status));
  emit(r->kb, &ev);
}

/* ---- requests ---- */

static void delete_done_cb(void *arg, const struct kube_response *resp);

struct kb_call {
  struct kb_runner *r;
  enum kube_kind kind;
};

static void send_delete(struct kb_runner *r, enum kube_kind kind)
{
  struct kube_backend *kb = r->kb;
  struct kb_call *call;
  int *sent = kind == KUBE_PODS ? &r->pod_delete_sent : &r->secret_delete_sent;

  if (*sent)
    return;
  /* A standby leaves it to the leader (or to its own takeover). */
  if (kb->may_act != NULL && !kb->may_act(kb->may_act_arg))
    return;
  call = calloc(1, sizeof(*call));
  if (call == NULL)
    return;
  call->r = r;
  call->kind = kind;
  *sent = 1;
  r->requests_out++;
  if (kb_delete(kb, kind, kb->ns, kind == KUBE_PODS ? r->pod : r->secret,
                delete_done_cb, call) != 0) {
    r->requests_out--;
    *sent = 0;
    free(call);
    log_warn(KB_MOD, "cannot send a delete", LOG_S("runner", r->name));
  }
}

/* The pod goes first: its Secret would be collected with it on a real
 * cluster, but runfleetd deletes what it made itself. */
static void delete_objects(struct kb_runner *r)
{
  if (r->pod_exists)
    send_delete(r, KUBE_PODS);
  if (r->secret_sent || r->adopted)
    send_delete(r, KUBE_SECRETS);
}

static void delete_done_cb(void *arg, const struct kube_response *resp)
{
  struct kb_call *call = arg;
  struct kb_runner *r = call->r;
  enum kube_kind kind = call->kind;
  const char *what = kind == KUBE_PODS ? "pod" : "secret";

  free(call);
  r->requests_out--;
  if (resp->error != 0 && resp->status != 404)
    log_warn(KB_MOD, "delete failed", LOG_S("runner", r->name),
             LOG_S("object", what), LOG_I("http_status", resp->status),
             LOG_S("reason", resp->reason), LOG_S("message", resp->message));
  /* A deleted pod is gone for us once the watch says so; without a watch
   * (closing) the answer is all there is. */
  if (kind == KUBE_PODS && (r->kb->closing || resp->status == 404))
    r->pod_exists = 0;
  /* An unanswered create kept the runner's place: the pod it may have made
   * holds its node's resources until it is deleted. Gone (404), or the
   * delete failed: that is all there is to know. Being deleted: the watch
   * that showed the pod shows it go; one that never saw it (created
   * during a gap, deleted before the relist) cannot, so the answer it is. */
  if (kind == KUBE_PODS && r->uncertain && r->state != KB_ENDED &&
      (resp->error != 0 || !r->watched || r->kb->closing)) {
    if (resp->error == 0 && !r->watched)
      log_warn(KB_MOD, "unanswered pod create: deleted before the watch saw it",
               LOG_S("runner", r->name), LOG_S("pod", r->pod));
    report_end(r, BACKEND_LOST, KUBE_ERR_UNCERTAIN);
  }
  runner_maybe_free(r->kb, r);
}

static void pod_changed(struct kube_backend *kb, struct kb_runner *r,
                        const json_t *pod);

static void secret_created_cb(void *arg, const struct kube_response *resp)
{
  struct kb_runner *r = arg;

  r->requests_out--;
  runner_wipe_secret(r);
  if (resp->error != 0) {
    log_warn(KB_MOD, "secret not created", LOG_S("runner", r->name),
             LOG_I("http_status", resp->status), LOG_S("reason", resp->reason),
             LOG_S("message", resp->message));
    /* Only a POST that may have taken effect leaves a secret to delete. */
    r->secret_sent = resp->error == KUBE_ERR_UNCERTAIN;
    report_end(r, BACKEND_LOST, resp->error);
    delete_objects(r);
    runner_maybe_free(r->kb, r);
    return;
  }
  if (r->state == KB_SECRET) {
    kb_set_state(r, KB_PENDING);
    r->pending_since_ms = kb_now(r->kb);
    kb_arm_timer(r->kb);
    if (r->early_pod != NULL) {
      json_t *pod = r->early_pod;

      r->early_pod = NULL;
      pod_changed(r->kb, r, pod);
      json_decref(pod);
    }
  }
  /* Closing with KEEP leaves it for the next runfleetd to adopt. */
  if (r->stop_requested || r->state == KB_ENDED)
    delete_objects(r);
  runner_maybe_free(r->kb, r);
}

/* The pod exists: its uid owns the Secret, so a real cluster collects the
 * Secret with it. The runner container waits for the Secret (its env
 * refers to it), which comes right after: ahead of the pods of a burst
 * still waiting for the rate limiter, or each pod would wait for all of
 * them. */
static void send_secret(struct kb_runner *r, const char *pod_uid)
{
  struct kube_backend *kb = r->kb;
  json_t *meta = json_object_get(r->secret_obj, "metadata");

  if (pod_uid != NULL)
    json_object_set_new(meta, "ownerReferences",
                        json_pack("[{s:s, s:s, s:s, s:s}]", "apiVersion", "v1",
                                  "kind", "Pod", "name", r->pod, "uid",
                                  pod_uid));
  kb_set_state(r, KB_SECRET);
  r->secret_sent = 1;
  r->requests_out++;
  if (kb_create_first(kb, KUBE_SECRETS, kb->ns, r->secret_obj,
                      secret_created_cb, r) != 0) {
    r->requests_out--;
    r->secret_sent = 0;
    runner_wipe_secret(r);
    report_end(r, BACKEND_LOST, -EIO);
    delete_objects(r);
  }
}

static void pod_created_cb(void *arg, const struct kube_response *resp)
{
  struct kb_runner *r = arg;
  const char *uid;

  r->requests_out--;
  if (resp->error != 0) {
    log_warn(KB_MOD, "pod not created", LOG_S("runner", r->name),
             LOG_I("http_status", resp->status), LOG_S("reason", resp->reason),
             LOG_S("message", resp->message));
    if (resp->error == KUBE_ERR_UNCERTAIN) {
      /* It may exist, holding its node's GPUs: deleted to be sure, and
       * the runner is lost (its place given back) once it is gone, so no
       * other pod is placed on resources the cluster still counts. */
      r->pod_exists = 1;
      r->uncertain = 1;
      send_delete(r, KUBE_PODS);
      if (r->pod_delete_sent) {
        runner_maybe_free(r->kb, r);
        return;
      }
    }
    report_end(r, BACKEND_LOST, resp->error);
    delete_objects(r);
    runner_maybe_free(r->kb, r);
    return;
  }
  r->pod_exists = 1;
  if (r->state != KB_CREATING) { /* ended meanwhile (watch, node lost) */
    delete_objects(r);
    runner_maybe_free(r->kb, r);
    return;
  }
  uid = json_string_value(
      json_object_get(json_object_get(resp->object, "metadata"), "uid"));
  send_secret(r, uid);
  runner_maybe_free(r->kb, r);
}

/* ---- start, stop, list, count ---- */

static int kb_start(struct backend *b, const struct backend_runner_spec *spec)
{
  struct kube_backend *kb = kb_of(b);
  struct kube_pod_params p;
  struct kb_runner *r;
  struct kb_pool *pool;
  json_t *pod;

  if (kb->closing || spec->pool == NULL || spec->placement == NULL)
    return -EINVAL;
  if (runner_find(kb, spec->name) != NULL)
    return -EEXIST;
  pool = pool_get(kb, spec->pool->name, spec->pool);
  if (!kube_nodes_usable(kb->nodes, spec->placement->node) ||
      (pool != NULL && (pool->blocked || kb_now(kb) < pool->backoff_until_ms)))
    return -ENOSPC;
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return -ENOMEM;
  r->kb = kb;
  snprintf(r->name, sizeof(r->name), "%s", spec->name);
  snprintf(r->pool, sizeof(r->pool), "%s", spec->pool->name);
  r->pending_timeout_ms = spec->pool->kube.pending_timeout_ms;
  r->where = *spec->placement;
  if (kube_pod_names(spec->name, r->pod, sizeof(r->pod), r->secret,
                     sizeof(r->secret)) != 0) {
    free(r);
    return -EINVAL;
  }
  memset(&p, 0, sizeof(p));
  p.fleet = kb->fleet;
  p.ns = kb->ns;
  p.runner = spec->name;
  p.pool = spec->pool;
  p.node = spec->placement->node;
  p.node_hostname = kube_nodes_hostname(kb->nodes, spec->placement->node);
  p.gpus = spec->placement->gpus;
  p.ngpus = spec->placement->ngpus;
  p.jit_config = spec->jit_config;
  p.env = spec->env;
  p.gh_id = spec->gh_id;
  r->gh_id = spec->gh_id;
  pod = kube_pod_build(&p, r->pod, r->secret);
  r->secret_obj = kube_secret_build(&p, r->secret);
  if (pod == NULL || r->secret_obj == NULL) {
    json_decref(pod);
    runner_wipe_secret(r);
    free(r);
    return -ENOMEM;
  }
  r->requests_out++;
  if (kb_create(kb, KUBE_PODS, kb->ns, pod, pod_created_cb, r) != 0) {
    json_decref(pod);
    runner_wipe_secret(r);
    free(r);
    return -EIO;
  }
  json_decref(pod);
  r->state = KB_CREATING;
  r->next = kb->runners;
  kb->runners = r;
  log_info(KB_MOD, "creating runner pod", LOG_S("runner", r->name),
           LOG_S("pod", r->pod), LOG_S("node", r->where.node),
           LOG_U("gpus", r->where.ngpus));
  return 0;
}

static int kb_stop(struct backend *b, const char *name)
{
  struct kube_backend *kb = kb_of(b);
  struct kb_runner *r = runner_find(kb, name);

  if (r == NULL || r->state == KB_ENDED)
    return -ENOENT;
  r->stop_requested = 1;
  log_info(KB_MOD, "stopping runner pod", LOG_S("runner", r->name),
           LOG_S("pod", r->pod));
  /* EXITED comes with the pod's deletion (or its end) from the watch; a
   * pod still being created is deleted once its create returns. */
  if (r->state != KB_CREATING && r->state != KB_SECRET)
    delete_objects(r);
  return 0;
}

static size_t kb_list(struct backend *b, struct backend_item *items, size_t max)
{
  struct kube_backend *kb = kb_of(b);
  struct kb_runner *r;
  size_t n = 0;

  for (r = kb->runners; r != NULL; r = r->next) {
    if (r->state == KB_ENDED || !r->pod_exists)
      continue;
    if (n < max) {
      items[n].name = r->name;
      items[n].pool = r->pool;
      items[n].where = r->where;
      items[n].running = r->state == KB_RUNNING;
      items[n].gh_id = r->gh_id;
    }
    n++;
  }
  return n;
}

static size_t kb_count(struct backend *b)
{
  struct kube_backend *kb = kb_of(b);
  struct kb_runner *r;
  size_t n = 0;

  for (r = kb->runners; r != NULL; r = r->next)
    n += r->state != KB_ENDED;
  return n;
}

static int kb_accepts(struct backend *b, const struct cfg_pool *pool)
{
  struct kube_backend *kb = kb_of(b);
  const struct kb_pool *p = pool_get(kb, pool->name, pool);

  return p == NULL || (!p->blocked && kb_now(kb) >= p->backoff_until_ms);
}

/* ---- pod watch ---- */

static const char *str_at(const json_t *obj, const char *a, const char *b)
{
  const json_t *v = json_object_get(obj, a);

  return json_string_value(b != NULL ? json_object_get(v, b) : v);
}

static void observe_pending(struct kube_backend *kb, struct kb_runner *r,
                            const char *outcome)
{
  char labels[CAP_NAME_MAX * 2 + 64], pool[CAP_NAME_MAX * 2];
  uint64_t now = kb_now(kb);
  double secs;

  if (kb->metrics == NULL || r->pending_since_ms == 0)
    return;
  secs = now > r->pending_since_ms ? (double)(now - r->pending_since_ms) / 1e3
                                   : 0.0;
  metrics_escape(r->pool, pool, sizeof(pool));
  snprintf(labels, sizeof(labels), "pool=\"%s\",outcome=\"%s\"", pool, outcome);
  metrics_histogram_observe(kb->metrics, KB_PENDING_METRIC, labels, secs);
}

static void pool_started(struct kube_backend *kb, const char *pool)
{
  struct kb_pool *p = pool_get(kb, pool, NULL);

  if (p == NULL)
    return;
  p->failures = 0;
  p->pull_failures = 0;
  p->backoff_until_ms = 0;
}

static void set_blocked_metric(struct kube_backend *kb, const char *pool,
                               int blocked)
{
  char labels[CAP_NAME_MAX * 2 + 64], esc[CAP_NAME_MAX * 2];

  if (kb->metrics == NULL)
    return;
  metrics_escape(pool, esc, sizeof(esc));
  snprintf(labels, sizeof(labels), "pool=\"%s\"", esc);
  metrics_gauge_set(kb->metrics, KB_BLOCKED_METRIC, labels, blocked);
}

/* A pod that never started: the pool backs off, and a pool whose image
 * does not pull image_pull_failures times in a row stops. */
static void pool_failed(struct kube_backend *kb, struct kb_runner *r)
{
  struct kb_pool *p = pool_get(kb, r->pool, NULL);
  uint64_t delay = KUBE_BACKEND_BACKOFF_BASE_MS;
  unsigned i;

  if (p == NULL)
    return;
  p->failures++;
  for (i = 1; i < p->failures && delay < KUBE_BACKEND_BACKOFF_MAX_MS; i++)
    delay *= 2;
  if (delay > KUBE_BACKEND_BACKOFF_MAX_MS)
    delay = KUBE_BACKEND_BACKOFF_MAX_MS;
  p->backoff_until_ms = kb_now(kb) + delay;
  if (kube_reason_is_image_pull(r->pending_reason))
    p->pull_failures++;
  else
    p->pull_failures = 0;
  if (!p->blocked && p->pull_failures >= p->pull_limit) {
    p->blocked = 1;
    set_blocked_metric(kb, r->pool, 1);
    log_error(KB_MOD,
              "the pool's image does not pull; no more runners of the pool "
              "until runfleetd restarts",
              LOG_S("pool", r->pool), LOG_S("image", p->image),
              LOG_U("failures", p->pull_failures),
              LOG_S("message", r->pending_message));
  }
}

/* A pod of this fleet the backend did not start in this run (adoption). */
static struct kb_runner *adopt(struct kube_backend *kb, const json_t *pod)
{
  const json_t *meta = json_object_get(pod, "metadata");
  const json_t *labels = json_object_get(meta, "labels");
  const char *name = str_at(meta, "annotations", KUBE_ANNOTATION_RUNNER);
  const char *pod_name = str_at(meta, "name", NULL);
  const char *pool =
      json_string_value(json_object_get(labels, KUBE_LABEL_POOL));
  const char *node = str_at(pod, "spec", "nodeName");
  const char *gpus = str_at(meta, "annotations", KUBE_ANNOTATION_GPUS);
  const char *gh_id = str_at(meta, "annotations", KUBE_ANNOTATION_RUNNER_ID);
  const struct kb_pool *p;
  struct kb_runner *r;

  if (name == NULL || pod_name == NULL || pool == NULL)
    return NULL;
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  r->kb = kb;
  r->adopted = 1;
  r->pod_exists = 1;
  r->gh_id = gh_id != NULL ? strtoll(gh_id, NULL, 10) : 0;
  snprintf(r->name, sizeof(r->name), "%s", name);
  snprintf(r->pod, sizeof(r->pod), "%s", pod_name);
  snprintf(r->secret, sizeof(r->secret), "%s-jit", pod_name);
  snprintf(r->pool, sizeof(r->pool), "%s", pool);
  p = pool_get(kb, pool, NULL);
  r->pending_timeout_ms =
      p != NULL ? p->pending_timeout_ms : CFG_DEFAULT_POOL_PENDING_TIMEOUT_MS;
  if (node == NULL)
    node = str_at(meta, "annotations", KUBE_ANNOTATION_NODE);
  snprintf(r->where.node, sizeof(r->where.node), "%s",
           node != NULL ? node : "");
  while (gpus != NULL && *gpus != '\0' && r->where.ngpus < CAP_MAX_NODE_GPUS) {
    char *end;
    long g = strtol(gpus, &end, 10);

    if (end == gpus)
      break;
    r->where.gpus[r->where.ngpus++] = (int)g;
    gpus = *end == ',' ? end + 1 : end;
  }
  if (p != NULL) {
    r->where.cpu_milli = p->cpu_milli;
    r->where.memory = p->memory;
  }
  r->state = KB_PENDING;
  r->pending_since_ms = kb_now(kb);
  r->next = kb->runners;
  kb->runners = r;
  log_info(KB_MOD, "found a runner pod of this fleet", LOG_S("runner", r->name),
           LOG_S("pod", r->pod), LOG_S("node", r->where.node));
  return r;
}

static struct kb_runner *runner_of_pod(struct kube_backend *kb,
                                       const json_t *pod)
{
  const json_t *meta = json_object_get(pod, "metadata");
  const char *name = str_at(meta, "annotations", KUBE_ANNOTATION_RUNNER);
  const char *pod_name = str_at(meta, "name", NULL);
  struct kb_runner *r = name != NULL ? runner_find(kb, name) : NULL;

  if (r != NULL && pod_name != NULL && strcmp(r->pod, pod_name) == 0)
    return r;
  return NULL;
}

static void pod_placed(struct kb_runner *r, const char *node)
{
  struct backend_event ev;

  if (strcmp(node, r->where.node) != 0)
    log_warn(KB_MOD, "pod bound to another node than capacity chose",
             LOG_S("runner", r->name), LOG_S("chosen", r->where.node),
             LOG_S("node", node));
  kb_set_state(r, KB_PLACED);
  observe_pending(r->kb, r, "bound");
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_PLACED;
  ev.name = r->name;
  ev.node = node;
  ev.gpus = r->where.gpus;
  ev.ngpus = r->where.ngpus;
  emit(r->kb, &ev);
}

static void pod_running(struct kb_runner *r)
{
  struct backend_event ev;

  kb_set_state(r, KB_RUNNING);
  pool_started(r->kb, r->pool);
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_RUNNING;
  ev.name = r->name;
  emit(r->kb, &ev);
}

static void pod_changed(struct kube_backend *kb, struct kb_runner *r,
                        const json_t *pod)
{
  const char *phase = str_at(pod, "status", "phase");
  const char *node = str_at(pod, "spec", "nodeName");

  r->pod_exists = 1;
  r->watched = 1;
  if (phase == NULL)
    phase = "Pending";
  if (r->state == KB_ENDED)
    return;
  if (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0) {
    int code = kube_pod_exit_code(pod, phase);

    if (r->adopted && r->state == KB_PENDING && !kb->pods_synced) {
      /* Finished while no runfleetd watched: only the clean-up is left. */
      kb_set_state(r, KB_ENDED);
    } else {
      report_end(r, BACKEND_EXITED, r->stop_requested && code == 0 ? 0 : code);
    }
    delete_objects(r);
    return;
  }
  if (r->state == KB_CREATING || r->state == KB_SECRET) {
    /* Kept for when the Secret is made: the pod may be bound, even
     * Running, already, and no later event need come. */
    json_decref(r->early_pod);
    r->early_pod = json_incref((json_t *)pod);
    return;
  }
  if (node != NULL && node[0] != '\0' && r->state == KB_PENDING) {
    if (r->adopted)
      snprintf(r->where.node, sizeof(r->where.node), "%s", node);
    pod_placed(r, node);
  }
  if (strcmp(phase, "Running") == 0 && r->state == KB_PLACED) {
    pod_running(r);
    return;
  }
  if (r->state <= KB_PLACED) {
    kube_pod_waiting(pod, r->pending_reason, sizeof(r->pending_reason),
                     r->pending_message, sizeof(r->pending_message));
    if (r->pending_reason[0] != '\0')
      log_info(KB_MOD, "runner pod waits", LOG_S("runner", r->name),
               LOG_S("reason", r->pending_reason),
               LOG_S("message", r->pending_message));
  }
}

static void pod_event(struct kube_backend *kb, enum kube_event_type type,
                      const json_t *pod)
{
  struct kb_runner *r = runner_of_pod(kb, pod);

  if (type == KUBE_EVENT_DELETED) {
    if (r == NULL)
      return;
    r->pod_exists = 0;
    if (r->state != KB_ENDED) {
      /* Deleted as asked: the runner was stopped. Otherwise it vanished. */
      if (r->stop_requested)
        report_end(r, BACKEND_EXITED, 128 + 15);
      else
        report_end(r, BACKEND_LOST, -ENOENT);
    }
    delete_objects(r); /* its secret */
    runner_maybe_free(kb, r);
    return;
  }
  if (r == NULL) {
    if (kb->closing)
      return;
    r = adopt(kb, pod);
    if (r == NULL)
      return;
  }
  pod_changed(kb, r, pod);
  kb_arm_timer(kb);
  runner_maybe_free(kb, r);
}

/* A deleted node takes its runners with it. */
static void node_lost(struct kube_backend *kb, const char *node)
{
  struct kb_runner *r, *next;

  for (r = kb->runners; r != NULL; r = next) {
    next = r->next;
    if (r->state == KB_ENDED || strcmp(r->where.node, node) != 0)
      continue;
    log_warn(KB_MOD, "node of a runner is gone", LOG_S("runner", r->name),
             LOG_S("node", node));
    report_end(r, BACKEND_LOST, -EHOSTDOWN);
    if (r->state == KB_ENDED)
      delete_objects(r);
    runner_maybe_free(kb, r);
  }
}

static void node_event(struct kube_backend *kb, enum kube_event_type type,
                       const json_t *node)
{
  const char *name = str_at(node, "metadata", "name");

  kube_nodes_node_event(kb->nodes, type, node);
  if (type == KUBE_EVENT_DELETED && name != NULL)
    node_lost(kb, name);
}

/* ---- pending timeouts ---- */

static uint64_t pending_deadline(const struct kb_runner *r)
{
  return r->pending_since_ms + r->pending_timeout_ms;
}

static int waits(const struct kb_runner *r)
{
  return r->state == KB_PENDING || r->state == KB_PLACED;
}

static void pending_check(struct kube_backend *kb)
{
  uint64_t now = kb_now(kb);
  struct kb_runner *r, *next;

  for (r = kb->runners; r != NULL; r = next) {
    next = r->next;
    if (!waits(r) || now < pending_deadline(r))
      continue;
    log_warn(
        KB_MOD, "runner pod did not start in time; replacing it",
        LOG_S("runner", r->name), LOG_S("pod", r->pod), LOG_S("pool", r->pool),
        LOG_S("reason", r->pending_reason[0] ? r->pending_reason : "Pending"),
        LOG_S("message", r->pending_message));
    observe_pending(kb, r, "timeout");
    pool_failed(kb, r);
    report_end(r, BACKEND_LOST, -ETIMEDOUT);
    delete_objects(r);
    runner_maybe_free(kb, r);
  }
  kb_arm_timer(kb);
}

static void pending_timer_cb(uv_timer_t *t)
{
  pending_check(t->data);
}

/* Armed for the earliest deadline while some pod waits; idle otherwise. */
static void kb_arm_timer(struct kube_backend *kb)
{
  uint64_t now = kb_now(kb), first = UINT64_MAX;
  struct kb_runner *r;

  if (!kb->timer_open || kb->closing)
    return;
  for (r = kb->runners; r != NULL; r = r->next)
    if (waits(r) && pending_deadline(r) < first)
      first = pending_deadline(r);
  if (first == UINT64_MAX) {
    uv_timer_stop(&kb->pending_timer);
    return;
  }
  uv_timer_start(&kb->pending_timer, pending_timer_cb,
                 first > now ? first - now : 0, 0);
}

/* ---- restart: secrets without a pod ---- */

static void secrets_listed(struct kube_backend *kb, const json_t *list)
{
  const json_t *item;
  size_t i;

  json_array_foreach(json_object_get(list, "items"), i, item)
  {
    const char *name = str_at(item, "metadata", "name");
    const char *runner = json_string_value(json_object_get(
        json_object_get(json_object_get(item, "metadata"), "annotations"),
        KUBE_ANNOTATION_RUNNER));
    struct kb_runner *r = runner != NULL ? runner_find(kb, runner) : NULL;
    struct kb_call *call;

    if (name == NULL || (r != NULL && strcmp(r->secret, name) == 0))
      continue;
    log_info(KB_MOD, "deleting a runner secret without a pod",
             LOG_S("secret", name));
    call = calloc(1, sizeof(*call));
    if (call == NULL)
      return;
    /* A stand-in runner carries the request, freed with its answer. */
    call->r = calloc(1, sizeof(*call->r));
    if (call->r == NULL) {
      free(call);
      return;
    }
    call->kind = KUBE_SECRETS;
    call->r->kb = kb;
    call->r->state = KB_ENDED;
    call->r->requests_out = 1;
    snprintf(call->r->name, sizeof(call->r->name), "%s", name);
    call->r->next = kb->runners;
    kb->runners = call->r;
    if (kb_delete(kb, KUBE_SECRETS, kb->ns, name, delete_done_cb, call) != 0) {
      call->r->requests_out = 0;
      runner_maybe_free(kb, call->r);
      free(call);
    }
  }
}

static void secrets_list_cb(void *arg, const struct kube_response *resp)
{
  struct kube_backend *kb = arg;

  kb->lists_out--;
  if (!kb->closing && resp->error == 0)
    secrets_listed(kb, resp->object);
  else if (resp->error != 0 && resp->error != -ECANCELED)
    log_warn(KB_MOD, "cannot list runner secrets",
             LOG_I("http_status", resp->status));
  kb_maybe_closed(kb);
}

/* The fleet's Secrets, to delete those without a pod. */
static void list_secrets(struct kube_backend *kb)
{
  char path[256], query[NAMES_LABEL_MAX + 96];

  if (kb->kube == NULL || kb->secrets_listed)
    return;
  kb->secrets_listed = 1;
  if (kube_path(KUBE_SECRETS, kb->ns, NULL, path, sizeof(path)) != 0)
    return;
  snprintf(query, sizeof(query), "labelSelector=%s", kb->selector);
  if (kube_request(kb->kube, "GET", path, query, NULL, NULL, secrets_list_cb,
                   kb) == 0)
    kb->lists_out++;
}

static void pods_synced(struct kube_backend *kb)
{
  struct backend_event ev;

  if (kb->pods_synced)
    return;
  kb->pods_synced = 1;
  log_info(KB_MOD, "runner pods listed", LOG_U("runners", kb_count(&kb->base)));
  memset(&ev, 0, sizeof(ev));
  ev.type = BACKEND_LISTED;
  emit(kb, &ev);
  if (kb->may_act == NULL || kb->may_act(kb->may_act_arg))
    list_secrets(kb);
}

void backend_kube_takeover(struct backend *b)
{
  struct kube_backend *kb = kb_of(b);
  struct kb_runner *r;

  if (kb->closing)
    return;
  /* What ended while the deletes were fenced; deletes in flight and
   * runners still running are left as they are. */
  for (r = kb->runners; r != NULL; r = r->next)
    if (r->state == KB_ENDED && r->requests_out == 0)
      delete_objects(r);
  kb_arm_timer(kb);
  kb->secrets_listed = 0;
  if (kb->pods_synced)
    list_secrets(kb);
}

/* ---- close ---- */

static void kube_closed_cb(void *arg)
{
  struct kube_backend *kb = arg;

  kb->kube_closed = 1;
  kb_maybe_closed(kb);
}

static void timer_closed_cb(uv_handle_t *h)
{
  struct kube_backend *kb = h->data;

  kb->timer_open = 0;
  kb_maybe_closed(kb);
}

/* The last step, on a loop turn of its own: kube_close fails what is in
 * flight, and the backend's answers to those failures are easier to
 * follow outside another of the client's callbacks (kube_close itself is
 * safe there: the call being answered is not answered twice). */
static void close_step_cb(uv_timer_t *t)
{
  struct kube_backend *kb = t->data;

  if (kb->kube != NULL) {
    kb->kube_closing = 1;
    kube_close(kb->kube, kube_closed_cb, kb);
  }
  uv_close((uv_handle_t *)&kb->pending_timer, timer_closed_cb);
}

/* The backend is closed once its requests are answered; then its timer
 * and its client are closed. */
static void kb_maybe_closed(struct kube_backend *kb)
{
  void (*cb)(void *);
  struct kb_runner *r;

  if (!kb->closing || kb->closed || kb->lists_out > 0)
    return;
  for (r = kb->runners; r != NULL; r = r->next)
    if (r->requests_out > 0)
      return;
  if (kb->timer_open) {
    if (!kb->close_step) {
      kb->close_step = 1;
      uv_timer_start(&kb->pending_timer, close_step_cb, 0, 0);
    }
    return;
  }
  if (kb->kube != NULL && !kb->kube_closed)
    return;
  kb->closed = 1;
  cb = kb->close_cb;
  kb->close_cb = NULL;
  if (cb != NULL)
    cb(kb->close_arg);
}

static void stop_watches(struct kube_backend *kb)
{
  if (kb->pod_watch != NULL)
    kube_watch_stop(kb->pod_watch);
  if (kb->node_watch != NULL)
    kube_watch_stop(kb->node_watch);
  if (kb->other_watch != NULL)
    kube_watch_stop(kb->other_watch);
  kb->pod_watch = kb->node_watch = kb->other_watch = NULL;
}

static void kb_close(struct backend *b, enum backend_close_mode mode,
                     void (*done_cb)(void *arg), void *arg)
{
  struct kube_backend *kb = kb_of(b);
  struct kb_runner *r;

  kb->closing = 1;
  kb->close_mode = mode;
  kb->close_cb = done_cb;
  kb->close_arg = arg;
  stop_watches(kb);
  for (r = kb->runners; r != NULL; r = r->next) {
    if (mode == BACKEND_CLOSE_STOP && r->state != KB_ENDED) {
      r->stop_requested = 1;
      report_end(r, BACKEND_EXITED, 128 + 15);
    }
    if (r->state == KB_ENDED)
      delete_objects(r);
  }
  if (kb->timer_open)
    uv_timer_stop(&kb->pending_timer);
  kb_maybe_closed(kb);
}

static void kb_destroy(struct backend *b)
{
  struct kube_backend *kb = kb_of(b);
  struct kb_runner *r, *next;

  stop_watches(kb);
  for (r = kb->runners; r != NULL; r = next) {
    next = r->next;
    runner_wipe_secret(r);
    json_decref(r->early_pod);
    free(r);
  }
  if (kb->kube != NULL)
    kube_destroy(kb->kube);
  kube_health_destroy(kb->health);
  kube_nodes_destroy(kb->nodes);
  free(kb->items);
  free(kb);
}

static const char *kb_waiting(struct backend *b, const char *name)
{
  const struct kb_runner *r = runner_find(kb_of(b), name);

  if (r == NULL || r->state == KB_ENDED || r->state == KB_RUNNING ||
      r->pending_reason[0] == '\0')
    return NULL;
  return r->pending_reason;
}

static int kb_synced(struct backend *b)
{
  return kb_of(b)->pods_synced;
}

static int kb_gpu_unhealthy(struct backend *b,
                            const struct backend_gpu_report *r)
{
  struct kube_backend *kb = kb_of(b);

  if (kb->closing || kb->health == NULL)
    return -ESHUTDOWN;
  /* A cordon or taint is a write like any other: the leader's alone. */
  if (kb->may_act != NULL && !kb->may_act(kb->may_act_arg))
    return -EPERM;
  return kube_health_report(kb->health, r);
}

static const struct backend_ops kube_ops = {
    .start = kb_start,
    .stop = kb_stop,
    .list = kb_list,
    .count = kb_count,
    .close = kb_close,
    .destroy = kb_destroy,
    .accepts = kb_accepts,
    .waiting = kb_waiting,
    .synced = kb_synced,
    .gpu_unhealthy = kb_gpu_unhealthy,
};

/* ---- creation ---- */

static int api_create(void *arg, enum kube_kind kind, const char *ns,
                      const json_t *obj, kube_done_cb cb, void *cb_arg)
{
  return kube_create(arg, kind, ns, obj, cb, cb_arg);
}

static int api_create_first(void *arg, enum kube_kind kind, const char *ns,
                            const json_t *obj, kube_done_cb cb, void *cb_arg)
{
  return kube_create_first(arg, kind, ns, obj, cb, cb_arg);
}

static int api_delete(void *arg, enum kube_kind kind, const char *ns,
                      const char *name, kube_done_cb cb, void *cb_arg)
{
  return kube_delete(arg, kind, ns, name, cb, cb_arg);
}

static int api_get(void *arg, enum kube_kind kind, const char *ns,
                   const char *name, kube_done_cb cb, void *cb_arg)
{
  return kube_get(arg, kind, ns, name, cb, cb_arg);
}

static int api_patch(void *arg, enum kube_kind kind, const char *ns,
                     const char *name, enum kube_patch_type type,
                     const json_t *patch, kube_done_cb cb, void *cb_arg)
{
  return kube_patch(arg, kind, ns, name, type, patch, cb, cb_arg);
}

/* Once the requests have somewhere to go. */
static int kb_health_setup(struct kube_backend *kb)
{
  kb->health =
      kube_health_new(&kb->access, kb->nodes, &kb->api, kb->api_arg, kb->fleet);
  return kb->health != NULL ? 0 : -ENOMEM;
}

static struct kube_backend *kb_alloc(uv_loop_t *loop, const struct config *cfg,
                                     struct capacity *cap,
                                     backend_event_cb on_event, void *ctx)
{
  struct kube_backend *kb = calloc(1, sizeof(*kb));
  size_t i;

  if (kb == NULL)
    return NULL;
  kb->base.ops = &kube_ops;
  kb->base.on_event = on_event;
  kb->base.ctx = ctx;
  kb->base.capacity = cap;
  kb->loop = loop;
  kb->access = cfg->kubernetes;
  snprintf(kb->ns, sizeof(kb->ns), "%s",
           cfg->kubernetes.namespace_ != NULL ? cfg->kubernetes.namespace_
                                              : CFG_DEFAULT_KUBE_NAMESPACE);
  for (i = 0; i < cfg->npools; i++)
    pool_get(kb, cfg->pools[i].name, &cfg->pools[i]);
  /* Replicas of one fleet share the Lease: its name names the fleet. */
  names_label_value(
      cfg->kubernetes.lease_name != NULL ? cfg->kubernetes.lease_name
                                         : CFG_DEFAULT_LEASE_NAME,
      strlen(cfg->kubernetes.lease_name != NULL ? cfg->kubernetes.lease_name
                                                : CFG_DEFAULT_LEASE_NAME),
      kb->fleet, sizeof(kb->fleet));
  snprintf(kb->selector, sizeof(kb->selector), "%s%%3D%s", KUBE_LABEL_FLEET,
           kb->fleet);
  kb->nodes = kube_nodes_new(cfg, cap, kb->fleet);
  if (kb->nodes == NULL) {
    free(kb);
    return NULL;
  }
  /* uv_timer_init only records the handle in the loop; it cannot fail. */
  (void)uv_timer_init(loop, &kb->pending_timer);
  kb->pending_timer.data = kb;
  kb->timer_open = 1;
  return kb;
}

void backend_kube_set_fence(struct backend *b, int (*may_act)(void *arg),
                            void *arg)
{
  struct kube_backend *kb = kb_of(b);

  kb->may_act = may_act;
  kb->may_act_arg = arg;
}

void backend_kube_set_metrics(struct backend *b, struct metrics *m)
{
  static const double buckets[] = {1, 5, 15, 30, 60, 120, 300, 600, 1800};
  struct kube_backend *kb = kb_of(b);

  kb->metrics = m;
  if (m == NULL)
    return;
  /* The client was made (and its first lists sent) with the backend,
   * before the registry was at hand; their answers come in later turns
   * of the loop and are counted. */
  if (kb->kube != NULL)
    kube_set_metrics(kb->kube, m);
  metrics_declare(m, KB_PENDING_METRIC, METRICS_HISTOGRAM,
                  "Seconds runner pods were Pending, by pool and outcome "
                  "(bound, timeout).",
                  buckets, sizeof(buckets) / sizeof(buckets[0]));
  metrics_declare(m, KB_BLOCKED_METRIC, METRICS_GAUGE,
                  "1 while a pool takes no runners because its image does "
                  "not pull.",
                  NULL, 0);
}

#ifdef RUNFLEET_UNITTEST
/* The seams of backend_kube.h, for tests only. */
struct backend *backend_kube_new_with(
    uv_loop_t *loop, const struct config *cfg, struct capacity *cap,
    backend_event_cb on_event, void *ctx, const struct backend_kube_api *api,
    void *api_arg, uint64_t (*now_ms)(void *arg), void *clock_arg)
{
  struct kube_backend *kb = kb_alloc(loop, cfg, cap, on_event, ctx);

  if (kb == NULL)
    return NULL;
  kb->api = *api;
  kb->api_arg = api_arg;
  kb->now_ms = now_ms;
  kb->clock_arg = clock_arg;
  /* Out of memory here leaves gpu_unhealthy answering -ESHUTDOWN. */
  (void)kb_health_setup(kb);
  return &kb->base;
}

void backend_kube_pod_event(struct backend *b, enum kube_event_type type,
                            json_t *pod)
{
  pod_event(kb_of(b), type, pod);
}

void backend_kube_node_event(struct backend *b, enum kube_event_type type,
                             json_t *node)
{
  node_event(kb_of(b), type, node);
}

void backend_kube_other_pod_event(struct backend *b, enum kube_event_type type,
                                  json_t *pod)
{
  kube_nodes_pod_event(kb_of(b)->nodes, type, pod);
}

void backend_kube_pods_synced(struct backend *b)
{
  pods_synced(kb_of(b));
}

void backend_kube_secrets_listed(struct backend *b, const json_t *list)
{
  secrets_listed(kb_of(b), list);
}

void backend_kube_check_pending(struct backend *b)
{
  pending_check(kb_of(b));
}
#endif

/* The reflectors' callbacks: thin, into the handlers above. */
static void pod_watch_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  pod_event(arg, type, obj);
}

enum { KB_LISTED_NODES = 1, KB_LISTED_OTHERS = 2, KB_LISTED_PODS = 4 };

static void watch_listed(struct kube_backend *kb, unsigned which)
{
  kb->listed |= which;
  if (kb->listed == (KB_LISTED_NODES | KB_LISTED_OTHERS | KB_LISTED_PODS))
    pods_synced(kb);
}

static void pod_synced_cb(void *arg, unsigned relists)
{
  (void)relists;
  watch_listed(arg, KB_LISTED_PODS);
}

static void node_synced_cb(void *arg, unsigned relists)
{
  (void)relists;
  watch_listed(arg, KB_LISTED_NODES);
}

static void other_synced_cb(void *arg, unsigned relists)
{
  (void)relists;
  watch_listed(arg, KB_LISTED_OTHERS);
}

static void node_watch_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  node_event(arg, type, obj);
}

static void other_watch_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  struct kube_backend *kb = arg;

  kube_nodes_pod_event(kb->nodes, type, obj);
}

static int kb_connect(struct kube_backend *kb)
{
  const struct cfg_kubernetes *k = &kb->access;
  struct kube_config kc;
  struct kube_options o;
  char err[256];
  int rc;

  memset(&kc, 0, sizeof(kc));
  if (k->kubeconfig != NULL)
    rc = kube_config_load_kubeconfig(&kc, k->kubeconfig, k->context, err,
                                     sizeof(err));
  else
    rc = kube_config_in_cluster(&kc, k->service_account_dir, err, sizeof(err));
  if (rc != 0) {
    log_error(KB_MOD, "cannot find the Kubernetes API server",
              LOG_S("error", err));
    return -EINVAL;
  }
  memset(&o, 0, sizeof(o));
  o.qps = k->qps > 0 ? (double)k->qps : -1.0;
  o.burst = k->burst;
  o.timeout_ms = k->request_timeout_ms;
  o.max_event_bytes = (size_t)k->max_event_bytes;
  o.watch_timeout_s = (unsigned)(k->watch_timeout_ms / 1000);
  kb->kube = kube_new(kb->loop, &kc, &o);
  kube_config_free(&kc);
  if (kb->kube == NULL) {
    log_error(KB_MOD, "cannot make the Kubernetes client", LOG_NONE);
    return -ENOMEM;
  }
  kb->api.create = api_create;
  kb->api.create_first = api_create_first;
  kb->api.delete_ = api_delete;
  kb->api.get = api_get;
  kb->api.patch = api_patch;
  kb->api_arg = kb->kube;
  return kb_health_setup(kb);
}

static int kb_watch(struct kube_backend *kb)
{
  char selector[NAMES_LABEL_MAX + 64];
  struct kube_watch_options o;

  snprintf(selector, sizeof(selector), "%s=%s", KUBE_LABEL_FLEET, kb->fleet);
  memset(&o, 0, sizeof(o));
  o.kind = KUBE_NODES;
  o.event_cb = node_watch_cb;
  o.synced_cb = node_synced_cb;
  o.arg = kb;
  kb->node_watch = kube_watch_start(kb->kube, &o);
  /* Every bound, unfinished pod of the cluster: what others request. */
  memset(&o, 0, sizeof(o));
  o.kind = KUBE_PODS;
  o.field_selector =
      "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";
  o.event_cb = other_watch_cb;
  o.synced_cb = other_synced_cb;
  o.arg = kb;
  kb->other_watch = kube_watch_start(kb->kube, &o);
  memset(&o, 0, sizeof(o));
  o.kind = KUBE_PODS;
  o.ns = kb->ns;
  o.label_selector = selector;
  o.event_cb = pod_watch_cb;
  o.synced_cb = pod_synced_cb;
  o.arg = kb;
  kb->pod_watch = kube_watch_start(kb->kube, &o);
  return kb->node_watch != NULL && kb->other_watch != NULL &&
                 kb->pod_watch != NULL
             ? 0
             : -ENOMEM;
}

static void kb_abandoned_cb(void *arg)
{
  kb_destroy(&((struct kube_backend *)arg)->base);
}

struct backend *backend_kube_new(uv_loop_t *loop, const struct config *cfg,
                                 struct capacity *cap,
                                 backend_event_cb on_event, void *ctx)
{
  struct kube_backend *kb = kb_alloc(loop, cfg, cap, on_event, ctx);

  if (kb == NULL)
    return NULL;
  if (kb_connect(kb) != 0 || kb_watch(kb) != 0) {
    /* Closed by the caller's shutdown turns of the loop, freed with the
     * last handle. */
    log_error(KB_MOD, "kubernetes backend not started", LOG_NONE);
    kb_close(&kb->base, BACKEND_CLOSE_KEEP, kb_abandoned_cb, kb);
    return NULL;
  }
  log_info(KB_MOD, "watching the cluster", LOG_S("namespace", kb->ns),
           LOG_S("fleet", kb->fleet));
  return &kb->base;
}
