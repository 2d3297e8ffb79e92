#include "journal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

#define JOURNAL_MOD "journal"
#define JOURNAL_META_MAX 64 /* meta keys kept */
#define JOURNAL_KEY_MAX 64
/* Compaction runs in the commit thread after this many job events, or
 * after this long with some written. */
#define JOURNAL_COMPACT_EVENTS 5000
#define JOURNAL_COMPACT_MS 60000
/* WAL pages past which the journal's thread checkpoints (SQLite's own
 * automatic checkpoint threshold), after the batch went back. */
#define JOURNAL_CHECKPOINT_PAGES 1000
/* Job events older than this belong to jobs GitHub ended long ago: a job
 * waits at most 24 h and runs at most 5 days. */
#define JOURNAL_EVENT_MAX_AGE_MS ((6ull * 24) * 3600 * 1000)
#define JOURNAL_BUSY_TIMEOUT_MS 5000

/* The schema, one step per version; step i moves user_version i to i+1.
 * A later version appends a step and never edits an earlier one. */
static const char *const migrations[JOURNAL_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE deliveries(id TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
    " WITHOUT ROWID;"
    "CREATE INDEX deliveries_seq ON deliveries(seq);"
    "CREATE TABLE job_events(seq INTEGER PRIMARY KEY, job_id INTEGER NOT NULL,"
    " type INTEGER NOT NULL, at_ms INTEGER NOT NULL, delivery TEXT NOT NULL,"
    " action TEXT, run_id INTEGER, repo TEXT, name TEXT, labels TEXT,"
    " runner TEXT, conclusion TEXT);"
    "CREATE INDEX job_events_job ON job_events(job_id);"
    "CREATE TABLE finished(job_id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);"
    "CREATE INDEX finished_seq ON finished(seq);"
    "CREATE TABLE runners(name TEXT PRIMARY KEY, pool TEXT NOT NULL,"
    " state TEXT NOT NULL, gh_id INTEGER, job_id INTEGER, node TEXT,"
    " gpus TEXT, created_ms INTEGER) WITHOUT ROWID;",
    /* 1 -> 2: dev server reservations */
    "CREATE TABLE devservers(id TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
    " user TEXT NOT NULL, flavor TEXT NOT NULL, state TEXT NOT NULL,"
    " gpus INTEGER NOT NULL, created_ms INTEGER, preparing_ms INTEGER,"
    " active_ms INTEGER, ended_ms INTEGER, duration_ms INTEGER,"
    " extended_ms INTEGER, expires_at_ms INTEGER, warned INTEGER,"
    " reason TEXT) WITHOUT ROWID;"
    "CREATE INDEX devservers_seq ON devservers(seq);",
};

enum item_kind {
  ITEM_EVENT,
  ITEM_RUNNER,
  ITEM_RUNNER_GONE,
  ITEM_META,
  ITEM_DEVSERVER,
  ITEM_DEVSERVER_GONE
};

/* One queued write. Events point at the caller's struct event; the rest
 * are copies. */
struct item {
  struct item *next;
  enum item_kind kind;
  const struct event *ev;
  uint64_t at_ms;
  journal_done_cb cb;
  void *arg;
  int status; /* set by the commit thread */
  struct journal_runner runner;
  struct journal_devserver dev;
  char key[JOURNAL_KEY_MAX];
  char value[JOURNAL_META_VALUE_MAX];
};

struct meta_entry {
  char key[JOURNAL_KEY_MAX];
  char value[JOURNAL_META_VALUE_MAX];
};

enum stmt_id {
  ST_DELIVERY,
  ST_EVENT,
  ST_FINISHED,
  ST_RUNNER,
  ST_RUNNER_GONE,
  ST_META,
  ST_DEVSERVER,
  ST_DEVSERVER_GONE,
  ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    "INSERT OR IGNORE INTO deliveries(id, seq) VALUES(?1, ?2)",
    ("INSERT INTO job_events(job_id, type, at_ms, delivery, action, run_id,"
     " repo, name, labels, runner, conclusion)"
     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
    "INSERT OR REPLACE INTO finished(job_id, seq) VALUES(?1, ?2)",
    ("INSERT OR REPLACE INTO runners(name, pool, state, gh_id, job_id, node,"
     " gpus, created_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
    "DELETE FROM runners WHERE name = ?1",
    "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)",
    ("INSERT OR REPLACE INTO devservers(id, seq, user, flavor, state, gpus,"
     " created_ms, preparing_ms, active_ms, ended_ms, duration_ms,"
     " extended_ms, expires_at_ms, warned, reason) VALUES(?1, ?2, ?3, ?4,"
     " ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
    "DELETE FROM devservers WHERE id = ?1",
};

struct journal {
  uv_loop_t *loop;
  struct metrics *metrics;
  char *path;
  enum journal_sync sync;
  uint64_t max_bytes;
  sqlite3 *db;
  sqlite3_stmt *stmt[ST_COUNT];
  int64_t delivery_seq; /* the next deliveries.seq */

  /* Loop side: what the next transaction takes. */
  struct item *pending, *pending_tail;
  int closing, closed;
  void (*close_cb)(void *arg);
  void *close_arg;

  /* Handed between the loop and the thread under lock. */
  uv_mutex_t lock;
  uv_cond_t cond;
  uv_thread_t thread;
  uv_async_t async;
  int thread_started, async_open;
  struct item *batch; /* given to the thread; NULL when idle */
  int batch_done;     /* the thread finished it */
  int quit;           /* the thread is to end */
  int batch_rc;

  /* Owned by the thread while running (read by stats on the loop side
   * only after a batch came back). */
  uint64_t since_compact, last_compact_ms;
  int wal_pages; /* in the WAL after the last commit (sqlite3_wal_hook) */
  struct journal_stats tstats;
  /* Handed over under lock with each batch, and the loop side's copy. */
  struct journal_stats stats, lstats;
  uint64_t checkpoints_seen; /* counted in the metric */
  int locks_init;

  struct meta_entry meta[JOURNAL_META_MAX];
  size_t nmeta;
};

static uint64_t wall_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int sqlite_errno(int rc)
{
  switch (rc & 0xff) {
  case SQLITE_FULL:
    return -ENOSPC;
  case SQLITE_NOMEM:
    return -ENOMEM;
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    return -EBADMSG;
  default:
    return -EIO;
  }
}

static int exec_sql(sqlite3 *db, const char *sql)
{
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

  if (rc != SQLITE_OK) {
    log_warn(JOURNAL_MOD, "statement failed",
             LOG_S("error", err != NULL ? err : sqlite3_errstr(rc)),
             LOG_I("code", rc));
    sqlite3_free(err);
  }
  return rc;
}

/* ---- opening ---- */

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
  struct journal *j = arg;

  (void)db;
  (void)name;
  j->wal_pages = pages;
  return SQLITE_OK;
}

/* PRAGMA quick_check: "ok", or the first problem. */
static int quick_check(sqlite3 *db, char *why, size_t why_size)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const char *res = (const char *)sqlite3_column_text(st, 0);
      snprintf(why, why_size, "%s", res != NULL ? res : "");
      rc = res != NULL && strcmp(res, "ok") == 0 ? SQLITE_OK : SQLITE_CORRUPT;
    }
  }
  if (rc != SQLITE_OK && why[0] == '\0')
    snprintf(why, why_size, "%s", sqlite3_errstr(rc));
  sqlite3_finalize(st);
  return rc;
}

