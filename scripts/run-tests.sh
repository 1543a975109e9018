#!/usr/bin/env bash
# The whole test suite, slow end-to-end tests included (they start real vLLM CPU engines).
# Exit code 5 (no tests collected) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
VENV=${DEEPFLEET_VENV:-.venv}
"$VENV/bin/python" -m pytest -p no:cacheprovider -ra --durations=15 "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-tests: pytest collected no tests; failing" >&2
  exit 1
fi
exit $rc
