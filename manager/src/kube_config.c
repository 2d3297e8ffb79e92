/* Where the API server is and who we are: a kubeconfig (YAML or JSON,
 * read with libyaml into a jansson tree) or the in-cluster service account
 * directory; and the token file that kubelet rotates under us. */
#include "kube.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "config.h"
#include "kube_int.h"
#include "secret.h"

#define KUBE_MAX_KUBECONFIG (1u << 20)
#define KUBE_MAX_TOKEN (64u << 10)
#define KUBE_MAX_PEM (1u << 20)
/* An alias can make a small document a huge tree: cap the nodes built. */
#define KUBE_YAML_MAX_NODES 100000
#define KUBE_YAML_MAX_DEPTH 64

static void kc_err(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void kc_err(char *err, size_t size, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL || size == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, size, fmt, ap);
  va_end(ap);
}

void kube_config_free(struct kube_config *kc)
{
  if (kc == NULL)
    return;
  free(kc->server);
  free(kc->ca_file);
  free(kc->ca_pem);
  secret_free_str(kc->token);
  free(kc->token_file);
  free(kc->cert_file);
  free(kc->cert_pem);
  free(kc->key_file);
  secret_wipe_free(kc->key_pem, kc->key_pem_len);
  free(kc->namespace_);
  memset(kc, 0, sizeof(*kc));
}

/* YAML to jansson: scalars stay strings, which is all a kubeconfig holds
 * that we read ("true" is compared as text). */
struct kc_yaml {
  yaml_document_t *doc;
  size_t nodes;
};

static json_t *kc_yaml_node(struct kc_yaml *y, yaml_node_t *n, int depth)
{
  yaml_node_item_t *it;
  yaml_node_pair_t *pair;
  json_t *out;

  if (n == NULL || depth > KUBE_YAML_MAX_DEPTH ||
      ++y->nodes > KUBE_YAML_MAX_NODES)
    return NULL;
  switch (n->type) {
  case YAML_SCALAR_NODE:
    return json_stringn((const char *)n->data.scalar.value,
                        n->data.scalar.length);
  case YAML_SEQUENCE_NODE:
    out = json_array();
    for (it = n->data.sequence.items.start;
         out != NULL && it < n->data.sequence.items.top; it++) {
      json_t *v =
          kc_yaml_node(y, yaml_document_get_node(y->doc, *it), depth + 1);

      if (v == NULL || json_array_append_new(out, v) != 0) {
        json_decref(out);
        out = NULL;
      }
    }
    return out;
  case YAML_MAPPING_NODE:
    out = json_object();
    for (pair = n->data.mapping.pairs.start;
         out != NULL && pair < n->data.mapping.pairs.top; pair++) {
      yaml_node_t *k = yaml_document_get_node(y->doc, pair->key);
      json_t *v;

      if (k == NULL || k->type != YAML_SCALAR_NODE) {
        json_decref(out);
        return NULL;
      }
      v = kc_yaml_node(y, yaml_document_get_node(y->doc, pair->value),
                       depth + 1);
      if (v == NULL || json_object_set_new(
                           out, (const char *)k->data.scalar.value, v) != 0) {
        json_decref(out);
        out = NULL;
      }
    }
    return out;
  default:
    return NULL;
  }
}

static json_t *kc_parse_yaml(const char *text, size_t len)
{
  yaml_parser_t parser;
  yaml_document_t doc;
  struct kc_yaml y = {.doc = &doc};
  json_t *root = NULL;

  if (!yaml_parser_initialize(&parser))
    return NULL;
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (yaml_parser_load(&parser, &doc)) {
    root = kc_yaml_node(&y, yaml_document_get_root_node(&doc), 0);
    yaml_document_delete(&doc);
  }
  yaml_parser_delete(&parser);
  return root;
}

/* The entry of list (kubeconfig's [{name, <member>: {...}}]) named name. */
static json_t *kc_named(json_t *root, const char *list, const char *name,
                        const char *member)
{
  json_t *arr = json_object_get(root, list), *e;
  size_t i;

  json_array_foreach(arr, i, e)
  {
    const char *n = json_string_value(json_object_get(e, "name"));

    if (n != NULL && strcmp(n, name) == 0)
      return json_object_get(e, member);
  }
  return NULL;
}

static const char *kc_str(json_t *obj, const char *key)
{
  const char *s = json_string_value(json_object_get(obj, key));

  return s != NULL && s[0] != '\0' ? s : NULL;
}

/* A path from the kubeconfig, relative to its directory unless absolute. */
static char *kc_path(const char *dir, const char *p)
{
  char *out;

  if (p[0] == '/' || dir == NULL)
    return strdup(p);
  if (asprintf(&out, "%s/%s", dir, p) < 0)
    return NULL;
  return out;
}

