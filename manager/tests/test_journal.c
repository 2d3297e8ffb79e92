/* journal: job events, runners and meta values written in group commits
 * on the journal's thread and replayed after a reopen; delivery ids
 * deduped across reopens; damaged files moved aside; a journal from a
 * newer schema refused; a full journal answered -ENOSPC; compaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "journal.h"

struct fixture {
  uv_loop_t loop;
  char dir[64];
  char path[128];
};

struct result {
  int called;
  int status;
};

struct replayed {
  size_t nevents, nrunners;
  int64_t job_ids[4096];
  int types[4096];
  uint64_t at_ms[4];
  char repo[64], labels[128], runner[64];
  struct journal_runner runners[8];
  size_t ndevservers;
  struct journal_devserver devservers[8];
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  assert_int_equal(uv_loop_init(&f->loop), 0);
  snprintf(f->dir, sizeof(f->dir), "/tmp/test_journal.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  char cmd[160];

  assert_int_equal(uv_loop_close(&f->loop), 0);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static void done_cb(void *arg, int status)
{
  struct result *r = arg;

  r->called++;
  r->status = status;
}

static void closed_cb(void *arg)
{
  (*(int *)arg)++;
}

static struct journal *open_journal(struct fixture *f, uint64_t max_bytes,
                                    int *damaged)
{
  struct journal_options o = {f->path, JOURNAL_SYNC_NORMAL, max_bytes};
  struct journal *j = NULL;
  int dmg = 0;

  assert_int_equal(journal_open(&j, &f->loop, &o, NULL, &dmg), 0);
  if (damaged != NULL)
    *damaged = dmg;
  else
    assert_int_equal(dmg, 0);
  return j;
}

static void close_journal(struct fixture *f, struct journal *j)
{
  int closed = 0;

  journal_close(j, closed_cb, &closed);
  while (!closed)
    uv_run(&f->loop, UV_RUN_ONCE);
  journal_destroy(j);
}

static void make_event(struct event *ev, enum event_type type,
                       const char *delivery, int64_t job)
{
  memset(ev, 0, sizeof(*ev));
  ev->type = type;
  snprintf(ev->delivery, sizeof(ev->delivery), "%s", delivery);
  ev->source = "workflow_job";
  ev->action = strdup(type == EVENT_JOB_QUEUED ? "queued" : "completed");
  ev->job_id = job;
  ev->run_id = 77;
  ev->repo = strdup("octo-org/ml");
  ev->job_name = strdup("test (gpu)");
  ev->labels[0] = strdup("self-hosted");
  ev->labels[1] = strdup("gpu");
  ev->nlabels = 2;
  if (type == EVENT_JOB_COMPLETED) {
    ev->runner_name = strdup("rf-gpu-0a0b0c0d-beef-1");
    ev->conclusion = strdup("success");
  }
}

static void wait_results(struct fixture *f, struct result *r, size_t n)
{
  size_t i, done;

  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    for (i = 0, done = 0; i < n; i++)
      done += r[i].called;
  } while (done < n);
}

static void on_event(void *ctx, const struct event *ev, uint64_t at_ms)
{
  struct replayed *rp = ctx;
  size_t i, len = 0;

  if (rp->nevents < 4)
    rp->at_ms[rp->nevents] = at_ms;
  if (rp->nevents < 4096) {
    rp->job_ids[rp->nevents] = ev->job_id;
    rp->types[rp->nevents] = (int)ev->type;
  }
  rp->nevents++;
  snprintf(rp->repo, sizeof(rp->repo), "%s", ev->repo ? ev->repo : "");
  for (i = 0; i < ev->nlabels; i++)
    len += (size_t)snprintf(rp->labels + len, sizeof(rp->labels) - len, "%s,",
                            ev->labels[i]);
  if (ev->runner_name != NULL)
    snprintf(rp->runner, sizeof(rp->runner), "%s", ev->runner_name);
}

static void on_runner(void *ctx, const struct journal_runner *r)
{
  struct replayed *rp = ctx;

  if (rp->nrunners < 8)
    rp->runners[rp->nrunners] = *r;
  rp->nrunners++;
}

static void on_devserver(void *ctx, const struct journal_devserver *d)
{
  struct replayed *rp = ctx;

  if (rp->ndevservers < 8)
    rp->devservers[rp->ndevservers] = *d;
  rp->ndevservers++;
}

static const struct journal_replay_ops replay_ops = {on_event, on_runner,
                                                     on_devserver};

/* Events come back after a reopen, in order, with every field; the same
 * delivery id again is a duplicate, even after the reopen. */
