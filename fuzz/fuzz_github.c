/* The decoders of GitHub's responses on arbitrary bodies: JIT config,
 * runner list, and recovery's webhook deliveries, queued runs and a run's
 * jobs, with the Link and query parsing of their pagination. The first
 * byte picks the decoder: bit 0 the JIT config; else bits 2-3 pick runners
 * (bit 1: decoded into a page that already holds runners, as a second
 * page is), deliveries, runs or jobs. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gh_recovery.h"
#include "github.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Refusals log a warning each: at thousands of inputs a second, that
 * would be most of the time spent. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_setup(LOG_ERROR, 0);
  return 0;
}

static void jit(const char *body, size_t len)
{
  int64_t id;
  char *config;

  if (gh_decode_jit(body, len, &id, &config) == 0) {
    if (id <= 0 || config == NULL || config[0] == '\0')
      abort();
    free(config);
  }
}

static void runners(uint8_t pick, const char *body, size_t len)
{
  struct gh_runner_page pg = {0};
  size_t items, i;
  int64_t total;

  if ((pick & 2) &&
      gh_decode_runners("{\"runners\":[{\"id\":1,\"name\":\"a\"}]}", 33, &pg,
                        &items, &total) != 0)
    abort();
  if (gh_decode_runners(body, len, &pg, &items, &total) == 0 && total < 0)
    abort();
  for (i = 0; i < pg.n; i++)
    if (pg.runners[i].id <= 0 || strlen(pg.runners[i].name) >= 128 ||
        strlen(pg.runners[i].status) >= 16)
      abort();
  free(pg.runners);
}

/* Deliveries, runs or jobs; then the body, as a string, as a Link header
 * and as a URL. Decoded entries keep their promises: positive ids,
 * terminated strings. */
static void recovery(uint8_t pick, const char *body, size_t len)
{
  char out[GH_CURSOR_MAX * 4], *text;
  size_t n = 0, i;

  if (((pick >> 2) & 3) == 1) {
    struct gh_delivery *d = NULL;

    if (gh_decode_deliveries(body, len, &d, &n) == 0)
      for (i = 0; i < n; i++)
        if (d[i].id <= 0 || strlen(d[i].guid) >= sizeof(d[i].guid) ||
            strlen(d[i].event) >= sizeof(d[i].event))
          abort();
    free(d);
  } else if (((pick >> 2) & 3) == 2) {
    struct gh_run *r = NULL;

    if (gh_decode_runs(body, len, &r, &n) == 0)
      for (i = 0; i < n; i++)
        if (r[i].id <= 0 || strlen(r[i].repo) >= sizeof(r[i].repo))
          abort();
    free(r);
  } else {
    struct gh_job *j = NULL;

    if (gh_decode_jobs(body, len, &j, &n) == 0) {
      for (i = 0; i < n; i++)
        if (j[i].id <= 0 || j[i].nlabels > CFG_MAX_LABELS)
          abort();
      gh_jobs_free(j, n);
    }
  }
  text = malloc(len + 1);
  if (text == NULL)
    return;
  memcpy(text, body, len);
  text[len] = '\0';
  if (gh_link_next(text, out, sizeof(out)) == 0 && strlen(out) >= sizeof(out))
    abort();
  if (gh_query_param(text, "cursor", out, sizeof(out)) == 0 &&
      (out[0] == '\0' || strlen(out) >= sizeof(out)))
    abort();
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *body;
  size_t len;

  if (size == 0)
    return 0;
  body = (const char *)data + 1;
  len = size - 1;
  if (data[0] & 1)
    jit(body, len);
  else if (((data[0] >> 2) & 3) == 0)
    runners(data[0], body, len);
  else
    recovery(data[0], body, len);
  return 0;
}
