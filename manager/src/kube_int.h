#ifndef RUNFLEET_KUBE_INT_H
#define RUNFLEET_KUBE_INT_H

/* What kube.c, kube_config.c and kube_watch.c share, and the unit tests
 * reach; no other module includes this. */

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "http_client.h"
#include "kube.h"

/* A token bucket of rate qps (< 0: unlimited) and size burst. */
struct kube_bucket {
  double qps;
  double tokens;
  unsigned burst;
  uint64_t last_ms;
};
void kube_bucket_init(struct kube_bucket *b, double qps, unsigned burst,
                      uint64_t now_ms);
/* Takes a token: returns 0, or how many ms until one is there (none
 * taken). */
uint64_t kube_bucket_take(struct kube_bucket *b, uint64_t now_ms);

/* Delay before try number attempt (1: the first retry): base * 2^(attempt-1)
 * capped at max, then a uniform jitter in [d/2, d] from r (0..UINT32_MAX);
 * at least retry_after_ms when that is not 0, plus up to a tenth of it. */
uint64_t kube_backoff_ms(unsigned attempt, uint64_t base, uint64_t max,
                         uint64_t retry_after_ms, uint32_t r);

/* Retry-After as seconds or an HTTP date, relative to now: 0 with *ms
 * (capped at KUBE_RETRY_AFTER_MAX_MS), or -1. */
int kube_parse_retry_after(const char *v, time_t now, uint64_t *ms);

/* Whether a try that got status (0: none) and curl code may be tried again
 * for method; sent says whether the request may have reached the server. */
int kube_retryable(const char *method, long status, int sent);

/* Reads a token file when its identity (inode, size, mtime) changed or
 * max_age_ms passed since the last read. 1 when re-read into *token, 0 when
 * unchanged, -1 on error (token kept). */
struct kube_token_file {
  char *path;
  char *token;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  uint64_t read_ms;
};
int kube_token_file_refresh(struct kube_token_file *tf, uint64_t now_ms,
                            uint64_t max_age_ms);
void kube_token_file_free(struct kube_token_file *tf);

/* Internals of the client that the reflector uses. */
struct kube_stream; /* one watch GET in flight */

/* Called per parsed event of a stream; non-zero ends the stream. */
typedef int (*kube_stream_event_cb)(void *arg, enum kube_event_type type,
                                    json_t *obj);
/* Called once when the stream ends: error 0 for a clean end (timeout
 * reached), else the reason; resp carries the status and a Status body. */
typedef void (*kube_stream_done_cb)(void *arg, int error,
                                    const struct kube_response *resp);

/* Starts a watch GET of path?query (rate limited, not retried). Returns 0
 * and sets *out, valid until done_cb starts; or a negative code. */
int kube_stream_start(struct kube *k, const char *path, const char *query,
                      kube_stream_event_cb event_cb,
                      kube_stream_done_cb done_cb, void *arg,
                      struct kube_stream **out);
/* Ends s without calling done_cb. */
void kube_stream_cancel(struct kube_stream *s);

uv_loop_t *kube_loop(struct kube *k);
const struct kube_options *kube_opts(const struct kube *k);
int kube_closing(const struct kube *k);
/* Counts a watch restart in runfleet_kube_watch_restarts_total. */
void kube_count_restart(struct kube *k, const char *resource,
                        const char *reason);
/* Counts a completed relist (a list after the first) in
 * runfleet_kube_watch_relists_total. */
void kube_count_relist(struct kube *k, const char *resource);
/* Registers w so kube_close stops it; unregister on stop. */
void kube_watch_register(struct kube *k, struct kube_watch *w);
void kube_watch_unregister(struct kube *k, struct kube_watch *w);
/* The reflector's teardown, for kube_close. */
void kube_watch_close(struct kube_watch *w);
/* "pods", "secrets", ... */
const char *kube_kind_name(enum kube_kind kind);

#endif
