#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster (munged, slurmctld, slurmd) for tests and demos.
#
# Usage: scripts/slurm/start.sh STATE_DIR [TIMEOUT_S]
#
# Everything lives under STATE_DIR (munge key and socket, slurm.conf, state, spool, logs, pid
# files); nothing under /etc is touched. Needs root (SlurmUser=root) and Debian's `slurm-wlm`
# and `munge`. Waits until `sinfo` shows the node idle (TIMEOUT_S, default 60), then prints
#     export SLURM_CONF=STATE_DIR/slurm.conf
# on stdout for `eval`. Stop with scripts/slurm/stop.sh STATE_DIR.
# Ports: SLURMCTLD_PORT (default 6817) and SLURMD_PORT (default 6818).
set -euo pipefail

die() { echo "start.sh: $*" >&2; exit 1; }
[[ $# -ge 1 ]] || die "usage: $0 STATE_DIR [TIMEOUT_S]"
STATE=$(mkdir -p "$1" && cd "$1" && pwd)
TIMEOUT=${2:-60}
for exe in munged slurmctld slurmd sinfo; do
  command -v "$exe" >/dev/null || die "$exe not found (apt-get install -y slurm-wlm munge)"
done
[[ $(id -u) -eq 0 ]] || die "must run as root (the test cluster uses SlurmUser=root)"

mkdir -p "$STATE"/{munge,ctld,spool,log,run}
chmod 0700 "$STATE/munge"
# munged refuses group/world-writable parents such as /tmp: --force accepts them.
if [[ ! -s $STATE/munge/munge.key ]]; then
  (umask 077 && dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none)
fi
SOCKET=$STATE/munge/munge.socket
munged --force --key-file="$STATE/munge/munge.key" --socket="$SOCKET" \
  --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
  --seed-file="$STATE/munge/munged.seed" || die "munged did not start (see $STATE/log/munged.log)"

HOST=$(hostname -s)
# The node as slurmd sees it: CPUs, sockets, cores, threads, RealMemory.
NODE=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST/")
cat > "$STATE/slurm.conf" <<CONF
ClusterName=bmexci
SlurmctldHost=$HOST
SlurmUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$STATE/slurm.conf

slurmctld -c -f "$SLURM_CONF" || die "slurmctld did not start (see $STATE/log/slurmctld.log)"
slurmd -f "$SLURM_CONF" || die "slurmd did not start (see $STATE/log/slurmd.log)"

deadline=$((SECONDS + TIMEOUT))
until [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; do
  if (( SECONDS >= deadline )); then
    echo "start.sh: the node is not idle after ${TIMEOUT}s: $(sinfo -h -N -o '%t %E' 2>&1)" >&2
    tail -n 5 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "export SLURM_CONF=$SLURM_CONF"
