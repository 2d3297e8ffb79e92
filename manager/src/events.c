#include "events.h"

#include <stdlib.h>
#include <string.h>

void event_free(struct event *ev)
{
  size_t i;

  if (ev == NULL)
    return;
  free(ev->note);
  free(ev->action);
  free(ev->repo);
  free(ev->job_name);
  free(ev->runner_name);
  free(ev->conclusion);
  for (i = 0; i < ev->nlabels; i++)
    free(ev->labels[i]);
  memset(ev, 0, sizeof(*ev));
}

const char *event_type_name(enum event_type type)
{
  switch (type) {
  case EVENT_NONE:
    return "none";
  case EVENT_PING:
    return "ping";
  case EVENT_IGNORED:
    return "ignored";
  case EVENT_JOB_QUEUED:
    return "queued";
  case EVENT_JOB_WAITING:
    return "waiting";
  case EVENT_JOB_IN_PROGRESS:
    return "in_progress";
  case EVENT_JOB_COMPLETED:
    return "completed";
  }
  return "?";
}

int event_is_job(enum event_type type)
{
  return type == EVENT_JOB_QUEUED || type == EVENT_JOB_WAITING ||
         type == EVENT_JOB_IN_PROGRESS || type == EVENT_JOB_COMPLETED;
}
