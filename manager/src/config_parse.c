/* The config parser's machinery: errors, scalar syntax (integers,
 * durations, sizes, listen addresses, hashes, names) and typed access to
 * the YAML tree, each getter reporting its own "file:line: message". The
 * sections are parsed in config.c and the config_*.c files. */
#include "config_parse.h"

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

#include "unittest.h"

/* Errors. */

void cfg_err(struct cfg_parser *p, unsigned line, const char *fmt, ...)
{
  struct cfg_error *e;
  va_list ap;
  char *c;

  p->count++;
  if (p->nerrors == p->cap) {
    size_t cap = p->cap == 0 ? 16 : p->cap * 2;
    struct cfg_error *grown;

    if (cap > CFG_MAX_STORED_ERRORS)
      return;
    grown = realloc(p->errors, cap * sizeof(*grown));
    if (grown == NULL)
      return;
    p->errors = grown;
    p->cap = cap;
  }
  e = &p->errors[p->nerrors];
  e->line = line;
  e->seq = p->nerrors++;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
  va_end(ap);
  /* Values from the file end up in messages; keep each message one line. */
  for (c = e->msg; *c != '\0'; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f)
      *c = '?';
}

static int cfg_error_cmp(const void *a, const void *b)
{
  const struct cfg_error *x = a, *y = b;

  if (x->line != y->line)
    return x->line < y->line ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Writes the collected errors, sorted by line, truncating safely. */
void cfg_write_errors(struct cfg_parser *p, char *errs, size_t size)
{
  size_t pos = 0, i;
  int n;

  if (errs == NULL || size == 0)
    return;
  errs[0] = '\0';
  if (p->nerrors > 1)
    qsort(p->errors, p->nerrors, sizeof(*p->errors), cfg_error_cmp);
  for (i = 0; i < p->nerrors && pos + 1 < size; i++) {
    n = snprintf(errs + pos, size - pos, "%s:%u: %s\n", p->name,
                 p->errors[i].line, p->errors[i].msg);
    if (n < 0)
      return;
    pos += (size_t)n;
  }
  if ((size_t)p->count > p->nerrors && pos + 1 < size)
    snprintf(errs + pos, size - pos, "%s: %zu more problems not shown\n",
             p->name, (size_t)p->count - p->nerrors);
}

/* Scalar syntax: integers, durations, sizes, listen addresses. */

static int cfg_is_digit(char c)
{
  return c >= '0' && c <= '9';
}

int cfg_parse_int(const char *s, int64_t *out)
{
  uint64_t v = 0, limit;
  int neg = 0, overflow = 0;

  if (*s == '-' || *s == '+') {
    neg = *s == '-';
    s++;
  }
  if (!cfg_is_digit(*s))
    return -1;
  limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; *s != '\0'; s++) {
    unsigned d;

    if (!cfg_is_digit(*s))
      return -1;
    d = (unsigned)(*s - '0');
    if (v > (limit - d) / 10)
      overflow = 1;
    else
      v = v * 10 + d;
  }
  if (overflow)
    return -2;
  if (neg)
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  else
    *out = (int64_t)v;
  return 0;
}

/* Reads the leading digits of *s into *v; -1 if none or on overflow. */
static int cfg_read_digits(const char **s, uint64_t *v)
{
  const char *c = *s;

  *v = 0;
  if (!cfg_is_digit(*c))
    return -1;
  for (; cfg_is_digit(*c); c++) {
    unsigned d = (unsigned)(*c - '0');

    if (*v > (UINT64_MAX - d) / 10)
      return -1;
    *v = *v * 10 + d;
  }
  *s = c;
  return 0;
}

UNITTEST int cfg_parse_duration(const char *s, uint64_t *ms)
{
  uint64_t total = 0, n, unit;
  const char *c = s;

  if (cfg_read_digits(&c, &n) < 0)
    return -1;
  if (*c == '\0') {
    /* A bare number is seconds. */
    if (n > UINT64_MAX / CFG_MS_SECOND)
      return -1;
    *ms = n * CFG_MS_SECOND;
    return 0;
  }
  c = s;
  while (*c != '\0') {
    if (cfg_read_digits(&c, &n) < 0)
      return -1;
    if (c[0] == 'm' && c[1] == 's') {
      unit = 1;
      c += 2;
    } else if (*c == 's' || *c == 'm' || *c == 'h') {
      unit =
          *c == 's' ? CFG_MS_SECOND : (*c == 'm' ? CFG_MS_MINUTE : CFG_MS_HOUR);
      c++;
    } else {
      return -1;
    }
    if (n > UINT64_MAX / unit || total > UINT64_MAX - n * unit)
      return -1;
    total += n * unit;
  }
  *ms = total;
  return 0;
}

