#include "intake.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "log.h"

#define INTAKE_MOD "intake"
/* The line for each applied workflow_job keeps the module it had when
 * webhook applied events itself: log queries rely on it. */
#define INTAKE_JOB_LOG_MOD "webhook"

/* One submitted event, from submit to answer. */
struct intake_entry {
  struct intake_entry *next;
  struct intake *in;
  struct event ev;
  uint64_t now_ms;
  uint64_t wall_ms;
  int duplicate; /* its delivery id was seen before: applies nothing */
  int committed; /* through the commit step: may be applied */
  int sent;      /* handed to the journal, its answer not back yet */
  int failed;    /* the journal could not write it: -ENOSPC, -EIO, ... */
  intake_done_cb done_cb;
  void *done_arg;
};

struct intake {
  struct scheduler *sched;
  struct metrics *metrics;
  struct journal *journal; /* NULL: the commit step completes at once */
  intake_job_cb job_cb;
  void *job_arg;
  /* Every event not answered yet, in the order it came: the committed
   * ones first, then those the commit step has not completed. */
  struct intake_entry *head, *tail;
  size_t npending;
  int running;   /* inside intake_run: a submit from a callback only queues */
  int replaying; /* intake_replay: no line per event */
  int hold;      /* tests: the commit step completes nothing */
  /* Remembered delivery ids: a ring (for eviction order) and an open
   * addressing table of indices into it (twice the size, linear probe). */
  char ring[INTAKE_DEDUPE_SIZE][EVENT_DELIVERY_MAX];
  size_t ring_next, ring_count;
  int table[2 * INTAKE_DEDUPE_SIZE]; /* ring index + 1, 0 = empty */
};

struct intake *intake_new(struct scheduler *s, struct metrics *m)
{
  struct intake *in = calloc(1, sizeof(*in));

  if (in == NULL)
    return NULL;
  in->sched = s;
  in->metrics = m;
  if (m != NULL)
    metrics_declare(m, "runfleet_webhooks_total", METRICS_COUNTER,
                    "Webhook deliveries received, by event and result.", NULL,
                    0);
  return in;
}

void intake_destroy(struct intake *in)
{
  struct intake_entry *e;

  if (in == NULL)
    return;
  /* Nothing of these was applied: the sender is to try again. */
  while ((e = in->head) != NULL) {
    in->head = e->next;
    e->done_cb(e->done_arg, 503, "shutting down");
    event_free(&e->ev);
    free(e);
  }
  free(in);
}

void intake_set_journal(struct intake *in, struct journal *j)
{
  in->journal = j;
}

void intake_on_job(struct intake *in, intake_job_cb cb, void *arg)
{
  in->job_cb = cb;
  in->job_arg = arg;
}

/* ---- dedupe by delivery id ---- */

static size_t id_hash(const char *id)
{
  size_t h = 1469598103934665603ull;

  for (; *id != '\0'; id++)
    h = (h ^ (unsigned char)*id) * 1099511628211ull;
  return h % (2 * INTAKE_DEDUPE_SIZE);
}

static int dedupe_seen(const struct intake *in, const char *id)
{
  size_t h = id_hash(id), n;

  for (n = 0; n < 2 * INTAKE_DEDUPE_SIZE; n++) {
    int slot = in->table[(h + n) % (2 * INTAKE_DEDUPE_SIZE)];
    if (slot == 0)
      return 0;
    if (slot > 0 && strcmp(in->ring[slot - 1], id) == 0)
      return 1;
  }
  return 0;
}

/* Removes ring entry idx from the table, re-inserting the probe run after
 * it so lookups still find every other entry. */
static void dedupe_forget(struct intake *in, size_t idx)
{
  size_t size = 2 * INTAKE_DEDUPE_SIZE;
  size_t h = id_hash(in->ring[idx]), n, pos;

  for (n = 0; n < size; n++) {
    pos = (h + n) % size;
    if (in->table[pos] == (int)idx + 1)
      break;
    if (in->table[pos] == 0)
      return;
  }
  in->table[pos] = 0;
  for (pos = (pos + 1) % size; in->table[pos] != 0; pos = (pos + 1) % size) {
    int slot = in->table[pos];
    size_t home = id_hash(in->ring[slot - 1]);
    in->table[pos] = 0;
    while (in->table[home] != 0)
      home = (home + 1) % size;
    in->table[home] = slot;
  }
}

/* Forgets id (a delivery the journal could not write), so that GitHub's
 * redelivery of it counts as new. */
