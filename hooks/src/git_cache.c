#include "git_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "hook_log.h"
#include "unittest.h"
#include "workspace.h"

#define GCACHE_NAME_MAX 200
#define GCACHE_HEAD_MAX 256
#define GCACHE_LOCK_POLL_MS 100
#define GCACHE_CHILD_MARGIN_MS 500 /* the child gives up this much sooner */
#define GCACHE_REFSPEC "+refs/*:refs/*"

/* What the fetching child tells the hook, over a pipe. */
struct gcache_msg {
  int outcome;
  uint64_t bytes_fetched;
  uint64_t bytes_saved;
  char message[256];
  char objects[GCACHE_PATH_MAX];
};

struct gcache_fetch_ctx {
  long long deadline_ms;
  const char *token; /* secret: never logged */
  int cred_tries;
  int timed_out;
};

const char *gcache_outcome_name(enum gcache_outcome outcome)
{
  switch (outcome) {
  case GCACHE_DISABLED:
    return "disabled";
  case GCACHE_SKIPPED:
    return "skipped";
  case GCACHE_HIT:
    return "hit";
  case GCACHE_MISS:
    return "miss";
  case GCACHE_ERROR:
    return "error";
  }
  return "error";
}

static long long gcache_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

UNITTEST int gcache_mirror_name(const char *url, char *name, size_t size)
{
  const char *p = strstr(url, "://"), *at;
  size_t n = 0, len;

  p = p != NULL ? p + 3 : url;
  /* Credentials in the URL are no part of the name (nor of any log). */
  at = strchr(p, '@');
  if (at != NULL && at < p + strcspn(p, "/"))
    p = at + 1;
  len = strlen(p);
  while (len > 0 && p[len - 1] == '/')
    len--;
  if (len > 4 && strncmp(p + len - 4, ".git", 4) == 0)
    len -= 4;
  if (len == 0 || len > GCACHE_NAME_MAX || len + 5 > size)
    return -EINVAL;
  for (; n < len; n++) {
    char c = p[n];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9') || c == '-' || c == '.';

    name[n] = ok ? c : '_';
  }
  memcpy(name + n, ".git", 5);
  if (name[0] == '.')
    name[0] = '_';
  return 0;
}

static int gcache_rmtree(const char *path)
{
  int rc = ws_clear(path, NULL);

  if (rmdir(path) < 0 && errno != ENOENT && rc == 0)
    rc = -errno;
  return rc;
}

static int gcache_read_at(int fd, off_t off, void *buf, size_t len)
{
  ssize_t n = pread(fd, buf, len, off);

  return n == (ssize_t)len ? 0 : -EINVAL;
}

/* A pack ends with the SHA-1 of its contents, and its .idx repeats that
 * checksum 40 bytes from its end: a truncated or swapped pack fails this
 * without reading it whole. */
