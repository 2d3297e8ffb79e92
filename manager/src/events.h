#ifndef RUNFLEET_EVENTS_H
#define RUNFLEET_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* struct event: an incoming event after its source checked and parsed it
 * (webhook for GitHub's deliveries), before intake dedupes and applies it.
 * Every string in it is owned by the struct and freed by event_free; the
 * struct itself may live anywhere and be moved by plain assignment (the
 * old copy then must not be freed too). A zeroed struct is empty. */

enum event_type {
  EVENT_NONE = 0,
  EVENT_PING,    /* GitHub's hello to a new hook: answered, applies nothing */
  EVENT_IGNORED, /* a delivery runfleetd does not act on; note says why */
  EVENT_JOB_QUEUED,
  EVENT_JOB_WAITING,
  EVENT_JOB_IN_PROGRESS,
  EVENT_JOB_COMPLETED
  /* Dev-server requests and runner events come next. */
};

#define EVENT_DELIVERY_MAX 64           /* X-GitHub-Delivery, with its NUL */
#define EVENT_MAX_LABELS CFG_MAX_LABELS /* more than a pool can have */

struct event {
  enum event_type type;
  char delivery[EVENT_DELIVERY_MAX]; /* the dedupe key; never empty */
  /* GitHub's event name when it is one an App for runners is sent, else
   * "other": a static string, bounded for metric labels. */
  const char *source;
  char *note; /* EVENT_IGNORED: why, as the answer says it */

  /* workflow_job events. */
  char *action; /* as sent: "queued", "in_progress", ... */
  int64_t job_id, run_id;
  char *repo;        /* repository.full_name; may be NULL */
  char *job_name;    /* may be NULL */
  char *runner_name; /* in_progress, completed; may be NULL */
  char *conclusion;  /* completed; may be NULL */
  char *labels[EVENT_MAX_LABELS];
  size_t nlabels;
  int too_many_labels; /* labels dropped: the job can match no pool */
};

/* Frees every string of ev and empties it. An empty ev is fine. */
void event_free(struct event *ev);

/* "queued", "ping", ...: a name for logs. */
const char *event_type_name(enum event_type type);

/* 1 for the workflow_job types. */
int event_is_job(enum event_type type);

#endif
