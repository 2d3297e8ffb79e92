/* The dev server API. See devserver_api.h. */
#include "devserver_api.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "auth.h"
#include "log.h"

#define DA_MOD "api"
#define DA_JSON "application/json"
#define DA_PREFIX "/api/v1/devservers"
#define DA_MS_HOUR 3600000.0
#define DA_ANSWER_MS 10000 /* the journal commit a reservation waits for */

/* A new reservation's answer, given once the journal has it. */
struct da_pending {
  struct http_deferred *answer;
  struct devfleet *df;
  struct dev_server *d;
};

static void da_json(struct http_response *resp, int status, json_t *doc)
{
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;

  json_decref(doc);
  if (text == NULL) {
    http_response_set(resp, 500, "text/plain", "out of memory\n", 14);
    return;
  }
  http_response_set(resp, status, DA_JSON, text, strlen(text));
  free(text);
}

static void da_error(struct http_response *resp, int status, const char *msg)
{
  da_json(resp, status, json_pack("{s:s}", "message", msg));
}

static json_t *da_time(uint64_t ms)
{
  char buf[40];
  struct tm tm;
  time_t t;

  if (ms == 0)
    return json_null();
  t = (time_t)(ms / 1000);
  gmtime_r(&t, &tm);
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_string(buf);
}

static json_t *da_server(const struct devfleet *df, const struct dev_server *d)
{
  const struct dev_table *t = devfleet_table(df);
  size_t pos = dev_queue_position(t, d), n, i;
  unsigned port = devfleet_port(df, d);
  uint64_t start = 0, now = (uint64_t)time(NULL) * 1000;
  json_t *eta =
      devfleet_eta(df, d, &start) == 0
          ? json_integer(start > now ? (json_int_t)((start - now) / 1000) : 0)
          : json_null();
  int gpus[CAP_MAX_NODE_GPUS];
  char name[DEVFLEET_NAME_MAX + 1];
  json_t *g = json_array(), *ssh, *o;

  n = devfleet_gpus(df, d, gpus, CAP_MAX_NODE_GPUS);
  for (i = 0; i < n; i++)
    json_array_append_new(g, json_integer(gpus[i]));
  ssh = port != 0 ? json_pack("{s:s, s:i, s:s}", "host", devfleet_ssh_host(df),
                              "port", (int)port, "user", devfleet_ssh_user(df))
                  : json_null();
  /* eta_seconds: null is "not known", never a made-up 0. */
  o = json_pack(
      "{s:s, s:s, s:s, s:i, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, "
      "s:s, s:o, s:o}",
      "id", d->id, "user", d->user, "flavor", d->flavor, "gpus", (int)d->gpus,
      "state", dev_state_name(d->state), "queue_position",
      pos != 0 ? json_integer((json_int_t)pos) : json_null(), "eta_seconds",
      eta, "created_at", da_time(d->created_ms), "active_at",
      da_time(d->active_ms), "expires_at", da_time(d->expires_at_ms),
      "ended_at", da_time(d->ended_ms), "duration_seconds",
      (json_int_t)(d->duration_ms / 1000), "extended_seconds",
      (json_int_t)(d->extended_ms / 1000), "reason", d->reason, "gpu_indices",
      g, "ssh", ssh);
  if (o != NULL)
    json_object_set_new(o, "name",
                        devfleet_name(df, d, name, sizeof(name))
                            ? json_string(name)
                            : json_null());
  return o;
}

/* ---- who calls ---- */

struct da_caller {
  struct dev_caller who;
  const char *name; /* for logs */
};

/* 0 and *c filled, or the answer (401, 403) was given. */
static int da_authenticate(struct devfleet *df, const struct cfg_admin *admin,
                           const struct http_request *req,
                           struct http_response *resp, struct da_caller *c)
{
  const char *h = http_request_header(req, "Authorization");
  const struct cfg_dev_user *u = NULL;
  const char *name = NULL;
  enum auth_result rc;

