#ifndef RUNFLEET_KUBE_H
#define RUNFLEET_KUBE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

/* The Kubernetes REST client of runfleetd: where the API server is and who
 * we are (in-cluster service account or a kubeconfig), requests with a
 * client-side rate limit and retries, and list+watch reflectors that relist
 * on 410 Gone. Everything runs on one libuv loop (http_client underneath);
 * kube_watch.c holds the watch stream parser and the reflector,
 * kube_config.c the two ways of finding the API server. */

struct metrics;
struct cfg_kubernetes;

#define KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
/* client-go re-reads a token file about once a minute. */
#define KUBE_TOKEN_REREAD_MS 60000
#define KUBE_DEFAULT_QPS 20
#define KUBE_DEFAULT_BURST 40
#define KUBE_DEFAULT_MAX_EVENT_BYTES (2u << 20)
#define KUBE_DEFAULT_ATTEMPTS 5
#define KUBE_DEFAULT_TIMEOUT_MS 30000
#define KUBE_DEFAULT_WATCH_TIMEOUT_S 300
#define KUBE_DEFAULT_PAGE_SIZE 500
#define KUBE_BACKOFF_BASE_MS 250
#define KUBE_BACKOFF_MAX_MS 30000
#define KUBE_RETRY_AFTER_MAX_MS (5 * 60 * 1000)

/* Error codes besides negative errno values. */
enum {
  /* A POST whose answer was lost or was a 5xx: it may have taken effect,
   * so it was not retried; look the object up before trying again. */
  KUBE_ERR_UNCERTAIN = -4000,
  KUBE_ERR_OVERSIZE = -4001,  /* a watch event over the size limit */
  KUBE_ERR_MALFORMED = -4002, /* a watch line that is not an event */
};

/* Where the API server is and how to authenticate; strings owned. */
struct kube_config {
  char *server;  /* "https://host:port", no trailing / */
  char *ca_file; /* or ca_pem; neither: system CAs */
  char *ca_pem;  /* decoded certificate-authority-data */
  size_t ca_pem_len;
  int insecure;     /* insecure-skip-tls-verify */
  char *token;      /* static bearer token, or NULL */
  char *token_file; /* re-read when it changes, or NULL */
  char *cert_file;  /* client certificate: file or PEM */
  char *cert_pem;
  size_t cert_pem_len;
  char *key_file; /* its key: file or PEM */
  char *key_pem;
  size_t key_pem_len;
  char *namespace_; /* the context's or the service account's, or NULL */
};

/* Reads a kubeconfig (YAML or JSON) for context (NULL: current-context);
 * relative file paths are taken from the kubeconfig's directory. 0, or -1
 * with the reason in err. */
int kube_config_load_kubeconfig(struct kube_config *kc, const char *path,
                                const char *context, char *err,
                                size_t err_size);

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and dir's token, ca.crt and
 * namespace (dir NULL: KUBE_SA_DIR). 0, or -1 with the reason in err. */
int kube_config_in_cluster(struct kube_config *kc, const char *dir, char *err,
                           size_t err_size);

/* Frees (and wipes the secrets of) what kc owns; kc may be zeroed. */
void kube_config_free(struct kube_config *kc);

/* Client behaviour; zeroed members take the KUBE_DEFAULT_* values. */
struct kube_options {
  double qps;               /* token bucket refill per second; < 0: unlimited */
  unsigned burst;           /* bucket size */
  unsigned attempts;        /* tries per request on 429/5xx/transport errors */
  uint64_t timeout_ms;      /* per try */
  size_t max_event_bytes;   /* one watch event, larger: restart */
  unsigned watch_timeout_s; /* timeoutSeconds of each watch */
  uint64_t backoff_base_ms; /* first retry delay before jitter */
  uint64_t backoff_max_ms;  /* cap of retry and re-watch delays */
  struct metrics *metrics;  /* runfleet_kube_* families; may be NULL */
};

/* From runfleetd's backend.kubernetes section: the kubeconfig (and
 * context) or the in-cluster service account, and the limits (qps 0 in the
 * config means no limit). 0, or -1 with the reason in err. */
