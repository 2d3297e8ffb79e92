/* GPU health on Kubernetes: a failed GPU check reported for a runner's node
 * cordons or taints that node once, posts an Event on it and keeps the
 * node's GPUs out of capacity until an operator lifts the mark. Requests go
 * to a recorder the tests answer; Nodes come from the JSON fixtures. */
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
#include "kube_health.h"

#define FIXTURES "manager/tests/fixtures/kube/"
#define MAX_CALLS 16
#define GPU_NODE "ip-10-0-1-5.ec2.internal"

static char dir[64];

enum verb { V_CREATE, V_DELETE, V_GET, V_PATCH };

struct call {
  enum verb verb;
  enum kube_kind kind;
  char ns[64];
  char name[128];
  enum kube_patch_type patch_type;
  json_t *obj;
  kube_done_cb cb;
  void *arg;
  int answered;
};

struct fixture {
  uv_loop_t loop;
  struct config cfg;
  struct capacity *cap;
  struct backend *b;
  struct call calls[MAX_CALLS];
  size_t ncalls;
  int closed;
};

static const char *const base_yaml =
    "github:\n"
    "  pat_file: @D/pat\n"
    "  webhook_secret_file: @D/secret\n"
    "  org: acme\n"
    "backend:\n"
    "  type: kubernetes\n"
    "  kubernetes:\n"
    "    namespace: ci-runners\n"
    "    lease_name: rf-test\n"
    "@G"
    "pools:\n"
    "  - name: gpu-1\n"
    "    labels: [linux, gpu]\n"
    "    max_runners: 8\n"
    "    resources: {cpus: 8, memory: 64Gi, gpus: 1}\n"
    "    runner: {image: reg.example/runner-gpu:1}\n"
    "    node_selector: {runfleet.dev/node-group: gpu-h100}\n"
    "    tolerations:\n"
    "      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n";

