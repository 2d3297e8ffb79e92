/* cfg_parse on arbitrary YAML: every document is either a validated
 * config or a list of "file:line: message" problems, never a crash. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"
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
  struct config cfg;
  char errs[4096];

  if (cfg_parse(&cfg, "fuzz.yaml", (const char *)data, size, errs,
                sizeof(errs)) == 0)
    cfg_free(&cfg);
  return 0;
}
