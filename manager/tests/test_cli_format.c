/* The runfleet CLI's tables from fixed API answers, and its arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli_format.h"

static const char pools_json[] =
    "{\"pools\":["
    "{\"name\":\"gpu-1\",\"labels\":[\"self-hosted\",\"gpu\"],"
    "\"priority\":10,\"max_runners\":4,\"min_idle\":0,\"demand\":3,"
    "\"gpus_per_runner\":1,"
    "\"runners\":{\"starting\":1,\"idle\":0,\"busy\":2},"
    "\"capacity\":{\"gpus_total\":4,\"gpus_used\":3}},"
    "{\"name\":\"cpu\",\"labels\":[\"self-hosted\",\"linux\"],"
    "\"priority\":1,\"max_runners\":16,\"min_idle\":2,\"demand\":0,"
    "\"gpus_per_runner\":0,"
    "\"runners\":{\"starting\":0,\"idle\":2,\"busy\":11},"
    "\"capacity\":{\"gpus_total\":4,\"gpus_used\":3}}]}";

static const char jobs_json[] =
    "{\"jobs\":["
    "{\"id\":123,\"run_id\":5,\"repository\":\"acme/widgets\","
    "\"pool\":\"gpu-1\",\"status\":\"queued\",\"labels\":[\"gpu\"],"
    "\"runner\":null,\"queued_at\":\"2024-05-01T10:00:00Z\","
    "\"started_at\":null,\"wait_seconds\":1.5},"
    "{\"id\":4567,\"run_id\":77,\"repository\":\"acme/gadgets\","
    "\"pool\":\"cpu\",\"status\":\"in_progress\",\"labels\":[],"
    "\"runner\":\"cpu-abc\",\"queued_at\":\"2024-05-01T09:58:00Z\","
    "\"started_at\":\"2024-05-01T09:59:05Z\",\"wait_seconds\":65}]}";

static const char runners_json[] =
    "{\"runners\":["
    "{\"name\":\"gpu-1-x1\",\"pool\":\"gpu-1\",\"state\":\"busy\","
    "\"gpus\":[0,1],\"job_id\":123,\"age_seconds\":12.3},"
    "{\"name\":\"cpu-abc\",\"pool\":\"cpu\",\"state\":\"idle\","
    "\"gpus\":[],\"job_id\":null,\"age_seconds\":7322}]}";

static char *format(enum cli_view view, const char *json)
{
  char err[128] = "";
  char *out = cli_format(view, json, strlen(json), err, sizeof(err));

  if (out == NULL)
    fail_msg("cli_format failed: %s", err);
  return out;
}

static void test_pools_table(void **state)
{
  char *out = format(CLI_POOLS, pools_json);

  (void)state;
  assert_string_equal(
      out, "POOL   PRIO  DEMAND  STARTING  IDLE  BUSY  MAX  MIN-IDLE  GPUS  "
           "LABELS\n"
           "gpu-1    10       3         1     0     2    4         0   3/4  "
           "self-hosted,gpu\n"
           "cpu       1       0         0     2    11   16         2     -  "
           "self-hosted,linux\n");
  free(out);
}

static void test_status_table(void **state)
{
  char *out = format(CLI_STATUS, pools_json);

  (void)state;
  assert_string_equal(out, "POOL   DEMAND  STARTING  IDLE  BUSY  MAX  GPUS\n"
                           "gpu-1       3         1     0     2    4   3/4\n"
                           "cpu         0         0     2    11   16     -\n"
                           "TOTAL       3         1     2    13   20   3/4\n");
  free(out);
  /* No pools: still the totals, all zero. */
  out = format(CLI_STATUS, "{\"pools\":[]}");
  assert_string_equal(out, "POOL   DEMAND  STARTING  IDLE  BUSY  MAX  GPUS\n"
                           "TOTAL       0         0     0     0    0     -\n");
  free(out);
}

static void test_jobs_table(void **state)
{
  char *out = format(CLI_JOBS, jobs_json);

  (void)state;
  assert_string_equal(
      out, "  ID  RUN  REPOSITORY    POOL   STATUS       RUNNER    WAIT  "
           "QUEUED\n"
           " 123    5  acme/widgets  gpu-1  queued       -         1.5s  "
           "2024-05-01T10:00:00Z\n"
           "4567   77  acme/gadgets  cpu    in_progress  cpu-abc  1m05s  "
           "2024-05-01T09:58:00Z\n");
  free(out);
}

static void test_runners_table(void **state)
{
  char *out = format(CLI_RUNNERS, runners_json);

  (void)state;
  assert_string_equal(out, "NAME      POOL   STATE  GPUS  JOB    AGE\n"
                           "gpu-1-x1  gpu-1  busy   0,1   123  12.3s\n"
                           "cpu-abc   cpu    idle   -       -  2h02m\n");
  free(out);
}

