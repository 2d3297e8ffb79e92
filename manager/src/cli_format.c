#include "cli_format.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "strbuf.h"

/* Answers are tables of a few columns; a cell longer than this is cut. */
#define CLI_MAX_COLS 12
#define CLI_CELL_MAX 128
/* The JSON API is ours, but the CLI must not trust it with its memory. */
#define CLI_MAX_ROWS 100000

struct cli_table {
  size_t ncols;
  const char *head[CLI_MAX_COLS];
  int right[CLI_MAX_COLS]; /* numbers are right-aligned */
  size_t width[CLI_MAX_COLS];
  char (*cells)[CLI_CELL_MAX]; /* nrows * ncols */
  size_t nrows;
  size_t cap;
  int failed;
};

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL || err_size == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, err_size, fmt, ap);
  va_end(ap);
}

/* ---- arguments ---- */

static int view_parse(const char *name, enum cli_view *view)
{
  static const struct {
    const char *name;
    enum cli_view view;
  } views[] = {{"status", CLI_STATUS}, {"pools", CLI_POOLS},
               {"jobs", CLI_JOBS},     {"runners", CLI_RUNNERS},
               {"queue", CLI_QUEUE},   {"gpus", CLI_GPUS}};
  size_t i;

  for (i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
    if (strcmp(name, views[i].name) == 0) {
      *view = views[i].view;
      return 0;
    }
  }
  return -1;
}

static int set_url(struct cli_args *out, const char *url, char *err,
                   size_t err_size)
{
  size_t len = strlen(url);

  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
    set_err(err, err_size, "URL must start with http:// or https://: %s", url);
    return -1;
  }
  if (len >= sizeof(out->url)) {
    set_err(err, err_size, "URL too long");
    return -1;
  }
  memcpy(out->url, url, len + 1);
  while (len > 0 && out->url[len - 1] == '/')
    out->url[--len] = '\0';
  return 0;
}

int cli_parse_args(int argc, char **argv, const char *env_url,
                   struct cli_args *out, char *err, size_t err_size)
{
  const char *url = NULL;
  int have_view = 0;
  int i;

  memset(out, 0, sizeof(*out));
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];

    if (strcmp(a, "--json") == 0) {
      out->json = 1;
    } else if (strcmp(a, "--watch") == 0) {
      out->watch = 1;
    } else if (strcmp(a, "--url") == 0) {
      if (i + 1 >= argc) {
        set_err(err, err_size, "--url needs a value");
        return -1;
      }
      url = argv[++i];
    } else if (strncmp(a, "--url=", 6) == 0) {
      url = a + 6;
    } else if (strcmp(a, "--token-file") == 0 ||
               strncmp(a, "--token-file=", 13) == 0) {
      const char *v = a[12] == '=' ? a + 13 : (i + 1 < argc ? argv[++i] : NULL);

      if (v == NULL || v[0] == '\0' || strlen(v) >= sizeof(out->token_file)) {
        set_err(err, err_size, "--token-file needs a file name");
        return -1;
      }
      memcpy(out->token_file, v, strlen(v) + 1);
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      out->help = 1;
    } else if (strcmp(a, "--version") == 0) {
      out->version = 1;
    } else if (a[0] == '-') {
      set_err(err, err_size, "unknown option: %s", a);
      return -1;
    } else if (have_view) {
      set_err(err, err_size, "one command at a time: %s", a);
      return -1;
    } else if (strcmp(a, "token") == 0) {
      if (i + 1 >= argc || strcmp(argv[i + 1], "hash") != 0) {
        set_err(err, err_size, "token: the command is `token hash`");
        return -1;
      }
      i++;
      out->view = CLI_TOKEN_HASH;
      have_view = 1;
    } else if (view_parse(a, &out->view) != 0) {
      set_err(err, err_size, "unknown command: %s", a);
      return -1;
    } else {
      have_view = 1;
    }
  }
  if (!have_view && !out->help && !out->version) {
    set_err(err, err_size, "missing command");
    return -1;
  }
  if (out->watch && (out->view != CLI_STATUS || out->json)) {
    set_err(err, err_size, "--watch goes with status, without --json");
    return -1;
  }
  if (url == NULL)
    url = env_url != NULL && env_url[0] != '\0' ? env_url : CLI_DEFAULT_URL;
  return set_url(out, url, err, err_size);
}

