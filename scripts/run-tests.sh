#!/usr/bin/env bash
# The project's test command (README): runs pytest and treats "no tests ran" as a failure.
# Two long end-to-end checks run on demand, not here: the SLURMGraph-vs-MultiProc comparison
# (~25 minutes on 2 cores: `python -m pytest -m slurm tests/test_slurm.py`) and the full
# `bmex-wf demo` run (`python -m pytest tests/test_demo.py`); everything else runs here.
set -uo pipefail
export NIPYPE_NO_ET=1
python -m pytest -n 2 --dist loadfile --durations=15 \
  --deselect tests/test_slurm.py::test_slurmgraph_matches_multiproc \
  --deselect tests/test_demo.py::test_demo_end_to_end "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $status
