#ifndef RUNFLEET_HTTP_CLIENT_H
#define RUNFLEET_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* HTTP requests through libcurl's multi interface driven by the libuv loop
 * (one uv_poll_t per socket, one uv_timer_t). Connections are reused. */

#define HTTP_CLIENT_MAX_RESPONSE                                               \
  (8u << 20) /* larger bodies fail the request                                 \
              */

struct http_client_response {
  long status;       /* HTTP status, 0 when no response came */
  int curl_code;     /* CURLE_OK or the transfer error */
  const char *error; /* human-readable transfer error, or NULL */
  char *body;        /* NUL-terminated; valid during the callback only */
  size_t body_len;
  char *headers; /* raw response header block, valid during callback */
  double total_seconds;
};

/* Called exactly once per request that http_client_send accepted. */
typedef void (*http_client_done_cb)(void *arg,
                                    const struct http_client_response *resp);

/* Streaming: called with each chunk of a 2xx response body as it arrives
 * (the body is then not buffered, and done_cb gets an empty one). Returns 0
 * to go on; anything else aborts the transfer (done_cb then sees
 * CURLE_ABORTED_BY_CALLBACK). A non-2xx body is buffered as usual. */
typedef int (*http_client_data_cb)(void *arg, const char *data, size_t len);

/* TLS material for one request; every member may be NULL/0. A PEM blob wins
 * over the file of the same kind. Blobs are copied by libcurl. */
struct http_client_tls {
  const char *ca_file; /* trust only these CAs instead of the system's */
  const char *ca_pem;
  size_t ca_pem_len;
  const char *cert_file; /* client certificate (PEM) */
  const char *cert_pem;
  size_t cert_pem_len;
  const char *key_file; /* its private key (PEM) */
  const char *key_pem;
  size_t key_pem_len;
  int insecure; /* skip peer and host name verification */
};

struct http_client_request {
  const char *method; /* "GET", "POST", "DELETE", ... */
  const char *url;
  const char *const *headers; /* "Name: value" strings, NULL-terminated */
  const char *body;           /* may be NULL */
  size_t body_len;
  uint64_t timeout_ms; /* whole transfer; 0: 30 s (streaming: none) */
  const struct http_client_tls *tls; /* NULL: system CAs, no client cert */
  http_client_data_cb data_cb;       /* non-NULL: stream the body */
  uint64_t idle_timeout_ms; /* streaming: abort after this long without a
                               byte; 0: 60 s */
};

struct http_client;   /* opaque */
struct http_transfer; /* one request in flight, until its done_cb */

/* Creates a client on loop, or NULL. */
struct http_client *http_client_new(uv_loop_t *loop);

/* Starts a request. On success returns 0 and done_cb will run once, later,
 * from the loop; on failure returns a negative code and never calls it.
 * The request's strings are copied. */
int http_client_send(struct http_client *c,
                     const struct http_client_request *req,
                     http_client_done_cb done_cb, void *arg);

/* As http_client_send, and on success sets *out to the transfer, which
 * stays valid until its done_cb starts. */
int http_client_start(struct http_client *c,
                      const struct http_client_request *req,
                      http_client_done_cb done_cb, void *arg,
                      struct http_transfer **out);

/* Aborts one transfer: its done_cb runs with CURLE_ABORTED_BY_CALLBACK and
 * status 0 before this returns, or, when called from the transfer's own
 * data_cb, once that callback has returned. */
void http_client_cancel(struct http_transfer *t);

/* Number of requests in flight. */
unsigned http_client_pending(const struct http_client *c);

/* Aborts requests in flight (their callbacks run with curl_code
 * CURLE_ABORTED_BY_CALLBACK and status 0), closes every handle, and calls
 * done_cb(arg) when the client may be freed with http_client_destroy. */
void http_client_close(struct http_client *c, void (*done_cb)(void *arg),
                       void *arg);
void http_client_destroy(struct http_client *c);

/* Finds a header in a response (case-insensitive) and copies its value
 * into out. Returns 0, or -1 when absent. */
int http_client_header(const struct http_client_response *resp,
                       const char *name, char *out, size_t out_size);

#endif