static const char queue_json[] =
    "{\"queue\":["
    "{\"pool\":\"cpu\",\"queued\":0,\"oldest_wait_seconds\":null,"
    "\"reason\":null,\"next\":[]},"
    "{\"pool\":\"gpu-8\",\"queued\":3,\"oldest_wait_seconds\":754,"
    "\"reason\":{\"code\":\"capacity\",\"text\":\"no node of the pool's "
    "group has room for 8 GPU(s), 1 CPU slot(s)\"},"
    "\"next\":[{\"id\":9,\"repository\":\"acme/a-very-long-repository-name\","
    "\"name\":\"train\",\"wait_seconds\":754}]}]}";

static const char nodes_json[] =
    "{\"nodes\":["
    "{\"name\":\"ip-10-0-12-34.us-west-2.compute.internal\","
    "\"node_group\":\"gpu-p4d\",\"ready\":true,\"gpus\":["
    "{\"index\":0,\"state\":\"runner\",\"holder\":\"rf-gpu-1-ab-cd-1\","
    "\"healthy\":true,\"pool\":\"gpu-1\",\"runner_state\":\"busy\","
    "\"job\":{\"id\":5,\"repository\":\"acme/widgets\",\"name\":\"t\","
    "\"running_seconds\":65}},"
    "{\"index\":1,\"state\":\"devserver\",\"holder\":\"0123456789abcdef\","
    "\"healthy\":true},"
    "{\"index\":2,\"state\":\"unhealthy\",\"healthy\":false}]},"
    "{\"name\":\"cpu-1\",\"node_group\":\"cpu\",\"ready\":true,"
    "\"gpus\":[]}]}";

/* Every line of out fits cols columns (display width). */
static void assert_fits(const char *out, size_t cols)
{
  size_t w = 0;

  for (; *out != '\0'; out++) {
    if (*out == '\n') {
      assert_true(w <= cols);
      w = 0;
    } else if (((unsigned char)*out & 0xC0) != 0x80) {
      w++;
    }
  }
}

static void test_queue_table(void **state)
{
  char *out = format(CLI_QUEUE, queue_json);

  (void)state;
  assert_string_equal(
      out,
      "POOL   QUEUED  OLDEST  WHY                                           "
      "NEXT\n"
      "cpu         0       -  -                                             -\n"
      "gpu-8       3  12m34s  capacity: no node of the pool's group has r~  "
      "acme/a-very-long-reposi~\n");
  assert_fits(out, 100);
  free(out);
}

static void test_gpus_table(void **state)
{
  char *out = format(CLI_GPUS, nodes_json);

  (void)state;
  assert_string_equal(out, "NODE                          GROUP    GPU  STATE  "
                           "    POOL              "
                           "REPOSITORY    RUNNING\n"
                           "ip-10-0-12-34.us-west-2.com~  gpu-p4d    0  runner "
                           "    gpu-1             "
                           "acme/widgets    1m05s\n"
                           "ip-10-0-12-34.us-west-2.com~  gpu-p4d    1  "
                           "devserver  0123456789abcdef  "
                           "-                   -\n"
                           "ip-10-0-12-34.us-west-2.com~  gpu-p4d    2  "
                           "unhealthy  -                 "
                           "-                   -\n");
  assert_fits(out, 100);
  free(out);
}

static void test_empty_lists(void **state)
{
  char *out;

  (void)state;
  out = format(CLI_JOBS, "{\"jobs\":[]}");
  assert_string_equal(out, "no jobs\n");
  free(out);
  out = format(CLI_RUNNERS, "{\"runners\":[]}");
  assert_string_equal(out, "no runners\n");
  free(out);
  out = format(CLI_POOLS, "{\"pools\":[]}");
  assert_string_equal(out, "no pools\n");
  free(out);
}

static void test_bad_answers(void **state)
{
  char err[128];
  static const char *const bad[] = {"",
                                    "not json",
                                    "{\"pools\":",
                                    "[1,2]",
                                    "{\"jobs\":[]}",
                                    "{\"pools\":{}}",
                                    "{\"pools\":[],\"pools\":[]}"};
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    assert_null(
        cli_format(CLI_POOLS, bad[i], strlen(bad[i]), err, sizeof(err)));
    assert_true(err[0] != '\0');
  }
  assert_null(cli_format(CLI_JOBS, "{\"pools\":[]}", 12, err, sizeof(err)));
  assert_string_equal(err, "unexpected answer: no \"jobs\" array");
  assert_null(cli_pretty_json("{", 1, err, sizeof(err)));
  assert_true(strncmp(err, "bad JSON", 8) == 0);
}

