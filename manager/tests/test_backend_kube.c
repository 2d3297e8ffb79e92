/* backend_kube without a cluster: requests go to a recorder the tests
 * answer, watch events are fed from the JSON fixtures in
 * manager/tests/fixtures/kube, time is a variable. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "backend_kube.h"
#include "capacity.h"
#include "config.h"
#include "kube_nodes.h"
#include "kube_pod.h"
#include "metrics.h"

#define FIXTURES "manager/tests/fixtures/kube/"
#define MAX_CALLS 64
#define MAX_EVENTS 64
#define JIT "eyJqaXQiOiJTRUNSRVQtSklULUNPTkZJRy0xMjM0NSJ9"
#define TOKEN "hooktoken-5f2b9c0d1e"
#define CPU_NODE "ip-10-0-0-10.ec2.internal"
#define GPU_NODE "ip-10-0-1-5.ec2.internal"

static char dir[64];

struct call {
  int create; /* else delete */
  int first;  /* create_first: ahead of the requests already queued */
  enum kube_kind kind;
  char name[128];
  json_t *obj;
  kube_done_cb cb;
  void *arg;
  int answered;
};

struct seen {
  enum backend_event_type type;
  char name[128];
  char node[128];
  size_t ngpus;
  int status;
};

struct fixture {
  uv_loop_t loop;
  struct config cfg;
  struct capacity *cap;
  struct backend *b;
  struct metrics *metrics;
  uint64_t now;
  struct call calls[MAX_CALLS];
  size_t ncalls;
  struct seen events[MAX_EVENTS];
  size_t nevents;
  int closed;
};

/* ---- config, files ---- */

static const char *const yaml =
    "github:\n"
    "  pat_file: @D/pat\n"
    "  webhook_secret_file: @D/secret\n"
    "  org: acme\n"
    "backend:\n"
    "  type: kubernetes\n"
    "  kubernetes: {namespace: ci-runners, lease_name: rf-test}\n"
    "pools:\n"
    "  - name: cpu\n"
    "    labels: [linux, cpu]\n"
    "    max_runners: 10\n"
    "    resources: {cpus: 2, memory: 4Gi}\n"
    "    runner: {image: reg.example/runner:1}\n"
    "    node_selector: {runfleet.dev/node-group: cpu}\n"
    "  - name: gpu-1\n"
    "    labels: [linux, gpu-1]\n"
    "    max_runners: 8\n"
    "    resources: {cpus: 8, memory: 64Gi, gpus: 1}\n"
    "    runner: {image: reg.example/runner-gpu:1}\n"
    "    node_selector: {runfleet.dev/node-group: gpu-h100}\n"
    "    tolerations:\n"
    "      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
    "    kubernetes: {shm_size: 16Gi}\n"
    "  - name: gpu-8\n"
    "    labels: [linux, gpu-8]\n"
    "    max_runners: 2\n"
    "    resources: {cpus: 120, memory: 1500Gi, gpus: 8}\n"
    "    runner: {image: reg.example/runner-gpu:1}\n"
    "    node_selector: {runfleet.dev/node-group: gpu-h100}\n"
    "    tolerations:\n"
    "      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
    "    kubernetes: {shm_size: 256Gi, priority_class: runfleet-runner-idle}\n"
    "  - name: dind\n"
    "    labels: [linux, docker]\n"
    "    max_runners: 4\n"
    "    resources: {cpus: 4, memory: 8Gi}\n"
    "    runner: {image: reg.example/runner:1}\n"
    "    node_selector: {runfleet.dev/node-group: cpu}\n"
    "    kubernetes: {docker: dind, shm_size: 1Gi, pending_timeout: 60s,\n"
    "                 image_pull_failures: 2}\n"
    "  - name: gpu-dind\n"
    "    labels: [linux, gpu-docker]\n"
    "    max_runners: 4\n"
    "    resources: {cpus: 8, memory: 64Gi, gpus: 2}\n"
    "    runner: {image: reg.example/runner-gpu:1}\n"
    "    node_selector: {runfleet.dev/node-group: gpu-h100}\n"
    "    tolerations:\n"
    "      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
    "    kubernetes: {docker: dind, dind_image: reg.example/dind-nvidia:27}\n"
    "  - name: gpu-untolerated\n"
    "    labels: [linux, gpu-x]\n"
    "    max_runners: 1\n"
    "    resources: {cpus: 1, gpus: 1}\n"
    "    runner: {image: reg.example/runner-gpu:1}\n"
    "  - name: db\n"
    "    labels: [linux, db]\n"
    "    max_runners: 1\n"
    "    resources: {cpus: 2}\n"
    "    runner: {image: reg.example/runner:1}\n"
    "    tolerations:\n"
    "      - {key: dedicated, value: databases, effect: NoSchedule}\n";

static void write_file(const char *name, const char *text)
{
  char path[128];
  FILE *fp;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
  chmod(path, 0600);
}

static void remove_file(const char *name)
{
  char path[128];

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  unlink(path);
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/rf-kube-XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  write_file("pat", "ghp_test\n");
  write_file("secret", "s3cret\n");
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  remove_file("pat");
  remove_file("secret");
  rmdir(dir);
  return 0;
}

static void load_config(struct config *cfg)
{
  static char text[8192], errs[4096];
  const char *in = yaml;
  size_t o = 0;

  while (*in != '\0' && o < sizeof(text) - 64) {
    if (in[0] == '@' && in[1] == 'D') {
      o += (size_t)snprintf(text + o, sizeof(text) - o, "%s", dir);
      in += 2;
    } else {
      text[o++] = *in++;
    }
  }
  text[o] = '\0';
  if (cfg_parse(cfg, "test.yaml", text, o, errs, sizeof(errs)) != 0)
    fail_msg("config: %s", errs);
}

static json_t *fixture_json(const char *name)
{
  char path[256];
  json_error_t err;
  json_t *j;

  snprintf(path, sizeof(path), FIXTURES "%s", name);
  j = json_load_file(path, 0, &err);
  if (j == NULL)
    fail_msg("%s:%d: %s", path, err.line, err.text);
  return j;
}

/* ---- the recorder and the event sink ---- */

static int rec_create(void *arg, enum kube_kind kind, const char *ns,
                      const json_t *obj, kube_done_cb cb, void *cb_arg)
{
  struct fixture *f = arg;
  struct call *c;

  assert_string_equal(ns, "ci-runners");
  assert_true(f->ncalls < MAX_CALLS);
  c = &f->calls[f->ncalls++];
  memset(c, 0, sizeof(*c));
  c->create = 1;
  c->kind = kind;
  c->obj = json_deep_copy(obj);
  snprintf(c->name, sizeof(c->name), "%s",
           json_string_value(
               json_object_get(json_object_get(obj, "metadata"), "name")));
  c->cb = cb;
  c->arg = cb_arg;
  return 0;
}

static int rec_create_first(void *arg, enum kube_kind kind, const char *ns,
                            const json_t *obj, kube_done_cb cb, void *cb_arg)
{
  struct fixture *f = arg;
  int rc = rec_create(arg, kind, ns, obj, cb, cb_arg);

  f->calls[f->ncalls - 1].first = 1;
  return rc;
}

static int rec_delete(void *arg, enum kube_kind kind, const char *ns,
                      const char *name, kube_done_cb cb, void *cb_arg)
{
  struct fixture *f = arg;
  struct call *c;

  assert_string_equal(ns, "ci-runners");
  assert_true(f->ncalls < MAX_CALLS);
  c = &f->calls[f->ncalls++];
  memset(c, 0, sizeof(*c));
  c->kind = kind;
  snprintf(c->name, sizeof(c->name), "%s", name);
  c->cb = cb;
  c->arg = cb_arg;
  return 0;
}

static const struct backend_kube_api rec_api = {.create = rec_create,
                                                .create_first =
                                                    rec_create_first,
                                                .delete_ = rec_delete};

static uint64_t clock_now(void *arg)
{
  return ((struct fixture *)arg)->now;
}

