/* webhook_parse on arbitrary deliveries. The first byte steers: bit 0
 * signs the body with the fixed secret (so half the inputs get past the
 * signature and reach the JSON), bits 1-3 pick X-GitHub-Event, bit 4
 * drops X-GitHub-Delivery. The rest is the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "webhook.h"
#include "webhook_sig.h"
#include "log.h"

#define SECRET "fuzz-secret"

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

static const char *const event_names[8] = {"workflow_job",
                                           "ping",
                                           "workflow_run",
                                           "check_run",
                                           "push",
                                           "installation",
                                           "",
                                           NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static struct webhook *w;
  struct webhook_delivery d = {0};
  struct event ev;
  char sig[80] = "sha256=00";
  char msg[128];
  uint8_t mode;

  if (size == 0)
    return 0;
  if (w == NULL) {
    w = webhook_new((const unsigned char *)SECRET, strlen(SECRET), NULL);
    if (w == NULL)
      abort();
  }
  mode = data[0];
  d.body = (const char *)data + 1;
  d.body_len = size - 1;
  d.event = event_names[(mode >> 1) & 7];
  d.id = (mode & 0x10) ? NULL : "72d3162e-cc78-11e3-81ab-4c9367dc0958";
  if ((mode & 1) &&
      webhook_sig_sign((const unsigned char *)SECRET, strlen(SECRET),
                       (const unsigned char *)d.body, d.body_len, sig,
                       sizeof(sig)) != 0)
    abort();
  d.signature = sig;
  memset(&ev, 0, sizeof(ev));
  if (webhook_parse(w, &d, &ev, msg, sizeof(msg)) == 0)
    event_free(&ev);
  return 0;
}