UNITTEST int cfg_parse_size(const char *s, uint64_t *bytes)
{
  static const struct {
    const char *suffix;
    uint64_t mult;
  } units[] = {
      {"", 1ULL},
      {"k", 1000ULL},
      {"K", 1000ULL},
      {"M", 1000ULL * 1000},
      {"G", 1000ULL * 1000 * 1000},
      {"T", 1000ULL * 1000 * 1000 * 1000},
      {"P", 1000ULL * 1000 * 1000 * 1000 * 1000},
      {"E", 1000ULL * 1000 * 1000 * 1000 * 1000 * 1000},
      {"Ki", 1ULL << 10},
      {"Mi", 1ULL << 20},
      {"Gi", 1ULL << 30},
      {"Ti", 1ULL << 40},
      {"Pi", 1ULL << 50},
      {"Ei", 1ULL << 60},
  };
  const char *c = s;
  uint64_t n;
  size_t i;

  if (cfg_read_digits(&c, &n) < 0)
    return -1;
  for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
    if (strcmp(c, units[i].suffix) != 0)
      continue;
    if (n > UINT64_MAX / units[i].mult)
      return -1;
    *bytes = n * units[i].mult;
    return 0;
  }
  return -1;
}

static int cfg_is_host_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || cfg_is_digit(c) ||
         c == '.' || c == '-' || c == '_';
}

int cfg_check_listen(const char *s)
{
  const char *port, *c;
  int64_t v;

  if (s[0] == '[') {
    const char *close = strchr(s, ']');

    if (close == NULL || close == s + 1 || close[1] != ':')
      return -1;
    for (c = s + 1; c < close; c++)
      if (!(cfg_is_host_char(*c) || *c == ':' || *c == '%'))
        return -1;
    port = close + 2;
  } else {
    const char *colon = strrchr(s, ':');

    if (colon == NULL || colon == s)
      return -1;
    for (c = s; c < colon; c++)
      if (!cfg_is_host_char(*c))
        return -1;
    port = colon + 1;
  }
  if (!cfg_is_digit(port[0]) || cfg_parse_int(port, &v) < 0 || v < 1 ||
      v > 65535)
    return -1;
  return 0;
}

/* The host part of a valid listen address, into out; the port returned. */
static long cfg_split_listen(const char *s, char *out, size_t size)
{
  const char *colon = strrchr(s, ':');

  snprintf(out, size, "%.*s", (int)(colon - s), s);
  return strtol(colon + 1, NULL, 10);
}

static int cfg_is_wildcard(const char *host)
{
  return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0;
}

int cfg_check_listen_pair(const char *a, const char *b)
{
  char ha[80], hb[80];
  long pa = cfg_split_listen(a, ha, sizeof(ha));
  long pb = cfg_split_listen(b, hb, sizeof(hb));

  if (pa != pb)
    return 0;
  if (strcasecmp(ha, hb) == 0 || cfg_is_wildcard(ha) || cfg_is_wildcard(hb))
    return -1;
  return 0;
}

static int cfg_hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int cfg_parse_sha256(const char *hex, unsigned char *out)
{
  size_t i;

  if (strlen(hex) != 2 * CFG_SHA256_LEN)
    return -1;
  for (i = 0; i < CFG_SHA256_LEN; i++) {
    int hi = cfg_hex_value(hex[2 * i]), lo = cfg_hex_value(hex[2 * i + 1]);

    if (hi < 0 || lo < 0)
      return -1;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return 0;
}

/* Name checks. */

/* Admin token names end up in logs: short, and nothing to escape. */
int cfg_is_token_name(const char *s, size_t len)
{
  size_t i;

  if (len == 0 || len > 64)
    return 0;
  for (i = 0; i < len; i++)
    if (!cfg_is_host_char(s[i]))
      return 0;
  return 1;
}

int cfg_is_pool_name(const char *s)
{
  size_t n = strlen(s), i;

  if (n == 0 || n > CFG_MAX_POOL_NAME)
    return 0;
  for (i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || cfg_is_digit(s[i]) || s[i] == '-'))
      return 0;
  return 1;
}

