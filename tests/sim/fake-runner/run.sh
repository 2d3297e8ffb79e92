#!/usr/bin/env bash
# Stand-in for actions/runner's run.sh, started the same way:
#   run.sh --jitconfig <encoded_jit_config>
# It takes one job from the GitHub simulator and exits (see docs/SIMULATOR.md).
# exec, so that signals sent to this pid reach the runner itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${RUNFLEET_FAKE_RUNNER_PYTHON:-python3}" -u "$here/fake_runner.py" "$@"
