/* kube_probe: drives the kube client against a real API server for the
 * system tests (tests/kube/test_kube_client.py). Options choose the
 * configuration; then commands come on stdin, one a line, and every answer
 * or watch event goes to stdout as one JSON object a line:
 *
 *   create KIND NS JSON | get KIND NS NAME | delete KIND NS NAME
 *   patch KIND NS NAME merge|strategic JSON
 *   request METHOD PATH [JSON]
 *   watch KIND NS [LABEL-SELECTOR]     (events and "synced" lines follow)
 *   quit                               (or end of input)
 *
 * KIND is pods, secrets, nodes or events; NS "-" means none. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "kube.h"
#include "log.h"
#include "metrics.h"

#define PROBE_LINE_MAX (256u << 10)

struct probe {
  uv_loop_t *loop;
  struct kube *k;
  struct metrics *m;
  uv_pipe_t in;
  char *line;
  size_t len;
  unsigned pending;
  int eof;
  int closing;
  struct kube_watch *watches[8];
  size_t nwatches;
};

static void emit(json_t *obj)
{
  char *s = json_dumps(obj, JSON_COMPACT);

  if (s != NULL) {
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
  }
  json_decref(obj);
}

static void probe_closed_cb(void *arg)
{
  (void)arg;
}

static void probe_maybe_quit(struct probe *p)
{
  if (p->eof && p->pending == 0 && !p->closing) {
    p->closing = 1;
    if (!uv_is_closing((uv_handle_t *)&p->in))
      uv_close((uv_handle_t *)&p->in, NULL);
    kube_close(p->k, probe_closed_cb, p);
  }
}

struct probe_call {
  struct probe *p;
  char cmd[16];
};

static void done_cb(void *arg, const struct kube_response *r)
{
  struct probe_call *c = arg;
  struct probe *p = c->p;

  emit(json_pack("{s:s,s:i,s:i,s:s,s:s,s:i,s:O?}", "cmd", c->cmd, "status",
                 (int)r->status, "error", r->error, "reason", r->reason,
                 "message", r->message, "attempts", (int)r->attempts, "object",
                 r->object));
  free(c);
  p->pending--;
  probe_maybe_quit(p);
}

static int kind_of(const char *s, enum kube_kind *k)
{
  static const char *const names[] = {"pods", "secrets", "nodes", "events"};
  size_t i;

  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (strcmp(s, names[i]) == 0) {
      *k = (enum kube_kind)i;
      return 0;
    }
  }
  return -1;
}

static void event_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  json_t *md = json_object_get(obj, "metadata");

  (void)arg;
  emit(json_pack("{s:s,s:s?,s:s?,s:s?}", "event", kube_event_name(type), "name",
                 json_string_value(json_object_get(md, "name")), "rv",
                 json_string_value(json_object_get(md, "resourceVersion")),
                 "uid", json_string_value(json_object_get(md, "uid"))));
}

static void synced_cb(void *arg, unsigned relists)
{
  struct kube_watch *w = *(struct kube_watch **)arg;

  emit(json_pack("{s:i,s:s,s:i}", "synced", (int)relists, "rv",
                 kube_watch_resource_version(w), "cached",
                 (int)json_object_size(kube_watch_cache(w))));
}

static void fail(const char *cmd, const char *why)
{
  emit(json_pack("{s:s,s:s}", "cmd", cmd, "usage", why));
}

/* Splits off the next space-separated word of *s. */
static char *word(char **s)
{
  char *w = *s, *sp;

  if (w == NULL || *w == '\0')
    return NULL;
  sp = strchr(w, ' ');
  if (sp != NULL) {
    *sp = '\0';
    *s = sp + 1;
  } else {
    *s = NULL;
  }
  return w;
}

static int run_watch(struct probe *p, char *rest)
{
  struct kube_watch_options o = {0};
  char *kind = word(&rest), *ns = word(&rest);
  struct kube_watch **slot;

  if (kind == NULL || ns == NULL || kind_of(kind, &o.kind) != 0 ||
      p->nwatches == sizeof(p->watches) / sizeof(p->watches[0]))
    return -1;
  slot = &p->watches[p->nwatches++];
  o.ns = strcmp(ns, "-") == 0 ? NULL : ns;
  o.label_selector = rest;
  o.event_cb = event_cb;
  o.synced_cb = synced_cb;
  o.arg = slot;
  *slot = kube_watch_start(p->k, &o);
  return *slot != NULL ? 0 : -1;
}

static int run_typed(struct probe *p, const char *cmd, char *rest,
                     struct probe_call *c)
{
  char *kind = word(&rest), *ns = word(&rest), *name, *how;
  enum kube_kind k;
  json_t *body = NULL;
  int rc = -1;

  if (kind == NULL || ns == NULL || kind_of(kind, &k) != 0)
    return -1;
  if (strcmp(ns, "-") == 0)
    ns = NULL;
  if (strcmp(cmd, "create") == 0) {
    body = rest ? json_loads(rest, 0, NULL) : NULL;
    if (body != NULL)
      rc = kube_create(p->k, k, ns, body, done_cb, c);
  } else if (strcmp(cmd, "get") == 0 && (name = word(&rest)) != NULL) {
    rc = kube_get(p->k, k, ns, name, done_cb, c);
  } else if (strcmp(cmd, "delete") == 0 && (name = word(&rest)) != NULL) {
    rc = kube_delete(p->k, k, ns, name, done_cb, c);
  } else if (strcmp(cmd, "patch") == 0 && (name = word(&rest)) != NULL &&
             (how = word(&rest)) != NULL && rest != NULL) {
    body = json_loads(rest, 0, NULL);
    if (body != NULL)
      rc = kube_patch(p->k, k, ns, name,
                      strcmp(how, "strategic") == 0 ? KUBE_PATCH_STRATEGIC
                                                    : KUBE_PATCH_MERGE,
                      body, done_cb, c);
  }
  json_decref(body);
  return rc;
}

