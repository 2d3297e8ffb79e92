#ifndef RUNFLEET_HTTP_SERVER_INT_H
#define RUNFLEET_HTTP_SERVER_INT_H

/* What the files of the HTTP server share: http_server.c (connections,
 * parsing, writing, deferred answers, the server) and http_crowd.c (client
 * addresses, failure budgets, refusals and eviction near the limits). Not
 * for other modules. */

#include <stdint.h>
#include <time.h>

#include <http_parser.h>
#include <uv.h>

#include "http_server.h"

/* Bytes read from the socket at a time; requests are parsed straight out
 * of this buffer, so it is the only per-connection buffer besides the
 * header store (bounded by max_header_bytes) and the body (max_body_bytes).
 */
#define HTTP_READ_BUF 16384
/* Responses queued on one connection before we stop reading from it: a
 * client that pipelines without reading cannot make us buffer without end.
 */
#define HTTP_MAX_PENDING_WRITES 8
/* After the last response of a connection we send FIN and read (and drop)
 * what the client still sends for at most this long, so that closing does
 * not turn into a reset that destroys the response before it is read. */
#define HTTP_LINGER_MS 1000
#define HTTP_LINGER_MAX_BYTES (1024 * 1024)
/* Request line overhead counted against max_header_bytes besides the URL:
 * method, spaces, "HTTP/1.1" and CRLF, approximately. */
#define HTTP_REQUEST_LINE_OVERHEAD 16
#define HTTP_HEAD_MAX 512
/* Refusals and evictions are summed and logged at most once this often:
 * a flood of connections must not become a flood of log lines. */
#define HTTP_REFUSAL_LOG_MS 10000
/* Client addresses the server remembers (connection counts, failure
 * budgets), as a multiple of max_connections; past it, those without a
 * connection are forgotten. */
#define HTTP_PEERS_PER_CONNECTION 2
#define HTTP_PEER_BUCKETS 1024

enum http_conn_state {
  CONN_IDLE,    /* between requests (responses may still be being written) */
  CONN_READING, /* a request has begun and is not complete */
  CONN_WAITING, /* its handler deferred the answer; nothing more is parsed */
  CONN_LINGER,  /* last response queued; FIN sent; draining input */
  CONN_CLOSED   /* uv_close called; freed once both close callbacks ran */
};

enum http_hdr_part { PART_NONE, PART_URL, PART_FIELD, PART_VALUE };

/* Why a connection was refused or closed early; each has a count in the
 * stats and in the periodic log line. */
enum http_refusal {
  REFUSED_NONE,
  REFUSED_BUSY,           /* at max_connections, nothing to evict */
  REFUSED_PEER,           /* at max_connections_per_peer, nothing to evict */
  REFUSED_EVICTED,        /* idle or head-less, closed to make room */
  REFUSED_HEADER_TIMEOUT, /* no complete request head in time */
  REFUSED_RATE,           /* failed requests past the budget: 429 */
  REFUSED_N
};

/* One client address: its open connections and its failure budget. */
struct http_peer {
  struct http_peer *next; /* in its hash bucket */
  unsigned char addr[16];
  int family;
  unsigned conns;
  double tokens; /* failures it may still make; refilled over time */
  uint64_t refill_ms;
};

struct http_listener {
  uv_tcp_t tcp;
  struct http_server *server; /* NULL when the server no longer owns it */
};

/* Shared by the connection that waits and the handler's side that holds
 * it. The holder frees it (answer or release); the connection only lets
 * go of it (conn set to NULL) when it stops waiting: at the limit, or
 * when it closes. So a late answer finds conn NULL and sends nothing. */
struct http_deferred {
  struct http_conn *conn; /* waiting for this answer; NULL once not */
  uint64_t limit_ms;
  char path[128]; /* of the request, for the log; may be truncated */
};

struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  struct http_server *server;
  struct http_conn *prev;
  struct http_conn *next;
  enum http_conn_state state;
  int handles_open;
  int reading;       /* uv_read_start in effect */
  int dispatching;   /* inside the handler */
  int deferred_once; /* the handler deferred (at most once a request) */
  int head_only;     /* the request being answered is a HEAD */
  int keep_alive;    /* of the request just completed */
  int request_done;  /* parser paused on a complete request */
  int error_status;  /* set by a parser callback to refuse the request */
  int peer_eof;      /* the client half-closed; it may still read */
  int shut_down;     /* our FIN is out: every response was written */
  int sink;          /* writes are dropped: no socket (parse-only tests) */
  unsigned writes_pending;
  size_t lingered;
  int head_done;              /* the request being read has its whole head */
  int close_after;            /* the answer being given ends the connection */
  unsigned served;            /* requests answered on this connection */
  uint64_t begin_ms;          /* when the request being read began */
  uint64_t active_ms;         /* accepted, or the last request began or ended */
  struct http_peer *peer;     /* NULL when not counted against one */
  struct http_response *resp; /* the handler's, while dispatching */
  struct http_deferred *deferred; /* the answer it waits for, or NULL */

  http_parser parser;
  char rbuf[HTTP_READ_BUF];
  size_t roff; /* parsed up to here */
  size_t rlen; /* valid bytes in rbuf */

  /* The request being read: strings live in hbuf, the body in body. */
  struct http_request req;
  char *hbuf;
  size_t hlen;
  size_t hcap;
  size_t header_bytes;
  enum http_hdr_part part;
  char *url;
  char *body;
  size_t body_cap;
  char empty[1];
  char root[2];
};

struct http_write {
  uv_write_t req;
  struct http_conn *conn;
  char *head;
  char *body;
};

struct http_server {
  uv_loop_t *loop;
  struct http_server_limits limits;
  http_handler_cb handler;
  void *ctx;
  struct http_listener *listener;
  int port;
  struct http_conn *conns;      /* newest first */
  struct http_conn *conns_tail; /* oldest */
  struct http_peer *peers[HTTP_PEER_BUCKETS];
  size_t npeers;
  uint64_t refusals[REFUSED_N]; /* since the last log line about them */
  int refusal_logged;           /* a line was written at refusal_log_ms */
  uint64_t refusal_log_ms;
  unsigned handles_open; /* listener + connections not yet freed */
  int stopping;
  void (*done_cb)(void *arg);
  void *done_arg;
  struct http_server_stats stats;
};

/* http_message.c */
/* The reason phrase of status ("Unknown" for one it does not know). */
const char *http_reason(int status);
/* IMF-fixdate (RFC 9110) of t, independent of the locale. */
void http_date(time_t t, char *out, size_t out_size);

/* http_server.c */
const char *http_server_name(const struct http_server *s);
/* Closes c (idempotent); it is freed once its handles have closed. */
void http_conn_close(struct http_conn *c);

/* http_crowd.c */
/* Counts a refusal or early close of why and logs the sums at most once
 * per HTTP_REFUSAL_LOG_MS. */
void http_refused(struct http_server *s, enum http_refusal why,
                  const char *peer);
/* Adds what the time since the last refill earned to p's failure budget. */
void http_peer_refill(struct http_server *s, struct http_peer *p, uint64_t now);
/* The entry for ss's address, made if new; NULL without memory or for an
 * address family that has none. */
struct http_peer *http_peer_get(struct http_server *s,
                                const struct sockaddr_storage *ss);
void http_peers_free(struct http_server *s);
/* "1.2.3.4:5" or "[::1]:5" into out. */
void http_format_peer(const struct sockaddr_storage *ss, char *out,
                      size_t out_size);
/* Makes room for c under the per-peer limit and max_connections, closing
 * idle connections first. Returns REFUSED_NONE when c may stay. */
enum http_refusal http_conn_admit(struct http_server *s, struct http_conn *c,
                                  struct http_peer *peer);

#endif
