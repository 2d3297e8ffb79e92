/* runfleet: the command-line client of runfleetd's JSON API. Fetching is
 * here; parsing the command line and formatting live in cli_format. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "auth.h"
#include "cli_dev.h"
#include "cli_format.h"
#include "secret.h"

/* Answers past this are not from a runfleetd we understand. */
#define CLI_MAX_ANSWER (64 * 1024 * 1024)
#define CLI_CONNECT_TIMEOUT_S 5L
#define CLI_TIMEOUT_S 30L
#define CLI_TOKEN_MAX AUTH_MAX_TOKEN
/* status --watch redraws this often. */
#define CLI_WATCH_MS 2000

struct cli_answer {
  char *data;
  size_t len;
  int too_big;
};

static const char usage[] =
    "usage: runfleet status|pools|jobs|runners|queue|gpus [--json] [--url "
    "URL]\n"
    "                [--token-file FILE]\n"
    "       runfleet status --watch\n"
    "       runfleet token hash < TOKEN\n"
    "       runfleet dev COMMAND ... (below)\n"
    "\n"
    "  status    pools with demand, runners and capacity, and totals; the\n"
    "            last recovery run and the GitHub API budget\n"
    "  pools     every pool and its settings\n"
    "  jobs      jobs runfleetd knows about\n"
    "  runners   runners and what they run\n"
    "  queue     each pool's queued jobs, the next one, and why it waits\n"
    "  gpus      every GPU and what holds it (runner, dev server, free,\n"
    "            unhealthy)\n"
    "  --watch   (status) redraw every 2 s until q or Ctrl-C\n"
    "\n"
    "  token hash  print the SHA-256 of the token on stdin, for admin.tokens\n"
    "\n"
    "  --json    print runfleetd's JSON answer instead of a table\n"
    "  --url     runfleetd's admin address (default $RUNFLEET_URL, else "
    "http://127.0.0.1:9090)\n"
    "  --token-file  a file holding the admin bearer token (default "
    "$RUNFLEET_TOKEN)\n";

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct cli_answer *a = userdata;
  size_t n = size * nmemb;
  char *p;

  if (n > CLI_MAX_ANSWER - a->len) {
    a->too_big = 1;
    return 0;
  }
  p = realloc(a->data, a->len + n + 1);
  if (p == NULL)
    return 0;
  a->data = p;
  memcpy(a->data + a->len, ptr, n);
  a->len += n;
  a->data[a->len] = '\0';
  return n;
}

/* The first line of an error answer, with control characters defused,
 * for the message on stderr. */
static void first_line(const char *text, char *out, size_t out_size)
{
  size_t n = 0;

  for (; text != NULL && *text != '\0' && *text != '\r' && *text != '\n' &&
         n + 1 < out_size;
       text++)
    out[n++] = ((unsigned char)*text < 0x20 || *text == 0x7f) ? '?' : *text;
  out[n] = '\0';
}

/* GETs base+path into *a, with token (may be NULL) as a bearer token.
 * Returns 0 on HTTP 200; otherwise prints why on stderr and returns -1. */
static int fetch(const char *base, const char *path, const char *token,
                 struct cli_answer *a)
{
  struct curl_slist *headers = NULL;
  char auth[CLI_TOKEN_MAX + 32] = "";
  char url[CLI_URL_MAX + 64];
  char curl_err[CURL_ERROR_SIZE] = "";
  CURL *curl = curl_easy_init();
  CURLcode rc;
  long status = 0;
  int ret = -1;

  if (curl == NULL) {
    fprintf(stderr, "runfleet: cannot start libcurl\n");
    return -1;
  }
  snprintf(url, sizeof(url), "%s%s", base, path);
  if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, a) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, CLI_CONNECT_TIMEOUT_S) !=
          CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_TIMEOUT, CLI_TIMEOUT_S) != CURLE_OK ||
      curl_easy_setopt(curl, CURLOPT_USERAGENT, "runfleet/" RUNFLEET_VERSION) !=
          CURLE_OK) {
    fprintf(stderr, "runfleet: cannot set up the request\n");
    goto out;
  }
  if (token != NULL) {
    struct curl_slist *h;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    h = curl_slist_append(NULL, auth);
    if (h == NULL ||
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h) != CURLE_OK) {
      curl_slist_free_all(h);
      fprintf(stderr, "runfleet: cannot set up libcurl\n");
      goto out;
    }
    headers = h;
  }
  rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    if (a->too_big)
      fprintf(stderr, "runfleet: answer from %s is too large\n", url);
    else
      fprintf(stderr, "runfleet: cannot reach runfleetd at %s: %s\n", url,
              curl_err[0] != '\0' ? curl_err : curl_easy_strerror(rc));
    goto out;
  }
  if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
    status = 0;
  if (status != 200) {
    char first[201];

    first_line(a->data, first, sizeof(first));
    fprintf(stderr, "runfleet: GET %s answered HTTP %ld%s%s\n", url, status,
            first[0] != '\0' ? ": " : "", first);
    goto out;
  }
  ret = 0;

