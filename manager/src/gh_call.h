#ifndef RUNFLEET_GH_CALL_H
#define RUNFLEET_GH_CALL_H

#include <stdint.h>

#include "github.h"
#include "http_client.h"

/* The call machinery of the GitHub client as the recovery endpoints
 * (gh_recovery.c) use it: one request of the recovery call class, sent
 * only when no runner call (JIT config, deletion) waits, no Retry-After or
 * primary-limit hold is on, the primary budget is above the reserve and
 * no other recovery call is in flight; a POST also takes a token from the
 * mutation pace, only while half its burst would be left. 5xx answers and lost
 * connections are retried with backoff, at most GH_MAX_ATTEMPTS times;
 * Retry-After is obeyed and holds the recovery class only. Internal to the
 * github_* / gh_recovery pair. */

enum gh_auth {
  GH_AUTH_INSTALLATION, /* the installation token (or the PAT) */
  GH_AUTH_APP           /* the App's JWT: /app/... endpoints */
};

/* status 0 for a 2xx answer, else a negative code; resp is the final
 * answer (valid during the call only), NULL when none came. */
typedef void (*gh_raw_cb)(void *arg, int status, int http_status,
                          const struct http_client_response *resp);

/* Starts a recovery-class request of method on path (below the API URL,
 * query included, already encoded); endpoint is a static name for the
 * request metric. 0, -ENOTSUP for App auth in PAT mode, -EINVAL,
 * -ESHUTDOWN or -ENOMEM (cb never runs then). */
int gh_raw_request(struct gh_client *gh, enum gh_auth auth,
                   const char *endpoint, const char *method, const char *path,
                   gh_raw_cb cb, void *arg);

/* The "owner/name" of a repository-scoped client, or NULL for an org. */
const char *gh_scope_repo(const struct gh_client *gh);

/* What decides whether the head of the recovery queue may go now. */
struct gh_recovery_gate {
  unsigned runner_waiting; /* runner calls queued or waiting to retry */
  unsigned in_flight;      /* recovery calls in flight */
  uint64_t hold_all_until, hold_mut_until, hold_rec_until; /* loop ms */
  long remaining;        /* primary budget left, -1 unknown */
  long reserve;          /* recovery waits at or below it */
  uint64_t reset_in_ms;  /* until the primary limit resets, 0 unknown */
  int mutating;          /* a POST: needs a token of the pace */
  double bucket, per_ms; /* the pace's tokens and refill rate */
};

#ifdef RUNFLEET_UNITTEST
/* 1 when the recovery call may be sent at now; else 0 with *wait_ms the
 * time to look again (0 when a completion will look again). */
int gh_recovery_gate(const struct gh_recovery_gate *g, uint64_t now,
                     uint64_t *wait_ms);
#endif

#endif