static void write_file(const char *name, const char *text)
{
  char path[128];
  FILE *fp;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
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
  snprintf(dir, sizeof(dir), "/tmp/rf-khealth-XXXXXX");
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

/* The config with gpu (the gpu_unhealthy lines, or "") in place of @G.
 * Returns what cfg_parse returned; errs gets its messages. */
static int parse_config(struct config *cfg, const char *gpu, char *errs,
                        size_t errs_size)
{
  static char text[8192];
  const char *in = base_yaml;
  size_t o = 0;

  while (*in != '\0' && o < sizeof(text) - 512) {
    if (in[0] == '@' && in[1] == 'D') {
      o += (size_t)snprintf(text + o, sizeof(text) - o, "%s", dir);
      in += 2;
    } else if (in[0] == '@' && in[1] == 'G') {
      o += (size_t)snprintf(text + o, sizeof(text) - o, "%s", gpu);
      in += 2;
    } else {
      text[o++] = *in++;
    }
  }
  text[o] = '\0';
  memset(cfg, 0, sizeof(*cfg));
  return cfg_parse(cfg, "test.yaml", text, o, errs, errs_size);
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

/* ---- the recorder ---- */

static struct call *record(struct fixture *f, enum verb verb,
                           enum kube_kind kind, const char *ns,
                           const char *name, const json_t *obj, kube_done_cb cb,
                           void *cb_arg)
{
  struct call *c;

  assert_true(f->ncalls < MAX_CALLS);
  c = &f->calls[f->ncalls++];
  memset(c, 0, sizeof(*c));
  c->verb = verb;
  c->kind = kind;
  snprintf(c->ns, sizeof(c->ns), "%s", ns != NULL ? ns : "");
  snprintf(c->name, sizeof(c->name), "%s", name != NULL ? name : "");
  c->obj = obj != NULL ? json_deep_copy(obj) : NULL;
  c->cb = cb;
  c->arg = cb_arg;
  return c;
}

static int rec_create(void *arg, enum kube_kind kind, const char *ns,
                      const json_t *obj, kube_done_cb cb, void *cb_arg)
{
  record(arg, V_CREATE, kind, ns, NULL, obj, cb, cb_arg);
  return 0;
}

static int rec_delete(void *arg, enum kube_kind kind, const char *ns,
                      const char *name, kube_done_cb cb, void *cb_arg)
{
  record(arg, V_DELETE, kind, ns, name, NULL, cb, cb_arg);
  return 0;
}

static int rec_get(void *arg, enum kube_kind kind, const char *ns,
                   const char *name, kube_done_cb cb, void *cb_arg)
{
  record(arg, V_GET, kind, ns, name, NULL, cb, cb_arg);
  return 0;
}

static int rec_patch(void *arg, enum kube_kind kind, const char *ns,
                     const char *name, enum kube_patch_type type,
                     const json_t *patch, kube_done_cb cb, void *cb_arg)
{
  struct call *c = record(arg, V_PATCH, kind, ns, name, patch, cb, cb_arg);

  c->patch_type = type;
  return 0;
}

static const struct backend_kube_api rec_api = {.create = rec_create,
                                                .delete_ = rec_delete,
                                                .get = rec_get,
                                                .patch = rec_patch};

static void on_event(void *ctx, const struct backend_event *ev)
{
  (void)ctx;
  (void)ev;
}

/* Answers call i with status and obj (borrowed; NULL: an empty object). */
static void answer(struct fixture *f, size_t i, long status, json_t *obj)
{
  struct call *c = &f->calls[i];
  struct kube_response resp;
  json_t *empty = json_object();

  assert_true(i < f->ncalls);
  assert_false(c->answered);
  c->answered = 1;
  memset(&resp, 0, sizeof(resp));
  resp.status = status;
  resp.attempts = 1;
  resp.reason = status == 409 ? "Conflict" : status == 403 ? "Forbidden" : "";
  resp.message = "";
  resp.error = status / 100 == 2 ? 0 : -EPROTO;
  resp.object = obj != NULL ? obj : empty;
  c->cb(c->arg, &resp);
  json_decref(empty);
}

static void feed_node(struct fixture *f, enum kube_event_type t,
                      const char *file)
{
  json_t *n = fixture_json(file);

  backend_kube_node_event(f->b, t, n);
  json_decref(n);
}

static void setup_with(struct fixture *f, const char *gpu)
{
  char errs[2048];

  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  if (parse_config(&f->cfg, gpu, errs, sizeof(errs)) != 0)
    fail_msg("config: %s", errs);
  f->cap = capacity_new();
  assert_non_null(f->cap);
  f->b = backend_kube_new_with(&f->loop, &f->cfg, f->cap, on_event, f, &rec_api,
                               f, NULL, NULL);
  assert_non_null(f->b);
  feed_node(f, KUBE_EVENT_ADDED, "node-gpu8.json");
}

static void closed_cb(void *arg)
{
  ((struct fixture *)arg)->closed = 1;
}

static void teardown_with(struct fixture *f)
{
  size_t i;

  f->b->ops->close(f->b, BACKEND_CLOSE_KEEP, closed_cb, f);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_true(f->closed);
  f->b->ops->destroy(f->b);
  for (i = 0; i < f->ncalls; i++)
    json_decref(f->calls[i].obj);
  capacity_destroy(f->cap);
  cfg_free(&f->cfg);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static const int failed_gpus[] = {0, 3};
static const char *const failed_uuids[] = {"GPU-1111-aaaa", ""};

static int report_failed(struct fixture *f, const char *node)
{
  struct backend_gpu_report r = {.runner = "rf-gpu-1-abcd1234-0001-7",
                                 .node = node,
                                 .reason = "ecc",
                                 .message = "GPU 0 has 3 uncorrectable ECC "
                                            "errors",
                                 .gpus = failed_gpus,
                                 .uuids = failed_uuids,
                                 .ngpus = 2};

  return f->b->ops->gpu_unhealthy(f->b, &r);
}

static unsigned gpus_unhealthy(const struct fixture *f)
{
  struct cap_totals t;

  capacity_totals(f->cap, &t);
  return t.gpus_unhealthy;
}

static int fits_one_gpu(const struct fixture *f)
{
  struct cap_label selector[CAP_MAX_SELECTOR];
  struct cap_request req;

  capacity_request_for_pool(cfg_pool_find(&f->cfg, "gpu-1"), &req, selector);
  return capacity_fits(f->cap, &req);
}

static const struct call *find_call(const struct fixture *f, enum verb v,
                                    enum kube_kind kind)
{
  size_t i;

  for (i = 0; i < f->ncalls; i++)
    if (f->calls[i].verb == v && f->calls[i].kind == kind)
      return &f->calls[i];
  return NULL;
}

static void assert_event(const struct call *ev)
{
  const json_t *o = ev->obj;
  const json_t *inv = json_object_get(o, "involvedObject");
  const char *msg = json_string_value(json_object_get(o, "message"));

  assert_non_null(ev);
  assert_string_equal(ev->ns, "default");
  assert_string_equal(json_string_value(json_object_get(o, "reason")),
                      KUBE_HEALTH_REASON);
  assert_string_equal(json_string_value(json_object_get(o, "type")), "Warning");
  assert_string_equal(json_string_value(json_object_get(inv, "kind")), "Node");
  assert_string_equal(json_string_value(json_object_get(inv, "name")),
                      GPU_NODE);
  assert_string_equal(json_string_value(json_object_get(inv, "uid")),
                      "n-gpu-1");
  assert_null(json_object_get(inv, "namespace"));
  assert_string_equal(json_string_value(json_object_get(
                          json_object_get(o, "metadata"), "namespace")),
                      "default");
  assert_non_null(strstr(msg, "rf-gpu-1-abcd1234-0001-7"));
  assert_non_null(strstr(msg, "GPU 0 GPU-1111-aaaa, GPU 3"));
  assert_non_null(strstr(msg, "(ecc)"));
  assert_non_null(strstr(msg, "3 uncorrectable ECC errors"));
}

/* ---- tests ---- */

static void test_cordon_once_with_an_event(void **state)
{
  struct fixture f;
  const struct call *patch;
  json_t *want;

  (void)state;
  setup_with(&f, "");
  assert_true(f.cfg.kubernetes.gpu_unhealthy.action ==
              CFG_GPU_UNHEALTHY_CORDON);
  assert_int_equal(gpus_unhealthy(&f), 0);
  assert_true(fits_one_gpu(&f));
  assert_int_equal(report_failed(&f, GPU_NODE), 0);
  /* All 8 GPUs of the node are out at once, before the cluster answers. */
  assert_int_equal(gpus_unhealthy(&f), 8);
  assert_false(fits_one_gpu(&f));
  assert_int_equal(f.ncalls, 2);
  patch = find_call(&f, V_PATCH, KUBE_NODES);
  assert_non_null(patch);
  assert_string_equal(patch->name, GPU_NODE);
  assert_true(patch->patch_type == KUBE_PATCH_MERGE);
  want = json_pack("{s:{s:b}}", "spec", "unschedulable", 1);
  assert_true(json_equal(patch->obj, want));
  json_decref(want);
  assert_event(find_call(&f, V_CREATE, KUBE_EVENTS));
  answer(&f, 0, 200, NULL);
  answer(&f, 1, 201, NULL);
  /* A second report, before or after the watch shows the cordon: nothing
   * is sent again. */
  assert_int_equal(report_failed(&f, GPU_NODE), 1);
  feed_node(&f, KUBE_EVENT_MODIFIED, "node-gpu8-cordoned.json");
  assert_int_equal(report_failed(&f, GPU_NODE), 1);
  assert_int_equal(f.ncalls, 2);
  /* Other pods on the node change what it has: still out. */
  feed_node(&f, KUBE_EVENT_MODIFIED, "node-gpu8-cordoned.json");
  assert_false(fits_one_gpu(&f));
  /* The operator uncordons: the GPUs come back. */
  feed_node(&f, KUBE_EVENT_MODIFIED, "node-gpu8.json");
  assert_int_equal(gpus_unhealthy(&f), 0);
  assert_true(fits_one_gpu(&f));
  /* And a new failure marks it again. */
  assert_int_equal(report_failed(&f, GPU_NODE), 0);
  assert_int_equal(f.ncalls, 4);
  teardown_with(&f);
}

static void test_gpus_stay_out_until_the_cordon_was_seen(void **state)
{
  struct fixture f;

  (void)state;
  setup_with(&f, "");
  assert_int_equal(report_failed(&f, GPU_NODE), 0);
  /* An event from before the patch (not cordoned yet) brings nothing back. */
  feed_node(&f, KUBE_EVENT_MODIFIED, "node-gpu8.json");
  assert_int_equal(gpus_unhealthy(&f), 8);
  assert_false(fits_one_gpu(&f));
  /* A patch refused (RBAC) leaves them out too, and is only logged. */
  answer(&f, 0, 403, NULL);
  answer(&f, 1, 403, NULL);
  assert_int_equal(gpus_unhealthy(&f), 8);
  teardown_with(&f);
}

static void test_unknown_node_is_refused(void **state)
{
  struct fixture f;

  (void)state;
  setup_with(&f, "");
  assert_int_equal(report_failed(&f, "ip-10-9-9-9.ec2.internal"), -ENOENT);
  assert_int_equal(f.ncalls, 0);
  assert_int_equal(gpus_unhealthy(&f), 0);
  teardown_with(&f);
}

static void
test_taint_reads_the_node_then_patches_with_its_version(void **state)
{
  struct fixture f;
  json_t *node = fixture_json("node-gpu8.json"), *taints, *t;
  const struct call *c;

  (void)state;
  setup_with(&f,
             "    gpu_unhealthy:\n"
             "      action: taint\n"
             "      taint: {key: example.com/bad-gpu, effect: NoExecute}\n");
  assert_int_equal(report_failed(&f, GPU_NODE), 0);
  assert_int_equal(f.ncalls, 2);
  assert_true(f.calls[0].verb == V_GET && f.calls[0].kind == KUBE_NODES);
  assert_string_equal(f.calls[0].name, GPU_NODE);
  assert_event(find_call(&f, V_CREATE, KUBE_EVENTS));
  json_object_set_new(json_object_get(node, "metadata"), "resourceVersion",
                      json_string("41"));
  answer(&f, 0, 200, node);
  c = &f.calls[2];
  assert_true(c->verb == V_PATCH && c->patch_type == KUBE_PATCH_MERGE);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(c->obj, "metadata"),
                                        "resourceVersion")),
      "41");
  /* Taints are an atomic list: the old two stay, ours comes last. */
  taints = json_object_get(json_object_get(c->obj, "spec"), "taints");
  assert_int_equal(json_array_size(taints), 3);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(taints, 0), "key")),
      "nvidia.com/gpu");
  t = json_array_get(taints, 2);
  assert_string_equal(json_string_value(json_object_get(t, "key")),
                      "example.com/bad-gpu");
  assert_string_equal(json_string_value(json_object_get(t, "value")), "true");
  assert_string_equal(json_string_value(json_object_get(t, "effect")),
                      "NoExecute");
  /* Changed meanwhile: read again and patch again. */
  answer(&f, 2, 409, NULL);
  assert_int_equal(f.ncalls, 4);
  assert_true(f.calls[3].verb == V_GET);
  json_object_set_new(json_object_get(node, "metadata"), "resourceVersion",
                      json_string("42"));
  answer(&f, 3, 200, node);
  assert_int_equal(f.ncalls, 5);
  assert_string_equal(
      json_string_value(json_object_get(
          json_object_get(f.calls[4].obj, "metadata"), "resourceVersion")),
      "42");
  answer(&f, 4, 200, NULL);
  answer(&f, 1, 201, NULL);
  /* The watch shows the taint, then its removal: GPUs back. */
  json_array_append_new(
      json_object_get(json_object_get(node, "spec"), "taints"),
      json_pack("{s:s, s:s, s:s}", "key", "example.com/bad-gpu", "value",
                "true", "effect", "NoExecute"));
  backend_kube_node_event(f.b, KUBE_EVENT_MODIFIED, node);
  assert_int_equal(gpus_unhealthy(&f), 8);
  assert_int_equal(report_failed(&f, GPU_NODE), 1);
  feed_node(&f, KUBE_EVENT_MODIFIED, "node-gpu8.json");
  assert_int_equal(gpus_unhealthy(&f), 0);
  json_decref(node);
  teardown_with(&f);
}

