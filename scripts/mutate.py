#!/usr/bin/env python3
"""Hand-picked mutations of the product code, each with the tests that must
kill it (`just mutate`). Not part of the test command: it builds the tree
once per mutation.

Each mutation replaces one exact snippet of one file (it must occur exactly
once, so a mutation whose code has moved fails loudly instead of testing
nothing) in a copy of the working tree under a temporary directory, builds
the ASan+UBSan configuration there, and runs the named tests. A mutation is
killed when one of its tests fails. The copy is rebuilt incrementally, so
only the first mutation pays for a full build.

  scripts/mutate.py            run every mutation, print the table
  scripts/mutate.py -k dedupe  only mutations whose id contains "dedupe"
  scripts/mutate.py --list     list them
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mutation:
    id: str
    file: str
    old: str
    new: str
    unit: list[str]  # cmocka programs (ctest -R, anchored)
    system: list[str]  # pytest node ids or -k expressions
    why: str


MUTATIONS = [
    Mutation(
        "intake-dedupe-forget",
        "manager/src/intake.c",
        "  size_t h = id_hash(in->ring[idx]), n, pos;\n\n  for (n = 0; n < size; n++) {",
        "  size_t h = id_hash(in->ring[idx]), n, pos;\n\n  return;\n  for (n = 0; n < size; n++) {",
        ["test_intake"],
        [],
        "evicted delivery ids stay in the index: it fills and dedupe_add spins",
    ),
    Mutation(
        "sched-name-any-rf",
        "manager/src/scheduler.c",
        "  /* \"rf-\", a pool of at least one character, then that shape. */\n",
        "  return strncmp(name, \"rf-\", 3) == 0;\n",
        ["test_scheduler"],
        ["tests/test_runfleetd.py::test_restart_after_crash_reaps_runners_and_registrations"],
        "any rf-* name counts as ours: another fleet's runners are deleted",
    ),
    Mutation(
        "ctl-deregister-leftover-noop",
        "manager/src/runner_ctl.c",
        "  if (gh_id == 0)\n    return;\n  copy = strdup(name);",
        "  if (gh_id == 0 || gh_id != 0)\n    return;\n  copy = strdup(name);",
        ["test_runner_ctl"],
        ["tests/test_runfleetd.py::test_runners_that_fail_before_a_job_leave_no_registration"],
        "a runner that failed before a job leaves its registration at GitHub",
    ),
    Mutation(
        "sched-max-runners-without-stopping",
        "manager/src/scheduler.c",
        "  return st->starting + st->idle + st->busy + st->stopping;",
        "  return st->starting + st->idle + st->busy;",
        ["test_scheduler"],
        [],
        "stopping runners are left out of max_runners",
    ),
    Mutation(
        "sched-round-robin-ignores-running",
        "manager/src/sched_queue.c",
        "  g->running += (uint32_t)delta;\n  for (s = g->subs; s != NULL; s = s->next)\n"
        "    sub_rank_add(q, s, (uint32_t)delta);\n",
        "  g->running += 0 * (uint32_t)delta;\n  for (s = g->subs; s != NULL; s = s->next)\n"
        "    sub_rank_add(q, s, 0 * (uint32_t)delta);\n",
        ["test_scheduler"],
        [],
        "a repository's turn ignores its running jobs",
    ),
    Mutation(
        "sched-fifo-at-same-turn-ignored",
        "manager/src/sched_queue.c",
        "    return a->priority > b->priority;\n  if (a->rank != b->rank)\n"
        "    return a->rank < b->rank;\n  return a->seq < b->seq;",
        "    return a->priority > b->priority;\n  if (a->rank != b->rank)\n"
        "    return a->rank < b->rank;\n  return 0;",
        ["test_scheduler"],
        [],
        "jobs of the same turn no longer start in the order they queued",
    ),
    Mutation(
        "sched-later-jobs-keep-first-turn",
        "manager/src/sched_queue.c",
        "    n.rank = node_rank(next->sub->group, next);",
        "    n.rank = c->rank;",
        ["test_scheduler"],
        [],
        "a repository's later queued jobs take the turn of its first",
    ),
    Mutation(
        "sched-block-key-ignored",
        "manager/src/scheduler.c",
        "    unsigned k = s->ops.block_key != NULL ? s->ops.block_key(s->ctx, pool)",
        "    unsigned k = 0 ? s->ops.block_key(s->ctx, pool)",
        ["test_scheduler"],
        [],
        "the owner's capacity sources are ignored: a blocked GPU pool holds back the others",
    ),
    Mutation(
        "sched-no-retry-after-no-capacity",
        "manager/src/scheduler.c",
        "      blocked[key] = 1;\n      s->retry = 1;\n",
        "      blocked[key] = 1;\n",
        ["test_scheduler"],
        [],
        "a pass refused capacity is not tried again until something else changes",
    ),
    Mutation(
        "github-retry-after-no-hold",
        "manager/src/github.c",
        "      gh->hold_mut_until = uv_now(gh->loop) + (uint64_t)retry_after * 1000;\n",
        "",
        ["test_github"],
        [],
        "Retry-After holds only the refused call, not the other mutating ones",
    ),
    Mutation(
        "http-pipelining-unbounded",
        "manager/src/http_server.c",
        "    if (c->writes_pending >= HTTP_MAX_PENDING_WRITES) {\n      conn_stop_reading(c);\n      return;\n    }\n",
        "",
        ["test_http_server"],
        [],
        "no limit on pipelined requests dispatched before the client reads",
    ),
    Mutation(
        "config-pool-name-63",
        "manager/src/config.c",
        "#define CFG_MAX_POOL_NAME 32",
        "#define CFG_MAX_POOL_NAME 63",
        ["test_config"],
        [],
        "pool names too long for GitHub's 64-character runner names",
    ),
    Mutation(
        "webhook-sig-first-byte",
        "manager/src/webhook_sig.c",
        "  rc = CRYPTO_memcmp(want, got, SIG_DIGEST_LEN) == 0 ? 0 : -1;",
        "  rc = CRYPTO_memcmp(want, got, 1) == 0 ? 0 : -1;",
        ["test_webhook_sig"],
        ["tests/test_runfleetd.py::test_bad_signatures_get_401_and_change_nothing"],
        "only the first byte of the signature is compared",
    ),
    Mutation(
        "log-newline-unescaped",
        "manager/src/log.c",
        "    } else if (*u == '\\n' || *u == '\\r' || *u == '\\t') {",
        "    } else if (*u == '\\r' || *u == '\\t') {",
        ["test_log"],
        [],
        "a newline in a value is written as it is: it forges a log line",
    ),
    Mutation(
        "github-jit-retried-after-5xx",
        "manager/src/github.c",
        "    if (call->op == GH_OP_JIT) {\n      /* GitHub may have registered",
        "    if (0) {\n      /* GitHub may have registered",
        ["test_github"],
        ["tests/test_runfleetd.py::test_lost_jit_response_leaks_nothing_and_the_job_runs_once"],
        "a JIT request answered 5xx is sent again: it collides on the name",
    ),
    Mutation(
        "ctl-jit-unknown-as-failure",
        "manager/src/runner_ctl.c",
        "  if (status == GH_MAYBE_APPLIED || http_status == 409) {",
        "  if (0) {",
        ["test_runner_ctl"],
        ["tests/test_runfleetd.py::test_lost_jit_response_leaks_nothing_and_the_job_runs_once"],
        "a lost JIT answer is booked as a failure and its registration leaks",
    ),
    Mutation(
        "gh-recovery-ignores-waiting-jit",
        "manager/src/github.c",
        "  if (g->runner_waiting > 0 || g->in_flight >= GH_RECOVERY_CONCURRENCY)",
        "  if (g->in_flight >= GH_RECOVERY_CONCURRENCY)",
        ["test_github"],
        [],
        "a recovery call goes while a JIT request waits for its retry",
    ),
    Mutation(
        "recovery-redeliver-succeeded-guid",
        "manager/src/recovery.c",
        "      any_ok |= ok_code(by_guid[k]->status_code);",
        "      any_ok |= ok_code(by_guid[k]->status_code) && k == n;",
        ["test_recovery"],
        ["tests/test_recovery.py::test_webhooks_missed_while_down_are_redelivered_and_run"],
        "a delivery whose guid later succeeded is redelivered",
    ),
    Mutation(
        "recovery-scan-readds-known-jobs",
        "manager/src/recovery.c",
        "    if (strcmp(jobs[i].status, \"queued\") == 0 &&\n"
        "        sched_job_find(rec->sched, jobs[i].id) == NULL)",
        "    if (strcmp(jobs[i].status, \"queued\") == 0)",
        [],
        ["tests/test_recovery.py::test_queued_job_without_any_webhook_is_found_by_the_scan"],
        "the scan hands jobs the scheduler knows to intake again",
    ),
]


def run(cmd: list[str], cwd: Path, env: dict | None = None, log: Path | None = None) -> int:
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def copy_tree(dst: Path) -> None:
    """The tracked and untracked (not ignored) files of the working tree,
    with node_modules and .venv linked, not copied."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        src = ROOT / f.decode()
        if not src.is_file():
            continue
        out = dst / f.decode()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)
    for link in ("node_modules", ".venv"):
        if (ROOT / link).exists():
            (dst / link).symlink_to(ROOT / link)


