#ifndef RUNFLEET_HOOK_WORKSPACE_H
#define RUNFLEET_HOOK_WORKSPACE_H

#include <stdint.h>

/* Workspace hygiene on reused work volumes. Walks never follow symbolic
 * links and never leave the filesystem of the directory they start in. */

/* Removes everything inside dir except the entries named in keep (a
 * NULL-terminated list, may be NULL), making read-only directories
 * writable first. A missing dir is fine. Returns 0 or the first negative
 * errno met (the walk goes on past errors). */
int ws_clear(const char *dir, const char *const *keep);

/* Bytes available to an unprivileged user on path's filesystem. */
int ws_disk_free(const char *path, uint64_t *bytes);

/* Bytes the tree under path occupies on disk (allocated blocks); 0 for a
 * missing path. */
int ws_disk_used(const char *path, uint64_t *bytes);

#endif
