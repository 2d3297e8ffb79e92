#include "kube_health.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kube_pod.h"
#include "log.h"

#define KH_MOD "kube"

enum kh_step { KH_EVENT, KH_CORDON, KH_GET, KH_TAINT };

struct kh_call {
  struct kh_call *next, *prev;
  struct kube_health *kh;
  enum kh_step step;
  char node[CAP_NAME_MAX];
  unsigned tries;
};

struct kube_health {
  const struct backend_kube_api *api;
  void *api_arg;
  struct kube_nodes *nodes;
  enum cfg_gpu_unhealthy_action action;
  char taint_key[320], taint_value[64], taint_effect[16];
  char fleet[64];
  struct kh_call *calls; /* in flight */
};

static const char *const kh_step_names[] = {"event", "cordon", "get", "taint"};

struct kube_health *kube_health_new(const struct cfg_kubernetes *cfg,
                                    struct kube_nodes *nodes,
                                    const struct backend_kube_api *api,
                                    void *api_arg, const char *fleet)
{
  const struct cfg_gpu_unhealthy *g = &cfg->gpu_unhealthy;
  struct kube_health *kh = calloc(1, sizeof(*kh));

  if (kh == NULL)
    return NULL;
  kh->api = api;
  kh->api_arg = api_arg;
  kh->nodes = nodes;
  kh->action = g->action;
  snprintf(kh->taint_key, sizeof(kh->taint_key), "%s",
           g->taint_key != NULL ? g->taint_key
                                : CFG_DEFAULT_GPU_UNHEALTHY_TAINT_KEY);
  snprintf(kh->taint_value, sizeof(kh->taint_value), "%s",
           g->taint_value != NULL ? g->taint_value
                                  : CFG_DEFAULT_GPU_UNHEALTHY_TAINT_VALUE);
  snprintf(kh->taint_effect, sizeof(kh->taint_effect), "%s",
           g->taint_effect != NULL ? g->taint_effect
                                   : CFG_DEFAULT_GPU_UNHEALTHY_TAINT_EFFECT);
  snprintf(kh->fleet, sizeof(kh->fleet), "%s", fleet);
  return kh;
}

void kube_health_destroy(struct kube_health *kh)
{
  struct kh_call *c, *next;

  if (kh == NULL)
    return;
  for (c = kh->calls; c != NULL; c = next) {
    next = c->next;
    free(c);
  }
  free(kh);
}

/* ---- bodies ---- */

static const char *action_words(enum cfg_gpu_unhealthy_action a)
{
  switch (a) {
  case CFG_GPU_UNHEALTHY_CORDON:
    return "cordoned the node";
  case CFG_GPU_UNHEALTHY_TAINT:
    return "tainted the node";
  case CFG_GPU_UNHEALTHY_NONE:
    break;
  }
  return "left the node as it is";
}

/* Appends to msg, cutting what does not fit. */
static void msg_add(char *msg, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void msg_add(char *msg, size_t size, const char *fmt, ...)
{
  size_t len = strlen(msg);
  va_list ap;

  if (len + 1 >= size)
    return;
  va_start(ap, fmt);
  vsnprintf(msg + len, size - len, fmt, ap);
  va_end(ap);
}

json_t *kube_health_event(const struct backend_gpu_report *r, const char *uid,
                          const char *action, const char *now,
                          const char *fleet)
{
  char msg[KUBE_HEALTH_MESSAGE_MAX], prefix[CAP_NAME_MAX + 8];
  json_t *obj, *involved;
  size_t i;

  msg[0] = '\0';
  msg_add(msg, sizeof(msg),
          "runfleetd %s and took its GPUs out of its capacity: runner %s "
          "failed its pre-job GPU check (%s):",
          action, r->runner, r->reason[0] != '\0' ? r->reason : "unknown");
  if (r->message[0] != '\0')
    msg_add(msg, sizeof(msg), " %.300s;", r->message);
  for (i = 0; i < r->ngpus; i++)
    msg_add(msg, sizeof(msg), "%s GPU %d%s%s", i > 0 ? "," : "", r->gpus[i],
            r->uuids[i][0] != '\0' ? " " : "", r->uuids[i]);
  if (r->ngpus == 0)
    msg_add(msg, sizeof(msg), " no GPU named");
  snprintf(prefix, sizeof(prefix), "%.100s.rf-gpu-", r->node);
  involved = json_pack("{s:s, s:s, s:s}", "apiVersion", "v1", "kind", "Node",
                       "name", r->node);
  if (involved != NULL && uid != NULL)
    json_object_set_new(involved, "uid", json_string(uid));
  obj = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:o, s:s, s:s, s:s, "
                  "s:{s:s, s:s}, s:s, s:s, s:i}",
                  "apiVersion", "v1", "kind", "Event", "metadata",
                  "generateName", prefix, "namespace", KUBE_HEALTH_EVENT_NS,
                  "labels", KUBE_LABEL_FLEET, fleet, "involvedObject", involved,
                  "reason", KUBE_HEALTH_REASON, "message", msg, "type",
                  "Warning", "source", "component", "runfleetd", "host", fleet,
                  "firstTimestamp", now, "lastTimestamp", now, "count", 1);
  return obj;
}