const char *cli_view_path(enum cli_view view)
{
  switch (view) {
  case CLI_STATUS:
  case CLI_POOLS:
    return "/api/v1/pools";
  case CLI_JOBS:
    return "/api/v1/jobs";
  case CLI_RUNNERS:
    return "/api/v1/runners";
  case CLI_QUEUE:
    return "/api/v1/queue";
  case CLI_GPUS:
    return "/api/v1/nodes";
  case CLI_TOKEN_HASH:
    break;
  }
  return "/api/v1/pools";
}

/* ---- output buffer ---- */

static void buf_pad(struct strbuf *b, size_t n)
{
  static const char spaces[] = "                                ";

  while (n > 0) {
    size_t k = n < sizeof(spaces) - 1 ? n : sizeof(spaces) - 1;

    strbuf_append(b, spaces, k);
    n -= k;
  }
}

/* ---- tables ---- */

/* Display width: UTF-8 continuation bytes take no column. */
static size_t text_width(const char *s)
{
  size_t w = 0;

  for (; *s != '\0'; s++)
    if (((unsigned char)*s & 0xC0) != 0x80)
      w++;
  return w;
}

/* Copies s into a cell: control characters (a terminal escape in a
 * repository name, say) become '?', and a cut never splits a UTF-8
 * sequence. */
