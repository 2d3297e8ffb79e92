#!/usr/bin/env bash
# ACTIONS_RUNNER_HOOK_JOB_COMPLETED: hands over to runfleet-hook, found as
# in pre-job.sh.
d="$(dirname "${BASH_SOURCE[0]}")"; b="${RUNFLEET_HOOK_BIN:-$d/runfleet-hook}"; [ -x "$b" ] || b=runfleet-hook; exec "$b" post-job