static int gcache_check_pack(int dirfd, const char *pack)
{
  unsigned char head[8], pack_sum[20], idx_sum[20];
  char idx[NAME_MAX + 1];
  size_t len = strlen(pack);
  struct stat pst, ist;
  int pfd = -1, ifd = -1, rc = -EINVAL;

  if (len < 5 || len >= sizeof(idx))
    return -EINVAL;
  memcpy(idx, pack, len - 5);
  memcpy(idx + len - 5, ".idx", 5);
  pfd = openat(dirfd, pack, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  ifd = openat(dirfd, idx, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (pfd < 0 || ifd < 0 || fstat(pfd, &pst) < 0 || fstat(ifd, &ist) < 0)
    goto out;
  if (pst.st_size < 32 || ist.st_size < 1072)
    goto out;
  if (gcache_read_at(pfd, 0, head, sizeof(head)) < 0 ||
      memcmp(head, "PACK", 4) != 0 || head[4] != 0 || head[5] != 0 ||
      head[6] != 0 || (head[7] != 2 && head[7] != 3))
    goto out;
  if (gcache_read_at(pfd, pst.st_size - 20, pack_sum, 20) < 0 ||
      gcache_read_at(ifd, ist.st_size - 40, idx_sum, 20) < 0 ||
      memcmp(pack_sum, idx_sum, 20) != 0)
    goto out;
  rc = 0;
out:
  if (pfd >= 0)
    close(pfd);
  if (ifd >= 0)
    close(ifd);
  return rc;
}

static int gcache_check_packs(const char *path, uint64_t *bytes)
{
  char dir[GCACHE_PATH_MAX + 32];
  struct dirent *de;
  struct stat st;
  int rc = 0;
  DIR *d;

  *bytes = 0;
  snprintf(dir, sizeof(dir), "%s/objects/pack", path);
  d = opendir(dir);
  if (d == NULL)
    return errno == ENOENT ? 0 : -EINVAL;
  while ((de = readdir(d)) != NULL) {
    size_t len = strlen(de->d_name);

    if (len < 6 || strcmp(de->d_name + len - 5, ".pack") != 0)
      continue;
    if (gcache_check_pack(dirfd(d), de->d_name) < 0) {
      hlog_info("git cache: pack %s is damaged", de->d_name);
      rc = -EINVAL;
      break;
    }
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
      *bytes += (uint64_t)st.st_size;
  }
  closedir(d);
  return rc;
}

static int gcache_check_head(const char *path)
{
  char file[GCACHE_PATH_MAX + 8], buf[GCACHE_HEAD_MAX];
  size_t i;
  ssize_t n;
  int fd;

  snprintf(file, sizeof(file), "%s/HEAD", path);
  fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return -EINVAL;
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return -EINVAL;
  buf[n] = '\0';
  if (strncmp(buf, "ref: refs/", 10) == 0) {
    for (i = 10; buf[i] != '\0' && buf[i] != '\n'; i++)
      if (buf[i] <= ' ' || buf[i] == 0x7f)
        return -EINVAL;
    return buf[i] == '\n' && buf[i + 1] == '\0' ? 0 : -EINVAL;
  }
  for (i = 0; i < 40; i++)
    if (!((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f')))
      return -EINVAL;
  return buf[40] == '\n' && buf[41] == '\0' ? 0 : -EINVAL;
}

/* Every ref must name an object the mirror can read. */
static int gcache_check_refs(const char *path)
{
  git_repository *repo = NULL;
  git_reference_iterator *it = NULL;
  git_reference *ref;
  int rc = -EINVAL, grc;

  if (git_repository_open_bare(&repo, path) < 0)
    return -EINVAL;
  if (git_reference_iterator_new(&it, repo) < 0)
    goto out;
  while ((grc = git_reference_next(&ref, it)) == 0) {
    const git_oid *oid = git_reference_target(ref);
    git_object *obj = NULL;
    int orc = 0;

    if (oid != NULL)
      orc = git_object_lookup(&obj, repo, oid, GIT_OBJECT_ANY);
    git_object_free(obj);
    git_reference_free(ref);
    if (orc < 0)
      goto out;
  }
  if (grc == GIT_ITEROVER)
    rc = 0;
out:
  git_reference_iterator_free(it);
  git_repository_free(repo);
  return rc;
}

UNITTEST int gcache_validate(const char *path)
{
  uint64_t bytes;
  int rc;

  if (gcache_check_head(path) < 0 || gcache_check_packs(path, &bytes) < 0)
    return -EINVAL;
  if (git_libgit2_init() < 0)
    return -EINVAL;
  rc = gcache_check_refs(path);
  git_libgit2_shutdown();
  return rc;
}

static int gcache_progress_cb(const git_indexer_progress *stats, void *payload)
{
  struct gcache_fetch_ctx *ctx = payload;

  (void)stats;
  if (gcache_now_ms() >= ctx->deadline_ms) {
    ctx->timed_out = 1;
    return -1; /* aborts the transfer */
  }
  return 0;
}

static int gcache_credentials_cb(git_credential **out, const char *url,
                                 const char *username_from_url,
                                 unsigned int allowed_types, void *payload)
{
  struct gcache_fetch_ctx *ctx = payload;

  (void)url;
  (void)username_from_url;
  /* One try: a rejected token would be offered again forever. */
  if (ctx->token == NULL || ctx->cred_tries++ > 0 ||
      !(allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT))
    return GIT_PASSTHROUGH;
  return git_credential_userpass_plaintext_new(out, "x-access-token",
                                               ctx->token);
}

static const char *gcache_git_error(void)
{
  const git_error *e = git_error_last();

  return e != NULL && e->message != NULL ? e->message : "unknown error";
}

static int gcache_fetch(const char *path, const char *url,
                        struct gcache_fetch_ctx *ctx, struct gcache_msg *msg)
{
  char *specs[] = {GCACHE_REFSPEC};
  git_strarray refspecs = {specs, 1};
  git_fetch_options fo;
  git_repository *repo = NULL;
  git_remote *remote = NULL;
  int rc = -EIO;

  if (git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION) < 0)
    goto out;
  fo.prune = GIT_FETCH_PRUNE;
  fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE; /* the refspec has them */
  fo.update_fetchhead = 0;
  fo.callbacks.transfer_progress = gcache_progress_cb;
  fo.callbacks.credentials = gcache_credentials_cb;
  fo.callbacks.payload = ctx;
  if (git_repository_open_bare(&repo, path) < 0 ||
      git_remote_create_anonymous(&remote, repo, url) < 0) {
    snprintf(msg->message, sizeof(msg->message), "cannot open mirror: %s",
             gcache_git_error());
    goto out;
  }
  if (git_remote_fetch(remote, &refspecs, &fo, "runfleet mirror") < 0) {
    if (ctx->timed_out)
      snprintf(msg->message, sizeof(msg->message), "fetch timed out");
    else
      snprintf(msg->message, sizeof(msg->message), "fetch failed: %s",
               gcache_git_error());
    goto out;
  }
  msg->bytes_fetched = git_remote_stats(remote)->received_bytes;
  rc = 0;
out:
  git_remote_free(remote);
  git_repository_free(repo);
  return rc;
}

static int gcache_lock(const char *path, long long deadline_ms)
{
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  struct timespec ts = {0, GCACHE_LOCK_POLL_MS * 1000000L};

  if (fd < 0)
    return -errno;
  while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      int rc = -errno;

      close(fd);
      return rc;
    }
    if (gcache_now_ms() >= deadline_ms) {
      close(fd);
      return -ETIMEDOUT;
    }
    nanosleep(&ts, NULL);
  }
  return fd;
}

/* Removes what earlier runs left: unfinished clones and moved-aside
 * mirrors. Runs under the mirror's lock, so none of them is in use. */
static void gcache_sweep(const char *dir, const char *name)
{
  char path[GCACHE_PATH_MAX];
  size_t len = strlen(name);
  struct dirent *de;
  DIR *d = opendir(dir);

  if (d == NULL)
    return;
  while ((de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, name, len) != 0 ||
        (strncmp(de->d_name + len, ".tmp.", 5) != 0 &&
         strncmp(de->d_name + len, ".broken.", 8) != 0))
      continue;
    if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) <
        (int)sizeof(path))
      (void)gcache_rmtree(path);
  }
  closedir(d);
}

