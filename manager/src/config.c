/* YAML -> validated struct config. The document is loaded with libyaml's
 * document API (so every node knows its line) and walked section by section
 * against a fixed schema. Every problem is collected, none stops the others;
 * they are reported sorted by line as "file:line: message". */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "config_parse.h"
#include "unittest.h"

static const char *const cfg_level_names[] = {"debug", "info", "warn", "error",
                                              NULL};
static const char *const cfg_format_names[] = {"logfmt", "json", NULL};
static const char *const cfg_backend_names[] = {"local", "kubernetes", NULL};
static const char *const cfg_operator_names[] = {"Exists", "Equal", NULL};
static const char *const cfg_sync_names[] = {"full", "normal", NULL};
static const char *const cfg_admin_auth_names[] = {"mutations", "all", NULL};
static const char *const cfg_effect_names[] = {"NoSchedule", "PreferNoSchedule",
                                               "NoExecute", NULL};

static void cfg_parse_log(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"level", "format", NULL};
  yaml_node_t *map = cfg_map_get(p, root, "log");
  int v;

  if (map == NULL || cfg_map_check(p, map, "log", keys) < 0)
    return;
  if (cfg_get_enum(p, map, "log", "level", cfg_level_names, &v) == 1)
    p->cfg->log_level = (enum cfg_log_level)v;
  if (cfg_get_enum(p, map, "log", "format", cfg_format_names, &v) == 1)
    p->cfg->log_format = (enum cfg_log_format)v;
}

static void cfg_parse_limits(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"max_header_bytes",
                                     "max_body_bytes",
                                     "max_connections",
                                     "read_timeout",
                                     "idle_timeout",
                                     "header_timeout",
                                     "max_connections_per_peer",
                                     "max_failures_per_minute",
                                     NULL};
  struct cfg_limits *l = &p->cfg->limits;
  yaml_node_t *map = cfg_map_get(p, root, "limits");
  uint64_t n;

  if (map == NULL || cfg_map_check(p, map, "limits", keys) < 0)
    return;
  if (cfg_get_size(p, map, "limits", "max_header_bytes", 1024, 1 << 20, &n) ==
      1)
    l->max_header_bytes = (size_t)n;
  if (cfg_get_size(p, map, "limits", "max_body_bytes", 1024, 1 << 30, &n) == 1)
    l->max_body_bytes = (size_t)n;
  cfg_get_uint(p, map, "limits", "max_connections", 1, 1000000,
               &l->max_connections);
  cfg_get_duration(p, map, "limits", "read_timeout", 10, CFG_MS_HOUR,
                   &l->read_timeout_ms);
  cfg_get_duration(p, map, "limits", "idle_timeout", 10, CFG_MS_DAY,
                   &l->idle_timeout_ms);
  cfg_get_duration(p, map, "limits", "header_timeout", 10, CFG_MS_HOUR,
                   &l->header_timeout_ms);
  cfg_get_uint(p, map, "limits", "max_connections_per_peer", 0, 1000000,
               &l->max_connections_per_peer);
  cfg_get_uint(p, map, "limits", "max_failures_per_minute", 0, 1000000,
               &l->max_failures_per_minute);
}

static int cfg_read_file(const char *path, char **out, size_t *len, char *why,
                         size_t why_size);

/* Adds a token; where says where it came from, for messages. */
static void cfg_add_token(struct cfg_parser *p, unsigned line,
                          const char *where, const char *name, size_t name_len,
                          const char *hex)
{
  struct cfg_admin *a = &p->cfg->admin;
  struct cfg_admin_token *t;
  size_t i;

  if (!cfg_is_token_name(name, name_len)) {
    cfg_err(p, line,
            "%s: token name '%.*s' must be 1 to 64 characters of "
            "[A-Za-z0-9._-]",
            where, (int)(name_len < 64 ? name_len : 64), name);
    return;
  }
  for (i = 0; i < a->ntokens; i++)
    if (strlen(a->tokens[i].name) == name_len &&
        strncmp(a->tokens[i].name, name, name_len) == 0) {
      cfg_err(p, line, "%s: duplicate token name '%.*s'", where, (int)name_len,
              name);
      return;
    }
  if (a->ntokens == CFG_MAX_ADMIN_TOKENS) {
    cfg_err(p, line, "%s: at most %d admin tokens", where,
            CFG_MAX_ADMIN_TOKENS);
    return;
  }
  t = &a->tokens[a->ntokens];
  if (cfg_parse_sha256(hex, t->sha256) < 0) {
    cfg_err(p, line,
            "%s: sha256 of '%.*s' must be 64 hex digits (the SHA-256 of "
            "the token, as sha256sum prints it)",
            where, (int)name_len, name);
    return;
  }
  t->name = strndup(name, name_len);
  if (t->name == NULL) {
    cfg_err(p, line, "%s: out of memory", where);
    return;
  }
  a->ntokens++;
}

static void cfg_parse_token_list(struct cfg_parser *p, yaml_node_t *admin)
{
  static const char *const keys[] = {"name", "sha256", NULL};
  yaml_node_t *seq = cfg_map_get(p, admin, "tokens");
  yaml_node_item_t *item;
  size_t i = 0;

  if (seq == NULL)
    return;
  if (seq->type != YAML_SEQUENCE_NODE) {
    cfg_err(p, cfg_line(seq),
            "admin.tokens: expected a list of {name, sha256}");
    return;
  }
  for (item = seq->data.sequence.items.start;
       item < seq->data.sequence.items.top; item++, i++) {
    yaml_node_t *v = cfg_node(p, *item);
    char prefix[40];
    char *name = NULL, *hex = NULL;

    if (v == NULL)
      continue;
    snprintf(prefix, sizeof(prefix), "admin.tokens[%zu]", i);
    if (v->type != YAML_MAPPING_NODE) {
      cfg_err(p, cfg_line(v), "%s: expected {name, sha256}", prefix);
      continue;
    }
    cfg_map_check(p, v, prefix, keys);
    cfg_require(p, v, prefix, "name", cfg_line(v));
    cfg_require(p, v, prefix, "sha256", cfg_line(v));
    if (cfg_get_str(p, v, prefix, "name", &name) == 1 &&
        cfg_get_str(p, v, prefix, "sha256", &hex) == 1)
      cfg_add_token(p, cfg_line(v), prefix, name, strlen(name), hex);
    free(name);
    free(hex);
  }
}