out:
  curl_easy_cleanup(curl);
  curl_slist_free_all(headers);
  OPENSSL_cleanse(auth, sizeof(auth));
  return ret;
}

/* A token must be one header-safe word: what auth_bearer_check accepts. */
static int token_ok(const char *t)
{
  size_t n = strlen(t);

  return n > 0 && n <= CLI_TOKEN_MAX &&
         strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-._~+/=") == n;
}

/* The admin token: from --token-file, else $RUNFLEET_TOKEN, else none.
 * Returns 0 with *out set (NULL for none; free with secret_free_str), or
 * -1 after saying why on stderr. */
static int token_get(const struct cli_args *args, char **out)
{
  const char *env = getenv("RUNFLEET_TOKEN");
  size_t len = 0;
  int rc;

  *out = NULL;
  if (args->token_file[0] != '\0') {
    rc = secret_read_file(args->token_file, CLI_TOKEN_MAX + 2, out, &len);
    if (rc != 0) {
      fprintf(stderr, "runfleet: cannot read the token file %s: %s\n",
              args->token_file, strerror(-rc));
      return -1;
    }
  } else if (env != NULL && env[0] != '\0') {
    *out = strdup(env);
    if (*out == NULL) {
      fprintf(stderr, "runfleet: out of memory\n");
      return -1;
    }
  } else {
    return 0;
  }
  if (!token_ok(*out)) {
    fprintf(stderr,
            "runfleet: the token must be 1 to %d characters of "
            "[A-Za-z0-9-._~+/=]\n",
            CLI_TOKEN_MAX);
    secret_free_str(*out);
    *out = NULL;
    return -1;
  }
  return 0;
}

/* `token hash`: the SHA-256 of the first line of stdin, for admin.tokens
 * or admin.tokens_file. */
static int token_hash(void)
{
  char line[CLI_TOKEN_MAX + 2];
  char hex[AUTH_SHA256_HEX];
  size_t n;

  if (fgets(line, sizeof(line), stdin) == NULL) {
    fprintf(stderr, "runfleet: token hash: no token on stdin\n");
    return 1;
  }
  n = strcspn(line, "\r\n");
  line[n] = '\0';
  if (!token_ok(line)) {
    fprintf(stderr,
            "runfleet: token hash: the token must be 1 to %d "
            "characters of [A-Za-z0-9-._~+/=]\n",
            CLI_TOKEN_MAX);
    OPENSSL_cleanse(line, sizeof(line));
    return 1;
  }
  if (auth_sha256_hex(line, n, hex) != 0) {
    OPENSSL_cleanse(line, sizeof(line));
    fprintf(stderr, "runfleet: token hash: cannot hash\n");
    return 1;
  }
  OPENSSL_cleanse(line, sizeof(line));
  printf("%s\n", hex);
  return 0;
}

/* `status` ends with when recovery last ran and the GitHub API budget. */
static int status_recovery(const struct cli_args *args, const char *token)
{
  struct cli_answer a = {0};
  char err[256];
  char *text;
  int ret = -1;

  if (fetch(args->url, "/api/v1/recovery", token, &a) != 0)
    return -1;
  text = cli_format_recovery(a.data != NULL ? a.data : "", a.len, err,
                             sizeof(err));
  if (text == NULL)
    fprintf(stderr, "runfleet: %s/api/v1/recovery: %s\n", args->url, err);
  else if (fputs(text, stdout) == EOF || fflush(stdout) != 0)
    fprintf(stderr, "runfleet: cannot write the answer\n");
  else
    ret = 0;
  free(text);
  free(a.data);
  return ret;
}

/* Writes a table; on a terminal its heading line is bold (colour and
 * attributes only there: a pipe or a file gets plain text). */
static int put_table(const char *text, int tty)
{
  size_t head = strcspn(text, "\n");

  if (tty && text[head] == '\n' &&
      printf("\033[1m%.*s\033[0m", (int)head, text) < 0)
    return -1;
  if (fputs(tty && text[head] == '\n' ? text + head : text, stdout) == EOF)
    return -1;
  return fflush(stdout) != 0 ? -1 : 0;
}

static int run(const struct cli_args *args)
{
  struct cli_answer a = {0};
  char err[256];
  char *text = NULL;
  char *token = NULL;
  int ret = 1;

  if (token_get(args, &token) != 0)
    return 1;

  if (args->view == CLI_STATUS && !args->json) {
    /* The daemon's own word on its health comes first. */
    if (fetch(args->url, "/healthz", token, &a) != 0)
      goto out;
    printf("runfleetd %s: %.*s\n", args->url,
           (int)strcspn(a.data != NULL ? a.data : "", "\r\n"),
           a.data != NULL ? a.data : "");
    free(a.data);
    memset(&a, 0, sizeof(a));
  }
  if (fetch(args->url, cli_view_path(args->view), token, &a) != 0)
    goto out;
  if (args->json)
    text =
        cli_pretty_json(a.data != NULL ? a.data : "", a.len, err, sizeof(err));
  else
    text = cli_format(args->view, a.data != NULL ? a.data : "", a.len, err,
                      sizeof(err));
  if (text == NULL) {
    fprintf(stderr, "runfleet: %s%s: %s\n", args->url,
            cli_view_path(args->view), err);
    goto out;
  }
  if (put_table(text, !args->json && isatty(STDOUT_FILENO)) != 0) {
    fprintf(stderr, "runfleet: cannot write the answer\n");
    goto out;
  }
  if (args->view == CLI_STATUS && !args->json &&
      status_recovery(args, token) != 0)
    goto out;
  ret = 0;

out:
  free(text);
  free(a.data);
  secret_free_str(token);
  return ret;
}

