/* runfleet dev: reservations of GPU dev servers from the command line.
 * See cli_dev.h. */
#include "cli_dev.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "auth.h"
#include "cli_format.h"
#include "devserver.h"

#define CD_ANSWER_MAX (16u * 1024u * 1024u)
#define CD_TIMEOUT_S 30L
#define CD_WAIT_POLL_MS 1000
#define CD_SSH_ARGS_MAX 64

const char cli_dev_usage[] =
    "       runfleet dev reserve --flavor F --hours H [--name N]\n"
    "                [--github-user U | --key FILE] [--wait]\n"
    "       runfleet dev list [--user U] [--state S] [--json]\n"
    "       runfleet dev show|cancel|ssh-config ID\n"
    "       runfleet dev extend ID HOURS\n"
    "       runfleet dev add-key ID FILE\n"
    "       runfleet dev ssh ID [-i FILE] [-o OPTION]... [-- COMMAND...]\n"
    "  (dev: a devservers.users token in --token-file or $RUNFLEET_TOKEN)\n";

struct cd_answer {
  char *data;
  size_t len;
  int too_big;
};

static size_t cd_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
  struct cd_answer *a = arg;
  size_t n = size * nmemb;
  char *p;

  if (n > CD_ANSWER_MAX - a->len) {
    a->too_big = 1;
    return 0;
  }
  p = realloc(a->data, a->len + n + 1);
  if (p == NULL)
    return 0;
  a->data = p;
  memcpy(a->data + a->len, ptr, n);
  a->len += n;
  a->data[a->len] = '\0';
  return n;
}

struct cd_ctx {
  const char *url;
  const char *token;
};

/* method url+path with body (may be NULL). Returns the HTTP status, or -1
 * when the daemon cannot be reached (said on stderr). */
static long cd_call(const struct cd_ctx *c, const char *method,
                    const char *path, const char *body, struct cd_answer *a)
{
  struct curl_slist *h = NULL, *h2;
  char auth[AUTH_MAX_TOKEN + 32], url[CLI_URL_MAX + 256];
  char err[CURL_ERROR_SIZE] = "";
  CURL *curl = curl_easy_init();
  long status = -1;
  CURLcode rc;

  if (curl == NULL)
    return -1;
  snprintf(url, sizeof(url), "%s/api/v1/devservers%s", c->url, path);
  if (c->token != NULL) {
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
    h = curl_slist_append(NULL, auth);
    OPENSSL_cleanse(auth, sizeof(auth));
  }
  h2 = curl_slist_append(h, "Content-Type: application/json");
  if (h2 != NULL)
    h = h2;
  if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, err) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cd_write_cb) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, a) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_TIMEOUT, CD_TIMEOUT_S) != CURLE_OK ||
      (body != NULL &&
       curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body) != CURLE_OK)) {
    fprintf(stderr, "runfleet: cannot set up the request\n");
    goto out;
  }
  rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    fprintf(stderr, "runfleet: cannot reach runfleetd at %s: %s\n", url,
            err[0] != '\0' ? err : curl_easy_strerror(rc));
    goto out;
  }
  if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
    status = -1;
out:
  curl_slist_free_all(h);
  curl_easy_cleanup(curl);
  return status;
}

/* A non-2xx answer: its message on stderr. */
static void cd_refused(const char *what, long status, const struct cd_answer *a)
{
  json_t *doc = a->data != NULL ? json_loads(a->data, 0, NULL) : NULL;
  const char *msg = json_string_value(json_object_get(doc, "message"));
  char clean[256];
  size_t i;

  snprintf(clean, sizeof(clean), "%s", msg != NULL ? msg : "");
  for (i = 0; clean[i] != '\0'; i++)
    if ((unsigned char)clean[i] < 0x20 || clean[i] == 0x7f)
      clean[i] = '?';
  fprintf(stderr, "runfleet: %s: HTTP %ld%s%s\n", what, status,
          clean[0] != '\0' ? ": " : "", clean);
  json_decref(doc);
}

