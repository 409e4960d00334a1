#!/usr/bin/env bash
# Stop the daemons started by scripts/slurm/start.sh STATE_DIR (by the pids in its pid files).
#
# Usage: scripts/slurm/stop.sh STATE_DIR
set -uo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 STATE_DIR" >&2; exit 1; }
RUN=$1/run
status=0
for daemon in slurmd slurmctld munged; do
  file=$RUN/$daemon.pid
  [[ -s $file ]] || continue
  pid=$(<"$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: $daemon ($pid) still running after 10 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || status=1
    fi
  fi
  rm -f "$file"
done
exit $status
