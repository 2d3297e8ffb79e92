#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int path_matches(const struct route *r, const char *path)
{
  size_t n = strlen(r->path);

  if (n > 1 && r->path[n - 1] == '/')
    return strncmp(path, r->path, n) == 0;
  return strcmp(path, r->path) == 0;
}

static int method_matches(const struct route *r, const char *method)
{
  return strcmp(method, r->method) == 0 ||
         (strcmp(r->method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

int router_needs_token(const struct route *r, unsigned listener,
                       const char *method, int all)
{
  static const char *const mutating[] = {"POST", "PUT", "PATCH", "DELETE"};
  size_t i;

  if (listener != ROUTER_ADMIN || (r->flags & (ROUTE_OPEN | ROUTE_OWN_AUTH)))
    return 0;
  if (all)
    return 1;
  for (i = 0; i < sizeof(mutating) / sizeof(mutating[0]); i++)
    if (strcmp(method, mutating[i]) == 0)
      return 1;
  return 0;
}

void router_dispatch(const struct route *routes, size_t n, unsigned listener,
                     void *ctx, const struct http_request *req,
                     struct http_response *resp)
{
  router_dispatch_auth(routes, n, listener, NULL, ctx, req, resp);
}

void router_dispatch_auth(const struct route *routes, size_t n,
                          unsigned listener, const struct router_auth *auth,
                          void *ctx, const struct http_request *req,
                          struct http_response *resp)
{
  const struct route *first = NULL;
  char allow[64] = "";
  size_t i;

  /* The first route whose path matches decides the path: its method, or
   * that of a route for the very same path; a later, wider prefix does
   * not take a request the earlier route refused by method. */
  for (i = 0; i < n; i++) {
    const struct route *r = &routes[i];

    if ((r->listeners & listener) == 0 || !path_matches(r, req->path))
      continue;
    if (first == NULL)
      first = r;
    else if (strcmp(r->path, first->path) != 0)
      continue;
    if (method_matches(r, req->method)) {
      if (auth != NULL && auth->check != NULL &&
          router_needs_token(r, listener, req->method, auth->all) &&
          auth->check(ctx, req, resp) != 0)
        return;
      r->fn(ctx, req, resp);
      return;
    }
    if (strlen(allow) + strlen(r->method) + 10 < sizeof(allow))
      snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s%s",
               allow[0] ? ", " : "", r->method,
               strcmp(r->method, "GET") == 0 ? ", HEAD" : "");
  }
  if (first == NULL) {
    http_response_set(resp, 404, "text/plain", "not found\n", 10);
    return;
  }
  http_response_set(resp, 405, "text/plain", "method not allowed\n", 19);
  if (asprintf(&resp->extra_headers, "Allow: %s\r\n", allow) < 0)
    resp->extra_headers = NULL;
}