/* Calls and parses a JSON answer; NULL after saying why. */
static json_t *cd_json(const struct cd_ctx *c, const char *method,
                       const char *path, const char *body, const char *what)
{
  struct cd_answer a = {0};
  long status = cd_call(c, method, path, body, &a);
  json_t *doc = NULL;

  if (status >= 200 && status < 300) {
    doc = json_loads(a.data != NULL ? a.data : "", 0, NULL);
    if (doc == NULL)
      fprintf(stderr, "runfleet: %s: the answer is not JSON\n", what);
  } else if (status > 0) {
    cd_refused(what, status, &a);
  }
  free(a.data);
  return doc;
}

static const char *cd_str(const json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));

  return s != NULL && s[0] != '\0' ? s : "-";
}

/* One reservation in a few lines. */
static void cd_print_one(const json_t *d)
{
  const json_t *ssh = json_object_get(d, "ssh");
  const json_t *pos = json_object_get(d, "queue_position");
  const json_t *eta = json_object_get(d, "eta_seconds");

  printf("%s  %s  %s  %s\n", cd_str(d, "id"), cd_str(d, "user"),
         cd_str(d, "flavor"), cd_str(d, "state"));
  if (json_is_integer(pos))
    printf("  queue position %lld, starts in %s\n",
           (long long)json_integer_value(pos),
           json_is_integer(eta) ? "(see eta_seconds)" : "unknown time");
  if (json_is_object(ssh))
    printf("  ssh -p %lld %s@%s   (runfleet dev ssh %s)\n",
           (long long)json_integer_value(json_object_get(ssh, "port")),
           cd_str(ssh, "user"), cd_str(ssh, "host"), cd_str(d, "id"));
  if (strcmp(cd_str(d, "expires_at"), "-") != 0)
    printf("  expires %s\n", cd_str(d, "expires_at"));
  if (strcmp(cd_str(d, "reason"), "-") != 0)
    printf("  %s\n", cd_str(d, "reason"));
}

/* The first line of file, for --key and add-key. */
static int cd_read_key(const char *file, char *out, size_t size)
{
  FILE *f = fopen(file, "r");

  if (f == NULL) {
    fprintf(stderr, "runfleet: cannot read %s: %s\n", file, strerror(errno));
    return -1;
  }
  if (fgets(out, (int)size, f) == NULL)
    out[0] = '\0';
  fclose(f);
  out[strcspn(out, "\r\n")] = '\0';
  if (out[0] == '\0') {
    fprintf(stderr, "runfleet: %s holds no key\n", file);
    return -1;
  }
  return 0;
}

static int cd_wait(const struct cd_ctx *c, const char *id, json_t **last)
{
  char path[64];
  json_t *d;
  const char *state;
  struct timespec ts = {CD_WAIT_POLL_MS / 1000,
                        (CD_WAIT_POLL_MS % 1000) * 1000000L};

  snprintf(path, sizeof(path), "/%s", id);
  for (;;) {
    d = cd_json(c, "GET", path, NULL, "show");
    if (d == NULL)
      return 1;
    state = cd_str(d, "state");
    if (strcmp(state, "queued") != 0 && strcmp(state, "preparing") != 0) {
      *last = d;
      return strcmp(state, "active") == 0 ? 0 : 1;
    }
    json_decref(d);
    nanosleep(&ts, NULL);
  }
}

