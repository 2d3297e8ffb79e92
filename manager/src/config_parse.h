#ifndef RUNFLEET_CONFIG_PARSE_H
#define RUNFLEET_CONFIG_PARSE_H

/* The parser state and the tree helpers (config_parse.c) that config.c
 * shares with the files that parse one section each (config_kube.c,
 * config_pool_kube.c, config_recovery.c); nothing else includes this. */

#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "config.h"

#define CFG_MSG_MAX 320
#define CFG_PATH_MAX 96
#define CFG_MAX_STORED_ERRORS 512
/* Runner names are "rf-<pool>-<tag 8>-<boot 4>-<n up to 10 digits>" and
 * GitHub refuses runner names longer than 64 characters: 28 + 32 = 60. */
#define CFG_MAX_POOL_NAME 32
#define CFG_MAX_LABEL_LEN 256
#define CFG_MAX_GPU_INDEX 1023
#define CFG_MAX_CPUS 4096
#define CFG_MAX_RUNNERS 100000
#define CFG_SELF_HOSTED "self-hosted"

#define CFG_MS_SECOND 1000ULL
#define CFG_MS_MINUTE (60 * CFG_MS_SECOND)
#define CFG_MS_HOUR (60 * CFG_MS_MINUTE)
#define CFG_MS_DAY (24 * CFG_MS_HOUR)

struct cfg_error {
  unsigned line;
  size_t seq; /* qsort is not stable; keep report order within a line */
  char msg[CFG_MSG_MAX];
};

/* Lines of pool values that later cross-checks point at. */
struct cfg_pool_lines {
  unsigned labels;
  unsigned cpus;
  unsigned gpus;
};

struct cfg_parser {
  const char *name;
  yaml_document_t *doc;
  struct config *cfg;
  struct cfg_error *errors;
  size_t nerrors;
  size_t cap;
  int count;
  int backend_ok;    /* backend.type is valid: backend-specific checks apply */
  int gpus_ok;       /* backend.local.gpus is valid */
  int cpu_slots_set; /* cpu_slots was explicit: pools are checked against it */
  struct cfg_pool_lines lines[CFG_MAX_POOLS];
};

void cfg_err(struct cfg_parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
yaml_node_t *cfg_map_get(struct cfg_parser *p, yaml_node_t *map,
                         const char *key);
int cfg_map_check(struct cfg_parser *p, yaml_node_t *map, const char *path,
                  const char *const *keys);
unsigned cfg_key_line(struct cfg_parser *p, yaml_node_t *map, const char *key);
int cfg_get_str(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                const char *key, char **out);
int cfg_get_bool(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, int *out);
int cfg_get_uint(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, unsigned min, unsigned max, unsigned *out);
int cfg_get_int(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                const char *key, int64_t min, int64_t max, int64_t *out);
int cfg_get_duration(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                     const char *key, uint64_t min, uint64_t max,
                     uint64_t *out);
/* One scalar node v (named path in messages) as a duration in ms within
 * [min, max]: 1 or -1 (reported). */
int cfg_node_duration(struct cfg_parser *p, yaml_node_t *v, const char *path,
                      uint64_t min, uint64_t max, uint64_t *out);
int cfg_get_size(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, uint64_t min, uint64_t max, uint64_t *out);
int cfg_get_file(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, char **out);
int cfg_is_dns_name(const char *s, int dots);
unsigned cfg_line(const yaml_node_t *n);
yaml_node_t *cfg_node(struct cfg_parser *p, int index);
const char *cfg_text(const yaml_node_t *n);

int cfg_is_null(const yaml_node_t *n);
/* GitHub logins (repo 0) or repository names (repo 1) of len bytes. */
int cfg_is_github_name(const char *s, size_t len, int repo);

/* The collected errors, sorted by line, as "name:line: message" lines
 * into errs. */
void cfg_write_errors(struct cfg_parser *p, char *errs, size_t size);
/* prefix.key (or key without a prefix) into out. */
void cfg_join(char *out, size_t size, const char *prefix, const char *key);
/* An error at line (the map's) when map lacks key. */
void cfg_require(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, unsigned line);
/* key's value as the index of one of names (NULL-terminated): 0 absent,
 * 1 set, -1 an error was reported. */
int cfg_get_enum(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, const char *const *names, int *out);
int cfg_is_pool_name(const char *s);
int cfg_is_token_name(const char *s, size_t len);
/* See config.h (RUNFLEET_UNITTEST) for these. */
int cfg_parse_int(const char *s, int64_t *out);
int cfg_check_listen(const char *s);
int cfg_check_listen_pair(const char *a, const char *b);
int cfg_parse_sha256(const char *hex, unsigned char *out);

/* Sections parsed outside config.c. */
void cfg_parse_kubernetes(struct cfg_parser *p, yaml_node_t *be);
void cfg_kubernetes_defaults(struct cfg_kubernetes *k);
void cfg_kubernetes_free(struct cfg_kubernetes *k);
/* pools[].kubernetes (config_pool_kube.c). */
void cfg_parse_pool_kube(struct cfg_parser *p, yaml_node_t *pmap,
                         const char *prefix, struct cfg_pool *pool);
int cfg_pool_kube_defaults(struct cfg_pool_kube *k);
void cfg_pool_kube_free(struct cfg_pool_kube *k);
/* recovery: (config_recovery.c). */
void cfg_recovery_defaults(struct cfg_recovery *r);
void cfg_parse_recovery(struct cfg_parser *p, yaml_node_t *root);
void cfg_recovery_free(struct cfg_recovery *r);
/* devservers: (config_devservers.c); parsed after backend and pools. */
void cfg_devservers_defaults(struct cfg_devservers *d);
void cfg_parse_devservers(struct cfg_parser *p, yaml_node_t *root);
void cfg_devservers_free(struct cfg_devservers *d);

#endif
