/* The devservers: section of the configuration (see docs/CONFIG.md):
 * flavors, users and how dev servers share the GPUs with CI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_parse.h"

#define CFG_DEV_MIN_WARNING_MS CFG_MS_MINUTE
#define CFG_DEV_MAX_WARNING_MS (24 * CFG_MS_HOUR)

static const char *const cfg_role_names[] = {"user", "admin", NULL};

void cfg_devservers_defaults(struct cfg_devservers *d)
{
  d->warnings_ms[0] = 30 * CFG_MS_MINUTE;
  d->warnings_ms[1] = 15 * CFG_MS_MINUTE;
  d->warnings_ms[2] = 5 * CFG_MS_MINUTE;
  d->nwarnings = 3;
  d->queued_timeout_ms = CFG_DEFAULT_DEV_QUEUED_TIMEOUT_MS;
  d->preparing_timeout_ms = CFG_DEFAULT_DEV_PREPARING_TIMEOUT_MS;
  d->expiry_grace_ms = CFG_DEFAULT_DEV_EXPIRY_GRACE_MS;
  d->ci_min_gpus = 0;
  d->max_gpus = CFG_DEV_GPUS_UNLIMITED;
  d->min_duration_ms = CFG_DEFAULT_DEV_MIN_DURATION_MS;
}

void cfg_devservers_free(struct cfg_devservers *d)
{
  size_t i;

  for (i = 0; i < d->nflavors && i < CFG_MAX_FLAVORS; i++) {
    free(d->flavors[i].name);
    free(d->flavors[i].command);
  }
  for (i = 0; i < d->nusers && i < CFG_MAX_DEV_USERS; i++) {
    free(d->users[i].name);
    free(d->users[i].github_user);
    explicit_bzero(d->users[i].token_sha256, CFG_SHA256_LEN);
  }
  free(d->keys_url);
  free(d->sshd);
  free(d->run_as);
  free(d->listen);
  d->nflavors = 0;
  d->nusers = 0;
}

/* A sequence under key, or NULL (absent, or reported as not a list). */
static yaml_node_t *cfg_dev_seq(struct cfg_parser *p, yaml_node_t *map,
                                const char *key)
{
  yaml_node_t *seq = cfg_map_get(p, map, key);

  if (seq == NULL)
    return NULL;
  if (seq->type != YAML_SEQUENCE_NODE) {
    cfg_err(p, cfg_line(seq), "devservers.%s: expected a list", key);
    return NULL;
  }
  return seq;
}

/* Checks a flavor against the local host it must fit on whole. */
static void cfg_flavor_fits(struct cfg_parser *p, yaml_node_t *map,
                            const char *prefix, const struct cfg_flavor *f)
{
  const struct cfg_local *local = &p->cfg->local;

  if (!p->backend_ok || p->cfg->backend != CFG_BACKEND_LOCAL)
    return;
  if (p->gpus_ok && !local->gpus_auto && f->gpus > local->ngpus)
    cfg_err(p, cfg_key_line(p, map, "gpus"),
            "%s.gpus: flavor needs %u GPUs but backend.local.gpus lists %zu",
            prefix, f->gpus, local->ngpus);
  if (p->cpu_slots_set && f->cpus > local->cpu_slots)
    cfg_err(p, cfg_key_line(p, map, "cpus"),
            "%s.cpus: flavor needs %u CPU slots but backend.local.cpu_slots "
            "is %u",
            prefix, f->cpus, local->cpu_slots);
}

