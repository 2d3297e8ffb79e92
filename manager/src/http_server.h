#ifndef RUNFLEET_HTTP_SERVER_H
#define RUNFLEET_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* An HTTP/1.1 server on the libuv loop. Parsing is done by http-parser;
 * this module owns connections, keep-alive, limits and timeouts.
 * Handlers are synchronous: they fill a response before returning. */

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

struct http_response {
  int status;
  const char *content_type; /* static string; default text/plain */
  char *body;               /* malloc'd; the server frees it */
  size_t body_len;
  char *extra_headers; /* malloc'd "Name: value\r\n..." or NULL */
};

/* Called for each complete request; must set resp->status (and body). */
typedef void (*http_handler_cb)(void *ctx, const struct http_request *req,
                                struct http_response *resp);

struct http_server_limits {
  size_t max_header_bytes;  /* request line + headers; past it: 431 */
  size_t max_body_bytes;    /* past it: 413, connection closed */
  unsigned max_connections; /* past it new connections are closed at once */
  uint64_t read_timeout_ms; /* whole request must arrive within; else 408 */
  uint64_t idle_timeout_ms; /* idle keep-alive connections are closed */
};

struct http_server_stats {
  uint64_t accepted;
  uint64_t rejected_busy; /* over max_connections */
  uint64_t timed_out;     /* slow clients closed */
  uint64_t bad_requests;  /* unparseable: 400 */
  uint64_t too_large;     /* 413 and 431 */
  unsigned open;          /* connections open now */
  unsigned in_flight;     /* requests being read or answered now */
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

/* Graceful stop: stops accepting, lets requests in flight be answered,
 * closes idle connections, and calls done_cb(arg) once every handle is
 * closed (before returning, when nothing was ever open); then the server
 * may be freed with http_server_destroy. */
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

#ifdef RUNFLEET_UNITTEST
#include <time.h>
const char *http_reason(int status);
void http_date(time_t t, char *out, size_t out_size);
int http_parse_addr(const char *addr, struct sockaddr_storage *ss);
#endif

#endif
