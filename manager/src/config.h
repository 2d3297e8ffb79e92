#ifndef RUNFLEET_CONFIG_H
#define RUNFLEET_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* The validated configuration of runfleetd, parsed from YAML. Every string
 * is owned by the struct and freed by cfg_free(). See docs/CONFIG.md. */

#define CFG_MAX_LABELS 32
#define CFG_MAX_POOLS 64
#define CFG_MAX_GPUS 64
#define CFG_MAX_ADMIN_TOKENS 64
#define CFG_MAX_ADMIN_URL 120
#define CFG_SHA256_LEN 32

/* Defaults applied when a key is absent; docs/CONFIG.md lists the same. */
#define CFG_DEFAULT_LISTEN "127.0.0.1:8080"
/* The admin listener (metrics, API, status page, hook reports) stays on
 * loopback unless configured otherwise. */
#define CFG_DEFAULT_ADMIN_LISTEN "127.0.0.1:9090"
#define CFG_DEFAULT_ADMIN_AUTH CFG_ADMIN_AUTH_MUTATIONS
#define CFG_DEFAULT_STATE_DIR "/var/lib/runfleet"
#define CFG_DEFAULT_LOG_LEVEL CFG_LOG_INFO
#define CFG_DEFAULT_LOG_FORMAT CFG_LOG_LOGFMT
#define CFG_DEFAULT_MAX_HEADER_BYTES (16 * 1024)
#define CFG_DEFAULT_MAX_BODY_BYTES (25 * 1024 * 1024)
#define CFG_DEFAULT_MAX_CONNECTIONS 1024
#define CFG_DEFAULT_READ_TIMEOUT_MS 10000
#define CFG_DEFAULT_IDLE_TIMEOUT_MS 60000
#define CFG_DEFAULT_HEADER_TIMEOUT_MS 5000
/* GitHub delivers from a handful of addresses, one connection per delivery
 * at a time; a proxy in front puts every client behind one address, so the
 * default leaves it an eighth of max_connections. */
#define CFG_DEFAULT_MAX_CONNECTIONS_PER_PEER 128
#define CFG_DEFAULT_MAX_FAILURES_PER_MINUTE 30
#define CFG_DEFAULT_API_URL "https://api.github.com"
#define CFG_DEFAULT_RUNNER_GROUP_ID 1
/* GitHub allows 80 content-creating requests a minute (a JIT config is
 * one): the default pace stays under it. */
#define CFG_DEFAULT_MUTATIONS_PER_MINUTE 75
#define CFG_DEFAULT_BACKEND CFG_BACKEND_LOCAL
#define CFG_DEFAULT_WORK_ROOT "/var/lib/runfleet/runners"
#define CFG_DEFAULT_GPUS_AUTO 1
#define CFG_DEFAULT_KUBE_NAMESPACE "runfleet-runners"
#define CFG_DEFAULT_LEADER_ELECTION 1
#define CFG_DEFAULT_LEASE_NAME "runfleetd"
#define CFG_DEFAULT_LEASE_DURATION_MS 15000
#define CFG_DEFAULT_RENEW_DEADLINE_MS 10000
#define CFG_DEFAULT_RETRY_PERIOD_MS 2000
#define CFG_DEFAULT_KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define CFG_DEFAULT_KUBE_QPS 20
#define CFG_DEFAULT_KUBE_BURST 40
#define CFG_DEFAULT_KUBE_MAX_EVENT_BYTES (2 * 1024 * 1024)
#define CFG_DEFAULT_KUBE_REQUEST_TIMEOUT_MS (30 * 1000)
#define CFG_DEFAULT_KUBE_WATCH_TIMEOUT_MS (5 * 60 * 1000)
#define CFG_DEFAULT_GPU_UNHEALTHY_ACTION CFG_GPU_UNHEALTHY_CORDON
#define CFG_DEFAULT_GPU_UNHEALTHY_TAINT_KEY "runfleet.dev/gpu-unhealthy"
#define CFG_DEFAULT_GPU_UNHEALTHY_TAINT_VALUE "true"
#define CFG_DEFAULT_GPU_UNHEALTHY_TAINT_EFFECT "NoSchedule"
#define CFG_DEFAULT_RUNNER_START_TIMEOUT_MS (10 * 60 * 1000)
#define CFG_DEFAULT_RECONCILE_INTERVAL_MS 1000
#define CFG_DEFAULT_POOL_MIN_IDLE 0
#define CFG_DEFAULT_POOL_IDLE_TIMEOUT_MS (300 * 1000)
#define CFG_DEFAULT_POOL_PRIORITY 0
#define CFG_DEFAULT_POOL_CPUS 1
#define CFG_DEFAULT_POOL_MEMORY_BYTES 0
#define CFG_DEFAULT_POOL_GPUS 0
#define CFG_DEFAULT_TOLERATION_OPERATOR "Equal"
/* Pool defaults of the kubernetes backend (pools[].kubernetes). The
 * service account and priority class are the ones kubernetes/base and the
 * chart ship; the runner user is actions/runner's "runner" (uid 1001). */
