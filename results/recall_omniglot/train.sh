#!/usr/bin/env bash
# Real Omniglot on the CPU: the "background small" archives (images_background_small1 trains, 2,720 images of 5
# alphabets; images_background_small2 tests, 3,120 images of 5 other alphabets), 32x32 binarised, a 16x16 block
# occluded, 64 images per memory. EBMMs with the MLP energy (hidden 128, 129 floats per fast unit: 18, 36 and 71
# units = 2,322, 4,644 and 9,159 floats; 5 write / 5 read steps, second order, no gradient penalty) and Memory
# Networks at the same budgets (36, 72 and 143 floats per slot: 2,304, 4,608 and 9,152 floats), one training at a time
# on one core, then the evaluation with the unstored-query control, and the Hopfield and modern Hopfield baselines.
# Usage: bash results/recall_omniglot/train.sh DATA_ROOT [RUN_DIR] [OUT_DIR] [EBMM_SECONDS] [MEMNET_SECONDS]
#   DATA_ROOT: the folder of images_background_small1.zip and images_background_small2.zip (downloaded there when
#   missing). About 100 minutes with the defaults (18 minutes per EBMM, 5 per Memory Network, 25 for the baselines).
set -euo pipefail
data=${1:?usage: bash results/recall_omniglot/train.sh DATA_ROOT [RUN_DIR] [OUT_DIR] [EBMM_SECONDS] [MEMNET_SECONDS]}
runs=${2:-runs/recall_omniglot}
out=${3:-results/recall_omniglot}
ebmm_seconds=${4:-1080}
memnet_seconds=${5:-300}
export OMP_NUM_THREADS=1
common=(python -m ebmm_rl.recall train --dataset omniglot --omniglot-split small --data-root "$data" --steps 1000000
        --no-progress)
ebmm() {  # memory budget in floats
    "${common[@]}" --energy mlp --hidden 128 --hop-dim 128 --no-gradient-penalty --memory-sizes "$1" \
        --time-limit "$ebmm_seconds" --run-dir "$runs/ebmm_$1"
}
ebmm 2322
"${common[@]}" --model memnet --memory-sizes 2322 4644 9159 --time-limit "$memnet_seconds" --run-dir "$runs/memnet"
ebmm 4644
ebmm 9159
# 100 test memories each; the same seed draws the same memories and queries for both evaluations. The classical
# Hopfield reads of 1,024 units run on the CPU for about 25 minutes (Storkey's rule most of it), so they go apart.
python -m ebmm_rl.recall evaluate --dataset omniglot --omniglot-split small --data-root "$data" \
    --checkpoints "$runs"/ebmm_*/* "$runs"/memnet/* --baselines modern_hopfield --batches 100 --out "$out"
python -m ebmm_rl.recall evaluate --dataset omniglot --omniglot-split small --data-root "$data" --batches 100 \
    --out "$out/baselines"