static void cell_copy(char *cell, const char *s)
{
  size_t n = 0;

  for (; *s != '\0' && n + 1 < CLI_CELL_MAX; s++) {
    unsigned char c = (unsigned char)*s;

    cell[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  if (*s != '\0')
    while (n > 0 && ((unsigned char)cell[n - 1] & 0xC0) == 0x80)
      n--;
  if (*s != '\0' && n > 0 && ((unsigned char)cell[n - 1] & 0xC0) == 0xC0)
    n--;
  cell[n] = '\0';
}

static void table_init(struct cli_table *t, const char *const *heads,
                       const int *right, size_t ncols)
{
  size_t i;

  memset(t, 0, sizeof(*t));
  t->ncols = ncols;
  for (i = 0; i < ncols; i++) {
    t->head[i] = heads[i];
    t->right[i] = right[i];
    t->width[i] = text_width(heads[i]);
  }
}

/* Adds a row of ncols strings; a NULL string shows as "-". */
static void table_row(struct cli_table *t, const char *const *vals)
{
  size_t i;

  if (t->failed)
    return;
  if (t->nrows == CLI_MAX_ROWS) {
    t->failed = 1;
    return;
  }
  if (t->nrows == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    char(*p)[CLI_CELL_MAX] = realloc(t->cells, cap * t->ncols * CLI_CELL_MAX);

    if (p == NULL) {
      t->failed = 1;
      return;
    }
    t->cells = p;
    t->cap = cap;
  }
  for (i = 0; i < t->ncols; i++) {
    char *cell = t->cells[t->nrows * t->ncols + i];
    size_t w;

    cell_copy(cell, vals[i] != NULL ? vals[i] : "-");
    w = text_width(cell);
    if (w > t->width[i])
      t->width[i] = w;
  }
  t->nrows++;
}

static void table_line(const struct cli_table *t, struct strbuf *b,
                       const char *const *vals)
{
  size_t i;

  for (i = 0; i < t->ncols; i++) {
    size_t pad = t->width[i] - text_width(vals[i]);
    int last = i + 1 == t->ncols;

    if (i > 0)
      strbuf_append(b, "  ", 2);
    if (t->right[i])
      buf_pad(b, pad);
    strbuf_append(b, vals[i], strlen(vals[i]));
    /* No trailing blanks after the last column. */
    if (!t->right[i] && !last)
      buf_pad(b, pad);
  }
  strbuf_append(b, "\n", 1);
}

static void table_render(const struct cli_table *t, struct strbuf *b)
{
  const char *vals[CLI_MAX_COLS];
  size_t r;
  size_t i;

  table_line(t, b, t->head);
  for (r = 0; r < t->nrows; r++) {
    for (i = 0; i < t->ncols; i++)
      vals[i] = t->cells[r * t->ncols + i];
    table_line(t, b, vals);
  }
}

static void table_free(struct cli_table *t)
{
  free(t->cells);
  t->cells = NULL;
}

/* ---- JSON fields as cell text ---- */

/* Text of a scalar field; NULL (shown "-") when absent, null or not a
 * scalar. Arrays of scalars are joined with commas. */
static const char *field_text(json_t *obj, const char *key, char *out,
                              size_t out_size)
{
  json_t *v = json_object_get(obj, key);
  size_t i;
  size_t len = 0;
  json_t *item;

  out[0] = '\0';
  if (json_is_string(v)) {
    snprintf(out, out_size, "%s", json_string_value(v));
  } else if (json_is_integer(v)) {
    snprintf(out, out_size, "%lld", (long long)json_integer_value(v));
  } else if (json_is_real(v)) {
    snprintf(out, out_size, "%g", json_real_value(v));
  } else if (json_is_boolean(v)) {
    snprintf(out, out_size, "%s", json_is_true(v) ? "true" : "false");
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, item)
    {
      char one[CLI_CELL_MAX];
      int n;

      if (json_is_string(item))
        snprintf(one, sizeof(one), "%s", json_string_value(item));
      else if (json_is_integer(item))
        snprintf(one, sizeof(one), "%lld", (long long)json_integer_value(item));
      else
        snprintf(one, sizeof(one), "?");
      n = snprintf(out + len, out_size - len, "%s%s", i > 0 ? "," : "", one);
      if (n < 0 || (size_t)n >= out_size - len)
        break;
      len += (size_t)n;
    }
    if (json_array_size(v) == 0)
      return NULL;
  } else {
    return NULL;
  }
  return out;
}

/* Seconds as "12.3s", "4m05s" or "2h03m". */
static const char *field_duration(json_t *obj, const char *key, char *out,
                                  size_t out_size)
{
  json_t *v = json_object_get(obj, key);
  double s;
  long long whole;

  if (!json_is_number(v))
    return NULL;
  s = json_number_value(v);
  if (s < 0 || s > 1e12)
    return NULL;
  whole = (long long)s;
  if (s < 60)
    snprintf(out, out_size, "%.1fs", s);
  else if (s < 3600)
    snprintf(out, out_size, "%lldm%02llds", whole / 60, whole % 60);
  else
    snprintf(out, out_size, "%lldh%02lldm", whole / 3600, whole % 3600 / 60);
  return out;
}

static long long field_int(json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key);

  return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

/* "used/total" GPUs of a pool, NULL when the pool has none. */
static const char *pool_gpus(json_t *pool, char *out, size_t out_size,
                             long long *used, long long *total)
{
  json_t *cap = json_object_get(pool, "capacity");
  long long t = field_int(cap, "gpus_total");
  long long u = field_int(cap, "gpus_used");

  /* Pools draw on one backend's capacity, so the total is that capacity,
   * not a sum over pools. */
  if (t > *total) {
    *total = t;
    *used = u;
  }
  if (t <= 0 || field_int(pool, "gpus_per_runner") == 0)
    return NULL;
  snprintf(out, out_size, "%lld/%lld", u, t);
  return out;
}

/* ---- the views ---- */

static void format_pools(json_t *pools, struct cli_table *t)
{
  static const char *const heads[] = {"POOL", "PRIO",  "DEMAND", "STARTING",
                                      "IDLE", "BUSY",  "MAX",    "MIN-IDLE",
                                      "GPUS", "LABELS"};
  static const int right[] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 0};
  char c[10][CLI_CELL_MAX];
  const char *v[10];
  long long used = 0;
  long long total = 0;
  json_t *pool;
  size_t i;

  table_init(t, heads, right, 10);
  json_array_foreach(pools, i, pool)
  {
    json_t *runners = json_object_get(pool, "runners");

    v[0] = field_text(pool, "name", c[0], sizeof(c[0]));
    v[1] = field_text(pool, "priority", c[1], sizeof(c[1]));
    v[2] = field_text(pool, "demand", c[2], sizeof(c[2]));
    v[3] = field_text(runners, "starting", c[3], sizeof(c[3]));
    v[4] = field_text(runners, "idle", c[4], sizeof(c[4]));
    v[5] = field_text(runners, "busy", c[5], sizeof(c[5]));
    v[6] = field_text(pool, "max_runners", c[6], sizeof(c[6]));
    v[7] = field_text(pool, "min_idle", c[7], sizeof(c[7]));
    v[8] = pool_gpus(pool, c[8], sizeof(c[8]), &used, &total);
    v[9] = field_text(pool, "labels", c[9], sizeof(c[9]));
    table_row(t, v);
  }
}