/* Moves a broken mirror out of the way, then deletes it. */
static void gcache_discard(const char *mirror)
{
  char aside[GCACHE_PATH_MAX + 64];

  snprintf(aside, sizeof(aside), "%s.broken.%ld", mirror, (long)getpid());
  if (rename(mirror, aside) < 0) {
    (void)gcache_rmtree(mirror);
    return;
  }
  (void)gcache_rmtree(aside);
}

/* The fetching child: everything under the mirror's lock. */
static void gcache_work(const struct hook_config *cfg, const char *url,
                        long long deadline_ms, struct gcache_msg *msg)
{
  char name[GCACHE_NAME_MAX + 8], mirror[GCACHE_PATH_MAX];
  char lock[GCACHE_PATH_MAX], target[GCACHE_PATH_MAX + 64];
  struct gcache_fetch_ctx ctx = {deadline_ms, cfg->git_token, 0, 0};
  git_repository *repo = NULL;
  char real[PATH_MAX];
  struct stat st;
  int lockfd = -1, exists;

  msg->outcome = GCACHE_ERROR;
  if (gcache_mirror_name(url, name, sizeof(name)) < 0 ||
      snprintf(mirror, sizeof(mirror), "%s/%s", cfg->cache_dir, name) >=
          (int)sizeof(mirror) ||
      snprintf(lock, sizeof(lock), "%s.lock", mirror) >= (int)sizeof(lock)) {
    snprintf(msg->message, sizeof(msg->message), "no mirror name for URL");
    return;
  }
  if (fs_mkdir_p(cfg->cache_dir, 0755) < 0) {
    snprintf(msg->message, sizeof(msg->message), "cannot create %s: %s",
             cfg->cache_dir, strerror(errno));
    return;
  }
  lockfd = gcache_lock(lock, deadline_ms);
  if (lockfd < 0) {
    snprintf(msg->message, sizeof(msg->message), "cannot lock the mirror: %s",
             strerror(-lockfd));
    return;
  }
  gcache_sweep(cfg->cache_dir, name);
  exists = lstat(mirror, &st) == 0;
  if (exists && (!S_ISDIR(st.st_mode) || gcache_validate(mirror) < 0)) {
    snprintf(msg->message, sizeof(msg->message),
             "the mirror was damaged and is discarded; the next job "
             "rebuilds it");
    gcache_discard(mirror);
    goto out;
  }
  if (exists) {
    (void)gcache_check_packs(mirror, &msg->bytes_saved);
    snprintf(target, sizeof(target), "%s", mirror);
  } else {
    snprintf(target, sizeof(target), "%s.tmp.%ld", mirror, (long)getpid());
    if (git_repository_init(&repo, target, 1) < 0) {
      snprintf(msg->message, sizeof(msg->message), "cannot create mirror: %s",
               gcache_git_error());
      goto out;
    }
    git_repository_free(repo);
  }
  if (gcache_fetch(target, url, &ctx, msg) < 0) {
    /* A failed fetch leaves a mirror as it was; check that it is. */
    if (!exists)
      (void)gcache_rmtree(target);
    else if (gcache_validate(mirror) < 0)
      gcache_discard(mirror);
    goto out;
  }
  if (gcache_validate(target) < 0) {
    snprintf(msg->message, sizeof(msg->message),
             "the mirror is damaged after the fetch and is discarded");
    gcache_discard(target);
    goto out;
  }
  if (!exists && rename(target, mirror) < 0) {
    snprintf(msg->message, sizeof(msg->message), "cannot install mirror: %s",
             strerror(errno));
    (void)gcache_rmtree(target);
    goto out;
  }
  if (realpath(mirror, real) == NULL ||
      snprintf(msg->objects, sizeof(msg->objects), "%s/objects", real) >=
          (int)sizeof(msg->objects)) {
    snprintf(msg->message, sizeof(msg->message), "mirror path too long");
    goto out;
  }
  msg->outcome = exists ? GCACHE_HIT : GCACHE_MISS;
out:
  close(lockfd); /* releases the flock */
}

