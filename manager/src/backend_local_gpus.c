#include "backend_local.h"
#include "backend_local_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "log.h"
#include "unittest.h"

/* The local backend's GPUs: "nvidia-smi -L" run once at creation. */

#define LOCAL_SMI_TIMEOUT_MS 10000u /* a wedged driver hangs nvidia-smi */
#define LOCAL_SMI_MAX 65536u        /* bytes of nvidia-smi output read */

/* --- GPU discovery ------------------------------------------------------ */

UNITTEST size_t backend_local_parse_gpus(const char *text, int *gpus,
                                         size_t max)
{
  const char *p = text;
  size_t n = 0;

  while (*p != '\0' && n < max) {
    const char *eol = strchr(p, '\n');
    size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
    unsigned idx;
    int used = 0;

    /* "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"; MIG lines are
     * indented and name slices of a GPU already counted. */
    if (len > 4 && strncmp(p, "GPU ", 4) == 0 &&
        sscanf(p, "GPU %u:%n", &idx, &used) == 1 && used > 0 &&
        (size_t)used <= len && idx < 65536u)
      gpus[n++] = (int)idx;
    p += len;
    if (*p == '\n')
      p++;
  }
  return n;
}

struct local_smi {
  uv_process_t process;
  uv_pipe_t out;
  uv_timer_t timer;
  int exited;
  int64_t exit_status;
  int term_signal;
  size_t len;
  char buf[LOCAL_SMI_MAX + 1];
};

static void smi_close(uv_handle_t *handle)
{
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

/* The timer goes last: it bounds the wait for both exit and EOF. */
static void smi_maybe_done(struct local_smi *s)
{
  if (s->exited && uv_is_closing((uv_handle_t *)&s->out))
    smi_close((uv_handle_t *)&s->timer);
}

static void smi_alloc_cb(uv_handle_t *handle, size_t hint, uv_buf_t *buf)
{
  struct local_smi *s = handle->data;

  (void)hint;
  /* Past the limit, bytes land on the terminator slot and are dropped. */
  if (s->len < LOCAL_SMI_MAX)
    *buf = uv_buf_init(s->buf + s->len, (unsigned)(LOCAL_SMI_MAX - s->len));
  else
    *buf = uv_buf_init(s->buf + LOCAL_SMI_MAX, 1);
}

static void smi_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
  struct local_smi *s = stream->data;

  (void)b;
  if (nread > 0 && s->len < LOCAL_SMI_MAX)
    s->len += (size_t)nread;
  if (nread < 0) {
    smi_close((uv_handle_t *)&s->out);
    smi_maybe_done(s);
  }
}

static void smi_exit_cb(uv_process_t *process, int64_t exit_status,
                        int term_signal)
{
  struct local_smi *s = process->data;

  s->exited = 1;
  s->exit_status = exit_status;
  s->term_signal = term_signal;
  smi_close((uv_handle_t *)&s->process);
  smi_maybe_done(s);
}

static void smi_timer_cb(uv_timer_t *timer)
{
  struct local_smi *s = timer->data;
  int rc;

  log_warn("local", "nvidia-smi timed out",
           LOG_U("timeout_ms", LOCAL_SMI_TIMEOUT_MS));
  if (!s->exited) {
    rc = uv_process_kill(&s->process, SIGKILL);
    if (rc < 0)
      log_warn("local", "cannot kill nvidia-smi",
               LOG_S("error", uv_err_name(rc)));
  }
  smi_close((uv_handle_t *)&s->out);
  smi_maybe_done(s);
}

/* Spawns program -L on loop and runs the loop until it is reaped and its
 * output read, or the timeout kills it. */
static int smi_run(uv_loop_t *loop, struct local_smi *s, const char *program)
{
  char *args[3] = {(char *)program, "-L", NULL};
  uv_stdio_container_t stdio[3];
  uv_process_options_t opts;
  int rc;

  rc = uv_pipe_init(loop, &s->out, 0);
  if (rc < 0)
    return rc;
  rc = uv_timer_init(loop, &s->timer);
  if (rc < 0) {
    smi_close((uv_handle_t *)&s->out);
    goto out;
  }
  memset(&opts, 0, sizeof(opts));
  opts.file = program;
  opts.args = args;
  opts.exit_cb = smi_exit_cb;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&s->out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  rc = uv_spawn(loop, &s->process, &opts);
  if (rc < 0) {
    /* A failed spawn still holds an initialized handle. */
    smi_close((uv_handle_t *)&s->process);
    smi_close((uv_handle_t *)&s->out);
    smi_close((uv_handle_t *)&s->timer);
    goto out;
  }
  if (uv_read_start((uv_stream_t *)&s->out, smi_alloc_cb, smi_read_cb) < 0)
    smi_close((uv_handle_t *)&s->out);
  if (uv_timer_start(&s->timer, smi_timer_cb, LOCAL_SMI_TIMEOUT_MS, 0) < 0)
    smi_timer_cb(&s->timer); /* cannot bound the wait: do not wait */
out:
  uv_run(loop, UV_RUN_DEFAULT);
  return rc;
}

/* Runs "nvidia-smi -L" (or $RUNFLEET_NVIDIA_SMI) on a private loop, so
 * creation stays synchronous, and parses its device list into gpus. A
 * missing or failing program means a machine without GPUs. */
int local_discover_gpus(int *gpus, size_t max, size_t *ngpus)
{
  const char *program = getenv("RUNFLEET_NVIDIA_SMI");
  struct local_smi *s;
  uv_loop_t loop;
  int rc;

  *ngpus = 0;
  if (program == NULL || program[0] == '\0')
    program = "nvidia-smi";
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  s->process.data = s->out.data = s->timer.data = s;
  rc = uv_loop_init(&loop);
  if (rc < 0) {
    log_error("local", "cannot create a loop for nvidia-smi",
              LOG_S("error", uv_err_name(rc)));
    free(s);
    return rc;
  }
  rc = smi_run(&loop, s, program);
  if (uv_loop_close(&loop) < 0)
    log_warn("local", "nvidia-smi loop left handles open", LOG_NONE);
  if (rc == UV_ENOENT) {
    log_info("local", "nvidia-smi not found, no GPUs",
             LOG_S("program", program));
  } else if (rc < 0) {
    log_warn("local", "cannot run nvidia-smi, no GPUs",
             LOG_S("program", program), LOG_S("error", uv_err_name(rc)));
  } else if (s->exit_status != 0 || s->term_signal != 0) {
    log_warn("local", "nvidia-smi failed, no GPUs", LOG_S("program", program),
             LOG_I("exit_status", s->exit_status),
             LOG_I("signal", s->term_signal));
  } else {
    s->buf[s->len] = '\0';
    *ngpus = backend_local_parse_gpus(s->buf, gpus, max);
    log_info("local", "GPUs discovered", LOG_S("program", program),
             LOG_U("gpus", *ngpus));
  }
  free(s);
  return 0;
}
