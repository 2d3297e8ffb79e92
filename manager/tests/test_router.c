/* router: one table for both listeners; exact and prefix paths, HEAD on
 * GET routes, 405 with Allow, 404, and the first matching path decides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

static char called[32];

#define FN(name)                                                               \
  static void fn_##name(void *ctx, const struct http_request *req,             \
                        struct http_response *resp)                            \
  {                                                                            \
    (void)ctx;                                                                 \
    (void)req;                                                                 \
    snprintf(called, sizeof(called), "%s", #name);                             \
    resp->status = 200;                                                        \
  }
FN(webhook)
FN(healthz)
FN(metrics)
FN(hooks)
FN(hooks_get)
FN(api_404)
#undef FN

static const struct route table[] = {
    {"POST", "/webhook", ROUTER_PUBLIC | ROUTER_ADMIN, fn_webhook, 0},
    {"GET", "/healthz", ROUTER_PUBLIC | ROUTER_ADMIN, fn_healthz, 0},
    {"GET", "/metrics", ROUTER_ADMIN, fn_metrics, 0},
    {"POST", "/api/v1/hooks/", ROUTER_ADMIN, fn_hooks, 0},
    {"GET", "/api/v1/hooks/", ROUTER_ADMIN, fn_hooks_get, 0},
    {"GET", "/api/v1/", ROUTER_ADMIN, fn_api_404, 0},
};

/* Dispatches method path on listener; returns the status, and what was
 * called in `called` ("" for the router's own answers). */
static int go(unsigned listener, const char *method, const char *path,
              struct http_response *resp)
{
  struct http_request req;
  char buf[64];

  snprintf(buf, sizeof(buf), "%s", path);
  memset(&req, 0, sizeof(req));
  memset(resp, 0, sizeof(*resp));
  called[0] = '\0';
  req.method = method;
  req.path = buf;
  router_dispatch(table, sizeof(table) / sizeof(table[0]), listener, NULL, &req,
                  resp);
  return resp->status;
}

static int checked;

static int check_token(void *ctx, const struct http_request *req,
                       struct http_response *resp)
{
  (void)ctx;
  checked++;
  if (req->query != NULL && strcmp(req->query, "token") == 0)
    return 0;
  resp->status = 401;
  return 1;
}

static const struct route guarded[] = {
    {"GET", "/healthz", ROUTER_PUBLIC | ROUTER_ADMIN, fn_healthz, ROUTE_OPEN},
    {"POST", "/webhook", ROUTER_PUBLIC, fn_webhook, 0},
    {"GET", "/metrics", ROUTER_ADMIN, fn_metrics, 0},
    {"POST", "/api/v1/hooks/", ROUTER_ADMIN, fn_hooks, ROUTE_OWN_AUTH},
    {"DELETE", "/api/v1/x", ROUTER_ADMIN, fn_api_404, 0},
};

/* As go, through router_dispatch_auth; query "token" passes the check. */
static int go_auth(unsigned listener, int all, const char *method,
                   const char *path, const char *query)
{
  struct router_auth auth = {all, check_token};
  struct http_response resp;
  struct http_request req;
  char buf[64], q[16];

  snprintf(buf, sizeof(buf), "%s", path);
  snprintf(q, sizeof(q), "%s", query != NULL ? query : "");
  memset(&req, 0, sizeof(req));
  memset(&resp, 0, sizeof(resp));
  called[0] = '\0';
  checked = 0;
  req.method = method;
  req.path = buf;
  req.query = query != NULL ? q : NULL;
  router_dispatch_auth(guarded, sizeof(guarded) / sizeof(guarded[0]), listener,
                       &auth, NULL, &req, &resp);
  free(resp.body);
  free(resp.extra_headers);
  return resp.status;
}

