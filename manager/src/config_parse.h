#ifndef RUNFLEET_CONFIG_PARSE_H
#define RUNFLEET_CONFIG_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "config.h"

/* The parser's state and the typed getters config.c shares with the
 * files that parse one section each (config_recovery.c). Internal to the
 * config_* files. */

#define CFG_MSG_MAX 320
#define CFG_PATH_MAX 96
#define CFG_MAX_STORED_ERRORS 512
/* Runner names are "rf-<pool>-<tag 8>-<boot 4>-<n up to 10 digits>" and
 * GitHub refuses runner names longer than 64 characters: 28 + 32 = 60. */
#define CFG_MAX_POOL_NAME 32

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

/* Records a problem at line (sorted and written out at the end). */
void cfg_err(struct cfg_parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

yaml_node_t *cfg_node(struct cfg_parser *p, int index);
unsigned cfg_line(const yaml_node_t *n);
const char *cfg_text(const yaml_node_t *n);
int cfg_is_null(const yaml_node_t *n);
/* GitHub logins (repo 0) or repository names (repo 1) of len bytes. */
int cfg_is_github_name(const char *s, size_t len, int repo);
/* Reports keys of map not in keys (NULL-terminated) and duplicates; -1
 * when map is not a mapping. */
int cfg_map_check(struct cfg_parser *p, yaml_node_t *map, const char *path,
                  const char *const *keys);
/* The value of key in map, NULL when absent or null. */
yaml_node_t *cfg_map_get(struct cfg_parser *p, yaml_node_t *map,
                         const char *key);
/* The line of key in map, 0 if absent. */
unsigned cfg_key_line(struct cfg_parser *p, yaml_node_t *map, const char *key);
/* Typed getters: 0 when the key is absent (*out keeps its default), 1 when
 * set, -1 when the value is bad (reported). */
int cfg_get_bool(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, int *out);
int cfg_get_uint(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                 const char *key, unsigned min, unsigned max, unsigned *out);
int cfg_get_duration(struct cfg_parser *p, yaml_node_t *map, const char *prefix,
                     const char *key, uint64_t min, uint64_t max,
                     uint64_t *out);

/* config_recovery.c: the recovery: section. */
void cfg_recovery_defaults(struct cfg_recovery *r);
void cfg_parse_recovery(struct cfg_parser *p, yaml_node_t *root);
void cfg_recovery_free(struct cfg_recovery *r);

#endif
