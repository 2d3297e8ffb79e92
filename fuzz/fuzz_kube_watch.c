/* The Kubernetes watch stream parser and the decoders of what it yields on
 * arbitrary streams. Byte 0 picks the size limit of one event (64 bytes
 * << 0..15), byte 1 seeds how the rest is cut into chunks; the same
 * stream fed whole must give the same events and the same answer, as a
 * stream is cut wherever the network cuts it. Each event of the whole
 * feed also goes to the decoders the backend runs on watch events: Status
 * (ERROR), Node and Pod into capacity (kube_nodes), a pod's exit code and
 * waiting reason (kube_pod). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capacity.h"
#include "config.h"
#include "kube.h"
#include "kube_nodes.h"
#include "kube_pod.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A Kubernetes backend's config with CPU and GPU pools, so that node and
 * pod events meet node selectors, tolerations and GPU requests. */
static const char config_text[] =
    "github:\n"
    "  pat_file: %s/pat\n"
    "  webhook_secret_file: %s/secret\n"
    "  org: acme\n"
    "backend:\n"
    "  type: kubernetes\n"
    "  kubernetes: {namespace: ci-runners}\n"
    "pools:\n"
    "  - name: cpu\n"
    "    labels: [linux, cpu]\n"
    "    max_runners: 10\n"
    "    resources: {cpus: 2, memory: 4Gi}\n"
    "    runner: {image: reg.example/runner:1}\n"
    "    node_selector: {runfleet.dev/node-group: cpu}\n"
    "  - name: gpu-8\n"
    "    labels: [linux, gpu-8]\n"
    "    max_runners: 2\n"
    "    resources: {cpus: 96, memory: 1000Gi, gpus: 8}\n"
    "    runner: {image: reg.example/runner-gpu:1}\n"
    "    node_selector: {runfleet.dev/node-group: gpu-a100}\n"
    "    tolerations:\n"
    "      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n";

static struct config cfg;
static int have_cfg;

static void write_file(const char *dir, const char *name, const char *text)
{
  char path[256];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "w");
  if (f == NULL)
    abort();
  fputs(text, f);
  fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  static char dir[] = "/tmp/rf-fuzz-kube-XXXXXX";
  char text[sizeof(config_text) + 512], errs[2048];
  int n;

  (void)argc;
  (void)argv;
  log_setup(LOG_ERROR, 0);
  if (mkdtemp(dir) == NULL)
    abort();
  write_file(dir, "pat", "ghp_fuzz\n");
  write_file(dir, "secret", "fuzz-secret\n");
  n = snprintf(text, sizeof(text), config_text, dir, dir);
  if (n < 0 || (size_t)n >= sizeof(text) ||
      cfg_parse(&cfg, "fuzz.yaml", text, (size_t)n, errs, sizeof(errs)) != 0) {
    fprintf(stderr, "fuzz_kube_watch: config: %s\n", errs);
    abort();
  }
  have_cfg = 1;
  return 0;
}

struct tally {
  unsigned events;
  unsigned long sum;     /* of the types, in order: a cheap fingerprint */
  struct kube_nodes *kn; /* the whole feed's: decode each event */
};

/* What the backend does with an event's object. */
static void decode(struct kube_nodes *kn, enum kube_event_type type,
                   json_t *obj)
{
  char reason[128], message[256];
  const char *phase = json_string_value(
      json_object_get(json_object_get(obj, "status"), "phase"));

  (void)kube_nodes_node_event(kn, type, obj);
  (void)kube_nodes_pod_event(kn, type, obj);
  (void)kube_pod_exit_code(obj, phase != NULL ? phase : "Failed");
  kube_pod_waiting(obj, reason, sizeof(reason), message, sizeof(message));
  if (strlen(reason) >= sizeof(reason) || strlen(message) >= sizeof(message))
    abort();
  (void)kube_reason_is_image_pull(reason);
}

static int event_cb(void *arg, enum kube_event_type type, json_t *obj)
{
  struct tally *t = arg;
  const char *reason, *message;
  long code;

  if (!json_is_object(obj) || (unsigned)type > KUBE_EVENT_ERROR)
    abort();
  if (type == KUBE_EVENT_ERROR) {
    kube_status_fields(obj, &reason, &message, &code);
    if (reason == NULL || message == NULL)
      abort();
  } else if (t->kn != NULL)
    decode(t->kn, type, obj);
  t->events++;
  t->sum = t->sum * 5 + (unsigned long)type + 1;
  return 0;
}

static int feed_chunked(const char *s, size_t len, size_t max, uint32_t seed,
                        struct tally *t)
{
  struct kube_watch_parser p;
  size_t off = 0, n;
  int rc = 0;

  kube_watch_parser_init(&p, max);
  while (off < len && rc == 0) {
    seed = seed * 1103515245u + 12345u;
    n = 1 + (seed >> 16) % 97;
    if (n > len - off)
      n = len - off;
    rc = kube_watch_parser_feed(&p, s + off, n, event_cb, t);
    off += n;
  }
  if (rc == 0)
    rc = kube_watch_parser_finish(&p);
  kube_watch_parser_free(&p);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct kube_watch_parser p;
  struct tally whole = {0}, cut = {0};
  struct capacity *cap;
  const char *s;
  size_t len, max;
  int rc_whole, rc_cut;

  if (size < 2)
    return 0;
  max = (size_t)64 << (data[0] & 15);
  s = (const char *)data + 2;
  len = size - 2;
  cap = capacity_new();
  if (cap == NULL || !have_cfg)
    abort();
  whole.kn = kube_nodes_new(&cfg, cap, "rf-fuzz");
  if (whole.kn == NULL)
    abort();
  kube_watch_parser_init(&p, max);
  rc_whole = kube_watch_parser_feed(&p, s, len, event_cb, &whole);
  if (rc_whole == 0)
    rc_whole = kube_watch_parser_finish(&p);
  kube_watch_parser_free(&p);
  kube_nodes_destroy(whole.kn);
  capacity_destroy(cap);
  rc_cut = feed_chunked(s, len, max, data[1], &cut);
  if (rc_whole != rc_cut || whole.events != cut.events || whole.sum != cut.sum)
    abort();
  return 0;
}
