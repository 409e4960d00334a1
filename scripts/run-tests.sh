#!/usr/bin/env bash
# The project's test command (README): runs pytest and treats "no tests ran" as a failure.
set -uo pipefail
export NIPYPE_NO_ET=1
python -m pytest -n 2 --dist loadfile "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $status