def build(tree: Path, log: Path) -> bool:
    b = tree / "build" / "asan"
    if run(["cmake", "-S", ".", "-B", str(b), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Debug",
            "-DRUNFLEET_SANITIZE=ON", "-DRUNFLEET_TESTS=ON"], tree, log=log) != 0:
        return False
    return run(["cmake", "--build", str(b)], tree, log=log) == 0


def tests_fail(m: Mutation, tree: Path, log: Path) -> list[str]:
    """The tests of m that fail on the mutated tree."""
    failed = []
    env = dict(os.environ, RUNFLEET_BIN_DIR=str(tree / "build" / "asan" / "bin"),
               CMOCKA_MESSAGE_OUTPUT="STDOUT")
    for prog in m.unit:
        # A hang is a kill too: ctest stops it after 120 s.
        rc = run(["ctest", "--test-dir", str(tree / "build" / "asan"), "--output-on-failure",
                  "--timeout", "120", "-R", f"^{prog}$"], tree, env, log)
        if rc != 0:
            failed.append(prog)
    for node in m.system:
        rc = run([str(tree / ".venv" / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q",
                  node], tree, env, log)
        if rc != 0:
            failed.append(node.rsplit("::", 1)[-1])
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", default="", help="only mutations whose id contains this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the copy and its logs")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if args.k in m.id]
    if args.list:
        for m in chosen:
            print(f"{m.id:40} {m.file:28} {m.why}")
        return 0
    for m in chosen:
        text = (ROOT / m.file).read_text()
        if text.count(m.old) != 1:
            print(f"{m.id}: the snippet occurs {text.count(m.old)} times in {m.file}; update the mutation",
                  file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="runfleet-mutate-"))
    tree = work / "tree"
    copy_tree(tree)
    rows, survived = [], 0
    try:
        base_log = work / "baseline.log"
        if not build(tree, base_log):
            print(f"the unmutated tree does not build; see {base_log}", file=sys.stderr)
            return 2
        for m in chosen:
            log = work / f"{m.id}.log"
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            t0 = time.monotonic()
            try:
                if not build(tree, log):
                    verdict, failed = "did not build", []
                else:
                    failed = tests_fail(m, tree, log)
                    verdict = "killed" if failed else "SURVIVED"
            finally:
                path.write_text(original)
            survived += verdict == "SURVIVED"
            rows.append((m, verdict, failed, time.monotonic() - t0))
            print(f"{m.id}: {verdict} ({', '.join(failed) or 'no test failed'})", flush=True)
        # Each mutation's tests must pass on the real code, or a kill means nothing.
        if not build(tree, base_log):
            return 2
        broken = sorted({f for m, _, _, _ in rows for f in tests_fail(m, tree, base_log)})
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| mutation | file | what it breaks | killed by | result |")
    print("| --- | --- | --- | --- | --- |")
    for m, verdict, failed, secs in rows:
        print(f"| `{m.id}` | `{m.file}` | {m.why} | {', '.join(f'`{f}`' for f in failed) or '-'} "
              f"| {verdict} ({secs:.0f} s) |")
    print(f"\n{len(rows) - survived} of {len(rows)} mutations killed")
    if broken:
        print(f"tests that fail on the unmutated tree: {broken}", file=sys.stderr)
        return 1
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