static void test_taint_already_there_is_not_patched(void **state)
{
  struct fixture f;
  json_t *node = fixture_json("node-gpu8.json");

  (void)state;
  setup_with(&f, "    gpu_unhealthy: {action: taint}\n");
  json_array_append_new(
      json_object_get(json_object_get(node, "spec"), "taints"),
      json_pack("{s:s, s:s}", "key", "runfleet.dev/gpu-unhealthy", "effect",
                "NoSchedule"));
  assert_int_equal(report_failed(&f, GPU_NODE), 0);
  answer(&f, 0, 200, node);
  assert_int_equal(f.ncalls, 2);
  assert_null(find_call(&f, V_PATCH, KUBE_NODES));
  json_decref(node);
  teardown_with(&f);
}

static void test_taint_patch_of_a_node_without_taints(void **state)
{
  struct cfg_gpu_unhealthy g = {.action = CFG_GPU_UNHEALTHY_TAINT,
                                .taint_key = "runfleet.dev/gpu-unhealthy",
                                .taint_value = "true",
                                .taint_effect = "NoSchedule"};
  json_t *node = json_pack("{s:{s:s}, s:{}}", "metadata", "name", "n1", "spec");
  json_t *patch, *want;
  int already = 1;

  (void)state;
  patch = kube_health_taint_patch(&g, node, &already);
  assert_false(already);
  want = json_pack("{s:{s:[{s:s, s:s, s:s}]}}", "spec", "taints", "key",
                   "runfleet.dev/gpu-unhealthy", "value", "true", "effect",
                   "NoSchedule");
  assert_true(json_equal(patch, want));
  json_decref(want);
  json_decref(patch);
  json_decref(node);
}

