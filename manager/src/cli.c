/* runfleet: the command-line client of runfleetd's JSON API. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "--version") == 0) {
    printf("runfleet %s\n", RUNFLEET_VERSION);
    return 0;
  }
  fprintf(stderr, "usage: runfleet status|pools|jobs|runners [--json] "
                  "[--url URL]\n");
  return 2;
}
