/* Configuration parsing and validation: values, defaults, and each rule's
 * message with the exact line it points at. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define EXAMPLE "manager/examples/local.yaml"
#define ERRS_SIZE 8192

/* A temporary directory with the files a config names: @D in test YAML
 * stands for it. */
static char dir[64];
static char errs[ERRS_SIZE];

static void write_file(const char *name, const char *text)
{
  char path[256];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static void remove_file(const char *name)
{
  char path[256];

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  unlink(path);
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_config.XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  write_file("app.pem", "-----BEGIN RSA PRIVATE KEY-----\n");
  write_file("secret", "s3cret\n");
  write_file("pat", "ghp_x\n");
  return 0;
}

static int group_teardown(void **state)
{
  char path[256];

  (void)state;
  remove_file("app.pem");
  remove_file("secret");
  remove_file("pat");
  remove_file("unreadable");
  remove_file("local.yaml");
  snprintf(path, sizeof(path), "%s/adir", dir);
  rmdir(path);
  return rmdir(dir);
}

/* Replaces every @D in in by the temporary directory. */
static char *subst(const char *in)
{
  static char out[16384];
  size_t pos = 0, dlen = strlen(dir);

  for (; *in != '\0'; in++) {
    assert_true(pos + dlen + 1 < sizeof(out));
    if (in[0] == '@' && in[1] == 'D') {
      memcpy(out + pos, dir, dlen);
      pos += dlen;
      in++;
    } else {
      out[pos++] = *in;
    }
  }
  out[pos] = '\0';
  return out;
}

static int parse(struct config *cfg, const char *yaml)
{
  const char *text = subst(yaml);

  return cfg_parse(cfg, "t.yaml", text, strlen(text), errs, sizeof(errs));
}

/* True if errs holds line as one whole line. */
static int has_line(const char *line)
{
  size_t n = strlen(line);
  const char *at = errs;

  while ((at = strstr(at, line)) != NULL) {
    if ((at == errs || at[-1] == '\n') && at[n] == '\n')
      return 1;
    at++;
  }
  return 0;
}

static void expect_line(const char *line)
{
  if (!has_line(line))
    fail_msg("missing \"%s\" in:\n%s", line, errs);
}

/* Parses yaml expecting exactly n problems, the listed lines among them,
 * and a freed, zeroed cfg. */
static void expect_errors(const char *yaml, int n, ...)
{
  static const struct config zero;
  struct config cfg;
  const char *line;
  va_list ap;
  int rc = parse(&cfg, yaml);

  if (rc != n)
    fail_msg("expected %d problems, got %d:\n%s", n, rc, errs);
  assert_memory_equal(&cfg, &zero, sizeof(cfg));
  va_start(ap, n);
  while ((line = va_arg(ap, const char *)) != NULL)
    expect_line(line);
  va_end(ap);
}

static void expect_ok(const char *yaml, struct config *cfg)
{
  int rc = parse(cfg, yaml);

  if (rc != 0)
    fail_msg("expected no problems, got %d:\n%s", rc, errs);
  assert_string_equal(errs, "");
}

/* Lines 1-4: valid github section. */
#define GITHUB                                                                 \
  "github:\n"                                                                  \
  "  pat_file: @D/pat\n"                                                       \
  "  webhook_secret_file: @D/secret\n"                                         \
  "  org: acme\n"

/* Lines 5-9 after GITHUB: one valid local pool. */
#define POOLS                                                                  \
  "pools:\n"                                                                   \
  "  - name: cpu\n"                                                            \
  "    labels: [linux]\n"                                                      \
  "    max_runners: 2\n"                                                       \
  "    runner: {command: /bin/run.sh}\n"

/* pools[].kubernetes: defaults, values and every problem with its line. */
static void test_pool_kubernetes(void **state)
{
  struct config cfg;
  const struct cfg_pool *p;

  (void)state;
  expect_ok(GITHUB "backend: {type: kubernetes}\n"
                   "pools:\n"
                   "  - name: gpu\n"
                   "    labels: [gpu]\n"
                   "    max_runners: 1\n"
                   "    runner: {image: r/x:1}\n"
                   "    kubernetes: {shm_size: 8Gi, docker: dind,\n"
                   "      entrypoint: /opt/run.sh, service_account: ci-sa,\n"
                   "      priority_class: runfleet-runner-idle,\n"
                   "      cache_host_path: none, dind_image: d/i:1,\n"
                   "      pending_timeout: 90s, image_pull_failures: 5,\n"
                   "      run_as_user: 2000}\n"
                   "  - name: cpu\n"
                   "    labels: [cpu]\n"
                   "    max_runners: 1\n"
                   "    runner: {image: r/x:1}\n"
                   "  - name: small\n"
                   "    labels: [small]\n"
                   "    max_runners: 1\n"
                   "    resources: {memory: 512Mi}\n"
                   "    runner: {image: r/x:1}\n",
            &cfg);
  p = &cfg.pools[0];
  assert_int_equal(p->kube.shm_bytes, 8ULL << 30);
  assert_int_equal(p->kube.dind, 1);
  assert_string_equal(p->kube.entrypoint, "/opt/run.sh");
  assert_string_equal(p->kube.service_account, "ci-sa");
  assert_string_equal(p->kube.priority_class, "runfleet-runner-idle");
  assert_null(p->kube.cache_host_path);
  assert_string_equal(p->kube.dind_image, "d/i:1");
  assert_int_equal(p->kube.pending_timeout_ms, 90000);
  assert_int_equal(p->kube.image_pull_failures, 5);
  assert_int_equal(p->kube.run_as_user, 2000);
  p = &cfg.pools[1];
  assert_int_equal(p->kube.shm_bytes, CFG_DEFAULT_POOL_SHM_BYTES);
  assert_int_equal(p->kube.dind, 0);
  assert_string_equal(p->kube.entrypoint, CFG_DEFAULT_POOL_RUNNER_ENTRYPOINT);
  assert_string_equal(p->kube.cache_host_path,
                      CFG_DEFAULT_POOL_CACHE_HOST_PATH);
  assert_string_equal(p->kube.dind_image, CFG_DEFAULT_POOL_DIND_IMAGE);
  assert_int_equal(p->kube.run_as_user, CFG_DEFAULT_POOL_RUN_AS_USER);
  p = &cfg.pools[2];
  assert_int_equal(p->kube.shm_bytes, 256ULL << 20); /* half of 512Mi */
  cfg_free(&cfg);

  expect_errors(
      GITHUB "backend: {type: kubernetes}\n"
             "pools:\n"
             "  - name: gpu\n"
             "    labels: [gpu]\n"
             "    max_runners: 1\n"
             "    resources: {memory: 1Gi}\n"
             "    runner: {image: r/x:1}\n"
             "    kubernetes:\n"
             "      shm_size: 2Gi\n"
             "      docker: podman\n"
             "      entrypoint: run.sh\n"
             "      service_account: Bad_Name\n"
             "      run_as_user: 0\n"
             "      pending_timeout: 1s\n"
             "      cache_host_path: var/cache\n",
      7,
      "t.yaml:13: pools[0].kubernetes.shm_size: larger than "
      "resources.memory (a memory-backed /dev/shm counts against the pod's "
      "memory limit)",
      "t.yaml:14: pools[0].kubernetes.docker: 'podman' is not one of none, "
      "dind",
      "t.yaml:15: pools[0].kubernetes.entrypoint: 'run.sh' is not an "
      "absolute path",
      "t.yaml:16: pools[0].kubernetes.service_account: 'Bad_Name' is not a "
      "Kubernetes object name",
      "t.yaml:17: pools[0].kubernetes.run_as_user: 0 is out of range (1 to "
      "2147483647)",
      "t.yaml:19: pools[0].kubernetes.cache_host_path: 'var/cache' is not an "
      "absolute path",
      NULL);
  expect_errors(GITHUB "pools:\n"
                       "  - name: cpu\n"
                       "    labels: [linux]\n"
                       "    max_runners: 2\n"
                       "    runner: {command: /bin/run.sh}\n"
                       "    kubernetes: {colour: blue}\n",
                1, NULL);
}

static char *read_example(void)
{
  static char text[16384];
  char buf[16384];
  FILE *f = fopen(EXAMPLE, "r");
  size_t n, pos = 0;
  const char *in;

  assert_non_null(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  assert_int_equal(fclose(f), 0);
  buf[n] = '\0';
  /* The example names files under /etc/runfleet; point them at @D. */
  for (in = buf; *in != '\0';) {
    if (strncmp(in, "/etc/runfleet", 13) == 0) {
      memcpy(text + pos, "@D", 2);
      pos += 2;
      in += 13;
    } else {
      text[pos++] = *in++;
    }
  }
  text[pos] = '\0';
  return text;
}

static void test_example(void **state)
{
  struct config cfg;
  const struct cfg_pool *p;
  char path[128];

  (void)state;
  write_file("webhook-secret", "s\n");
  write_file("local.yaml", subst(read_example()));
  snprintf(path, sizeof(path), "%s/local.yaml", dir);
  if (cfg_load(&cfg, path, errs, sizeof(errs)) != 0)
    fail_msg("%s", errs);
  remove_file("webhook-secret");
  assert_string_equal(cfg.path, path);
  assert_string_equal(cfg.listen, "127.0.0.1:8080");
  assert_string_equal(cfg.state_dir, "/var/lib/runfleet");
  assert_int_equal(cfg.log_level, CFG_LOG_INFO);
  assert_int_equal(cfg.log_format, CFG_LOG_LOGFMT);
  assert_string_equal(cfg.github.api_url, "https://api.github.com");
  assert_int_equal(cfg.github.app_id, 12345);
  assert_int_equal(cfg.github.installation_id, 678);
  assert_null(cfg.github.pat_file);
  assert_string_equal(cfg.github.org, "acme");
  assert_null(cfg.github.repo);
  assert_int_equal(cfg.backend, CFG_BACKEND_LOCAL);
  assert_int_equal(cfg.local.gpus_auto, 1);
  assert_int_equal(cfg.local.cpu_slots, 16);
  assert_string_equal(cfg.local.hook_started, "/opt/runfleet/hooks/pre-job.sh");
  assert_int_equal(cfg.runner_start_timeout_ms, 600000);
  assert_int_equal(cfg.reconcile_interval_ms, 1000);
  assert_int_equal(cfg.recovery.interval_ms, 300000);
  assert_int_equal(cfg.recovery.nrepositories, 1);
  assert_int_equal(cfg.npools, 3);
  p = cfg_pool_find(&cfg, "gpu-2");
  assert_ptr_equal(p, &cfg.pools[2]);
  assert_int_equal(p->gpus, 2);
  assert_int_equal(p->cpus, 8);
  assert_int_equal(p->memory_bytes, 32ULL << 30);
  assert_int_equal(p->priority, 10);
  assert_int_equal(p->nlabels, 5);
  assert_string_equal(p->labels[0], "self-hosted");
  assert_string_equal(p->labels[3], "gpu");
  assert_string_equal(p->labels[4], "gpu-2");
  assert_string_equal(p->runner_command, "/opt/actions-runner/run.sh");
  assert_null(p->runner_image);
  assert_int_equal(cfg_pool_find(&cfg, "gpu-1")->gpus, 1);
  assert_int_equal(cfg.pools[0].min_idle, 1);
  assert_int_equal(cfg.pools[0].idle_timeout_ms, 300000);
  assert_null(cfg_pool_find(&cfg, "gpu-3"));
  assert_null(cfg_pool_find(&cfg, NULL));
  cfg_free(&cfg);
}

static void test_defaults(void **state)
{
  struct config cfg;
  const struct cfg_pool *p;

  (void)state;
  expect_ok(GITHUB POOLS, &cfg);
  assert_string_equal(cfg.path, "t.yaml");
  assert_string_equal(cfg.listen, CFG_DEFAULT_LISTEN);
  assert_string_equal(cfg.state_dir, CFG_DEFAULT_STATE_DIR);
  assert_int_equal(cfg.log_level, CFG_DEFAULT_LOG_LEVEL);
  assert_int_equal(cfg.log_format, CFG_DEFAULT_LOG_FORMAT);
  assert_int_equal(cfg.limits.max_header_bytes, 16384);
  assert_int_equal(cfg.limits.max_body_bytes, 26214400);
  assert_int_equal(cfg.limits.max_connections, 1024);
  assert_int_equal(cfg.limits.read_timeout_ms, 10000);
  assert_int_equal(cfg.limits.idle_timeout_ms, 60000);
  assert_string_equal(cfg.github.api_url, "https://api.github.com");
  assert_int_equal(cfg.github.app_id, 0);
  assert_null(cfg.github.app_private_key_file);
  assert_non_null(strstr(cfg.github.pat_file, "/pat"));
  assert_int_equal(cfg.github.runner_group_id, 1);
  assert_int_equal(cfg.github.mutations_per_minute, 75);
  assert_int_equal(cfg.backend, CFG_BACKEND_LOCAL);
  assert_string_equal(cfg.local.work_root, CFG_DEFAULT_WORK_ROOT);
  assert_int_equal(cfg.local.gpus_auto, 1);
  assert_int_equal(cfg.local.cpu_slots, sysconf(_SC_NPROCESSORS_ONLN));
  assert_null(cfg.local.hook_started);
  assert_string_equal(cfg.kubernetes.namespace_, "runfleet-runners");
  assert_int_equal(cfg.kubernetes.leader_election, 1);
  assert_string_equal(cfg.kubernetes.lease_name, "runfleetd");
  assert_null(cfg.kubernetes.kubeconfig);
  assert_null(cfg.kubernetes.context);
  assert_string_equal(cfg.kubernetes.service_account_dir,
                      "/var/run/secrets/kubernetes.io/serviceaccount");
  assert_int_equal(cfg.kubernetes.qps, 20);
  assert_int_equal(cfg.kubernetes.burst, 40);
  assert_int_equal(cfg.kubernetes.max_event_bytes, 2u << 20);
  assert_int_equal(cfg.kubernetes.request_timeout_ms, 30000);
  assert_int_equal(cfg.kubernetes.watch_timeout_ms, 300000);
  assert_int_equal(cfg.runner_start_timeout_ms, 600000);
  assert_int_equal(cfg.reconcile_interval_ms, 1000);
  p = &cfg.pools[0];
  assert_int_equal(p->line, 6);
  assert_int_equal(p->min_idle, 0);
  assert_int_equal(p->idle_timeout_ms, 300000);
  assert_int_equal(p->priority, 0);
  assert_int_equal(p->cpus, 1);
  assert_int_equal(p->memory_bytes, 0);
  assert_int_equal(p->gpus, 0);
  assert_int_equal(p->nnode_selector, 0);
  assert_int_equal(p->ntolerations, 0);
  cfg_free(&cfg);
}

static void test_kubernetes_client(void **state)
{
  struct config cfg;
  char absent[256], line[512];
  FILE *kc;

  (void)state;
  snprintf(absent, sizeof(absent), "%s/kubeconfig", dir);
  kc = fopen(absent, "w");
  assert_non_null(kc);
  fputs("clusters: [{name: c, cluster: {server: 'https://k:6443'}}]\n"
        "contexts: [{name: prod, context: {cluster: c}}]\n",
        kc);
  fclose(kc);
  expect_ok(GITHUB
            "backend:\n"
            "  kubernetes: {kubeconfig: @D/kubeconfig, context: prod, qps: 0,\n"
            "    burst: 5, max_event_size: 1Mi, request_timeout: 10s,\n"
            "    watch_timeout: 1m}\n" POOLS,
            &cfg);
  assert_non_null(strstr(cfg.kubernetes.kubeconfig, "/kubeconfig"));
  assert_string_equal(cfg.kubernetes.context, "prod");
  assert_int_equal(cfg.kubernetes.qps, 0);
  assert_int_equal(cfg.kubernetes.burst, 5);
  assert_int_equal(cfg.kubernetes.max_event_bytes, 1u << 20);
  assert_int_equal(cfg.kubernetes.request_timeout_ms, 10000);
  assert_int_equal(cfg.kubernetes.watch_timeout_ms, 60000);
  cfg_free(&cfg);
  expect_ok(GITHUB "backend:\n"
                   "  kubernetes: {service_account_dir: /sa}\n" POOLS,
            &cfg);
  assert_string_equal(cfg.kubernetes.service_account_dir, "/sa");
  assert_null(cfg.kubernetes.kubeconfig);
  cfg_free(&cfg);
  expect_errors(GITHUB "backend:\n"
                       "  kubernetes:\n"
                       "    context: prod\n"
                       "    qps: 20000\n"
                       "    burst: 0\n"
                       "    max_event_size: 1k\n"
                       "    watch_timeout: 1s\n"
                       "    request_timeout: soon\n" POOLS,
                6,
                "t.yaml:7: backend.kubernetes.context: needs "
                "backend.kubernetes.kubeconfig",
                "t.yaml:8: backend.kubernetes.qps: 20000 is out of range (0 "
                "to 10000)",
                "t.yaml:9: backend.kubernetes.burst: 0 is out of range (1 to "
                "100000)",
                "t.yaml:10: backend.kubernetes.max_event_size: 1k is out of "
                "range (65536 to 67108864 bytes)",
                "t.yaml:11: backend.kubernetes.watch_timeout: 1s is out of "
                "range (10000ms to 3600000ms)",
                "t.yaml:12: backend.kubernetes.request_timeout: 'soon' is not "
                "a duration (like 250ms, 30s, 5m, 1h or a number of seconds)",
                NULL);
  snprintf(line, sizeof(line),
           "t.yaml:6: backend.kubernetes.kubeconfig: context 'staging' not "
           "found");
  expect_errors(GITHUB "backend:\n"
                       "  kubernetes: {kubeconfig: @D/kubeconfig, context: "
                       "staging}\n" POOLS,
                1, line, NULL);
  snprintf(absent, sizeof(absent),
           "t.yaml:7: backend.kubernetes.kubeconfig: %s/absent: No such file "
           "or directory",
           dir);
  expect_errors(GITHUB "backend:\n"
                       "  kubernetes:\n"
                       "    kubeconfig: @D/absent\n"
                       "    service_account_dir: /sa\n" POOLS,
                2, absent,
                "t.yaml:8: backend.kubernetes.service_account_dir: not with "
                "backend.kubernetes.kubeconfig (in-cluster only)",
                NULL);
}

static void test_full_values(void **state)
{
  struct config cfg;
  const struct cfg_pool *p;

  (void)state;
  expect_ok("listen: '[::1]:9000'\n"
            "log: {level: debug, format: json}\n"
            "limits: {max_header_bytes: 8Ki, max_body_bytes: 1048576,\n"
            "         max_connections: 10, read_timeout: 250ms,\n"
            "         idle_timeout: 2m}\n"
            "github:\n"
            "  api_url: https://ghe.example.com/api/v3//\n"
            "  app: {id: 1, private_key_file: @D/app.pem, "
            "installation_id: 9007199254740993}\n"
            "  webhook_secret_file: @D/secret\n"
            "  repo: acme/widgets.js\n"
            "  runner_group_id: 7\n"
            "  mutations_per_minute: 60\n"
            "backend:\n"
            "  type: kubernetes\n"
            "  kubernetes: {namespace: ci, leader_election: false, "
            "lease_name: rf.lease}\n"
            "runner_start_timeout: 1h30m\n"
            "reconcile_interval: 500ms\n"
            "pools:\n"
            "  - name: gpu-t4\n"
            "    labels: [GPU, T4, linux]\n"
            "    max_runners: 16\n"
            "    priority: -5\n"
            "    resources: {cpus: 8, memory: 512Mi, gpus: 1}\n"
            "    runner: {command: /x, image: reg/runner:1}\n"
            "    node_selector: {runfleet.dev/pool: gpu-t4, zone: a}\n"
            "    tolerations:\n"
            "      - {key: nvidia.com/gpu, operator: Exists, "
            "effect: NoSchedule}\n"
            "      - {key: dedicated, value: ci}\n",
            &cfg);
  assert_string_equal(cfg.listen, "[::1]:9000");
  assert_int_equal(cfg.log_level, CFG_LOG_DEBUG);
  assert_int_equal(cfg.log_format, CFG_LOG_JSON);
  assert_int_equal(cfg.limits.max_header_bytes, 8192);
  assert_int_equal(cfg.limits.max_body_bytes, 1048576);
  assert_int_equal(cfg.limits.max_connections, 10);
  assert_int_equal(cfg.limits.read_timeout_ms, 250);
  assert_int_equal(cfg.limits.idle_timeout_ms, 120000);
  assert_string_equal(cfg.github.api_url, "https://ghe.example.com/api/v3");
  assert_int_equal(cfg.github.installation_id, 9007199254740993LL);
  assert_string_equal(cfg.github.repo, "acme/widgets.js");
  assert_null(cfg.github.org);
  assert_int_equal(cfg.github.runner_group_id, 7);
  assert_int_equal(cfg.github.mutations_per_minute, 60);
  assert_int_equal(cfg.backend, CFG_BACKEND_KUBERNETES);
  assert_string_equal(cfg.kubernetes.namespace_, "ci");
  assert_int_equal(cfg.kubernetes.leader_election, 0);
  assert_string_equal(cfg.kubernetes.lease_name, "rf.lease");
  assert_int_equal(cfg.runner_start_timeout_ms, 5400000);
  assert_int_equal(cfg.reconcile_interval_ms, 500);
  p = &cfg.pools[0];
  assert_int_equal(p->line, 19);
  assert_int_equal(p->priority, -5);
  assert_int_equal(p->memory_bytes, 512ULL << 20);
  /* Only the active backend's way to start a runner is kept. */
  assert_null(p->runner_command);
  assert_string_equal(p->runner_image, "reg/runner:1");
  assert_int_equal(p->nnode_selector, 2);
  assert_string_equal(p->node_selector[0].key, "runfleet.dev/pool");
  assert_string_equal(p->node_selector[0].value, "gpu-t4");
  assert_string_equal(p->node_selector[1].key, "zone");
  assert_int_equal(p->ntolerations, 2);
  assert_string_equal(p->tolerations[0].operator_, "Exists");
  assert_null(p->tolerations[0].value);
  assert_string_equal(p->tolerations[0].effect, "NoSchedule");
  assert_string_equal(p->tolerations[1].operator_, "Equal");
  assert_string_equal(p->tolerations[1].value, "ci");
  assert_null(p->tolerations[1].effect);
  cfg_free(&cfg);
}

static void test_durations(void **state)
{
  uint64_t ms = 0;

  (void)state;
  assert_int_equal(cfg_parse_duration("300s", &ms), 0);
  assert_int_equal(ms, 300000);
  assert_int_equal(cfg_parse_duration("5m", &ms), 0);
  assert_int_equal(ms, 300000);
  assert_int_equal(cfg_parse_duration("1h", &ms), 0);
  assert_int_equal(ms, 3600000);
  assert_int_equal(cfg_parse_duration("250ms", &ms), 0);
  assert_int_equal(ms, 250);
  assert_int_equal(cfg_parse_duration("42", &ms), 0);
  assert_int_equal(ms, 42000);
  assert_int_equal(cfg_parse_duration("0", &ms), 0);
  assert_int_equal(ms, 0);
  assert_int_equal(cfg_parse_duration("1h2m3s4ms", &ms), 0);
  assert_int_equal(ms, 3723004);
  ms = 7;
  assert_int_equal(cfg_parse_duration("", &ms), -1);
  assert_int_equal(cfg_parse_duration("s", &ms), -1);
  assert_int_equal(cfg_parse_duration("10x", &ms), -1);
  assert_int_equal(cfg_parse_duration("10 s", &ms), -1);
  assert_int_equal(cfg_parse_duration("1.5h", &ms), -1);
  assert_int_equal(cfg_parse_duration("-5s", &ms), -1);
  assert_int_equal(cfg_parse_duration("5s ", &ms), -1);
  assert_int_equal(cfg_parse_duration("5d", &ms), -1);
  assert_int_equal(cfg_parse_duration("18446744073709551615s", &ms), -1);
  assert_int_equal(cfg_parse_duration("99999999999999999999", &ms), -1);
  assert_int_equal(cfg_parse_duration("18446744073709552", &ms), -1);
  assert_int_equal(ms, 7);
}

static void test_sizes(void **state)
{
  uint64_t b = 0;

  (void)state;
  assert_int_equal(cfg_parse_size("4Gi", &b), 0);
  assert_int_equal(b, 4ULL << 30);
  assert_int_equal(cfg_parse_size("512Mi", &b), 0);
  assert_int_equal(b, 512ULL << 20);
  assert_int_equal(cfg_parse_size("1G", &b), 0);
  assert_int_equal(b, 1000000000ULL);
  assert_int_equal(cfg_parse_size("100k", &b), 0);
  assert_int_equal(b, 100000);
  assert_int_equal(cfg_parse_size("16384", &b), 0);
  assert_int_equal(b, 16384);
  assert_int_equal(cfg_parse_size("15Ei", &b), 0);
  assert_int_equal(b, 15ULL << 60);
  b = 3;
  assert_int_equal(cfg_parse_size("16Ei", &b), -1);
  assert_int_equal(cfg_parse_size("", &b), -1);
  assert_int_equal(cfg_parse_size("Gi", &b), -1);
  assert_int_equal(cfg_parse_size("4GiB", &b), -1);
  assert_int_equal(cfg_parse_size("4gi", &b), -1);
  assert_int_equal(cfg_parse_size("1.5Gi", &b), -1);
  assert_int_equal(cfg_parse_size("-1", &b), -1);
  assert_int_equal(cfg_parse_size("4 Gi", &b), -1);
  assert_int_equal(cfg_parse_size("18446744073709551616", &b), -1);
  assert_int_equal(b, 3);
}

static void test_integers(void **state)
{
  int64_t v = 0;

  (void)state;
  assert_int_equal(cfg_parse_int("0", &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(cfg_parse_int("-17", &v), 0);
  assert_int_equal(v, -17);
  assert_int_equal(cfg_parse_int("+17", &v), 0);
  assert_int_equal(v, 17);
  assert_int_equal(cfg_parse_int("9223372036854775807", &v), 0);
  assert_int_equal(v, INT64_MAX);
  assert_int_equal(cfg_parse_int("-9223372036854775808", &v), 0);
  assert_true(v == INT64_MIN);
  v = 5;
  assert_int_equal(cfg_parse_int("9223372036854775808", &v), -2);
  assert_int_equal(cfg_parse_int("-9223372036854775809", &v), -2);
  assert_int_equal(cfg_parse_int("12abc", &v), -1);
  assert_int_equal(cfg_parse_int("12 ", &v), -1);
  assert_int_equal(cfg_parse_int(" 12", &v), -1);
  assert_int_equal(cfg_parse_int("0x10", &v), -1);
  assert_int_equal(cfg_parse_int("1e3", &v), -1);
  assert_int_equal(cfg_parse_int("1.0", &v), -1);
  assert_int_equal(cfg_parse_int("-", &v), -1);
  assert_int_equal(cfg_parse_int("", &v), -1);
  assert_int_equal(v, 5);
}

static void test_listen_syntax(void **state)
{
  (void)state;
  assert_int_equal(cfg_check_listen("127.0.0.1:8080"), 0);
  assert_int_equal(cfg_check_listen("[::1]:8080"), 0);
  assert_int_equal(cfg_check_listen("0.0.0.0:1"), 0);
  assert_int_equal(cfg_check_listen("localhost:65535"), 0);
  assert_int_equal(cfg_check_listen("127.0.0.1"), -1);
  assert_int_equal(cfg_check_listen(":8080"), -1);
  assert_int_equal(cfg_check_listen("::1:8080"), -1);
  assert_int_equal(cfg_check_listen("[::1]8080"), -1);
  assert_int_equal(cfg_check_listen("[]:8080"), -1);
  assert_int_equal(cfg_check_listen("host:0"), -1);
  assert_int_equal(cfg_check_listen("host:65536"), -1);
  assert_int_equal(cfg_check_listen("host:+80"), -1);
  assert_int_equal(cfg_check_listen("host:80x"), -1);
  assert_int_equal(cfg_check_listen("ho st:80"), -1);
}

#define HASH_A                                                                 \
  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define HASH_B                                                                 \
  "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752"

static void test_admin_listener_and_tokens(void **state)
{
  struct config cfg;

  (void)state;
  expect_ok(GITHUB POOLS, &cfg);
  assert_string_equal(cfg.admin_listen, CFG_DEFAULT_ADMIN_LISTEN);
  assert_int_equal(cfg.admin.auth, CFG_ADMIN_AUTH_MUTATIONS);
  assert_int_equal(cfg.admin.ntokens, 0);
  assert_int_equal(cfg.limits.header_timeout_ms, 5000);
  assert_int_equal(cfg.limits.max_connections_per_peer, 128);
  assert_int_equal(cfg.limits.max_failures_per_minute, 30);
  cfg_free(&cfg);

  write_file("tokens", "# who  sha256\n"
                       "\n"
                       "ci " HASH_B "  # the CI bot\n");
  expect_ok("listen: 0.0.0.0:8080\n"
            "admin_listen: 127.0.0.1:9091\n"
            "admin_url: http://runfleetd-admin.runfleet-system.svc:9090\n"
            "admin:\n"
            "  auth: all\n"
            "  tokens: [{name: ops, sha256: " HASH_A "}]\n"
            "  tokens_file: @D/tokens\n"
            "limits: {header_timeout: 2s, max_connections_per_peer: 0,\n"
            "         max_failures_per_minute: 5}\n" GITHUB POOLS,
            &cfg);
  assert_string_equal(cfg.admin_listen, "127.0.0.1:9091");
  assert_string_equal(cfg.admin_url,
                      "http://runfleetd-admin.runfleet-system.svc:9090");
  assert_int_equal(cfg.admin.auth, CFG_ADMIN_AUTH_ALL);
  assert_int_equal(cfg.admin.ntokens, 2);
  assert_string_equal(cfg.admin.tokens[0].name, "ops");
  assert_int_equal(cfg.admin.tokens[0].sha256[0], 0x9f);
  assert_string_equal(cfg.admin.tokens[1].name, "ci");
  assert_int_equal(cfg.admin.tokens[1].sha256[31], 0x52);
  assert_int_equal(cfg.limits.header_timeout_ms, 2000);
  assert_int_equal(cfg.limits.max_connections_per_peer, 0);
  assert_int_equal(cfg.limits.max_failures_per_minute, 5);
  cfg_free(&cfg);
  remove_file("tokens");
}

static void test_admin_errors(void **state)
{
  (void)state;
  assert_int_equal(cfg_check_listen_pair("127.0.0.1:8080", "127.0.0.1:9090"),
                   0);
  assert_int_equal(cfg_check_listen_pair("127.0.0.1:8080", "10.0.0.1:8080"), 0);
  assert_int_equal(cfg_check_listen_pair("0.0.0.0:8080", "127.0.0.1:8080"), -1);
  assert_int_equal(cfg_check_listen_pair("[::1]:8080", "[::]:8080"), -1);
  expect_errors("listen: 127.0.0.1:9090\n" GITHUB POOLS, 1,
                "t.yaml:1: admin_listen: '127.0.0.1:9090' overlaps listen "
                "'127.0.0.1:9090': the public and the admin listener need "
                "different addresses",
                NULL);
  expect_errors("admin_listen: nope\n" GITHUB POOLS, 1,
                "t.yaml:1: admin_listen: 'nope' is not host:port (like "
                "127.0.0.1:9090 or [::1]:9090)",
                NULL);
  write_file("tokens", "ops " HASH_A "\n"
                       "bad\n"
                       "ops " HASH_B "\n"
                       "x zz\n");
  expect_errors("admin:\n"
                "  auth: every\n"
                "  tokens:\n"
                "    - {name: 'a b', sha256: " HASH_A "}\n"
                "    - {name: short, sha256: abc}\n"
                "    - {name: nohash}\n"
                "  tokens_file: @D/tokens\n" GITHUB POOLS,
                7, "t.yaml:2: admin.auth: 'every' is not one of mutations, all",
                "t.yaml:4: admin.tokens[0]: token name 'a b' must be 1 to 64 "
                "characters of [A-Za-z0-9._-]",
                "t.yaml:5: admin.tokens[1]: sha256 of 'short' must be 64 hex "
                "digits (the SHA-256 of the token, as sha256sum prints it)",
                "t.yaml:6: admin.tokens[2].sha256: required", NULL);
  assert_non_null(strstr(errs, "/tokens:2: expected 'NAME SHA256HEX'"));
  assert_non_null(strstr(errs, "/tokens:3: duplicate token name 'ops'"));
  assert_non_null(strstr(errs, "/tokens:4: sha256 of 'x' must be 64 hex"));
  remove_file("tokens");
  expect_errors("admin_url: ftp://x\n" GITHUB POOLS, 1,
                "t.yaml:1: admin_url: 'ftp://x' must be an http:// or "
                "https:// URL of at most 120 characters",
                NULL);
  expect_errors("admin: {auth: all}\n" GITHUB POOLS, 1,
                "t.yaml:1: admin.auth: 'all' needs at least one token "
                "(admin.tokens or admin.tokens_file)",
                NULL);
  expect_errors("admin: {tokens_file: @D/none}\n" GITHUB POOLS, 1, NULL);
  assert_non_null(strstr(errs, "admin.tokens_file: "));
}

static void test_labels_normalised(void **state)
{
  struct config cfg;

  (void)state;
  expect_ok(GITHUB "pools:\n"
                   "  - name: a\n"
                   "    labels: [Linux, GPU, Self-Hosted]\n"
                   "    max_runners: 1\n"
                   "    runner: {command: /x}\n"
                   "  - name: b\n"
                   "    labels: [linux]\n"
                   "    max_runners: 1\n"
                   "    runner: {command: /x}\n",
            &cfg);
  assert_int_equal(cfg.pools[0].nlabels, 3);
  assert_string_equal(cfg.pools[0].labels[0], "self-hosted");
  assert_string_equal(cfg.pools[0].labels[1], "linux");
  assert_string_equal(cfg.pools[0].labels[2], "gpu");
  assert_int_equal(cfg.pools[1].nlabels, 2);
  assert_string_equal(cfg.pools[1].labels[0], "self-hosted");
  assert_string_equal(cfg.pools[1].labels[1], "linux");
  cfg_free(&cfg);

  expect_errors(GITHUB "pools:\n"
                       "  - name: a\n"
                       "    labels:\n"
                       "      - linux\n"
                       "      - LINUX\n"
                       "      - 'has space'\n"
                       "      - [x]\n"
                       "    max_runners: 1\n"
                       "    runner: {command: /x}\n",
                3, "t.yaml:9: pools[0].labels[1]: duplicate label 'linux'",
                "t.yaml:10: pools[0].labels[2]: 'has space' has a space, "
                "comma or non-ASCII character",
                "t.yaml:11: pools[0].labels[3]: expected a label", NULL);
  expect_errors(GITHUB "pools:\n"
                       "  - name: a\n"
                       "    labels: []\n"
                       "    max_runners: 1\n"
                       "    runner: {command: /x}\n",
                1,
                "t.yaml:7: pools[0].labels: expected a list of at least one "
                "label",
                NULL);
}

/* A config whose one pool has first followed by labels l1, l2, ... up to n
 * labels in all. */
static const char *many_labels(const char *first, int n)
{
  static char yaml[4096];
  size_t pos;
  int i;

  pos = (size_t)snprintf(yaml, sizeof(yaml),
                         GITHUB "pools:\n  - name: a\n    labels: [%s", first);
  for (i = 1; i < n; i++)
    pos += (size_t)snprintf(yaml + pos, sizeof(yaml) - pos, ", l%d", i);
  snprintf(yaml + pos, sizeof(yaml) - pos,
           "]\n    max_runners: 1\n    runner: {command: /x}\n");
  return yaml;
}

static void test_label_limit(void **state)
{
  struct config cfg;

  (void)state;
  /* CFG_MAX_LABELS labels fit only if self-hosted is one of them. */
  expect_ok(many_labels("Self-Hosted", CFG_MAX_LABELS), &cfg);
  assert_int_equal(cfg.pools[0].nlabels, CFG_MAX_LABELS);
  assert_string_equal(cfg.pools[0].labels[0], "self-hosted");
  assert_string_equal(cfg.pools[0].labels[CFG_MAX_LABELS - 1], "l31");
  cfg_free(&cfg);
  expect_errors(many_labels("l0", CFG_MAX_LABELS), 1,
                "t.yaml:7: pools[0].labels: at most 32 labels, self-hosted "
                "included",
                NULL);
  expect_errors(many_labels("self-hosted", CFG_MAX_LABELS + 1), 1,
                "t.yaml:7: pools[0].labels: at most 32 labels", NULL);
}

static void test_unknown_keys(void **state)
{
  (void)state;
  expect_errors("lisen: 127.0.0.1:8080\n" GITHUB "  orgg: x\n"
                "pools:\n"
                "  - name: cpu\n"
                "    labels: [linux]\n"
                "    max_runner: 2\n"
                "    max_runners: 2\n"
                "    resources: {cpu: 2}\n"
                "    runner: {command: /bin/run.sh}\n"
                "log: {level: info, colour: no}\n",
                5, "t.yaml:1: lisen: unknown key",
                "t.yaml:6: github.orgg: unknown key",
                "t.yaml:10: pools[0].max_runner: unknown key",
                "t.yaml:12: pools[0].resources.cpu: unknown key",
                "t.yaml:14: log.colour: unknown key", NULL);
}

static void test_duplicate_keys(void **state)
{
  (void)state;
  expect_errors(GITHUB POOLS "  - name: gpu\n"
                             "    labels: [linux, gpu]\n"
                             "    max_runners: 2\n"
                             "    max_runners: 3\n"
                             "    runner: {command: /x}\n"
                             "github: {}\n",
                2,
                "t.yaml:13: pools[1].max_runners: duplicate key (first at "
                "line 12)",
                "t.yaml:15: github: duplicate key (first at line 1)", NULL);
}

static void test_required(void **state)
{
  (void)state;
  expect_errors("listen: 127.0.0.1:8080\n", 2,
                "t.yaml:1: github: required (webhook_secret_file, app or "
                "pat_file, org or repo)",
                "t.yaml:1: pools: at least one pool is required", NULL);
  expect_errors("github:\n"
                "  runner_group_id: 2\n"
                "pools:\n"
                "  - priority: 1\n"
                "  - name: x\n"
                "    labels: [a]\n"
                "    max_runners: 1\n"
                "    runner: {}\n",
                8, "t.yaml:1: github: one of app or pat_file is required",
                "t.yaml:1: github.webhook_secret_file: required",
                "t.yaml:1: github: one of org or repo is required",
                "t.yaml:4: pools[0].name: required",
                "t.yaml:4: pools[0].labels: required",
                "t.yaml:4: pools[0].max_runners: required",
                "t.yaml:4: pools[0].runner.command: required with backend "
                "local",
                "t.yaml:8: pools[1].runner.command: required with backend "
                "local",
                NULL);
  expect_errors(GITHUB "pools: []\n", 1,
                "t.yaml:5: pools: expected a list of at least one pool", NULL);
  expect_errors(GITHUB "pools:\n", 1,
                "t.yaml:5: pools: at least one pool is required", NULL);
  expect_errors("github:\n"
                "  app:\n"
                "    id: 3\n"
                "  webhook_secret_file: @D/secret\n"
                "  org: acme\n" POOLS,
                2, "t.yaml:2: github.app.private_key_file: required",
                "t.yaml:2: github.app.installation_id: required", NULL);
}

static void test_mutually_exclusive(void **state)
{
  (void)state;
  expect_errors("github:\n"
                "  app: {id: 1, private_key_file: @D/app.pem, "
                "installation_id: 2}\n"
                "  pat_file: @D/pat\n"
                "  webhook_secret_file: @D/secret\n"
                "  org: acme\n"
                "  repo: acme/x\n" POOLS,
                2,
                "t.yaml:3: github.pat_file: app and pat_file are mutually "
                "exclusive",
                "t.yaml:6: github.repo: org and repo are mutually exclusive",
                NULL);
}

static void test_files_must_exist(void **state)
{
  char line1[256], line2[256], line3[256], path[128];

  (void)state;
  snprintf(path, sizeof(path), "%s/adir", dir);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(line1, sizeof(line1),
           "t.yaml:3: github.webhook_secret_file: %s/missing: No such file "
           "or directory",
           dir);
  snprintf(line2, sizeof(line2),
           "t.yaml:2: github.app.private_key_file: %s/adir: not a regular "
           "file",
           dir);
  expect_errors("github:\n"
                "  app: {id: 1, private_key_file: @D/adir, installation_id: "
                "2}\n"
                "  webhook_secret_file: @D/missing\n"
                "  org: acme\n" POOLS,
                2, line1, line2, NULL);
  snprintf(line3, sizeof(line3),
           "t.yaml:2: github.pat_file: %s/nope: No such file or directory",
           dir);
  expect_errors("github:\n"
                "  pat_file: @D/nope\n"
                "  webhook_secret_file: @D/secret\n"
                "  org: acme\n" POOLS,
                1, line3, NULL);
  if (geteuid() != 0) {
    /* Root reads anything; the permission check only means something for
     * other users. */
    write_file("unreadable", "x");
    snprintf(path, sizeof(path), "%s/unreadable", dir);
    assert_int_equal(chmod(path, 0), 0);
    snprintf(line3, sizeof(line3),
             "t.yaml:2: github.pat_file: %s/unreadable: Permission denied",
             dir);
    expect_errors("github:\n"
                  "  pat_file: @D/unreadable\n"
                  "  webhook_secret_file: @D/secret\n"
                  "  org: acme\n" POOLS,
                  1, line3, NULL);
  }
}

static void test_types_and_ranges(void **state)
{
  (void)state;
  expect_errors(GITHUB "pools:\n"
                       "  - name: a\n"
                       "    labels: [x]\n"
                       "    max_runners: 12abc\n"
                       "    min_idle: 99999999999999999999\n"
                       "    priority: '3'\n"
                       "    idle_timeout: 5 minutes\n"
                       "    resources: {cpus: 0, memory: 4GB, gpus: [1]}\n"
                       "    runner: {command: /x}\n"
                       "  - name: B_ad\n"
                       "    labels: [y]\n"
                       "    max_runners: 0\n"
                       "    runner: /x\n",
                10,
                "t.yaml:8: pools[0].max_runners: expected an integer, got "
                "'12abc'",
                "t.yaml:9: pools[0].min_idle: 99999999999999999999 is out of "
                "range (0 to 100000)",
                "t.yaml:10: pools[0].priority: expected an integer, got a "
                "quoted string",
                "t.yaml:11: pools[0].idle_timeout: '5 minutes' is not a "
                "duration (like 250ms, 30s, 5m, 1h or a number of seconds)",
                "t.yaml:12: pools[0].resources.cpus: 0 is out of range (1 to "
                "4096)",
                "t.yaml:12: pools[0].resources.memory: '4GB' is not a size "
                "(like 512Mi, 4Gi, 1G or a number of bytes)",
                "t.yaml:12: pools[0].resources.gpus: expected a single value",
                "t.yaml:14: pools[1].name: 'B_ad' must be 1 to 32 characters "
                "of [a-z0-9-]",
                "t.yaml:16: pools[1].max_runners: 0 is out of range (1 to "
                "100000)",
                "t.yaml:17: pools[1].runner: expected a mapping", NULL);
  expect_errors(GITHUB "pools:\n"
                       "  - name: a\n"
                       "    labels: [x]\n"
                       "    max_runners: 3\n"
                       "    min_idle: 4\n"
                       "    runner: {command: /x}\n"
                       "log: {level: loud, format: xml}\n"
                       "limits: {max_connections: -1, read_timeout: 0}\n"
                       "backend: {kubernetes: {leader_election: yes}}\n"
                       "listen: 8080\n"
                       "reconcile_interval: 2h\n",
                8, "t.yaml:9: pools[0].min_idle: 4 exceeds max_runners 3",
                "t.yaml:11: log.level: 'loud' is not one of debug, info, warn, "
                "error",
                "t.yaml:11: log.format: 'xml' is not one of logfmt, json",
                "t.yaml:12: limits.max_connections: -1 is out of range (1 to "
                "1000000)",
                "t.yaml:12: limits.read_timeout: 0 is out of range (10ms to "
                "3600000ms)",
                "t.yaml:13: backend.kubernetes.leader_election: expected true "
                "or false, got 'yes'",
                "t.yaml:14: listen: '8080' is not host:port (like "
                "127.0.0.1:8080 or [::1]:8080)",
                "t.yaml:15: reconcile_interval: 2h is out of range (10ms to "
                "3600000ms)",
                NULL);
}

static void test_github_values(void **state)
{
  (void)state;
  expect_errors("github:\n"
                "  api_url: ftp://example.com\n"
                "  pat_file: @D/pat\n"
                "  webhook_secret_file: @D/secret\n"
                "  repo: noslash\n"
                "  runner_group_id: 0\n" POOLS,
                3,
                "t.yaml:2: github.api_url: 'ftp://example.com' must start "
                "with http:// or https:// and name a host",
                "t.yaml:5: github.repo: 'noslash' is not owner/name",
                "t.yaml:6: github.runner_group_id: 0 is out of range (1 to "
                "9223372036854775807)",
                NULL);
  expect_errors("github:\n"
                "  api_url: https://\n"
                "  pat_file: @D/pat\n"
                "  webhook_secret_file: ''\n"
                "  org: 'a b'\n" POOLS,
                3,
                "t.yaml:2: github.api_url: 'https:' must start with http:// "
                "or https:// and name a host",
                "t.yaml:4: github.webhook_secret_file: must not be empty",
                "t.yaml:5: github.org: 'a b' is not an organization name",
                NULL);
}

static void test_recovery_section(void **state)
{
  struct config cfg;

  (void)state;
  expect_ok(GITHUB POOLS, &cfg);
  assert_int_equal(cfg.recovery.enabled, 1);
  assert_int_equal(cfg.recovery.interval_ms, CFG_DEFAULT_RECOVERY_INTERVAL_MS);
  assert_int_equal(cfg.recovery.window_ms, 72ull * 3600 * 1000);
  assert_int_equal(cfg.recovery.call_budget, 200);
  assert_int_equal(cfg.recovery.primary_reserve, 500);
  assert_int_equal(cfg.recovery.wait_threshold_ms, 120000);
  assert_int_equal(cfg.recovery.seen_within_ms, 24ull * 3600 * 1000);
  assert_int_equal(cfg.recovery.nrepositories, 0);
  assert_int_equal(cfg.recovery.cursor_settle_ms, 15000);
  cfg_free(&cfg);
  expect_ok(GITHUB POOLS "recovery:\n"
                         "  enabled: false\n"
                         "  interval: 30s\n"
                         "  window: 6h\n"
                         "  call_budget: 50\n"
                         "  primary_reserve: 0\n"
                         "  wait_threshold: 5m\n"
                         "  seen_within: 2h\n"
                         "  cursor_settle: 0s\n"
                         "  repositories: [acme/widgets, acme/my.repo_1]\n",
            &cfg);
  assert_int_equal(cfg.recovery.enabled, 0);
  assert_int_equal(cfg.recovery.interval_ms, 30000);
  assert_int_equal(cfg.recovery.window_ms, 6ull * 3600 * 1000);
  assert_int_equal(cfg.recovery.call_budget, 50);
  assert_int_equal(cfg.recovery.primary_reserve, 0);
  assert_int_equal(cfg.recovery.wait_threshold_ms, 300000);
  assert_int_equal(cfg.recovery.seen_within_ms, 2ull * 3600 * 1000);
  assert_int_equal(cfg.recovery.nrepositories, 2);
  assert_string_equal(cfg.recovery.repositories[1], "acme/my.repo_1");
  assert_int_equal(cfg.recovery.cursor_settle_ms, 0);
  cfg_free(&cfg);
  /* Lines 10 on, after GITHUB and POOLS. */
  expect_errors(GITHUB POOLS "recovery:\n"
                             "  interval: 0s\n"
                             "  window: 4d\n"
                             "  call_budget: 0\n"
                             "  color: blue\n"
                             "  repositories: [acme/widgets, noslash, "
                             "acme/widgets]\n",
                6,
                "t.yaml:11: recovery.interval: 0s is out of range (100ms "
                "to 86400000ms)",
                "t.yaml:13: recovery.call_budget: 0 is out of range (1 to "
                "100000)",
                "t.yaml:14: recovery.color: unknown key",
                "t.yaml:15: recovery.repositories: 'noslash' is not "
                "owner/name",
                "t.yaml:15: recovery.repositories: 'acme/widgets' is listed "
                "twice",
                NULL);
  expect_errors(GITHUB POOLS "recovery:\n"
                             "  window: 73h\n"
                             "  repositories: acme/widgets\n",
                2,
                "t.yaml:11: recovery.window: 73h is out of range (1000ms "
                "to 259200000ms)",
                "t.yaml:12: recovery.repositories: expected a list", NULL);
}

static void test_backend_rules(void **state)
{
  struct config cfg;

  (void)state;
  expect_errors(GITHUB "backend: {type: kubernetes}\n" POOLS, 1,
                "t.yaml:10: pools[0].runner.image: required with backend "
                "kubernetes",
                NULL);
  expect_errors(GITHUB "backend: {type: docker}\n" POOLS, 1,
                "t.yaml:5: backend.type: 'docker' is not one of local, "
                "kubernetes",
                NULL);
  expect_errors(GITHUB "backend:\n"
                       "  local: {gpus: none}\n"
                       "pools:\n"
                       "  - name: gpu\n"
                       "    labels: [gpu]\n"
                       "    max_runners: 1\n"
                       "    resources: {gpus: 1}\n",
                2,
                "t.yaml:11: pools[0].resources.gpus: pool needs 1 GPUs per "
                "runner but backend.local.gpus is none",
                "t.yaml:8: pools[0].runner.command: required with backend "
                "local",
                NULL);
  expect_errors(GITHUB "backend:\n"
                       "  local:\n"
                       "    gpus: [0, 3]\n"
                       "    cpu_slots: 4\n"
                       "pools:\n"
                       "  - name: gpu\n"
                       "    labels: [gpu]\n"
                       "    max_runners: 1\n"
                       "    resources:\n"
                       "      gpus: 4\n"
                       "      cpus: 8\n"
                       "    runner: {command: /x}\n",
                2,
                "t.yaml:14: pools[0].resources.gpus: pool needs 4 GPUs per "
                "runner but backend.local.gpus lists 2",
                "t.yaml:15: pools[0].resources.cpus: pool needs 8 CPU slots "
                "per runner but backend.local.cpu_slots is 4",
                NULL);
  expect_errors(GITHUB "backend:\n"
                       "  local:\n"
                       "    gpus: [0, 0, -1, x]\n" POOLS,
                3, "t.yaml:7: backend.local.gpus[1]: GPU 0 listed twice",
                "t.yaml:7: backend.local.gpus[2]: expected a GPU index (0 to "
                "1023)",
                "t.yaml:7: backend.local.gpus[3]: expected a GPU index (0 to "
                "1023)",
                NULL);
  expect_errors(GITHUB "backend:\n"
                       "  kubernetes: {namespace: Bad_NS, lease_name: -x}\n"
                       "  local: {gpus: some}\n" POOLS,
                3,
                "t.yaml:6: backend.kubernetes.namespace: 'Bad_NS' is not a "
                "Kubernetes namespace name ([a-z0-9-], at most 63)",
                "t.yaml:6: backend.kubernetes.lease_name: '-x' is not a "
                "Kubernetes object name",
                "t.yaml:7: backend.local.gpus: expected auto, none or a list "
                "of GPU indices",
                NULL);
  expect_ok(GITHUB "backend:\n"
                   "  local: {gpus: [0, 2, 5], cpu_slots: 3}\n"
                   "pools:\n"
                   "  - name: gpu\n"
                   "    labels: [gpu]\n"
                   "    max_runners: 1\n"
                   "    resources: {gpus: 3, cpus: 3}\n"
                   "    runner: {command: /x, image: img}\n",
            &cfg);
  assert_int_equal(cfg.local.gpus_auto, 0);
  assert_int_equal(cfg.local.ngpus, 3);
  assert_int_equal(cfg.local.gpus[2], 5);
  assert_int_equal(cfg.local.cpu_slots, 3);
  assert_null(cfg.pools[0].runner_image);
  cfg_free(&cfg);
}

static void test_pools_unique(void **state)
{
  (void)state;
  expect_errors(GITHUB POOLS "  - name: cpu\n"
                             "    labels: [gpu]\n"
                             "    max_runners: 1\n"
                             "    runner: {command: /x}\n"
                             "  - name: other\n"
                             "    labels: [Self-Hosted, LINUX]\n"
                             "    max_runners: 1\n"
                             "    runner: {command: /x}\n",
                2,
                "t.yaml:10: pools[1].name: duplicate pool name 'cpu' (first "
                "at line 6)",
                "t.yaml:15: pools[2].labels: same label set as pools[0] (line "
                "7); jobs could not be routed",
                NULL);
}

/* A runner name is "rf-<pool>-<tag>-<boot>-<n>" and GitHub refuses runner
 * names over 64 characters: a 32-character pool name is the longest that
 * fits, and a 33-character one is refused where it is written. */
static void test_pool_name_fits_runner_name(void **state)
{
  struct config cfg;

  (void)state;
  expect_ok(GITHUB "pools:\n"
                   "  - name: abcdefghijklmnopqrstuvwxyz-12345\n"
                   "    labels: [linux]\n"
                   "    max_runners: 2\n"
                   "    runner: {command: /bin/run.sh}\n",
            &cfg);
  assert_int_equal(strlen(cfg.pools[0].name), 32);
  cfg_free(&cfg);
  expect_errors(GITHUB "pools:\n"
                       "  - name: abcdefghijklmnopqrstuvwxyz-123456\n"
                       "    labels: [linux]\n"
                       "    max_runners: 2\n"
                       "    runner: {command: /bin/run.sh}\n",
                1,
                "t.yaml:6: pools[0].name: "
                "'abcdefghijklmnopqrstuvwxyz-123456' must be 1 to 32 "
                "characters of [a-z0-9-]",
                NULL);
}

static void test_tolerations(void **state)
{
  (void)state;
  expect_errors(GITHUB POOLS "    tolerations:\n"
                             "      - {key: a, operator: Exists, value: b}\n"
                             "      - {operator: Equal, value: b}\n"
                             "      - {key: c, effect: Sometimes}\n"
                             "      - oops\n"
                             "    node_selector: {a: [1], b: x, b: y}\n",
                6,
                "t.yaml:11: pools[0].tolerations[0].value: must be empty "
                "with operator Exists",
                "t.yaml:12: pools[0].tolerations[1].key: required with "
                "operator Equal",
                "t.yaml:13: pools[0].tolerations[2].effect: 'Sometimes' is "
                "not one of NoSchedule, PreferNoSchedule, NoExecute",
                "t.yaml:14: pools[0].tolerations[3]: expected a mapping",
                "t.yaml:15: pools[0].node_selector.a: expected a string value",
                "t.yaml:15: pools[0].node_selector.b: duplicate key (first at "
                "line 15)",
                NULL);
}

static void test_syntax_errors(void **state)
{
  (void)state;
  assert_int_equal(parse(&(struct config){0}, GITHUB "pools: [a, b\n"), 1);
  assert_non_null(strstr(errs, "t.yaml:6: YAML syntax error: "));
  expect_errors(GITHUB "  - x\n", 1, NULL);
  assert_int_equal(strncmp(errs, "t.yaml:5: YAML syntax error: ", 29), 0);
  expect_errors("", 1, "t.yaml:1: the configuration is empty", NULL);
  expect_errors("# nothing\n\n", 1, "t.yaml:1: the configuration is empty",
                NULL);
  expect_errors("- a\n- b\n", 1,
                "t.yaml:1: the configuration must be a mapping of keys", NULL);
  expect_errors("? [a]\n: b\n" GITHUB POOLS "  - name: x\n"
                "    labels: [x]\n"
                "    max_runners: 1\n"
                "    runner: {? {a: b}: c}\n",
                3, "t.yaml:1: keys must be plain names",
                "t.yaml:15: pools[1].runner: keys must be plain names",
                "t.yaml:15: pools[1].runner.command: required with backend "
                "local",
                NULL);
  expect_errors(GITHUB POOLS "---\nlisten: x\n", 1,
                "t.yaml:11: only one YAML document is allowed", NULL);
  expect_errors(GITHUB "listen: \xff\n" POOLS, 1, NULL);
  assert_int_equal(strncmp(errs, "t.yaml:5: YAML syntax error: ", 29), 0);
}

static void test_many_errors_sorted(void **state)
{
  (void)state;
  expect_errors("listen: nope\n"
                "state_dir: ''\n"
                "github:\n"
                "  webhook_secret_file: @D/gone\n"
                "  org: acme\n"
                "pools:\n"
                "  - name: a\n"
                "    labels: [x]\n"
                "    max_runners: many\n"
                "    runner: {command: /x}\n"
                "bogus: 1\n",
                6, NULL);
  /* Sorted by line, one problem per line, each with its file and line. */
  assert_int_equal(strncmp(errs, "t.yaml:1: listen: ", 18), 0);
  assert_non_null(strstr(errs, "\nt.yaml:2: state_dir: must not be empty\n"));
  assert_true(strstr(errs, "t.yaml:3: github: one of app") <
              strstr(errs, "t.yaml:4: github.webhook_secret_file"));
  assert_true(strstr(errs, "t.yaml:4: ") < strstr(errs, "t.yaml:9: "));
  expect_line("t.yaml:9: pools[0].max_runners: expected an integer, got "
              "'many'");
  expect_line("t.yaml:11: bogus: unknown key");
  assert_true(strstr(errs, "t.yaml:9: ") < strstr(errs, "t.yaml:11: "));
}

static void test_errs_truncated(void **state)
{
  static const struct config zero;
  const char *yaml;
  struct config cfg;
  char small[64];
  size_t i;

  (void)state;
  yaml = subst("a: 1\nb: 2\nc: 3\nd: 4\n" GITHUB POOLS);
  memset(small, 'X', sizeof(small));
  assert_int_equal(cfg_parse(&cfg, "t.yaml", yaml, strlen(yaml), small, 30), 4);
  assert_int_equal(strlen(small), 29);
  assert_int_equal(strncmp(small, "t.yaml:1: a: unknown key\nt.ya", 29), 0);
  for (i = 30; i < sizeof(small); i++)
    assert_int_equal(small[i], 'X');
  assert_memory_equal(&cfg, &zero, sizeof(cfg));
  memset(small, 'X', sizeof(small));
  assert_int_equal(cfg_parse(&cfg, "t.yaml", yaml, strlen(yaml), small, 1), 4);
  assert_int_equal(small[0], '\0');
  assert_int_equal(small[1], 'X');
  assert_int_equal(cfg_parse(&cfg, "t.yaml", yaml, strlen(yaml), NULL, 0), 4);
  assert_int_equal(cfg_parse(&cfg, "t.yaml", yaml, strlen(yaml), small, 0), 4);
  assert_int_equal(small[1], 'X');
}

static void test_load_errors_and_free(void **state)
{
  static const struct config zero;
  struct config cfg;
  char path[128];

  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  cfg_free(&cfg);
  cfg_free(&cfg);
  cfg_free(NULL);
  snprintf(path, sizeof(path), "%s/absent.yaml", dir);
  memset(&cfg, 0x5a, sizeof(cfg));
  assert_int_equal(cfg_load(&cfg, path, errs, sizeof(errs)), -1);
  assert_memory_equal(&cfg, &zero, sizeof(cfg));
  assert_non_null(strstr(errs, "absent.yaml: No such file or directory\n"));
  assert_int_equal(cfg_load(&cfg, dir, errs, sizeof(errs)), -1);
  assert_non_null(strstr(errs, ": not a regular file\n"));
  /* A half-built config is freed by cfg_free without leaks. */
  cfg.pools[3].name = strdup("x");
  cfg.pools[3].labels[5] = strdup("y");
  cfg.pools[3].tolerations = calloc(2, sizeof(*cfg.pools[3].tolerations));
  cfg.pools[3].ntolerations = 2;
  cfg.local.work_root = strdup("/w");
  cfg_free(&cfg);
  assert_memory_equal(&cfg, &zero, sizeof(cfg));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_example),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_full_values),
      cmocka_unit_test(test_kubernetes_client),
      cmocka_unit_test(test_pool_kubernetes),
      cmocka_unit_test(test_durations),
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_integers),
      cmocka_unit_test(test_listen_syntax),
      cmocka_unit_test(test_admin_listener_and_tokens),
      cmocka_unit_test(test_admin_errors),
      cmocka_unit_test(test_labels_normalised),
      cmocka_unit_test(test_label_limit),
      cmocka_unit_test(test_unknown_keys),
      cmocka_unit_test(test_duplicate_keys),
      cmocka_unit_test(test_required),
      cmocka_unit_test(test_mutually_exclusive),
      cmocka_unit_test(test_files_must_exist),
      cmocka_unit_test(test_types_and_ranges),
      cmocka_unit_test(test_github_values),
      cmocka_unit_test(test_recovery_section),
      cmocka_unit_test(test_backend_rules),
      cmocka_unit_test(test_pools_unique),
      cmocka_unit_test(test_pool_name_fits_runner_name),
      cmocka_unit_test(test_tolerations),
      cmocka_unit_test(test_syntax_errors),
      cmocka_unit_test(test_many_errors_sorted),
      cmocka_unit_test(test_errs_truncated),
      cmocka_unit_test(test_load_errors_and_free),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