static void format_status(json_t *pools, struct cli_table *t)
{
  static const char *const heads[] = {"POOL", "DEMAND", "STARTING", "IDLE",
                                      "BUSY", "MAX",    "GPUS"};
  static const int right[] = {0, 1, 1, 1, 1, 1, 1};
  long long sum[6] = {0};
  char c[7][CLI_CELL_MAX];
  const char *v[7];
  long long used = 0;
  long long total = 0;
  json_t *pool;
  size_t i;
  int k;

  table_init(t, heads, right, 7);
  json_array_foreach(pools, i, pool)
  {
    json_t *runners = json_object_get(pool, "runners");

    v[0] = field_text(pool, "name", c[0], sizeof(c[0]));
    v[1] = field_text(pool, "demand", c[1], sizeof(c[1]));
    v[2] = field_text(runners, "starting", c[2], sizeof(c[2]));
    v[3] = field_text(runners, "idle", c[3], sizeof(c[3]));
    v[4] = field_text(runners, "busy", c[4], sizeof(c[4]));
    v[5] = field_text(pool, "max_runners", c[5], sizeof(c[5]));
    v[6] = pool_gpus(pool, c[6], sizeof(c[6]), &used, &total);
    sum[1] += field_int(pool, "demand");
    sum[2] += field_int(runners, "starting");
    sum[3] += field_int(runners, "idle");
    sum[4] += field_int(runners, "busy");
    sum[5] += field_int(pool, "max_runners");
    table_row(t, v);
  }
  v[0] = "TOTAL";
  for (k = 1; k < 6; k++) {
    snprintf(c[k], sizeof(c[k]), "%lld", sum[k]);
    v[k] = c[k];
  }
  v[6] = NULL;
  if (total > 0) {
    snprintf(c[6], sizeof(c[6]), "%lld/%lld", used, total);
    v[6] = c[6];
  }
  table_row(t, v);
}

static void format_jobs(json_t *jobs, struct cli_table *t)
{
  static const char *const heads[] = {
      "ID", "RUN", "REPOSITORY", "POOL", "STATUS", "RUNNER", "WAIT", "QUEUED"};
  static const int right[] = {1, 1, 0, 0, 0, 0, 1, 0};
  char c[8][CLI_CELL_MAX];
  const char *v[8];
  json_t *job;
  size_t i;

  table_init(t, heads, right, 8);
  json_array_foreach(jobs, i, job)
  {
    v[0] = field_text(job, "id", c[0], sizeof(c[0]));
    v[1] = field_text(job, "run_id", c[1], sizeof(c[1]));
    v[2] = field_text(job, "repository", c[2], sizeof(c[2]));
    v[3] = field_text(job, "pool", c[3], sizeof(c[3]));
    v[4] = field_text(job, "status", c[4], sizeof(c[4]));
    v[5] = field_text(job, "runner", c[5], sizeof(c[5]));
    v[6] = field_duration(job, "wait_seconds", c[6], sizeof(c[6]));
    v[7] = field_text(job, "queued_at", c[7], sizeof(c[7]));
    table_row(t, v);
  }
}