/* RFC 1123 label (dots == 0) or subdomain (dots == 1), as Kubernetes names. */
int cfg_is_dns_name(const char *s, int dots)
{
  size_t n = strlen(s), i;

  if (n == 0 || n > (dots ? 253u : 63u))
    return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    int alnum = (c >= 'a' && c <= 'z') || cfg_is_digit(c);

    if ((i == 0 || i == n - 1) && !alnum)
      return 0;
    if (!alnum && c != '-' && !(dots && c == '.'))
      return 0;
  }
  return 1;
}

/* GitHub logins: letters, digits and '-'; repository names add '.', '_'. */
int cfg_is_github_name(const char *s, size_t len, int repo)
{
  size_t i;

  if (len == 0 || len > 100)
    return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];

    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || cfg_is_digit(c) ||
          c == '-' || (repo && (c == '.' || c == '_'))))
      return 0;
  }
  return 1;
}

/* Tree access. */

yaml_node_t *cfg_node(struct cfg_parser *p, int index)
{
  return yaml_document_get_node(p->doc, index);
}

unsigned cfg_line(const yaml_node_t *n)
{
  return (unsigned)n->start_mark.line + 1;
}

const char *cfg_text(const yaml_node_t *n)
{
  return (const char *)n->data.scalar.value;
}

int cfg_is_null(const yaml_node_t *n)
{
  const char *v;

  if (n->type != YAML_SCALAR_NODE ||
      n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return 0;
  v = cfg_text(n);
  return strcmp(v, "") == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
         strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

void cfg_join(char *out, size_t size, const char *prefix, const char *key)
{
  if (prefix[0] == '\0')
    snprintf(out, size, "%s", key);
  else
    snprintf(out, size, "%s.%s", prefix, key);
}

static int cfg_in(const char *const *names, const char *s)
{
  int i;

  for (i = 0; names[i] != NULL; i++)
    if (strcmp(names[i], s) == 0)
      return i;
  return -1;
}

/* Reports keys of map that are not scalars, not in keys (NULL: any key is
 * allowed) or repeated. Returns 0 if map is a mapping, else reports -1. */
int cfg_map_check(struct cfg_parser *p, yaml_node_t *map, const char *path,
                  const char *const *keys)
{
  yaml_node_pair_t *pair, *prev;
  char full[CFG_PATH_MAX];

  if (map->type != YAML_MAPPING_NODE) {
    cfg_err(p, cfg_line(map), "%s: expected a mapping", path);
    return -1;
  }
  for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
       pair++) {
    yaml_node_t *k = cfg_node(p, pair->key);

    if (k == NULL)
      continue;
    if (k->type != YAML_SCALAR_NODE) {
      cfg_err(p, cfg_line(k), "%s%skeys must be plain names", path,
              path[0] != '\0' ? ": " : "");
      continue;
    }
    cfg_join(full, sizeof(full), path, cfg_text(k));
    if (keys != NULL && cfg_in(keys, cfg_text(k)) < 0) {
      cfg_err(p, cfg_line(k), "%s: unknown key", full);
      continue;
    }
    for (prev = map->data.mapping.pairs.start; prev < pair; prev++) {
      yaml_node_t *pk = cfg_node(p, prev->key);

      if (pk != NULL && pk->type == YAML_SCALAR_NODE &&
          strcmp(cfg_text(pk), cfg_text(k)) == 0) {
        cfg_err(p, cfg_line(k), "%s: duplicate key (first at line %u)", full,
                cfg_line(pk));
        break;
      }
    }
  }
  return 0;
}

/* Returns the value of the first key in map, or NULL if absent, null or map
 * is not a mapping. */
yaml_node_t *cfg_map_get(struct cfg_parser *p, yaml_node_t *map,
                         const char *key)
{
  yaml_node_pair_t *pair;

  if (map == NULL || map->type != YAML_MAPPING_NODE)
    return NULL;
  for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
       pair++) {
    yaml_node_t *k = cfg_node(p, pair->key);
    yaml_node_t *v = cfg_node(p, pair->value);

    if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE ||
        strcmp(cfg_text(k), key) != 0)
      continue;
    return cfg_is_null(v) ? NULL : v;
  }
  return NULL;
}