static int cd_reserve(const struct cd_ctx *c, int argc, char **argv)
{
  const char *flavor = NULL, *hours = NULL, *name = NULL, *gh = NULL;
  const char *keyfile = NULL;
  char key[DEV_KEY_MAX + 2], *body, *end;
  json_t *req, *d, *done = NULL;
  int i, wait = 0, rc;
  double h;

  for (i = 0; i < argc; i++) {
    const char **slot = strcmp(argv[i], "--flavor") == 0        ? &flavor
                        : strcmp(argv[i], "--hours") == 0       ? &hours
                        : strcmp(argv[i], "--name") == 0        ? &name
                        : strcmp(argv[i], "--github-user") == 0 ? &gh
                        : strcmp(argv[i], "--key") == 0         ? &keyfile
                                                                : NULL;
    if (strcmp(argv[i], "--wait") == 0) {
      wait = 1;
      continue;
    }
    if (slot == NULL || i + 1 >= argc) {
      fprintf(stderr, "runfleet: dev reserve: unexpected '%s'\n", argv[i]);
      return 2;
    }
    *slot = argv[++i];
  }
  h = hours != NULL ? strtod(hours, &end) : 0;
  if (flavor == NULL || hours == NULL || *end != '\0' || h <= 0 ||
      (gh != NULL && keyfile != NULL)) {
    fprintf(stderr, "runfleet: dev reserve needs --flavor and --hours (a "
                    "number), and at most one of --github-user and --key\n");
    return 2;
  }
  if (keyfile != NULL && cd_read_key(keyfile, key, sizeof(key)) != 0)
    return 1;
  req = json_pack("{s:s, s:f}", "flavor", flavor, "hours", h);
  if (req == NULL)
    return 1;
  if (name != NULL)
    json_object_set_new(req, "name", json_string(name));
  if (gh != NULL)
    json_object_set_new(req, "github_user", json_string(gh));
  if (keyfile != NULL)
    json_object_set_new(req, "key", json_string(key));
  body = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  d = body != NULL ? cd_json(c, "POST", "", body, "dev reserve") : NULL;
  free(body);
  if (d == NULL)
    return 1;
  cd_print_one(d);
  rc = 0;
  if (wait) {
    rc = cd_wait(c, cd_str(d, "id"), &done);
    if (done != NULL)
      cd_print_one(done);
    json_decref(done);
  }
  json_decref(d);
  fflush(stdout);
  return rc;
}

static int cd_list(const struct cd_ctx *c, int argc, char **argv)
{
  char path[256] = "";
  const char *user = NULL, *state = NULL;
  json_t *doc, *list, *d;
  int i, json = 0;
  size_t k;

  for (i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
      user = argv[++i];
    else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
      state = argv[++i];
    else {
      fprintf(stderr, "runfleet: dev list: unexpected '%s'\n", argv[i]);
      return 2;
    }
  }
  snprintf(path, sizeof(path), "%s%s%.64s%s%s%.32s", user || state ? "?" : "",
           user ? "user=" : "", user ? user : "", user && state ? "&" : "",
           state ? "state=" : "", state ? state : "");
  doc = cd_json(c, "GET", path, NULL, "dev list");
  if (doc == NULL)
    return 1;
  list = json_object_get(doc, "devservers");
  if (json) {
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text != NULL)
      printf("%s\n", text);
    free(text);
  } else {
    printf("%-16s  %-12s  %-10s  %-9s  %-5s  %-20s  %s\n", "ID", "USER",
           "FLAVOR", "STATE", "QUEUE", "EXPIRES", "PORT");
    json_array_foreach(list, k, d)
    {
      json_t *pos = json_object_get(d, "queue_position");
      json_t *ssh = json_object_get(d, "ssh");
      printf("%-16s  %-12.12s  %-10.10s  %-9s  %-5lld  %-20s  %lld\n",
             cd_str(d, "id"), cd_str(d, "user"), cd_str(d, "flavor"),
             cd_str(d, "state"),
             json_is_integer(pos) ? (long long)json_integer_value(pos) : 0LL,
             cd_str(d, "expires_at"),
             json_is_object(ssh)
                 ? (long long)json_integer_value(json_object_get(ssh, "port"))
                 : 0LL);
    }
  }
  json_decref(doc);
  fflush(stdout);
  return 0;
}

