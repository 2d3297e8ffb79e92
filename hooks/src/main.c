#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "git_cache.h"
#include "gpu.h"
#include "hook_config.h"
#include "hook_log.h"
#include "procs.h"
#include "report.h"
#include "sampler.h"
#include "workspace.h"

/* runfleet-hook pre-job | post-job: the work behind hooks/pre-job.sh and
 * hooks/post-job.sh, under a deadline per phase (the runner has none). */

#define MAIN_REPORT_BUDGET_MS 12000u /* kept for the report at the end */
#define MAIN_WATCHDOG_SLACK_S 5u     /* past the deadline: give up */
#define MAIN_SAMPLER_STOP_MS 2000u

/* Entries of RUNNER_TEMP that belong to the runner while a hook runs: the
 * hook's own $GITHUB_ENV file and the job's event payload. */
static const char *const main_temp_keep[] = {"_runner_file_commands",
                                             "_github_workflow", NULL};

static int main_pre_job_phase; /* what the watchdog exits with */

static void main_watchdog_cb(int sig)
{
  static const char pre[] =
      "::error title=runfleet pre-job hook timed out::the pre-job checks did "
      "not finish within RUNFLEET_PRE_JOB_TIMEOUT\n";
  static const char post[] =
      "runfleet-hook: post-job hook timed out, giving up\n";

  (void)sig;
  if (main_pre_job_phase) {
    (void)!write(1, pre, sizeof(pre) - 1);
    _exit(1);
  }
  (void)!write(2, post, sizeof(post) - 1);
  _exit(0);
}

static void main_watchdog(unsigned seconds, int pre_job)
{
  struct sigaction sa;

  main_pre_job_phase = pre_job;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = main_watchdog_cb;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGALRM, &sa, NULL) == 0)
    alarm(seconds + MAIN_WATCHDOG_SLACK_S);
}

