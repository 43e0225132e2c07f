#!/usr/bin/env bash
# Digits: does the EBMM store what it writes, or complete queries from its slow weights? Three EBMMs of one
# architecture (hidden 64, hop-dim 64: 31 fast units, 2,015 floats; no gradient penalty), trained on one core each,
# then evaluated beside Memory Networks with the unstored-query control (`unstored_mean` in results.csv).
#   - digits only (90 min)
#   - half the memories random binary images, --random-memories 0.5 (90 min)
#   - random binary images only, --random-memories 1 (20 min)
# Usage: bash results/recall_digits_random/train.sh [RUN_DIR] [OUT_DIR]   (about 2 h on 2 cores)
set -euo pipefail
runs=${1:-runs/recall_digits_random}
out=${2:-results/recall_digits_random}
export OMP_NUM_THREADS=1
ebmm=(python -m ebmm_rl.recall train --dataset digits --memory-sizes 2064 --hidden 64 --hop-dim 64
      --no-gradient-penalty --steps 1000000 --no-progress)
"${ebmm[@]}" --random-memories 0.5 --time-limit 5400 --run-dir "$runs/random_half" &
( python -m ebmm_rl.recall train --dataset digits --model memnet --memory-sizes 1024 2048 --steps 32423 \
      --run-dir "$runs/memnet" --no-progress
  "${ebmm[@]}" --random-memories 1 --time-limit 1200 --run-dir "$runs/random_only"
  "${ebmm[@]}" --time-limit 5400 --run-dir "$runs/digits_only" )
wait
python -m ebmm_rl.recall evaluate --dataset digits --checkpoints "$runs"/digits_only/* "$runs"/random_half/* \
    "$runs"/random_only/* "$runs"/memnet/* --baselines modern_hopfield --batches 200 --out "$out"
