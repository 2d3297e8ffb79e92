/* The request parser of http_server (http-parser and runfleetd's callbacks
 * and limits) on arbitrary bytes, as one connection's input. The first
 * byte picks how many bytes each read delivers, so requests are also cut
 * at every odd place; the rest is what the client sends. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "http_server.h"
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

static volatile size_t sink;

/* Reads everything the request offers, so a string that is not what the
 * parser promised (unterminated, out of its buffer) shows up in ASan. */
static void handler_cb(void *ctx, const struct http_request *req,
                       struct http_response *resp)
{
  size_t n = 0, i;

  (void)ctx;
  n += strlen(req->method) + strlen(req->path);
  if (req->query != NULL)
    n += strlen(req->query);
  for (i = 0; i < req->nheaders; i++)
    n += strlen(req->headers[i].name) + strlen(req->headers[i].value);
  for (i = 0; i < req->body_len; i++)
    n += (unsigned char)req->body[i];
  if (req->body[req->body_len] != '\0')
    abort();
  if (http_request_header(req, "X-GitHub-Event") != NULL)
    n++;
  sink += n;
  http_response_set(resp, 200, "text/plain", "ok\n", 3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const size_t chunks[8] = {0, 1, 2, 3, 7, 16, 64, 1000};
  static uv_loop_t loop;
  static struct http_server *s;
  const struct http_server_limits limits = {
      .name = "fuzz",
      .max_header_bytes = 4096,
      .max_body_bytes = 16384,
      .max_connections = 16,
      .read_timeout_ms = 10000,
      .idle_timeout_ms = 10000,
      .header_timeout_ms = 5000,
  };

  if (size == 0)
    return 0;
  if (s == NULL) {
    if (uv_loop_init(&loop) != 0)
      abort();
    s = http_server_new(&loop, &limits, handler_cb, NULL);
    if (s == NULL)
      abort();
  }
  http_server_parse_for_test(s, (const char *)data + 1, size - 1,
                             chunks[data[0] & 7]);
  uv_run(&loop, UV_RUN_NOWAIT);
  return 0;
}
