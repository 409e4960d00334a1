#!/usr/bin/env bash
# Train the built-in model (the exact run recorded in MODEL_CARD.md).
#   scripts/train_builtin.sh RUN_DIR
# Needs ../shared/data (or $BMEX_SHARED_DIR/data). Learns BME-X's own mapping from the real pair
# alone: the pair's preprocessed input -> the BME-X output as it is, from the identity start,
# with a slab of the pair held out for validation. Resumes from RUN_DIR/last.pt when it exists;
# the preprocessed volumes are cached as .npy files in RUN_DIR/cache. The validation's best step
# (best.pt, the weight average) becomes the package's model file.
set -euo pipefail
run=${1:?usage: train_builtin.sh RUN_DIR}
shared=$(cd "${BMEX_SHARED_DIR:-$(dirname "$0")/../../shared}" && pwd)
mkdir -p "$run"
pair="$run/pair.tsv"
printf 'image\ttemplate\ttarget\tweight\n%s\tTemplate-Month24-T1w\t%s\t27\n' \
  "$shared/data/bmex_pair/test_24m_half-train_T1w.nii.gz" \
  "$shared/data/bmex_pair/test_24m_half-train_desc-bmex_T1w.nii.gz" > "$pair"
export NIPYPE_NO_ET=1 OMP_NUM_THREADS=1
python -m bmex_wf.training.cli "$run" \
  --images-list "$pair" --val-slab 2:0.38:0.65 --cache-dir "$run/cache" \
  --width 8 --crop 32 --batch 4 --seed 9 --steps 3000 --lr 1e-3 --seg-weight 0.5 \
  --p-synthetic-pair 0 --ema-decay 0.997 --autocast bf16 \
  --val-every 200 --val-crop 32 --val-per-kind 2 --num-threads 2 --workers 1 \
  --checkpoint-minutes 3 --no-progress
python -c "from bmex_wf.training.loop import export_model; \
  export_model('$run/best.pt', 'bmex_wf/data/bmex-builtin-enhance.pt')"