/* Line of key in map, 0 if absent. Problems that concern a whole entry
 * (mutual exclusion, cross checks, missing members) point here. */
unsigned cfg_key_line(struct cfg_parser *p, yaml_node_t *map, const char *key)
{
  yaml_node_pair_t *pair;

  if (map == NULL || map->type != YAML_MAPPING_NODE)
    return 0;
  for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
       pair++) {
    yaml_node_t *k = cfg_node(p, pair->key);

    if (k != NULL && k->type == YAML_SCALAR_NODE &&
        strcmp(cfg_text(k), key) == 0)
      return cfg_line(k);
  }
  return 0;
}

/* Finds key's scalar value: 0 absent, 1 found (*out), -1 not a scalar. */
static int cfg_lookup(struct cfg_parser *p, yaml_node_t *map,
                      const char *prefix, const char *key, yaml_node_t **out,
                      char *path, size_t size)
{
  yaml_node_t *v = cfg_map_get(p, map, key);

  cfg_join(path, size, prefix, key);
  if (v == NULL)
    return 0;
  if (v->type != YAML_SCALAR_NODE) {
    cfg_err(p, cfg_line(v), "%s: expected a single value", path);
    return -1;
  }
  *out = v;
  return 1;
}

void cfg_require(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, unsigned line)
{
  char path[CFG_PATH_MAX];

  if (cfg_map_get(p, map, key) != NULL)
    return;
  cfg_join(path, sizeof(path), prefix, key);
  cfg_err(p, line, "%s: required", path);
}

/* Typed getters: 0 if the key is absent (*out keeps its default), 1 when set,
 * -1 when the value is bad (reported). */

int cfg_get_str(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                const char *key, char **out)
{
  char path[CFG_PATH_MAX];
  yaml_node_t *v = NULL;
  char *dup;
  int rc = cfg_lookup(p, map, prefix, key, &v, path, sizeof(path));

  if (rc <= 0)
    return rc;
  if (v->data.scalar.length != strlen(cfg_text(v))) {
    cfg_err(p, cfg_line(v), "%s: must not contain NUL characters", path);
    return -1;
  }
  if (cfg_text(v)[0] == '\0') {
    cfg_err(p, cfg_line(v), "%s: must not be empty", path);
    return -1;
  }
  dup = strdup(cfg_text(v));
  if (dup == NULL) {
    cfg_err(p, cfg_line(v), "%s: out of memory", path);
    return -1;
  }
  free(*out);
  *out = dup;
  return 1;
}

int cfg_get_int(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                const char *key, int64_t min, int64_t max, int64_t *out)
{
  char path[CFG_PATH_MAX];
  yaml_node_t *v = NULL;
  int64_t n;
  int rc = cfg_lookup(p, map, prefix, key, &v, path, sizeof(path));

  if (rc <= 0)
    return rc;
  if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
    cfg_err(p, cfg_line(v), "%s: expected an integer, got a quoted string",
            path);
    return -1;
  }
  rc = cfg_parse_int(cfg_text(v), &n);
  if (rc == -1) {
    cfg_err(p, cfg_line(v), "%s: expected an integer, got '%.64s'", path,
            cfg_text(v));
    return -1;
  }
  if (rc == -2 || n < min || n > max) {
    cfg_err(p, cfg_line(v), "%s: %.64s is out of range (%lld to %lld)", path,
            cfg_text(v), (long long)min, (long long)max);
    return -1;
  }
  *out = n;
  return 1;
}

int cfg_get_uint(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, unsigned min, unsigned max, unsigned *out)
{
  int64_t n;
  int rc = cfg_get_int(p, map, prefix, key, min, max, &n);

  if (rc == 1)
    *out = (unsigned)n;
  return rc;
}

int cfg_get_bool(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, int *out)
{
  static const char *const yes[] = {"true", "True", "TRUE", NULL};
  static const char *const no[] = {"false", "False", "FALSE", NULL};
  char path[CFG_PATH_MAX];
  yaml_node_t *v = NULL;
  int rc = cfg_lookup(p, map, prefix, key, &v, path, sizeof(path));

  if (rc <= 0)
    return rc;
  if (v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
      cfg_in(yes, cfg_text(v)) >= 0) {
    *out = 1;
    return 1;
  }
  if (v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
      cfg_in(no, cfg_text(v)) >= 0) {
    *out = 0;
    return 1;
  }
  cfg_err(p, cfg_line(v), "%s: expected true or false, got '%.64s'", path,
          cfg_text(v));
  return -1;
}

