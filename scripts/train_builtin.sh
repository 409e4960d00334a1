#!/usr/bin/env bash
# Train the built-in model (the exact runs recorded in MODEL_CARD.md).
#   scripts/train_builtin.sh RUN_DIR
# Needs ../shared/data (or $BMEX_SHARED_DIR/data). Stage 1 trains on the real BME-X pair (three
# quarters of the crops, half of them its output degraded synthetically), the test_BIDS scans
# and the age templates; stage 2 goes on from stage 1's last checkpoint on the pair alone.
# Each stage resumes from its folder's last.pt when it exists; the preprocessed volumes are
# cached as .npy files in RUN_DIR/cache.
set -euo pipefail
run=${1:?usage: train_builtin.sh RUN_DIR}
shared=$(cd "${BMEX_SHARED_DIR:-$(dirname "$0")/../../shared}" && pwd)
mkdir -p "$run"
pair="$run/pair.tsv"
printf 'image\ttemplate\ttarget\tweight\n%s\tTemplate-Month24-T1w\t%s\t27\n' \
  "$shared/data/bmex_pair/test_24m_half-train_T1w.nii.gz" \
  "$shared/data/bmex_pair/test_24m_half-train_desc-bmex_T1w.nii.gz" > "$pair"
export NIPYPE_NO_ET=1 OMP_NUM_THREADS=1
python -m bmex_wf.training.cli "$run/stage1" \
  --bids "$shared/data/test_BIDS" --templates-dir "$shared/data/templates" --images-list "$pair" \
  --val-subject 0002 --val-subject 0009 --val-slab 2:0.38:0.65 --cache-dir "$run/cache" \
  --width 8 --crop 32 --batch 4 --seed 0 --steps 6000 --lr 5e-4 --seg-weight 0.5 \
  --max-kinds 3 --p-clean 0.1 --p-synthetic-pair 0.5 --ema-decay 0.997 --autocast bf16 \
  --val-every 250 --val-crop 32 --val-per-kind 1 --num-threads 2 --workers 1 \
  --checkpoint-minutes 5 --stop-step 757 --no-progress
mkdir -p "$run/stage2"
[[ -f "$run/stage2/last.pt" ]] || cp "$run/stage1/last.pt" "$run/stage2/last.pt"
python -m bmex_wf.training.cli "$run/stage2" \
  --images-list "$pair" --val-slab 2:0.38:0.65 --cache-dir "$run/cache" \
  --width 8 --crop 32 --batch 4 --seed 1 --steps 6000 --lr 5e-4 --seg-weight 0.5 \
  --max-kinds 3 --p-clean 0.1 --p-synthetic-pair 0.2 --ema-decay 0.997 --autocast bf16 \
  --val-every 100 --val-crop 32 --val-per-kind 2 --num-threads 2 --workers 1 \
  --checkpoint-minutes 3 --stop-step 1600 --no-progress
python -c "from bmex_wf.training.loop import export_model; \
  export_model('$run/stage2/last.pt', 'bmex_wf/data/bmex-builtin-enhance.pt')"