static void dedupe_drop(struct intake *in, const char *id)
{
  size_t h = id_hash(id), n, size = 2 * INTAKE_DEDUPE_SIZE;

  for (n = 0; n < size; n++) {
    int slot = in->table[(h + n) % size];
    if (slot == 0)
      return;
    if (slot > 0 && strcmp(in->ring[slot - 1], id) == 0) {
      dedupe_forget(in, (size_t)slot - 1);
      /* The ring slot stays allocated but can no longer match. */
      in->ring[slot - 1][0] = '\0';
      return;
    }
  }
}

static void dedupe_add(struct intake *in, const char *id)
{
  size_t idx = in->ring_next, h;

  if (in->ring_count == INTAKE_DEDUPE_SIZE)
    dedupe_forget(in, idx);
  else
    in->ring_count++;
  snprintf(in->ring[idx], EVENT_DELIVERY_MAX, "%s", id);
  h = id_hash(in->ring[idx]);
  while (in->table[h] != 0)
    h = (h + 1) % (2 * INTAKE_DEDUPE_SIZE);
  in->table[h] = (int)idx + 1;
  in->ring_next = (idx + 1) % INTAKE_DEDUPE_SIZE;
}

/* ---- applying ---- */

static void count(struct intake *in, const char *source, const char *result)
{
  char labels[160];

  if (in->metrics == NULL)
    return;
  snprintf(labels, sizeof(labels), "event=\"%s\",result=\"%s\"",
           source != NULL ? source : "other", result);
  metrics_counter_add(in->metrics, "runfleet_webhooks_total", labels, 1);
}

/* Hands a workflow_job event to the scheduler; returns the result label
 * and writes the answer's reason to msg. */
static const char *apply_job(struct intake *in, const struct event *ev,
                             uint64_t now_ms, char *msg, size_t msg_size)
{
  struct sched_job_event sev;
  int rc = -1;

  memset(&sev, 0, sizeof(sev));
  sev.job_id = ev->job_id;
  sev.run_id = ev->run_id;
  sev.repo = ev->repo;
  sev.name = ev->job_name;
  sev.labels = ev->labels;
  sev.nlabels = ev->nlabels;
  sev.runner_name = ev->runner_name;
  sev.conclusion = ev->conclusion;
  switch (ev->type) {
  case EVENT_JOB_QUEUED:
    rc = sched_job_queued(in->sched, &sev, now_ms);
    break;
  case EVENT_JOB_WAITING:
    rc = sched_job_waiting(in->sched, &sev, now_ms);
    break;
  case EVENT_JOB_IN_PROGRESS:
    rc = sched_job_in_progress(in->sched, &sev, now_ms);
    break;
  case EVENT_JOB_COMPLETED:
    rc = sched_job_completed(in->sched, &sev, now_ms);
    break;
  default:
    break;
  }
  if (rc != 0) {
    snprintf(msg, msg_size, "job %lld matches no pool", (long long)ev->job_id);
    return "unmatched";
  }
  if (!in->replaying)
    log_info(INTAKE_JOB_LOG_MOD, "workflow_job", LOG_S("action", ev->action),
             LOG_I("job", (long long)ev->job_id),
             LOG_S("repo", ev->repo != NULL ? ev->repo : ""),
             LOG_S("runner", ev->runner_name != NULL ? ev->runner_name : ""));
  if (in->job_cb != NULL)
    in->job_cb(in->job_arg, ev->action, sched_job_find(in->sched, ev->job_id));
  snprintf(msg, msg_size, "accepted");
  return "accepted";
}

/* Applies one committed entry; returns the result label and writes the
 * answer's reason to msg. */
static const char *apply(struct intake *in, const struct intake_entry *e,
                         char *msg, size_t msg_size)
{
  const struct event *ev = &e->ev;

  if (e->failed != 0) {
    snprintf(msg, msg_size, "cannot keep the delivery (%s); send it again",
             e->failed == -ENOSPC ? "journal full" : "journal error");
    return "failed";
  }
  if (e->duplicate) {
    snprintf(msg, msg_size, "duplicate delivery");
    return "duplicate";
  }
  if (ev->type == EVENT_PING) {
    snprintf(msg, msg_size, "pong");
    return "ok";
  }
  if (ev->too_many_labels) {
    snprintf(msg, msg_size, "job %lld has more labels than any pool",
             (long long)ev->job_id);
    return "unmatched";
  }
  if (!event_is_job(ev->type)) {
    snprintf(msg, msg_size, "%s", ev->note != NULL ? ev->note : "ignored");
    return "ignored";
  }
  return apply_job(in, ev, e->now_ms, msg, msg_size);
}