static void cfg_parse_flavor(struct cfg_parser *p, yaml_node_t *map,
                             size_t index)
{
  static const char *const keys[] = {"name",         "gpus",
                                     "cpus",         "memory",
                                     "max_hours",    "max_extend_hours",
                                     "per_user_max", "priority",
                                     "command",      NULL};
  struct cfg_devservers *d = &p->cfg->devservers;
  struct cfg_flavor *f = &d->flavors[d->nflavors];
  char prefix[CFG_PATH_MAX];
  int64_t prio = CFG_DEFAULT_FLAVOR_PRIORITY;
  size_t i;

  snprintf(prefix, sizeof(prefix), "devservers.flavors[%zu]", index);
  memset(f, 0, sizeof(*f));
  f->cpus = CFG_DEFAULT_FLAVOR_CPUS;
  f->max_hours = CFG_DEFAULT_FLAVOR_MAX_HOURS;
  f->max_extend_hours = CFG_DEFAULT_FLAVOR_MAX_EXTEND_HOURS;
  f->per_user_max = CFG_DEFAULT_FLAVOR_PER_USER_MAX;
  f->line = cfg_line(map);
  d->nflavors++; /* owned from here, so cfg_free frees what is parsed */
  if (cfg_map_check(p, map, prefix, keys) < 0)
    return;
  cfg_require(p, map, prefix, "name", f->line);
  cfg_require(p, map, prefix, "gpus", f->line);
  if (cfg_get_str(p, map, prefix, "name", &f->name) == 1) {
    if (!cfg_is_pool_name(f->name))
      cfg_err(p, cfg_key_line(p, map, "name"),
              "%s.name: '%.64s' must be 1 to %d characters of [a-z0-9-], "
              "starting with a letter",
              prefix, f->name, CFG_MAX_POOL_NAME);
    for (i = 0; i + 1 < d->nflavors; i++)
      if (d->flavors[i].name != NULL &&
          strcmp(d->flavors[i].name, f->name) == 0)
        cfg_err(p, cfg_key_line(p, map, "name"),
                "%s.name: flavor '%.64s' is defined twice", prefix, f->name);
  }
  cfg_get_uint(p, map, prefix, "gpus", 1, CFG_MAX_FLAVOR_GPUS, &f->gpus);
  cfg_get_uint(p, map, prefix, "cpus", 1, CFG_MAX_CPUS, &f->cpus);
  cfg_get_size(p, map, prefix, "memory", 0, UINT64_MAX / 2, &f->memory_bytes);
  cfg_get_uint(p, map, prefix, "max_hours", 1, CFG_MAX_DEV_HOURS,
               &f->max_hours);
  cfg_get_uint(p, map, prefix, "max_extend_hours", 0, CFG_MAX_DEV_HOURS,
               &f->max_extend_hours);
  cfg_get_uint(p, map, prefix, "per_user_max", 1, 64, &f->per_user_max);
  if (cfg_get_int(p, map, prefix, "priority", -1000, 1000, &prio) == 1)
    f->priority = (int)prio;
  cfg_get_str(p, map, prefix, "command", &f->command);
  cfg_flavor_fits(p, map, prefix, f);
}

static void cfg_parse_flavors(struct cfg_parser *p, yaml_node_t *map)
{
  struct cfg_devservers *d = &p->cfg->devservers;
  yaml_node_t *seq = cfg_dev_seq(p, map, "flavors");
  yaml_node_item_t *it;
  yaml_node_t *v;
  size_t i = 0;

  if (seq == NULL) {
    if (cfg_map_get(p, map, "flavors") == NULL)
      cfg_err(p, cfg_line(map), "devservers.flavors: required");
    return;
  }
  for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
       it++, i++) {
    v = cfg_node(p, *it);
    if (v == NULL)
      continue;
    if (v->type != YAML_MAPPING_NODE) {
      cfg_err(p, cfg_line(v), "devservers.flavors[%zu]: expected a mapping", i);
      continue;
    }
    if (d->nflavors == CFG_MAX_FLAVORS) {
      cfg_err(p, cfg_line(v), "devservers.flavors: more than %d",
              CFG_MAX_FLAVORS);
      return;
    }
    cfg_parse_flavor(p, v, i);
  }
  if (i == 0)
    cfg_err(p, cfg_line(seq), "devservers.flavors: at least one flavor");
}

/* A user's token must be unique among users and admin tokens: the token
 * alone says who calls. */