static int migrate(struct journal *j)
{
  int64_t version = 0;
  int rc = pragma_int(j->db, "PRAGMA user_version", &version);
  char sql[64];

  if (rc != SQLITE_OK)
    return rc;
  if (version > JOURNAL_SCHEMA_VERSION) {
    log_error(JOURNAL_MOD, "journal written by a newer runfleetd",
              LOG_S("file", j->path), LOG_I("schema", version),
              LOG_I("supported", JOURNAL_SCHEMA_VERSION));
    return SQLITE_MISMATCH;
  }
  while (version < JOURNAL_SCHEMA_VERSION) {
    rc = exec_sql(j->db, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
      rc = exec_sql(j->db, migrations[version]);
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld",
             (long long)version + 1);
    if (rc == SQLITE_OK)
      rc = exec_sql(j->db, sql);
    if (rc == SQLITE_OK)
      rc = exec_sql(j->db, "COMMIT");
    if (rc != SQLITE_OK) {
      sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
      return rc;
    }
    log_info(JOURNAL_MOD, "journal schema migrated", LOG_I("from", version),
             LOG_I("to", version + 1));
    version++;
  }
  return SQLITE_OK;
}

static int load_meta(struct journal *j)
{
  sqlite3_stmt *st = NULL;
  int rc =
      sqlite3_prepare_v2(j->db, "SELECT key, value FROM meta", -1, &st, NULL);

  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *k = (const char *)sqlite3_column_text(st, 0);
    const char *v = (const char *)sqlite3_column_text(st, 1);
    rc = SQLITE_OK;
    if (k == NULL || v == NULL || j->nmeta == JOURNAL_META_MAX)
      continue;
    snprintf(j->meta[j->nmeta].key, JOURNAL_KEY_MAX, "%s", k);
    snprintf(j->meta[j->nmeta].value, JOURNAL_META_VALUE_MAX, "%s", v);
    j->nmeta++;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Opens the database and brings it to the current schema; any SQLite
 * error code on failure, with why filled. */
static int open_db(struct journal *j, char *why, size_t why_size)
{
  char sql[96];
  int64_t page_size = 4096, seq = 0;
  int rc;

  why[0] = '\0';
  rc = sqlite3_open_v2(
      j->path, &j->db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  sqlite3_busy_timeout(j->db, JOURNAL_BUSY_TIMEOUT_MS);
  /* Replaces SQLite's automatic checkpoint, which runs inside COMMIT and
   * so delays the answers of the batch that crossed the threshold: the
   * thread checkpoints after it handed the batch back (maintain). */
  sqlite3_wal_hook(j->db, wal_hook, j);
  rc = exec_sql(j->db, "PRAGMA journal_mode = WAL");
  if (rc == SQLITE_OK)
    rc = exec_sql(j->db, j->sync == JOURNAL_SYNC_FULL
                             ? "PRAGMA synchronous = FULL"
                             : "PRAGMA synchronous = NORMAL");
  if (rc == SQLITE_OK)
    rc = quick_check(j->db, why, why_size);
  if (rc == SQLITE_OK)
    rc = migrate(j);
  if (rc == SQLITE_OK && j->max_bytes > 0 &&
      pragma_int(j->db, "PRAGMA page_size", &page_size) == SQLITE_OK &&
      page_size > 0) {
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %llu",
             (unsigned long long)(j->max_bytes / (uint64_t)page_size));
    rc = exec_sql(j->db, sql);
  }
  if (rc == SQLITE_OK)
    rc = load_meta(j);
  if (rc == SQLITE_OK)
    rc =
        pragma_int(j->db, "SELECT coalesce(max(seq), 0) FROM deliveries", &seq);
  j->delivery_seq = seq + 1;
  if (rc != SQLITE_OK)
    goto fail;
  return SQLITE_OK;
fail:
  if (why[0] == '\0')
    snprintf(why, why_size, "%s",
             j->db != NULL ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc));
  sqlite3_close(j->db);
  j->db = NULL;
  j->nmeta = 0;
  return rc;
}

