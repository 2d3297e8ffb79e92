/* The decoders of GitHub's JIT config and runner list responses on
 * arbitrary bodies. The first byte picks the decoder; a runner list is
 * decoded into a page that already holds runners, as a second page is. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *body;
  size_t len;

  if (size == 0)
    return 0;
  body = (const char *)data + 1;
  len = size - 1;
  if (data[0] & 1) {
    int64_t id;
    char *config;

    if (gh_decode_jit(body, len, &id, &config) == 0) {
      if (id <= 0 || config == NULL || config[0] == '\0')
        abort();
      free(config);
    }
  } else {
    struct gh_runner_page pg = {0};
    size_t items, i;
    int64_t total;

    if ((data[0] & 2) &&
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
  return 0;
}