static long long main_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double main_wall(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned main_left_ms(long long deadline, unsigned reserve)
{
  long long left = deadline - main_now_ms() - (long long)reserve;

  return left > 1000 ? (unsigned)left : 1000u;
}

static void main_clean(const struct hook_config *cfg)
{
  int rc;

  if (cfg->workspace != NULL) {
    rc = ws_clear(cfg->workspace, NULL);
    if (rc < 0)
      hlog_info("could not remove everything in %s: %s", cfg->workspace,
                strerror(-rc));
  }
  if (cfg->runner_temp != NULL) {
    rc = ws_clear(cfg->runner_temp, main_temp_keep);
    if (rc < 0)
      hlog_info("could not remove everything in %s: %s", cfg->runner_temp,
                strerror(-rc));
  }
}

/* A sampler an earlier job left running has nothing to say to this one. */
static void main_stop_stale_sampler(const char *state_path)
{
  struct sampler_state *st = calloc(1, sizeof(*st));

  if (st == NULL)
    return;
  if (sampler_state_read(state_path, st) == 0 && st->pid > 0)
    (void)sampler_stop((pid_t)st->pid, MAIN_SAMPLER_STOP_MS);
  free(st);
}

static int main_check_disk(const struct hook_config *cfg, uint64_t *free_bytes)
{
  int rc = ws_disk_free(cfg->work_root, free_bytes);

  if (rc < 0) {
    hlog_info("cannot read free space of %s: %s", cfg->work_root,
              strerror(-rc));
    *free_bytes = 0;
    return 0;
  }
  if (cfg->min_free_disk > 0 && *free_bytes < cfg->min_free_disk) {
    hlog_error("Not enough disk space",
               "%llu bytes free under %s on node %s, the pool requires %llu "
               "(RUNFLEET_MIN_FREE_DISK)",
               (unsigned long long)*free_bytes, cfg->work_root, cfg->node,
               (unsigned long long)cfg->min_free_disk);
    return -ENOSPC;
  }
  return 0;
}

static void main_git_cache(const struct hook_config *cfg, long long deadline,
                           struct gcache_result *git)
{
  int rc;

  gcache_update(cfg, main_left_ms(deadline, MAIN_REPORT_BUDGET_MS), git);
  if (git->outcome == GCACHE_DISABLED)
    return;
  if (git->outcome == GCACHE_ERROR) {
    hlog_info("git cache not used: %s", git->message);
    return;
  }
  hlog_info("git cache %s: %llu bytes fetched in %.1f s",
            gcache_outcome_name(git->outcome),
            (unsigned long long)git->bytes_fetched, git->seconds);
  if (cfg->github_env == NULL) {
    hlog_info("GITHUB_ENV is not set, the job cannot use the git cache");
    return;
  }
  rc = gcache_export(cfg->github_env, git->objects);
  if (rc < 0) {
    hlog_info("cannot write %s: %s", cfg->github_env, strerror(-rc));
    git->outcome = GCACHE_ERROR;
    snprintf(git->message, sizeof(git->message), "cannot write GITHUB_ENV");
  }
}

static int main_pre_job(const struct hook_config *cfg)
{
  long long deadline = main_now_ms() + cfg->pre_job_timeout_s * 1000LL;
  struct gcache_result git;
  struct gpu_health health;
  struct sampler_state *st = NULL;
  struct report_started rep;
  char state_path[4200];
  uint64_t free_bytes = 0;
  json_t *body;
  int ok = 1, have_state;
  pid_t sampler;

  main_watchdog(cfg->pre_job_timeout_s, 1);
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    return 1;
  st->started_at = main_wall();
  have_state =
      cfg->state_dir[0] != '\0' &&
      sampler_state_path(cfg->state_dir, state_path, sizeof(state_path)) == 0;
  if (have_state)
    main_stop_stale_sampler(state_path);
  main_clean(cfg);
  if (main_check_disk(cfg, &free_bytes) < 0)
    ok = 0;
  gpu_check_health(cfg, procs_runner_root(cfg->runner_pid), &health);
  if (!health.ok) {
    hlog_error("GPU health check failed", "%s (node %s)", health.message,
               cfg->node);
    ok = 0;
  }
  if (ok) {
    main_git_cache(cfg, deadline, &git);
  } else {
    memset(&git, 0, sizeof(git));
    git.outcome = GCACHE_SKIPPED;
  }
  if (have_state && sampler_state_write(state_path, st) < 0)
    hlog_info("cannot write %s", state_path);
  if (ok && have_state && health.checked) {
    sampler = sampler_start(st->started_at);
    if (sampler < 0)
      hlog_info("cannot start the GPU sampler: %s", strerror(-sampler));
  }
  rep.health = &health;
  rep.git = &git;
  rep.disk_free_bytes = free_bytes;
  rep.ok = ok;
  body = report_started_json(cfg, &rep);
  if (body != NULL)
    (void)report_post(cfg, REPORT_STARTED_PATH, body,
                      main_left_ms(deadline, 0));
  json_decref(body);
  free(st);
  return ok ? 0 : 1;
}

static const char *main_job_status(const struct hook_config *cfg)
{
  if (cfg->job_status != NULL && (strcmp(cfg->job_status, "success") == 0 ||
                                  strcmp(cfg->job_status, "failure") == 0))
    return cfg->job_status;
  if (cfg->job_status != NULL && strcmp(cfg->job_status, "cancelled") == 0)
    return "failure";
  return "unknown";
}

static int main_post_job(const struct hook_config *cfg)
{
  long long deadline = main_now_ms() + cfg->post_job_timeout_s * 1000LL;
  struct report_completed rep;
  struct sampler_state *st;
  char state_path[4200];
  json_t *body;
  int killed;

  main_watchdog(cfg->post_job_timeout_s, 0);
  memset(&rep, 0, sizeof(rep));
  st = calloc(1, sizeof(*st));
  if (st == NULL)
    return 0;
  if (cfg->state_dir[0] != '\0' &&
      sampler_state_path(cfg->state_dir, state_path, sizeof(state_path)) == 0 &&
      sampler_state_read(state_path, st) == 0) {
    if (st->pid > 0 &&
        sampler_stop((pid_t)st->pid, MAIN_SAMPLER_STOP_MS) == 0 &&
        sampler_state_read(state_path, st) < 0)
      hlog_info("the sampler's last state is unreadable");
    if (st->started_at > 0)
      rep.duration_seconds = main_wall() - st->started_at;
    rep.gpu_samples = st->samples;
    rep.gpu_peak_memory_bytes = sampler_peak_memory(st);
    rep.gpu_mean_utilization = sampler_mean_utilization(st);
    /* Read once: the next job on a reused volume starts from nothing. */
    (void)unlink(state_path);
  } else {
    hlog_info("no pre-job state found; duration and GPU use unknown");
  }
  if (cfg->workspace != NULL)
    (void)ws_disk_used(cfg->workspace, &rep.disk_used_bytes);
  killed = procs_kill_leftovers(cfg->tracking_id, 0, cfg->kill_grace_ms);
  if (killed < 0)
    hlog_info("cannot look for leftover processes: %s", strerror(-killed));
  rep.processes_killed = killed > 0 ? killed : 0;
  main_clean(cfg);
  rep.status = main_job_status(cfg);
  body = report_completed_json(cfg, &rep);
  if (body != NULL)
    (void)report_post(cfg, REPORT_COMPLETED_PATH, body,
                      main_left_ms(deadline, 0));
  json_decref(body);
  free(st);
  return 0;
}

int main(int argc, char **argv)
{
  struct hook_config cfg;
  int rc;

  if (argc < 2) {
    fprintf(stderr, "usage: runfleet-hook pre-job|post-job\n");
    return 2;
  }
  hcfg_load(&cfg);
  if (strcmp(argv[1], "sampler") == 0)
    return sampler_main(&cfg, argc, argv);
  if (strcmp(argv[1], "--version") == 0) {
    printf("runfleet-hook %s\n", RUNFLEET_VERSION);
    return 0;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    hlog_info("libcurl will not start; reports are off");
  }
  if (strcmp(argv[1], "pre-job") == 0) {
    rc = main_pre_job(&cfg);
  } else if (strcmp(argv[1], "post-job") == 0) {
    rc = main_post_job(&cfg);
  } else {
    fprintf(stderr, "usage: runfleet-hook pre-job|post-job\n");
    rc = 2;
  }
  curl_global_cleanup();
  return rc;
}