/* Moves a damaged journal (and its WAL and shared-memory files) aside. */
static int move_aside(const struct journal *j, char *dest, size_t size)
{
  static const char *const suffix[] = {"", "-wal", "-shm"};
  char from[4200], to[4200];
  size_t i;

  snprintf(dest, size, "%s.damaged-%lld", j->path, (long long)time(NULL));
  for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
    snprintf(from, sizeof(from), "%s%s", j->path, suffix[i]);
    snprintf(to, sizeof(to), "%s%s", dest, suffix[i]);
    if (rename(from, to) < 0 && errno != ENOENT)
      return -errno;
  }
  return 0;
}

static int prepare_all(struct journal *j)
{
  int i, rc;

  for (i = 0; i < ST_COUNT; i++) {
    rc = sqlite3_prepare_v3(j->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                            &j->stmt[i], NULL);
    if (rc != SQLITE_OK) {
      log_error(JOURNAL_MOD, "cannot prepare a statement",
                LOG_S("error", sqlite3_errmsg(j->db)));
      return rc;
    }
  }
  return SQLITE_OK;
}

static void declare_metrics(struct metrics *m)
{
  static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                   0.025,  0.05,  0.1,    0.25,  1};

  metrics_declare(m, "runfleet_journal_commits_total", METRICS_COUNTER,
                  "Journal transactions, by result.", NULL, 0);
  metrics_declare(m, "runfleet_journal_events_total", METRICS_COUNTER,
                  "Job events written to the journal.", NULL, 0);
  metrics_declare(m, "runfleet_journal_commit_seconds", METRICS_HISTOGRAM,
                  "Time one journal transaction took.", buckets,
                  sizeof(buckets) / sizeof(buckets[0]));
  metrics_declare(m, "runfleet_journal_batch_events", METRICS_GAUGE,
                  "Job events in the last journal transaction.", NULL, 0);
  metrics_declare(m, "runfleet_journal_bytes", METRICS_GAUGE,
                  "Size of the journal file and its write-ahead log.", NULL, 0);
  metrics_declare(m, "runfleet_journal_damaged_total", METRICS_COUNTER,
                  "Journal files found damaged and moved aside.", NULL, 0);
  metrics_declare(m, "runfleet_journal_checkpoints_total", METRICS_COUNTER,
                  "Write-ahead log checkpoints of the journal.", NULL, 0);
}

int journal_open(struct journal **out, uv_loop_t *loop,
                 const struct journal_options *opts, struct metrics *m,
                 int *damaged)
{
  struct journal *j = calloc(1, sizeof(*j));
  char why[256], aside[4200];
  int rc;

  *out = NULL;
  *damaged = 0;
  if (j == NULL)
    return -ENOMEM;
  j->loop = loop;
  j->metrics = m;
  j->sync = opts->sync;
  j->max_bytes = opts->max_bytes;
  j->path = strdup(opts->path);
  if (j->path == NULL) {
    free(j);
    return -ENOMEM;
  }
  if (m != NULL)
    declare_metrics(m);
  rc = open_db(j, why, sizeof(why));
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) {
    int mv = move_aside(j, aside, sizeof(aside));
    log_error(JOURNAL_MOD,
              "journal is damaged: kept aside, starting an empty one; "
              "recovery from GitHub follows",
              LOG_S("file", j->path), LOG_S("problem", why),
              LOG_S("kept_as", mv == 0 ? aside : ""),
              LOG_S("error", mv == 0 ? "" : strerror(-mv)));
    if (m != NULL)
      metrics_counter_add(m, "runfleet_journal_damaged_total", "", 1);
    *damaged = 1;
    rc = mv == 0 ? open_db(j, why, sizeof(why)) : SQLITE_CANTOPEN;
  }
  if (rc == SQLITE_OK)
    rc = prepare_all(j);
  if (rc != SQLITE_OK) {
    log_error(JOURNAL_MOD, "cannot open the journal", LOG_S("file", j->path),
              LOG_S("error", why));
    journal_destroy(j);
    return rc == SQLITE_MISMATCH ? -EINVAL : -EIO;
  }
  if (uv_mutex_init(&j->lock) != 0)
    goto nomem;
  if (uv_cond_init(&j->cond) != 0) {
    uv_mutex_destroy(&j->lock);
    goto nomem;
  }
  j->locks_init = 1;
  log_info(JOURNAL_MOD, "journal open", LOG_S("file", j->path),
           LOG_S("sync", j->sync == JOURNAL_SYNC_FULL ? "full" : "normal"),
           LOG_I("schema", JOURNAL_SCHEMA_VERSION));
  *out = j;
  return 0;
nomem:
  journal_destroy(j);
  return -ENOMEM;
}

/* ---- replay ---- */

static char *col_dup(sqlite3_stmt *st, int col)
{
  const char *s = (const char *)sqlite3_column_text(st, col);

  return s != NULL ? strdup(s) : NULL;
}

/* Labels are kept as "<length>:<label>" one after another, then "!" when
 * the event had more than it kept: unambiguous whatever a label holds,
 * and cheap to read back. */