static void run_line(struct probe *p, char *line)
{
  char *rest = line, *cmd = word(&rest), *method, *path;
  struct probe_call *c;
  json_t *body = NULL;
  int rc;

  if (cmd == NULL)
    return;
  if (strcmp(cmd, "quit") == 0) {
    p->eof = 1;
    probe_maybe_quit(p);
    return;
  }
  if (strcmp(cmd, "watch") == 0) {
    if (run_watch(p, rest) != 0)
      fail(cmd, "watch KIND NS [SELECTOR]");
    return;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->p = p;
  snprintf(c->cmd, sizeof(c->cmd), "%s", cmd);
  if (strcmp(cmd, "request") == 0) {
    method = word(&rest);
    path = word(&rest);
    body = rest ? json_loads(rest, 0, NULL) : NULL;
    rc = method && path
             ? kube_request(p->k, method, path, NULL, body, NULL, done_cb, c)
             : -1;
    json_decref(body);
  } else {
    rc = run_typed(p, cmd, rest, c);
  }
  if (rc != 0) {
    free(c);
    fail(cmd, "bad command or arguments");
    return;
  }
  p->pending++;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  static char b[64 << 10];

  (void)h;
  (void)hint;
  buf->base = b;
  buf->len = sizeof(b);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct probe *p = s->data;
  ssize_t i;

  if (n < 0) {
    p->eof = 1;
    uv_close((uv_handle_t *)&p->in, NULL);
    probe_maybe_quit(p);
    return;
  }
  for (i = 0; i < n; i++) {
    if (buf->base[i] == '\n') {
      p->line[p->len] = '\0';
      p->len = 0;
      run_line(p, p->line);
      if (p->closing)
        return;
    } else if (p->len + 1 < PROBE_LINE_MAX) {
      p->line[p->len++] = buf->base[i];
    }
  }
}

static int configure(int argc, char **argv, struct kube_config *kc,
                     struct kube_options *o)
{
  static const struct option opts[] = {
      {"kubeconfig", required_argument, NULL, 'k'},
      {"context", required_argument, NULL, 'c'},
      {"in-cluster", required_argument, NULL, 'i'},
      {"qps", required_argument, NULL, 'q'},
      {"burst", required_argument, NULL, 'b'},
      {"watch-timeout", required_argument, NULL, 'w'},
      {"max-event-bytes", required_argument, NULL, 'm'},
      {NULL, 0, NULL, 0}};
  const char *kubeconfig = NULL, *context = NULL, *dir = NULL;
  char err[512];
  int c, rc;

  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'k':
      kubeconfig = optarg;
      break;
    case 'c':
      context = optarg;
      break;
    case 'i':
      dir = optarg;
      break;
    case 'q':
      o->qps = atof(optarg);
      break;
    case 'b':
      o->burst = (unsigned)atoi(optarg);
      break;
    case 'w':
      o->watch_timeout_s = (unsigned)atoi(optarg);
      break;
    case 'm':
      o->max_event_bytes = (size_t)atol(optarg);
      break;
    default:
      return -1;
    }
  }
  if (kubeconfig != NULL)
    rc = kube_config_load_kubeconfig(kc, kubeconfig, context, err, sizeof(err));
  else
    rc = kube_config_in_cluster(kc, dir, err, sizeof(err));
  if (rc != 0)
    fprintf(stderr, "kube_probe: %s\n", err);
  return rc;
}

int main(int argc, char **argv)
{
  struct kube_config kc = {0};
  struct kube_options o = {0};
  struct probe p = {0};
  char *metrics;
  size_t mlen;
  int rc = 1;

  log_setup(LOG_DEBUG, 1);
  if (configure(argc, argv, &kc, &o) != 0)
    return 2;
  p.loop = uv_default_loop();
  p.m = metrics_new();
  p.line = malloc(PROBE_LINE_MAX);
  o.metrics = p.m;
  p.k = kube_new(p.loop, &kc, &o);
  kube_config_free(&kc);
  /* Nothing is in flight yet: exiting here leaves nothing behind. */
  if (p.k == NULL || p.m == NULL || p.line == NULL ||
      uv_pipe_init(p.loop, &p.in, 0) != 0 || uv_pipe_open(&p.in, 0) != 0 ||
      (p.in.data = &p,
       uv_read_start((uv_stream_t *)&p.in, alloc_cb, read_cb) != 0)) {
    fprintf(stderr, "kube_probe: cannot start\n");
    return 1;
  }
  uv_run(p.loop, UV_RUN_DEFAULT);
  /* The counters, for the tests to look at. */
  metrics = metrics_render(p.m, &mlen);
  if (metrics != NULL) {
    emit(json_pack("{s:s}", "metrics", metrics));
    free(metrics);
  }
  rc = uv_loop_close(p.loop) == 0 ? 0 : 3;
  kube_destroy(p.k);
  metrics_destroy(p.m);
  free(p.line);
  return rc;
}