json_t *kube_health_taint_patch(const struct cfg_gpu_unhealthy *g,
                                const json_t *node, int *already)
{
  const json_t *meta = json_object_get(node, "metadata");
  const json_t *old = json_object_get(json_object_get(node, "spec"), "taints");
  const char *rv = json_string_value(json_object_get(meta, "resourceVersion"));
  json_t *taints, *t;
  size_t i;

  *already = 0;
  json_array_foreach(old, i, t)
  {
    const char *k = json_string_value(json_object_get(t, "key"));
    const char *e = json_string_value(json_object_get(t, "effect"));

    if (k != NULL && e != NULL && strcmp(k, g->taint_key) == 0 &&
        strcmp(e, g->taint_effect) == 0) {
      *already = 1;
      return NULL;
    }
  }
  /* Taints are an atomic list: the patch carries all of them, and the
   * resourceVersion makes a change made meanwhile a 409. */
  taints = json_is_array(old) ? json_deep_copy(old) : json_array();
  if (taints == NULL ||
      json_array_append_new(
          taints, json_pack("{s:s, s:s, s:s}", "key", g->taint_key, "value",
                            g->taint_value, "effect", g->taint_effect)) != 0) {
    json_decref(taints);
    return NULL;
  }
  /* Without a version (never from a real API server) it is a plain patch. */
  if (rv == NULL)
    return json_pack("{s:{s:o}}", "spec", "taints", taints);
  return json_pack("{s:{s:s}, s:{s:o}}", "metadata", "resourceVersion", rv,
                   "spec", "taints", taints);
}

/* ---- requests ---- */

static void call_done_cb(void *arg, const struct kube_response *resp);

static void call_free(struct kh_call *c)
{
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->kh->calls = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  free(c);
}

static struct kh_call *call_new(struct kube_health *kh, enum kh_step step,
                                const char *node, unsigned tries)
{
  struct kh_call *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return NULL;
  c->kh = kh;
  c->step = step;
  c->tries = tries;
  snprintf(c->node, sizeof(c->node), "%s", node);
  c->next = kh->calls;
  if (kh->calls != NULL)
    kh->calls->prev = c;
  kh->calls = c;
  return c;
}

/* Sends one step; the call is freed when it could not be sent. */
static int call_send(struct kube_health *kh, enum kh_step step,
                     const char *node, unsigned tries, const json_t *body)
{
  struct kh_call *c = call_new(kh, step, node, tries);
  const struct backend_kube_api *a = kh->api;
  int rc = -ENOTSUP;

  if (c == NULL)
    return -ENOMEM;
  if (step == KH_EVENT && a->create != NULL)
    rc = a->create(kh->api_arg, KUBE_EVENTS, KUBE_HEALTH_EVENT_NS, body,
                   call_done_cb, c);
  else if ((step == KH_CORDON || step == KH_TAINT) && a->patch != NULL)
    rc = a->patch(kh->api_arg, KUBE_NODES, NULL, node, KUBE_PATCH_MERGE, body,
                  call_done_cb, c);
  else if (step == KH_GET && a->get != NULL)
    rc = a->get(kh->api_arg, KUBE_NODES, NULL, node, call_done_cb, c);
  if (rc != 0) {
    log_error(KH_MOD, "GPU health request not sent", LOG_S("node", node),
              LOG_S("step", kh_step_names[step]), LOG_I("error", rc));
    call_free(c);
  }
  return rc;
}

