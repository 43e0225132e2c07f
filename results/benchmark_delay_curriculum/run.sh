#!/usr/bin/env bash
# Curriculum on the delay T-maze: stage 1 at a 20-step delay, stage 2 at the full 200-step delay from stage 1's weights.
# Both stages' learning rates decay linearly to 0 (stage 1 from 1e-3 over 122,880 steps, stage 2 from 5e-4 over 147,456)
# so that PPO keeps the policy once it has found it: a constant 1e-3 solved the task and then lost it, and 61,440 steps
# of stage 1 were too few for one seed in two (see results/README.md).
# Usage: bash results/benchmark_delay_curriculum/run.sh AGENT [RUN_PARENT] [SEED] [TRAIN OPTIONS...]
#   AGENT: ppo_ebmm_recurrent, ppo_lstm or ppo_ebmm; TRAIN OPTIONS go to both stages, e.g. --set key=value
set -euo pipefail
agent=$1
parent=${2:-runs/curriculum}
seed=${3:-0}
shift $(($# < 3 ? $# : 3))
common=(--env EBMM-MemoryDelay --agent "$agent" --seed "$seed" --threads 1 --eval-deterministic --eval-episodes 50
    --no-progress "$@")
python -m ebmm_rl.train "${common[@]}" --run-dir "$parent/stage1" --timesteps 122880 --eval-freq 20480 \
    --set env_kwargs.corridor_length=20 --set env_kwargs.max_steps=54 --set n_steps=128 --set learning_rate=lin_1e-3
stage1=$(ls -d "$parent"/stage1/EBMM-MemoryDelay-v0__"$agent"__"$seed"__* | tail -n 1)
python -m ebmm_rl.train "${common[@]}" --run-dir "$parent/stage2" --timesteps 147456 --eval-freq 24576 \
    --init-from "$stage1" --set learning_rate=lin_5e-4