static void gcache_child(const struct hook_config *cfg, const char *url,
                         long long deadline_ms, int fd)
{
  struct gcache_msg msg;
  ssize_t n;

  memset(&msg, 0, sizeof(msg));
  if (git_libgit2_init() < 0) {
    msg.outcome = GCACHE_ERROR;
    snprintf(msg.message, sizeof(msg.message), "libgit2 will not start");
  } else {
    gcache_work(cfg, url, deadline_ms, &msg);
    git_libgit2_shutdown();
  }
  n = write(fd, &msg, sizeof(msg));
  _exit(n == (ssize_t)sizeof(msg) ? 0 : 1);
}

/* Reads the child's message until deadline; 0 or -ETIMEDOUT/-EIO. */
static int gcache_wait(int fd, long long deadline_ms, struct gcache_msg *msg)
{
  size_t got = 0;
  struct pollfd pfd = {fd, POLLIN, 0};

  while (got < sizeof(*msg)) {
    long long left = deadline_ms - gcache_now_ms();
    ssize_t n;
    int rc;

    if (left <= 0)
      return -ETIMEDOUT;
    rc = poll(&pfd, 1, (int)left);
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0)
      return rc == 0 ? -ETIMEDOUT : -errno;
    n = read(fd, (char *)msg + got, sizeof(*msg) - got);
    if (n <= 0)
      return -EIO;
    got += (size_t)n;
  }
  return 0;
}

