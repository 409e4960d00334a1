#!/usr/bin/env bash
# Train the built-in model (the exact run recorded in MODEL_CARD.md).
#   scripts/train_builtin.sh RUN_DIR [extra bmex-wf train options]
# Needs ../shared/data (or $BMEX_SHARED_DIR/data). Step 1 caches the preprocessed volumes
# (.npy); step 2 trains from the cache and resumes from RUN_DIR/last.pt when it exists.
set -euo pipefail
run=${1:?usage: train_builtin.sh RUN_DIR [options]}; shift
shared=$(cd "${BMEX_SHARED_DIR:-$(dirname "$0")/../../shared}" && pwd)
mkdir -p "$run"
pair="$run/pair.tsv"
printf 'image\ttemplate\ttarget\tweight\n%s\tTemplate-Month24-T1w\t%s\t27\n' \
  "$shared/data/bmex_pair/test_24m_half-train_T1w.nii.gz" \
  "$shared/data/bmex_pair/test_24m_half-train_desc-bmex_T1w.nii.gz" > "$pair"
export NIPYPE_NO_ET=1 OMP_NUM_THREADS=1
python -m bmex_wf.training.cli "$run" \
  --bids "$shared/data/test_BIDS" --templates-dir "$shared/data/templates" --images-list "$pair" \
  --val-subject 0002 --val-subject 0009 --val-slab 2:0.38:0.65 --cache-dir "$run/cache" \
  --width 8 --crop 32 --batch 4 --seed 0 --steps 6000 --lr 5e-4 --seg-weight 0.5 \
  --max-kinds 3 --p-clean 0.1 --p-synthetic-pair 0.5 --ema-decay 0.997 --autocast bf16 \
  --val-every 250 --val-crop 32 --val-per-kind 1 --num-threads 2 --workers 1 \
  --checkpoint-minutes 5 --max-minutes 105 --no-progress "$@"