static void test_odd_fields_and_control_chars(void **state)
{
  /* Wrong types show as "-"; a terminal escape in a name is defused; a
   * non-object row does not crash. */
  static const char json[] =
      "{\"runners\":[{\"name\":\"evil\\u001b[2Jx\",\"pool\":7,"
      "\"state\":{},\"gpus\":\"0\",\"job_id\":true,\"age_seconds\":-1},"
      "42]}";
  char *out = format(CLI_RUNNERS, json);

  (void)state;
  assert_null(strchr(out, '\x1b'));
  assert_string_equal(out, "NAME       POOL  STATE  GPUS   JOB  AGE\n"
                           "evil?[2Jx  7     -      0     true    -\n"
                           "-          -     -      -        -    -\n");
  free(out);
}

static void test_pretty_json(void **state)
{
  char err[64];
  char *out = cli_pretty_json("{\"b\":1,\"a\":[true]}", 18, err, sizeof(err));

  (void)state;
  assert_non_null(out);
  /* Server key order is kept. */
  assert_string_equal(out, "{\n  \"b\": 1,\n  \"a\": [\n    true\n  ]\n}\n");
  free(out);
}

static int parse(const char *const *argv, int argc, const char *env,
                 struct cli_args *args)
{
  char err[128];

  return cli_parse_args(argc, (char **)argv, env, args, err, sizeof(err));
}

static void test_recovery_lines(void **state)
{
  static const char answer[] =
      "{\"recovery\":{\"running\":false,\"runs\":3,\"last_run\":{"
      "\"trigger\":\"start\",\"started_at\":\"2026-01-02T03:04:00Z\","
      "\"finished_at\":\"2026-01-02T03:04:05Z\",\"deliveries_api\":true,"
      "\"deliveries_seen\":40,\"deliveries_failed\":3,\"redelivered\":3,"
      "\"repositories_scanned\":2,\"runs_scanned\":5,\"jobs_found\":1,"
      "\"calls\":12,\"errors\":0,\"budget_spent\":true,\"cursor\":9},"
      "\"budget\":{\"remaining\":4990,\"limit\":5000,\"reset_at\":"
      "\"2026-01-02T04:00:00Z\",\"app_remaining\":null,\"reserve\":500,"
      "\"hold_seconds\":{\"all\":0,\"mutations\":2.5,\"recovery\":0},"
      "\"secondary_limited\":1,\"waiting\":{\"runner\":2,\"recovery\":"
      "4},\"recovery_in_flight\":0,\"recovery_requests\":12}}}";
  static const char pat[] =
      "{\"recovery\":{\"running\":true,\"runs\":1,\"last_run\":{"
      "\"trigger\":\"in\\nterval\",\"deliveries_api\":false},"
      "\"budget\":null}}";
  char err[128];
  char *out;

  (void)state;
  out = cli_format_recovery(answer, strlen(answer), err, sizeof(err));
  assert_non_null(out);
  assert_string_equal(
      out, "recovery: last run 2026-01-02T03:04:05Z (start): 40 deliveries "
           "seen, 3 failed, 3 redelivered; 2 repositories, 5 queued runs, 1 "
           "jobs found; 12 calls, 0 errors, call budget spent\n"
           "github api: 4990 of 5000 left (reserve 500), resets "
           "2026-01-02T04:00:00Z; held 2.5s (mutations), 0s (recovery); "
           "waiting: 2 runner, 4 recovery calls; 1 secondary limits hit\n");
  free(out);
  /* PAT mode, a run under way, a name with a control character. */
  out = cli_format_recovery(pat, strlen(pat), err, sizeof(err));
  assert_non_null(out);
  assert_non_null(strstr(out, "(in?terval), another running"));
  assert_non_null(strstr(out, "(PAT mode: no deliveries API)"));
  assert_null(strstr(out, "github api"));
  free(out);
  out = cli_format_recovery("{\"recovery\":{\"last_run\":null}}", 30, err,
                            sizeof(err));
  assert_non_null(out);
  assert_string_equal(out, "recovery: no run finished yet\n");
  free(out);
  assert_null(cli_format_recovery("{}", 2, err, sizeof(err)));
  assert_string_equal(err, "unexpected answer: no \"recovery\" object");
  assert_null(cli_format_recovery("nope", 4, err, sizeof(err)));
}

