#include "http_server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Crowding: the server keeps, per client address, its open connections
 * and a budget of failed requests; near max_connections (or a peer's own
 * limit) it closes idle and head-less connections before it refuses a new
 * one, and it sums refusals into one log line per interval. */

#define MOD "http"

/* ---- refusals: counted always, logged at most once an interval ---- */

void http_refused(struct http_server *s, enum http_refusal why,
                  const char *peer)
{
  uint64_t now = uv_now(s->loop);
  uint64_t *r = s->refusals;
  enum log_level level = LOG_INFO;

  switch (why) {
  case REFUSED_BUSY:
    s->stats.rejected_busy++;
    break;
  case REFUSED_PEER:
    s->stats.rejected_peer++;
    break;
  case REFUSED_EVICTED:
    s->stats.evicted++;
    break;
  case REFUSED_HEADER_TIMEOUT:
    s->stats.header_timed_out++;
    break;
  case REFUSED_RATE:
    s->stats.rate_limited++;
    break;
  case REFUSED_NONE:
  case REFUSED_N:
    return;
  }
  r[why]++;
  if (s->refusal_logged && now - s->refusal_log_ms < HTTP_REFUSAL_LOG_MS)
    return;
  /* Timeouts and evictions alone are routine; refusals mean clients were
   * turned away. */
  if (r[REFUSED_BUSY] + r[REFUSED_PEER] + r[REFUSED_RATE] > 0)
    level = LOG_WARN;
  log_at(level, MOD, "connections refused or closed early",
         LOG_S("listener", http_server_name(s)),
         LOG_U("max_connections", (unsigned long long)r[REFUSED_BUSY]),
         LOG_U("per_peer", (unsigned long long)r[REFUSED_PEER]),
         LOG_U("evicted", (unsigned long long)r[REFUSED_EVICTED]),
         LOG_U("header_timeout", (unsigned long long)r[REFUSED_HEADER_TIMEOUT]),
         LOG_U("rate_limited", (unsigned long long)r[REFUSED_RATE]),
         LOG_S("last_peer", peer), LOG_I("interval_ms", HTTP_REFUSAL_LOG_MS));
  memset(s->refusals, 0, sizeof(s->refusals));
  s->refusal_logged = 1;
  s->refusal_log_ms = now;
}

/* ---- client addresses ---- */

