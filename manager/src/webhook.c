#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "log.h"
#include "webhook_sig.h"

#define WEBHOOK_MOD "webhook"
#define DELIVERY_ID_MAX 64

struct webhook {
  unsigned char *secret;
  size_t secret_len;
  struct metrics *metrics;
  webhook_job_cb job_cb;
  void *job_arg;
  /* Remembered delivery ids: a ring (for eviction order) and an open
   * addressing table of indices into it (twice the size, linear probe). */
  char ring[WEBHOOK_DEDUPE_SIZE][DELIVERY_ID_MAX];
  size_t ring_next, ring_count;
  int table[2 * WEBHOOK_DEDUPE_SIZE]; /* ring index + 1, 0 = empty */
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

void webhook_on_job(struct webhook *w, webhook_job_cb cb, void *arg)
{
  w->job_cb = cb;
  w->job_arg = arg;
}

static size_t id_hash(const char *id)
{
  size_t h = 1469598103934665603ull;

  for (; *id != '\0'; id++)
    h = (h ^ (unsigned char)*id) * 1099511628211ull;
  return h % (2 * WEBHOOK_DEDUPE_SIZE);
}

static int dedupe_seen(const struct webhook *w, const char *id)
{
  size_t h = id_hash(id), n;

  for (n = 0; n < 2 * WEBHOOK_DEDUPE_SIZE; n++) {
    int slot = w->table[(h + n) % (2 * WEBHOOK_DEDUPE_SIZE)];
    if (slot == 0)
      return 0;
    if (slot > 0 && strcmp(w->ring[slot - 1], id) == 0)
      return 1;
  }
  return 0;
}

/* Removes ring entry idx from the table, re-inserting the probe run after
 * it so lookups still find every other entry. */
static void dedupe_forget(struct webhook *w, size_t idx)
{
  size_t size = 2 * WEBHOOK_DEDUPE_SIZE;
  size_t h = id_hash(w->ring[idx]), n, pos;

  for (n = 0; n < size; n++) {
    pos = (h + n) % size;
    if (w->table[pos] == (int)idx + 1)
      break;
    if (w->table[pos] == 0)
      return;
  }
  w->table[pos] = 0;
  for (pos = (pos + 1) % size; w->table[pos] != 0; pos = (pos + 1) % size) {
    int slot = w->table[pos];
    size_t home = id_hash(w->ring[slot - 1]);
    w->table[pos] = 0;
    while (w->table[home] != 0)
      home = (home + 1) % size;
    w->table[home] = slot;
  }
}

static void dedupe_add(struct webhook *w, const char *id)
{
  size_t idx = w->ring_next, h;

  if (w->ring_count == WEBHOOK_DEDUPE_SIZE)
    dedupe_forget(w, idx);
  else
    w->ring_count++;
  snprintf(w->ring[idx], DELIVERY_ID_MAX, "%s", id);
  h = id_hash(w->ring[idx]);
  while (w->table[h] != 0)
    h = (h + 1) % (2 * WEBHOOK_DEDUPE_SIZE);
  w->table[h] = (int)idx + 1;
  w->ring_next = (idx + 1) % WEBHOOK_DEDUPE_SIZE;
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

/* Pulls what the scheduler needs out of a workflow_job payload. Returns 0,
 * 1 when the job has more labels than a pool can have (it matches none),
 * or -1 with msg set when a required field is missing or of a wrong type. */
static int parse_job(json_t *root, struct sched_job_event *ev,
                     const char **action, char **labels, char *msg,
                     size_t msg_size)
{
  json_t *job = json_object_get(root, "workflow_job");
  json_t *repo = json_object_get(root, "repository");
  json_t *jlabels, *v;
  size_t i;

  *action = json_string_value(json_object_get(root, "action"));
  if (*action == NULL || !json_is_object(job)) {
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
  ev->name = json_string_value(json_object_get(job, "name"));
  ev->runner_name = json_string_value(json_object_get(job, "runner_name"));
  ev->conclusion = json_string_value(json_object_get(job, "conclusion"));
  ev->repo = json_string_value(json_object_get(repo, "full_name"));
  jlabels = json_object_get(job, "labels");
  if (!json_is_array(jlabels)) {
    snprintf(msg, msg_size, "workflow_job.labels must be an array");
    return -1;
  }
  ev->nlabels = 0;
  json_array_foreach(jlabels, i, v)
  {
    if (!json_is_string(v)) {
      snprintf(msg, msg_size, "workflow_job.labels[%zu] must be a string", i);
      return -1;
    }
    if (ev->nlabels == SCHED_MAX_JOB_LABELS)
      return 1; /* more labels than any pool has: no pool can match */
    labels[ev->nlabels++] = (char *)json_string_value(v);
  }
  ev->labels = labels;
  return 0;
}

static int handle_job(struct webhook *w, struct scheduler *s, json_t *root,
                      uint64_t now_ms, char *msg, size_t msg_size)
{
  struct sched_job_event ev;
  char *labels[SCHED_MAX_JOB_LABELS];
  const char *action;
  int rc;

  memset(&ev, 0, sizeof(ev));
  rc = parse_job(root, &ev, &action, labels, msg, msg_size);
  if (rc < 0)
    return -1;
  if (rc > 0) {
    snprintf(msg, msg_size, "job %lld has more labels than any pool",
             (long long)ev.job_id);
    return 2;
  }
  if (strcmp(action, "queued") == 0)
    rc = sched_job_queued(s, &ev, now_ms);
  else if (strcmp(action, "waiting") == 0)
    rc = sched_job_waiting(s, &ev, now_ms);
  else if (strcmp(action, "in_progress") == 0)
    rc = sched_job_in_progress(s, &ev, now_ms);
  else if (strcmp(action, "completed") == 0)
    rc = sched_job_completed(s, &ev, now_ms);
  else {
    snprintf(msg, msg_size, "action %s ignored", action);
    return 1;
  }
  if (rc != 0) {
    snprintf(msg, msg_size, "job %lld matches no pool", (long long)ev.job_id);
    return 2;
  }
  log_info(WEBHOOK_MOD, "workflow_job", "action=%s job=%lld repo=%s runner=%s",
           action, (long long)ev.job_id, ev.repo != NULL ? ev.repo : "",
           ev.runner_name != NULL ? ev.runner_name : "");
  if (w->job_cb != NULL)
    w->job_cb(w->job_arg, action, sched_job_find(s, ev.job_id));
  snprintf(msg, msg_size, "accepted");
  return 0;
}

int webhook_handle(struct webhook *w, struct scheduler *s,
                   const struct webhook_delivery *d, uint64_t now_ms, char *msg,
                   size_t msg_size)
{
  const char *event = d->event != NULL ? d->event : "";
  json_error_t jerr;
  json_t *root;
  int rc;

  /* Nothing about the body is looked at before the signature holds. */
  if (webhook_sig_verify(w->secret, w->secret_len,
                         (const unsigned char *)d->body, d->body_len,
                         d->signature) != 0) {
    count(w, event, "bad_signature");
    log_warn(WEBHOOK_MOD, "bad signature", "delivery=%.64s",
             d->id != NULL ? d->id : "");
    snprintf(msg, msg_size, "signature missing or wrong");
    return 401;
  }
  if (d->id == NULL || d->id[0] == '\0' || strlen(d->id) >= DELIVERY_ID_MAX ||
      event[0] == '\0') {
    count(w, event, "bad_request");
    snprintf(msg, msg_size, "X-GitHub-Event and X-GitHub-Delivery required");
    return 400;
  }
  if (dedupe_seen(w, d->id)) {
    count(w, event, "duplicate");
    snprintf(msg, msg_size, "duplicate delivery");
    return 200;
  }
  root = json_loadb(d->body, d->body_len, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL || !json_is_object(root)) {
    count(w, event, "bad_json");
    snprintf(msg, msg_size, "malformed JSON at line %d column %d: %s",
             jerr.line, jerr.column,
             root == NULL ? jerr.text : "not an object");
    log_warn(WEBHOOK_MOD, "malformed JSON", "delivery=%s event=%s", d->id,
             event);
    json_decref(root);
    return 400;
  }
  if (strcmp(event, "ping") == 0) {
    count(w, event, "ok");
    snprintf(msg, msg_size, "pong");
    rc = 0;
  } else if (strcmp(event, "workflow_job") != 0) {
    count(w, event, "ignored");
    snprintf(msg, msg_size, "event %s ignored", event);
    rc = 0;
  } else {
    rc = handle_job(w, s, root, now_ms, msg, msg_size);
    count(w, event,
          rc == 0   ? "accepted"
          : rc == 1 ? "ignored"
          : rc == 2 ? "unmatched"
                    : "bad_payload");
  }
  json_decref(root);
  if (rc < 0)
    return 400;
  dedupe_add(w, d->id);
  return 200;
}
