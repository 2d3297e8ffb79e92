#ifndef RUNFLEET_CLI_FORMAT_H
#define RUNFLEET_CLI_FORMAT_H

#include <stddef.h>

/* The pure part of the runfleet CLI: command-line parsing and turning
 * runfleetd's JSON API answers into aligned text tables. No I/O here, so
 * the tables can be tested against fixed JSON. */

/* runfleetd's admin listener (admin_listen's default). */
#define CLI_DEFAULT_URL "http://127.0.0.1:9090"
#define CLI_URL_MAX 1024

enum cli_view {
  CLI_STATUS,
  CLI_POOLS,
  CLI_JOBS,
  CLI_RUNNERS,
  CLI_QUEUE,     /* each pool's queue and why its head waits */
  CLI_GPUS,      /* the GPU map: every GPU and what holds it */
  CLI_TOKEN_HASH /* `token hash`: SHA-256 of a token read from stdin */
};

struct cli_args {
  enum cli_view view;
  int json;                     /* --json: the server's JSON, pretty-printed */
  int watch;                    /* --watch (status): redraw until q */
  int help;                     /* -h/--help */
  int version;                  /* --version */
  char url[CLI_URL_MAX];        /* base URL, no trailing slash */
  char token_file[CLI_URL_MAX]; /* --token-file, or "" */
};

/* Parses argv; env_url is $RUNFLEET_URL or NULL. Returns 0, or -1 with a
 * message in err (a usage error). */
int cli_parse_args(int argc, char **argv, const char *env_url,
                   struct cli_args *out, char *err, size_t err_size);

/* The API path that view reads ("/api/v1/pools" for status too). */
const char *cli_view_path(enum cli_view view);

/* Formats the JSON answer of view's endpoint as a table. Returns a
 * malloc'd string, or NULL with a message in err when the JSON is invalid
 * or not the expected shape. */
char *cli_format(enum cli_view view, const char *json, size_t len, char *err,
                 size_t err_size);

/* Formats GET /api/v1/recovery (the last recovery run and the GitHub
 * API budget) as two lines for `runfleet status`. Returns a malloc'd
 * string, or NULL with a message in err. */
char *cli_format_recovery(const char *json, size_t len, char *err,
                          size_t err_size);

/* Re-indents JSON text (two spaces, key order kept) for --json. Returns a
 * malloc'd string ending in a newline, or NULL with a message in err. */
char *cli_pretty_json(const char *json, size_t len, char *err, size_t err_size);

#endif