/* Base64 (-data fields) to a NUL-terminated buffer. */
static int kc_base64(const char *in, char **out, size_t *out_len)
{
  size_t n = strlen(in), cap;
  unsigned char *buf;
  int got;

  if (n == 0 || n > KUBE_MAX_PEM)
    return -1;
  cap = n / 4 * 3 + 4;
  buf = malloc(cap);
  if (buf == NULL)
    return -1;
  got = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
  if (got < 0) {
    free(buf);
    return -1;
  }
  /* EVP_DecodeBlock counts the padding as bytes. */
  while (n > 0 && in[n - 1] == '=' && got > 0) {
    n--;
    got--;
  }
  buf[got] = '\0';
  *out = (char *)buf;
  *out_len = (size_t)got;
  return 0;
}

static int kc_file_or_data(json_t *obj, const char *file_key,
                           const char *data_key, const char *dir, char **file,
                           char **pem, size_t *pem_len)
{
  const char *data = kc_str(obj, data_key), *f = kc_str(obj, file_key);

  if (data != NULL)
    return kc_base64(data, pem, pem_len);
  if (f != NULL) {
    *file = kc_path(dir, f);
    return *file != NULL ? 0 : -1;
  }
  return 0;
}

static int kc_cluster(struct kube_config *kc, json_t *cluster, const char *dir,
                      char *err, size_t err_size)
{
  const char *server = kc_str(cluster, "server"), *insecure;
  size_t n;

  if (server == NULL) {
    kc_err(err, err_size, "cluster has no server");
    return -1;
  }
  kc->server = strdup(server);
  if (kc->server == NULL)
    return -1;
  n = strlen(kc->server);
  while (n > 0 && kc->server[n - 1] == '/')
    kc->server[--n] = '\0';
  insecure = kc_str(cluster, "insecure-skip-tls-verify");
  kc->insecure = insecure != NULL && strcmp(insecure, "true") == 0;
  if (kc_file_or_data(cluster, "certificate-authority",
                      "certificate-authority-data", dir, &kc->ca_file,
                      &kc->ca_pem, &kc->ca_pem_len) != 0) {
    kc_err(err, err_size, "cluster: bad certificate-authority(-data)");
    return -1;
  }
  return 0;
}

static int kc_user(struct kube_config *kc, json_t *user, const char *dir,
                   char *err, size_t err_size)
{
  const char *token = kc_str(user, "token"), *tf = kc_str(user, "tokenFile");

  if (token != NULL) {
    kc->token = strdup(token);
    if (kc->token == NULL)
      return -1;
  } else if (tf != NULL) {
    kc->token_file = kc_path(dir, tf);
    if (kc->token_file == NULL)
      return -1;
  }
  if (kc_file_or_data(user, "client-certificate", "client-certificate-data",
                      dir, &kc->cert_file, &kc->cert_pem,
                      &kc->cert_pem_len) != 0 ||
      kc_file_or_data(user, "client-key", "client-key-data", dir, &kc->key_file,
                      &kc->key_pem, &kc->key_pem_len) != 0) {
    kc_err(err, err_size, "user: bad client-certificate or client-key");
    return -1;
  }
  if ((kc->cert_file || kc->cert_pem) != (kc->key_file || kc->key_pem)) {
    kc_err(err, err_size,
           "user: client-certificate and client-key go together");
    return -1;
  }
  if (json_object_get(user, "exec") != NULL ||
      json_object_get(user, "auth-provider") != NULL) {
    if (kc->token == NULL && kc->token_file == NULL && kc->cert_pem == NULL &&
        kc->cert_file == NULL) {
      kc_err(err, err_size, "user: exec and auth-provider are not supported");
      return -1;
    }
  }
  return 0;
}

static int kc_from_tree(struct kube_config *kc, json_t *root,
                        const char *context, const char *dir, char *err,
                        size_t err_size)
{
  json_t *ctx, *cluster, *user = NULL;
  const char *cname, *uname, *ns;

  if (context == NULL)
    context = kc_str(root, "current-context");
  if (context == NULL) {
    kc_err(err, err_size, "no context given and no current-context");
    return -1;
  }
  ctx = kc_named(root, "contexts", context, "context");
  if (!json_is_object(ctx)) {
    kc_err(err, err_size, "context '%.64s' not found", context);
    return -1;
  }
  cname = kc_str(ctx, "cluster");
  cluster = cname ? kc_named(root, "clusters", cname, "cluster") : NULL;
  if (!json_is_object(cluster)) {
    kc_err(err, err_size, "cluster of context '%.64s' not found", context);
    return -1;
  }
  uname = kc_str(ctx, "user");
  if (uname != NULL) {
    user = kc_named(root, "users", uname, "user");
    if (!json_is_object(user)) {
      kc_err(err, err_size, "user '%.64s' not found", uname);
      return -1;
    }
  }
  if (kc_cluster(kc, cluster, dir, err, err_size) != 0 ||
      (user != NULL && kc_user(kc, user, dir, err, err_size) != 0))
    return -1;
  ns = kc_str(ctx, "namespace");
  if (ns != NULL && (kc->namespace_ = strdup(ns)) == NULL)
    return -1;
  return 0;
}