/* Lines "NAME SHA256HEX"; blank lines and lines from '#' are skipped. */
static void cfg_parse_tokens_file(struct cfg_parser *p, unsigned line)
{
  const char *path = p->cfg->admin.tokens_file;
  char why[128], where[CFG_PATH_MAX + 160];
  char *text = NULL, *cur, *end;
  size_t len = 0;
  unsigned n = 0;

  if (cfg_read_file(path, &text, &len, why, sizeof(why)) < 0) {
    cfg_err(p, line, "admin.tokens_file: %.128s: %s", path, why);
    return;
  }
  for (cur = text; cur < text + len; cur = end + 1) {
    char *name, *hex, *rest;
    size_t name_len;

    n++;
    end = memchr(cur, '\n', (size_t)(text + len - cur));
    if (end == NULL)
      end = text + len;
    *end = '\0';
    if (strchr(cur, '#') != NULL)
      *strchr(cur, '#') = '\0';
    name = cur + strspn(cur, " \t\r");
    if (*name == '\0')
      continue;
    name_len = strcspn(name, " \t\r");
    hex = name + name_len + strspn(name + name_len, " \t\r");
    rest = hex + strcspn(hex, " \t\r");
    snprintf(where, sizeof(where), "admin.tokens_file: %.128s:%u", path, n);
    if (*hex == '\0' || rest[strspn(rest, " \t\r")] != '\0') {
      cfg_err(p, line, "%s: expected 'NAME SHA256HEX'", where);
      continue;
    }
    *rest = '\0';
    cfg_add_token(p, line, where, name, name_len, hex);
  }
  free(text);
}

static void cfg_parse_admin(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"auth", "tokens", "tokens_file", NULL};
  struct cfg_admin *a = &p->cfg->admin;
  yaml_node_t *map = cfg_map_get(p, root, "admin");
  unsigned line = cfg_key_line(p, root, "admin");
  int v;

  if (map == NULL || cfg_map_check(p, map, "admin", keys) < 0)
    return;
  if (cfg_get_enum(p, map, "admin", "auth", cfg_admin_auth_names, &v) == 1)
    a->auth = (enum cfg_admin_auth)v;
  cfg_parse_token_list(p, map);
  if (cfg_get_str(p, map, "admin", "tokens_file", &a->tokens_file) == 1)
    cfg_parse_tokens_file(p, cfg_key_line(p, map, "tokens_file"));
  if (a->auth == CFG_ADMIN_AUTH_ALL && a->ntokens == 0)
    cfg_err(p, line,
            "admin.auth: 'all' needs at least one token (admin.tokens or "
            "admin.tokens_file)");
}

static void cfg_parse_top_scalars(struct cfg_parser *p, yaml_node_t *root)
{
  struct config *cfg = p->cfg;

  if (cfg_get_str(p, root, "", "listen", &cfg->listen) == 1 &&
      cfg_check_listen(cfg->listen) < 0)
    cfg_err(p, cfg_key_line(p, root, "listen"),
            "listen: '%.64s' is not host:port (like 127.0.0.1:8080 or "
            "[::1]:8080)",
            cfg->listen);
  if (cfg_get_str(p, root, "", "admin_listen", &cfg->admin_listen) == 1 &&
      cfg_check_listen(cfg->admin_listen) < 0)
    cfg_err(p, cfg_key_line(p, root, "admin_listen"),
            "admin_listen: '%.64s' is not host:port (like 127.0.0.1:9090 or "
            "[::1]:9090)",
            cfg->admin_listen);
  if (cfg_get_str(p, root, "", "admin_url", &cfg->admin_url) == 1 &&
      ((strncmp(cfg->admin_url, "http://", 7) != 0 &&
        strncmp(cfg->admin_url, "https://", 8) != 0) ||
       strlen(cfg->admin_url) > CFG_MAX_ADMIN_URL ||
       strpbrk(cfg->admin_url, " \t\"'\\") != NULL))
    cfg_err(p, cfg_key_line(p, root, "admin_url"),
            "admin_url: '%.64s' must be an http:// or https:// URL of at most "
            "%d characters",
            cfg->admin_url, CFG_MAX_ADMIN_URL);
  {
    const char *pub = cfg->listen != NULL ? cfg->listen : CFG_DEFAULT_LISTEN;
    const char *adm = cfg->admin_listen != NULL ? cfg->admin_listen
                                                : CFG_DEFAULT_ADMIN_LISTEN;
    unsigned line = cfg_key_line(p, root, "admin_listen");

    if (line == 0)
      line = cfg_key_line(p, root, "listen");
    if (cfg_check_listen(pub) == 0 && cfg_check_listen(adm) == 0 &&
        cfg_check_listen_pair(pub, adm) < 0)
      cfg_err(p, line ? line : 1,
              "admin_listen: '%.64s' overlaps listen '%.64s': the public and "
              "the admin listener need different addresses",
              adm, pub);
  }
  cfg_get_str(p, root, "", "state_dir", &cfg->state_dir);
  cfg_get_duration(p, root, "", "runner_start_timeout", CFG_MS_SECOND,
                   CFG_MS_DAY, &cfg->runner_start_timeout_ms);
  cfg_get_duration(p, root, "", "reconcile_interval", 10, CFG_MS_HOUR,
                   &cfg->reconcile_interval_ms);
}

static void cfg_parse_app(struct cfg_parser *p, yaml_node_t *gh)
{
  static const char *const keys[] = {"id", "private_key_file",
                                     "installation_id", NULL};
  struct cfg_github *g = &p->cfg->github;
  yaml_node_t *app = cfg_map_get(p, gh, "app");
  unsigned line;

  if (app == NULL || cfg_map_check(p, app, "github.app", keys) < 0)
    return;
  line = cfg_key_line(p, gh, "app");
  cfg_require(p, app, "github.app", "id", line);
  cfg_require(p, app, "github.app", "private_key_file", line);
  cfg_require(p, app, "github.app", "installation_id", line);
  cfg_get_int(p, app, "github.app", "id", 1, INT64_MAX, &g->app_id);
  cfg_get_file(p, app, "github.app", "private_key_file",
               &g->app_private_key_file);
  cfg_get_int(p, app, "github.app", "installation_id", 1, INT64_MAX,
              &g->installation_id);
}