static void labels_decode(const char *text, struct event *ev)
{
  const char *p = text;
  char *end;

  while (p != NULL && *p >= '0' && *p <= '9') {
    unsigned long len = strtoul(p, &end, 10);
    if (*end != ':' || strnlen(end + 1, len) < len)
      return; /* not written by labels_encode */
    if (ev->nlabels == EVENT_MAX_LABELS) {
      ev->too_many_labels = 1;
      return;
    }
    ev->labels[ev->nlabels] = strndup(end + 1, len);
    if (ev->labels[ev->nlabels] == NULL)
      return;
    ev->nlabels++;
    p = end + 1 + len;
  }
  if (p != NULL && *p == '!')
    ev->too_many_labels = 1;
}

/* The other way; a malloc'd string, or NULL when out of memory. */
static char *labels_encode(const struct event *ev)
{
  size_t i, size = 2, len = 0;
  char *out;

  for (i = 0; i < ev->nlabels; i++)
    size += strlen(ev->labels[i]) + 24;
  out = malloc(size);
  if (out == NULL)
    return NULL;
  out[0] = '\0';
  for (i = 0; i < ev->nlabels; i++)
    len += (size_t)snprintf(out + len, size - len, "%zu:%s",
                            strlen(ev->labels[i]), ev->labels[i]);
  if (ev->too_many_labels)
    snprintf(out + len, size - len, "!");
  return out;
}

static int replay_jobs(struct journal *j, const struct journal_replay_ops *ops,
                       void *ctx, size_t *count)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(
      j->db,
      "SELECT type, job_id, at_ms, delivery, action, run_id, repo, name,"
      " labels, runner, conclusion FROM job_events ORDER BY seq",
      -1, &st, NULL);

  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct event ev;
    const char *delivery = (const char *)sqlite3_column_text(st, 3);

    rc = SQLITE_OK;
    memset(&ev, 0, sizeof(ev));
    ev.type = (enum event_type)sqlite3_column_int(st, 0);
    ev.job_id = sqlite3_column_int64(st, 1);
    snprintf(ev.delivery, sizeof(ev.delivery), "%s",
             delivery != NULL ? delivery : "");
    ev.source = "workflow_job";
    ev.action = col_dup(st, 4);
    ev.run_id = sqlite3_column_int64(st, 5);
    ev.repo = col_dup(st, 6);
    ev.job_name = col_dup(st, 7);
    labels_decode((const char *)sqlite3_column_text(st, 8), &ev);
    ev.runner_name = col_dup(st, 9);
    ev.conclusion = col_dup(st, 10);
    if (event_is_job(ev.type) && ops->job_event != NULL)
      ops->job_event(ctx, &ev, (uint64_t)sqlite3_column_int64(st, 2));
    event_free(&ev);
    (*count)++;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void gpus_decode(const char *text, struct journal_runner *r)
{
  const char *p = text;
  char *end;

  while (p != NULL && *p != '\0' && r->ngpus < 16) {
    long v = strtol(p, &end, 10);
    if (end == p)
      break;
    r->gpus[r->ngpus++] = (int)v;
    p = *end == ',' ? end + 1 : end;
  }
}

static int replay_runners(struct journal *j,
                          const struct journal_replay_ops *ops, void *ctx,
                          size_t *count)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(j->db,
                              "SELECT name, pool, state, gh_id, job_id, node,"
                              " gpus, created_ms FROM runners ORDER BY name",
                              -1, &st, NULL);

  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct journal_runner r;
    const char *s;

    rc = SQLITE_OK;
    memset(&r, 0, sizeof(r));
    s = (const char *)sqlite3_column_text(st, 0);
    snprintf(r.name, sizeof(r.name), "%s", s != NULL ? s : "");
    s = (const char *)sqlite3_column_text(st, 1);
    snprintf(r.pool, sizeof(r.pool), "%s", s != NULL ? s : "");
    s = (const char *)sqlite3_column_text(st, 2);
    snprintf(r.state, sizeof(r.state), "%s", s != NULL ? s : "");
    r.gh_id = sqlite3_column_int64(st, 3);
    r.job_id = sqlite3_column_int64(st, 4);
    s = (const char *)sqlite3_column_text(st, 5);
    snprintf(r.node, sizeof(r.node), "%s", s != NULL ? s : "");
    gpus_decode((const char *)sqlite3_column_text(st, 6), &r);
    r.created_ms = (uint64_t)sqlite3_column_int64(st, 7);
    if (r.name[0] != '\0' && ops->runner != NULL)
      ops->runner(ctx, &r);
    (*count)++;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void col_copy(sqlite3_stmt *st, int col, char *out, size_t size)
{
  const char *s = (const char *)sqlite3_column_text(st, col);

  snprintf(out, size, "%s", s != NULL ? s : "");
}

