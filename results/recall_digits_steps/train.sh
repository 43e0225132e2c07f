#!/usr/bin/env bash
# Digits: does the binary strings' biggest lever, more write and read steps, make the storing EBMM store more?
# Two EBMMs trained with half their memories random binary images (--random-memories 0.5, the storing model of
# recall_digits_random/), hidden 64, no gradient penalty, one core each: 2,015 floats (31 fast units) and 975 floats
# (15 fast units). Phase 1 at 5 write / 5 read steps, then each goes on from its phase-1 model at 15 / 20 at a lower
# rate (new steps repeat the last learned ones), as recall_binary_one_session/ did; the phase-2 model is also saved
# at its step 0 (the phase-1 model read with 15 / 20 steps, untrained at them). Memory Networks at 1,024 and 2,048
# floats beside them, then one evaluation with the unstored-query control.
# Usage: bash results/recall_digits_steps/train.sh [RUN_DIR] [OUT_DIR]   (about 80 minutes on 2 cores)
set -euo pipefail
runs=${1:-runs/digits_steps}
out=${2:-results/recall_digits_steps}
export OMP_NUM_THREADS=1
ebmm=(python -m ebmm_rl.recall train --dataset digits --hidden 64 --hop-dim 64 --no-gradient-penalty
      --random-memories 0.5 --steps 1000000 --no-progress)
phase2=(--write-steps 15 --read-steps 20 --lr 3e-4)
train_both_phases() {  # name, memory budget, phase-1 seconds, phase-2 seconds
    "${ebmm[@]}" --memory-sizes "$2" --time-limit "$3" --run-dir "$runs/$1"
    local source_run
    source_run=$(ls -d "$runs/$1"/recall__digits__ebmm__* | tail -n 1)
    "${ebmm[@]}" --memory-sizes "$2" "${phase2[@]}" --init-from "$source_run" --steps 1 --time-limit 0 \
        --run-dir "$runs/${1}_w15r20_step0"
    "${ebmm[@]}" --memory-sizes "$2" "${phase2[@]}" --init-from "$source_run" --time-limit "$4" \
        --run-dir "$runs/${1}_w15r20"
}
train_both_phases half_2015 2064 3300 1500 &
( python -m ebmm_rl.recall train --dataset digits --model memnet --memory-sizes 1024 2048 --steps 32423 \
      --run-dir "$runs/memnet" --no-progress
  train_both_phases half_975 1024 2700 1500 )
wait
python -m ebmm_rl.recall evaluate --dataset digits --checkpoints "$runs"/half_2015*/* "$runs"/half_975*/* \
    "$runs"/memnet/* --baselines modern_hopfield --batches 200 --out "$out"
