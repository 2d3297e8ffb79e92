#ifndef RUNFLEET_GITHUB_H
#define RUNFLEET_GITHUB_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "http_client.h"
#include "metrics.h"

/* The GitHub REST client of runfleetd: App JWT (RS256) and installation
 * tokens cached until shortly before expiry, or a PAT; JIT runner configs,
 * runner deletion and listing; rate-limit tracking. Mutating calls go
 * through one paced queue so the secondary limit is never hit, and any
 * Retry-After (or x-ratelimit-reset when remaining is 0) holds the queue.
 * A 401 is answered by one token refresh and one retry. Every request is
 * counted in runfleet_github_requests_total{endpoint,code}. */

struct gh_client; /* opaque */

struct gh_runner {
  int64_t id;
  char name[128];
  char status[16]; /* "online" / "offline" */
  int busy;
};

/* Runners decoded so far from the pages of a list: runners is malloc'd,
 * n used of cap. */
struct gh_runner_page {
  struct gh_runner *runners;
  size_t n, cap;
};

/* status: 0 on success, else a negative code; http_status is the final
 * HTTP status (0 when no response came). */

/* The status of a JIT request that may have taken effect at GitHub (no
 * response after it was sent, or a 5xx): it is not retried, since a retry
 * would collide on the name; the caller looks the runner up by name. */
#define GH_MAYBE_APPLIED (-EINPROGRESS)
typedef void (*gh_jit_cb)(void *arg, int status, int http_status,
                          int64_t runner_id, const char *encoded_jit_config);
typedef void (*gh_done_cb)(void *arg, int status, int http_status);
typedef void (*gh_runners_cb)(void *arg, int status,
                              const struct gh_runner *runners, size_t n);

/* Creates the client. Reads the App private key or PAT file now; returns
 * NULL (and logs why) if it cannot. cfg must outlive the client (on reload,
 * create a new client). */
struct gh_client *gh_new(uv_loop_t *loop, struct http_client *http,
                         const struct cfg_github *cfg, struct metrics *m);

/* Points the client at cfg, a section with the same values in a new
 * config (after a reload moved them there); cfg must outlive the client. */
void gh_set_cfg(struct gh_client *gh, const struct cfg_github *cfg);

/* Asks for a JIT config for a runner named name with labels (org or repo
 * scope by cfg, in cfg->runner_group_id, work folder "_work"). */
int gh_jit_config(struct gh_client *gh, const char *name, char *const *labels,
                  size_t nlabels, gh_jit_cb cb, void *arg);

/* Deletes a runner registration; a 404 counts as success. */
int gh_delete_runner(struct gh_client *gh, int64_t runner_id, gh_done_cb cb,
                     void *arg);

/* Lists every self-hosted runner of the scope (follows pagination). */
int gh_list_runners(struct gh_client *gh, gh_runners_cb cb, void *arg);

/* Lists the runners of the scope named name ([A-Za-z0-9._-]): none or one. */
int gh_find_runner(struct gh_client *gh, const char *name, gh_runners_cb cb,
                   void *arg);

/* Last seen x-ratelimit-remaining, or -1 before any response. */
long gh_ratelimit_remaining(const struct gh_client *gh);

/* The API budget as the client sees it. */
struct gh_budget {
  long remaining;     /* installation x-ratelimit-remaining, -1 unknown */
  long limit;         /* x-ratelimit-limit, -1 unknown */
  int64_t reset_unix; /* when it resets, 0 unknown */
  long app_remaining; /* the App's own budget (deliveries API), -1 */
  long reserve;       /* recovery calls wait at or below this */
  /* How long calls still wait: everything (primary limit exhausted), the
   * runners' mutations (a Retry-After), recovery (its own Retry-After). */
  uint64_t hold_all_ms, hold_mutations_ms, hold_recovery_ms;
  uint64_t secondary_limited; /* answers that said a secondary limit */
  unsigned runner_waiting;    /* JIT/delete calls not sent yet */
  unsigned recovery_queued, recovery_in_flight;
  uint64_t recovery_requests; /* requests of the recovery class sent */
};

void gh_budget_get(const struct gh_client *gh, struct gh_budget *out);

/* Recovery calls wait while the primary budget is at or below reserve. */
void gh_set_recovery_reserve(struct gh_client *gh, long reserve);

/* Whether the client authenticates as an App (the deliveries API needs
 * one; a PAT has none). */
int gh_app_mode(const struct gh_client *gh);

/* Brings the budget gauges (limit, reset, holds, calls waiting) up to
 * date; called at scrape time. */
void gh_sync_metrics(struct gh_client *gh);

/* Number of requests made (all endpoints), for "calls per job". */
uint64_t gh_requests_total(const struct gh_client *gh);

/* Cancels queued requests (their callbacks run with -ECANCELED), stops
 * timers, and calls done_cb(arg) once every handle is closed; then free
 * with gh_destroy. Requests already sent finish through the http client. */
void gh_close(struct gh_client *gh, void (*done_cb)(void *arg), void *arg);
void gh_destroy(struct gh_client *gh);

#ifdef RUNFLEET_UNITTEST
/* Builds the App JWT for now (iat = now - 60, exp = now + 540) signed with
 * the PEM key; returns a malloc'd string or NULL. */
char *gh_app_jwt(const char *pem, size_t pem_len, int64_t app_id, int64_t now);
/* Writes in as unpadded base64url with a NUL into out; returns the length,
 * or -1 when out is too small. */
int gh_base64url(const unsigned char *in, size_t len, char *out,
                 size_t out_size);
/* Parses an ISO 8601 UTC time ("2016-07-11T22:14:10Z", fractions and
 * +hh:mm offsets allowed) into Unix seconds; 0 or -1. */
int gh_parse_iso8601(const char *s, int64_t *out);
/* Sets the base of the exponential retry backoff (default 1000 ms). */
void gh_set_backoff_ms(struct gh_client *gh, uint64_t base_ms);
/* Decodes a JIT config response body: 0 with the runner's id and a
 * malloc'd copy of encoded_jit_config (wipe before freeing), or -1 when it
 * is not JSON, or lacks a positive runner.id or a non-empty config. */
int gh_decode_jit(const char *body, size_t len, int64_t *runner_id,
                  char **config);
/* Decodes one page of a runner list into pg (entries without a positive
 * id are skipped), setting items to the page's entries and total to
 * total_count (0 if absent or negative). 0, -EBADMSG when the body is not
 * an object with a runners array, -ENOMEM. */
int gh_decode_runners(const char *body, size_t len, struct gh_runner_page *pg,
                      size_t *items, int64_t *total);
#endif

#endif