static void cfg_parse_api_url(struct cfg_parser *p, yaml_node_t *gh)
{
  char *url;
  size_t n;

  if (cfg_get_str(p, gh, "github", "api_url", &p->cfg->github.api_url) != 1)
    return;
  url = p->cfg->github.api_url;
  n = strlen(url);
  while (n > 0 && url[n - 1] == '/')
    url[--n] = '\0';
  if ((strncmp(url, "http://", 7) != 0 || n == 7) &&
      (strncmp(url, "https://", 8) != 0 || n == 8))
    cfg_err(p, cfg_key_line(p, gh, "api_url"),
            "github.api_url: '%.64s' must start with http:// or https:// and "
            "name a host",
            url);
  else if (strpbrk(url, " \t") != NULL)
    cfg_err(p, cfg_key_line(p, gh, "api_url"),
            "github.api_url: must not contain spaces");
}

static void cfg_parse_scope(struct cfg_parser *p, yaml_node_t *gh,
                            unsigned line)
{
  struct cfg_github *g = &p->cfg->github;
  const char *slash;

  if (cfg_get_str(p, gh, "github", "org", &g->org) == 1 &&
      !cfg_is_github_name(g->org, strlen(g->org), 0))
    cfg_err(p, cfg_key_line(p, gh, "org"),
            "github.org: '%.64s' is not an organization name", g->org);
  if (cfg_get_str(p, gh, "github", "repo", &g->repo) == 1) {
    slash = strchr(g->repo, '/');
    if (slash == NULL ||
        !cfg_is_github_name(g->repo, (size_t)(slash - g->repo), 0) ||
        !cfg_is_github_name(slash + 1, strlen(slash + 1), 1))
      cfg_err(p, cfg_key_line(p, gh, "repo"),
              "github.repo: '%.64s' is not owner/name", g->repo);
  }
  if (cfg_map_get(p, gh, "org") != NULL && cfg_map_get(p, gh, "repo") != NULL)
    cfg_err(p, cfg_key_line(p, gh, "repo"),
            "github.repo: org and repo are mutually exclusive");
  else if (cfg_map_get(p, gh, "org") == NULL &&
           cfg_map_get(p, gh, "repo") == NULL)
    cfg_err(p, line, "github: one of org or repo is required");
}

static void cfg_parse_github(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {
      "api_url", "app",  "pat_file",        "webhook_secret_file",
      "org",     "repo", "runner_group_id", "mutations_per_minute",
      NULL};
  struct cfg_github *g = &p->cfg->github;
  yaml_node_t *gh = cfg_map_get(p, root, "github");
  unsigned line = cfg_key_line(p, root, "github");

  if (gh == NULL) {
    cfg_err(p, line ? line : cfg_line(root),
            "github: required (webhook_secret_file, app or pat_file, org or "
            "repo)");
    return;
  }
  if (cfg_map_check(p, gh, "github", keys) < 0)
    return;
  cfg_parse_api_url(p, gh);
  cfg_parse_app(p, gh);
  cfg_get_file(p, gh, "github", "pat_file", &g->pat_file);
  if (cfg_map_get(p, gh, "app") != NULL &&
      cfg_map_get(p, gh, "pat_file") != NULL)
    cfg_err(p, cfg_key_line(p, gh, "pat_file"),
            "github.pat_file: app and pat_file are mutually exclusive");
  else if (cfg_map_get(p, gh, "app") == NULL &&
           cfg_map_get(p, gh, "pat_file") == NULL)
    cfg_err(p, line, "github: one of app or pat_file is required");
  cfg_require(p, gh, "github", "webhook_secret_file", line);
  cfg_get_file(p, gh, "github", "webhook_secret_file", &g->webhook_secret_file);
  cfg_parse_scope(p, gh, line);
  cfg_get_int(p, gh, "github", "runner_group_id", 1, INT64_MAX,
              &g->runner_group_id);
  cfg_get_uint(p, gh, "github", "mutations_per_minute", 1, 10000,
               &g->mutations_per_minute);
}

static void cfg_parse_gpu_list(struct cfg_parser *p, yaml_node_t *seq,
                               struct cfg_local *local)
{
  yaml_node_item_t *item;
  size_t i = 0, j;
  int ok = 1;

  for (item = seq->data.sequence.items.start;
       item < seq->data.sequence.items.top; item++, i++) {
    yaml_node_t *v = cfg_node(p, *item);
    int64_t n;

    if (v == NULL)
      continue;
    if (v->type != YAML_SCALAR_NODE ||
        v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
        cfg_parse_int(cfg_text(v), &n) < 0 || n < 0 || n > CFG_MAX_GPU_INDEX) {
      cfg_err(p, cfg_line(v),
              "backend.local.gpus[%zu]: expected a GPU index (0 to %d)", i,
              CFG_MAX_GPU_INDEX);
      ok = 0;
      continue;
    }
    if (local->ngpus == CFG_MAX_GPUS) {
      cfg_err(p, cfg_line(v), "backend.local.gpus: at most %d GPUs",
              CFG_MAX_GPUS);
      ok = 0;
      break;
    }
    for (j = 0; j < local->ngpus && local->gpus[j] != (int)n; j++)
      ;
    if (j < local->ngpus) {
      cfg_err(p, cfg_line(v), "backend.local.gpus[%zu]: GPU %d listed twice", i,
              (int)n);
      ok = 0;
      continue;
    }
    local->gpus[local->ngpus++] = (int)n;
  }
  p->gpus_ok = ok;
}

static void cfg_parse_gpus(struct cfg_parser *p, yaml_node_t *map,
                           struct cfg_local *local)
{
  yaml_node_t *v = cfg_map_get(p, map, "gpus");

  p->gpus_ok = 1;
  if (v == NULL)
    return;
  if (v->type == YAML_SCALAR_NODE && strcmp(cfg_text(v), "auto") == 0) {
    local->gpus_auto = 1;
  } else if (v->type == YAML_SCALAR_NODE && strcmp(cfg_text(v), "none") == 0) {
    local->gpus_auto = 0;
  } else if (v->type == YAML_SEQUENCE_NODE) {
    local->gpus_auto = 0;
    cfg_parse_gpu_list(p, v, local);
  } else {
    cfg_err(p, cfg_line(v),
            "backend.local.gpus: expected auto, none or a list of GPU "
            "indices");
    p->gpus_ok = 0;
  }
}