static void test_events_survive_reopen(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  struct event ev[3];
  struct result r[3];
  struct replayed *rp = calloc(1, sizeof(*rp));

  memset(r, 0, sizeof(r));
  make_event(&ev[0], EVENT_JOB_QUEUED, "d-1", 101);
  make_event(&ev[1], EVENT_JOB_COMPLETED, "d-2", 101);
  make_event(&ev[2], EVENT_JOB_QUEUED, "d-1", 101); /* redelivery */
  assert_int_equal(journal_start(j), 0);
  assert_int_equal(journal_append_event(j, &ev[0], 1000, done_cb, &r[0]), 0);
  assert_int_equal(journal_append_event(j, &ev[1], 2000, done_cb, &r[1]), 0);
  assert_int_equal(journal_append_event(j, &ev[2], 3000, done_cb, &r[2]), 0);
  /* Never before the commit. */
  assert_int_equal(r[0].called, 0);
  wait_results(f, r, 3);
  assert_int_equal(r[0].status, 0);
  assert_int_equal(r[1].status, 0);
  assert_int_equal(r[2].status, 1);
  close_journal(f, j);

  j = open_journal(f, 0, NULL);
  assert_int_equal(journal_replay(j, &replay_ops, rp), 0);
  assert_int_equal(rp->nevents, 2);
  assert_int_equal(rp->types[0], EVENT_JOB_QUEUED);
  assert_int_equal(rp->types[1], EVENT_JOB_COMPLETED);
  assert_int_equal(rp->at_ms[0], 1000);
  assert_int_equal(rp->at_ms[1], 2000);
  assert_string_equal(rp->repo, "octo-org/ml");
  assert_string_equal(rp->labels, "self-hosted,gpu,");
  assert_string_equal(rp->runner, "rf-gpu-0a0b0c0d-beef-1");
  memset(r, 0, sizeof(r));
  assert_int_equal(journal_start(j), 0);
  assert_int_equal(journal_append_event(j, &ev[0], 4000, done_cb, &r[0]), 0);
  wait_results(f, r, 1);
  assert_int_equal(r[0].status, 1);
  close_journal(f, j);
  event_free(&ev[0]);
  event_free(&ev[1]);
  event_free(&ev[2]);
  free(rp);
}

static struct event odd_labels_seen;

static void keep_event(void *ctx, const struct event *ev, uint64_t at_ms)
{
  size_t i;

  (void)ctx;
  (void)at_ms;
  for (i = 0; i < ev->nlabels; i++)
    odd_labels_seen.labels[i] = strdup(ev->labels[i]);
  odd_labels_seen.nlabels = ev->nlabels;
  odd_labels_seen.too_many_labels = ev->too_many_labels;
}

/* Labels come back exactly, whatever they hold, and so does the mark of
 * a job that had more labels than were kept (it must still match no
 * pool after a replay). */
static void test_labels_round_trip(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  struct journal_replay_ops ops = {keep_event, NULL, NULL};
  struct event ev;
  struct result r = {0, 0};

  make_event(&ev, EVENT_JOB_QUEUED, "l-1", 5);
  free(ev.labels[0]);
  free(ev.labels[1]);
  ev.labels[0] = strdup("12:x");
  ev.labels[1] = strdup("a\nb");
  ev.labels[2] = strdup("");
  ev.nlabels = 3;
  ev.too_many_labels = 1;
  assert_int_equal(journal_start(j), 0);
  assert_int_equal(journal_append_event(j, &ev, 1, done_cb, &r), 0);
  wait_results(f, &r, 1);
  close_journal(f, j);
  j = open_journal(f, 0, NULL);
  memset(&odd_labels_seen, 0, sizeof(odd_labels_seen));
  assert_int_equal(journal_replay(j, &ops, NULL), 0);
  assert_int_equal(odd_labels_seen.nlabels, 3);
  assert_string_equal(odd_labels_seen.labels[0], "12:x");
  assert_string_equal(odd_labels_seen.labels[1], "a\nb");
  assert_string_equal(odd_labels_seen.labels[2], "");
  assert_int_equal(odd_labels_seen.too_many_labels, 1);
  close_journal(f, j);
  event_free(&odd_labels_seen);
  event_free(&ev);
}