static void on_event(void *ctx, const struct backend_event *ev)
{
  struct fixture *f = ctx;
  struct seen *s;

  assert_true(f->nevents < MAX_EVENTS);
  s = &f->events[f->nevents++];
  memset(s, 0, sizeof(*s));
  s->type = ev->type;
  snprintf(s->name, sizeof(s->name), "%s", ev->name != NULL ? ev->name : "");
  snprintf(s->node, sizeof(s->node), "%s", ev->node != NULL ? ev->node : "");
  s->ngpus = ev->ngpus;
  s->status = ev->status;
}

/* Answers call i: 2xx with obj (a uid added on creates), or an error. */
static void answer(struct fixture *f, size_t i, long status, const char *reason)
{
  struct call *c = &f->calls[i];
  struct kube_response resp;
  json_t *obj = NULL;

  assert_true(i < f->ncalls);
  assert_false(c->answered);
  c->answered = 1;
  memset(&resp, 0, sizeof(resp));
  resp.status = status;
  resp.attempts = 1;
  resp.reason = reason != NULL ? reason : "";
  resp.message = "";
  if (status / 100 == 2) {
    obj = c->obj != NULL ? json_deep_copy(c->obj) : json_object();
    if (c->create)
      json_object_set_new(json_object_get(obj, "metadata"), "uid",
                          json_sprintf("uid-%s", c->name));
    resp.object = obj;
  } else {
    resp.error = status == 0 ? KUBE_ERR_UNCERTAIN : -EPROTO;
  }
  c->cb(c->arg, &resp);
  json_decref(obj);
}

static void setup_backend(struct fixture *f)
{
  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  load_config(&f->cfg);
  f->cap = capacity_new();
  assert_non_null(f->cap);
  f->now = 1000000;
  f->b = backend_kube_new_with(&f->loop, &f->cfg, f->cap, on_event, f, &rec_api,
                               f, clock_now, f);
  assert_non_null(f->b);
  f->metrics = metrics_new();
  backend_kube_set_metrics(f->b, f->metrics);
}

static void feed_node(struct fixture *f, enum kube_event_type t,
                      const char *file)
{
  json_t *n = fixture_json(file);

  backend_kube_node_event(f->b, t, n);
  json_decref(n);
}

static void closed_cb(void *arg)
{
  ((struct fixture *)arg)->closed = 1;
}

static void teardown_backend(struct fixture *f)
{
  size_t i;

  f->b->ops->close(f->b, BACKEND_CLOSE_KEEP, closed_cb, f);
  /* An answer may send another request (a pod's secret): until none is
   * left. */
  for (i = 0; i < f->ncalls; i++)
    if (!f->calls[i].answered)
      answer(f, i, 200, NULL);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_true(f->closed);
  f->b->ops->destroy(f->b);
  for (i = 0; i < f->ncalls; i++)
    json_decref(f->calls[i].obj);
  capacity_destroy(f->cap);
  metrics_destroy(f->metrics);
  cfg_free(&f->cfg);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* Holds capacity for name in pool and starts it there, as runner_ctl does. */
static int start_runner(struct fixture *f, const char *name, const char *pool)
{
  static const char *const env[] = {
      "RUNFLEET_URL=http://runfleetd.runfleet-system:9090",
      "RUNFLEET_RUNNER_TOKEN=" TOKEN, "RUNFLEET_EXPECTED_GPUS=9",
      "RUNFLEET_CACHE_DIR=/var/lib/runfleet/cache/git", NULL};
  const struct cfg_pool *p = cfg_pool_find(&f->cfg, pool);
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct backend_runner_spec spec;
  struct cap_request want;
  int rc;

  assert_non_null(p);
  capacity_request_for_pool(p, &want, selector);
  rc = capacity_hold(f->cap, name, CAP_HOLDER_RUNNER, &want, NULL);
  if (rc != 0)
    return rc;
  memset(&spec, 0, sizeof(spec));
  spec.name = name;
  spec.pool = p;
  spec.jit_config = JIT;
  spec.env = env;
  spec.placement = capacity_hold_find(f->cap, name);
  spec.gh_id = 4242;
  rc = f->b->ops->start(f->b, &spec);
  if (rc != 0)
    capacity_release(f->cap, name);
  return rc;
}

static void nodes_up(struct fixture *f)
{
  feed_node(f, KUBE_EVENT_ADDED, "node-cpu.json");
  feed_node(f, KUBE_EVENT_ADDED, "node-gpu8.json");
}

/* ---- pod spec ---- */

static const json_t *container(const json_t *pod, const char *name)
{
  const json_t *c;
  size_t i;

  json_array_foreach(
      json_object_get(json_object_get(pod, "spec"), "containers"), i, c)
  {
    if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
      return c;
  }
  return NULL;
}

static const json_t *find_named(const json_t *arr, const char *name)
{
  const json_t *v;
  size_t i;

  json_array_foreach(arr, i, v)
  {
    if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0)
      return v;
  }
  return NULL;
}

static const char *env_value(const json_t *c, const char *name)
{
  const json_t *e = find_named(json_object_get(c, "env"), name);

  return e != NULL ? json_string_value(json_object_get(e, "value")) : NULL;
}

static void assert_env_secret(const json_t *c, const char *name,
                              const char *secret, const char *key)
{
  const json_t *e = find_named(json_object_get(c, "env"), name);
  const json_t *ref;

  assert_non_null(e);
  assert_null(json_object_get(e, "value"));
  ref = json_object_get(json_object_get(e, "valueFrom"), "secretKeyRef");
  assert_string_equal(json_string_value(json_object_get(ref, "name")), secret);
  assert_string_equal(json_string_value(json_object_get(ref, "key")), key);
}

static const char *path_str(const json_t *obj, const char *path)
{
  char buf[256], *save = NULL, *tok;
  const json_t *v = obj;

  snprintf(buf, sizeof(buf), "%s", path);
  for (tok = strtok_r(buf, ".", &save); tok != NULL && v != NULL;
       tok = strtok_r(NULL, ".", &save))
    v = json_object_get(v, tok);
  return json_string_value(v);
}

/* What every runner pod carries, whatever its pool. */
static void assert_pod_common(const json_t *pod, const char *runner,
                              const char *pool, const char *hostname)
{
  const json_t *spec = json_object_get(pod, "spec");
  const json_t *meta = json_object_get(pod, "metadata");
  const json_t *runner_c = container(pod, "runner");
  const json_t *sc = json_object_get(spec, "securityContext");
  const json_t *term, *vol;
  char pod_name[KUBE_NAME_MAX], secret[96];
  char *text;

  assert_int_equal(kube_pod_names(runner, pod_name, sizeof(pod_name), secret,
                                  sizeof(secret)),
                   0);
  assert_string_equal(path_str(meta, "name"), pod_name);
  assert_string_equal(path_str(pod, "kind"), "Pod");
  assert_string_equal(path_str(meta, "namespace"), "ci-runners");
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(meta, "labels"),
                                        "runfleet.dev/pool")),
      pool);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(meta, "labels"),
                                        "runfleet.dev/runner")),
      runner);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(meta, "labels"),
                                        "runfleet.dev/fleet")),
      "rf-test");
  assert_string_equal(path_str(spec, "restartPolicy"), "Never");
  assert_true(
      json_is_false(json_object_get(spec, "automountServiceAccountToken")));
  assert_string_equal(path_str(spec, "serviceAccountName"), "runfleet-runner");
  assert_null(json_object_get(spec, "nodeName"));
  assert_true(json_is_true(json_object_get(sc, "runAsNonRoot")));
  assert_int_equal(json_integer_value(json_object_get(sc, "runAsUser")), 1001);
  term = json_array_get(
      json_object_get(
          json_object_get(json_object_get(json_object_get(spec, "affinity"),
                                          "nodeAffinity"),
                          "requiredDuringSchedulingIgnoredDuringExecution"),
          "nodeSelectorTerms"),
      0);
  term = json_array_get(json_object_get(term, "matchExpressions"), 0);
  assert_string_equal(path_str(term, "key"), "kubernetes.io/hostname");
  assert_string_equal(path_str(term, "operator"), "In");
  assert_string_equal(
      json_string_value(json_array_get(json_object_get(term, "values"), 0)),
      hostname);
  assert_non_null(runner_c);
  assert_false(
      json_is_true(json_object_get(json_object_get(runner_c, "securityContext"),
                                   "allowPrivilegeEscalation")));
  /* The hook environment of docs/HOOKS.md. */
  assert_string_equal(env_value(runner_c, "RUNFLEET_URL"),
                      "http://runfleetd.runfleet-system:9090");
  assert_string_equal(env_value(runner_c, "RUNFLEET_RUNNER_NAME"), runner);
  assert_string_equal(env_value(runner_c, "RUNFLEET_POOL"), pool);
  assert_string_equal(env_value(runner_c, "RUNFLEET_CACHE_DIR"),
                      "/var/cache/runfleet/git");
  assert_string_equal(env_value(runner_c, "RUNFLEET_WORK_DIR"),
                      "/home/runner/_work");
  assert_string_equal(env_value(runner_c, "ACTIONS_RUNNER_HOOK_JOB_STARTED"),
                      "/opt/runfleet/hooks/pre-job.sh");
  assert_string_equal(path_str(find_named(json_object_get(runner_c, "env"),
                                          "RUNFLEET_NODE_NAME"),
                               "valueFrom.fieldRef.fieldPath"),
                      "spec.nodeName");
  assert_env_secret(runner_c, "RUNFLEET_RUNNER_TOKEN", secret, "runner-token");
  assert_env_secret(runner_c, "ACTIONS_RUNNER_INPUT_JITCONFIG", secret,
                    "jitconfig");
  vol = find_named(json_object_get(spec, "volumes"), "cache");
  assert_string_equal(path_str(vol, "hostPath.path"), "/var/cache/runfleet");
  assert_string_equal(
      path_str(find_named(json_object_get(runner_c, "volumeMounts"), "cache"),
               "mountPath"),
      "/var/cache/runfleet");
  vol = find_named(json_object_get(spec, "volumes"), "shm");
  assert_string_equal(path_str(vol, "emptyDir.medium"), "Memory");
  assert_string_equal(
      path_str(find_named(json_object_get(runner_c, "volumeMounts"), "shm"),
               "mountPath"),
      "/dev/shm");
  /* Neither the JIT config nor the hook token is in the pod, in any form. */
  text = json_dumps(pod, JSON_COMPACT);
  assert_non_null(text);
  assert_null(strstr(text, JIT));
  assert_null(strstr(text, TOKEN));
  free(text);
}