int kube_config_load_kubeconfig(struct kube_config *kc, const char *path,
                                const char *context, char *err, size_t err_size)
{
  char *text = NULL, *dir = NULL, *slash;
  size_t len = 0;
  json_t *root;
  int rc;

  memset(kc, 0, sizeof(*kc));
  kc_err(err, err_size, "out of memory");
  rc = secret_read_file(path, KUBE_MAX_KUBECONFIG, &text, &len);
  if (rc < 0) {
    kc_err(err, err_size, "%.200s: %s", path, strerror(-rc));
    return -1;
  }
  root = kc_parse_yaml(text, len);
  secret_wipe_free(text, len);
  if (!json_is_object(root)) {
    json_decref(root);
    kc_err(err, err_size, "%.200s: not a kubeconfig (YAML mapping)", path);
    return -1;
  }
  dir = strdup(path);
  if (dir != NULL) {
    slash = strrchr(dir, '/');
    if (slash != NULL)
      *slash = '\0';
    else
      strcpy(dir, ".");
  }
  rc = dir != NULL ? kc_from_tree(kc, root, context, dir, err, err_size) : -1;
  free(dir);
  json_decref(root);
  if (rc != 0)
    kube_config_free(kc);
  return rc;
}

int kube_config_in_cluster(struct kube_config *kc, const char *dir, char *err,
                           size_t err_size)
{
  const char *host = getenv("KUBERNETES_SERVICE_HOST");
  const char *port = getenv("KUBERNETES_SERVICE_PORT");
  char *ns = NULL;
  size_t len;
  int v6;

  memset(kc, 0, sizeof(*kc));
  if (dir == NULL)
    dir = KUBE_SA_DIR;
  if (host == NULL || host[0] == '\0' || port == NULL || port[0] == '\0') {
    kc_err(err, err_size,
           "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set");
    return -1;
  }
  v6 = strchr(host, ':') != NULL;
  if (asprintf(&kc->server, "https://%s%s%s:%s", v6 ? "[" : "", host,
               v6 ? "]" : "", port) < 0 ||
      asprintf(&kc->token_file, "%s/token", dir) < 0 ||
      asprintf(&kc->ca_file, "%s/ca.crt", dir) < 0) {
    kc->server = kc->token_file = kc->ca_file = NULL;
    kc_err(err, err_size, "out of memory");
    goto fail;
  }
  if (access(kc->token_file, R_OK) != 0 || access(kc->ca_file, R_OK) != 0) {
    kc_err(err, err_size, "%.200s: token or ca.crt not readable: %s", dir,
           strerror(errno));
    goto fail;
  }
  if (secret_read_file(kc->token_file, KUBE_MAX_TOKEN, &ns, &len) < 0) {
    kc_err(err, err_size, "%.200s: empty or unreadable token", dir);
    goto fail;
  }
  secret_wipe_free(ns, len);
  ns = NULL;
  {
    char path[4096];

    snprintf(path, sizeof(path), "%s/namespace", dir);
    if (secret_read_file(path, 256, &ns, &len) == 0)
      kc->namespace_ = ns;
  }
  return 0;

fail:
  kube_config_free(kc);
  return -1;
}

/* Token files. */

int kube_token_file_refresh(struct kube_token_file *tf, uint64_t now_ms,
                            uint64_t max_age_ms)
{
  struct stat st;
  char *token;
  size_t len;

  if (stat(tf->path, &st) != 0)
    return -1;
  if (tf->token != NULL && st.st_dev == tf->dev && st.st_ino == tf->ino &&
      st.st_size == tf->size && st.st_mtim.tv_sec == tf->mtime.tv_sec &&
      st.st_mtim.tv_nsec == tf->mtime.tv_nsec &&
      now_ms - tf->read_ms < max_age_ms)
    return 0;
  if (secret_read_file(tf->path, KUBE_MAX_TOKEN, &token, &len) < 0)
    return -1;
  tf->read_ms = now_ms;
  tf->dev = st.st_dev;
  tf->ino = st.st_ino;
  tf->size = st.st_size;
  tf->mtime = st.st_mtim;
  if (tf->token != NULL && strcmp(tf->token, token) == 0) {
    secret_wipe_free(token, len);
    return 0;
  }
  secret_free_str(tf->token);
  tf->token = token;
  return 1;
}

void kube_token_file_free(struct kube_token_file *tf)
{
  free(tf->path);
  secret_free_str(tf->token);
  memset(tf, 0, sizeof(*tf));
}

int kube_config_from_cfg(const struct cfg_kubernetes *c, struct kube_config *kc,
                         struct kube_options *o, char *err, size_t err_size)
{
  int rc;

  if (c->kubeconfig != NULL)
    rc = kube_config_load_kubeconfig(kc, c->kubeconfig, c->context, err,
                                     err_size);
  else
    rc = kube_config_in_cluster(kc, c->service_account_dir, err, err_size);
  if (rc != 0)
    return rc;
  memset(o, 0, sizeof(*o));
  o->qps = c->qps > 0 ? (double)c->qps : -1;
  o->burst = c->burst;
  o->timeout_ms = c->request_timeout_ms;
  o->max_event_bytes = (size_t)c->max_event_bytes;
  o->watch_timeout_s = (unsigned)(c->watch_timeout_ms / 1000);
  return 0;
}
