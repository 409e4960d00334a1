#!/usr/bin/env bash
# The project's test command (README): runs pytest and treats "no tests ran" as a failure.
# The SLURMGraph-vs-MultiProc comparison takes ~25 minutes on 2 cores, so it is left to
# `python -m pytest -m slurm tests/test_slurm.py`; everything else runs here.
set -uo pipefail
export NIPYPE_NO_ET=1
python -m pytest -n 2 --dist loadfile --durations=15 \
  --deselect tests/test_slurm.py::test_slurmgraph_matches_multiproc "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $status