static const char *resource(const json_t *c, const char *which,
                            const char *name)
{
  return json_string_value(json_object_get(
      json_object_get(json_object_get(c, "resources"), which), name));
}

static void test_pod_cpu(void **state)
{
  struct fixture f;
  const json_t *pod, *c, *secret, *owner;
  json_t *expected;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-1", "cpu"), 0);
  /* Nothing is reported before start returns, and only the pod is asked
   * for: its secret waits for the pod's uid. */
  assert_int_equal(f.nevents, 0);
  assert_int_equal(f.ncalls, 1);
  assert_true(f.calls[0].create);
  assert_false(f.calls[0].first);
  assert_int_equal(f.calls[0].kind, KUBE_PODS);
  pod = f.calls[0].obj;
  assert_pod_common(pod, "rf-cpu-abcd1234-0001-1", "cpu", CPU_NODE);
  c = container(pod, "runner");
  assert_string_equal(path_str(c, "image"), "reg.example/runner:1");
  assert_string_equal(
      json_string_value(json_array_get(json_object_get(c, "command"), 0)),
      "/home/runner/run.sh");
  assert_string_equal(resource(c, "requests", "cpu"), "2");
  assert_string_equal(resource(c, "limits", "cpu"), "2");
  assert_string_equal(resource(c, "requests", "memory"), "4294967296");
  assert_string_equal(resource(c, "limits", "memory"), "4294967296");
  assert_null(resource(c, "limits", "nvidia.com/gpu"));
  assert_string_equal(env_value(c, "RUNFLEET_EXPECTED_GPUS"), "0");
  assert_string_equal(
      json_string_value(json_object_get(
          json_object_get(json_object_get(pod, "spec"), "nodeSelector"),
          "runfleet.dev/node-group")),
      "cpu");
  assert_string_equal(path_str(pod, "spec.priorityClassName"),
                      "runfleet-runner");
  assert_null(container(pod, "dind"));
  /* The whole pod, as a reviewed fixture. */
  expected = fixture_json("pod-cpu.expected.json");
  if (!json_equal(expected, (json_t *)pod)) {
    char *text = json_dumps(pod, JSON_INDENT(1) | JSON_SORT_KEYS);
    fail_msg("pod differs from pod-cpu.expected.json:\n%s", text);
  }
  json_decref(expected);

  answer(&f, 0, 201, NULL);
  assert_int_equal(f.ncalls, 2);
  assert_true(f.calls[1].create);
  /* Ahead of the pods of other runners still queued: this pod waits for
   * its Secret. */
  assert_true(f.calls[1].first);
  assert_int_equal(f.calls[1].kind, KUBE_SECRETS);
  secret = f.calls[1].obj;
  assert_string_equal(path_str(secret, "metadata.name"),
                      "rf-cpu-abcd1234-0001-1-jit");
  assert_string_equal(path_str(secret, "stringData.jitconfig"), JIT);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(secret, "stringData"),
                                        "runner-token")),
      TOKEN);
  assert_string_equal(
      json_string_value(json_object_get(
          json_object_get(json_object_get(secret, "metadata"), "labels"),
          "runfleet.dev/fleet")),
      "rf-test");
  owner = json_array_get(
      json_object_get(json_object_get(secret, "metadata"), "ownerReferences"),
      0);
  assert_string_equal(path_str(owner, "kind"), "Pod");
  assert_string_equal(path_str(owner, "name"), "rf-cpu-abcd1234-0001-1");
  assert_string_equal(path_str(owner, "uid"), "uid-rf-cpu-abcd1234-0001-1");
  answer(&f, 1, 201, NULL);
  assert_int_equal(f.nevents, 0);
  assert_int_equal(f.b->ops->count(f.b), 1);
  teardown_backend(&f);
}

static void test_pod_gpu(void **state)
{
  struct fixture f;
  const json_t *pod, *c, *tol;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-1", "gpu-1"), 0);
  pod = f.calls[0].obj;
  /* The GPU node's hostname label differs from its name. */
  assert_pod_common(pod, "rf-gpu-1-abcd1234-0001-1", "gpu-1", "ip-10-0-1-5");
  c = container(pod, "runner");
  assert_string_equal(resource(c, "requests", "nvidia.com/gpu"), "1");
  assert_string_equal(resource(c, "limits", "nvidia.com/gpu"), "1");
  assert_string_equal(resource(c, "requests", "cpu"), "8");
  assert_string_equal(env_value(c, "RUNFLEET_EXPECTED_GPUS"), "1");
  assert_string_equal(env_value(c, "RUNFLEET_GPUS"), "");
  assert_string_equal(
      path_str(
          find_named(json_object_get(json_object_get(pod, "spec"), "volumes"),
                     "shm"),
          "emptyDir.sizeLimit"),
      "17179869184");
  tol = json_array_get(
      json_object_get(json_object_get(pod, "spec"), "tolerations"), 0);
  assert_string_equal(path_str(tol, "key"), "nvidia.com/gpu");
  assert_string_equal(path_str(tol, "operator"), "Exists");
  assert_string_equal(path_str(tol, "effect"), "NoSchedule");

  assert_int_equal(start_runner(&f, "rf-gpu-8-abcd1234-0001-2", "gpu-8"),
                   -ENOSPC); /* 1 of 8 GPUs is held */
  capacity_release(f.cap, "rf-gpu-1-abcd1234-0001-1");
  assert_int_equal(start_runner(&f, "rf-gpu-8-abcd1234-0001-2", "gpu-8"), 0);
  pod = f.calls[1].obj;
  assert_pod_common(pod, "rf-gpu-8-abcd1234-0001-2", "gpu-8", "ip-10-0-1-5");
  c = container(pod, "runner");
  assert_string_equal(resource(c, "requests", "nvidia.com/gpu"), "8");
  assert_string_equal(resource(c, "limits", "nvidia.com/gpu"), "8");
  assert_string_equal(resource(c, "limits", "memory"), "1610612736000");
  assert_string_equal(env_value(c, "RUNFLEET_EXPECTED_GPUS"), "8");
  assert_string_equal(path_str(pod, "spec.priorityClassName"),
                      "runfleet-runner-idle");
  assert_string_equal(
      path_str(
          find_named(json_object_get(json_object_get(pod, "spec"), "volumes"),
                     "shm"),
          "emptyDir.sizeLimit"),
      "274877906944");
  teardown_backend(&f);
}