  memset(c, 0, sizeof(*c));
  rc = auth_dev_check(&devfleet_config(df)->devservers, h, &u);
  if (rc == AUTH_OK) {
    c->who.user = u->name;
    c->who.admin = u->role == CFG_DEV_ROLE_ADMIN;
    c->name = u->name;
    return 0;
  }
  if (rc == AUTH_DENIED && auth_bearer_check(admin, h, &name) == AUTH_OK) {
    c->who.user = NULL;
    c->who.admin = 1;
    c->name = name;
    return 0;
  }
  if (rc == AUTH_MISSING) {
    da_error(resp, 401, "a bearer token is needed");
    resp->extra_headers = strdup("WWW-Authenticate: Bearer\r\n");
    return -1;
  }
  log_info(DA_MOD, "dev server token refused", LOG_S("peer", req->peer),
           LOG_S("method", req->method), LOG_S("path", req->path));
  if (!http_response_failed(resp))
    da_error(resp, 403, "forbidden");
  return -1;
}

/* ---- request bodies ---- */

static json_t *da_body(const struct http_request *req,
                       struct http_response *resp)
{
  json_error_t err;
  json_t *doc =
      json_loadb(req->body != NULL ? req->body : "", req->body_len, 0, &err);
  char msg[256];

  if (doc == NULL || !json_is_object(doc)) {
    snprintf(msg, sizeof(msg), "the body must be a JSON object%s%.160s",
             doc == NULL ? ": " : "", doc == NULL ? err.text : "");
    json_decref(doc);
    da_error(resp, 400, msg);
    return NULL;
  }
  return doc;
}

/* hours as a positive number into ms; 0, or -1 with the answer given. */
static int da_hours(json_t *doc, const char *key, uint64_t *ms,
                    struct http_response *resp)
{
  json_t *v = json_object_get(doc, key);
  double h;
  char msg[96];

  if (!json_is_number(v) || (h = json_number_value(v)) <= 0 || !isfinite(h) ||
      h > 10000) {
    snprintf(msg, sizeof(msg), "'%s' must be a positive number of hours", key);
    da_error(resp, 400, msg);
    return -1;
  }
  *ms = (uint64_t)llround(h * DA_MS_HOUR);
  return 0;
}

/* An optional string member: 0 (absent: *out NULL), -1 (answered). */
static int da_opt_string(json_t *doc, const char *key, const char **out,
                         struct http_response *resp)
{
  json_t *v = json_object_get(doc, key);
  char msg[96];

  *out = NULL;
  if (v == NULL || json_is_null(v))
    return 0;
  if (!json_is_string(v)) {
    snprintf(msg, sizeof(msg), "'%s' must be a string", key);
    da_error(resp, 400, msg);
    return -1;
  }
  *out = json_string_value(v);
  return 0;
}

/* ---- routes ---- */

static void da_reserved_cb(void *arg, int status)
{
  struct da_pending *p = arg;
  json_t *doc;
  char *text = NULL;

  if (status != 0) {
    devfleet_unjournaled(p->df, p->d);
    doc = json_pack("{s:s}", "message", "the journal could not keep it");
  } else {
    doc = da_server(p->df, p->d);
  }
  if (doc != NULL)
    text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (text != NULL)
    http_deferred_answer(p->answer, status == 0 ? 201 : 503, DA_JSON, text,
                         strlen(text));
  else
    http_deferred_answer(p->answer, 500, "text/plain", "out of memory\n", 14);
  free(text);
  free(p);
}

static const char *da_user_of(struct devfleet *df, const struct da_caller *c,
                              json_t *doc, struct http_response *resp)
{
  const struct cfg_devservers *ds = &devfleet_config(df)->devservers;
  const char *u = NULL;
  size_t i;

  if (da_opt_string(doc, "user", &u, resp) != 0)
    return NULL;
  if (u == NULL || (c->who.user != NULL && strcmp(u, c->who.user) == 0))
    u = c->who.user;
  else if (!c->who.admin) {
    da_error(resp, 403, "only an admin reserves for another user");
    return NULL;
  }
  if (u == NULL) {
    da_error(resp, 400, "an admin token must say for which 'user'");
    return NULL;
  }
  for (i = 0; i < ds->nusers; i++)
    if (strcmp(ds->users[i].name, u) == 0)
      return ds->users[i].name;
  da_error(resp, 400, "no such user in devservers.users");
  return NULL;
}