static void cfg_user_token_unique(struct cfg_parser *p, unsigned line,
                                  const char *prefix,
                                  const struct cfg_dev_user *u)
{
  const struct cfg_devservers *d = &p->cfg->devservers;
  size_t i;

  for (i = 0; i + 1 < d->nusers; i++)
    if (memcmp(d->users[i].token_sha256, u->token_sha256, CFG_SHA256_LEN) == 0)
      cfg_err(p, line, "%s.token_sha256: the same token as user '%.64s'",
              prefix, d->users[i].name ? d->users[i].name : "");
  for (i = 0; i < p->cfg->admin.ntokens; i++)
    if (memcmp(p->cfg->admin.tokens[i].sha256, u->token_sha256,
               CFG_SHA256_LEN) == 0)
      cfg_err(p, line, "%s.token_sha256: the same token as admin token '%.64s'",
              prefix, p->cfg->admin.tokens[i].name);
}

static void cfg_parse_user(struct cfg_parser *p, yaml_node_t *map, size_t index)
{
  static const char *const keys[] = {"name", "github_user", "token_sha256",
                                     "role", NULL};
  struct cfg_devservers *d = &p->cfg->devservers;
  struct cfg_dev_user *u = &d->users[d->nusers];
  char prefix[CFG_PATH_MAX];
  char *hex = NULL;
  unsigned line = cfg_line(map);
  int v;
  size_t i;

  snprintf(prefix, sizeof(prefix), "devservers.users[%zu]", index);
  memset(u, 0, sizeof(*u));
  d->nusers++;
  if (cfg_map_check(p, map, prefix, keys) < 0)
    return;
  cfg_require(p, map, prefix, "name", line);
  cfg_require(p, map, prefix, "github_user", line);
  cfg_require(p, map, prefix, "token_sha256", line);
  if (cfg_get_str(p, map, prefix, "name", &u->name) == 1) {
    if (!cfg_is_token_name(u->name, strlen(u->name)))
      cfg_err(p, cfg_key_line(p, map, "name"),
              "%s.name: '%.64s' must be 1 to 64 characters of [A-Za-z0-9._-]",
              prefix, u->name);
    for (i = 0; i + 1 < d->nusers; i++)
      if (d->users[i].name != NULL && strcmp(d->users[i].name, u->name) == 0)
        cfg_err(p, cfg_key_line(p, map, "name"),
                "%s.name: user '%.64s' is listed twice", prefix, u->name);
  }
  if (cfg_get_str(p, map, prefix, "github_user", &u->github_user) == 1 &&
      !cfg_is_github_name(u->github_user, strlen(u->github_user), 0))
    cfg_err(p, cfg_key_line(p, map, "github_user"),
            "%s.github_user: '%.64s' is not a GitHub user name", prefix,
            u->github_user);
  if (cfg_get_str(p, map, prefix, "token_sha256", &hex) == 1) {
    if (cfg_parse_sha256(hex, u->token_sha256) < 0)
      cfg_err(p, cfg_key_line(p, map, "token_sha256"),
              "%s.token_sha256: must be 64 hex digits (the SHA-256 of the "
              "token, as sha256sum prints it)",
              prefix);
    else
      cfg_user_token_unique(p, cfg_key_line(p, map, "token_sha256"), prefix, u);
  }
  free(hex);
  if (cfg_get_enum(p, map, prefix, "role", cfg_role_names, &v) == 1)
    u->role = (enum cfg_dev_role)v;
}

static void cfg_parse_users(struct cfg_parser *p, yaml_node_t *map)
{
  struct cfg_devservers *d = &p->cfg->devservers;
  yaml_node_t *seq = cfg_dev_seq(p, map, "users");
  yaml_node_item_t *it;
  yaml_node_t *v;
  size_t i = 0;

  if (seq == NULL)
    return;
  for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
       it++, i++) {
    v = cfg_node(p, *it);
    if (v == NULL)
      continue;
    if (v->type != YAML_MAPPING_NODE) {
      cfg_err(p, cfg_line(v), "devservers.users[%zu]: expected a mapping", i);
      continue;
    }
    if (d->nusers == CFG_MAX_DEV_USERS) {
      cfg_err(p, cfg_line(v), "devservers.users: more than %d",
              CFG_MAX_DEV_USERS);
      return;
    }
    cfg_parse_user(p, v, i);
  }
}

