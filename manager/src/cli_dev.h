#ifndef RUNFLEET_CLI_DEV_H
#define RUNFLEET_CLI_DEV_H

/* `runfleet dev ...`: the dev server commands of the CLI (docs/CLI.md):
 * reserve, list, show, cancel, extend, add-key, ssh-config, ssh. They call
 * /api/v1/devservers at url with token (a devservers.users token, or an
 * admin one). */

/* Runs the command in argv[0..argc) (after "dev"). Returns the exit
 * status: 0, 1 (the daemon refused or cannot be reached), 2 (usage). ssh
 * does not return when it could start ssh. */
int cli_dev_run(int argc, char **argv, const char *url, const char *token);

/* The usage text of the dev commands. */
extern const char cli_dev_usage[];

#endif
