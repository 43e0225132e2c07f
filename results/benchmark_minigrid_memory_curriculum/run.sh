#!/usr/bin/env bash
# Curriculum for the default MiniGrid-Memory (S13, 7x7 view): stage 1 on EBMM-MemoryS13TMaze (the same width and view,
# the cue in view at the start), stage 2 on MiniGrid-Memory from stage 1's weights with the episodic novelty bonus
# (0.01 per new pose, decaying to 0 by 2.4M of 4M steps), so that turning back to look at the cue pays while the bonus
# lasts and a memory that already carries the cue to the choice makes it pay after.
# Usage: bash results/benchmark_minigrid_memory_curriculum/run.sh AGENT [RUN_PARENT] [SEED] [STAGE1_STEPS] [TRAIN OPTIONS...]
#   AGENT: ppo_ebmm or ppo_oracle; TRAIN OPTIONS go to both stages, e.g. --set key=value
set -euo pipefail
agent=$1
parent=${2:-runs/curriculum}
seed=${3:-0}
stage1_steps=${4:-300000}
shift $(($# < 4 ? $# : 4))
common=(--agent "$agent" --seed "$seed" --threads 1 --eval-deterministic --eval-episodes 50 --no-progress "$@")
python -m ebmm_rl.train "${common[@]}" --env EBMM-MemoryS13TMaze --run-dir "$parent/s13tmaze" \
    --timesteps "$stage1_steps" --eval-freq 25000
stage1=$(ls -d "$parent"/s13tmaze/EBMM-MemoryS13TMaze-v0__"$agent"__"$seed"__* | tail -n 1)
python -m ebmm_rl.train "${common[@]}" --env MiniGrid-Memory --run-dir "$parent/memory" --init-from "$stage1" \
    --timesteps 4000000 --eval-freq 125000 --set novelty_bonus=0.01 --set novelty_bonus_steps=2400000
