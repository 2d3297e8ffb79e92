#ifndef RUNFLEET_DEVSERVER_LOCAL_H
#define RUNFLEET_DEVSERVER_LOCAL_H

/* The local backend's half of dev servers (docs/DEVSERVERS.md): each one
 * an unprivileged "sshd -D -e -f <config>" in its own session and process
 * group, with a host key made by ssh-keygen, the authorized_keys file
 * runfleetd writes, CUDA_VISIBLE_DEVICES of its GPUs and a home per user
 * that outlives reservations. Its files live in
 * <state_dir>/devservers/<id>/; homes in <state_dir>/devhomes/<user>/.
 * Under root, sshd runs as devservers.run_as, never as root.
 *
 * An sshd outlives runfleetd (a restart, a crash): its state file says
 * where it runs, and the next runfleetd adopts it. Ending one kills its
 * process group and every process whose environment names it, open
 * sessions included. */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "capacity.h"
#include "config.h"

struct dev_local; /* opaque */

/* What the owner hears of one dev server, by reservation id. */
struct dev_local_events {
  /* Its port accepts connections. */
  void (*ready)(void *arg, const char *id, unsigned port);
  /* It ended without being asked to (status: exit code, 128 + signal, or
   * -errno when it could not be started); why says so in words. */
  void (*exited)(void *arg, const char *id, int status, const char *why);
  void *arg;
};

/* One dev server to start. The text of authorized_keys is copied. */
struct dev_local_spec {
  const char *id;
  const char *user; /* the reservation's owner: whose home */
  const struct cap_placement *where;
  const char *authorized_keys;
  size_t keys_len;
};

/* Creates the books over cfg and state_dir (both must outlive them).
 * NULL when out of memory or when run_as is no user (logged). */
struct dev_local *dev_local_new(uv_loop_t *loop,
                                const struct cfg_devservers *cfg,
                                const char *state_dir,
                                const struct dev_local_events *ev);

/* Starts one: ssh-keygen, then sshd; ready or exited follows, never
 * before this returns. 0, -EEXIST (id runs), -EINVAL, -ENOMEM, or the
 * error of the first step (logged). */
int dev_local_start(struct dev_local *l, const struct dev_local_spec *s);
/* Ends one for good: kills its processes, removes its files (not the
 * home). No event follows. 0 or -ENOENT (nothing was known; leftovers of
 * id are still killed). */
int dev_local_stop(struct dev_local *l, const char *id);
/* Replaces its authorized_keys (sshd reads it at every login). */
int dev_local_set_keys(struct dev_local *l, const char *id, const char *text,
                       size_t len);
/* Takes back a dev server an earlier runfleetd started, when its sshd
 * still runs: its placement into *where and its port. From then on an end
 * of it is reported as exited. 0, -ENOENT (no state file), -ESRCH (its
 * sshd is gone: leftovers are killed). */
int dev_local_adopt(struct dev_local *l, const char *id,
                    struct cap_placement *where, unsigned *port);
/* The port of a running one, 0 when none. */
unsigned dev_local_port(const struct dev_local *l, const char *id);

/* Small files of a reservation kept beside its server's (the keys asked
 * for at reserve time): written through a rename; read into buf (size
 * bytes, NUL-terminated) returning the length or a negative errno. */
int dev_local_file_put(struct dev_local *l, const char *id, const char *name,
                       const char *text, size_t len);
ssize_t dev_local_file_get(const struct dev_local *l, const char *id,
                           const char *name, char *buf, size_t size);

/* Closes every handle and leaves the sshds running for the next
 * runfleetd; done_cb(arg) once dev_local_destroy may run. */
void dev_local_close(struct dev_local *l, void (*done_cb)(void *arg),
                     void *arg);
void dev_local_destroy(struct dev_local *l);

#endif
