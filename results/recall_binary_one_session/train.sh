#!/usr/bin/env bash
# One CPU session of binary-string meta-training, one core: the paper's EBMM (8,256 floats) without the gradient
# penalty (a meta-step costs half), first at 5 write / 5 read steps, then from that model at 15 / 20 at a lower rate.
# Usage: bash results/recall_binary_one_session/train.sh [RUN_DIR] [PHASE1_SECONDS] [PHASE2_SECONDS]
set -euo pipefail
out=${1:-runs/recall_one_session}
phase1=${2:-4200}
phase2=${3:-2400}
export OMP_NUM_THREADS=1
python -m ebmm_rl.recall train --dataset binary --no-gradient-penalty --steps 1000000 --time-limit "$phase1" \
    --run-dir "$out/phase1" --no-progress
source_run=$(ls -d "$out"/phase1/recall__binary__ebmm__* | tail -n 1)
python -m ebmm_rl.recall train --dataset binary --no-gradient-penalty --write-steps 15 --read-steps 20 --lr 3e-4 \
    --init-from "$source_run" --steps 1000000 --time-limit "$phase2" --run-dir "$out/phase2" --no-progress