static void cfg_parse_local(struct cfg_parser *p, yaml_node_t *be)
{
  static const char *const keys[] = {
      "work_root", "gpus", "cpu_slots", "hook_started", "hook_completed", NULL};
  struct cfg_local *local = &p->cfg->local;
  yaml_node_t *map = cfg_map_get(p, be, "local");
  const char *prefix = "backend.local";

  p->gpus_ok = 1;
  if (map == NULL || cfg_map_check(p, map, prefix, keys) < 0)
    return;
  cfg_get_str(p, map, prefix, "work_root", &local->work_root);
  cfg_parse_gpus(p, map, local);
  if (cfg_get_uint(p, map, prefix, "cpu_slots", 1, CFG_MAX_CPUS,
                   &local->cpu_slots) == 1)
    p->cpu_slots_set = 1;
  cfg_get_str(p, map, prefix, "hook_started", &local->hook_started);
  cfg_get_str(p, map, prefix, "hook_completed", &local->hook_completed);
}

static void cfg_parse_backend(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"type", "local", "kubernetes", NULL};
  yaml_node_t *be = cfg_map_get(p, root, "backend");
  int type;

  p->backend_ok = 1;
  p->gpus_ok = 1;
  if (be == NULL)
    return;
  if (cfg_map_check(p, be, "backend", keys) < 0) {
    p->backend_ok = 0;
    return;
  }
  if (cfg_get_enum(p, be, "backend", "type", cfg_backend_names, &type) < 0)
    p->backend_ok = 0;
  else if (cfg_map_get(p, be, "type") != NULL)
    p->cfg->backend = (enum cfg_backend_type)type;
  cfg_parse_local(p, be);
  cfg_parse_kubernetes(p, be);
}

/* Pools. */

/* Lower-cases and checks one label; returns a copy or NULL (reported). */
static char *cfg_label(struct cfg_parser *p, yaml_node_t *v, const char *path,
                       size_t i)
{
  const char *s;
  char *out, *c;

  if (v->type != YAML_SCALAR_NODE || cfg_is_null(v)) {
    cfg_err(p, cfg_line(v), "%s[%zu]: expected a label", path, i);
    return NULL;
  }
  s = cfg_text(v);
  if (s[0] == '\0' || strlen(s) > CFG_MAX_LABEL_LEN ||
      v->data.scalar.length != strlen(s)) {
    cfg_err(p, cfg_line(v), "%s[%zu]: a label has 1 to %d characters", path, i,
            CFG_MAX_LABEL_LEN);
    return NULL;
  }
  for (; *s != '\0'; s++)
    if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == ',') {
      cfg_err(p, cfg_line(v),
              "%s[%zu]: '%.64s' has a space, comma or non-ASCII character",
              path, i, cfg_text(v));
      return NULL;
    }
  out = strdup(cfg_text(v));
  if (out == NULL) {
    cfg_err(p, cfg_line(v), "%s[%zu]: out of memory", path, i);
    return NULL;
  }
  for (c = out; *c != '\0'; c++)
    if (*c >= 'A' && *c <= 'Z')
      *c = (char)(*c - 'A' + 'a');
  return out;
}

static int cfg_has_label(const struct cfg_pool *pool, const char *label)
{
  size_t i;

  for (i = 0; i < pool->nlabels; i++)
    if (strcmp(pool->labels[i], label) == 0)
      return (int)i;
  return -1;
}

/* Puts self-hosted first, adding it when absent (GitHub requires it of every
 * job routed to a self-hosted runner). */
static void cfg_labels_self_hosted(struct cfg_parser *p, struct cfg_pool *pool,
                                   const char *path, unsigned line)
{
  int at = cfg_has_label(pool, CFG_SELF_HOSTED);
  char *first;

  if (at < 0 && pool->nlabels == CFG_MAX_LABELS) {
    cfg_err(p, line, "%s: at most %d labels, self-hosted included", path,
            CFG_MAX_LABELS);
    return;
  }
  if (at < 0) {
    first = strdup(CFG_SELF_HOSTED);
    if (first == NULL) {
      cfg_err(p, line, "%s: out of memory", path);
      return;
    }
    at = (int)pool->nlabels++;
  } else {
    first = pool->labels[at];
  }
  memmove(&pool->labels[1], &pool->labels[0], (size_t)at * sizeof(char *));
  pool->labels[0] = first;
}

static void cfg_parse_labels(struct cfg_parser *p, yaml_node_t *map,
                             const char *prefix, struct cfg_pool *pool,
                             struct cfg_pool_lines *lines)
{
  char path[CFG_PATH_MAX];
  yaml_node_t *seq = cfg_map_get(p, map, "labels");
  yaml_node_item_t *item;
  size_t i = 0;
  char *label;

  cfg_join(path, sizeof(path), prefix, "labels");
  if (seq == NULL)
    return;
  if (seq->type != YAML_SEQUENCE_NODE ||
      seq->data.sequence.items.start == seq->data.sequence.items.top) {
    cfg_err(p, cfg_line(seq), "%s: expected a list of at least one label",
            path);
    return;
  }
  lines->labels = cfg_key_line(p, map, "labels");
  for (item = seq->data.sequence.items.start;
       item < seq->data.sequence.items.top; item++, i++) {
    yaml_node_t *v = cfg_node(p, *item);

    label = v != NULL ? cfg_label(p, v, path, i) : NULL;
    if (label == NULL) {
      lines->labels = 0;
      continue;
    }
    if (cfg_has_label(pool, label) >= 0) {
      cfg_err(p, cfg_line(v), "%s[%zu]: duplicate label '%s'", path, i, label);
      free(label);
      lines->labels = 0;
      continue;
    }
    if (pool->nlabels == CFG_MAX_LABELS) {
      cfg_err(p, cfg_line(v), "%s: at most %d labels", path, CFG_MAX_LABELS);
      free(label);
      lines->labels = 0;
      break;
    }
    pool->labels[pool->nlabels++] = label;
  }
  cfg_labels_self_hosted(p, pool, path, cfg_line(seq));
}

static void cfg_parse_resources(struct cfg_parser *p, yaml_node_t *pmap,
                                const char *prefix, struct cfg_pool *pool,
                                struct cfg_pool_lines *lines)
{
  static const char *const keys[] = {"cpus", "memory", "gpus", NULL};
  char path[CFG_PATH_MAX];
  yaml_node_t *map = cfg_map_get(p, pmap, "resources");

  cfg_join(path, sizeof(path), prefix, "resources");
  if (map == NULL || cfg_map_check(p, map, path, keys) < 0)
    return;
  if (cfg_get_uint(p, map, path, "cpus", 1, CFG_MAX_CPUS, &pool->cpus) == 1)
    lines->cpus = cfg_key_line(p, map, "cpus");
  cfg_get_size(p, map, path, "memory", 0, UINT64_MAX, &pool->memory_bytes);
  if (cfg_get_uint(p, map, path, "gpus", 0, CFG_MAX_GPUS, &pool->gpus) == 1)
    lines->gpus = cfg_key_line(p, map, "gpus");
}

