#ifndef RUNFLEET_HTTP_SERVER_H
#define RUNFLEET_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* An HTTP/1.1 server on the libuv loop. Parsing is done by http-parser;
 * this module owns connections, keep-alive, limits and timeouts.
 *
 * A handler either fills the response before it returns, or defers it
 * (http_response_defer) and answers later from any loop callback, within
 * a time limit. A connection waiting for a deferred answer parses nothing
 * after that request until the answer is out: responses keep the order of
 * the requests. It reads on only while its buffer is empty, to notice a
 * client that goes away, and keeps what it reads for after the answer. */

#define HTTP_MAX_HEADERS 64

struct http_header {
  char *name; /* as received */
  char *value;
};

struct http_request {
  const char *method; /* "GET", "POST", ... */
  char *path;         /* without the query string, not decoded */
  char *query;        /* after '?', or NULL */
  struct http_header headers[HTTP_MAX_HEADERS];
  size_t nheaders;
  char *body; /* NUL-terminated for convenience; may contain NULs */
  size_t body_len;
  char peer[64]; /* "ip:port" of the client */
};

struct http_conn;     /* opaque */
struct http_deferred; /* opaque: an answer a handler gives later */

struct http_response {
  int status;
  const char *content_type; /* static string; default text/plain */
  char *body;               /* malloc'd; the server frees it */
  size_t body_len;
  char *extra_headers;    /* malloc'd "Name: value\r\n..." or NULL */
  struct http_conn *conn; /* the server's: set on what it hands a handler */
};

/* Called for each complete request; must set resp->status (and body), or
 * defer the answer. req and what it points to are valid only during the
 * call: a deferred answer copies what it needs first. */
typedef void (*http_handler_cb)(void *ctx, const struct http_request *req,
                                struct http_response *resp);

struct http_server_limits {
  const char *name;         /* the listener's name in logs; may be NULL */
  size_t max_header_bytes;  /* request line + headers; past it: 431 */
  size_t max_body_bytes;    /* past it: 413, connection closed */
  unsigned max_connections; /* past it new connections are closed at once */
  uint64_t read_timeout_ms; /* whole request must arrive within; else 408 */
  uint64_t idle_timeout_ms; /* idle keep-alive connections are closed */
  /* A new connection's first request head, and any request's head from its
   * first byte, must arrive within this; 0: only the timeouts above. */
  uint64_t header_timeout_ms;
  /* Nonzero: near max_connections (and at max_connections_per_peer), the
   * oldest idle keep-alive connection, else the oldest one without a
   * complete request head, is closed to make room before a new one is
   * refused. */
  int evict_idle;
  unsigned max_connections_per_peer; /* per client address; 0: no limit */
  /* Requests a handler marks as failed (http_response_failed) a client
   * address may make a minute, in a token bucket as deep; 0: no limit. */
  unsigned failures_per_minute;
};

struct http_server_stats {
  uint64_t accepted;
  uint64_t rejected_busy;    /* over max_connections */
  uint64_t rejected_peer;    /* over max_connections_per_peer */
  uint64_t evicted;          /* idle or head-less, closed to make room */
  uint64_t header_timed_out; /* no complete request head in time */
  uint64_t rate_limited;     /* failed requests past the budget: 429 */
  uint64_t timed_out;        /* slow clients closed */
  uint64_t bad_requests;     /* unparseable: 400 */
  uint64_t too_large;        /* 413 and 431 */
  uint64_t deferred_expired; /* deferred answers past their limit: 503 */
  unsigned open;             /* connections open now */
  unsigned in_flight;        /* requests being read or answered now */
  unsigned deferred;         /* of those, waiting for a deferred answer */
};

struct http_server; /* opaque */

/* Creates a server on loop; handler(ctx, ...) answers requests. NULL on
 * failure. */
struct http_server *http_server_new(uv_loop_t *loop,
                                    const struct http_server_limits *limits,
                                    http_handler_cb handler, void *ctx);

/* Binds "host:port" (IPv4 or [IPv6]) and starts accepting. Port 0 picks a
 * free one (see http_server_port). Returns 0 or a negative libuv error. */
int http_server_listen(struct http_server *s, const char *addr);

/* The bound port, or -1 before listening. */
int http_server_port(const struct http_server *s);

/* Graceful stop: stops accepting, lets requests in flight be answered
 * (deferred ones until their answer or their limit), closes idle
 * connections, and calls done_cb(arg) once every handle is closed (before
 * returning, when nothing was ever open); then the server may be freed
 * with http_server_destroy. Deferral handles outlive it: answering or
 * releasing one later is safe and sends nothing. */
void http_server_stop(struct http_server *s, void (*done_cb)(void *arg),
                      void *arg);

/* Frees a stopped server (after done_cb ran), or one that never listened. */
void http_server_destroy(struct http_server *s);

void http_server_get_stats(const struct http_server *s,
                           struct http_server_stats *out);

/* Case-insensitive header lookup; NULL when absent. */
const char *http_request_header(const struct http_request *req,
                                const char *name);

/* Fills resp with status, content type and a copy of body. Returns 0, -1
 * when out of memory (resp then says 500). */
int http_response_set(struct http_response *resp, int status,
                      const char *content_type, const char *body, size_t len);

/* From a handler, for the resp it was given: the request failed (a bad
 * signature or credential), which costs its client address one token of
 * failures_per_minute. Returns 0 while tokens are left: the handler
 * answers as it would. Returns 1 past the budget: resp then says 429 with
 * Retry-After, the connection closes after it, and the handler leaves resp
 * as it is. */
int http_response_failed(struct http_response *resp);

/* From a handler, for the resp it was given: the answer comes later,
 * through the handle returned, which the caller then holds until it
 * passes it to http_deferred_answer or http_deferred_release (exactly one
 * of them, once). Past limit_ms the server answers 503 by itself. resp is
 * not looked at after this. NULL, with resp untouched, when resp is not
 * one the server handed out, was deferred already, or memory ran out. */
struct http_deferred *http_response_defer(struct http_response *resp,
                                          uint64_t limit_ms);

/* Answers a deferred request with status, content type (a static string)
 * and a copy of body, and gives up the handle. Safe from any loop
 * callback, also from the handler that deferred. Returns 0 when the
 * answer goes out, -1 when no one waits for it any more (limit passed,
 * client gone, server stopped): then it is dropped. */
int http_deferred_answer(struct http_deferred *d, int status,
                         const char *content_type, const char *body,
                         size_t len);

/* The same with header lines ("Name: value\r\n"..., copied; may be NULL)
 * sent after the server's own. */
int http_deferred_answer_headers(struct http_deferred *d, int status,
                                 const char *content_type, const char *headers,
                                 const char *body, size_t len);

/* Gives up the handle without an answer: a request still waiting for it
 * is answered 503 at once. */
void http_deferred_release(struct http_deferred *d);

#ifdef RUNFLEET_UNITTEST
int http_parse_addr(const char *addr, struct sockaddr_storage *ss);
/* Feeds data to a new connection's request parser without a socket, at
 * most chunk bytes at a time (0: a read buffer's worth), with s's limits;
 * s's handler answers each complete request and its response is dropped.
 * Returns 0 when all was parsed (or the connection would end after a
 * request), else the status the connection would fail with. The caller
 * runs s's loop once afterwards to free what it used. */
int http_server_parse_for_test(struct http_server *s, const char *data,
                               size_t len, size_t chunk);
#endif

#endif