static void test_tokens_for_mutations_and_all(void **state)
{
  (void)state;
  /* Mutations on admin need a token; reads do not; public never. */
  assert_int_equal(go_auth(ROUTER_ADMIN, 0, "DELETE", "/api/v1/x", NULL), 401);
  assert_int_equal(checked, 1);
  assert_string_equal(called, "");
  assert_int_equal(go_auth(ROUTER_ADMIN, 0, "DELETE", "/api/v1/x", "token"),
                   200);
  assert_string_equal(called, "api_404");
  assert_int_equal(go_auth(ROUTER_ADMIN, 0, "GET", "/metrics", NULL), 200);
  assert_int_equal(checked, 0);
  assert_int_equal(go_auth(ROUTER_PUBLIC, 1, "POST", "/webhook", NULL), 200);
  assert_int_equal(checked, 0);
  /* Hook reports check their own tokens. */
  assert_int_equal(
      go_auth(ROUTER_ADMIN, 1, "POST", "/api/v1/hooks/started", NULL), 200);
  assert_int_equal(checked, 0);
  /* With all, reads need one too, but not the probes. */
  assert_int_equal(go_auth(ROUTER_ADMIN, 1, "GET", "/metrics", NULL), 401);
  assert_int_equal(go_auth(ROUTER_ADMIN, 1, "GET", "/metrics", "token"), 200);
  assert_int_equal(go_auth(ROUTER_ADMIN, 1, "HEAD", "/healthz", NULL), 200);
  assert_int_equal(checked, 0);
  /* A 404 or 405 is answered before any check. */
  assert_int_equal(go_auth(ROUTER_ADMIN, 1, "GET", "/nowhere", NULL), 404);
  assert_int_equal(go_auth(ROUTER_ADMIN, 1, "PUT", "/metrics", NULL), 405);
  assert_int_equal(checked, 0);
}

static void done(struct http_response *resp)
{
  free(resp->body);
  free(resp->extra_headers);
}

static void test_routes(void **state)
{
  struct http_response r;

  (void)state;
  assert_int_equal(go(ROUTER_PUBLIC, "POST", "/webhook", &r), 200);
  assert_string_equal(called, "webhook");
  done(&r);
  assert_int_equal(go(ROUTER_ADMIN, "HEAD", "/healthz", &r), 200);
  assert_string_equal(called, "healthz");
  done(&r);
  assert_int_equal(go(ROUTER_ADMIN, "POST", "/api/v1/hooks/started", &r), 200);
  assert_string_equal(called, "hooks");
  done(&r);
  /* The same path under two methods: each goes to its own route. */
  assert_int_equal(go(ROUTER_ADMIN, "GET", "/api/v1/hooks/x", &r), 200);
  assert_string_equal(called, "hooks_get");
  done(&r);
  assert_int_equal(go(ROUTER_ADMIN, "GET", "/api/v1/nothing", &r), 200);
  assert_string_equal(called, "api_404");
  done(&r);
  /* An exact path is not a prefix. */
  assert_int_equal(go(ROUTER_ADMIN, "GET", "/healthz/x", &r), 404);
  assert_string_equal(called, "");
  done(&r);
}

static void test_405_404_and_listeners(void **state)
{
  struct http_response r;

  (void)state;
  assert_int_equal(go(ROUTER_PUBLIC, "GET", "/webhook", &r), 405);
  assert_string_equal(called, "");
  assert_string_equal(r.extra_headers, "Allow: POST\r\n");
  done(&r);
  assert_int_equal(go(ROUTER_ADMIN, "DELETE", "/api/v1/hooks/started", &r),
                   405);
  assert_string_equal(r.extra_headers, "Allow: POST, GET, HEAD\r\n");
  done(&r);
  /* A wider prefix later in the table does not take what the first
   * matching path refused by method. */
  assert_int_equal(go(ROUTER_ADMIN, "POST", "/api/v1/pools", &r), 405);
  assert_string_equal(called, "");
  done(&r);
  /* Routes of the other listener do not exist on this one. */
  assert_int_equal(go(ROUTER_PUBLIC, "GET", "/metrics", &r), 404);
  assert_string_equal(called, "");
  done(&r);
  assert_int_equal(go(ROUTER_PUBLIC, "POST", "/api/v1/hooks/started", &r), 404);
  done(&r);
  assert_int_equal(go(ROUTER_ADMIN, "GET", "/nowhere", &r), 404);
  assert_null(r.extra_headers);
  done(&r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_routes),
      cmocka_unit_test(test_405_404_and_listeners),
      cmocka_unit_test(test_tokens_for_mutations_and_all),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