/* ssh to an active one: exec ssh with its port, user and host. */
static int cd_ssh(const struct cd_ctx *c, const char *id, int argc, char **argv)
{
  char path[64], port[16], target[256], alias[64];
  char *args[CD_SSH_ARGS_MAX];
  json_t *d, *ssh;
  int i, n = 0;

  snprintf(path, sizeof(path), "/%.20s", id);
  d = cd_json(c, "GET", path, NULL, "dev ssh");
  if (d == NULL)
    return 1;
  ssh = json_object_get(d, "ssh");
  if (!json_is_object(ssh)) {
    fprintf(stderr, "runfleet: dev ssh: %s is %s, not active\n", id,
            cd_str(d, "state"));
    json_decref(d);
    return 1;
  }
  snprintf(port, sizeof(port), "%lld",
           (long long)json_integer_value(json_object_get(ssh, "port")));
  snprintf(target, sizeof(target), "%s@%s", cd_str(ssh, "user"),
           cd_str(ssh, "host"));
  snprintf(alias, sizeof(alias), "HostKeyAlias=runfleet-%s", cd_str(d, "id"));
  json_decref(d);
  args[n++] = "ssh";
  args[n++] = "-p";
  args[n++] = port;
  args[n++] = "-o";
  args[n++] = alias;
  for (i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
    if ((strcmp(argv[i], "-i") != 0 && strcmp(argv[i], "-o") != 0) ||
        i + 1 >= argc || n + 2 >= CD_SSH_ARGS_MAX - 3) {
      fprintf(stderr, "runfleet: dev ssh: unexpected '%s'\n", argv[i]);
      return 2;
    }
    args[n++] = argv[i];
    args[n++] = argv[++i];
  }
  args[n++] = target;
  if (i < argc)
    for (i++; i < argc && n < CD_SSH_ARGS_MAX - 1; i++)
      args[n++] = argv[i];
  args[n] = NULL;
  fflush(stdout);
  execvp("ssh", args);
  fprintf(stderr, "runfleet: cannot run ssh: %s\n", strerror(errno));
  return 1;
}

/* The commands that take an id and maybe one more word. */
static int cd_one(const struct cd_ctx *c, const char *cmd, int argc,
                  char **argv)
{
  char path[96], body[DEV_KEY_MAX + 64], key[DEV_KEY_MAX + 2], *end;
  const char *method = "GET";
  struct cd_answer a = {0};
  json_t *d, *req;
  char *text;
  long status;
  double h;

  if (argc < 1 || strlen(argv[0]) > DEV_ID_LEN)
    return 2;
  if (strcmp(cmd, "ssh") == 0)
    return cd_ssh(c, argv[0], argc - 1, argv + 1);
  snprintf(path, sizeof(path), "/%s", argv[0]);
  body[0] = '\0';
  if (strcmp(cmd, "ssh-config") == 0) {
    snprintf(path, sizeof(path), "/%s/ssh-config", argv[0]);
    status = cd_call(c, "GET", path, NULL, &a);
    if (status == 200)
      fputs(a.data != NULL ? a.data : "", stdout);
    else if (status > 0)
      cd_refused("dev ssh-config", status, &a);
    free(a.data);
    return status == 200 ? 0 : 1;
  }
  if (strcmp(cmd, "cancel") == 0) {
    method = "DELETE";
  } else if (strcmp(cmd, "extend") == 0) {
    h = argc == 2 ? strtod(argv[1], &end) : 0;
    if (argc != 2 || *end != '\0' || h <= 0)
      return 2;
    snprintf(path, sizeof(path), "/%s/extend", argv[0]);
    snprintf(body, sizeof(body), "{\"hours\":%.6f}", h);
    method = "POST";
  } else if (strcmp(cmd, "add-key") == 0) {
    if (argc != 2 || cd_read_key(argv[1], key, sizeof(key)) != 0)
      return argc != 2 ? 2 : 1;
    snprintf(path, sizeof(path), "/%s/keys", argv[0]);
    req = json_pack("{s:s}", "key", key);
    text = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    snprintf(body, sizeof(body), "%s", text != NULL ? text : "");
    free(text);
    method = "POST";
  } else if (strcmp(cmd, "show") != 0) {
    return 2;
  }
  d = cd_json(c, method, path, body[0] != '\0' ? body : NULL, cmd);
  if (d == NULL)
    return 1;
  cd_print_one(d);
  json_decref(d);
  fflush(stdout);
  return 0;
}

int cli_dev_run(int argc, char **argv, const char *url, const char *token)
{
  struct cd_ctx c = {url, token};
  int rc;

  if (argc < 1) {
    fputs(cli_dev_usage, stderr);
    return 2;
  }
  if (strcmp(argv[0], "reserve") == 0)
    rc = cd_reserve(&c, argc - 1, argv + 1);
  else if (strcmp(argv[0], "list") == 0)
    rc = cd_list(&c, argc - 1, argv + 1);
  else
    rc = cd_one(&c, argv[0], argc - 1, argv + 1);
  if (rc == 2)
    fprintf(stderr, "runfleet: dev %s: usage:\n%s", argv[0], cli_dev_usage);
  return rc;
}
