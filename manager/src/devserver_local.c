/* Dev servers as sshd processes on this machine. See devserver_local.h.
 *
 * One server goes KEYGEN (ssh-keygen makes its host key) -> STARTING (sshd
 * spawned, its port probed every DL_PROBE_MS) -> READY; an adopted one is
 * READY from the start, watched by pid since it is not our child. A
 * stopped one is killed at once and freed once its process handles have
 * closed (a child is reaped first, so none is left a zombie). */
#include "devserver_local.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devserver.h"
#include "fs.h"
#include "log.h"
#include "proc.h"

#define DL_MOD "devserver"
#define DL_PATH_MAX 1024
#define DL_PROBE_MS 100
#define DL_ENV_MAX (256u * 1024u)
#define DL_KILL_PASSES 3
#define DL_CONFIG_MAX 4096
#define DL_ENV_NAME "RUNFLEET_DEVSERVER"

enum dl_state { DL_KEYGEN, DL_STARTING, DL_READY };

struct dl_server {
  struct dl_server *next;
  struct dev_local *l;
  char id[DEV_ID_LEN + 1];
  char *user;
  enum dl_state state;
  struct cap_placement where;
  unsigned port;
  long pid;
  int adopted; /* not our child: watched by pid */
  int gone;    /* stopped or ended: no event, freed once handles close */
  uv_process_t keygen, sshd;
  int keygen_open, sshd_open;
};

struct dev_local {
  uv_loop_t *loop;
  const struct cfg_devservers *cfg;
  const char *state_dir;
  struct dev_local_events ev;
  uv_timer_t timer;
  int timer_open;
  int as_root;
  uv_uid_t uid;
  uv_gid_t gid;
  struct dl_server *servers;
  int closing;
  unsigned open_handles; /* process handles and the timer, until closed */
  void (*done_cb)(void *arg);
  void *done_arg;
};

/* ---- paths and files ---- */

static void dl_dir(const struct dev_local *l, const char *id, char *out,
                   size_t size)
{
  snprintf(out, size, "%s/devservers/%s", l->state_dir, id);
}

static void dl_path(const struct dev_local *l, const char *id, const char *name,
                    char *out, size_t size)
{
  snprintf(out, size, "%s/devservers/%s/%s", l->state_dir, id, name);
}

/* Writes path through a rename, with mode; owned by run_as when own. */
static int dl_write(const struct dev_local *l, const char *path,
                    const char *text, size_t len, mode_t mode, int own)
{
  char tmp[DL_PATH_MAX + 8];
  ssize_t n;
  int fd, rc = 0;

  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  while (len > 0) {
    n = write(fd, text, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      break;
    }
    text += n;
    len -= (size_t)n;
  }
  if (rc == 0 && fchmod(fd, mode) < 0)
    rc = -errno;
  if (rc == 0 && own && l->as_root && fchown(fd, l->uid, l->gid) < 0)
    rc = -errno;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) < 0)
    rc = -errno;
  if (rc != 0)
    unlink(tmp);
  return rc;
}

int dev_local_file_put(struct dev_local *l, const char *id, const char *name,
                       const char *text, size_t len)
{
  char dir[DL_PATH_MAX], path[DL_PATH_MAX];
  int rc;

  dl_dir(l, id, dir, sizeof(dir));
  rc = fs_mkdir_p(dir, 0755);
  if (rc != 0)
    return rc;
  dl_path(l, id, name, path, sizeof(path));
  return dl_write(l, path, text, len, 0644, 0);
}

