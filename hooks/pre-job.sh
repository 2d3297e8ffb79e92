#!/usr/bin/env bash
# ACTIONS_RUNNER_HOOK_JOB_STARTED: the runner only runs .sh/.ps1 files, so
# this shim hands over to runfleet-hook ($RUNFLEET_HOOK_BIN, else the one
# beside this script, else PATH), which enforces its own deadline.
d="$(dirname "${BASH_SOURCE[0]}")"; b="${RUNFLEET_HOOK_BIN:-$d/runfleet-hook}"; [ -x "$b" ] || b=runfleet-hook; exec "$b" pre-job