/* Durations before expiry, each once, strictly decreasing. */
static void cfg_parse_warnings(struct cfg_parser *p, yaml_node_t *map)
{
  struct cfg_devservers *d = &p->cfg->devservers;
  yaml_node_t *seq = cfg_dev_seq(p, map, "warnings");
  yaml_node_item_t *it;
  yaml_node_t *v;
  char path[CFG_PATH_MAX];
  uint64_t ms;
  size_t n = 0;

  if (seq == NULL)
    return;
  d->nwarnings = 0;
  for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
       it++, n++) {
    v = cfg_node(p, *it);
    if (v == NULL)
      continue;
    snprintf(path, sizeof(path), "devservers.warnings[%zu]", n);
    if (cfg_node_duration(p, v, path, CFG_DEV_MIN_WARNING_MS,
                          CFG_DEV_MAX_WARNING_MS, &ms) < 0)
      continue;
    if (d->nwarnings == CFG_MAX_DEV_WARNINGS) {
      cfg_err(p, cfg_line(v), "devservers.warnings: more than %d",
              CFG_MAX_DEV_WARNINGS);
      return;
    }
    if (d->nwarnings > 0 && ms >= d->warnings_ms[d->nwarnings - 1]) {
      cfg_err(p, cfg_line(v),
              "%s: warnings must be listed from the earliest (longest before "
              "expiry) down",
              path);
      continue;
    }
    d->warnings_ms[d->nwarnings++] = ms;
  }
}

/* keys_url: http(s), with "{user}" exactly once. */
static void cfg_check_keys_url(struct cfg_parser *p, yaml_node_t *map)
{
  const char *u = p->cfg->devservers.keys_url;
  const char *at;
  unsigned line = cfg_key_line(p, map, "keys_url");

  if (u == NULL)
    return;
  at = strstr(u, "{user}");
  if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)
    cfg_err(p, line,
            "devservers.keys_url: '%.128s' must start with "
            "https:// or http://",
            u);
  else if (at == NULL || strstr(at + 1, "{user}") != NULL)
    cfg_err(p, line,
            "devservers.keys_url: '%.128s' must contain {user} exactly once",
            u);
}

static void cfg_parse_dev_sharing(struct cfg_parser *p, yaml_node_t *map)
{
  struct cfg_devservers *d = &p->cfg->devservers;
  const struct cfg_local *local = &p->cfg->local;
  unsigned line = cfg_key_line(p, map, "ci_min_gpus");

  cfg_get_uint(p, map, "devservers", "ci_min_gpus", 0, CFG_MAX_GPU_INDEX + 1,
               &d->ci_min_gpus);
  cfg_get_uint(p, map, "devservers", "devservers_max_gpus", 0,
               CFG_MAX_GPU_INDEX + 1, &d->max_gpus);
  if (line != 0 && p->backend_ok && p->cfg->backend == CFG_BACKEND_LOCAL &&
      p->gpus_ok && !local->gpus_auto && d->ci_min_gpus > local->ngpus)
    cfg_err(p, line,
            "devservers.ci_min_gpus: %u is more than the %zu GPUs of "
            "backend.local.gpus",
            d->ci_min_gpus, local->ngpus);
}

/* listen: an IPv4 address sshd binds (one token, digits and dots);
 * ports: "FIRST-LAST", each 1024-65535, or absent for an ephemeral port. */
static void cfg_parse_dev_listen(struct cfg_parser *p, yaml_node_t *map)
{
  struct cfg_devservers *d = &p->cfg->devservers;
  char *ports = NULL, *end;
  unsigned long first, last;
  size_t i;

  if (cfg_get_str(p, map, "devservers", "listen", &d->listen) == 1) {
    for (i = 0; d->listen[i] != '\0'; i++)
      if (!((d->listen[i] >= '0' && d->listen[i] <= '9') ||
            d->listen[i] == '.'))
        break;
    if (d->listen[i] != '\0' || i == 0 || i > 15)
      cfg_err(p, cfg_key_line(p, map, "listen"),
              "devservers.listen: '%.64s' is not an IPv4 address", d->listen);
  }
  if (cfg_get_str(p, map, "devservers", "ports", &ports) != 1)
    return;
  first = strtoul(ports, &end, 10);
  last = *end == '-' ? strtoul(end + 1, &end, 10) : 0;
  if (*end != '\0' || first < 1024 || last > 65535 || first > last)
    cfg_err(p, cfg_key_line(p, map, "ports"),
            "devservers.ports: '%.64s' must be FIRST-LAST within 1024-65535",
            ports);
  else {
    d->port_first = (unsigned)first;
    d->port_last = (unsigned)last;
  }
  free(ports);
}

