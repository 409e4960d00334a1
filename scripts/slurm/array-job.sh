#!/usr/bin/env bash
# bmex-wf on SLURM, participant level as a job array: one subject per array task, every task
# writing into the same derivatives folder.
#
# Usage: scripts/slurm/array-job.sh BIDS_DIR OUTPUT_DIR [bmex-wf participant options...]
#
# Environment (all optional):
#   SUBJECTS      subject labels, space-separated (default: every sub-* folder of BIDS_DIR)
#   SBATCH_ARGS   sbatch options of each task, e.g. "--partition=normal --account=mylab
#                 --time=04:00:00 --cpus-per-task=4 --mem=16G"
#   MAX_PARALLEL  array tasks running at once (default 10)
#   WORK_ROOT     parent of the per-subject work directories (default OUTPUT_DIR/../work)
#   BMEX_WF       the command (default bmex-wf; e.g. "apptainer run bmex-wf.sif")
#   GROUP_LEVEL   1 (default): also submit the group level, run after every task has ended
#
# Each task runs `bmex-wf BIDS_DIR OUTPUT_DIR participant --participant-label <its subject>`
# with its own work directory (WORK_ROOT/sub-<label>), --nprocs and --mem-gb from its
# allocation. Outputs do not race: every image's files are distinct and written atomically;
# dataset_description.json, .bidsignore, dseg.tsv and logs/CITATION.md are created once
# (bmex_wf.bids.derivatives.write_once: complete file hard-linked into place, first one wins);
# run records are named by run id (logs/config-<uuid>.toml, logs/summary-<uuid>.tsv).
# Prints the array job id (and the group-level job id). Task logs: OUTPUT_DIR/logs/slurm/.
set -euo pipefail

if [[ ${1:-} == --task ]]; then  # inside one array task
  shift
  list=$1 bids=$2 out=$3 work_root=$4
  shift 4
  mapfile -t subjects < "$list"
  subject=${subjects[$SLURM_ARRAY_TASK_ID]}
  extra=()
  [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && extra+=(--nprocs "$SLURM_CPUS_PER_TASK")
  [[ -n ${SLURM_MEM_PER_NODE:-} ]] && extra+=(--mem-gb "$((SLURM_MEM_PER_NODE / 1024))")
  echo "array task $SLURM_ARRAY_TASK_ID: sub-$subject on $(hostname)"
  # shellcheck disable=SC2086 # BMEX_WF may be a command with arguments
  exec ${BMEX_WF:-bmex-wf} "$bids" "$out" participant --participant-label "$subject" \
    -w "$work_root/sub-$subject" "${extra[@]}" "$@"
fi

[[ $# -ge 2 ]] || { sed -n '2,30p' "$0" >&2; exit 1; }
bids=$(realpath "$1")
out=$(realpath -m "$2")
shift 2
[[ -d $bids ]] || { echo "array-job.sh: $bids is not a directory" >&2; exit 1; }
work_root=$(realpath -m "${WORK_ROOT:-$out/../work}")
if [[ -n ${SUBJECTS:-} ]]; then
  read -ra subjects <<< "${SUBJECTS//sub-/}"
else
  subjects=()
  for dir in "$bids"/sub-*/; do
    [[ -d $dir ]] && subjects+=("$(basename "$dir" | sed 's/^sub-//')")
  done
fi
(( ${#subjects[@]} )) || { echo "array-job.sh: no subject found in $bids" >&2; exit 1; }
mkdir -p "$out/logs/slurm" "$work_root"
list=$out/logs/slurm/subjects-$(date +%Y%m%d-%H%M%S)-$$.txt
printf '%s\n' "${subjects[@]}" > "$list"

# shellcheck disable=SC2086 # SBATCH_ARGS holds several options
array=$(sbatch --parsable --job-name=bmex-wf --array="0-$((${#subjects[@]} - 1))%${MAX_PARALLEL:-10}" \
  --output="$out/logs/slurm/%A_%a.out" ${SBATCH_ARGS:-} \
  "$(realpath "$0")" --task "$list" "$bids" "$out" "$work_root" "$@")
array=${array%%;*}
echo "participant level: array job $array (${#subjects[@]} subjects, list in $list)"
if [[ ${GROUP_LEVEL:-1} == 1 ]]; then
  # shellcheck disable=SC2086
  group=$(sbatch --parsable --job-name=bmex-wf-group --dependency="afterany:$array" \
    --output="$out/logs/slurm/%j-group.out" ${SBATCH_ARGS:-} \
    --wrap "${BMEX_WF:-bmex-wf} '$bids' '$out' group")
  echo "group level: job ${group%%;*} (after array job $array)"
fi