static void cfg_parse_node_selector(struct cfg_parser *p, yaml_node_t *pmap,
                                    const char *prefix, struct cfg_pool *pool)
{
  char path[CFG_PATH_MAX];
  yaml_node_t *map = cfg_map_get(p, pmap, "node_selector");
  yaml_node_pair_t *pair;
  size_t n, i = 0;

  cfg_join(path, sizeof(path), prefix, "node_selector");
  if (map == NULL || cfg_map_check(p, map, path, NULL) < 0)
    return;
  n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
  if (n == 0)
    return;
  pool->node_selector = calloc(n, sizeof(*pool->node_selector));
  if (pool->node_selector == NULL) {
    cfg_err(p, cfg_line(map), "%s: out of memory", path);
    return;
  }
  pool->nnode_selector = n;
  for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
       pair++, i++) {
    yaml_node_t *k = cfg_node(p, pair->key), *v = cfg_node(p, pair->value);

    if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
      continue;
    if (v->type != YAML_SCALAR_NODE || cfg_is_null(v)) {
      cfg_err(p, cfg_line(v), "%s.%s: expected a string value", path,
              cfg_text(k));
      continue;
    }
    pool->node_selector[i].key = strdup(cfg_text(k));
    pool->node_selector[i].value = strdup(cfg_text(v));
    if (pool->node_selector[i].key == NULL ||
        pool->node_selector[i].value == NULL)
      cfg_err(p, cfg_line(k), "%s: out of memory", path);
  }
}

static void cfg_parse_toleration(struct cfg_parser *p, yaml_node_t *map,
                                 const char *path, struct cfg_toleration *t)
{
  static const char *const keys[] = {"key", "operator", "value", "effect",
                                     NULL};
  int op = 1, effect;

  if (cfg_map_check(p, map, path, keys) < 0)
    return;
  cfg_get_str(p, map, path, "key", &t->key);
  cfg_get_enum(p, map, path, "operator", cfg_operator_names, &op);
  t->operator_ = strdup(cfg_operator_names[op]);
  if (t->operator_ == NULL)
    cfg_err(p, cfg_line(map), "%s: out of memory", path);
  cfg_get_str(p, map, path, "value", &t->value);
  if (cfg_get_enum(p, map, path, "effect", cfg_effect_names, &effect) == 1)
    cfg_get_str(p, map, path, "effect", &t->effect);
  if (op == 0 && cfg_map_get(p, map, "value") != NULL)
    cfg_err(p, cfg_key_line(p, map, "value"),
            "%s.value: must be empty with operator Exists", path);
  if (op == 1 && cfg_map_get(p, map, "key") == NULL)
    cfg_err(p, cfg_line(map), "%s.key: required with operator Equal", path);
}

static void cfg_parse_tolerations(struct cfg_parser *p, yaml_node_t *pmap,
                                  const char *prefix, struct cfg_pool *pool)
{
  char path[CFG_PATH_MAX], item_path[CFG_PATH_MAX + 24];
  yaml_node_t *seq = cfg_map_get(p, pmap, "tolerations");
  yaml_node_item_t *item;
  size_t n, i = 0;

  cfg_join(path, sizeof(path), prefix, "tolerations");
  if (seq == NULL)
    return;
  if (seq->type != YAML_SEQUENCE_NODE) {
    cfg_err(p, cfg_line(seq), "%s: expected a list", path);
    return;
  }
  n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
  if (n == 0)
    return;
  pool->tolerations = calloc(n, sizeof(*pool->tolerations));
  if (pool->tolerations == NULL) {
    cfg_err(p, cfg_line(seq), "%s: out of memory", path);
    return;
  }
  pool->ntolerations = n;
  for (item = seq->data.sequence.items.start;
       item < seq->data.sequence.items.top; item++, i++) {
    yaml_node_t *v = cfg_node(p, *item);

    snprintf(item_path, sizeof(item_path), "%s[%zu]", path, i);
    if (v != NULL)
      cfg_parse_toleration(p, v, item_path, &pool->tolerations[i]);
  }
}

static void cfg_parse_runner(struct cfg_parser *p, yaml_node_t *pmap,
                             const char *prefix, struct cfg_pool *pool)
{
  static const char *const keys[] = {"command", "image", NULL};
  char path[CFG_PATH_MAX];
  yaml_node_t *map = cfg_map_get(p, pmap, "runner");
  unsigned line = cfg_key_line(p, pmap, "runner");
  int local = p->cfg->backend == CFG_BACKEND_LOCAL;

  cfg_join(path, sizeof(path), prefix, "runner");
  if (map != NULL && cfg_map_check(p, map, path, keys) < 0)
    return;
  cfg_get_str(p, map, path, "command", &pool->runner_command);
  cfg_get_str(p, map, path, "image", &pool->runner_image);
  if (!p->backend_ok)
    return;
  if (line == 0)
    line = pool->line;
  if (local && cfg_map_get(p, map, "command") == NULL)
    cfg_err(p, line, "%s.command: required with backend local", path);
  if (!local && cfg_map_get(p, map, "image") == NULL)
    cfg_err(p, line, "%s.image: required with backend kubernetes", path);
  /* Only the active backend's way of starting a runner is kept. */
  if (local) {
    free(pool->runner_image);
    pool->runner_image = NULL;
  } else {
    free(pool->runner_command);
    pool->runner_command = NULL;
  }
}

/* Checks that the local backend can ever fit one runner of the pool. */
static void cfg_check_pool_capacity(struct cfg_parser *p,
                                    const struct cfg_pool *pool,
                                    const char *prefix,
                                    const struct cfg_pool_lines *lines)
{
  const struct cfg_local *local = &p->cfg->local;

  if (!p->backend_ok || p->cfg->backend != CFG_BACKEND_LOCAL)
    return;
  if (lines->gpus != 0 && pool->gpus > 0 && p->gpus_ok && !local->gpus_auto) {
    if (local->ngpus == 0)
      cfg_err(p, lines->gpus,
              "%s.resources.gpus: pool needs %u GPUs per runner but "
              "backend.local.gpus is none",
              prefix, pool->gpus);
    else if (pool->gpus > local->ngpus)
      cfg_err(p, lines->gpus,
              "%s.resources.gpus: pool needs %u GPUs per runner but "
              "backend.local.gpus lists %zu",
              prefix, pool->gpus, local->ngpus);
  }
  if (lines->cpus != 0 && p->cpu_slots_set && pool->cpus > local->cpu_slots)
    cfg_err(p, lines->cpus,
            "%s.resources.cpus: pool needs %u CPU slots per runner but "
            "backend.local.cpu_slots is %u",
            prefix, pool->cpus, local->cpu_slots);
}

