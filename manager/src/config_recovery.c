/* The recovery: section of the configuration (see docs/CONFIG.md). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_parse.h"

/* GitHub keeps webhook deliveries for 3 days: looking further back finds
 * nothing. */
#define CFG_RECOVERY_MAX_WINDOW_MS (72 * CFG_MS_HOUR)

void cfg_recovery_defaults(struct cfg_recovery *r)
{
  r->enabled = CFG_DEFAULT_RECOVERY_ENABLED;
  r->interval_ms = CFG_DEFAULT_RECOVERY_INTERVAL_MS;
  r->window_ms = CFG_DEFAULT_RECOVERY_WINDOW_MS;
  r->call_budget = CFG_DEFAULT_RECOVERY_CALL_BUDGET;
  r->primary_reserve = CFG_DEFAULT_RECOVERY_PRIMARY_RESERVE;
  r->wait_threshold_ms = CFG_DEFAULT_RECOVERY_WAIT_THRESHOLD_MS;
  r->seen_within_ms = CFG_DEFAULT_RECOVERY_SEEN_WITHIN_MS;
  r->cursor_settle_ms = CFG_DEFAULT_RECOVERY_CURSOR_SETTLE_MS;
}

void cfg_recovery_free(struct cfg_recovery *r)
{
  size_t i;

  for (i = 0; i < r->nrepositories && i < CFG_MAX_RECOVERY_REPOS; i++)
    free(r->repositories[i]);
  r->nrepositories = 0;
}

static int cfg_is_repo(const char *s)
{
  const char *slash = strchr(s, '/');

  return slash != NULL && cfg_is_github_name(s, (size_t)(slash - s), 0) &&
         cfg_is_github_name(slash + 1, strlen(slash + 1), 1);
}

static void cfg_recovery_repos(struct cfg_parser *p, yaml_node_t *map)
{
  struct cfg_recovery *r = &p->cfg->recovery;
  yaml_node_t *seq = cfg_map_get(p, map, "repositories");
  yaml_node_item_t *it;
  yaml_node_t *v;
  size_t i;

  if (seq == NULL)
    return;
  if (seq->type != YAML_SEQUENCE_NODE) {
    cfg_err(p, cfg_line(seq), "recovery.repositories: expected a list");
    return;
  }
  for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
       it++) {
    v = cfg_node(p, *it);
    if (v == NULL)
      continue;
    if (v->type != YAML_SCALAR_NODE || !cfg_is_repo(cfg_text(v))) {
      cfg_err(p, cfg_line(v),
              "recovery.repositories: '%.64s' is not owner/name",
              v->type == YAML_SCALAR_NODE ? cfg_text(v) : "");
      continue;
    }
    for (i = 0; i < r->nrepositories; i++)
      if (strcasecmp(r->repositories[i], cfg_text(v)) == 0)
        break;
    if (i < r->nrepositories) {
      cfg_err(p, cfg_line(v), "recovery.repositories: '%.64s' is listed twice",
              cfg_text(v));
      continue;
    }
    if (r->nrepositories == CFG_MAX_RECOVERY_REPOS) {
      cfg_err(p, cfg_line(v), "recovery.repositories: more than %d",
              CFG_MAX_RECOVERY_REPOS);
      return;
    }
    r->repositories[r->nrepositories] = strdup(cfg_text(v));
    if (r->repositories[r->nrepositories] == NULL) {
      cfg_err(p, cfg_line(v), "recovery.repositories: out of memory");
      return;
    }
    r->nrepositories++;
  }
}

void cfg_parse_recovery(struct cfg_parser *p, yaml_node_t *root)
{
  static const char *const keys[] = {"enabled",         "interval",
                                     "window",          "call_budget",
                                     "primary_reserve", "wait_threshold",
                                     "seen_within",     "repositories",
                                     "cursor_settle",   NULL};
  struct cfg_recovery *r = &p->cfg->recovery;
  yaml_node_t *map = cfg_map_get(p, root, "recovery");
  const char *s = "recovery";

  if (map == NULL || cfg_map_check(p, map, s, keys) < 0)
    return;
  cfg_get_bool(p, map, s, "enabled", &r->enabled);
  cfg_get_duration(p, map, s, "interval", 100, 24 * CFG_MS_HOUR,
                   &r->interval_ms);
  cfg_get_duration(p, map, s, "window", CFG_MS_SECOND,
                   CFG_RECOVERY_MAX_WINDOW_MS, &r->window_ms);
  cfg_get_uint(p, map, s, "call_budget", 1, 100000, &r->call_budget);
  cfg_get_uint(p, map, s, "primary_reserve", 0, 1000000, &r->primary_reserve);
  cfg_get_duration(p, map, s, "wait_threshold", 100, 24 * CFG_MS_HOUR,
                   &r->wait_threshold_ms);
  cfg_get_duration(p, map, s, "seen_within", CFG_MS_SECOND,
                   30 * 24 * CFG_MS_HOUR, &r->seen_within_ms);
  cfg_get_duration(p, map, s, "cursor_settle", 0, 600 * CFG_MS_SECOND,
                   &r->cursor_settle_ms);
  cfg_recovery_repos(p, map);
}