static void taint_from(struct kube_health *kh, const char *node, unsigned tries,
                       const json_t *obj)
{
  struct cfg_gpu_unhealthy g;
  json_t *patch;
  int already = 0;

  memset(&g, 0, sizeof(g));
  g.taint_key = kh->taint_key;
  g.taint_value = kh->taint_value;
  g.taint_effect = kh->taint_effect;
  patch = kube_health_taint_patch(&g, obj, &already);
  if (already) {
    log_info(KH_MOD, "node already carries the GPU-unhealthy taint",
             LOG_S("node", node), LOG_S("taint", kh->taint_key));
    return;
  }
  if (patch == NULL) {
    log_error(KH_MOD, "out of memory for the taint patch", LOG_S("node", node));
    return;
  }
  call_send(kh, KH_TAINT, node, tries, patch);
  json_decref(patch);
}

static void call_done_cb(void *arg, const struct kube_response *resp)
{
  struct kh_call *c = arg;
  struct kube_health *kh = c->kh;
  char node[CAP_NAME_MAX];
  enum kh_step step = c->step;
  unsigned tries = c->tries;

  snprintf(node, sizeof(node), "%s", c->node);
  call_free(c);
  if (resp->error == 0) {
    if (step == KH_GET) {
      taint_from(kh, node, tries, resp->object);
      return;
    }
    log_warn(KH_MOD,
             step == KH_EVENT    ? "GPU-unhealthy Event posted on the node"
             : step == KH_CORDON ? "node cordoned after a failed GPU check"
                                 : "node tainted after a failed GPU check",
             LOG_S("node", node));
    return;
  }
  /* Someone changed the node between our GET and PATCH: read it again. */
  if (step == KH_TAINT && resp->status == 409 &&
      tries + 1 < KUBE_HEALTH_MAX_TRIES) {
    call_send(kh, KH_GET, node, tries + 1, NULL);
    return;
  }
  log_error(KH_MOD,
            "GPU health request failed; the node stays out of "
            "capacity",
            LOG_S("node", node), LOG_S("step", kh_step_names[step]),
            LOG_I("status", (int)resp->status), LOG_S("reason", resp->reason),
            LOG_SN("message", 200, resp->message));
}

static void rfc3339_now(char *out, size_t size)
{
  time_t t = time(NULL);
  struct tm tm;

  if (gmtime_r(&t, &tm) == NULL ||
      strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(out, size, "1970-01-01T00:00:00Z");
}

int kube_health_report(struct kube_health *kh,
                       const struct backend_gpu_report *r)
{
  char now[32];
  json_t *ev;
  int rc = kube_nodes_gpu_unhealthy(kh->nodes, r->node);

  if (rc == 1) {
    log_info(KH_MOD, "node already out for GPU health; nothing sent",
             LOG_S("node", r->node), LOG_S("runner", r->runner));
    return 1;
  }
  if (rc < 0) {
    log_warn(KH_MOD, "GPU report for a node the watch does not know",
             LOG_S("node", r->node), LOG_S("runner", r->runner));
    return rc;
  }
  if (kh->action == CFG_GPU_UNHEALTHY_CORDON) {
    json_t *patch = json_pack("{s:{s:b}}", "spec", "unschedulable", 1);

    if (patch != NULL)
      call_send(kh, KH_CORDON, r->node, 0, patch);
    json_decref(patch);
  } else if (kh->action == CFG_GPU_UNHEALTHY_TAINT) {
    call_send(kh, KH_GET, r->node, 0, NULL);
  }
  rfc3339_now(now, sizeof(now));
  ev = kube_health_event(r, kube_nodes_uid(kh->nodes, r->node),
                         action_words(kh->action), now, kh->fleet);
  if (ev != NULL)
    call_send(kh, KH_EVENT, r->node, 0, ev);
  json_decref(ev);
  return 0;
}