static int replay_devservers(struct journal *j,
                             const struct journal_replay_ops *ops, void *ctx,
                             size_t *count)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(
      j->db,
      "SELECT id, seq, user, flavor, state, gpus, created_ms, preparing_ms,"
      " active_ms, ended_ms, duration_ms, extended_ms, expires_at_ms, warned,"
      " reason FROM devservers ORDER BY seq",
      -1, &st, NULL);

  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct journal_devserver d;

    rc = SQLITE_OK;
    memset(&d, 0, sizeof(d));
    col_copy(st, 0, d.id, sizeof(d.id));
    d.seq = (uint64_t)sqlite3_column_int64(st, 1);
    col_copy(st, 2, d.user, sizeof(d.user));
    col_copy(st, 3, d.flavor, sizeof(d.flavor));
    col_copy(st, 4, d.state, sizeof(d.state));
    d.gpus = (unsigned)sqlite3_column_int64(st, 5);
    d.created_ms = (uint64_t)sqlite3_column_int64(st, 6);
    d.preparing_ms = (uint64_t)sqlite3_column_int64(st, 7);
    d.active_ms = (uint64_t)sqlite3_column_int64(st, 8);
    d.ended_ms = (uint64_t)sqlite3_column_int64(st, 9);
    d.duration_ms = (uint64_t)sqlite3_column_int64(st, 10);
    d.extended_ms = (uint64_t)sqlite3_column_int64(st, 11);
    d.expires_at_ms = (uint64_t)sqlite3_column_int64(st, 12);
    d.warned = (unsigned)sqlite3_column_int64(st, 13);
    col_copy(st, 14, d.reason, sizeof(d.reason));
    if (d.id[0] != '\0' && ops->devserver != NULL)
      ops->devserver(ctx, &d);
    (*count)++;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int journal_replay(struct journal *j, const struct journal_replay_ops *ops,
                   void *ctx)
{
  size_t events = 0, runners = 0, devservers = 0;
  uint64_t t0 = uv_hrtime();
  int rc = replay_runners(j, ops, ctx, &runners);

  if (rc == SQLITE_OK)
    rc = replay_devservers(j, ops, ctx, &devservers);
  if (rc == SQLITE_OK)
    rc = replay_jobs(j, ops, ctx, &events);
  if (rc != SQLITE_OK) {
    log_error(JOURNAL_MOD, "journal replay failed",
              LOG_S("error", sqlite3_errmsg(j->db)), LOG_U("events", events));
    return sqlite_errno(rc);
  }
  log_info(JOURNAL_MOD, "journal replayed", LOG_U("events", events),
           LOG_U("runners", runners), LOG_U("devservers", devservers),
           LOG_F("seconds", (double)(uv_hrtime() - t0) / 1e9));
  return 0;
}

/* ---- writing (commit thread) ---- */

static int write_event(struct journal *j, struct item *it)
{
  const struct event *ev = it->ev;
  sqlite3_stmt *st = j->stmt[ST_DELIVERY];
  char *labels;
  int rc;

  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, ev->delivery, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, j->delivery_seq);
  rc = sqlite3_step(st);
  if (rc != SQLITE_DONE)
    return rc;
  if (sqlite3_changes(j->db) == 0) {
    it->status = 1; /* journaled before */
    j->tstats.duplicates++;
    return SQLITE_OK;
  }
  j->delivery_seq++;
  if (!event_is_job(ev->type))
    return SQLITE_OK; /* pings and the like: only the delivery id */
  labels = labels_encode(ev);
  if (labels == NULL)
    return SQLITE_NOMEM;
  st = j->stmt[ST_EVENT];
  sqlite3_reset(st);
  sqlite3_bind_int64(st, 1, ev->job_id);
  sqlite3_bind_int(st, 2, (int)ev->type);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)it->at_ms);
  sqlite3_bind_text(st, 4, ev->delivery, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, ev->action, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, ev->run_id);
  sqlite3_bind_text(st, 7, ev->repo, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 8, ev->job_name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 9, labels, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 10, ev->runner_name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 11, ev->conclusion, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_reset(st); /* drops the reference to labels */
  free(labels);
  if (rc != SQLITE_DONE)
    return rc;
  if (ev->type == EVENT_JOB_COMPLETED) {
    st = j->stmt[ST_FINISHED];
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, ev->job_id);
    sqlite3_bind_int64(st, 2, sqlite3_last_insert_rowid(j->db));
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
      return rc;
  }
  j->tstats.events++;
  return SQLITE_OK;
}