ssize_t dev_local_file_get(const struct dev_local *l, const char *id,
                           const char *name, char *buf, size_t size)
{
  char path[DL_PATH_MAX];
  size_t len = 0;
  ssize_t n;
  int fd;

  dl_path(l, id, name, path, sizeof(path));
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  while (len + 1 < size) {
    n = read(fd, buf + len, size - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

/* sshd.state: what the next runfleetd needs to adopt the server. */
static void dl_state_write(const struct dl_server *s)
{
  char path[DL_PATH_MAX], text[1024], gpus[CAP_MAX_NODE_GPUS * 12] = "";
  size_t i, pos = 0;
  int n;

  for (i = 0; i < s->where.ngpus && pos < sizeof(gpus); i++)
    pos += (size_t)snprintf(gpus + pos, sizeof(gpus) - pos, "%s%d",
                            i > 0 ? "," : "", s->where.gpus[i]);
  n = snprintf(text, sizeof(text),
               "pid=%ld\nport=%u\nsource=%s\nnode=%s\ngpus=%s\n"
               "cpu_milli=%u\nmemory=%llu\n",
               s->pid, s->port, s->where.source, s->where.node, gpus,
               s->where.cpu_milli, (unsigned long long)s->where.memory);
  dl_path(s->l, s->id, "sshd.state", path, sizeof(path));
  if (n < 0 || (size_t)n >= sizeof(text) ||
      dl_write(s->l, path, text, (size_t)n, 0644, 0) != 0)
    log_warn(DL_MOD, "cannot record the dev server's sshd", LOG_S("id", s->id),
             LOG_S("file", path));
}

static void dl_gpus_parse(const char *p, struct cap_placement *w)
{
  char *end;
  long v;

  while (*p != '\0' && w->ngpus < CAP_MAX_NODE_GPUS) {
    v = strtol(p, &end, 10);
    if (end == p || v < 0)
      return;
    w->gpus[w->ngpus++] = (int)v;
    p = *end == ',' ? end + 1 : end;
  }
}

static int dl_state_read(const struct dev_local *l, const char *id, long *pid,
                         unsigned *port, struct cap_placement *w)
{
  char text[1024], *line, *save = NULL;
  ssize_t n = dev_local_file_get(l, id, "sshd.state", text, sizeof(text));

  memset(w, 0, sizeof(*w));
  *pid = 0;
  *port = 0;
  if (n < 0)
    return (int)n;
  for (line = strtok_r(text, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save)) {
    if (strncmp(line, "pid=", 4) == 0)
      *pid = strtol(line + 4, NULL, 10);
    else if (strncmp(line, "port=", 5) == 0)
      *port = (unsigned)strtoul(line + 5, NULL, 10);
    else if (strncmp(line, "source=", 7) == 0)
      snprintf(w->source, sizeof(w->source), "%s", line + 7);
    else if (strncmp(line, "node=", 5) == 0)
      snprintf(w->node, sizeof(w->node), "%s", line + 5);
    else if (strncmp(line, "gpus=", 5) == 0)
      dl_gpus_parse(line + 5, w);
    else if (strncmp(line, "cpu_milli=", 10) == 0)
      w->cpu_milli = (unsigned)strtoul(line + 10, NULL, 10);
    else if (strncmp(line, "memory=", 7) == 0)
      w->memory = strtoull(line + 7, NULL, 10);
  }
  return *pid > 0 && *port > 0 && w->node[0] != '\0' ? 0 : -EINVAL;
}

/* ---- processes ---- */

/* Whether pid is a live sshd running the config of reservation id: sshd
 * rewrites its environment with its process title, so its command line
 * ("sshd: <sshd> -D -e -f <config> [listener] ...") is what names it. */
static int dl_pid_is_sshd(const struct dev_local *l, long pid, const char *id,
                          char *buf)
{
  char cfg[DL_PATH_MAX];
  ssize_t n = proc_read(pid, "cmdline", buf, DL_ENV_MAX);
  ssize_t i;

  if (n <= 0 || kill((pid_t)pid, 0) != 0)
    return 0;
  for (i = 0; i < n; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  dl_path(l, id, "sshd_config", cfg, sizeof(cfg));
  return strstr(buf, cfg) != NULL;
}

/* Whether pid's environment names reservation id: the sessions sshd
 * starts have it from SetEnv, and what they start inherits it. */
static int dl_pid_env_is(long pid, const char *id, char *buf)
{
  const char *v = proc_environ_value(pid, DL_ENV_NAME, buf, DL_ENV_MAX);

  return v != NULL && strcmp(v, id) == 0;
}

static long dl_ppid(long pid, char *buf)
{
  ssize_t n = proc_read(pid, "stat", buf, 1024);
  const char *p = n > 0 ? strrchr(buf, ')') : NULL;
  long ppid = 0;

  /* "pid (comm) state ppid ...": comm may hold anything but the last ')'. */
  if (p != NULL && sscanf(p + 1, " %*c %ld", &ppid) != 1)
    ppid = 0;
  return ppid;
}

#define DL_MAX_PROCS 65536

/* Kills the sshd of id with every process below it (its per-connection
 * children and their sessions start sessions of their own, so a process
 * group is not enough) and every process whose environment names id (a
 * session's daemon that left the tree). Returns how many it killed. */
static int dl_kill_all(const struct dev_local *l, const char *id)
{
  char *buf = malloc(DL_ENV_MAX + 1);
  long *pids = malloc(DL_MAX_PROCS * sizeof(long) * 2), *ppids;
  struct dirent *e;
  size_t n, i, j;
  int pass, killed = 0, changed;
  unsigned char *mark = NULL;
  long p;
  DIR *d;

  if (buf == NULL || pids == NULL)
    goto out;
  ppids = pids + DL_MAX_PROCS;
  mark = calloc(DL_MAX_PROCS, 1);
  if (mark == NULL)
    goto out;
  for (pass = 0; pass < DL_KILL_PASSES; pass++) {
    d = opendir("/proc");
    if (d == NULL)
      break;
    n = 0;
    while ((e = readdir(d)) != NULL && n < DL_MAX_PROCS) {
      p = strtol(e->d_name, NULL, 10);
      if (p <= 1 || p == (long)getpid())
        continue;
      pids[n] = p;
      ppids[n] = dl_ppid(p, buf);
      mark[n] = dl_pid_is_sshd(l, p, id, buf) || dl_pid_env_is(p, id, buf);
      n++;
    }
    closedir(d);
    /* Everything below a marked process is marked too. */
    do {
      changed = 0;
      for (i = 0; i < n; i++)
        for (j = 0; !mark[i] && j < n; j++)
          if (mark[j] && ppids[i] == pids[j])
            mark[i] = changed = 1;
    } while (changed);
    for (i = 0; i < n; i++)
      if (mark[i] && kill((pid_t)pids[i], SIGKILL) == 0)
        killed++;
    memset(mark, 0, n);
  }
out:
  free(mark);
  free(pids);
  free(buf);
  return killed;
}

static struct dl_server *dl_find(const struct dev_local *l, const char *id)
{
  struct dl_server *s;

  for (s = l->servers; s != NULL; s = s->next)
    if (!s->gone && strcmp(s->id, id) == 0)
      return s;
  return NULL;
}

static void dl_free_if_done(struct dl_server *s)
{
  struct dev_local *l = s->l;
  struct dl_server **pp;

  if (!s->gone || s->keygen_open || s->sshd_open)
    return;
  for (pp = &l->servers; *pp != NULL; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  free(s->user);
  free(s);
}

/* Every handle's close ends here: the last one of a closing dev_local
 * lets its owner destroy it. */
static void dl_handle_closed(struct dev_local *l)
{
  if (--l->open_handles == 0 && l->closing && l->done_cb != NULL)
    l->done_cb(l->done_arg);
}

static void dl_keygen_closed_cb(uv_handle_t *h)
{
  struct dl_server *s = h->data;
  struct dev_local *l = s->l;

  s->keygen_open = 0;
  dl_free_if_done(s);
  dl_handle_closed(l);
}

static void dl_sshd_closed_cb(uv_handle_t *h)
{
  struct dl_server *s = h->data;
  struct dev_local *l = s->l;

  s->sshd_open = 0;
  dl_free_if_done(s);
  dl_handle_closed(l);
}

static void dl_timer_closed_cb(uv_handle_t *h)
{
  dl_handle_closed(h->data);
}

/* The server ended on its own: it is reported once and forgotten. */
static void dl_ended(struct dl_server *s, int status, const char *why)
{
  char id[DEV_ID_LEN + 1];

  if (s->gone)
    return;
  s->gone = 1;
  snprintf(id, sizeof(id), "%s", s->id);
  log_warn(DL_MOD, "dev server sshd ended", LOG_S("id", id),
           LOG_I("status", status), LOG_S("why", why));
  dl_kill_all(s->l, s->id);
  if (s->l->ev.exited != NULL)
    s->l->ev.exited(s->l->ev.arg, id, status, why);
}

static void dl_sshd_exit_cb(uv_process_t *p, int64_t status, int sig)
{
  struct dl_server *s = p->data;
  int code = sig != 0 ? 128 + sig : (int)status;

  dl_ended(s, code,
           s->state == DL_READY ? "sshd exited" : "sshd exited before ready");
  uv_close((uv_handle_t *)p, dl_sshd_closed_cb);
}

/* Env of sshd: a plain PATH and the reservation's id, nothing of ours. */
static int dl_spawn_sshd(struct dl_server *s)
{
  struct dev_local *l = s->l;
  char dir[DL_PATH_MAX], cfg[DL_PATH_MAX], logf[DL_PATH_MAX];
  char env_id[64];
  char *args[7], *env[3];
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  int fd, rc;

  dl_dir(l, s->id, dir, sizeof(dir));
  dl_path(l, s->id, "sshd_config", cfg, sizeof(cfg));
  dl_path(l, s->id, "sshd.log", logf, sizeof(logf));
  fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  snprintf(env_id, sizeof(env_id), DL_ENV_NAME "=%s", s->id);
  args[0] = l->cfg->sshd;
  args[1] = "-D";
  args[2] = "-e";
  args[3] = "-f";
  args[4] = cfg;
  args[5] = NULL;
  env[0] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  env[1] = env_id;
  env[2] = NULL;
  memset(&o, 0, sizeof(o));
  o.file = l->cfg->sshd;
  o.args = args;
  o.env = env;
  o.cwd = dir;
  o.exit_cb = dl_sshd_exit_cb;
  /* Its own session: it outlives runfleetd, and its group is killed. */
  o.flags = UV_PROCESS_DETACHED;
  if (l->as_root) {
    o.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
    o.uid = l->uid;
    o.gid = l->gid;
  }
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = stdio[2].flags = UV_INHERIT_FD;
  stdio[1].data.fd = stdio[2].data.fd = fd;
  o.stdio = stdio;
  o.stdio_count = 3;
  s->sshd.data = s;
  rc = uv_spawn(l->loop, &s->sshd, &o);
  close(fd);
  /* A failed spawn still needs its handle closed. */
  s->sshd_open = 1;
  l->open_handles++;
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->sshd, dl_sshd_closed_cb);
    return rc;
  }
  s->pid = s->sshd.pid;
  s->state = DL_STARTING;
  dl_state_write(s);
  log_info(DL_MOD, "dev server sshd started", LOG_S("id", s->id),
           LOG_I("pid", (long)s->pid), LOG_U("port", s->port));
  return 0;
}

static void dl_keygen_exit_cb(uv_process_t *p, int64_t status, int sig)
{
  struct dl_server *s = p->data;
  char key[DL_PATH_MAX];
  int rc;

  uv_close((uv_handle_t *)p, dl_keygen_closed_cb);
  if (s->gone || s->l->closing)
    return;
  if (status != 0 || sig != 0) {
    dl_ended(s, sig != 0 ? 128 + sig : (int)status, "ssh-keygen failed");
    return;
  }
  dl_path(s->l, s->id, "host_ed25519_key", key, sizeof(key));
  if (s->l->as_root && chown(key, s->l->uid, s->l->gid) < 0) {
    dl_ended(s, -errno, "cannot hand the host key to run_as");
    return;
  }
  rc = dl_spawn_sshd(s);
  if (rc != 0)
    dl_ended(s, rc, "cannot start sshd");
}

static int dl_spawn_keygen(struct dl_server *s)
{
  char key[DL_PATH_MAX];
  char *args[] = {"ssh-keygen", "-q",  "-t", "ed25519", "-N", "",
                  "-C",         s->id, "-f", key,       NULL};
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  int rc;

  dl_path(s->l, s->id, "host_ed25519_key", key, sizeof(key));
  unlink(key);
  memset(&o, 0, sizeof(o));
  o.file = "ssh-keygen";
  o.args = args;
  o.exit_cb = dl_keygen_exit_cb;
  stdio[0].flags = stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  o.stdio = stdio;
  o.stdio_count = 3;
  s->keygen.data = s;
  rc = uv_spawn(s->l->loop, &s->keygen, &o);
  s->keygen_open = 1;
  s->l->open_handles++;
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->keygen, dl_keygen_closed_cb);
    return rc;
  }
  s->state = DL_KEYGEN;
  return 0;
}

/* ---- ports and readiness ---- */

static int dl_addr(const struct dev_local *l, unsigned port,
                   struct sockaddr_in *a, int probe)
{
  const char *host = l->cfg->listen;

  if (probe && strcmp(host, "0.0.0.0") == 0)
    host = "127.0.0.1";
  memset(a, 0, sizeof(*a));
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -EINVAL;
}

/* A port nothing listens on now: from devservers.ports, else one the
 * kernel picks. 0 when none. */
static unsigned dl_free_port(const struct dev_local *l)
{
  struct sockaddr_in a;
  socklen_t alen = sizeof(a);
  unsigned port = l->cfg->port_first, found = 0;
  const struct dl_server *s;
  int fd, used;

  for (;;) {
    used = 0;
    for (s = l->servers; s != NULL && port != 0; s = s->next)
      if (!s->gone && s->port == port)
        used = 1;
    fd = used ? -1 : socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && dl_addr(l, port, &a, 0) == 0 &&
        bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
      found = ntohs(a.sin_port);
    if (fd >= 0)
      close(fd);
    if (found != 0 || port == 0 || port >= l->cfg->port_last)
      return found;
    port++;
  }
}

/* Whether port accepts a connection now. Even on loopback a non-blocking
 * connect may still be in progress: it gets DL_CONNECT_MS to finish. */
#define DL_CONNECT_MS 20
static int dl_accepts(const struct dev_local *l, unsigned port)
{
  struct sockaddr_in a;
  struct pollfd pfd;
  socklen_t elen = sizeof(int);
  int fd, ok, err = 0;

  if (dl_addr(l, port, &a, 1) != 0)
    return 0;
  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  if (!ok && errno == EINPROGRESS) {
    pfd.fd = fd;
    pfd.events = POLLOUT;
    ok = poll(&pfd, 1, DL_CONNECT_MS) == 1 &&
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0;
  }
  close(fd);
  return ok;
}

static void dl_timer_cb(uv_timer_t *t)
{
  struct dev_local *l = t->data;
  struct dl_server *s, *next;
  char *buf = NULL;

  for (s = l->servers; s != NULL; s = next) {
    next = s->next;
    if (s->gone)
      continue;
    if (s->state == DL_STARTING && dl_accepts(l, s->port)) {
      s->state = DL_READY;
      log_info(DL_MOD, "dev server accepts connections", LOG_S("id", s->id),
               LOG_U("port", s->port));
      if (l->ev.ready != NULL)
        l->ev.ready(l->ev.arg, s->id, s->port);
    } else if (s->adopted) {
      if (buf == NULL)
        buf = malloc(DL_ENV_MAX + 1);
      if (buf != NULL && !dl_pid_is_sshd(l, s->pid, s->id, buf))
        dl_ended(s, 0, "adopted sshd is gone");
    }
  }
  free(buf);
}

/* ---- the interface ---- */

struct dev_local *dev_local_new(uv_loop_t *loop,
                                const struct cfg_devservers *cfg,
                                const char *state_dir,
                                const struct dev_local_events *ev)
{
  struct dev_local *l = calloc(1, sizeof(*l));
  struct passwd *pw;

  if (l == NULL)
    return NULL;
  l->loop = loop;
  l->cfg = cfg;
  l->state_dir = state_dir;
  if (ev != NULL)
    l->ev = *ev;
  l->as_root = geteuid() == 0;
  if (l->as_root) {
    pw = getpwnam(cfg->run_as);
    if (pw == NULL || pw->pw_uid == 0) {
      log_error(DL_MOD, "devservers.run_as is no user dev servers may run as",
                LOG_S("run_as", cfg->run_as));
      free(l);
      return NULL;
    }
    l->uid = pw->pw_uid;
    l->gid = pw->pw_gid;
  }
  (void)uv_timer_init(loop, &l->timer);
  l->timer.data = l;
  l->timer_open = 1;
  l->open_handles = 1;
  if (uv_timer_start(&l->timer, dl_timer_cb, DL_PROBE_MS, DL_PROBE_MS) != 0)
    log_warn(DL_MOD, "cannot start the dev server timer", LOG_NONE);
  return l;
}

/* The home of user, made once and kept: owned by run_as under root. */
static int dl_home(const struct dev_local *l, const char *user, char *out,
                   size_t size)
{
  int rc;

  snprintf(out, size, "%s/devhomes/%s", l->state_dir, user);
  rc = fs_mkdir_p(out, 0700);
  if (rc != 0)
    return rc;
  if (l->as_root && chown(out, l->uid, l->gid) < 0)
    return -errno;
  return 0;
}

static int dl_write_config(struct dl_server *s, const char *home)
{
  struct dev_local *l = s->l;
  char key[DL_PATH_MAX], auth[DL_PATH_MAX], path[DL_PATH_MAX];
  char text[DL_CONFIG_MAX];
  const char *user = l->cfg->run_as;
  struct dev_sshd_spec spec;
  struct passwd *pw;
  int n;

  if (!l->as_root) {
    pw = getpwuid(geteuid());
    if (pw == NULL)
      return -ENOENT;
    user = pw->pw_name;
  }
  dl_path(l, s->id, "host_ed25519_key", key, sizeof(key));
  dl_path(l, s->id, "authorized_keys", auth, sizeof(auth));
  memset(&spec, 0, sizeof(spec));
  spec.id = s->id;
  spec.listen = l->cfg->listen;
  spec.port = s->port;
  spec.host_key = key;
  spec.authorized_keys = auth;
  spec.user = user;
  spec.gpus = s->where.gpus;
  spec.ngpus = s->where.ngpus;
  spec.home = home;
  n = dev_sshd_config(&spec, text, sizeof(text));
  if (n < 0)
    return n;
  dl_path(l, s->id, "sshd_config", path, sizeof(path));
  return dl_write(l, path, text, (size_t)n, 0644, 0);
}

static int dl_prepare_files(struct dl_server *s,
                            const struct dev_local_spec *sp)
{
  char dir[DL_PATH_MAX], home[DL_PATH_MAX], auth[DL_PATH_MAX];
  int rc;

  dl_dir(s->l, s->id, dir, sizeof(dir));
  rc = fs_mkdir_p(dir, 0755);
  if (rc == 0)
    rc = dl_home(s->l, sp->user, home, sizeof(home));
  dl_path(s->l, s->id, "authorized_keys", auth, sizeof(auth));
  if (rc == 0)
    rc = dl_write(s->l, auth, sp->authorized_keys, sp->keys_len, 0644, 0);
  if (rc == 0)
    rc = dl_write_config(s, home);
  return rc;
}

int dev_local_start(struct dev_local *l, const struct dev_local_spec *sp)
{
  struct dl_server *s;
  int rc;

  if (l->closing)
    return -ECANCELED;
  if (dl_find(l, sp->id) != NULL)
    return -EEXIST;
  if (strlen(sp->id) != DEV_ID_LEN || sp->where->ngpus > DEV_SSHD_MAX_GPUS)
    return -EINVAL;
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  s->user = strdup(sp->user);
  if (s->user == NULL) {
    free(s);
    return -ENOMEM;
  }
  s->l = l;
  snprintf(s->id, sizeof(s->id), "%s", sp->id);
  s->where = *sp->where;
  /* What an earlier start of this id left runs no more. */
  dl_kill_all(l, s->id);
  s->port = dl_free_port(l);
  rc = s->port == 0 ? -EADDRINUSE : dl_prepare_files(s, sp);
  if (rc == 0)
    rc = dl_spawn_keygen(s);
  s->next = l->servers;
  l->servers = s;
  if (rc != 0) {
    log_error(DL_MOD, "cannot start dev server", LOG_S("id", s->id),
              LOG_S("error", strerror(rc < 0 ? -rc : rc)));
    s->gone = 1;
    dl_free_if_done(s);
    return rc;
  }
  return 0;
}

int dev_local_stop(struct dev_local *l, const char *id)
{
  struct dl_server *s = dl_find(l, id);
  char dir[DL_PATH_MAX];
  int killed, rc;

  if (s != NULL)
    s->gone = 1;
  killed = dl_kill_all(l, id);
  dl_dir(l, id, dir, sizeof(dir));
  rc = fs_rmtree(dir);
  if (rc != 0)
    log_warn(DL_MOD, "cannot remove the dev server's files", LOG_S("dir", dir),
             LOG_S("error", strerror(-rc)));
  log_info(DL_MOD, "dev server stopped", LOG_S("id", id),
           LOG_I("killed", killed));
  if (s == NULL)
    return -ENOENT;
  dl_free_if_done(s);
  return 0;
}

int dev_local_set_keys(struct dev_local *l, const char *id, const char *text,
                       size_t len)
{
  char path[DL_PATH_MAX];

  dl_path(l, id, "authorized_keys", path, sizeof(path));
  return dl_write(l, path, text, len, 0644, 0);
}

int dev_local_adopt(struct dev_local *l, const char *id,
                    struct cap_placement *where, unsigned *port)
{
  struct dl_server *s;
  char *buf;
  long pid = 0;
  int rc, alive;

  if (dl_find(l, id) != NULL)
    return -EEXIST;
  rc = dl_state_read(l, id, &pid, port, where);
  if (rc != 0)
    return -ENOENT;
  buf = malloc(DL_ENV_MAX + 1);
  if (buf == NULL)
    return -ENOMEM;
  alive = dl_pid_is_sshd(l, pid, id, buf);
  free(buf);
  if (!alive) {
    dl_kill_all(l, id);
    return -ESRCH;
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  s->l = l;
  snprintf(s->id, sizeof(s->id), "%s", id);
  s->where = *where;
  s->port = *port;
  s->pid = pid;
  s->adopted = 1;
  s->state = DL_READY;
  s->next = l->servers;
  l->servers = s;
  log_info(DL_MOD, "dev server adopted", LOG_S("id", id), LOG_I("pid", pid),
           LOG_U("port", *port));
  return 0;
}

unsigned dev_local_port(const struct dev_local *l, const char *id)
{
  const struct dl_server *s = dl_find(l, id);

  return s != NULL && s->state == DL_READY ? s->port : 0;
}

void dev_local_close(struct dev_local *l, void (*done_cb)(void *arg), void *arg)
{
  struct dl_server *s;

  l->closing = 1;
  l->done_cb = done_cb;
  l->done_arg = arg;
  l->open_handles++; /* this function's own share */
  for (s = l->servers; s != NULL; s = s->next) {
    s->gone = 1;
    if (s->keygen_open && !uv_is_closing((uv_handle_t *)&s->keygen))
      uv_close((uv_handle_t *)&s->keygen, dl_keygen_closed_cb);
    if (s->sshd_open && !uv_is_closing((uv_handle_t *)&s->sshd))
      uv_close((uv_handle_t *)&s->sshd, dl_sshd_closed_cb);
  }
  if (l->timer_open) {
    l->timer_open = 0;
    uv_close((uv_handle_t *)&l->timer, dl_timer_closed_cb);
  }
  dl_handle_closed(l);
}

void dev_local_destroy(struct dev_local *l)
{
  struct dl_server *s, *next;

  if (l == NULL)
    return;
  for (s = l->servers; s != NULL; s = next) {
    next = s->next;
    free(s->user);
    free(s);
  }
  free(l);
}
