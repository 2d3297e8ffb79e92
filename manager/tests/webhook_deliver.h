#ifndef RUNFLEET_TEST_WEBHOOK_DELIVER_H
#define RUNFLEET_TEST_WEBHOOK_DELIVER_H

/* A delivery taken the way route_webhook takes it: webhook_parse, then
 * intake_submit for what parsed; the answer is what intake's callback
 * said, or webhook's own status for bad input. */

#include <stdio.h>
#include <string.h>

#include "intake.h"
#include "webhook.h"
#include "webhook_sig.h"

struct answer {
  int status; /* 0 until answered */
  int calls;
  char msg[256];
};

static void answer_cb(void *arg, int status, const char *msg)
{
  struct answer *a = arg;

  a->status = status;
  a->calls++;
  snprintf(a->msg, sizeof(a->msg), "%s", msg);
}

/* Signs body with secret (unless sig is given) and delivers it; returns
 * the status answered and leaves the reason in msg. */
static int deliver_signed(struct webhook *w, struct intake *in,
                          const char *secret, const char *event, const char *id,
                          const char *body, const char *sig, char *msg,
                          size_t msg_size)
{
  struct webhook_delivery d;
  struct answer a = {0};
  struct event ev;
  char signature[80];
  int status;

  webhook_sig_sign((const unsigned char *)secret, strlen(secret),
                   (const unsigned char *)body, strlen(body), signature,
                   sizeof(signature));
  d.event = event;
  d.id = id;
  d.signature = sig != NULL ? sig : signature;
  d.body = body;
  d.body_len = strlen(body);
  status = webhook_parse(w, &d, &ev, msg, msg_size);
  if (status != 0)
    return status;
  if (intake_submit(in, &ev, 1000, answer_cb, &a) != 0)
    return -1;
  /* Today intake answers before it returns. */
  if (a.calls != 1)
    return -1;
  snprintf(msg, msg_size, "%s", a.msg);
  return a.status;
}

#endif
