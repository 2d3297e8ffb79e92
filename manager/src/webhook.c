#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "log.h"
#include "webhook_sig.h"

#define WEBHOOK_MOD "webhook"

struct webhook {
  unsigned char *secret;
  size_t secret_len;
  struct metrics *metrics;
};

struct webhook *webhook_new(const unsigned char *secret, size_t secret_len,
                            struct metrics *m)
{
  struct webhook *w = calloc(1, sizeof(*w));

  if (w == NULL)
    return NULL;
  if (webhook_set_secret(w, secret, secret_len) != 0) {
    free(w);
    return NULL;
  }
  w->metrics = m;
  if (m != NULL)
    metrics_declare(m, "runfleet_webhooks_total", METRICS_COUNTER,
                    "Webhook deliveries received, by event and result.", NULL,
                    0);
  return w;
}

void webhook_destroy(struct webhook *w)
{
  if (w == NULL)
    return;
  if (w->secret != NULL)
    OPENSSL_clear_free(w->secret, w->secret_len);
  free(w);
}

int webhook_set_secret(struct webhook *w, const unsigned char *secret,
                       size_t secret_len)
{
  unsigned char *copy = malloc(secret_len + 1);

  if (copy == NULL)
    return -1;
  memcpy(copy, secret, secret_len);
  if (w->secret != NULL)
    OPENSSL_clear_free(w->secret, w->secret_len);
  w->secret = copy;
  w->secret_len = secret_len;
  return 0;
}

/* The event label comes from a request header, which anyone reaching the
 * endpoint controls: only events a GitHub App for runners is sent keep
 * their name, so the number of series stays bounded. */
static const char *event_label(const char *event)
{
  static const char *const known[] = {"workflow_job",
                                      "workflow_run",
                                      "ping",
                                      "installation",
                                      "installation_repositories",
                                      "installation_target",
                                      "github_app_authorization",
                                      "meta"};
  size_t i;

  for (i = 0; event != NULL && i < sizeof(known) / sizeof(known[0]); i++)
    if (strcmp(event, known[i]) == 0)
      return known[i];
  return "other";
}

static void count(struct webhook *w, const char *event, const char *result)
{
  char labels[160];

  if (w->metrics == NULL)
    return;
  snprintf(labels, sizeof(labels), "event=\"%s\",result=\"%s\"",
           event_label(event), result);
  metrics_counter_add(w->metrics, "runfleet_webhooks_total", labels, 1);
}

/* A copy of a JSON string member, or NULL when it is absent or not a
 * string. Returns 0, or -1 when out of memory. */
static int copy_string(json_t *obj, const char *key, char **out)
{
  const char *v = json_string_value(json_object_get(obj, key));

  *out = NULL;
  if (v == NULL)
    return 0;
  *out = strdup(v);
  return *out != NULL ? 0 : -1;
}

static enum event_type job_type(const char *action)
{
  if (strcmp(action, "queued") == 0)
    return EVENT_JOB_QUEUED;
  if (strcmp(action, "waiting") == 0)
    return EVENT_JOB_WAITING;
  if (strcmp(action, "in_progress") == 0)
    return EVENT_JOB_IN_PROGRESS;
  if (strcmp(action, "completed") == 0)
    return EVENT_JOB_COMPLETED;
  return EVENT_IGNORED;
}

/* Fills ev from a workflow_job payload. Returns 0; -1 with msg set when a
 * required field is missing or of a wrong type; -2 when out of memory. A
 * job with more labels than a pool can have keeps the first ones and is
 * marked too_many_labels (it matches no pool). */