#define CFG_DEFAULT_POOL_SHM_BYTES (1024ULL * 1024 * 1024)
#define CFG_DEFAULT_POOL_RUNNER_ENTRYPOINT "/home/runner/run.sh"
#define CFG_DEFAULT_POOL_SERVICE_ACCOUNT "runfleet-runner"
#define CFG_DEFAULT_POOL_PRIORITY_CLASS "runfleet-runner"
#define CFG_DEFAULT_POOL_CACHE_HOST_PATH "/var/cache/runfleet"
#define CFG_DEFAULT_POOL_DIND_IMAGE "docker:27-dind"
#define CFG_DEFAULT_POOL_PENDING_TIMEOUT_MS (5 * 60 * 1000)
#define CFG_DEFAULT_POOL_IMAGE_PULL_FAILURES 3
#define CFG_DEFAULT_POOL_RUN_AS_USER 1001

/* A configuration file larger than this is refused unread. */
#define CFG_MAX_FILE_BYTES (1024 * 1024)

enum cfg_backend_type { CFG_BACKEND_LOCAL, CFG_BACKEND_KUBERNETES };
enum cfg_log_format { CFG_LOG_LOGFMT, CFG_LOG_JSON };
enum cfg_log_level { CFG_LOG_DEBUG, CFG_LOG_INFO, CFG_LOG_WARN, CFG_LOG_ERROR };
/* Which admin calls need a bearer token: mutating ones (POST, PUT, PATCH,
 * DELETE), or every one but the probes. */
enum cfg_admin_auth { CFG_ADMIN_AUTH_MUTATIONS, CFG_ADMIN_AUTH_ALL };

struct cfg_kv {
  char *key;
  char *value;
};

struct cfg_toleration {
  char *key;
  char *operator_; /* "Exists" or "Equal" */
  char *value;     /* NULL with Exists */
  char *effect;    /* NULL means all effects */
};

/* How a pool's runners become pods (backend kubernetes only). */
struct cfg_pool_kube {
  uint64_t shm_bytes;    /* memory-backed /dev/shm; default 1Gi */
  int dind;              /* docker: dind adds a Docker-in-Docker sidecar */
  char *entrypoint;      /* the runner's start script in the image */
  char *service_account; /* default runfleet-runner */
  char *priority_class;  /* default runfleet-runner */
  char *cache_host_path; /* node directory mounted at /var/cache/runfleet */
  char *dind_image;      /* default docker:27-dind */
  uint64_t pending_timeout_ms;  /* a pod Pending longer is replaced */
  unsigned image_pull_failures; /* in a row: the pool stops creating */
  int64_t run_as_user;          /* non-root uid of the runner container */
};

struct cfg_pool {
  char *name;
  char *labels[CFG_MAX_LABELS]; /* lower-cased, "self-hosted" always first */
  size_t nlabels;
  unsigned max_runners;
  unsigned min_idle;        /* <= max_runners */
  uint64_t idle_timeout_ms; /* "300s", "5m", "1h" or a number of seconds */
  int priority;             /* higher is served first */
  unsigned cpus;            /* CPU slots per runner, >= 1 */
  uint64_t memory_bytes;    /* "4Gi", "512Mi"; 0 = not limited */
  unsigned gpus;            /* GPUs per runner */
  char *runner_command;     /* local backend; NULL with kubernetes */
  char *runner_image;       /* kubernetes backend; NULL with local */
  struct cfg_kv *node_selector;
  size_t nnode_selector;
  struct cfg_toleration *tolerations;
  size_t ntolerations;
  struct cfg_pool_kube kube; /* pools[].kubernetes */
  unsigned line;             /* where the pool starts, for later messages */
};

