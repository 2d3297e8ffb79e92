/* The Kubernetes watch stream parser and the Status decoder on arbitrary
 * streams. Byte 0 picks the size limit of one event (64 bytes << 0..15),
 * byte 1 seeds how the rest is cut into chunks; the same stream fed whole
 * must give the same events and the same answer, as a stream is cut
 * wherever the network cuts it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kube.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_setup(LOG_ERROR, 0);
  return 0;
}

struct tally {
  unsigned events;
  unsigned long sum; /* of the types, in order: a cheap fingerprint */
};

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
  }
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
  const char *s;
  size_t len, max;
  int rc_whole, rc_cut;

  if (size < 2)
    return 0;
  max = (size_t)64 << (data[0] & 15);
  s = (const char *)data + 2;
  len = size - 2;
  kube_watch_parser_init(&p, max);
  rc_whole = kube_watch_parser_feed(&p, s, len, event_cb, &whole);
  if (rc_whole == 0)
    rc_whole = kube_watch_parser_finish(&p);
  kube_watch_parser_free(&p);
  rc_cut = feed_chunked(s, len, max, data[1], &cut);
  if (rc_whole != rc_cut || whole.events != cut.events || whole.sum != cut.sum)
    abort();
  return 0;
}