static void assert_dind(const json_t *pod, unsigned gpus)
{
  const json_t *spec = json_object_get(pod, "spec");
  const json_t *r = container(pod, "runner"), *d = container(pod, "dind");
  const json_t *m;
  char n[16];

  assert_non_null(d);
  assert_string_equal(env_value(r, "DOCKER_HOST"), "tcp://localhost:2376");
  assert_string_equal(env_value(r, "DOCKER_TLS_VERIFY"), "1");
  assert_string_equal(env_value(r, "DOCKER_CERT_PATH"), "/certs/client");
  m = find_named(json_object_get(r, "volumeMounts"), "dind-certs");
  assert_string_equal(path_str(m, "mountPath"), "/certs/client");
  assert_string_equal(path_str(m, "subPath"), "client");
  assert_true(json_is_true(json_object_get(m, "readOnly")));
  assert_true(json_is_true(
      json_object_get(json_object_get(d, "securityContext"), "privileged")));
  assert_string_equal(env_value(d, "DOCKER_TLS_CERTDIR"), "/certs");
  assert_string_equal(
      path_str(find_named(json_object_get(d, "volumeMounts"), "work"),
               "mountPath"),
      "/home/runner/_work");
  assert_string_equal(
      path_str(find_named(json_object_get(d, "volumeMounts"), "dind-storage"),
               "mountPath"),
      "/var/lib/docker");
  assert_non_null(find_named(json_object_get(spec, "volumes"), "dind-certs"));
  assert_non_null(find_named(json_object_get(spec, "volumes"), "dind-storage"));
  /* GPUs go to the daemon that runs the job's containers, once. */
  assert_null(resource(r, "limits", "nvidia.com/gpu"));
  if (gpus == 0) {
    assert_null(resource(d, "limits", "nvidia.com/gpu"));
    assert_null(json_object_get(d, "args"));
    return;
  }
  snprintf(n, sizeof(n), "%u", gpus);
  assert_string_equal(resource(d, "limits", "nvidia.com/gpu"), n);
  assert_string_equal(resource(d, "requests", "nvidia.com/gpu"), n);
  assert_string_equal(
      json_string_value(json_array_get(json_object_get(d, "args"), 0)),
      "--default-runtime=nvidia");
}

static void test_pod_dind(void **state)
{
  struct fixture f;
  const json_t *pod;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  assert_int_equal(start_runner(&f, "rf-dind-abcd1234-0001-1", "dind"), 0);
  pod = f.calls[0].obj;
  assert_pod_common(pod, "rf-dind-abcd1234-0001-1", "dind", CPU_NODE);
  assert_dind(pod, 0);
  assert_string_equal(path_str(container(pod, "dind"), "image"),
                      "docker:27-dind");
  assert_int_equal(start_runner(&f, "rf-gpu-dind-abcd1234-0001-2", "gpu-dind"),
                   0);
  pod = f.calls[1].obj;
  assert_pod_common(pod, "rf-gpu-dind-abcd1234-0001-2", "gpu-dind",
                    "ip-10-0-1-5");
  assert_dind(pod, 2);
  assert_string_equal(path_str(container(pod, "dind"), "image"),
                      "reg.example/dind-nvidia:27");
  teardown_backend(&f);
}

/* The pod status readers on the fixtures the lifecycle tests feed. */
static void test_pod_status(void **state)
{
  static const struct {
    const char *file, *reason;
  } cases[] = {{"status-unschedulable.json", "Unschedulable"},
               {"status-errimagepull.json", "ErrImagePull"},
               {"status-configerror.json", "CreateContainerConfigError"},
               {"status-creating.json", ""},
               {"status-running.json", ""}};
  char reason[64], message[160];
  json_t *pod;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    pod = json_pack("{s:o}", "status", fixture_json(cases[i].file));
    kube_pod_waiting(pod, reason, sizeof(reason), message, sizeof(message));
    assert_string_equal(reason, cases[i].reason);
    json_decref(pod);
  }
  assert_true(kube_reason_is_image_pull("ErrImagePull"));
  assert_true(kube_reason_is_image_pull("ImagePullBackOff"));
  assert_false(kube_reason_is_image_pull("CreateContainerConfigError"));
  pod = json_pack("{s:o}", "status", fixture_json("status-failed.json"));
  assert_int_equal(kube_pod_exit_code(pod, "Failed"), 3);
  json_decref(pod);
  pod = json_pack("{s:o}", "status", fixture_json("status-succeeded.json"));
  assert_int_equal(kube_pod_exit_code(pod, "Succeeded"), 0);
  json_decref(pod);
  pod = json_pack("{s:{s:s}}", "status", "phase", "Failed");
  assert_int_equal(kube_pod_exit_code(pod, "Failed"), 1);
  json_decref(pod);
}

/* ---- nodes -> capacity ---- */

static int pool_fits(struct fixture *f, const char *pool)
{
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request want;

  capacity_request_for_pool(cfg_pool_find(&f->cfg, pool), &want, selector);
  return capacity_fits(f->cap, &want);
}

static void node_view(struct fixture *f, const char *name, int *ready,
                      size_t *ngpus, const char **source)
{
  struct cap_gpu_view gpus[CAP_MAX_NODE_GPUS];
  size_t i;

  for (i = 0; i < capacity_nnodes(f->cap); i++) {
    const char *n;

    capacity_node_view(f->cap, i, &n, source, ready, gpus, CAP_MAX_NODE_GPUS,
                       ngpus);
    if (strcmp(n, name) == 0)
      return;
  }
  fail_msg("node %s not in capacity", name);
}

static void test_quantities(void **state)
{
  uint64_t v;

  (void)state;
  assert_int_equal(kube_quantity_milli("7910m", &v), 0);
  assert_int_equal(v, 7910);
  assert_int_equal(kube_quantity_milli("4", &v), 0);
  assert_int_equal(v, 4000);
  assert_int_equal(kube_quantity_milli("0.5", &v), 0);
  assert_int_equal(v, 500);
  assert_int_equal(kube_quantity_units("31369712Ki", &v), 0);
  assert_int_equal(v, 31369712ULL * 1024);
  assert_int_equal(kube_quantity_units("2008Gi", &v), 0);
  assert_int_equal(v, 2008ULL << 30);
  assert_int_equal(kube_quantity_units("1e3", &v), 0);
  assert_int_equal(v, 1000);
  assert_int_equal(kube_quantity_units("500M", &v), 0);
  assert_int_equal(v, 500000000);
  assert_int_equal(kube_quantity_units("8", &v), 0);
  assert_int_equal(v, 8);
  assert_int_equal(kube_quantity_units("12Qi", &v), -EINVAL);
  assert_int_equal(kube_quantity_units("-1", &v), -EINVAL);
  assert_int_equal(kube_quantity_units("", &v), -EINVAL);
}