struct cfg_github {
  char *api_url;  /* default https://api.github.com, no trailing / */
  int64_t app_id; /* 0 when a PAT is used */
  char *app_private_key_file; /* PEM; NULL with a PAT */
  int64_t installation_id;
  char *pat_file;                /* NULL with an App */
  char *webhook_secret_file;     /* required */
  char *org;                     /* exactly one of org and repo */
  char *repo;                    /* "owner/name" */
  int64_t runner_group_id;       /* default 1 (the Default group) */
  unsigned mutations_per_minute; /* pacing of POST/DELETE, default 75 */
};

struct cfg_local {
  char *work_root;        /* default /var/lib/runfleet/runners */
  int gpus_auto;          /* 1: discover with nvidia-smi -L */
  int gpus[CFG_MAX_GPUS]; /* listed GPU indices when !gpus_auto */
  size_t ngpus;
  unsigned cpu_slots; /* default: number of online CPUs */
  char *hook_started; /* ACTIONS_RUNNER_HOOK_JOB_STARTED, may be NULL */
  char *hook_completed;
};

/* What runfleetd does to a node whose runner failed its pre-job GPU check
 * (docs/GPU-SETUP.md): cordon it, taint it, or only keep its GPUs out of
 * its own capacity. */
enum cfg_gpu_unhealthy_action {
  CFG_GPU_UNHEALTHY_CORDON,
  CFG_GPU_UNHEALTHY_TAINT,
  CFG_GPU_UNHEALTHY_NONE
};

struct cfg_gpu_unhealthy {
  enum cfg_gpu_unhealthy_action action;
  char *taint_key;    /* with action taint; defaults above */
  char *taint_value;  /* may be "" */
  char *taint_effect; /* NoSchedule or NoExecute */
};

struct cfg_kubernetes {
  char *namespace_;
  int leader_election;
  char *lease_name;
  /* Leader election (leader.h): how long a holder's record stays live,
   * how long a leader keeps acting without a renewal, how often each
   * replica tries. renew_deadline < lease_duration, retry < renew. */
  uint64_t lease_duration_ms;
  uint64_t renew_deadline_ms;
  uint64_t retry_period_ms;
  /* How runfleetd reaches the API server: a kubeconfig (and context), or,
   * when kubeconfig is NULL, in-cluster with the service account mounted
   * at service_account_dir. */
  char *kubeconfig;
  char *context;               /* NULL: the kubeconfig's current-context */
  char *service_account_dir;   /* default CFG_DEFAULT_KUBE_SA_DIR */
  unsigned qps;                /* client-side requests per second; 0: none */
  unsigned burst;              /* requests above qps in a burst, >= 1 */
  uint64_t max_event_bytes;    /* one watch event; larger restarts the watch */
  uint64_t request_timeout_ms; /* one try of one request */
  uint64_t watch_timeout_ms;   /* each watch's timeoutSeconds */
  struct cfg_gpu_unhealthy gpu_unhealthy;
};

/* Each listener applies these on its own. */
struct cfg_limits {
  size_t max_header_bytes;    /* default 16 KiB -> 431 */
  size_t max_body_bytes;      /* default 25 MiB (GitHub's cap) -> 413 */
  unsigned max_connections;   /* default 1024 */
  uint64_t read_timeout_ms;   /* default 10000: a request must arrive within */
  uint64_t idle_timeout_ms;   /* default 60000: keep-alive idle close */
  uint64_t header_timeout_ms; /* default 5000: a request head within */
  unsigned max_connections_per_peer; /* default 128, per client address */
  unsigned max_failures_per_minute;  /* bad signatures/tokens per address */
};

/* An admin bearer token, known only by the SHA-256 of its text. */
struct cfg_admin_token {
  char *name; /* for logs: who called */
  unsigned char sha256[CFG_SHA256_LEN];
};

struct cfg_admin {
  enum cfg_admin_auth auth;                            /* default mutations */
  struct cfg_admin_token tokens[CFG_MAX_ADMIN_TOKENS]; /* inline and file */
  size_t ntokens;
  char *tokens_file; /* lines "NAME SHA256HEX"; NULL when absent */
};

/* What recovery does (see docs/RELIABILITY.md): redeliver missed webhooks
 * and scan for queued jobs no webhook announced, within a budget. */