static void format_runners(json_t *runners, struct cli_table *t)
{
  static const char *const heads[] = {"NAME", "POOL", "STATE",
                                      "GPUS", "JOB",  "AGE"};
  static const int right[] = {0, 0, 0, 0, 1, 1};
  char c[6][CLI_CELL_MAX];
  const char *v[6];
  json_t *runner;
  size_t i;

  table_init(t, heads, right, 6);
  json_array_foreach(runners, i, runner)
  {
    v[0] = field_text(runner, "name", c[0], sizeof(c[0]));
    v[1] = field_text(runner, "pool", c[1], sizeof(c[1]));
    v[2] = field_text(runner, "state", c[2], sizeof(c[2]));
    v[3] = field_text(runner, "gpus", c[3], sizeof(c[3]));
    v[4] = field_text(runner, "job_id", c[4], sizeof(c[4]));
    v[5] = field_duration(runner, "age_seconds", c[5], sizeof(c[5]));
    table_row(t, v);
  }
}

/* Cuts text to at most cols display columns, ending a cut with "~". */
static const char *cut(char *text, size_t cols)
{
  size_t w = 0, i;

  for (i = 0; text[i] != '\0'; i++) {
    if (((unsigned char)text[i] & 0xC0) == 0x80)
      continue;
    if (++w == cols && text[i + 1] != '\0') {
      size_t end = i + 1;

      /* The character that starts at i may be several bytes long. */
      while (((unsigned char)text[end] & 0xC0) == 0x80)
        end++;
      if (text[end] == '\0')
        return text;
      text[i] = '~';
      text[i + 1] = '\0';
      return text;
    }
  }
  return text;
}

/* A field's text cut to cols columns; NULL when absent. */
static const char *field_cut(json_t *obj, const char *key, char *out,
                             size_t out_size, size_t cols)
{
  if (field_text(obj, key, out, out_size) == NULL)
    return NULL;
  return cut(out, cols);
}

/* The queue: a row per pool, its head's reason and the next job. Cut so
 * the table fits 100 columns with pool names of up to 16. */
static void format_queue(json_t *queue, struct cli_table *t)
{
  static const char *const heads[] = {"POOL", "QUEUED", "OLDEST", "WHY",
                                      "NEXT"};
  static const int right[] = {0, 1, 1, 0, 0};
  char c[5][CLI_CELL_MAX];
  const char *v[5];
  json_t *q;
  size_t i;

  table_init(t, heads, right, 5);
  json_array_foreach(queue, i, q)
  {
    json_t *reason = json_object_get(q, "reason");
    json_t *next = json_array_get(json_object_get(q, "next"), 0);
    char repo[CLI_CELL_MAX], name[CLI_CELL_MAX], wait[CLI_CELL_MAX];

    v[0] = field_text(q, "pool", c[0], sizeof(c[0]));
    v[1] = field_text(q, "queued", c[1], sizeof(c[1]));
    v[2] = field_duration(q, "oldest_wait_seconds", c[2], sizeof(c[2]));
    v[3] = NULL;
    if (json_is_object(reason) &&
        field_text(reason, "code", repo, sizeof(repo)) != NULL &&
        field_text(reason, "text", name, sizeof(name)) != NULL) {
      /* snprintf cuts at a cell, cut() then to the column. */
      if (snprintf(c[3], sizeof(c[3]), "%s: %s", repo, name) >= 0)
        v[3] = cut(c[3], 44);
    }
    v[4] = NULL;
    if (json_is_object(next) &&
        field_text(next, "repository", repo, sizeof(repo)) != NULL &&
        field_text(next, "name", name, sizeof(name)) != NULL) {
      if (snprintf(c[4], sizeof(c[4]), "%s %s (%s)", repo, name,
                   field_duration(next, "wait_seconds", wait, sizeof(wait)) !=
                           NULL
                       ? wait
                       : "-") >= 0)
        v[4] = cut(c[4], 24);
    }
    table_row(t, v);
  }
}