static void cfg_parse_pool_name(struct cfg_parser *p, yaml_node_t *map,
                                const char *prefix, size_t index)
{
  struct cfg_pool *pool = &p->cfg->pools[index];
  unsigned line = cfg_key_line(p, map, "name");
  size_t i;

  if (cfg_get_str(p, map, prefix, "name", &pool->name) != 1)
    return;
  if (!cfg_is_pool_name(pool->name)) {
    cfg_err(p, line, "%s.name: '%.64s' must be 1 to %d characters of [a-z0-9-]",
            prefix, pool->name, CFG_MAX_POOL_NAME);
    return;
  }
  for (i = 0; i < index; i++)
    if (p->cfg->pools[i].name != NULL &&
        strcmp(p->cfg->pools[i].name, pool->name) == 0) {
      cfg_err(p, line, "%s.name: duplicate pool name '%s' (first at line %u)",
              prefix, pool->name, p->cfg->pools[i].line);
      return;
    }
}

static void cfg_parse_pool(struct cfg_parser *p, yaml_node_t *map, size_t index)
{
  static const char *const keys[] = {
      "name",          "labels",      "max_runners", "min_idle",
      "idle_timeout",  "priority",    "resources",   "runner",
      "node_selector", "tolerations", "kubernetes",  NULL};
  struct cfg_pool *pool = &p->cfg->pools[index];
  struct cfg_pool_lines *lines = &p->lines[index];
  char prefix[32];
  int64_t priority;
  int max_ok;

  snprintf(prefix, sizeof(prefix), "pools[%zu]", index);
  pool->line = cfg_line(map);
  if (cfg_map_check(p, map, prefix, keys) < 0)
    return;
  cfg_require(p, map, prefix, "name", pool->line);
  cfg_require(p, map, prefix, "labels", pool->line);
  cfg_require(p, map, prefix, "max_runners", pool->line);
  cfg_parse_pool_name(p, map, prefix, index);
  cfg_parse_labels(p, map, prefix, pool, lines);
  max_ok = cfg_get_uint(p, map, prefix, "max_runners", 1, CFG_MAX_RUNNERS,
                        &pool->max_runners) == 1;
  if (cfg_get_uint(p, map, prefix, "min_idle", 0, CFG_MAX_RUNNERS,
                   &pool->min_idle) == 1 &&
      max_ok && pool->min_idle > pool->max_runners)
    cfg_err(p, cfg_key_line(p, map, "min_idle"),
            "%s.min_idle: %u exceeds max_runners %u", prefix, pool->min_idle,
            pool->max_runners);
  cfg_get_duration(p, map, prefix, "idle_timeout", 0, CFG_MS_DAY,
                   &pool->idle_timeout_ms);
  if (cfg_get_int(p, map, prefix, "priority", INT_MIN, INT_MAX, &priority) == 1)
    pool->priority = (int)priority;
  cfg_parse_resources(p, map, prefix, pool, lines);
  cfg_parse_runner(p, map, prefix, pool);
  cfg_parse_node_selector(p, map, prefix, pool);
  cfg_parse_tolerations(p, map, prefix, pool);
  cfg_parse_pool_kube(p, map, prefix, pool);
  cfg_check_pool_capacity(p, pool, prefix, lines);
}

static void cfg_pool_defaults(struct cfg_parser *p, struct cfg_pool *pool)
{
  if (cfg_pool_kube_defaults(&pool->kube) < 0)
    cfg_err(p, 0, "pools: out of memory");
  pool->min_idle = CFG_DEFAULT_POOL_MIN_IDLE;
  pool->idle_timeout_ms = CFG_DEFAULT_POOL_IDLE_TIMEOUT_MS;
  pool->priority = CFG_DEFAULT_POOL_PRIORITY;
  pool->cpus = CFG_DEFAULT_POOL_CPUS;
  pool->memory_bytes = CFG_DEFAULT_POOL_MEMORY_BYTES;
  pool->gpus = CFG_DEFAULT_POOL_GPUS;
}

/* Two pools with one label set would both match the same jobs. */
static void cfg_check_label_sets(struct cfg_parser *p)
{
  const struct config *cfg = p->cfg;
  size_t i, j, k;

  for (j = 1; j < cfg->npools; j++) {
    if (p->lines[j].labels == 0)
      continue;
    for (i = 0; i < j; i++) {
      if (p->lines[i].labels == 0 ||
          cfg->pools[i].nlabels != cfg->pools[j].nlabels)
        continue;
      for (k = 0; k < cfg->pools[j].nlabels; k++)
        if (cfg_has_label(&cfg->pools[i], cfg->pools[j].labels[k]) < 0)
          break;
      if (k == cfg->pools[j].nlabels) {
        cfg_err(p, p->lines[j].labels,
                "pools[%zu].labels: same label set as pools[%zu] (line %u); "
                "jobs could not be routed",
                j, i, p->lines[i].labels);
        break;
      }
    }
  }
}

static void cfg_parse_pools(struct cfg_parser *p, yaml_node_t *root)
{
  yaml_node_t *seq = cfg_map_get(p, root, "pools");
  unsigned line = cfg_key_line(p, root, "pools");
  yaml_node_item_t *item;

  if (seq == NULL) {
    cfg_err(p, line ? line : cfg_line(root),
            "pools: at least one pool is required");
    return;
  }
  if (seq->type != YAML_SEQUENCE_NODE ||
      seq->data.sequence.items.start == seq->data.sequence.items.top) {
    cfg_err(p, cfg_line(seq), "pools: expected a list of at least one pool");
    return;
  }
  for (item = seq->data.sequence.items.start;
       item < seq->data.sequence.items.top; item++) {
    yaml_node_t *v = cfg_node(p, *item);

    if (v == NULL)
      continue;
    if (p->cfg->npools == CFG_MAX_POOLS) {
      cfg_err(p, cfg_line(v), "pools: at most %d pools", CFG_MAX_POOLS);
      break;
    }
    cfg_pool_defaults(p, &p->cfg->pools[p->cfg->npools]);
    cfg_parse_pool(p, v, p->cfg->npools++);
  }
  cfg_check_label_sets(p);
}