/* What is queued while a commit runs goes into the next transaction. */
static void test_group_commit(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  static struct event ev[300];
  static struct result r[300];
  struct journal_stats st;
  char id[32];
  size_t i;

  memset(r, 0, sizeof(r));
  assert_int_equal(journal_start(j), 0);
  for (i = 0; i < 300; i++) {
    snprintf(id, sizeof(id), "g-%zu", i);
    make_event(&ev[i], EVENT_JOB_QUEUED, id, (int64_t)i + 1);
    assert_int_equal(journal_append_event(j, &ev[i], 1, done_cb, &r[i]), 0);
  }
  wait_results(f, r, 300);
  journal_get_stats(j, &st);
  assert_int_equal(st.events, 300);
  /* The first went alone (the thread was idle); the rest in at most a
   * few transactions. */
  assert_true(st.commits >= 2);
  assert_true(st.commits < 300);
  assert_true(st.batch_max > 1);
  for (i = 0; i < 300; i++) {
    assert_int_equal(r[i].status, 0);
    event_free(&ev[i]);
  }
  close_journal(f, j);
}

/* A runner's row is replaced on each change and gone when it ends; meta
 * values are served from memory and kept. */
static void test_runners_and_meta(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  struct journal_runner a, b;
  struct replayed *rp = calloc(1, sizeof(*rp));
  struct event ev;
  struct result r = {0, 0};
  char buf[64];

  memset(&a, 0, sizeof(a));
  snprintf(a.name, sizeof(a.name), "rf-gpu-0a0b0c0d-beef-1");
  snprintf(a.pool, sizeof(a.pool), "gpu");
  snprintf(a.state, sizeof(a.state), "starting");
  snprintf(a.node, sizeof(a.node), "host-a");
  a.gh_id = 42;
  a.gpus[0] = 3;
  a.gpus[1] = 5;
  a.ngpus = 2;
  b = a;
  snprintf(b.name, sizeof(b.name), "rf-gpu-0a0b0c0d-beef-2");
  assert_int_equal(journal_start(j), 0);
  assert_int_equal(journal_put_runner(j, &a), 0);
  assert_int_equal(journal_put_runner(j, &b), 0);
  snprintf(a.state, sizeof(a.state), "running");
  assert_int_equal(journal_put_runner(j, &a), 0);
  assert_int_equal(journal_runner_gone(j, b.name), 0);
  assert_int_equal(journal_meta_put(j, "deliveries.cursor", "8000123"), 0);
  assert_int_equal(journal_meta_get(j, "deliveries.cursor", buf, sizeof(buf)),
                   0);
  assert_string_equal(buf, "8000123");
  assert_int_equal(journal_meta_get(j, "nope", buf, sizeof(buf)), -ENOENT);
  /* An event after them: once it is back, they were written too. */
  make_event(&ev, EVENT_JOB_QUEUED, "m-1", 9);
  assert_int_equal(journal_append_event(j, &ev, 1, done_cb, &r), 0);
  wait_results(f, &r, 1);
  close_journal(f, j);

  j = open_journal(f, 0, NULL);
  assert_int_equal(journal_meta_get(j, "deliveries.cursor", buf, sizeof(buf)),
                   0);
  assert_string_equal(buf, "8000123");
  assert_int_equal(journal_replay(j, &replay_ops, rp), 0);
  assert_int_equal(rp->nrunners, 1);
  assert_string_equal(rp->runners[0].name, a.name);
  assert_string_equal(rp->runners[0].state, "running");
  assert_string_equal(rp->runners[0].node, "host-a");
  assert_int_equal(rp->runners[0].gh_id, 42);
  assert_int_equal(rp->runners[0].ngpus, 2);
  assert_int_equal(rp->runners[0].gpus[1], 5);
  close_journal(f, j);
  event_free(&ev);
  free(rp);
}

static struct journal_devserver devserver_of(const char *id, uint64_t seq,
                                             const char *flavor)
{
  struct journal_devserver d;

  memset(&d, 0, sizeof(d));
  snprintf(d.id, sizeof(d.id), "%s", id);
  snprintf(d.user, sizeof(d.user), "alice");
  snprintf(d.flavor, sizeof(d.flavor), "%s", flavor);
  snprintf(d.state, sizeof(d.state), "queued");
  d.gpus = 4;
  d.seq = seq;
  d.created_ms = 1700000000000ull + seq;
  d.duration_ms = 3600000;
  return d;
}

