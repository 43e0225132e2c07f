#!/usr/bin/env bash
# One CPU session of digits meta-training on one core, the recipe of recall_binary_one_session/ applied to digits: an
# EBMM with a wide encoder and narrow hops (hidden 256, hop-dim 64: a meta-step costs about a fifth of the default's),
# no gradient penalty, first at 5 write / 5 read steps, then from that model at 15 / 20 at a lower rate.
# Usage: bash results/recall_digits_one_session/train.sh [RUN_DIR] [MEMORY_FLOATS] [PHASE1_SECONDS] [PHASE2_SECONDS]
set -euo pipefail
out=${1:-runs/recall_digits_one_session}
memory=${2:-2064}
phase1=${3:-3600}
phase2=${4:-2400}
export OMP_NUM_THREADS=1
architecture=(--dataset digits --memory-sizes "$memory" --hidden 256 --hop-dim 64 --no-gradient-penalty)
python -m ebmm_rl.recall train "${architecture[@]}" --steps 1000000 --time-limit "$phase1" \
    --run-dir "$out/phase1" --no-progress
source_run=$(ls -d "$out"/phase1/recall__digits__ebmm__* | tail -n 1)
python -m ebmm_rl.recall train "${architecture[@]}" --write-steps 15 --read-steps 20 --lr 3e-4 \
    --init-from "$source_run" --steps 1000000 --time-limit "$phase2" --run-dir "$out/phase2" --no-progress