/* Document. */

static void cfg_parse_journal(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"enabled", "path", "sync", "max_size",
                                     NULL};
  struct cfg_journal *jc = &p->cfg->journal;
  yaml_node_t *map = cfg_map_get(p, root, "journal");
  int v;

  if (map == NULL || cfg_map_check(p, map, "journal", keys) < 0)
    return;
  cfg_get_bool(p, map, "journal", "enabled", &jc->enabled);
  cfg_get_str(p, map, "journal", "path", &jc->path);
  if (cfg_get_enum(p, map, "journal", "sync", cfg_sync_names, &v) == 1)
    jc->sync = (enum cfg_journal_sync)v;
  cfg_get_size(p, map, "journal", "max_size", 64 * 1024, (uint64_t)1 << 40,
               &jc->max_bytes);
}

static void cfg_set_defaults(struct config *cfg)
{
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);

  cfg->log_level = CFG_DEFAULT_LOG_LEVEL;
  cfg->log_format = CFG_DEFAULT_LOG_FORMAT;
  cfg->limits.max_header_bytes = CFG_DEFAULT_MAX_HEADER_BYTES;
  cfg->limits.max_body_bytes = CFG_DEFAULT_MAX_BODY_BYTES;
  cfg->limits.max_connections = CFG_DEFAULT_MAX_CONNECTIONS;
  cfg->limits.read_timeout_ms = CFG_DEFAULT_READ_TIMEOUT_MS;
  cfg->limits.idle_timeout_ms = CFG_DEFAULT_IDLE_TIMEOUT_MS;
  cfg->limits.header_timeout_ms = CFG_DEFAULT_HEADER_TIMEOUT_MS;
  cfg->limits.max_connections_per_peer = CFG_DEFAULT_MAX_CONNECTIONS_PER_PEER;
  cfg->limits.max_failures_per_minute = CFG_DEFAULT_MAX_FAILURES_PER_MINUTE;
  cfg->admin.auth = CFG_DEFAULT_ADMIN_AUTH;
  cfg->journal.enabled = 1;
  cfg->journal.sync = CFG_JOURNAL_SYNC_FULL;
  cfg->github.runner_group_id = CFG_DEFAULT_RUNNER_GROUP_ID;
  cfg->github.mutations_per_minute = CFG_DEFAULT_MUTATIONS_PER_MINUTE;
  cfg->backend = CFG_DEFAULT_BACKEND;
  cfg->local.gpus_auto = CFG_DEFAULT_GPUS_AUTO;
  cfg->local.cpu_slots =
      cpus < 1 ? 1u : (cpus > CFG_MAX_CPUS ? CFG_MAX_CPUS : (unsigned)cpus);
  cfg_kubernetes_defaults(&cfg->kubernetes);
  cfg->runner_start_timeout_ms = CFG_DEFAULT_RUNNER_START_TIMEOUT_MS;
  cfg->reconcile_interval_ms = CFG_DEFAULT_RECONCILE_INTERVAL_MS;
  cfg_recovery_defaults(&cfg->recovery);
  cfg_devservers_defaults(&cfg->devservers);
}

/* String defaults go in after parsing so a value from the file never has to
 * replace an allocated default. */
static void cfg_set_string_defaults(struct cfg_parser *p)
{
  struct {
    char **field;
    const char *value;
  } defaults[] = {
      {&p->cfg->listen, CFG_DEFAULT_LISTEN},
      {&p->cfg->admin_listen, CFG_DEFAULT_ADMIN_LISTEN},
      {&p->cfg->state_dir, CFG_DEFAULT_STATE_DIR},
      {&p->cfg->github.api_url, CFG_DEFAULT_API_URL},
      {&p->cfg->local.work_root, CFG_DEFAULT_WORK_ROOT},
      {&p->cfg->kubernetes.namespace_, CFG_DEFAULT_KUBE_NAMESPACE},
      {&p->cfg->kubernetes.lease_name, CFG_DEFAULT_LEASE_NAME},
      {&p->cfg->kubernetes.service_account_dir, CFG_DEFAULT_KUBE_SA_DIR},
      {&p->cfg->kubernetes.gpu_unhealthy.taint_key,
       CFG_DEFAULT_GPU_UNHEALTHY_TAINT_KEY},
      {&p->cfg->kubernetes.gpu_unhealthy.taint_value,
       CFG_DEFAULT_GPU_UNHEALTHY_TAINT_VALUE},
      {&p->cfg->kubernetes.gpu_unhealthy.taint_effect,
       CFG_DEFAULT_GPU_UNHEALTHY_TAINT_EFFECT},
  };
  size_t i;

  for (i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
    if (*defaults[i].field != NULL)
      continue;
    *defaults[i].field = strdup(defaults[i].value);
    if (*defaults[i].field == NULL)
      cfg_err(p, 1, "out of memory");
  }
}

static void cfg_parse_root(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"listen",
                                     "admin_listen",
                                     "admin_url",
                                     "admin",
                                     "state_dir",
                                     "log",
                                     "limits",
                                     "journal",
                                     "github",
                                     "backend",
                                     "pools",
                                     "runner_start_timeout",
                                     "reconcile_interval",
                                     "recovery",
                                     "devservers",
                                     NULL};

  if (root->type != YAML_MAPPING_NODE) {
    cfg_err(p, cfg_line(root), "the configuration must be a mapping of keys");
    return;
  }
  cfg_map_check(p, root, "", keys);
  cfg_parse_top_scalars(p, root);
  cfg_parse_log(p, root);
  cfg_parse_limits(p, root);
  cfg_parse_journal(p, root);
  cfg_parse_admin(p, root);
  cfg_parse_github(p, root);
  /* The backend decides what each pool must say. */
  cfg_parse_backend(p, root);
  cfg_parse_pools(p, root);
  cfg_parse_recovery(p, root);
  cfg_parse_devservers(p, root);
}

/* Reports a failed load. Reader errors (bad encoding) carry only a byte
 * offset into text, so their line is counted here. */
static void cfg_syntax_error(struct cfg_parser *p, const yaml_parser_t *parser,
                             const char *text, size_t len)
{
  unsigned line = (unsigned)parser->problem_mark.line + 1;
  size_t i;
  const char *problem = parser->problem ? parser->problem : "unknown error";

  if (parser->error == YAML_MEMORY_ERROR) {
    cfg_err(p, 1, "out of memory");
    return;
  }
  if (parser->error == YAML_READER_ERROR) {
    line = 1;
    for (i = 0; i < parser->problem_offset && i < len; i++)
      line += text[i] == '\n';
  }
  if (parser->context != NULL)
    cfg_err(p, line, "YAML syntax error: %s (%s at line %u)", problem,
            parser->context, (unsigned)parser->context_mark.line + 1);
  else
    cfg_err(p, line, "YAML syntax error: %s", problem);
}

