/* runfleetd: the fleet manager daemon. Startup, signals, reload, shutdown;
 * everything else lives in the modules. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "fleet.h"
#include "log.h"

#define ERRS_SIZE 16384

static const int daemon_signals[] = {SIGTERM, SIGINT, SIGHUP};
#define NSIGNALS (sizeof(daemon_signals) / sizeof(daemon_signals[0]))

struct daemon {
  uv_loop_t loop;
  uv_signal_t signals[NSIGNALS];
  size_t nsignals; /* how many of signals are initialised */
  struct fleet *fleet;
  const char *config_path;
  int stopping;
};

static void usage(FILE *out)
{
  fprintf(out, "usage: runfleetd --config FILE\n"
               "       runfleetd --check-config FILE\n"
               "       runfleetd --version\n");
}

/* --check-config: print every problem, exit 0 only if the file is valid. */
static int check_config(const char *path)
{
  struct config cfg;
  char *errs = malloc(ERRS_SIZE);
  int rc;

  if (errs == NULL)
    return 1;
  errs[0] = '\0';
  memset(&cfg, 0, sizeof(cfg));
  rc = cfg_load(&cfg, path, errs, ERRS_SIZE);
  if (rc == 0) {
    printf("%s: ok (%zu pools)\n", path, cfg.npools);
    cfg_free(&cfg);
  } else {
    fputs(errs, stdout);
    if (rc > 0)
      printf("%s: %d problem%s\n", path, rc, rc == 1 ? "" : "s");
  }
  free(errs);
  return rc == 0 ? 0 : 1;
}

static void signal_cb(uv_signal_t *h, int signum);

static void close_signal_cb(uv_handle_t *h)
{
  (void)h;
}

static void stopped_cb(void *arg)
{
  struct daemon *d = arg;
  size_t i;

  for (i = 0; i < d->nsignals; i++)
    uv_close((uv_handle_t *)&d->signals[i], close_signal_cb);
}

/* Returns 0 when every signal is handled, else a libuv error. */
static int signals_start(struct daemon *d)
{
  size_t i;
  int rc;

  for (i = 0; i < NSIGNALS; i++) {
    rc = uv_signal_init(&d->loop, &d->signals[i]);
    if (rc != 0)
      return rc;
    d->nsignals++;
    d->signals[i].data = d;
    rc = uv_signal_start(&d->signals[i], signal_cb, daemon_signals[i]);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static void signal_cb(uv_signal_t *h, int signum)
{
  struct daemon *d = h->data;

  if (signum == SIGHUP) {
    log_info("main", "SIGHUP: reloading", LOG_S("file", d->config_path));
    fleet_reload(d->fleet, d->config_path);
    return;
  }
  if (d->stopping)
    return;
  d->stopping = 1;
  log_info("main", "shutting down", LOG_I("signal", signum));
  fleet_stop(d->fleet, stopped_cb, d);
}

/* Two listeners of max_connections each, runners' pipes and the journal
 * need more descriptors than the usual soft limit of 1024: take what the
 * hard limit allows, as servers do, up to a bound that keeps runners (who
 * inherit it) from spending long closing descriptors that never were. */
#define MAIN_MAX_NOFILE 65536

static void raise_fd_limit(void)
{
  struct rlimit rl;
  rlim_t want;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  want = rl.rlim_max < MAIN_MAX_NOFILE ? rl.rlim_max : MAIN_MAX_NOFILE;
  if (rl.rlim_cur >= want)
    return;
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    log_warn("main", "cannot raise the open file limit",
             LOG_U("hard", (unsigned long long)rl.rlim_max));
}

static int run(const char *path)
{
  struct daemon d;
  struct config *cfg = calloc(1, sizeof(*cfg));
  char *errs = malloc(ERRS_SIZE);
  int rc = 1;

  memset(&d, 0, sizeof(d));
  d.config_path = path;
  if (cfg == NULL || errs == NULL)
    goto out;
  errs[0] = '\0';
  if (cfg_load(cfg, path, errs, ERRS_SIZE) != 0) {
    fputs(errs, stderr);
    log_error("main", "invalid configuration", LOG_S("file", path));
    goto out;
  }
  log_setup((enum log_level)cfg->log_level, cfg->log_format == CFG_LOG_JSON);
  raise_fd_limit();
  if (uv_loop_init(&d.loop) != 0)
    goto out;
  d.fleet = fleet_new(&d.loop, cfg);
  cfg = NULL; /* owned by the fleet, even when fleet_new failed */
  if (d.fleet == NULL)
    goto loop;
  if (signals_start(&d) != 0 || fleet_start(d.fleet) != 0) {
    log_error("main", "cannot start", LOG_NONE);
    d.stopping = 1;
    fleet_stop(d.fleet, stopped_cb, &d);
  } else {
    log_info("main", "runfleetd started", LOG_S("version", RUNFLEET_VERSION));
    rc = 0;
  }
  uv_run(&d.loop, UV_RUN_DEFAULT);
  fleet_destroy(d.fleet);
loop:
  if (uv_loop_close(&d.loop) != 0) {
    log_error("main", "handles left open at exit", LOG_NONE);
    rc = 1;
  }
out:
  if (cfg != NULL) {
    cfg_free(cfg);
    free(cfg);
  }
  free(errs);
  return rc;
}

/* jansson's parser keeps its own copies of the strings it reads (the
 * lexer's buffer, each value): installation tokens and JIT configs among
 * them. Every block it frees is wiped first. */
static void json_wipe_free(void *p)
{
  if (p == NULL)
    return;
  explicit_bzero(p, malloc_usable_size(p));
  free(p);
}

int main(int argc, char **argv)
{
  int rc;

  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("runfleetd %s\n", RUNFLEET_VERSION);
    return 0;
  }
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || !strcmp(argv[1], "-h"))) {
    usage(stdout);
    return 0;
  }
  if (argc != 3) {
    usage(stderr);
    return 2;
  }
  /* Runners are child processes; a write to a vanished peer must be an
   * error, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  json_set_alloc_funcs(malloc, json_wipe_free);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
    return 1;
  if (strcmp(argv[1], "--check-config") == 0)
    rc = check_config(argv[2]);
  else if (strcmp(argv[1], "--config") == 0)
    rc = run(argv[2]);
  else {
    usage(stderr);
    rc = 2;
  }
  curl_global_cleanup();
  return rc;
}