static void cfg_dev_string_defaults(struct cfg_parser *p, unsigned line)
{
  struct cfg_devservers *d = &p->cfg->devservers;

  if (d->keys_url == NULL)
    d->keys_url = strdup(CFG_DEFAULT_DEV_KEYS_URL);
  if (d->sshd == NULL)
    d->sshd = strdup(CFG_DEFAULT_DEV_SSHD);
  if (d->run_as == NULL)
    d->run_as = strdup(CFG_DEFAULT_DEV_RUN_AS);
  if (d->listen == NULL)
    d->listen = strdup(CFG_DEFAULT_DEV_LISTEN);
  if (d->keys_url == NULL || d->sshd == NULL || d->run_as == NULL ||
      d->listen == NULL)
    cfg_err(p, line, "devservers: out of memory");
}

void cfg_parse_devservers(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"flavors",
                                     "users",
                                     "keys_url",
                                     "sshd",
                                     "run_as",
                                     "warnings",
                                     "queued_timeout",
                                     "preparing_timeout",
                                     "expiry_grace",
                                     "ci_min_gpus",
                                     "devservers_max_gpus",
                                     "min_duration",
                                     "listen",
                                     "ports",
                                     NULL};
  struct cfg_devservers *d = &p->cfg->devservers;
  yaml_node_t *map = cfg_map_get(p, root, "devservers");
  const char *s = "devservers";

  if (map == NULL || cfg_map_check(p, map, s, keys) < 0)
    return;
  d->enabled = 1;
  if (p->backend_ok && p->cfg->backend == CFG_BACKEND_KUBERNETES)
    cfg_err(p, cfg_key_line(p, root, "devservers"),
            "devservers: not available with backend kubernetes yet (only "
            "local)");
  cfg_parse_flavors(p, map);
  cfg_parse_users(p, map);
  cfg_get_str(p, map, s, "keys_url", &d->keys_url);
  cfg_check_keys_url(p, map);
  if (cfg_get_str(p, map, s, "sshd", &d->sshd) == 1 && d->sshd[0] != '/')
    cfg_err(p, cfg_key_line(p, map, "sshd"),
            "devservers.sshd: '%.128s' must be an absolute path", d->sshd);
  if (cfg_get_str(p, map, s, "run_as", &d->run_as) == 1 &&
      !cfg_is_token_name(d->run_as, strlen(d->run_as)))
    cfg_err(p, cfg_key_line(p, map, "run_as"),
            "devservers.run_as: '%.64s' is not a user name", d->run_as);
  cfg_parse_warnings(p, map);
  cfg_get_duration(p, map, s, "queued_timeout", CFG_MS_MINUTE, 30 * CFG_MS_DAY,
                   &d->queued_timeout_ms);
  cfg_get_duration(p, map, s, "preparing_timeout", CFG_MS_SECOND, CFG_MS_HOUR,
                   &d->preparing_timeout_ms);
  cfg_get_duration(p, map, s, "expiry_grace", 0, CFG_MS_HOUR,
                   &d->expiry_grace_ms);
  cfg_get_duration(p, map, s, "min_duration", CFG_MS_SECOND, CFG_MS_HOUR,
                   &d->min_duration_ms);
  cfg_parse_dev_sharing(p, map);
  cfg_parse_dev_listen(p, map);
  cfg_dev_string_defaults(p, cfg_line(map));
}

const struct cfg_flavor *cfg_flavor_find(const struct config *cfg,
                                         const char *name)
{
  size_t i;

  if (cfg == NULL || name == NULL)
    return NULL;
  for (i = 0; i < cfg->devservers.nflavors && i < CFG_MAX_FLAVORS; i++)
    if (cfg->devservers.flavors[i].name != NULL &&
        strcmp(cfg->devservers.flavors[i].name, name) == 0)
      return &cfg->devservers.flavors[i];
  return NULL;
}