#define CFG_MAX_RECOVERY_REPOS 64
#define CFG_DEFAULT_RECOVERY_ENABLED 1
#define CFG_DEFAULT_RECOVERY_INTERVAL_MS (5 * 60 * 1000)
/* GitHub keeps deliveries for 3 days. */
#define CFG_DEFAULT_RECOVERY_WINDOW_MS (72ull * 3600 * 1000)
#define CFG_DEFAULT_RECOVERY_CALL_BUDGET 200
#define CFG_DEFAULT_RECOVERY_PRIMARY_RESERVE 500
#define CFG_DEFAULT_RECOVERY_WAIT_THRESHOLD_MS (2 * 60 * 1000)
#define CFG_DEFAULT_RECOVERY_SEEN_WITHIN_MS (24ull * 3600 * 1000)
/* GitHub gives a delivery 10 s to be answered; one listed later than that
 * is done. */
#define CFG_DEFAULT_RECOVERY_CURSOR_SETTLE_MS (15 * 1000)

struct cfg_recovery {
  int enabled;                /* default true */
  uint64_t interval_ms;       /* between periodic runs, default 5m */
  uint64_t window_ms;         /* deliveries looked at without a cursor */
  unsigned call_budget;       /* GitHub requests one run may make */
  unsigned primary_reserve;   /* recovery waits at or below this remaining */
  uint64_t wait_threshold_ms; /* a queued job waiting this long with
                                 capacity free triggers a run */
  uint64_t seen_within_ms;    /* repositories with jobs this recent */
  uint64_t cursor_settle_ms;  /* the cursor passes deliveries this old */
  char *repositories[CFG_MAX_RECOVERY_REPOS]; /* scanned always */
  size_t nrepositories;
};

/* GPU developer servers (devservers:, docs/CONFIG.md and
 * docs/DEVSERVERS.md): flavors users reserve by the hour, the users and
 * their tokens, and how the GPUs are shared with CI. */
#define CFG_MAX_FLAVORS 32
#define CFG_MAX_DEV_USERS 256
#define CFG_MAX_DEV_WARNINGS 8
#define CFG_MAX_FLAVOR_GPUS 8
#define CFG_MAX_DEV_HOURS (7 * 24)
#define CFG_DEFAULT_DEV_KEYS_URL "https://github.com/{user}.keys"
#define CFG_DEFAULT_DEV_SSHD "/usr/sbin/sshd"
#define CFG_DEFAULT_DEV_RUN_AS "runfleet"
#define CFG_DEFAULT_DEV_QUEUED_TIMEOUT_MS (24ull * 3600 * 1000)
#define CFG_DEFAULT_DEV_PREPARING_TIMEOUT_MS (5 * 60 * 1000)
#define CFG_DEFAULT_DEV_EXPIRY_GRACE_MS (60 * 1000)
#define CFG_DEFAULT_DEV_MIN_DURATION_MS (5 * 60 * 1000)
#define CFG_DEFAULT_DEV_LISTEN "127.0.0.1"
#define CFG_DEFAULT_FLAVOR_CPUS 1
#define CFG_DEFAULT_FLAVOR_MAX_HOURS 8
#define CFG_DEFAULT_FLAVOR_MAX_EXTEND_HOURS 8
#define CFG_DEFAULT_FLAVOR_PER_USER_MAX 1
#define CFG_DEFAULT_FLAVOR_PRIORITY 0
/* No cap on the GPUs dev servers hold together. */
#define CFG_DEV_GPUS_UNLIMITED 0xffffffffu

enum cfg_dev_role { CFG_DEV_ROLE_USER, CFG_DEV_ROLE_ADMIN };

struct cfg_flavor {
  char *name;
  unsigned gpus;             /* 1 to 8, on one node */
  unsigned cpus;             /* CPU slots, >= 1 */
  uint64_t memory_bytes;     /* 0 = not limited */
  unsigned max_hours;        /* longest reservation */
  unsigned max_extend_hours; /* all extensions of one reservation together */
  unsigned per_user_max;     /* live reservations of one user */
  int priority;              /* against pools[].priority: higher first */
  char *command;             /* local: runs instead of sshd; NULL: sshd */
  unsigned line;
};

struct cfg_dev_user {
  char *name;        /* who, in the API and logs */
  char *github_user; /* whose public keys go into authorized_keys */
  unsigned char token_sha256[CFG_SHA256_LEN];
  enum cfg_dev_role role; /* admin sees and changes every reservation */
};