int kube_config_from_cfg(const struct cfg_kubernetes *c, struct kube_config *kc,
                         struct kube_options *o, char *err, size_t err_size);

struct kube; /* opaque */

/* Creates a client for kc (copied) on loop, or NULL. Declares its metric
 * families in o->metrics. */
struct kube *kube_new(uv_loop_t *loop, const struct kube_config *kc,
                      const struct kube_options *o);

/* Counts requests, retries and watch restarts, relists and events in m's
 * runfleet_kube_* families (declared here) from now on; m must outlive k.
 * For a client made before its owner had the registry: call it before
 * the loop runs again, so that no answer goes uncounted. */
void kube_set_metrics(struct kube *k, struct metrics *m);

/* Fails every request and watch in flight (callbacks run with -ECANCELED;
 * watches stop silently), closes the handles and calls done_cb(arg) when
 * the client may be destroyed. */
void kube_close(struct kube *k, void (*done_cb)(void *arg), void *arg);
void kube_destroy(struct kube *k);

/* The namespace of the config (kubeconfig context or service account), or
 * NULL. */
const char *kube_namespace(const struct kube *k);

/* What a request came to. Pointers are valid during the callback only. */
struct kube_response {
  long status;         /* HTTP status of the last try; 0: none came */
  int error;           /* 0 when status is 2xx, else negative: -ECANCELED,
                          -ETIMEDOUT, -EIO, KUBE_ERR_UNCERTAIN, or -EPROTO
                          for a non-2xx status */
  json_t *object;      /* the decoded body (an object), or NULL */
  const char *reason;  /* Status reason of an error ("AlreadyExists",
                          "Conflict", "NotFound", "Gone", ...) or "" */
  const char *message; /* Status message, or a transport error, or "" */
  unsigned attempts;   /* tries made */
};

/* Called once per accepted request. */
typedef void (*kube_done_cb)(void *arg, const struct kube_response *resp);

/* One request. path starts with '/'; query is "a=b&c=d" (already escaped)
 * or NULL; body is sent as JSON (content_type NULL: application/json).
 * 409 is answered, never retried; 429 and 5xx are retried with jittered
 * backoff (Retry-After honoured) up to attempts, except a POST, which is
 * retried only on 429 or when it never reached the server. Every try
 * waits for the rate limiter. Returns 0 (cb will run once, later) or a
 * negative code (cb never runs). */
int kube_request(struct kube *k, const char *method, const char *path,
                 const char *query, const json_t *body,
                 const char *content_type, kube_done_cb cb, void *arg);

/* Resources the typed helpers know: core/v1 pods, secrets, nodes (not
 * namespaced) and events. */
enum kube_kind {
  KUBE_PODS,
  KUBE_SECRETS,
  KUBE_NODES,
  KUBE_EVENTS,
};

/* The REST path of kind in ns (ignored for nodes), with "/name" when name
 * is not NULL, into out. Returns 0 or -ENAMETOOLONG/-EINVAL (bad name). */
int kube_path(enum kube_kind kind, const char *ns, const char *name, char *out,
              size_t out_size);

enum kube_patch_type {
  KUBE_PATCH_MERGE,     /* application/merge-patch+json */
  KUBE_PATCH_STRATEGIC, /* application/strategic-merge-patch+json */
};

/* CRUD on one object of kind in ns; cb gets the object, or a Status. */
int kube_create(struct kube *k, enum kube_kind kind, const char *ns,
                const json_t *obj, kube_done_cb cb, void *arg);
/* As kube_create, but queued for the rate limiter ahead of every call
 * that was not queued this way (these keep their order among themselves,
 * and a retry keeps its place among them): for what finishes work already
 * begun, as a runner pod's Secret, which the pod waits for, while a burst
 * of pods is queued. */
int kube_create_first(struct kube *k, enum kube_kind kind, const char *ns,
                      const json_t *obj, kube_done_cb cb, void *arg);
int kube_get(struct kube *k, enum kube_kind kind, const char *ns,
             const char *name, kube_done_cb cb, void *arg);