static void test_nodes_capacity(void **state)
{
  struct fixture f;
  struct cap_totals t;
  const char *source;
  size_t ngpus;
  int ready;
  json_t *pod;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  feed_node(&f, KUBE_EVENT_ADDED, "node-cordoned.json");
  feed_node(&f, KUBE_EVENT_ADDED, "node-notready.json");
  assert_int_equal(capacity_nnodes(f.cap), 4);
  node_view(&f, CPU_NODE, &ready, &ngpus, &source);
  assert_true(ready);
  assert_int_equal(ngpus, 0);
  assert_string_equal(source, "cpu");
  node_view(&f, GPU_NODE, &ready, &ngpus, &source);
  assert_true(ready);
  assert_int_equal(ngpus, 8);
  assert_string_equal(source, "gpu-h100");
  node_view(&f, "ip-10-0-0-11.ec2.internal", &ready, &ngpus, &source);
  assert_false(ready); /* cordoned */
  node_view(&f, "ip-10-0-0-12.ec2.internal", &ready, &ngpus, &source);
  assert_false(ready); /* NotReady */
  capacity_totals(f.cap, &t);
  assert_int_equal(t.nodes_ready, 2);
  assert_int_equal(t.cpu_milli_total, 7910 + 191450 + 8000 + 8000);
  assert_int_equal(t.gpus_total, 8);

  /* The GPU node carries a NoSchedule taint: only pools that tolerate it
   * and select its group are placed there. */
  assert_true(pool_fits(&f, "gpu-8"));
  assert_false(pool_fits(&f, "gpu-untolerated"));

  /* Other pods' requests are subtracted: 3 GPUs, max(60, 40.5) CPUs. */
  pod = fixture_json("pod-other-gpu.json");
  backend_kube_other_pod_event(f.b, KUBE_EVENT_ADDED, pod);
  node_view(&f, GPU_NODE, &ready, &ngpus, &source);
  assert_int_equal(ngpus, 5);
  assert_false(pool_fits(&f, "gpu-8"));
  assert_true(pool_fits(&f, "gpu-1"));
  capacity_totals(f.cap, &t);
  assert_int_equal(t.cpu_milli_total, 7910 + 131450 + 8000 + 8000);
  assert_int_equal(t.memory_total, 31369712ULL * 1024 + (2008ULL << 30) -
                                       ((300ULL << 30) + (512ULL << 20)) +
                                       (64ULL << 30));
  /* It finished: its resources come back. */
  json_object_set_new(json_object_get(pod, "status"), "phase",
                      json_string("Succeeded"));
  backend_kube_other_pod_event(f.b, KUBE_EVENT_MODIFIED, pod);
  node_view(&f, GPU_NODE, &ready, &ngpus, &source);
  assert_int_equal(ngpus, 8);
  assert_true(pool_fits(&f, "gpu-8"));
  /* This fleet's own pods are counted by their holds, not twice. */
  json_object_set_new(json_object_get(pod, "status"), "phase",
                      json_string("Running"));
  json_object_set_new(
      json_object_get(json_object_get(pod, "metadata"), "labels"),
      "runfleet.dev/fleet", json_string("rf-test"));
  backend_kube_other_pod_event(f.b, KUBE_EVENT_MODIFIED, pod);
  node_view(&f, GPU_NODE, &ready, &ngpus, &source);
  assert_int_equal(ngpus, 8);
  json_decref(pod);

  /* 7910m - 2100m left on the CPU node: 2 runners of 2 CPUs, not 3. */
  pod = fixture_json("pod-other-cpu.json");
  backend_kube_other_pod_event(f.b, KUBE_EVENT_ADDED, pod);
  json_decref(pod);
  assert_int_equal(start_runner(&f, "rf-cpu-x-1", "cpu"), 0);
  assert_int_equal(start_runner(&f, "rf-cpu-x-2", "cpu"), 0);
  assert_int_equal(start_runner(&f, "rf-cpu-x-3", "cpu"), -ENOSPC);

  /* A tainted node takes only the pool that tolerates its taint. */
  feed_node(&f, KUBE_EVENT_DELETED, "node-cpu.json");
  feed_node(&f, KUBE_EVENT_ADDED, "node-tainted.json");
  assert_false(pool_fits(&f, "cpu"));
  assert_true(pool_fits(&f, "db"));
  feed_node(&f, KUBE_EVENT_DELETED, "node-tainted.json");
  assert_false(pool_fits(&f, "db"));
  /* A cordoned node comes back when uncordoned. */
  pod = fixture_json("node-cordoned.json");
  json_object_del(json_object_get(pod, "spec"), "unschedulable");
  json_object_del(json_object_get(pod, "spec"), "taints");
  backend_kube_node_event(f.b, KUBE_EVENT_MODIFIED, pod);
  json_decref(pod);
  node_view(&f, "ip-10-0-0-11.ec2.internal", &ready, &ngpus, &source);
  assert_true(ready);
  assert_true(pool_fits(&f, "cpu"));
  teardown_backend(&f);
}

/* ---- lifecycle ---- */

/* The pod as the watch shows it: the created object, bound to node (or
 * not), with the status of file. */
static json_t *pod_with(struct fixture *f, size_t call, const char *node,
                        const char *file)
{
  json_t *pod = json_deep_copy(f->calls[call].obj);

  json_object_set_new(json_object_get(pod, "metadata"), "uid",
                      json_sprintf("uid-%s", f->calls[call].name));
  if (node != NULL)
    json_object_set_new(json_object_get(pod, "spec"), "nodeName",
                        json_string(node));
  if (file != NULL)
    json_object_set_new(pod, "status", fixture_json(file));
  return pod;
}

static void feed_pod(struct fixture *f, enum kube_event_type t, size_t call,
                     const char *node, const char *file)
{
  json_t *pod = pod_with(f, call, node, file);

  backend_kube_pod_event(f->b, t, pod);
  json_decref(pod);
}

/* Starts name and answers both creates. */
static size_t started(struct fixture *f, const char *name, const char *pool)
{
  size_t first = f->ncalls;

  assert_int_equal(start_runner(f, name, pool), 0);
  answer(f, first, 201, NULL);
  answer(f, first + 1, 201, NULL);
  assert_int_equal(f->calls[first + 1].kind, KUBE_SECRETS);
  return first;
}

static void assert_deleted(struct fixture *f, size_t i, enum kube_kind kind,
                           const char *name)
{
  assert_true(i < f->ncalls);
  assert_false(f->calls[i].create);
  assert_int_equal(f->calls[i].kind, kind);
  assert_string_equal(f->calls[i].name, name);
}

static void test_lifecycle_succeeded(void **state)
{
  struct fixture f;
  struct backend_item items[4];
  size_t p;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  p = started(&f, "rf-gpu-1-abcd1234-0001-7", "gpu-1");
  feed_pod(&f, KUBE_EVENT_ADDED, p, NULL, NULL);
  assert_int_equal(f.nevents, 0);
  feed_pod(&f, KUBE_EVENT_MODIFIED, p, GPU_NODE, "status-creating.json");
  assert_int_equal(f.nevents, 1);
  assert_int_equal(f.events[0].type, BACKEND_PLACED);
  assert_string_equal(f.events[0].node, GPU_NODE);
  assert_int_equal(f.events[0].ngpus, 1);
  assert_int_equal(f.b->ops->list(f.b, items, 4), 1);
  assert_string_equal(items[0].name, "rf-gpu-1-abcd1234-0001-7");
  assert_string_equal(items[0].where.node, GPU_NODE);
  assert_false(items[0].running);
  feed_pod(&f, KUBE_EVENT_MODIFIED, p, GPU_NODE, "status-running.json");
  assert_int_equal(f.nevents, 2);
  assert_int_equal(f.events[1].type, BACKEND_RUNNING);
  assert_int_equal(f.b->ops->list(f.b, items, 4), 1);
  assert_true(items[0].running);
  /* A repeated status changes nothing. */
  feed_pod(&f, KUBE_EVENT_MODIFIED, p, GPU_NODE, "status-running.json");
  assert_int_equal(f.nevents, 2);
  feed_pod(&f, KUBE_EVENT_MODIFIED, p, GPU_NODE, "status-succeeded.json");
  assert_int_equal(f.nevents, 3);
  assert_int_equal(f.events[2].type, BACKEND_EXITED);
  assert_int_equal(f.events[2].status, 0);
  assert_int_equal(f.b->ops->count(f.b), 0);
  /* Pod and secret deleted: four requests in all for this runner. */
  assert_int_equal(f.ncalls, 4);
  assert_deleted(&f, 2, KUBE_PODS, "rf-gpu-1-abcd1234-0001-7");
  assert_deleted(&f, 3, KUBE_SECRETS, "rf-gpu-1-abcd1234-0001-7-jit");
  answer(&f, 2, 200, NULL);
  answer(&f, 3, 200, NULL);
  feed_pod(&f, KUBE_EVENT_DELETED, p, GPU_NODE, "status-succeeded.json");
  assert_int_equal(f.nevents, 3);
  assert_int_equal(f.ncalls, 4);
  assert_int_equal(f.b->ops->list(f.b, items, 4), 0);
  teardown_backend(&f);
}

/* The watch can show the pod bound and Running before the Secret's create
 * answers (kwok runs it at once; a kubelet may bind it first): that state
 * is applied once the Secret is made, as no later event need come. */