/* Reservations come back after a reopen in arrival order (the queue order
 * of each flavor), with their last state, without the ones gone. */
static void test_devservers_survive_reopen(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  struct journal_devserver c = devserver_of("cccccccccccccccc", 3, "gpu-4");
  struct journal_devserver a = devserver_of("aaaaaaaaaaaaaaaa", 1, "gpu-4");
  struct journal_devserver b = devserver_of("bbbbbbbbbbbbbbbb", 2, "gpu-1");
  struct journal_devserver e = devserver_of("eeeeeeeeeeeeeeee", 4, "gpu-1");
  struct replayed *rp = calloc(1, sizeof(*rp));
  struct result r = {0, 0};

  assert_int_equal(journal_start(j), 0);
  /* Written out of id order, so an order by id would show. */
  assert_int_equal(journal_put_devserver(j, &c, NULL, NULL), 0);
  assert_int_equal(journal_put_devserver(j, &a, NULL, NULL), 0);
  assert_int_equal(journal_put_devserver(j, &b, NULL, NULL), 0);
  assert_int_equal(journal_put_devserver(j, &e, NULL, NULL), 0);
  snprintf(b.state, sizeof(b.state), "active");
  b.active_ms = 1700000100000ull;
  b.expires_at_ms = b.active_ms + b.duration_ms;
  b.warned = 1;
  snprintf(b.reason, sizeof(b.reason), "none");
  assert_int_equal(journal_devserver_gone(j, e.id), 0);
  assert_int_equal(journal_put_devserver(j, &b, done_cb, &r), 0);
  wait_results(f, &r, 1);
  assert_int_equal(r.status, 0);
  close_journal(f, j);

  j = open_journal(f, 0, NULL);
  assert_int_equal(journal_replay(j, &replay_ops, rp), 0);
  assert_int_equal(rp->ndevservers, 3);
  assert_string_equal(rp->devservers[0].id, a.id);
  assert_string_equal(rp->devservers[1].id, b.id);
  assert_string_equal(rp->devservers[2].id, c.id);
  assert_string_equal(rp->devservers[1].state, "active");
  assert_string_equal(rp->devservers[1].user, "alice");
  assert_string_equal(rp->devservers[1].flavor, "gpu-1");
  assert_string_equal(rp->devservers[1].reason, "none");
  assert_int_equal(rp->devservers[1].gpus, 4);
  assert_int_equal(rp->devservers[1].seq, 2);
  assert_int_equal(rp->devservers[1].created_ms, 1700000000002ull);
  assert_int_equal(rp->devservers[1].expires_at_ms, b.expires_at_ms);
  assert_int_equal(rp->devservers[1].duration_ms, 3600000);
  assert_int_equal(rp->devservers[1].warned, 1);
  close_journal(f, j);
  free(rp);
}

/* A journal of schema 1 (before dev servers) keeps its runners and gains
 * the reservations table. */
static void test_schema_1_migrates(void **state)
{
  struct fixture *f = *state;
  struct journal_devserver a = devserver_of("aaaaaaaaaaaaaaaa", 1, "gpu-4");
  struct replayed *rp = calloc(1, sizeof(*rp));
  struct result r = {0, 0};
  struct journal *j;
  sqlite3 *db;

  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(
          db,
          "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
          "CREATE TABLE deliveries(id TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
          " WITHOUT ROWID;"
          "CREATE INDEX deliveries_seq ON deliveries(seq);"
          "CREATE TABLE job_events(seq INTEGER PRIMARY KEY, job_id INTEGER NOT"
          " NULL, type INTEGER NOT NULL, at_ms INTEGER NOT NULL, delivery TEXT"
          " NOT NULL, action TEXT, run_id INTEGER, repo TEXT, name TEXT,"
          " labels TEXT, runner TEXT, conclusion TEXT);"
          "CREATE INDEX job_events_job ON job_events(job_id);"
          "CREATE TABLE finished(job_id INTEGER PRIMARY KEY, seq INTEGER NOT"
          " NULL);"
          "CREATE INDEX finished_seq ON finished(seq);"
          "CREATE TABLE runners(name TEXT PRIMARY KEY, pool TEXT NOT NULL,"
          " state TEXT NOT NULL, gh_id INTEGER, job_id INTEGER, node TEXT,"
          " gpus TEXT, created_ms INTEGER) WITHOUT ROWID;"
          "INSERT INTO runners VALUES('rf-1', 'gpu', 'idle', 1, 0, 'host',"
          " '0', 5);"
          "PRAGMA user_version = 1",
          0, 0, 0),
      SQLITE_OK);
  sqlite3_close(db);
  j = open_journal(f, 0, NULL);
  assert_int_equal(journal_start(j), 0);
  assert_int_equal(journal_put_devserver(j, &a, done_cb, &r), 0);
  wait_results(f, &r, 1);
  assert_int_equal(r.status, 0);
  close_journal(f, j);
  j = open_journal(f, 0, NULL);
  assert_int_equal(journal_replay(j, &replay_ops, rp), 0);
  assert_int_equal(rp->nrunners, 1);
  assert_string_equal(rp->runners[0].name, "rf-1");
  assert_int_equal(rp->ndevservers, 1);
  assert_string_equal(rp->devservers[0].id, a.id);
  close_journal(f, j);
  free(rp);
}

