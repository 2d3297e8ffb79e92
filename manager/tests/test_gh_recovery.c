/* The recovery endpoints' decoders and the Link/cursor parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gh_recovery.h"

static void test_decode_deliveries(void **state)
{
  /* As GitHub's description has it, with an entry without an id. */
  static const char body[] =
      "[{\"id\":12345678,\"guid\":\"0b989ba4-242f-11e5-81e1-c7b6966d2516\","
      "\"delivered_at\":\"2019-06-03T00:57:16Z\",\"redelivery\":false,"
      "\"duration\":0.27,\"status\":\"OK\",\"status_code\":200,"
      "\"event\":\"workflow_job\",\"action\":\"queued\","
      "\"installation_id\":123,\"repository_id\":456,\"throttled_at\":null},"
      "{\"id\":12345677,\"guid\":\"g2\",\"delivered_at\":\"2019-06-03T00:57:"
      "15Z\",\"redelivery\":true,\"duration\":10,\"status\":\"failed to "
      "connect\",\"status_code\":0,\"event\":\"ping\",\"action\":null,"
      "\"installation_id\":null,\"repository_id\":null},"
      "{\"guid\":\"no-id\"}]";
  struct gh_delivery *d = NULL;
  size_t n = 0;

  (void)state;
  assert_int_equal(gh_decode_deliveries(body, strlen(body), &d, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(d[0].id, 12345678);
  assert_string_equal(d[0].guid, "0b989ba4-242f-11e5-81e1-c7b6966d2516");
  assert_int_equal(d[0].delivered_at, 1559523436);
  assert_int_equal(d[0].status_code, 200);
  assert_string_equal(d[0].event, "workflow_job");
  assert_string_equal(d[0].action, "queued");
  assert_int_equal(d[0].installation_id, 123);
  assert_int_equal(d[0].redelivery, 0);
  assert_int_equal(d[1].status_code, 0);
  assert_int_equal(d[1].redelivery, 1);
  assert_string_equal(d[1].action, "");
  assert_int_equal(d[1].installation_id, 0);
  free(d);
  assert_int_equal(gh_decode_deliveries("[]", 2, &d, &n), 0);
  assert_int_equal(n, 0);
  assert_null(d);
  assert_int_equal(gh_decode_deliveries("{}", 2, &d, &n), -EBADMSG);
  assert_int_equal(gh_decode_deliveries("not json", 8, &d, &n), -EBADMSG);
}

static void test_decode_runs_and_jobs(void **state)
{
  static const char runs[] =
      "{\"total_count\":2,\"workflow_runs\":[{\"id\":30433642,\"status\":"
      "\"queued\",\"repository\":{\"full_name\":\"octo-org/octo-repo\"}},"
      "{\"id\":0}]}";
  static const char jobs[] =
      "{\"total_count\":2,\"jobs\":[{\"id\":399444496,\"run_id\":29679449,"
      "\"status\":\"queued\",\"name\":\"build\",\"labels\":[\"self-hosted\","
      "\"gpu\",7]},{\"id\":399444497,\"run_id\":29679449,\"status\":"
      "\"completed\",\"name\":\"test\",\"labels\":[]}]}";
  struct gh_run *r = NULL;
  struct gh_job *j = NULL;
  size_t n = 0;

  (void)state;
  assert_int_equal(gh_decode_runs(runs, strlen(runs), &r, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(r[0].id, 30433642);
  assert_string_equal(r[0].repo, "octo-org/octo-repo");
  assert_string_equal(r[0].status, "queued");
  free(r);
  assert_int_equal(gh_decode_runs("{\"jobs\":[]}", 11, &r, &n), -EBADMSG);
  assert_int_equal(gh_decode_jobs(jobs, strlen(jobs), &j, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(j[0].id, 399444496);
  assert_int_equal(j[0].run_id, 29679449);
  assert_string_equal(j[0].name, "build");
  assert_int_equal(j[0].nlabels, 2); /* the number is not a label */
  assert_string_equal(j[0].labels[1], "gpu");
  assert_string_equal(j[1].status, "completed");
  assert_int_equal(j[1].nlabels, 0);
  gh_jobs_free(j, n);
  assert_int_equal(gh_decode_jobs("[]", 2, &j, &n), -EBADMSG);
}

static void test_too_many_labels(void **state)
{
  char body[4096];
  size_t len, i, n = 0;
  struct gh_job *j = NULL;

  (void)state;
  len = (size_t)snprintf(body, sizeof(body),
                         "{\"jobs\":[{\"id\":1,\"status\":\"queued\","
                         "\"labels\":[");
  for (i = 0; i < CFG_MAX_LABELS + 3; i++)
    len += (size_t)snprintf(body + len, sizeof(body) - len, "%s\"l%zu\"",
                            i ? "," : "", i);
  len += (size_t)snprintf(body + len, sizeof(body) - len, "]}]}");
  assert_int_equal(gh_decode_jobs(body, len, &j, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(j[0].nlabels, CFG_MAX_LABELS);
  assert_true(j[0].too_many_labels);
  gh_jobs_free(j, n);
}

static void test_link_and_cursor(void **state)
{
  char url[256], cursor[64];

  (void)state;
  assert_int_equal(
      gh_link_next("<https://api.github.com/app/hook/deliveries?per_page=2&"
                   "cursor=v1_12077215967>; rel=\"next\"",
                   url, sizeof(url)),
      0);
  assert_string_equal(
      url, "https://api.github.com/app/hook/deliveries?per_page=2&cursor="
           "v1_12077215967");
  assert_int_equal(gh_query_param(url, "cursor", cursor, sizeof(cursor)), 0);
  assert_string_equal(cursor, "v1_12077215967");
  assert_int_equal(gh_query_param(url, "page", cursor, sizeof(cursor)), -1);
  /* rel="next" after others; prev/last are not next. */
  assert_int_equal(gh_link_next("<https://x/r?page=1>; rel=\"prev\", "
                                "<https://x/r?page=3>; rel=\"next\", "
                                "<https://x/r?page=9>; rel=\"last\"",
                                url, sizeof(url)),
                   0);
  assert_string_equal(url, "https://x/r?page=3");
  assert_int_equal(
      gh_link_next("<https://x/r?page=1>; rel=\"prev\"", url, sizeof(url)), -1);
  assert_int_equal(gh_link_next("", url, sizeof(url)), -1);
  assert_int_equal(gh_link_next("<https://x/r?page=3>; rel=\"next\"", url, 5),
                   -1);
  /* A cursor that would need encoding, or none, is refused. */
  assert_int_equal(
      gh_query_param("https://x/?cursor=a b", "cursor", cursor, sizeof(cursor)),
      -1);
  assert_int_equal(gh_query_param("https://x/?cursor=&a=1", "cursor", cursor,
                                  sizeof(cursor)),
                   -1);
  assert_int_equal(gh_query_param("https://x/?xcursor=1&cursor=Zm9v", "cursor",
                                  cursor, sizeof(cursor)),
                   0);
  assert_string_equal(cursor, "Zm9v");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode_deliveries),
      cmocka_unit_test(test_decode_runs_and_jobs),
      cmocka_unit_test(test_too_many_labels),
      cmocka_unit_test(test_link_and_cursor),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