struct cfg_devservers {
  int enabled; /* the section is present */
  struct cfg_flavor flavors[CFG_MAX_FLAVORS];
  size_t nflavors;
  struct cfg_dev_user users[CFG_MAX_DEV_USERS];
  size_t nusers;
  char *keys_url; /* "{user}" becomes the GitHub user name */
  char *sshd;     /* local backend: the sshd binary */
  char *run_as;   /* local backend: the user dev servers run as under root */
  uint64_t warnings_ms[CFG_MAX_DEV_WARNINGS]; /* before expiry, decreasing */
  size_t nwarnings;
  uint64_t queued_timeout_ms;     /* queued longer: failed */
  uint64_t preparing_timeout_ms;  /* preparing longer: failed */
  uint64_t expiry_grace_ms;       /* after expires_at before the kill */
  unsigned ci_min_gpus;           /* GPUs dev servers never take from CI */
  unsigned max_gpus;              /* dev servers together; or UNLIMITED */
  uint64_t min_duration_ms;       /* shortest reservation */
  char *listen;                   /* local backend: sshd's address */
  unsigned port_first, port_last; /* sshd ports; 0, 0: ephemeral */
};

enum cfg_journal_sync { CFG_JOURNAL_SYNC_FULL, CFG_JOURNAL_SYNC_NORMAL };

/* journal: what was accepted, kept across restarts (journal.h). */
struct cfg_journal {
  int enabled;                /* default on */
  char *path;                 /* default <state_dir>/journal.db */
  enum cfg_journal_sync sync; /* default full */
  uint64_t max_bytes;         /* 0: no limit but the disk's */
};

struct config {
  char *path;
  char *listen;       /* public: "host:port", default 127.0.0.1:8080 */
  char *admin_listen; /* admin: "host:port", default 127.0.0.1:9090 */
  char *admin_url;    /* how runners reach admin_listen; NULL: derived */
  struct cfg_admin admin;
  enum cfg_log_level log_level;
  enum cfg_log_format log_format;
  char *state_dir; /* default /var/lib/runfleet */
  struct cfg_limits limits;
  struct cfg_journal journal;
  struct cfg_github github;
  enum cfg_backend_type backend;
  struct cfg_local local;
  struct cfg_kubernetes kubernetes;
  struct cfg_pool pools[CFG_MAX_POOLS];
  size_t npools;
  uint64_t runner_start_timeout_ms; /* a runner that never takes a job */
  uint64_t reconcile_interval_ms;   /* scheduler tick, default 1000 */
  struct cfg_recovery recovery;
  struct cfg_devservers devservers;
};

/* Returns the flavor named name, or NULL. */
const struct cfg_flavor *cfg_flavor_find(const struct config *cfg,
                                         const char *name);

/* Parses and validates path into cfg. On failure writes every problem, one
 * "file:line: message" per line, to errs (if not NULL), returns the number of
 * problems (> 0) and leaves cfg freed. Returns 0 on success, -1 if the file
 * cannot be read (also reported in errs). */
int cfg_load(struct config *cfg, const char *path, char *errs,
             size_t errs_size);

/* Same as cfg_load for an in-memory document; name is used in messages. */
int cfg_parse(struct config *cfg, const char *name, const char *text,
              size_t len, char *errs, size_t errs_size);

/* Frees everything cfg owns; cfg may be zeroed or partly filled. */
void cfg_free(struct config *cfg);

/* Returns the pool named name, or NULL. */
const struct cfg_pool *cfg_pool_find(const struct config *cfg,
                                     const char *name);

#ifdef RUNFLEET_UNITTEST
/* "250ms", "30s", "5m", "1h", "1h30m" or bare seconds -> ms; 0 or -1. */
int cfg_parse_duration(const char *s, uint64_t *ms);
/* "512Mi", "4Gi", "1G", "100k" or bare bytes -> bytes; 0 or -1. */
int cfg_parse_size(const char *s, uint64_t *bytes);
/* Decimal integer, optional sign, nothing else; 0, -1 (syntax) or -2
 * (out of int64 range). */
int cfg_parse_int(const char *s, int64_t *out);
/* 0 if s is "host:port" or "[v6]:port" with port 1-65535, else -1. */
int cfg_check_listen(const char *s);
/* 0 if a and b (both valid listen addresses) can be bound together, -1
 * when they are the same port on overlapping hosts. */
int cfg_check_listen_pair(const char *a, const char *b);
/* 64 hex digits -> 32 bytes; 0 or -1. */
int cfg_parse_sha256(const char *hex, unsigned char *out);
#endif

#endif
