#ifndef RUNFLEET_GH_RECOVERY_H
#define RUNFLEET_GH_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "github.h"

/* The GitHub endpoints recovery uses, one page per call, all of the
 * recovery call class (see gh_call.h: they go only when no runner call
 * waits and the budget is above the reserve):
 *   GET  /app/hook/deliveries (App JWT; cursor pagination, newest first)
 *   POST /app/hook/deliveries/{id}/attempts (App JWT)
 *   GET  /repos/{owner}/{repo}/actions/runs?status=queued
 *   GET  /repos/{owner}/{repo}/actions/runs/{run_id}/jobs
 * PAT mode has no deliveries API: those two answer -ENOTSUP at once. */

#define GH_CURSOR_MAX 256
#define GH_GUID_MAX 64

/* One item of the deliveries list (hook-delivery-item). */
struct gh_delivery {
  int64_t id;
  char guid[GH_GUID_MAX];
  int64_t delivered_at; /* Unix seconds, 0 when unreadable */
  int redelivery;
  int status_code; /* 0: no answer (could not connect, timed out) */
  char event[32];
  char action[32];
  int64_t installation_id; /* 0 when null */
};

struct gh_run {
  int64_t id;
  char repo[200]; /* repository.full_name */
  char status[24];
};

/* A job of a run; labels are malloc'd (gh_jobs_free). */
struct gh_job {
  int64_t id, run_id;
  char status[24];
  char name[96];
  char *labels[CFG_MAX_LABELS];
  size_t nlabels;
  int too_many_labels;
};

/* next_cursor is NULL on the last page. items are valid during the call. */
typedef void (*gh_deliveries_cb)(void *arg, int status,
                                 const struct gh_delivery *items, size_t n,
                                 const char *next_cursor);
/* more: a next page exists (Link rel="next"). */
typedef void (*gh_runs_cb)(void *arg, int status, const struct gh_run *runs,
                           size_t n, int more);
typedef void (*gh_jobs_cb)(void *arg, int status, const struct gh_job *jobs,
                           size_t n, int more);

/* One page of the App's webhook deliveries, newest first, after cursor
 * (NULL: from the newest). */
int gh_list_deliveries(struct gh_client *gh, const char *cursor,
                       gh_deliveries_cb cb, void *arg);
/* Asks GitHub to deliver delivery id again (202: accepted). */
int gh_redeliver(struct gh_client *gh, int64_t id, gh_done_cb cb, void *arg);
/* Page page (from 1) of repo's ("owner/name") queued workflow runs. */
int gh_list_queued_runs(struct gh_client *gh, const char *repo, unsigned page,
                        gh_runs_cb cb, void *arg);
/* Page page (from 1) of the jobs of run run_id of repo. */
int gh_list_run_jobs(struct gh_client *gh, const char *repo, int64_t run_id,
                     unsigned page, gh_jobs_cb cb, void *arg);

/* Frees the labels of n jobs and the array. */
void gh_jobs_free(struct gh_job *jobs, size_t n);

#ifdef RUNFLEET_UNITTEST
/* Decoders of one page: 0 with a malloc'd array (may be NULL when n is 0),
 * -EBADMSG when the body is not the expected shape, -ENOMEM. Entries
 * without a positive id are skipped. */
int gh_decode_deliveries(const char *body, size_t len, struct gh_delivery **out,
                         size_t *n);
int gh_decode_runs(const char *body, size_t len, struct gh_run **out,
                   size_t *n);
int gh_decode_jobs(const char *body, size_t len, struct gh_job **out,
                   size_t *n);
/* The URL of the rel="next" link of a Link header into out; 0, or -1
 * when there is none or it does not fit. */
int gh_link_next(const char *link, char *out, size_t size);
/* The value of query parameter name in url, as it is written (still
 * percent-encoded), into out; 0, or -1 when absent, empty, not of
 * [A-Za-z0-9%._~=-] or too long. */
int gh_query_param(const char *url, const char *name, char *out, size_t size);
#endif

#endif