/* A second document in the stream would be silently ignored; refuse it. */
static void cfg_check_single_document(struct cfg_parser *p,
                                      yaml_parser_t *parser, const char *text,
                                      size_t len)
{
  yaml_document_t extra;
  yaml_node_t *root;

  if (!yaml_parser_load(parser, &extra)) {
    cfg_syntax_error(p, parser, text, len);
    return;
  }
  root = yaml_document_get_root_node(&extra);
  if (root != NULL)
    cfg_err(p, cfg_line(root), "only one YAML document is allowed");
  yaml_document_delete(&extra);
}

int cfg_parse(struct config *cfg, const char *name, const char *text,
              size_t len, char *errs, size_t errs_size)
{
  struct cfg_parser p;
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_node_t *root;
  int loaded = 0, parser_ok = 0;

  memset(cfg, 0, sizeof(*cfg));
  memset(&p, 0, sizeof(p));
  if (text == NULL) {
    text = "";
    len = 0;
  }
  p.name = name != NULL ? name : "<config>";
  p.cfg = cfg;
  p.doc = &doc;
  if (errs != NULL && errs_size > 0)
    errs[0] = '\0';
  cfg_set_defaults(cfg);
  cfg->path = strdup(p.name);
  if (cfg->path == NULL || !yaml_parser_initialize(&parser)) {
    cfg_err(&p, 1, "out of memory");
    goto out;
  }
  parser_ok = 1;
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    cfg_syntax_error(&p, &parser, text, len);
    goto out;
  }
  loaded = 1;
  root = yaml_document_get_root_node(&doc);
  if (root == NULL) {
    cfg_err(&p, 1, "the configuration is empty");
    goto out;
  }
  cfg_check_single_document(&p, &parser, text, len);
  cfg_parse_root(&p, root);
  cfg_set_string_defaults(&p);
out:
  if (loaded)
    yaml_document_delete(&doc);
  if (parser_ok)
    yaml_parser_delete(&parser);
  if (p.count > 0) {
    cfg_write_errors(&p, errs, errs_size);
    cfg_free(cfg);
  }
  free(p.errors);
  return p.count;
}

/* Reads a whole regular file of at most CFG_MAX_FILE_BYTES. */
static int cfg_read_file(const char *path, char **out, size_t *len, char *why,
                         size_t why_size)
{
  struct stat st;
  char *buf = NULL;
  size_t got = 0;
  ssize_t n;
  int fd;

  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    snprintf(why, why_size, "%s", strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) < 0) {
    snprintf(why, why_size, "%s", strerror(errno));
    goto fail;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > CFG_MAX_FILE_BYTES) {
    snprintf(why, why_size, "%s",
             S_ISREG(st.st_mode) ? "larger than 1 MiB" : "not a regular file");
    goto fail;
  }
  buf = malloc((size_t)st.st_size + 1);
  if (buf == NULL) {
    snprintf(why, why_size, "out of memory");
    goto fail;
  }
  while (got < (size_t)st.st_size) {
    n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(why, why_size, "%s", strerror(errno));
      goto fail;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  *out = buf;
  *len = got;
  return 0;
fail:
  free(buf);
  close(fd);
  return -1;
}

int cfg_load(struct config *cfg, const char *path, char *errs, size_t errs_size)
{
  char *text = NULL, why[128];
  size_t len = 0;
  int rc;

  if (cfg_read_file(path, &text, &len, why, sizeof(why)) < 0) {
    memset(cfg, 0, sizeof(*cfg));
    if (errs != NULL && errs_size > 0)
      snprintf(errs, errs_size, "%s: %s\n", path, why);
    return -1;
  }
  rc = cfg_parse(cfg, path, text, len, errs, errs_size);
  free(text);
  return rc;
}

static void cfg_pool_free(struct cfg_pool *pool)
{
  size_t i;

  free(pool->name);
  for (i = 0; i < CFG_MAX_LABELS; i++)
    free(pool->labels[i]);
  free(pool->runner_command);
  free(pool->runner_image);
  for (i = 0; pool->node_selector != NULL && i < pool->nnode_selector; i++) {
    free(pool->node_selector[i].key);
    free(pool->node_selector[i].value);
  }
  free(pool->node_selector);
  for (i = 0; pool->tolerations != NULL && i < pool->ntolerations; i++) {
    free(pool->tolerations[i].key);
    free(pool->tolerations[i].operator_);
    free(pool->tolerations[i].value);
    free(pool->tolerations[i].effect);
  }
  free(pool->tolerations);
  cfg_pool_kube_free(&pool->kube);
}

void cfg_free(struct config *cfg)
{
  size_t i;

  if (cfg == NULL)
    return;
  free(cfg->path);
  free(cfg->listen);
  free(cfg->admin_listen);
  free(cfg->admin_url);
  for (i = 0; i < cfg->admin.ntokens && i < CFG_MAX_ADMIN_TOKENS; i++)
    free(cfg->admin.tokens[i].name);
  free(cfg->admin.tokens_file);
  free(cfg->state_dir);
  free(cfg->journal.path);
  free(cfg->github.api_url);
  free(cfg->github.app_private_key_file);
  free(cfg->github.pat_file);
  free(cfg->github.webhook_secret_file);
  free(cfg->github.org);
  free(cfg->github.repo);
  free(cfg->local.work_root);
  free(cfg->local.hook_started);
  free(cfg->local.hook_completed);
  cfg_kubernetes_free(&cfg->kubernetes);
  for (i = 0; i < CFG_MAX_POOLS; i++)
    cfg_pool_free(&cfg->pools[i]);
  cfg_recovery_free(&cfg->recovery);
  cfg_devservers_free(&cfg->devservers);
  memset(cfg, 0, sizeof(*cfg));
}

const struct cfg_pool *cfg_pool_find(const struct config *cfg, const char *name)
{
  size_t i;

  if (cfg == NULL || name == NULL)
    return NULL;
  for (i = 0; i < cfg->npools && i < CFG_MAX_POOLS; i++)
    if (cfg->pools[i].name != NULL && strcmp(cfg->pools[i].name, name) == 0)
      return &cfg->pools[i];
  return NULL;
}