static void test_running_before_the_secret(void **state)
{
  struct fixture f;
  size_t p;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  p = f.ncalls;
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-8", "gpu-1"), 0);
  answer(&f, p, 201, NULL);
  assert_int_equal(f.calls[p + 1].kind, KUBE_SECRETS);
  feed_pod(&f, KUBE_EVENT_ADDED, p, GPU_NODE, "status-running.json");
  assert_int_equal(f.nevents, 0);
  answer(&f, p + 1, 201, NULL);
  assert_int_equal(f.nevents, 2);
  assert_int_equal(f.events[0].type, BACKEND_PLACED);
  assert_string_equal(f.events[0].node, GPU_NODE);
  assert_int_equal(f.events[1].type, BACKEND_RUNNING);
  feed_pod(&f, KUBE_EVENT_MODIFIED, p, GPU_NODE, "status-succeeded.json");
  assert_int_equal(f.nevents, 3);
  assert_int_equal(f.events[2].type, BACKEND_EXITED);
  answer(&f, p + 2, 200, NULL);
  answer(&f, p + 3, 200, NULL);
  feed_pod(&f, KUBE_EVENT_DELETED, p, GPU_NODE, "status-succeeded.json");
  assert_int_equal(f.b->ops->count(f.b), 0);
  teardown_backend(&f);
}

static void test_lifecycle_failed(void **state)
{
  struct fixture f;
  size_t p;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  p = started(&f, "rf-dind-abcd1234-0001-1", "dind");
  feed_pod(&f, KUBE_EVENT_ADDED, p, CPU_NODE, "status-running.json");
  assert_int_equal(f.events[0].type, BACKEND_PLACED);
  assert_int_equal(f.events[1].type, BACKEND_RUNNING);
  feed_pod(&f, KUBE_EVENT_MODIFIED, p, CPU_NODE, "status-failed.json");
  assert_int_equal(f.nevents, 3);
  assert_int_equal(f.events[2].type, BACKEND_EXITED);
  assert_int_equal(f.events[2].status, 3); /* the runner's, not dind's */
  assert_deleted(&f, 2, KUBE_PODS, "rf-dind-abcd1234-0001-1");
  assert_deleted(&f, 3, KUBE_SECRETS, "rf-dind-abcd1234-0001-1-jit");
  teardown_backend(&f);
}

static void test_vanished_and_node_lost(void **state)
{
  struct fixture f;
  size_t p, q;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  p = started(&f, "rf-cpu-abcd1234-0001-1", "cpu");
  q = started(&f, "rf-gpu-1-abcd1234-0001-2", "gpu-1");
  feed_pod(&f, KUBE_EVENT_ADDED, p, CPU_NODE, "status-running.json");
  feed_pod(&f, KUBE_EVENT_ADDED, q, GPU_NODE, "status-running.json");
  assert_int_equal(f.nevents, 4);
  /* Deleted by someone else: lost, and its secret goes too. */
  feed_pod(&f, KUBE_EVENT_DELETED, p, CPU_NODE, "status-running.json");
  assert_int_equal(f.nevents, 5);
  assert_int_equal(f.events[4].type, BACKEND_LOST);
  assert_int_equal(f.events[4].status, -ENOENT);
  assert_int_equal(f.ncalls, 5);
  assert_deleted(&f, 4, KUBE_SECRETS, "rf-cpu-abcd1234-0001-1-jit");
  /* Its node deleted: lost, pod and secret deleted. */
  feed_node(&f, KUBE_EVENT_DELETED, "node-gpu8.json");
  assert_int_equal(f.nevents, 6);
  assert_int_equal(f.events[5].type, BACKEND_LOST);
  assert_string_equal(f.events[5].name, "rf-gpu-1-abcd1234-0001-2");
  assert_int_equal(f.events[5].status, -EHOSTDOWN);
  assert_deleted(&f, 5, KUBE_PODS, "rf-gpu-1-abcd1234-0001-2");
  assert_deleted(&f, 6, KUBE_SECRETS, "rf-gpu-1-abcd1234-0001-2-jit");
  assert_int_equal(f.b->ops->count(f.b), 0);
  teardown_backend(&f);
}

static void test_stop(void **state)
{
  struct fixture f;
  size_t p;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  p = started(&f, "rf-cpu-abcd1234-0001-1", "cpu");
  feed_pod(&f, KUBE_EVENT_ADDED, p, CPU_NODE, "status-running.json");
  assert_int_equal(f.b->ops->stop(f.b, "rf-cpu-abcd1234-0001-1"), 0);
  assert_int_equal(f.b->ops->stop(f.b, "nobody"), -ENOENT);
  assert_deleted(&f, 2, KUBE_PODS, "rf-cpu-abcd1234-0001-1");
  assert_deleted(&f, 3, KUBE_SECRETS, "rf-cpu-abcd1234-0001-1-jit");
  assert_int_equal(f.nevents, 2); /* EXITED waits for the deletion */
  answer(&f, 2, 200, NULL);
  answer(&f, 3, 200, NULL);
  feed_pod(&f, KUBE_EVENT_DELETED, p, CPU_NODE, "status-running.json");
  assert_int_equal(f.nevents, 3);
  assert_int_equal(f.events[2].type, BACKEND_EXITED);
  assert_int_equal(f.events[2].status, 128 + 15);
  assert_int_equal(f.ncalls, 4);

  /* Stopped while its pod was being created: deleted once it exists. */
  p = f.ncalls;
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-2", "cpu"), 0);
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-2", "cpu"), -EEXIST);
  assert_int_equal(f.b->ops->stop(f.b, "rf-cpu-abcd1234-0001-2"), 0);
  answer(&f, p, 201, NULL);
  answer(&f, p + 1, 201, NULL);
  assert_deleted(&f, p + 2, KUBE_PODS, "rf-cpu-abcd1234-0001-2");
  assert_deleted(&f, p + 3, KUBE_SECRETS, "rf-cpu-abcd1234-0001-2-jit");
  teardown_backend(&f);
}

static void test_create_fails(void **state)
{
  struct fixture f;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  /* The pod is refused: lost, nothing to delete. */
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-1", "cpu"), 0);
  answer(&f, 0, 403, "Forbidden");
  assert_int_equal(f.nevents, 1);
  assert_int_equal(f.events[0].type, BACKEND_LOST);
  assert_int_equal(f.ncalls, 1);
  /* The secret is refused: the pod is deleted. */
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-2", "cpu"), 0);
  answer(&f, 1, 201, NULL);
  answer(&f, 2, 422, "Invalid");
  assert_int_equal(f.nevents, 2);
  assert_int_equal(f.events[1].type, BACKEND_LOST);
  assert_int_equal(f.ncalls, 4);
  assert_deleted(&f, 3, KUBE_PODS, "rf-cpu-abcd1234-0001-2");
  /* A node capacity does not know, or not Ready: -ENOSPC. */
  feed_node(&f, KUBE_EVENT_DELETED, "node-cpu.json");
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-3", "cpu"), -ENOSPC);
  teardown_backend(&f);
}

/* A create that went unanswered (the connection dropped) may have made the
 * pod, which then holds its node's resources: the runner keeps its place
 * until the pod is known gone, and only then is lost. */
static void test_create_uncertain(void **state)
{
  struct fixture f;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  /* The delete finds nothing: lost at its answer. */
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-1", "gpu-1"), 0);
  answer(&f, 0, 0, NULL);
  assert_int_equal(f.nevents, 0);
  assert_int_equal(f.ncalls, 2);
  assert_deleted(&f, 1, KUBE_PODS, "rf-gpu-1-abcd1234-0001-1");
  answer(&f, 1, 404, "NotFound");
  assert_int_equal(f.nevents, 1);
  assert_int_equal(f.events[0].type, BACKEND_LOST);
  assert_int_equal(f.ncalls, 2); /* no secret was made */
  /* The pod was made and the watch showed it: lost when it is gone. */
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-2", "gpu-1"), 0);
  answer(&f, 2, 0, NULL);
  assert_deleted(&f, 3, KUBE_PODS, "rf-gpu-1-abcd1234-0001-2");
  feed_pod(&f, KUBE_EVENT_ADDED, 2, GPU_NODE, "status-creating.json");
  answer(&f, 3, 200, NULL);
  assert_int_equal(f.nevents, 1); /* still terminating: its GPU is held */
  feed_pod(&f, KUBE_EVENT_DELETED, 2, GPU_NODE, "status-creating.json");
  assert_int_equal(f.nevents, 2);
  assert_int_equal(f.events[1].type, BACKEND_LOST);
  assert_string_equal(f.events[1].name, "rf-gpu-1-abcd1234-0001-2");
  /* Made and deleted where no watch saw it: the delete's answer is all. */
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-3", "gpu-1"), 0);
  answer(&f, 4, 0, NULL);
  answer(&f, 5, 200, NULL);
  assert_int_equal(f.nevents, 3);
  assert_int_equal(f.events[2].type, BACKEND_LOST);
  /* The delete fails too: lost, as nothing more can be known. */
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-4", "gpu-1"), 0);
  answer(&f, 6, 0, NULL);
  answer(&f, 7, 503, "ServiceUnavailable");
  assert_int_equal(f.nevents, 4);
  assert_int_equal(f.events[3].type, BACKEND_LOST);
  assert_int_equal(f.ncalls, 8);
  teardown_backend(&f);
}