static void da_reserve(struct devfleet *df, const struct da_caller *c,
                       const struct http_request *req,
                       struct http_response *resp)
{
  struct devfleet_request r;
  struct da_pending *p = NULL;
  struct dev_server *d;
  char msg[256];
  json_t *doc = da_body(req, resp);
  int rc, deferred;

  if (doc == NULL)
    return;
  memset(&r, 0, sizeof(r));
  if (da_opt_string(doc, "flavor", &r.flavor, resp) != 0 ||
      da_opt_string(doc, "github_user", &r.github_user, resp) != 0 ||
      da_opt_string(doc, "key", &r.key, resp) != 0 ||
      da_opt_string(doc, "name", &r.name, resp) != 0)
    goto out;
  if (r.flavor == NULL) {
    da_error(resp, 400, "'flavor' is required");
    goto out;
  }
  r.user = da_user_of(df, c, doc, resp);
  if (r.user == NULL || da_hours(doc, "hours", &r.duration_ms, resp) != 0)
    goto out;
  p = calloc(1, sizeof(*p));
  if (p == NULL) {
    da_error(resp, 503, "out of memory");
    goto out;
  }
  p->answer = http_response_defer(resp, DA_ANSWER_MS);
  if (p->answer == NULL) {
    da_error(resp, 503, "cannot wait for the journal");
    goto out;
  }
  rc = devfleet_reserve(df, &r, &d, da_reserved_cb, p, &deferred, msg,
                        sizeof(msg));
  if (rc != 0) {
    char *text = NULL;
    json_t *e = json_pack("{s:s}", "message", msg);
    if (e != NULL)
      text = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    http_deferred_answer(p->answer,
                         rc == -EDQUOT   ? 429
                         : rc == -EAGAIN ? 503
                                         : 400,
                         DA_JSON, text != NULL ? text : "{}",
                         text != NULL ? strlen(text) : 2);
    free(text);
    goto out;
  }
  p->df = df;
  p->d = d;
  if (!deferred) {
    da_reserved_cb(p, 0);
    p = NULL;
  } else {
    p = NULL; /* the journal's callback has it */
  }
out:
  free(p);
  json_decref(doc);
}

/* ?user=U&state=S, values taken as they are (names never need escapes). */
static int da_query(const char *query, const char *key, char *out, size_t size)
{
  size_t klen = strlen(key), vlen;
  const char *p = query;

  while (p != NULL && *p != '\0') {
    vlen = strcspn(p, "&");
    if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
      snprintf(out, size, "%.*s", (int)(vlen - klen - 1), p + klen + 1);
      return 1;
    }
    p = p[vlen] == '&' ? p + vlen + 1 : p + vlen;
  }
  return 0;
}

static void da_list(struct devfleet *df, const struct da_caller *c,
                    const struct http_request *req, struct http_response *resp)
{
  const struct dev_table *t = devfleet_table(df);
  char user[80], state[32];
  int want_user = da_query(req->query, "user", user, sizeof(user));
  int want_state = da_query(req->query, "state", state, sizeof(state));
  json_t *list = json_array();
  size_t i;

  if (want_state && dev_state_parse(state) < 0) {
    json_decref(list);
    da_error(resp, 400, "unknown state");
    return;
  }
  for (i = 0; i < t->n; i++) {
    const struct dev_server *d = t->all[i];
    if (!dev_may_access(d, &c->who) ||
        (want_user && strcmp(d->user, user) != 0) ||
        (want_state && strcmp(dev_state_name(d->state), state) != 0))
      continue;
    json_array_append_new(list, da_server(df, d));
  }
  da_json(resp, 200, json_pack("{s:o}", "devservers", list));
}

static void da_ssh_config(struct devfleet *df, const struct dev_server *d,
                          struct http_response *resp)
{
  unsigned port = devfleet_port(df, d);
  char text[512];
  int n;