static void test_action_none_only_posts_the_event(void **state)
{
  struct fixture f;
  const struct call *ev;

  (void)state;
  setup_with(&f, "    gpu_unhealthy: {action: none}\n");
  assert_int_equal(report_failed(&f, GPU_NODE), 0);
  assert_int_equal(f.ncalls, 1);
  ev = find_call(&f, V_CREATE, KUBE_EVENTS);
  assert_non_null(ev);
  assert_non_null(strstr(json_string_value(json_object_get(ev->obj, "message")),
                         "left the node as it is"));
  assert_int_equal(gpus_unhealthy(&f), 8);
  /* Nothing on the cluster to lift: out until restart. */
  feed_node(&f, KUBE_EVENT_MODIFIED, "node-gpu8.json");
  assert_int_equal(gpus_unhealthy(&f), 8);
  teardown_with(&f);
}

static void test_config_errors_name_file_and_line(void **state)
{
  static const struct {
    const char *gpu, *want;
  } bad[] = {
      {"    gpu_unhealthy: {action: drain}\n",
       "test.yaml:10: backend.kubernetes.gpu_unhealthy.action: 'drain' is not "
       "cordon, taint or none"},
      {"    gpu_unhealthy:\n      taint: {key: a}\n",
       "test.yaml:11: backend.kubernetes.gpu_unhealthy.taint: needs action: "
       "taint"},
      {"    gpu_unhealthy:\n      action: taint\n"
       "      taint: {effect: PreferNoSchedule}\n",
       "test.yaml:12: backend.kubernetes.gpu_unhealthy.taint.effect: "
       "'PreferNoSchedule' is not NoSchedule or NoExecute"},
      {"    gpu_unhealthy:\n      action: taint\n"
       "      taint: {key: -bad/x}\n",
       "test.yaml:12: backend.kubernetes.gpu_unhealthy.taint.key: '-bad/x' is "
       "not a taint key"},
      {"    gpu_unhealthy:\n      action: taint\n"
       "      taint: {key: a, value: \"no spaces\"}\n",
       "test.yaml:12: backend.kubernetes.gpu_unhealthy.taint.value: 'no "
       "spaces' is not a taint value"},
      {"    gpu_unhealthy: {action: cordon, drain: true}\n",
       "test.yaml:10: backend.kubernetes.gpu_unhealthy.drain: unknown key"},
  };
  struct config cfg;
  char errs[2048];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_true(parse_config(&cfg, bad[i].gpu, errs, sizeof(errs)) > 0);
    if (strstr(errs, bad[i].want) == NULL)
      fail_msg("case %zu: want '%s' in:\n%s", i, bad[i].want, errs);
  }
  assert_int_equal(parse_config(&cfg,
                                "    gpu_unhealthy:\n      action: taint\n"
                                "      taint: {key: example.com/gpu-bad, "
                                "value: broken, effect: NoExecute}\n",
                                errs, sizeof(errs)),
                   0);
  assert_true(cfg.kubernetes.gpu_unhealthy.action == CFG_GPU_UNHEALTHY_TAINT);
  assert_string_equal(cfg.kubernetes.gpu_unhealthy.taint_key,
                      "example.com/gpu-bad");
  assert_string_equal(cfg.kubernetes.gpu_unhealthy.taint_value, "broken");
  assert_string_equal(cfg.kubernetes.gpu_unhealthy.taint_effect, "NoExecute");
  cfg_free(&cfg);
  assert_int_equal(parse_config(&cfg, "", errs, sizeof(errs)), 0);
  assert_true(cfg.kubernetes.gpu_unhealthy.action == CFG_GPU_UNHEALTHY_CORDON);
  assert_string_equal(cfg.kubernetes.gpu_unhealthy.taint_key,
                      "runfleet.dev/gpu-unhealthy");
  assert_string_equal(cfg.kubernetes.gpu_unhealthy.taint_effect, "NoSchedule");
  cfg_free(&cfg);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cordon_once_with_an_event),
      cmocka_unit_test(test_gpus_stay_out_until_the_cordon_was_seen),
      cmocka_unit_test(test_unknown_node_is_refused),
      cmocka_unit_test(test_taint_reads_the_node_then_patches_with_its_version),
      cmocka_unit_test(test_taint_already_there_is_not_patched),
      cmocka_unit_test(test_taint_patch_of_a_node_without_taints),
      cmocka_unit_test(test_action_none_only_posts_the_event),
      cmocka_unit_test(test_config_errors_name_file_and_line),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