void gcache_update(const struct hook_config *cfg, unsigned timeout_ms,
                   struct gcache_result *res)
{
  long long start = gcache_now_ms(), deadline = start + timeout_ms;
  char url[GCACHE_PATH_MAX];
  struct gcache_msg *msg = NULL;
  int fds[2] = {-1, -1}, status, rc;
  size_t len;
  pid_t child;

  memset(res, 0, sizeof(*res));
  res->outcome = GCACHE_DISABLED;
  if (!cfg->git_cache || cfg->server_url == NULL || cfg->repository == NULL)
    return;
  res->outcome = GCACHE_ERROR;
  len = strlen(cfg->server_url);
  while (len > 0 && cfg->server_url[len - 1] == '/')
    len--;
  if (snprintf(url, sizeof(url), "%.*s/%s", (int)len, cfg->server_url,
               cfg->repository) >= (int)sizeof(url)) {
    snprintf(res->message, sizeof(res->message), "repository URL too long");
    goto out;
  }
  msg = calloc(1, sizeof(*msg));
  if (msg == NULL || pipe2(fds, O_CLOEXEC) < 0) {
    snprintf(res->message, sizeof(res->message), "out of resources");
    goto out;
  }
  fflush(NULL);
  child = fork();
  if (child < 0) {
    snprintf(res->message, sizeof(res->message), "fork: %s", strerror(errno));
    goto out;
  }
  if (child == 0) {
    close(fds[0]);
    gcache_child(cfg, url, deadline - GCACHE_CHILD_MARGIN_MS, fds[1]);
  }
  close(fds[1]);
  fds[1] = -1;
  rc = gcache_wait(fds[0], deadline, msg);
  if (rc < 0) {
    /* A wedged server or filesystem: the child's lock dies with it, and
     * the next run sweeps what it left. */
    (void)kill(child, SIGKILL);
    snprintf(res->message, sizeof(res->message), "%s",
             rc == -ETIMEDOUT ? "timed out" : "the fetching process failed");
  }
  while (waitpid(child, &status, 0) < 0 && errno == EINTR)
    ;
  if (rc == 0) {
    res->outcome = (enum gcache_outcome)msg->outcome;
    res->bytes_fetched = msg->bytes_fetched;
    res->bytes_saved = res->outcome == GCACHE_HIT ? msg->bytes_saved : 0;
    memcpy(res->message, msg->message, sizeof(res->message));
    res->message[sizeof(res->message) - 1] = '\0';
    memcpy(res->objects, msg->objects, sizeof(res->objects));
    res->objects[sizeof(res->objects) - 1] = '\0';
  }
out:
  if (res->outcome != GCACHE_HIT && res->outcome != GCACHE_MISS)
    res->objects[0] = '\0';
  res->seconds = (double)(gcache_now_ms() - start) / 1000.0;
  if (fds[0] >= 0)
    close(fds[0]);
  if (fds[1] >= 0)
    close(fds[1]);
  free(msg);
}

int gcache_export(const char *github_env, const char *objects)
{
  char line[GCACHE_PATH_MAX + 64];
  int fd, n, rc = 0;

  if (strchr(objects, '\n') != NULL || strchr(objects, '\r') != NULL)
    return -EINVAL;
  n = snprintf(line, sizeof(line), "GIT_ALTERNATE_OBJECT_DIRECTORIES=%s\n",
               objects);
  if (n < 0 || (size_t)n >= sizeof(line))
    return -ENAMETOOLONG;
  fd = open(github_env, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  if (write(fd, line, (size_t)n) != n)
    rc = errno != 0 ? -errno : -EIO;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  return rc;
}