static volatile sig_atomic_t watch_stop;

static void watch_signal(int sig)
{
  (void)sig;
  watch_stop = 1;
}

/* Waits up to ms for a key on the terminal; 1 when it was q (or Q). */
static int watch_key(int tty, int ms)
{
  struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
  char c;

  if (!tty) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL); /* a signal ends it early */
    return 0;
  }
  if (poll(&p, 1, ms) <= 0)
    return 0;
  if (read(STDIN_FILENO, &c, 1) != 1)
    return 1; /* the terminal went away */
  return c == 'q' || c == 'Q';
}

/* `status --watch`: redraws status in place, like top, until q or Ctrl-C;
 * the terminal is put back as it was. An answer that fails is shown and
 * tried again at the next redraw. */
static int watch(const struct cli_args *args)
{
  struct sigaction sa;
  struct termios saved, raw;
  int tty_in = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
  int tty_out = isatty(STDOUT_FILENO);
  char when[32];

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = watch_signal; /* no SA_RESTART: poll returns at once */
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
    return 1;
  if (tty_in) {
    raw = saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0)
      tty_in = 0;
  }
  if (tty_out)
    fputs("\033[?1049h\033[?25l", stdout); /* own screen, no cursor */
  while (!watch_stop) {
    time_t now = time(NULL);
    struct tm tm;

    if (tty_out)
      fputs("\033[H\033[2J", stdout);
    localtime_r(&now, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    printf("runfleet status, every %d s; q or Ctrl-C quits. %s\n\n",
           CLI_WATCH_MS / 1000, when);
    (void)run(args); /* errors are on stderr; try again next time */
    fflush(stdout);
    if (watch_key(tty_in, CLI_WATCH_MS))
      break;
  }
  if (tty_out)
    fputs("\033[?25h\033[?1049l", stdout);
  if (tty_in)
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  fflush(stdout);
  return 0;
}

/* `runfleet dev ...`: --url and --token-file as for the other commands,
 * anywhere among its words; the rest goes to cli_dev_run. */
static int dev_main(int argc, char **argv)
{
  struct cli_args args;
  const char *env = getenv("RUNFLEET_URL");
  char **rest = calloc((size_t)argc + 1, sizeof(char *));
  char *token = NULL;
  size_t len;
  int i, n = 0, ret = 2;

  if (rest == NULL)
    return 1;
  memset(&args, 0, sizeof(args));
  snprintf(args.url, sizeof(args.url), "%s",
           env != NULL && env[0] != '\0' ? env : CLI_DEFAULT_URL);
  for (i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      while (i < argc)
        rest[n++] = argv[i++];
      break;
    }
    if ((strcmp(argv[i], "--url") == 0 ||
         strcmp(argv[i], "--token-file") == 0) &&
        i + 1 < argc) {
      snprintf(argv[i][2] == 'u' ? args.url : args.token_file, sizeof(args.url),
               "%s", argv[i + 1]);
      i++;
      continue;
    }
    rest[n++] = argv[i];
  }
  len = strlen(args.url);
  while (len > 0 && args.url[len - 1] == '/')
    args.url[--len] = '\0';
  if (token_get(&args, &token) != 0) {
    ret = 1;
    goto out;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    ret = 1;
    goto out;
  }
  ret = cli_dev_run(n, rest, args.url, token);
  curl_global_cleanup();
out:
  secret_free_str(token);
  free(rest);
  return ret;
}

int main(int argc, char **argv)
{
  struct cli_args args;
  char err[256];
  int ret;

  if (argc >= 2 && strcmp(argv[1], "dev") == 0)
    return dev_main(argc - 2, argv + 2);

  if (cli_parse_args(argc, argv, getenv("RUNFLEET_URL"), &args, err,
                     sizeof(err)) != 0) {
    fprintf(stderr, "runfleet: %s\n%s%s", err, usage, cli_dev_usage);
    return 2;
  }
  if (args.help) {
    fputs(usage, stdout);
    fputs(cli_dev_usage, stdout);
    return 0;
  }
  if (args.version) {
    printf("runfleet %s\n", RUNFLEET_VERSION);
    return 0;
  }
  if (args.view == CLI_TOKEN_HASH)
    return token_hash();
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "runfleet: cannot start libcurl\n");
    return 1;
  }
  ret = args.watch ? watch(&args) : run(&args);
  curl_global_cleanup();
  return ret;
}
