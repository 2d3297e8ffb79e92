/* proc: /proc/<pid>/ files and one variable of a process's environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "proc.h"

static char buf[65537];

static void test_environ_value_of_a_child(void **state)
{
  int ready[2];
  char c;
  pid_t pid;

  (void)state;
  assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char *const argv[] = {"sleep", "30", NULL};
    char *const envp[] = {"RUNFLEET_WORK_DIRX=no", "RUNFLEET_WORK_DIR=/w/r-1",
                          "RUNFLEET_WORK_DIR=/second", "EMPTY=", NULL};
    /* The write end closes at exec, which tells the parent it happened. */
    close(ready[0]);
    execve("/bin/sleep", argv, envp);
    _exit(127);
  }
  close(ready[1]);
  assert_int_equal(read(ready[0], &c, 1), 0);
  close(ready[0]);
  assert_string_equal(
      proc_environ_value(pid, "RUNFLEET_WORK_DIR", buf, sizeof(buf) - 1),
      "/w/r-1");
  assert_string_equal(proc_environ_value(pid, "EMPTY", buf, sizeof(buf) - 1),
                      "");
  assert_null(proc_environ_value(pid, "RUNFLEET", buf, sizeof(buf) - 1));
  assert_null(proc_environ_value(pid, "PATH", buf, sizeof(buf) - 1));
  /* Cut short, the entry is not found rather than read past the data. */
  assert_null(proc_environ_value(pid, "RUNFLEET_WORK_DIR", buf, 10));
  assert_true(proc_read(pid, "stat", buf, sizeof(buf) - 1) > 0);
  kill(pid, SIGKILL);
  assert_int_equal(waitpid(pid, NULL, 0), pid);
  assert_null(
      proc_environ_value(pid, "RUNFLEET_WORK_DIR", buf, sizeof(buf) - 1));
  assert_int_equal(proc_read(pid, "stat", buf, sizeof(buf) - 1), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_environ_value_of_a_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