/* ---- pods that stay Pending ---- */

static void test_pending_unschedulable(void **state)
{
  struct fixture f;
  const struct cfg_pool *gpu1;
  size_t p;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  gpu1 = cfg_pool_find(&f.cfg, "gpu-1");
  p = started(&f, "rf-gpu-1-abcd1234-0001-1", "gpu-1");
  feed_pod(&f, KUBE_EVENT_ADDED, p, NULL, "status-unschedulable.json");
  /* The API shows why it waits. */
  assert_string_equal(f.b->ops->waiting(f.b, "rf-gpu-1-abcd1234-0001-1"),
                      "Unschedulable");
  assert_null(f.b->ops->waiting(f.b, "nobody"));
  f.now += 4 * 60 * 1000;
  backend_kube_check_pending(f.b);
  assert_int_equal(f.nevents, 0); /* within pending_timeout (5m) */
  f.now += 61 * 1000;
  backend_kube_check_pending(f.b);
  assert_int_equal(f.nevents, 1);
  assert_int_equal(f.events[0].type, BACKEND_LOST);
  assert_int_equal(f.events[0].status, -ETIMEDOUT);
  assert_deleted(&f, 2, KUBE_PODS, "rf-gpu-1-abcd1234-0001-1");
  assert_deleted(&f, 3, KUBE_SECRETS, "rf-gpu-1-abcd1234-0001-1-jit");
  assert_int_equal(metrics_value(f.metrics, "runfleet_pods_pending_seconds",
                                 "outcome=\"timeout\",pool=\"gpu-1\""),
                   1);
  /* The pool backs off before its replacement, then takes runners. */
  capacity_release(f.cap, "rf-gpu-1-abcd1234-0001-1");
  assert_false(f.b->ops->accepts(f.b, gpu1));
  assert_int_equal(start_runner(&f, "rf-gpu-1-abcd1234-0001-2", "gpu-1"),
                   -ENOSPC);
  f.now += KUBE_BACKEND_BACKOFF_BASE_MS;
  assert_true(f.b->ops->accepts(f.b, gpu1));
  p = started(&f, "rf-gpu-1-abcd1234-0001-2", "gpu-1");
  /* A second failure in a row backs off twice as long. */
  feed_pod(&f, KUBE_EVENT_ADDED, p, GPU_NODE, "status-configerror.json");
  f.now += 5 * 60 * 1000;
  backend_kube_check_pending(f.b);
  assert_int_equal(f.nevents, 3); /* PLACED, then LOST */
  assert_int_equal(f.events[1].type, BACKEND_PLACED);
  assert_int_equal(f.events[2].type, BACKEND_LOST);
  f.now += KUBE_BACKEND_BACKOFF_BASE_MS;
  assert_false(f.b->ops->accepts(f.b, gpu1));
  f.now += KUBE_BACKEND_BACKOFF_BASE_MS;
  assert_true(f.b->ops->accepts(f.b, gpu1));
  /* A pod that runs ends the backoff. */
  capacity_release(f.cap, "rf-gpu-1-abcd1234-0001-2");
  p = started(&f, "rf-gpu-1-abcd1234-0001-3", "gpu-1");
  feed_pod(&f, KUBE_EVENT_ADDED, p, GPU_NODE, "status-running.json");
  assert_null(f.b->ops->waiting(f.b, "rf-gpu-1-abcd1234-0001-3"));
  f.now += 60 * 60 * 1000;
  backend_kube_check_pending(f.b);
  assert_int_equal(f.events[f.nevents - 1].type, BACKEND_RUNNING);
  assert_true(f.b->ops->accepts(f.b, gpu1));
  teardown_backend(&f);
}

static void test_image_never_pulls(void **state)
{
  struct fixture f;
  const struct cfg_pool *dind;
  size_t p;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  dind = cfg_pool_find(&f.cfg, "dind");
  /* image_pull_failures: 2, pending_timeout: 60s. */
  p = started(&f, "rf-dind-abcd1234-0001-1", "dind");
  feed_pod(&f, KUBE_EVENT_ADDED, p, CPU_NODE, "status-errimagepull.json");
  f.now += 61 * 1000;
  backend_kube_check_pending(f.b);
  assert_int_equal(f.nevents, 2); /* PLACED, LOST */
  assert_int_equal(f.events[1].type, BACKEND_LOST);
  capacity_release(f.cap, "rf-dind-abcd1234-0001-1");
  f.now += KUBE_BACKEND_BACKOFF_BASE_MS;
  assert_true(f.b->ops->accepts(f.b, dind));
  p = started(&f, "rf-dind-abcd1234-0001-2", "dind");
  feed_pod(&f, KUBE_EVENT_ADDED, p, CPU_NODE, "status-errimagepull.json");
  f.now += 61 * 1000;
  backend_kube_check_pending(f.b);
  assert_int_equal(f.events[f.nevents - 1].type, BACKEND_LOST);
  capacity_release(f.cap, "rf-dind-abcd1234-0001-2");
  /* Stopped for good: no loop of pods that never pull. */
  f.now += 24ULL * 60 * 60 * 1000;
  assert_false(f.b->ops->accepts(f.b, dind));
  assert_int_equal(start_runner(&f, "rf-dind-abcd1234-0001-3", "dind"),
                   -ENOSPC);
  assert_int_equal(
      metrics_value(f.metrics, "runfleet_kube_pool_blocked", "pool=\"dind\""),
      1);
  /* Other pools go on. */
  assert_true(f.b->ops->accepts(f.b, cfg_pool_find(&f.cfg, "cpu")));
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-4", "cpu"), 0);
  teardown_backend(&f);
}

/* ---- restart ---- */

static int fence_open = 1;

static int fence(void *arg)
{
  (void)arg;
  return fence_open;
}

/* Fenced, the backend creates and deletes nothing (the watch goes on and
 * reports the end); on takeover it deletes what ended meanwhile. */
static void test_fence_and_takeover(void **state)
{
  struct fixture f;
  size_t p, n;
  json_t *pod;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  backend_kube_set_fence(f.b, fence, NULL);
  p = started(&f, "rf-cpu-abcd1234-0001-1", "cpu");
  fence_open = 0;
  n = f.ncalls;
  assert_int_not_equal(start_runner(&f, "rf-cpu-abcd1234-0001-2", "cpu"), 0);
  assert_int_equal(f.ncalls, n);
  pod = pod_with(&f, p, CPU_NODE, "status-succeeded.json");
  backend_kube_pod_event(f.b, KUBE_EVENT_MODIFIED, pod);
  json_decref(pod);
  assert_int_equal(f.events[f.nevents - 1].type, BACKEND_EXITED);
  assert_int_equal(f.ncalls, n); /* no delete while fenced */
  fence_open = 1;
  backend_kube_takeover(f.b);
  assert_deleted(&f, n, KUBE_PODS, "rf-cpu-abcd1234-0001-1");
  assert_deleted(&f, n + 1, KUBE_SECRETS, "rf-cpu-abcd1234-0001-1-jit");
  teardown_backend(&f);
}