/* The GPU map as rows: one per GPU, nodes without GPUs left out. */
static void format_gpus(json_t *nodes, struct cli_table *t)
{
  static const char *const heads[] = {"NODE", "GROUP",      "GPU",    "STATE",
                                      "POOL", "REPOSITORY", "RUNNING"};
  static const int right[] = {0, 0, 1, 0, 0, 0, 1};
  char c[7][CLI_CELL_MAX];
  const char *v[7];
  json_t *node, *gpu;
  size_t i, k;

  table_init(t, heads, right, 7);
  json_array_foreach(nodes, i, node)
  {
    json_array_foreach(json_object_get(node, "gpus"), k, gpu)
    {
      json_t *job = json_object_get(gpu, "job");

      v[0] = field_cut(node, "name", c[0], sizeof(c[0]), 28);
      v[1] = field_cut(node, "node_group", c[1], sizeof(c[1]), 12);
      v[2] = field_text(gpu, "index", c[2], sizeof(c[2]));
      v[3] = field_text(gpu, "state", c[3], sizeof(c[3]));
      v[4] = field_text(gpu, "pool", c[4], sizeof(c[4]));
      if (v[4] == NULL) /* a dev server: its id */
        v[4] = field_cut(gpu, "holder", c[4], sizeof(c[4]), 16);
      v[5] = json_is_object(job)
                 ? field_cut(job, "repository", c[5], sizeof(c[5]), 20)
                 : NULL;
      v[6] = json_is_object(job)
                 ? field_duration(job, "running_seconds", c[6], sizeof(c[6]))
                 : NULL;
      table_row(t, v);
    }
  }
}

static const char *view_key(enum cli_view view)
{
  switch (view) {
  case CLI_STATUS:
  case CLI_POOLS:
    return "pools";
  case CLI_JOBS:
    return "jobs";
  case CLI_RUNNERS:
    return "runners";
  case CLI_QUEUE:
    return "queue";
  case CLI_GPUS:
    return "nodes";
  case CLI_TOKEN_HASH:
    break;
  }
  return "pools";
}

char *cli_format(enum cli_view view, const char *json, size_t len, char *err,
                 size_t err_size)
{
  const char *key = view_key(view);
  struct cli_table t;
  struct strbuf b = {0};
  json_error_t jerr;
  json_t *root;
  json_t *list;
  char *out;

  root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL) {
    set_err(err, err_size, "bad JSON at line %d: %s", jerr.line, jerr.text);
    return NULL;
  }
  list = json_object_get(root, key);
  if (!json_is_array(list)) {
    set_err(err, err_size, "unexpected answer: no \"%s\" array", key);
    json_decref(root);
    return NULL;
  }
  if (json_array_size(list) == 0 && view != CLI_STATUS) {
    json_decref(root);
    strbuf_append(&b, "no ", 3);
    strbuf_append(&b, key, strlen(key));
    strbuf_append(&b, "\n", 1);
    goto out;
  }
  if (view == CLI_STATUS)
    format_status(list, &t);
  else if (view == CLI_POOLS)
    format_pools(list, &t);
  else if (view == CLI_JOBS)
    format_jobs(list, &t);
  else if (view == CLI_QUEUE)
    format_queue(list, &t);
  else if (view == CLI_GPUS)
    format_gpus(list, &t);
  else
    format_runners(list, &t);
  json_decref(root);
  if (t.failed)
    b.failed = 1;
  else
    table_render(&t, &b);
  table_free(&t);

out:
  out = strbuf_take(&b, NULL);
  if (out == NULL)
    set_err(err, err_size, "out of memory");
  return out;
}

/* A field as shown in a sentence: its text with anything but
 * [A-Za-z0-9:._-] turned into '?', or "-" when absent. */
static const char *field_word(json_t *obj, const char *key, char *out,
                              size_t out_size)
{
  size_t i;

  if (field_text(obj, key, out, out_size) == NULL)
    return "-";
  for (i = 0; out[i] != '\0'; i++)
    if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
               "0123456789:._-",
               out[i]) == NULL)
      out[i] = '?';
  return out;
}

