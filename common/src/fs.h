#ifndef RUNFLEET_FS_H
#define RUNFLEET_FS_H

#include <sys/types.h>

/* File-system helpers both binaries need: runfleetd (state and work
 * directories) and runfleet-hook (caches and state files). */

/* Creates path and its missing parents with mode (an existing directory
 * is fine). Returns 0 or a negative errno; -ENAMETOOLONG past PATH_MAX. */
int fs_mkdir_p(const char *path, mode_t mode);

/* Creates the directory that holds path (everything before its last '/'),
 * as fs_mkdir_p does; nothing for a path without one. */
int fs_mkdir_parent(const char *path, mode_t mode);

/* Removes the tree at path, read-only and unreadable directories included,
 * never following symbolic links or crossing mounts. Returns 0 (also when
 * path is gone) or a negative errno. */
int fs_rmtree(const char *path);

#endif
