#ifndef RUNFLEET_ROUTER_H
#define RUNFLEET_ROUTER_H

#include <stddef.h>

#include "http_server.h"

/* One route table for both listeners: each route says on which listener
 * it is served, so the public one (which GitHub reaches) answers only
 * /webhook and /healthz. On the admin listener, mutating routes (POST,
 * PUT, PATCH, DELETE), or with "all" every route, need a bearer token,
 * except the probes and routes that check their callers themselves. */

#define ROUTER_PUBLIC 1u /* the listener GitHub reaches */
#define ROUTER_ADMIN 2u  /* metrics, API, status page, hook reports */

#define ROUTE_OPEN 1u     /* never needs a token: /healthz, /readyz */
#define ROUTE_OWN_AUTH 2u /* authenticates its callers (hook reports) */

typedef void (*router_fn)(void *ctx, const struct http_request *req,
                          struct http_response *resp);

struct route {
  const char *method; /* "GET" (also serves HEAD) or "POST" */
  const char *path;   /* exact, or a prefix when it ends in '/' */
  unsigned listeners; /* ROUTER_PUBLIC | ROUTER_ADMIN */
  router_fn fn;
  unsigned flags; /* ROUTE_OPEN, ROUTE_OWN_AUTH */
};

/* How the admin listener asks for tokens. check answers resp (401/403)
 * and returns nonzero when req may not pass, 0 when it may. */
struct router_auth {
  int all; /* every route but ROUTE_OPEN and ROUTE_OWN_AUTH ones */
  int (*check)(void *ctx, const struct http_request *req,
               struct http_response *resp);
};

/* Whether a request with method for route r on listener needs a token. */
int router_needs_token(const struct route *r, unsigned listener,
                       const char *method, int all);

/* Answers req with the first route of routes[0..n) that serves listener
 * and matches its path and method: 405 (with Allow) when routes match the
 * path under other methods only, 404 when none matches it. */
void router_dispatch(const struct route *routes, size_t n, unsigned listener,
                     void *ctx, const struct http_request *req,
                     struct http_response *resp);

/* The same, and a route that needs a token (router_needs_token) is called
 * only once auth->check(ctx, ...) let the request pass; auth may be NULL
 * (no checks). */
void router_dispatch_auth(const struct route *routes, size_t n,
                          unsigned listener, const struct router_auth *auth,
                          void *ctx, const struct http_request *req,
                          struct http_response *resp);

#endif