static void write_file(const char *path, const char *text, size_t len)
{
  FILE *fp = fopen(path, "w");

  assert_non_null(fp);
  assert_int_equal(fwrite(text, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
}

static int count_damaged(const struct fixture *f)
{
  char cmd[200];
  FILE *p;
  int n = -1;

  snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '^journal.db.damaged-[0-9]*$'",
           f->dir);
  p = popen(cmd, "r");
  assert_non_null(p);
  assert_int_equal(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

/* A file that is not a journal is kept aside and a new one started. */
static void test_garbage_file_kept_aside(void **state)
{
  struct fixture *f = *state;
  static const char junk[] = "this is not an SQLite database, just text\n";
  struct journal *j;
  int damaged = 0;

  write_file(f->path, junk, sizeof(junk) - 1);
  j = open_journal(f, 0, &damaged);
  assert_int_equal(damaged, 1);
  assert_int_equal(count_damaged(f), 1);
  assert_int_equal(journal_meta_put(j, "k", "v"), 0);
  close_journal(f, j);
  j = open_journal(f, 0, NULL);
  close_journal(f, j);
}

/* A journal cut short (half its pages gone) is found damaged at open. */
static void test_truncated_file_kept_aside(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  static struct event ev[400];
  static struct result r[400];
  struct replayed *rp = calloc(1, sizeof(*rp));
  struct stat st;
  char id[32];
  size_t i;
  int damaged = 0;

  memset(r, 0, sizeof(r));
  assert_int_equal(journal_start(j), 0);
  for (i = 0; i < 400; i++) {
    snprintf(id, sizeof(id), "t-%zu", i);
    make_event(&ev[i], EVENT_JOB_QUEUED, id, (int64_t)i + 1);
    assert_int_equal(journal_append_event(j, &ev[i], 1, done_cb, &r[i]), 0);
  }
  wait_results(f, r, 400);
  close_journal(f, j); /* checkpoints the WAL into the file */
  for (i = 0; i < 400; i++)
    event_free(&ev[i]);
  assert_int_equal(stat(f->path, &st), 0);
  assert_true(st.st_size > 8192);
  assert_int_equal(truncate(f->path, st.st_size / 2), 0);
  j = open_journal(f, 0, &damaged);
  assert_int_equal(damaged, 1);
  assert_int_equal(count_damaged(f), 1);
  assert_int_equal(journal_replay(j, &replay_ops, rp), 0);
  assert_int_equal(rp->nevents, 0);
  close_journal(f, j);
  free(rp);
}

/* A journal a newer runfleetd wrote is not touched. */
static void test_newer_schema_refused(void **state)
{
  struct fixture *f = *state;
  struct journal_options o = {f->path, JOURNAL_SYNC_FULL, 0};
  struct journal *j = NULL;
  sqlite3 *db;
  int damaged = 0;

  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", 0, 0, 0),
                   SQLITE_OK);
  sqlite3_close(db);
  assert_int_equal(journal_open(&j, &f->loop, &o, NULL, &damaged), -EINVAL);
  assert_null(j);
  assert_int_equal(damaged, 0);
  assert_int_equal(count_damaged(f), 0);
}

/* Past its size limit the journal answers -ENOSPC and writes nothing of
 * that batch; it works again for what fits. */
static void test_full_journal(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 64 * 1024, NULL);
  static struct event ev[2000];
  static struct result r[2000];
  char id[32], big[400];
  size_t i, full = 0, ok = 0;

  memset(r, 0, sizeof(r));
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(journal_start(j), 0);
  for (i = 0; i < 2000; i++) {
    snprintf(id, sizeof(id), "f-%zu", i);
    make_event(&ev[i], EVENT_JOB_QUEUED, id, (int64_t)i + 1);
    free(ev[i].job_name);
    ev[i].job_name = strdup(big);
    assert_int_equal(journal_append_event(j, &ev[i], 1, done_cb, &r[i]), 0);
    /* One at a time, so each is its own transaction. */
    wait_results(f, &r[i], 1);
    if (r[i].status == -ENOSPC)
      full++;
    else if (r[i].status == 0)
      ok++;
    else
      fail_msg("unexpected status %d", r[i].status);
  }
  assert_true(ok > 10);
  assert_true(full > 0);
  close_journal(f, j);
  for (i = 0; i < 2000; i++)
    event_free(&ev[i]);
}

/* Compaction keeps the newest finished jobs and every open one. */
static void test_compaction(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  static struct event ev[2 * (JOURNAL_FINISHED_KEEP + 500) + 1];
  static struct result r[2 * (JOURNAL_FINISHED_KEEP + 500) + 1];
  struct replayed *rp = calloc(1, sizeof(*rp));
  size_t n = JOURNAL_FINISHED_KEEP + 500, i, k = 0, open_seen = 0;
  uint64_t now = (uint64_t)time(NULL) * 1000;
  char id[32];

  memset(r, 0, sizeof(r));
  assert_int_equal(journal_start(j), 0);
  for (i = 0; i < n; i++) {
    snprintf(id, sizeof(id), "q-%zu", i);
    make_event(&ev[k], EVENT_JOB_QUEUED, id, (int64_t)i + 1);
    journal_append_event(j, &ev[k], now, done_cb, &r[k]);
    k++;
    snprintf(id, sizeof(id), "c-%zu", i);
    make_event(&ev[k], EVENT_JOB_COMPLETED, id, (int64_t)i + 1);
    journal_append_event(j, &ev[k], now, done_cb, &r[k]);
    k++;
  }
  make_event(&ev[k], EVENT_JOB_QUEUED, "open", 999999);
  journal_append_event(j, &ev[k], now, done_cb, &r[k]);
  k++;
  wait_results(f, r, k);
  close_journal(f, j);
  j = open_journal(f, 0, NULL);
  assert_int_equal(journal_compact_now(j), 0);
  assert_int_equal(journal_replay(j, &replay_ops, rp), 0);
  assert_int_equal(rp->nevents, 2 * JOURNAL_FINISHED_KEEP + 1);
  for (i = 0; i < rp->nevents && i < 4096; i++)
    if (rp->job_ids[i] == 999999)
      open_seen++;
    else
      assert_true(rp->job_ids[i] > 500);
  assert_int_equal(open_seen, 1);
  close_journal(f, j);
  for (i = 0; i < k; i++)
    event_free(&ev[i]);
  free(rp);
}

/* SQLite's automatic checkpoint (inside COMMIT) is replaced by one the
 * journal's thread runs after it answered the batch: with one transaction
 * per event the WAL passes its threshold, and checkpoints happen. */
static void test_checkpoint_after_answer(void **state)
{
  struct fixture *f = *state;
  struct journal *j = open_journal(f, 0, NULL);
  struct journal_stats st;
  struct event ev;
  char id[32];
  size_t i;

  assert_int_equal(journal_start(j), 0);
  for (i = 0; i < 1500; i++) {
    struct result r = {0};

    snprintf(id, sizeof(id), "w-%zu", i);
    make_event(&ev, EVENT_JOB_QUEUED, id, (int64_t)i + 1);
    assert_int_equal(journal_append_event(j, &ev, 1, done_cb, &r), 0);
    wait_results(f, &r, 1);
    assert_int_equal(r.status, 0);
    event_free(&ev);
  }
  journal_get_stats(j, &st);
  assert_int_equal(st.events, 1500);
  assert_true(st.commits >= 1500);
  assert_true(st.checkpoints >= 1);
  close_journal(f, j);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_events_survive_reopen, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_labels_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_runners_and_meta, setup, teardown),
      cmocka_unit_test_setup_teardown(test_devservers_survive_reopen, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_schema_1_migrates, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_file_kept_aside, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_truncated_file_kept_aside, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_full_journal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_after_answer, setup,
                                      teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