static int write_runner(struct journal *j, const struct journal_runner *r)
{
  sqlite3_stmt *st = j->stmt[ST_RUNNER];
  char gpus[16 * 12] = "";
  size_t i, len = 0;
  int rc;

  for (i = 0; i < r->ngpus && len < sizeof(gpus); i++)
    len += (size_t)snprintf(gpus + len, sizeof(gpus) - len, "%s%d",
                            i > 0 ? "," : "", r->gpus[i]);
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, r->pool, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, r->state, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, r->gh_id);
  sqlite3_bind_int64(st, 5, r->job_id);
  sqlite3_bind_text(st, 6, r->node, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 7, gpus, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 8, (sqlite3_int64)r->created_ms);
  rc = sqlite3_step(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int write_devserver(struct journal *j, const struct journal_devserver *d)
{
  sqlite3_stmt *st = j->stmt[ST_DEVSERVER];
  int rc;

  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)d->seq);
  sqlite3_bind_text(st, 3, d->user, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, d->flavor, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, d->state, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, d->gpus);
  sqlite3_bind_int64(st, 7, (sqlite3_int64)d->created_ms);
  sqlite3_bind_int64(st, 8, (sqlite3_int64)d->preparing_ms);
  sqlite3_bind_int64(st, 9, (sqlite3_int64)d->active_ms);
  sqlite3_bind_int64(st, 10, (sqlite3_int64)d->ended_ms);
  sqlite3_bind_int64(st, 11, (sqlite3_int64)d->duration_ms);
  sqlite3_bind_int64(st, 12, (sqlite3_int64)d->extended_ms);
  sqlite3_bind_int64(st, 13, (sqlite3_int64)d->expires_at_ms);
  sqlite3_bind_int64(st, 14, d->warned);
  sqlite3_bind_text(st, 15, d->reason, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int write_simple(struct journal *j, enum stmt_id id, const char *a,
                        const char *b)
{
  sqlite3_stmt *st = j->stmt[id];
  int rc;

  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
  if (b != NULL)
    sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Drops the events of finished jobs past the newest JOURNAL_FINISHED_KEEP,
 * events too old to matter, and delivery ids past the newest
 * JOURNAL_DELIVERIES_KEEP. Its own transaction. */
static int compact(struct journal *j, uint64_t now)
{
  char sql[512];
  int rc = exec_sql(j->db, "BEGIN IMMEDIATE");

  if (rc != SQLITE_OK)
    return rc;
  snprintf(sql, sizeof(sql),
           "DELETE FROM job_events WHERE job_id IN (SELECT job_id FROM "
           "finished ORDER BY seq DESC LIMIT -1 OFFSET %d);"
           "DELETE FROM finished WHERE job_id IN (SELECT job_id FROM "
           "finished ORDER BY seq DESC LIMIT -1 OFFSET %d);"
           "DELETE FROM job_events WHERE at_ms < %llu;"
           "DELETE FROM deliveries WHERE seq < %lld;",
           JOURNAL_FINISHED_KEEP, JOURNAL_FINISHED_KEEP,
           (unsigned long long)(now > JOURNAL_EVENT_MAX_AGE_MS
                                    ? now - JOURNAL_EVENT_MAX_AGE_MS
                                    : 0),
           (long long)(j->delivery_seq - JOURNAL_DELIVERIES_KEEP));
  rc = exec_sql(j->db, sql);
  if (rc == SQLITE_OK)
    rc = exec_sql(j->db, "COMMIT");
  if (rc != SQLITE_OK)
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

static int64_t file_bytes(const char *path)
{
  char wal[4200];
  struct stat st;
  int64_t total = 0;

  if (stat(path, &st) == 0)
    total += st.st_size;
  snprintf(wal, sizeof(wal), "%s-wal", path);
  if (stat(wal, &st) == 0)
    total += st.st_size;
  return total;
}

/* One transaction for the whole batch; each event's status is set. */
static int write_batch(struct journal *j, struct item *batch)
{
  uint64_t t0 = uv_hrtime(), nevents = 0;
  struct item *it;
  int rc = exec_sql(j->db, "BEGIN IMMEDIATE");

  for (it = batch; rc == SQLITE_OK && it != NULL; it = it->next) {
    it->status = 0;
    switch (it->kind) {
    case ITEM_EVENT:
      rc = write_event(j, it);
      nevents++;
      break;
    case ITEM_RUNNER:
      rc = write_runner(j, &it->runner);
      break;
    case ITEM_RUNNER_GONE:
      rc = write_simple(j, ST_RUNNER_GONE, it->runner.name, NULL);
      break;
    case ITEM_META:
      rc = write_simple(j, ST_META, it->key, it->value);
      break;
    case ITEM_DEVSERVER:
      rc = write_devserver(j, &it->dev);
      break;
    case ITEM_DEVSERVER_GONE:
      rc = write_simple(j, ST_DEVSERVER_GONE, it->dev.id, NULL);
      break;
    }
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    log_warn(JOURNAL_MOD, "journal transaction failed",
             LOG_S("error", sqlite3_errmsg(j->db)), LOG_I("code", rc),
             LOG_U("events", nevents));
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    j->tstats.failures++;
    /* A delivery id taken in the failed transaction was not kept. */
    return rc;
  }
  j->tstats.commits++;
  j->tstats.commit_last_s = (double)(uv_hrtime() - t0) / 1e9;
  if (nevents > j->tstats.batch_max)
    j->tstats.batch_max = nevents;
  j->since_compact += nevents;
  return SQLITE_OK;
}

/* After a batch went back: compaction when due, a checkpoint when the WAL
 * has grown past JOURNAL_CHECKPOINT_PAGES, and the file size. */
static void maintain(struct journal *j)
{
  uint64_t now = wall_ms();
  int log_pages = 0, done_pages = 0;

  if (j->since_compact > 0 &&
      (j->since_compact >= JOURNAL_COMPACT_EVENTS ||
       now - j->last_compact_ms >= JOURNAL_COMPACT_MS)) {
    if (compact(j, now) == SQLITE_OK)
      j->since_compact = 0;
    j->last_compact_ms = now;
  }
  if (j->wal_pages >= JOURNAL_CHECKPOINT_PAGES &&
      sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                &log_pages, &done_pages) == SQLITE_OK) {
    j->wal_pages = 0;
    j->tstats.checkpoints++;
  }
  j->tstats.file_bytes = file_bytes(j->path);
}

static void thread_main(void *arg)
{
  struct journal *j = arg;
  struct item *batch;
  int rc;

  uv_mutex_lock(&j->lock);
  for (;;) {
    /* A batch it finished stays in j->batch until the loop takes it. */
    while ((j->batch == NULL || j->batch_done) && !j->quit)
      uv_cond_wait(&j->cond, &j->lock);
    if (j->batch == NULL || j->batch_done)
      break; /* quit, with nothing left to write */
    batch = j->batch;
    uv_mutex_unlock(&j->lock);
    rc = write_batch(j, batch);
    /* The batch goes back as soon as it is on disk; compaction and the
     * checkpoint come after, so no answer waits for them. */
    uv_mutex_lock(&j->lock);
    j->stats = j->tstats;
    j->batch_rc = rc;
    j->batch_done = 1;
    uv_mutex_unlock(&j->lock);
    uv_async_send(&j->async);
    if (rc == SQLITE_OK)
      maintain(j);
    uv_mutex_lock(&j->lock);
  }
  uv_mutex_unlock(&j->lock);
}

/* ---- loop side ---- */

static void hand_over(struct journal *j);

static void finish_close(struct journal *j);

static void item_free(struct item *it)
{
  free(it);
}

/* Callbacks of a finished batch, in order; runner and meta writes of a
 * failed one go back to the front of the queue for the next try. */
static void batch_returned(struct journal *j, struct item *batch, int rc)
{
  struct item *it, *next, *keep = NULL, *keep_tail = NULL;
  int err = rc == SQLITE_OK ? 0 : sqlite_errno(rc);
  char labels[48];
  size_t nevents = 0;

  if (j->metrics != NULL) {
    snprintf(labels, sizeof(labels), "result=\"%s\"",
             err == 0 ? "ok" : "error");
    metrics_counter_add(j->metrics, "runfleet_journal_commits_total", labels,
                        1);
  }
  for (it = batch; it != NULL; it = next) {
    next = it->next;
    if (it->kind == ITEM_EVENT || it->cb != NULL) {
      nevents += it->kind == ITEM_EVENT;
      it->cb(it->arg, err == 0 ? it->status : (err == -EBADMSG ? -EIO : err));
      item_free(it);
      continue;
    }
    if (err == 0 || j->closed) {
      item_free(it);
      continue;
    }
    it->next = NULL;
    if (keep_tail != NULL)
      keep_tail->next = it;
    else
      keep = it;
    keep_tail = it;
  }
  if (keep != NULL) {
    keep_tail->next = j->pending;
    if (j->pending == NULL)
      j->pending_tail = keep_tail;
    j->pending = keep;
  }
  if (j->metrics != NULL && err == 0) {
    metrics_counter_add(j->metrics, "runfleet_journal_events_total", "",
                        (double)nevents);
    metrics_gauge_set(j->metrics, "runfleet_journal_batch_events", "",
                      (double)nevents);
    metrics_histogram_observe(j->metrics, "runfleet_journal_commit_seconds", "",
                              j->lstats.commit_last_s);
    metrics_gauge_set(j->metrics, "runfleet_journal_bytes", "",
                      (double)j->lstats.file_bytes);
    if (j->lstats.checkpoints > j->checkpoints_seen)
      metrics_counter_add(
          j->metrics, "runfleet_journal_checkpoints_total", "",
          (double)(j->lstats.checkpoints - j->checkpoints_seen));
    j->checkpoints_seen = j->lstats.checkpoints;
  }
}

static void async_cb(uv_async_t *a)
{
  struct journal *j = a->data;
  struct item *batch = NULL;
  int rc = SQLITE_OK;

  uv_mutex_lock(&j->lock);
  if (j->batch_done) {
    batch = j->batch;
    rc = j->batch_rc;
    j->lstats = j->stats;
    j->batch = NULL;
    j->batch_done = 0;
  }
  uv_mutex_unlock(&j->lock);
  if (batch == NULL)
    return;
  batch_returned(j, batch, rc);
  if (rc != SQLITE_OK && j->closing) {
    /* Runner writes that keep failing are not worth waiting for. */
    while (j->pending != NULL && j->pending->cb == NULL) {
      struct item *it = j->pending;
      j->pending = it->next;
      item_free(it);
    }
    if (j->pending == NULL)
      j->pending_tail = NULL;
  }
  hand_over(j);
  if (j->closing && j->pending == NULL && j->batch == NULL)
    finish_close(j);
}

/* Gives everything queued to the thread when it is idle. */
static void hand_over(struct journal *j)
{
  if (!j->thread_started || j->pending == NULL)
    return;
  uv_mutex_lock(&j->lock);
  if (j->batch == NULL) {
    j->batch = j->pending;
    j->pending = j->pending_tail = NULL;
    uv_cond_signal(&j->cond);
  }
  uv_mutex_unlock(&j->lock);
}

int journal_start(struct journal *j)
{
  int rc = uv_async_init(j->loop, &j->async, async_cb);

  if (rc != 0)
    return rc;
  j->async.data = j;
  j->async_open = 1;
  j->last_compact_ms = wall_ms();
  rc = uv_thread_create(&j->thread, thread_main, j);
  if (rc != 0)
    return rc;
  j->thread_started = 1;
  hand_over(j);
  return 0;
}

static int enqueue(struct journal *j, struct item *it)
{
  if (j->closing || j->closed) {
    item_free(it);
    return -1;
  }
  if (j->pending_tail != NULL)
    j->pending_tail->next = it;
  else
    j->pending = it;
  j->pending_tail = it;
  hand_over(j);
  return 0;
}

int journal_append_event(struct journal *j, const struct event *ev,
                         uint64_t at_ms, journal_done_cb cb, void *arg)
{
  struct item *it = calloc(1, sizeof(*it));

  if (it == NULL)
    return -1;
  it->kind = ITEM_EVENT;
  it->ev = ev;
  it->at_ms = at_ms;
  it->cb = cb;
  it->arg = arg;
  return enqueue(j, it);
}

int journal_put_runner_cb(struct journal *j, const struct journal_runner *r,
                          journal_done_cb cb, void *arg)
{
  struct item *it = calloc(1, sizeof(*it));

  if (it == NULL)
    return -1;
  it->kind = ITEM_RUNNER;
  it->runner = *r;
  it->cb = cb;
  it->arg = arg;
  return enqueue(j, it);
}

int journal_put_runner(struct journal *j, const struct journal_runner *r)
{
  return journal_put_runner_cb(j, r, NULL, NULL);
}

int journal_runner_gone(struct journal *j, const char *name)
{
  struct item *it = calloc(1, sizeof(*it));

  if (it == NULL)
    return -1;
  it->kind = ITEM_RUNNER_GONE;
  snprintf(it->runner.name, sizeof(it->runner.name), "%s", name);
  return enqueue(j, it);
}

int journal_put_devserver(struct journal *j, const struct journal_devserver *d,
                          journal_done_cb cb, void *arg)
{
  struct item *it = calloc(1, sizeof(*it));

  if (it == NULL)
    return -1;
  it->kind = ITEM_DEVSERVER;
  it->dev = *d;
  it->cb = cb;
  it->arg = arg;
  return enqueue(j, it);
}

int journal_devserver_gone(struct journal *j, const char *id)
{
  struct item *it = calloc(1, sizeof(*it));

  if (it == NULL)
    return -1;
  it->kind = ITEM_DEVSERVER_GONE;
  snprintf(it->dev.id, sizeof(it->dev.id), "%s", id);
  return enqueue(j, it);
}

static struct meta_entry *meta_find(const struct journal *j, const char *key)
{
  size_t i;

  for (i = 0; i < j->nmeta; i++)
    if (strcmp(j->meta[i].key, key) == 0)
      return (struct meta_entry *)&j->meta[i];
  return NULL;
}

int journal_meta_get(const struct journal *j, const char *key, char *buf,
                     size_t size)
{
  const struct meta_entry *e = meta_find(j, key);

  if (e == NULL)
    return -ENOENT;
  snprintf(buf, size, "%s", e->value);
  return 0;
}

int journal_meta_put(struct journal *j, const char *key, const char *value)
{
  struct meta_entry *e = meta_find(j, key);
  struct item *it;

  if (strlen(key) >= JOURNAL_KEY_MAX || strlen(value) >= JOURNAL_META_VALUE_MAX)
    return -EINVAL;
  if (e == NULL) {
    if (j->nmeta == JOURNAL_META_MAX)
      return -ENOSPC;
    e = &j->meta[j->nmeta++];
    snprintf(e->key, sizeof(e->key), "%s", key);
  }
  snprintf(e->value, sizeof(e->value), "%s", value);
  it = calloc(1, sizeof(*it));
  if (it == NULL)
    return -ENOMEM;
  it->kind = ITEM_META;
  snprintf(it->key, sizeof(it->key), "%s", key);
  snprintf(it->value, sizeof(it->value), "%s", value);
  return enqueue(j, it) == 0 ? 0 : -ECANCELED;
}

void journal_get_stats(const struct journal *j, struct journal_stats *st)
{
  *st = j->lstats;
}

static void async_closed_cb(uv_handle_t *h)
{
  struct journal *j = h->data;
  void (*cb)(void *) = j->close_cb;

  j->async_open = 0;
  j->close_cb = NULL;
  if (cb != NULL)
    cb(j->close_arg);
}

static void stop_thread(struct journal *j)
{
  if (!j->thread_started)
    return;
  uv_mutex_lock(&j->lock);
  j->quit = 1;
  uv_cond_signal(&j->cond);
  uv_mutex_unlock(&j->lock);
  uv_thread_join(&j->thread);
  j->thread_started = 0;
}

static void finish_close(struct journal *j)
{
  struct item *it;

  if (j->closed)
    return;
  j->closed = 1;
  stop_thread(j);
  while ((it = j->pending) != NULL) {
    j->pending = it->next;
    if (it->cb != NULL)
      it->cb(it->arg, -ECANCELED);
    item_free(it);
  }
  j->pending_tail = NULL;
  if (j->async_open) {
    uv_close((uv_handle_t *)&j->async, async_closed_cb);
    return;
  }
  if (j->close_cb != NULL) {
    void (*cb)(void *) = j->close_cb;
    j->close_cb = NULL;
    cb(j->close_arg);
  }
}

void journal_close(struct journal *j, void (*done_cb)(void *arg), void *arg)
{
  j->close_cb = done_cb;
  j->close_arg = arg;
  if (j->closing)
    return;
  j->closing = 1;
  hand_over(j);
  if (j->batch == NULL && j->pending == NULL)
    finish_close(j);
  else if (!j->thread_started)
    finish_close(j);
}

void journal_destroy(struct journal *j)
{
  int i;

  if (j == NULL)
    return;
  stop_thread(j);
  for (i = 0; i < ST_COUNT; i++)
    sqlite3_finalize(j->stmt[i]);
  if (j->db != NULL) {
    if (sqlite3_close(j->db) != SQLITE_OK)
      log_warn(JOURNAL_MOD, "cannot close the journal",
               LOG_S("error", sqlite3_errmsg(j->db)));
  }
  while (j->pending != NULL) {
    struct item *it = j->pending;
    j->pending = it->next;
    item_free(it);
  }
  if (j->locks_init) {
    uv_mutex_destroy(&j->lock);
    uv_cond_destroy(&j->cond);
  }
  free(j->path);
  free(j);
}

#ifdef RUNFLEET_UNITTEST
int journal_compact_now(struct journal *j)
{
  return compact(j, wall_ms()) == SQLITE_OK ? 0 : -EIO;
}
#endif
