#ifndef RUNFLEET_HOOK_GIT_CACHE_H
#define RUNFLEET_HOOK_GIT_CACHE_H

#include <stdint.h>

#include "hook_config.h"

/* A node-local bare mirror per repository, fetched incrementally with
 * libgit2 under a per-mirror flock, and offered to the job's checkout as
 * alternates. A broken cache never fails a job: it is moved aside and the
 * checkout goes without it. */

enum gcache_outcome {
  GCACHE_DISABLED, /* RUNFLEET_GIT_CACHE=0, or no repository to cache */
  GCACHE_SKIPPED,  /* not tried: the job fails its health checks anyway */
  GCACHE_HIT,      /* an existing mirror was brought up to date */
  GCACHE_MISS,     /* the mirror was created by this run */
  GCACHE_ERROR     /* no alternates this time; see message */
};

#define GCACHE_PATH_MAX 4096

struct gcache_result {
  enum gcache_outcome outcome;
  uint64_t bytes_fetched; /* received from the server by this fetch */
  uint64_t bytes_saved;   /* pack bytes the mirror held before it */
  double seconds;
  char message[256];
  char objects[GCACHE_PATH_MAX]; /* the mirror's objects dir on a hit/miss */
};

/* Brings the mirror of cfg's repository up to date within timeout_ms, in a
 * child process the hook kills at the deadline. Fills res; never fails. */
void gcache_update(const struct hook_config *cfg, unsigned timeout_ms,
                   struct gcache_result *res);

/* Appends GIT_ALTERNATE_OBJECT_DIRECTORIES=<objects> to the $GITHUB_ENV
 * file at github_env. 0 or a negative errno. */
int gcache_export(const char *github_env, const char *objects);

/* The report name of an outcome: "hit", "miss", ... */
const char *gcache_outcome_name(enum gcache_outcome outcome);

#ifdef RUNFLEET_UNITTEST
/* The mirror's directory name for a repository URL. */
int gcache_mirror_name(const char *url, char *name, size_t size);
/* Cheap consistency checks of a bare mirror; 0 or -EINVAL. */
int gcache_validate(const char *path);
#endif

#endif