int kube_patch(struct kube *k, enum kube_kind kind, const char *ns,
               const char *name, enum kube_patch_type type, const json_t *patch,
               kube_done_cb cb, void *arg);
/* Deletes with propagationPolicy=Background. */
int kube_delete(struct kube *k, enum kube_kind kind, const char *ns,
                const char *name, kube_done_cb cb, void *arg);

/* Watch events, as the API server names them. */
enum kube_event_type {
  KUBE_EVENT_ADDED,
  KUBE_EVENT_MODIFIED,
  KUBE_EVENT_DELETED,
  KUBE_EVENT_BOOKMARK,
  KUBE_EVENT_ERROR,
};

/* "ADDED", ... */
const char *kube_event_name(enum kube_event_type t);

/* A change of one object seen by a reflector: ADDED, MODIFIED or DELETED
 * (bookmarks and errors stay inside). obj is borrowed. */
typedef void (*kube_event_cb)(void *arg, enum kube_event_type type,
                              json_t *obj);
/* After each (re)list has been delivered as events; relists counts them. */
typedef void (*kube_synced_cb)(void *arg, unsigned relists);

struct kube_watch_options {
  enum kube_kind kind;
  const char *ns;             /* ignored for nodes; NULL: all namespaces */
  const char *label_selector; /* or NULL */
  const char *field_selector; /* or NULL */
  unsigned page_size;         /* list limit; 0: KUBE_DEFAULT_PAGE_SIZE */
  kube_event_cb event_cb;
  kube_synced_cb synced_cb; /* may be NULL */
  void *arg;
};

struct kube_watch; /* opaque */

/* Starts a reflector: list (paginated), deliver, then watch from the list's
 * resourceVersion with bookmarks; on a dropped stream re-watch from the last
 * resourceVersion after a backoff; on 410 Gone relist and deliver only the
 * differences, so every object is seen once per change and its deletion is
 * never missed. NULL when out of memory or closing. */
struct kube_watch *kube_watch_start(struct kube *k,
                                    const struct kube_watch_options *o);

/* Stops and frees w; no callback runs after this returns. May be called
 * from w's own callbacks. */
void kube_watch_stop(struct kube_watch *w);

/* The last resourceVersion w saw (list, event or bookmark), or "". */
const char *kube_watch_resource_version(const struct kube_watch *w);

/* The reflector's current objects, keyed "namespace/name" (borrowed). */
const json_t *kube_watch_cache(const struct kube_watch *w);

/* The streaming parser of watch bodies: newline-separated JSON events, in
 * chunks split anywhere. Pure: no I/O, no loop. */
struct kube_watch_parser {
  char *buf; /* the partial line so far */
  size_t len, cap, max;
  int failed; /* an error was returned: feed refuses until reset */
};

/* Called per complete event; obj is borrowed. Non-zero stops feeding and
 * is returned by kube_watch_parser_feed. */
typedef int (*kube_watch_parser_cb)(void *arg, enum kube_event_type type,
                                    json_t *obj);

/* max: the largest event (line) accepted, in bytes. */
void kube_watch_parser_init(struct kube_watch_parser *p, size_t max);
void kube_watch_parser_free(struct kube_watch_parser *p);
/* Forgets the partial line and any failure (a new stream). */
void kube_watch_parser_reset(struct kube_watch_parser *p);

/* Feeds len bytes: 0, KUBE_ERR_OVERSIZE, KUBE_ERR_MALFORMED (not JSON, not
 * an object with a known type and an object), -ENOMEM, or cb's value. */
int kube_watch_parser_feed(struct kube_watch_parser *p, const char *buf,
                           size_t len, kube_watch_parser_cb cb, void *arg);

/* At the end of a stream: 0 if no partial event is left, else
 * KUBE_ERR_MALFORMED. */
int kube_watch_parser_finish(struct kube_watch_parser *p);

/* The Status fields of an error body, pointing into obj (or ""); code 0
 * when absent. */
void kube_status_fields(const json_t *obj, const char **reason,
                        const char **message, long *code);

#endif