static size_t peer_key(const struct sockaddr_storage *ss, unsigned char *addr,
                       int *family)
{
  memset(addr, 0, 16);
  *family = ss->ss_family;
  if (ss->ss_family == AF_INET) {
    memcpy(addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    return 4;
  }
  if (ss->ss_family == AF_INET6) {
    memcpy(addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    return 16;
  }
  return 0;
}

static size_t peer_hash(const unsigned char *addr, int family)
{
  uint32_t h = 2166136261u ^ (uint32_t)family;
  size_t i;

  for (i = 0; i < 16; i++)
    h = (h ^ addr[i]) * 16777619u;
  return h % HTTP_PEER_BUCKETS;
}

/* Adds what the time since the last refill earned to p's failure budget. */
void http_peer_refill(struct http_server *s, struct http_peer *p, uint64_t now)
{
  double rate = s->limits.failures_per_minute;

  if (now > p->refill_ms)
    p->tokens += (double)(now - p->refill_ms) * rate / 60000.0;
  if (p->tokens > rate)
    p->tokens = rate;
  p->refill_ms = now;
}

/* Forgets addresses without a connection: first those whose budget is
 * full again (nothing is lost), then, if still too many, all of them. */
static void peers_sweep(struct http_server *s, size_t keep)
{
  uint64_t now = uv_now(s->loop);
  int pass;
  size_t i;

  for (pass = 0; pass < 2 && s->npeers > keep; pass++)
    for (i = 0; i < HTTP_PEER_BUCKETS; i++) {
      struct http_peer **pp = &s->peers[i];

      while (*pp != NULL) {
        struct http_peer *p = *pp;

        http_peer_refill(s, p, now);
        if (p->conns == 0 &&
            (pass == 1 || p->tokens >= (double)s->limits.failures_per_minute)) {
          *pp = p->next;
          free(p);
          s->npeers--;
        } else {
          pp = &p->next;
        }
      }
    }
}

/* The entry for ss's address, made if new; NULL without memory or for an
 * address family that has none. */
struct http_peer *http_peer_get(struct http_server *s,
                                const struct sockaddr_storage *ss)
{
  unsigned char addr[16];
  int family;
  size_t h;
  struct http_peer *p;
  size_t max = (size_t)s->limits.max_connections * HTTP_PEERS_PER_CONNECTION;

  if (peer_key(ss, addr, &family) == 0)
    return NULL;
  h = peer_hash(addr, family);
  for (p = s->peers[h]; p != NULL; p = p->next)
    if (p->family == family && memcmp(p->addr, addr, 16) == 0)
      return p;
  if (s->npeers >= max)
    peers_sweep(s, max / 2);
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return NULL;
  memcpy(p->addr, addr, 16);
  p->family = family;
  p->tokens = s->limits.failures_per_minute;
  p->refill_ms = uv_now(s->loop);
  p->next = s->peers[h];
  s->peers[h] = p;
  s->npeers++;
  return p;
}

void http_peers_free(struct http_server *s)
{
  size_t i;

  for (i = 0; i < HTTP_PEER_BUCKETS; i++)
    while (s->peers[i] != NULL) {
      struct http_peer *p = s->peers[i];

      s->peers[i] = p->next;
      free(p);
    }
  s->npeers = 0;
}

/* ---- accepting: address and admission ---- */

void http_format_peer(const struct sockaddr_storage *ss, char *out,
                      size_t out_size)
{
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;

  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

    if (uv_ip4_name(sin, ip, sizeof(ip)) != 0)
      snprintf(ip, sizeof(ip), "?");
    port = ntohs(sin->sin_port);
    snprintf(out, out_size, "%s:%d", ip, port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

    if (uv_ip6_name(sin6, ip, sizeof(ip)) != 0)
      snprintf(ip, sizeof(ip), "?");
    port = ntohs(sin6->sin6_port);
    snprintf(out, out_size, "[%s]:%d", ip, port);
  } else {
    snprintf(out, out_size, "unknown");
  }
}

/* How much c may be closed to make room: 2 for an idle keep-alive
 * connection, 1 for one without a complete request head (a new one that
 * sent nothing, or a head still arriving), 0 not at all. */
static int conn_evictable(const struct http_conn *c)
{
  if (c->dispatching || c->writes_pending > 0 || c->deferred != NULL)
    return 0;
  if (c->state == CONN_IDLE && c->roff >= c->rlen)
    return c->served > 0 ? 2 : 1;
  if (c->state == CONN_READING && !c->head_done)
    return 1;
  return 0;
}

/* The connection to close to make room for fresh (of peer's, when peer is
 * not NULL): the most evictable, and of those the longest inactive. */
static struct http_conn *conn_victim(struct http_server *s,
                                     const struct http_conn *fresh,
                                     const struct http_peer *peer)
{
  struct http_conn *best = NULL, *c;
  int best_rank = 0;

  for (c = s->conns_tail; c != NULL; c = c->prev) {
    int rank;

    if (c == fresh || (peer != NULL && c->peer != peer))
      continue;
    rank = conn_evictable(c);
    if (rank > best_rank ||
        (rank > 0 && rank == best_rank && c->active_ms < best->active_ms)) {
      best = c;
      best_rank = rank;
    }
  }
  return best;
}

/* Makes room for c under the per-peer limit and max_connections, closing
 * idle connections first. Returns REFUSED_NONE when c may stay. */
enum http_refusal http_conn_admit(struct http_server *s, struct http_conn *c,
                                  struct http_peer *peer)
{
  const struct http_server_limits *l = &s->limits;
  unsigned others = s->stats.open - 1; /* open counts c already */
  unsigned high = l->max_connections - l->max_connections / 8;
  struct http_conn *victim;

  if (peer != NULL && l->max_connections_per_peer > 0 &&
      peer->conns >= l->max_connections_per_peer) {
    victim = l->evict_idle ? conn_victim(s, c, peer) : NULL;
    if (victim == NULL)
      return REFUSED_PEER;
    http_refused(s, REFUSED_EVICTED, victim->req.peer);
    http_conn_close(victim);
    others--;
  }
  /* Near the limit, each new connection closes an idle one, so that room
   * is left for clients that send requests. */
  if (l->evict_idle && others >= high) {
    victim = conn_victim(s, c, NULL);
    if (victim != NULL) {
      http_refused(s, REFUSED_EVICTED, victim->req.peer);
      http_conn_close(victim);
      others--;
    }
  }
  if (others >= l->max_connections)
    return REFUSED_BUSY;
  return REFUSED_NONE;
}