static void test_args(void **state)
{
  struct cli_args a;
  char err[128];
  const char *const status[] = {"runfleet", "status"};
  const char *const jobs[] = {"runfleet", "--json", "jobs", "--url",
                              "http://h:1/"};
  const char *const eq[] = {"runfleet", "runners", "--url=https://x/y//"};
  const char *const none[] = {"runfleet"};
  const char *const two[] = {"runfleet", "pools", "jobs"};
  const char *const unknown[] = {"runfleet", "nodes"};
  const char *const opt[] = {"runfleet", "pools", "--verbose"};
  const char *const nourl[] = {"runfleet", "pools", "--url"};
  const char *const badurl[] = {"runfleet", "pools", "--url", "ftp://x"};
  const char *const help[] = {"runfleet", "--help"};
  const char *const hash[] = {"runfleet", "token", "hash"};
  const char *const token_only[] = {"runfleet", "token"};
  const char *const tokfile[] = {"runfleet", "jobs", "--token-file", "/t"};
  const char *const tokeq[] = {"runfleet", "--token-file=/u", "pools"};
  const char *const tokmissing[] = {"runfleet", "jobs", "--token-file"};
  const char *const watch[] = {"runfleet", "status", "--watch"};
  const char *const watch_jobs[] = {"runfleet", "jobs", "--watch"};
  const char *const watch_json[] = {"runfleet", "status", "--watch", "--json"};
  const char *const gpus[] = {"runfleet", "gpus", "--json"};

  (void)state;
  assert_int_equal(parse(status, 2, NULL, &a), 0);
  assert_int_equal(a.view, CLI_STATUS);
  assert_int_equal(a.json, 0);
  assert_string_equal(a.url, CLI_DEFAULT_URL);
  assert_int_equal(parse(status, 2, "http://env:9", &a), 0);
  assert_string_equal(a.url, "http://env:9");
  assert_int_equal(parse(status, 2, "", &a), 0);
  assert_string_equal(a.url, CLI_DEFAULT_URL);
  /* The flag wins over the environment; trailing slashes go. */
  assert_int_equal(parse(jobs, 5, "http://env:9", &a), 0);
  assert_int_equal(a.view, CLI_JOBS);
  assert_int_equal(a.json, 1);
  assert_string_equal(a.url, "http://h:1");
  assert_int_equal(parse(eq, 3, NULL, &a), 0);
  assert_int_equal(a.view, CLI_RUNNERS);
  assert_string_equal(a.url, "https://x/y");
  assert_int_equal(parse(help, 2, NULL, &a), 0);
  assert_int_equal(a.help, 1);
  assert_int_equal(parse(hash, 3, NULL, &a), 0);
  assert_int_equal(a.view, CLI_TOKEN_HASH);
  assert_int_equal(parse(token_only, 2, NULL, &a), -1);
  assert_int_equal(parse(tokfile, 4, NULL, &a), 0);
  assert_string_equal(a.token_file, "/t");
  assert_int_equal(parse(tokeq, 3, NULL, &a), 0);
  assert_string_equal(a.token_file, "/u");
  assert_int_equal(a.view, CLI_POOLS);
  assert_int_equal(parse(tokmissing, 3, NULL, &a), -1);
  assert_int_equal(parse(status, 2, NULL, &a), 0);
  assert_string_equal(a.token_file, "");

  assert_int_equal(parse(watch, 3, NULL, &a), 0);
  assert_int_equal(a.watch, 1);
  assert_int_equal(parse(watch_jobs, 3, NULL, &a), -1);
  assert_int_equal(parse(watch_json, 4, NULL, &a), -1);
  assert_int_equal(parse(gpus, 3, NULL, &a), 0);
  assert_int_equal(a.view, CLI_GPUS);
  assert_string_equal(cli_view_path(CLI_GPUS), "/api/v1/nodes");
  assert_string_equal(cli_view_path(CLI_QUEUE), "/api/v1/queue");

  assert_int_equal(parse(none, 1, NULL, &a), -1);
  assert_int_equal(parse(two, 3, NULL, &a), -1);
  assert_int_equal(parse(unknown, 2, NULL, &a), -1);
  assert_int_equal(parse(opt, 3, NULL, &a), -1);
  assert_int_equal(parse(nourl, 3, NULL, &a), -1);
  assert_int_equal(parse(badurl, 4, NULL, &a), -1);
  assert_int_equal(parse(status, 2, "localhost:8080", &a), -1);
  assert_int_equal(
      cli_parse_args(2, (char **)unknown, NULL, &a, err, sizeof(err)), -1);
  assert_string_equal(err, "unknown command: nodes");

  assert_string_equal(cli_view_path(CLI_STATUS), "/api/v1/pools");
  assert_string_equal(cli_view_path(CLI_JOBS), "/api/v1/jobs");
  assert_string_equal(cli_view_path(CLI_RUNNERS), "/api/v1/runners");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pools_table),
      cmocka_unit_test(test_status_table),
      cmocka_unit_test(test_jobs_table),
      cmocka_unit_test(test_runners_table),
      cmocka_unit_test(test_queue_table),
      cmocka_unit_test(test_gpus_table),
      cmocka_unit_test(test_empty_lists),
      cmocka_unit_test(test_bad_answers),
      cmocka_unit_test(test_odd_fields_and_control_chars),
      cmocka_unit_test(test_pretty_json),
      cmocka_unit_test(test_recovery_lines),
      cmocka_unit_test(test_args),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