int cfg_get_enum(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, const char *const *names, int *out)
{
  char path[CFG_PATH_MAX], list[128] = "";
  yaml_node_t *v = NULL;
  size_t pos = 0;
  int rc = cfg_lookup(p, map, prefix, key, &v, path, sizeof(path)), i;

  if (rc <= 0)
    return rc;
  i = cfg_in(names, cfg_text(v));
  if (i >= 0) {
    *out = i;
    return 1;
  }
  for (i = 0; names[i] != NULL && pos < sizeof(list); i++) {
    int n = snprintf(list + pos, sizeof(list) - pos, "%s%s", i ? ", " : "",
                     names[i]);
    if (n < 0)
      break;
    pos += (size_t)n;
  }
  cfg_err(p, cfg_line(v), "%s: '%.64s' is not one of %s", path, cfg_text(v),
          list);
  return -1;
}

int cfg_node_duration(struct cfg_parser *p, yaml_node_t *v, const char *path,
                      uint64_t min, uint64_t max, uint64_t *out)
{
  uint64_t ms;

  if (v->type != YAML_SCALAR_NODE) {
    cfg_err(p, cfg_line(v), "%s: expected a single value", path);
    return -1;
  }
  if (cfg_parse_duration(cfg_text(v), &ms) < 0) {
    cfg_err(p, cfg_line(v),
            "%s: '%.64s' is not a duration (like 250ms, 30s, 5m, 1h or a "
            "number of seconds)",
            path, cfg_text(v));
    return -1;
  }
  if (ms < min || ms > max) {
    cfg_err(p, cfg_line(v), "%s: %.64s is out of range (%llums to %llums)",
            path, cfg_text(v), (unsigned long long)min,
            (unsigned long long)max);
    return -1;
  }
  *out = ms;
  return 1;
}

int cfg_get_duration(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                     const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
  char path[CFG_PATH_MAX];
  yaml_node_t *v = NULL;
  int rc = cfg_lookup(p, map, prefix, key, &v, path, sizeof(path));

  if (rc <= 0)
    return rc;
  return cfg_node_duration(p, v, path, min, max, out);
}

int cfg_get_size(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
  char path[CFG_PATH_MAX];
  yaml_node_t *v = NULL;
  uint64_t bytes;
  int rc = cfg_lookup(p, map, prefix, key, &v, path, sizeof(path));

  if (rc <= 0)
    return rc;
  if (cfg_parse_size(cfg_text(v), &bytes) < 0) {
    cfg_err(p, cfg_line(v),
            "%s: '%.64s' is not a size (like 512Mi, 4Gi, 1G or a number of "
            "bytes)",
            path, cfg_text(v));
    return -1;
  }
  if (bytes < min || bytes > max) {
    cfg_err(p, cfg_line(v), "%s: %.64s is out of range (%llu to %llu bytes)",
            path, cfg_text(v), (unsigned long long)min,
            (unsigned long long)max);
    return -1;
  }
  *out = bytes;
  return 1;
}

/* Checks that path names a readable regular file; why gets the reason. */
static int cfg_check_readable(const char *path, char *why, size_t size)
{
  struct stat st;
  int fd, rc = -1;

  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    snprintf(why, size, "%s", strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) < 0)
    snprintf(why, size, "%s", strerror(errno));
  else if (!S_ISREG(st.st_mode))
    snprintf(why, size, "not a regular file");
  else
    rc = 0;
  close(fd);
  return rc;
}

/* A string naming a file that must exist and be readable now. */
int cfg_get_file(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, char **out)
{
  char path[CFG_PATH_MAX], why[128];
  int rc = cfg_get_str(p, map, prefix, key, out);

  if (rc <= 0)
    return rc;
  if (cfg_check_readable(*out, why, sizeof(why)) < 0) {
    cfg_join(path, sizeof(path), prefix, key);
    cfg_err(p, cfg_key_line(p, map, key), "%s: %.128s: %s", path, *out, why);
    return -1;
  }
  return 1;
}

/* Sections. */