static int parse_job(json_t *root, struct event *ev, char *msg, size_t msg_size)
{
  json_t *job = json_object_get(root, "workflow_job");
  json_t *repo = json_object_get(root, "repository");
  const char *action = json_string_value(json_object_get(root, "action"));
  json_t *jlabels, *v;
  size_t i;

  if (action == NULL || !json_is_object(job)) {
    snprintf(msg, msg_size,
             "workflow_job payload needs action and "
             "workflow_job");
    return -1;
  }
  v = json_object_get(job, "id");
  if (!json_is_integer(v)) {
    snprintf(msg, msg_size, "workflow_job.id must be an integer");
    return -1;
  }
  ev->job_id = (int64_t)json_integer_value(v);
  ev->run_id = (int64_t)json_integer_value(json_object_get(job, "run_id"));
  jlabels = json_object_get(job, "labels");
  if (!json_is_array(jlabels)) {
    snprintf(msg, msg_size, "workflow_job.labels must be an array");
    return -1;
  }
  json_array_foreach(jlabels, i, v)
  {
    if (!json_is_string(v)) {
      snprintf(msg, msg_size, "workflow_job.labels[%zu] must be a string", i);
      return -1;
    }
    if (ev->nlabels == EVENT_MAX_LABELS) {
      /* More labels than any pool has: no pool can match, and what
       * follows need not be looked at. */
      ev->too_many_labels = 1;
      break;
    }
    ev->labels[ev->nlabels] = strdup(json_string_value(v));
    if (ev->labels[ev->nlabels] == NULL)
      return -2;
    ev->nlabels++;
  }
  ev->action = strdup(action);
  if (ev->action == NULL || copy_string(job, "name", &ev->job_name) != 0 ||
      copy_string(job, "runner_name", &ev->runner_name) != 0 ||
      copy_string(job, "conclusion", &ev->conclusion) != 0 ||
      copy_string(repo, "full_name", &ev->repo) != 0)
    return -2;
  ev->type = job_type(action);
  if (ev->type == EVENT_IGNORED) {
    snprintf(msg, msg_size, "action %s ignored", action);
    ev->note = strdup(msg);
    if (ev->note == NULL)
      return -2;
  }
  return 0;
}

/* Fills ev from the payload of a delivery whose signature held. Returns 0,
 * -1 (msg set) for a payload that is not what its event needs, -2 when out
 * of memory. */
static int parse_payload(json_t *root, const char *event, struct event *ev,
                         char *msg, size_t msg_size)
{
  if (strcmp(event, "ping") == 0) {
    ev->type = EVENT_PING;
    return 0;
  }
  if (strcmp(event, "workflow_job") != 0) {
    ev->type = EVENT_IGNORED;
    snprintf(msg, msg_size, "event %s ignored", event);
    ev->note = strdup(msg);
    return ev->note != NULL ? 0 : -2;
  }
  return parse_job(root, ev, msg, msg_size);
}

int webhook_parse(struct webhook *w, const struct webhook_delivery *d,
                  struct event *ev, char *msg, size_t msg_size)
{
  const char *event = d->event != NULL ? d->event : "";
  json_error_t jerr;
  json_t *root;
  int rc;

  memset(ev, 0, sizeof(*ev));
  /* Nothing about the body is looked at before the signature holds. */
  if (webhook_sig_verify(w->secret, w->secret_len,
                         (const unsigned char *)d->body, d->body_len,
                         d->signature) != 0) {
    count(w, event, "bad_signature");
    log_warn(WEBHOOK_MOD, "bad signature",
             LOG_SN("delivery", 64, d->id != NULL ? d->id : ""));
    snprintf(msg, msg_size, "signature missing or wrong");
    return 401;
  }
  if (d->id == NULL || d->id[0] == '\0' ||
      strlen(d->id) >= EVENT_DELIVERY_MAX || event[0] == '\0') {
    count(w, event, "bad_request");
    snprintf(msg, msg_size, "X-GitHub-Event and X-GitHub-Delivery required");
    return 400;
  }
  root = json_loadb(d->body, d->body_len, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL || !json_is_object(root)) {
    count(w, event, "bad_json");
    snprintf(msg, msg_size, "malformed JSON at line %d column %d: %s",
             jerr.line, jerr.column,
             root == NULL ? jerr.text : "not an object");
    log_warn(WEBHOOK_MOD, "malformed JSON", LOG_S("delivery", d->id),
             LOG_S("event", event));
    json_decref(root);
    return 400;
  }
  snprintf(ev->delivery, sizeof(ev->delivery), "%s", d->id);
  ev->source = event_label(event);
  rc = parse_payload(root, event, ev, msg, msg_size);
  json_decref(root);
  if (rc == 0)
    return 0;
  event_free(ev);
  if (rc == -1) {
    count(w, event, "bad_payload");
    return 400;
  }
  log_error(WEBHOOK_MOD, "out of memory parsing a delivery",
            LOG_S("delivery", d->id));
  snprintf(msg, msg_size, "out of memory");
  return 500;
}