static void test_adopt_after_restart(void **state)
{
  struct fixture f, g;
  struct backend_item items[4];
  json_t *list, *pod;
  size_t p, q;

  (void)state;
  /* The first run made two pods and two secrets. */
  setup_backend(&f);
  nodes_up(&f);
  p = started(&f, "rf-gpu-1-abcd1234-0001-1", "gpu-1");
  q = started(&f, "rf-cpu-abcd1234-0001-2", "cpu");

  setup_backend(&g);
  nodes_up(&g);
  /* What the pod watch lists: one running, one finished. */
  pod = pod_with(&f, p, GPU_NODE, "status-running.json");
  backend_kube_pod_event(g.b, KUBE_EVENT_ADDED, pod);
  json_decref(pod);
  pod = pod_with(&f, q, CPU_NODE, "status-succeeded.json");
  backend_kube_pod_event(g.b, KUBE_EVENT_ADDED, pod);
  json_decref(pod);
  backend_kube_pods_synced(g.b);
  assert_int_equal(g.events[g.nevents - 1].type, BACKEND_LISTED);
  assert_int_equal(g.b->ops->list(g.b, items, 4), 1);
  assert_string_equal(items[0].name, "rf-gpu-1-abcd1234-0001-1");
  assert_string_equal(items[0].pool, "gpu-1");
  assert_string_equal(items[0].where.node, GPU_NODE);
  assert_int_equal(items[0].where.ngpus, 1);
  assert_int_equal(items[0].where.gpus[0], 0);
  assert_int_equal(items[0].where.cpu_milli, 8000);
  assert_true(items[0].running);
  /* The registration rides on the pod: a replica that never started the
   * runner adopts it with that. */
  assert_int_equal(items[0].gh_id, 4242);
  assert_string_equal(
      json_string_value(json_object_get(
          json_object_get(json_object_get(f.calls[p].obj, "metadata"),
                          "annotations"),
          "runfleet.dev/runner-id")),
      "4242");
  assert_int_equal(capacity_hold_at(g.cap, items[0].name, CAP_HOLDER_RUNNER,
                                    &items[0].where),
                   0);
  /* The finished one is cleaned up without an event. */
  assert_deleted(&g, 0, KUBE_PODS, "rf-cpu-abcd1234-0001-2");
  assert_deleted(&g, 1, KUBE_SECRETS, "rf-cpu-abcd1234-0001-2-jit");
  /* Secrets: the two runners' and an orphan. */
  list = json_pack("{s:[o, o, {s:{s:s, s:{s:s}}}]}", "items",
                   json_deep_copy(f.calls[p + 1].obj),
                   json_deep_copy(f.calls[q + 1].obj), "metadata", "name",
                   "rf-cpu-old-1-jit", "annotations",
                   "runfleet.dev/runner-name", "rf-cpu-old-1");
  backend_kube_secrets_listed(g.b, list);
  json_decref(list);
  assert_int_equal(g.ncalls, 3);
  assert_deleted(&g, 2, KUBE_SECRETS, "rf-cpu-old-1-jit");
  /* The adopted runner's events flow as usual. */
  pod = pod_with(&f, p, GPU_NODE, "status-succeeded.json");
  backend_kube_pod_event(g.b, KUBE_EVENT_MODIFIED, pod);
  json_decref(pod);
  /* Adoption told what the watch showed: placed and running, then that
   * the list is complete. */
  assert_int_equal(g.nevents, 4);
  assert_int_equal(g.events[0].type, BACKEND_PLACED);
  assert_int_equal(g.events[1].type, BACKEND_RUNNING);
  assert_int_equal(g.events[2].type, BACKEND_LISTED);
  assert_int_equal(g.events[3].type, BACKEND_EXITED);
  assert_string_equal(g.events[3].name, "rf-gpu-1-abcd1234-0001-1");
  teardown_backend(&g);
  teardown_backend(&f);
}

static void test_close_stop(void **state)
{
  struct fixture f;
  size_t i;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  started(&f, "rf-cpu-abcd1234-0001-1", "cpu");
  feed_pod(&f, KUBE_EVENT_ADDED, 0, CPU_NODE, "status-running.json");
  f.b->ops->close(f.b, BACKEND_CLOSE_STOP, closed_cb, &f);
  assert_int_equal(f.events[f.nevents - 1].type, BACKEND_EXITED);
  assert_deleted(&f, 2, KUBE_PODS, "rf-cpu-abcd1234-0001-1");
  assert_deleted(&f, 3, KUBE_SECRETS, "rf-cpu-abcd1234-0001-1-jit");
  assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
  assert_false(f.closed); /* the deletes are still out */
  answer(&f, 2, 200, NULL);
  answer(&f, 3, 404, "NotFound");
  assert_false(f.closed); /* the handles close on a later loop turn */
  assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
  assert_true(f.closed);
  f.b->ops->destroy(f.b);
  for (i = 0; i < f.ncalls; i++)
    json_decref(f.calls[i].obj);
  capacity_destroy(f.cap);
  metrics_destroy(f.metrics);
  cfg_free(&f.cfg);
  assert_int_equal(uv_loop_close(&f.loop), 0);
}

/* KEEP leaves every pod, one still being made included, to the next run. */
static void test_close_keep(void **state)
{
  struct fixture f;
  size_t i;

  (void)state;
  setup_backend(&f);
  nodes_up(&f);
  started(&f, "rf-cpu-abcd1234-0001-1", "cpu");
  feed_pod(&f, KUBE_EVENT_ADDED, 0, CPU_NODE, "status-running.json");
  assert_int_equal(start_runner(&f, "rf-cpu-abcd1234-0001-2", "cpu"), 0);
  f.b->ops->close(f.b, BACKEND_CLOSE_KEEP, closed_cb, &f);
  answer(&f, 2, 201, NULL);
  answer(&f, 3, 201, NULL);
  assert_int_equal(f.ncalls, 4);
  for (i = 0; i < f.ncalls; i++)
    assert_true(f.calls[i].create);
  assert_int_equal(f.events[f.nevents - 1].type, BACKEND_RUNNING);
  assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
  assert_true(f.closed);
  f.b->ops->destroy(f.b);
  for (i = 0; i < f.ncalls; i++)
    json_decref(f.calls[i].obj);
  capacity_destroy(f.cap);
  metrics_destroy(f.metrics);
  cfg_free(&f.cfg);
  assert_int_equal(uv_loop_close(&f.loop), 0);
}

static void test_config_pool_kube(void **state)
{
  struct fixture f;
  const struct cfg_pool *p;

  (void)state;
  setup_backend(&f);
  p = cfg_pool_find(&f.cfg, "cpu");
  assert_int_equal(p->kube.shm_bytes, 1ULL << 30);
  assert_int_equal(p->kube.dind, 0);
  assert_string_equal(p->kube.service_account, "runfleet-runner");
  assert_string_equal(p->kube.priority_class, "runfleet-runner");
  assert_string_equal(p->kube.cache_host_path, "/var/cache/runfleet");
  assert_int_equal(p->kube.pending_timeout_ms, 300000);
  assert_int_equal(p->kube.image_pull_failures, 3);
  p = cfg_pool_find(&f.cfg, "dind");
  assert_int_equal(p->kube.dind, 1);
  assert_int_equal(p->kube.pending_timeout_ms, 60000);
  assert_int_equal(p->kube.image_pull_failures, 2);
  teardown_backend(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_pool_kube),
      cmocka_unit_test(test_pod_cpu),
      cmocka_unit_test(test_pod_gpu),
      cmocka_unit_test(test_pod_dind),
      cmocka_unit_test(test_quantities),
      cmocka_unit_test(test_pod_status),
      cmocka_unit_test(test_nodes_capacity),
      cmocka_unit_test(test_lifecycle_succeeded),
      cmocka_unit_test(test_running_before_the_secret),
      cmocka_unit_test(test_lifecycle_failed),
      cmocka_unit_test(test_vanished_and_node_lost),
      cmocka_unit_test(test_stop),
      cmocka_unit_test(test_create_fails),
      cmocka_unit_test(test_create_uncertain),
      cmocka_unit_test(test_pending_unschedulable),
      cmocka_unit_test(test_image_never_pulls),
      cmocka_unit_test(test_adopt_after_restart),
      cmocka_unit_test(test_fence_and_takeover),
      cmocka_unit_test(test_close_stop),
      cmocka_unit_test(test_close_keep),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
