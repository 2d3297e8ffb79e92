/* runfleetd: the fleet manager daemon. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "--version") == 0) {
    printf("runfleetd %s\n", RUNFLEET_VERSION);
    return 0;
  }
  fprintf(stderr, "usage: runfleetd --config FILE | --check-config FILE\n");
  return 2;
}