  if (port == 0) {
    da_error(resp, 409, "the dev server is not active");
    return;
  }
  n = snprintf(text, sizeof(text),
               "Host runfleet-%s\n"
               "  HostName %s\n"
               "  Port %u\n"
               "  User %s\n"
               "  IdentitiesOnly yes\n"
               "  HostKeyAlias runfleet-%s\n",
               d->id, devfleet_ssh_host(df), port, devfleet_ssh_user(df),
               d->id);
  http_response_set(resp, 200, "text/plain", text, (size_t)n);
}

static int da_status_of(int rc)
{
  switch (rc) {
  case -EPERM:
    return 403;
  case -ESTALE:
    return 409;
  case -ENOSPC:
    return 413;
  default:
    return 400;
  }
}

static void da_one(struct devfleet *df, const struct da_caller *c,
                   const struct http_request *req, struct http_response *resp)
{
  const char *rest = req->path + strlen(DA_PREFIX "/");
  size_t idlen = strcspn(rest, "/");
  const char *action = rest[idlen] == '/' ? rest + idlen + 1 : NULL;
  char id[DEV_ID_LEN + 2], msg[256];
  struct dev_server *d;
  uint64_t ms;
  const char *key;
  json_t *doc;
  int rc;

  snprintf(id, sizeof(id), "%.*s", (int)(idlen <= DEV_ID_LEN ? idlen : 0),
           rest);
  rc = dev_find(devfleet_table(df), id, &c->who, &d);
  if (rc == -EEXIST) {
    da_error(resp, 409, "more than one reservation starts with that id");
    return;
  }
  if (rc != 0) {
    da_error(resp, 404, "no such reservation");
    return;
  }
  if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) {
    if (action == NULL)
      da_json(resp, 200, da_server(df, d));
    else if (strcmp(action, "ssh-config") == 0)
      da_ssh_config(df, d, resp);
    else
      da_error(resp, 404, "no such route");
    return;
  }
  if (strcmp(req->method, "DELETE") == 0 && action == NULL) {
    rc = devfleet_cancel(df, d, &c->who);
    if (rc != 0)
      da_error(resp, da_status_of(rc), "the reservation has ended already");
    else
      da_json(resp, 200, da_server(df, d));
    return;
  }
  if (strcmp(req->method, "POST") != 0 || action == NULL ||
      (strcmp(action, "extend") != 0 && strcmp(action, "keys") != 0)) {
    da_error(resp, 404, "no such route");
    return;
  }
  doc = da_body(req, resp);
  if (doc == NULL)
    return;
  if (strcmp(action, "extend") == 0) {
    if (da_hours(doc, "hours", &ms, resp) == 0) {
      rc = devfleet_extend(df, d, &c->who, ms, msg, sizeof(msg));
      if (rc != 0)
        da_error(resp, da_status_of(rc), msg);
      else
        da_json(resp, 200, da_server(df, d));
    }
  } else if (da_opt_string(doc, "key", &key, resp) == 0) {
    if (key == NULL) {
      da_error(resp, 400, "'key' is required");
    } else {
      rc = devfleet_add_key(df, d, key, msg, sizeof(msg));
      if (rc != 0)
        da_error(resp, da_status_of(rc), msg);
      else
        da_json(resp, 200, da_server(df, d));
    }
  }
  json_decref(doc);
}

void dev_api_handle(struct devfleet *df, const struct cfg_admin *admin,
                    const struct http_request *req, struct http_response *resp)
{
  struct da_caller c;

  if (df == NULL) {
    da_error(resp, 404, "dev servers are not configured");
    return;
  }
  if (da_authenticate(df, admin, req, resp, &c) != 0)
    return;
  if (strcmp(req->path, DA_PREFIX) == 0) {
    if (strcmp(req->method, "POST") == 0)
      da_reserve(df, &c, req, resp);
    else
      da_list(df, &c, req, resp);
    return;
  }
  da_one(df, &c, req, resp);
}