static void recovery_line(json_t *last, int running, struct strbuf *b)
{
  char when[CLI_CELL_MAX], trig[CLI_CELL_MAX];

  if (!json_is_object(last)) {
    strbuf_printf(b, "recovery: no run finished yet%s\n",
                  running ? " (one is running)" : "");
    return;
  }
  strbuf_printf(
      b,
      "recovery: last run %s (%s)%s: %lld deliveries seen, %lld failed, %lld "
      "redelivered%s; %lld repositories, %lld queued runs, %lld jobs found; "
      "%lld calls, %lld errors%s\n",
      field_word(last, "finished_at", when, sizeof(when)),
      field_word(last, "trigger", trig, sizeof(trig)),
      running ? ", another running" : "", field_int(last, "deliveries_seen"),
      field_int(last, "deliveries_failed"), field_int(last, "redelivered"),
      json_is_false(json_object_get(last, "deliveries_api"))
          ? " (PAT mode: no deliveries API)"
          : "",
      field_int(last, "repositories_scanned"), field_int(last, "runs_scanned"),
      field_int(last, "jobs_found"), field_int(last, "calls"),
      field_int(last, "errors"),
      json_is_true(json_object_get(last, "budget_spent"))
          ? ", call budget spent"
          : "");
}

static void budget_line(json_t *budget, struct strbuf *b)
{
  char rem[CLI_CELL_MAX], lim[CLI_CELL_MAX], reset[CLI_CELL_MAX];
  json_t *hold = json_object_get(budget, "hold_seconds");
  json_t *wait = json_object_get(budget, "waiting");

  if (!json_is_object(budget))
    return;
  strbuf_printf(
      b,
      "github api: %s of %s left (reserve %lld), resets %s; held %gs "
      "(mutations), %gs (recovery); waiting: %lld runner, %lld recovery "
      "calls; %lld secondary limits hit\n",
      field_word(budget, "remaining", rem, sizeof(rem)),
      field_word(budget, "limit", lim, sizeof(lim)),
      field_int(budget, "reserve"),
      field_word(budget, "reset_at", reset, sizeof(reset)),
      json_number_value(json_object_get(hold, "mutations")),
      json_number_value(json_object_get(hold, "recovery")),
      field_int(wait, "runner"), field_int(wait, "recovery"),
      field_int(budget, "secondary_limited"));
}

char *cli_format_recovery(const char *json, size_t len, char *err,
                          size_t err_size)
{
  struct strbuf b = {0};
  json_error_t jerr;
  json_t *root, *rec;
  char *out;

  root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL) {
    set_err(err, err_size, "bad JSON at line %d: %s", jerr.line, jerr.text);
    return NULL;
  }
  rec = json_object_get(root, "recovery");
  if (!json_is_object(rec)) {
    set_err(err, err_size, "unexpected answer: no \"recovery\" object");
    json_decref(root);
    return NULL;
  }
  recovery_line(json_object_get(rec, "last_run"),
                json_is_true(json_object_get(rec, "running")), &b);
  budget_line(json_object_get(rec, "budget"), &b);
  json_decref(root);
  out = strbuf_take(&b, NULL);
  if (out == NULL)
    set_err(err, err_size, "out of memory");
  return out;
}

char *cli_pretty_json(const char *json, size_t len, char *err, size_t err_size)
{
  json_error_t jerr;
  json_t *root;
  char *text;
  char *out;
  size_t n;

  root = json_loadb(json, len, JSON_DECODE_ANY, &jerr);
  if (root == NULL) {
    set_err(err, err_size, "bad JSON at line %d: %s", jerr.line, jerr.text);
    return NULL;
  }
  text =
      json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
  json_decref(root);
  if (text == NULL) {
    set_err(err, err_size, "out of memory");
    return NULL;
  }
  n = strlen(text);
  out = malloc(n + 2);
  if (out == NULL) {
    free(text);
    set_err(err, err_size, "out of memory");
    return NULL;
  }
  memcpy(out, text, n);
  out[n] = '\n';
  out[n + 1] = '\0';
  free(text);
  return out;
}
