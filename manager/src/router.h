#ifndef RUNFLEET_ROUTER_H
#define RUNFLEET_ROUTER_H

#include <stddef.h>

#include "http_server.h"

/* One route table for both listeners: each route says on which listener
 * it is served, so the public one (which GitHub reaches) can answer only
 * /webhook and /healthz once it is split from the admin one. */

#define ROUTER_PUBLIC 1u /* the listener GitHub reaches */
#define ROUTER_ADMIN 2u  /* metrics, API, status page, hook reports */

typedef void (*router_fn)(void *ctx, const struct http_request *req,
                          struct http_response *resp);

struct route {
  const char *method; /* "GET" (also serves HEAD) or "POST" */
  const char *path;   /* exact, or a prefix when it ends in '/' */
  unsigned listeners; /* ROUTER_PUBLIC | ROUTER_ADMIN */
  router_fn fn;
};

/* Answers req with the first route of routes[0..n) that serves listener
 * and matches its path and method: 405 (with Allow) when routes match the
 * path under other methods only, 404 when none matches it. */
void router_dispatch(const struct route *routes, size_t n, unsigned listener,
                     void *ctx, const struct http_request *req,
                     struct http_response *resp);

#endif