/* Applies and answers, in order, the committed entries at the head. */
static void apply_committed(struct intake *in)
{
  struct intake_entry *e;
  char msg[256];

  while ((e = in->head) != NULL && e->committed) {
    in->head = e->next;
    if (in->head == NULL)
      in->tail = NULL;
    in->npending--;
    count(in, e->ev.source, apply(in, e, msg, sizeof(msg)));
    if (e->failed != 0)
      dedupe_drop(in, e->ev.delivery);
    e->done_cb(e->done_arg, e->failed != 0 ? 503 : 200, msg);
    event_free(&e->ev);
    free(e);
  }
}

static void intake_run(struct intake *in);

static void journaled_cb(void *arg, int status)
{
  struct intake_entry *e = arg;

  e->sent = 0;
  e->committed = 1;
  if (status == 1)
    e->duplicate = 1; /* journaled before this run: a redelivery */
  else if (status < 0)
    e->failed = status;
  intake_run(e->in);
}

/* The commit step, between dedupe and apply. Without a journal it
 * completes at once. With one, each new entry is appended (the journal
 * groups what comes while a commit runs into the next transaction) and
 * committed from journaled_cb; one the journal could not write is
 * answered 503 and its delivery id forgotten, so the redelivery counts as
 * new. Returns 1 when it completed something now. */
static int commit_step(struct intake *in)
{
  struct intake_entry *e;
  int done = 0;

  if (in->hold)
    return 0;
  for (e = in->head; e != NULL; e = e->next) {
    if (e->committed || e->sent)
      continue;
    if (in->journal == NULL || e->duplicate) {
      e->committed = 1;
      done = 1;
      continue;
    }
    e->sent = 1;
    if (journal_append_event(in->journal, &e->ev, e->wall_ms, journaled_cb,
                             e) != 0) {
      e->sent = 0;
      e->committed = 1;
      e->failed = -EIO;
      done = 1;
    }
  }
  return done;
}

/* Moves every waiting entry on as far as it can go. Callbacks may submit
 * again; those entries are picked up by this loop, not a nested one. */
static void intake_run(struct intake *in)
{
  if (in->running)
    return;
  in->running = 1;
  /* Entries the journal committed meanwhile are applied first. */
  do
    apply_committed(in);
  while (commit_step(in));
  in->running = 0;
}

int intake_submit(struct intake *in, struct event *ev, uint64_t now_ms,
                  intake_done_cb done_cb, void *arg)
{
  struct intake_entry *e = calloc(1, sizeof(*e));

  if (e == NULL) {
    log_error(INTAKE_MOD, "out of memory taking an event",
              LOG_S("delivery", ev->delivery));
    event_free(ev);
    return -1;
  }
  e->ev = *ev;
  memset(ev, 0, sizeof(*ev));
  e->in = in;
  e->now_ms = now_ms;
  e->wall_ms = sched_wall_ms(in->sched);
  e->done_cb = done_cb;
  e->done_arg = arg;
  /* Remembered from now on, before it commits: a redelivery that comes
   * meanwhile is a duplicate, and is answered after the original. */
  e->duplicate = dedupe_seen(in, e->ev.delivery);
  if (!e->duplicate)
    dedupe_add(in, e->ev.delivery);
  if (in->tail != NULL)
    in->tail->next = e;
  else
    in->head = e;
  in->tail = e;
  in->npending++;
  intake_run(in);
  return 0;
}

static uint64_t replay_clock(void *arg)
{
  return *(const uint64_t *)arg;
}

void intake_replay(struct intake *in, const struct event *ev, uint64_t at_ms,
                   uint64_t now_ms)
{
  struct intake_entry e;
  char msg[256];

  memset(&e, 0, sizeof(e));
  e.ev = *ev;
  e.now_ms = now_ms;
  if (!dedupe_seen(in, ev->delivery))
    dedupe_add(in, ev->delivery);
  /* The job keeps the times it had when the events first came. */
  sched_set_wall_clock(in->sched, replay_clock, &at_ms);
  in->replaying = 1;
  apply(in, &e, msg, sizeof(msg));
  in->replaying = 0;
  sched_set_wall_clock(in->sched, NULL, NULL);
}

#ifdef RUNFLEET_UNITTEST
void intake_hold_commits(struct intake *in, int hold)
{
  in->hold = hold;
  intake_run(in);
}

size_t intake_npending(const struct intake *in)
{
  return in->npending;
}
#endif
