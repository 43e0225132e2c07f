#!/usr/bin/env bash
# Curriculum on the delay T-maze: stage 1 at a 20-step delay, stage 2 at the full 200-step delay from stage 1's weights.
# Usage: bash results/benchmark_delay_curriculum/run.sh AGENT [RUN_PARENT]   (AGENT: ppo_ebmm_recurrent or ppo_lstm)
set -euo pipefail
agent=$1
parent=${2:-runs/curriculum}
common=(--env EBMM-MemoryDelay --agent "$agent" --seed 0 --threads 1 --eval-deterministic --eval-episodes 50 --no-progress)
python -m ebmm_rl.train "${common[@]}" --run-dir "$parent/stage1" --timesteps 61440 --eval-freq 20480 \
    --set env_kwargs.corridor_length=20 --set env_kwargs.max_steps=54 --set n_steps=128
stage1=$(ls -d "$parent"/stage1/EBMM-MemoryDelay-v0__"$agent"__0__* | tail -n 1)
python -m ebmm_rl.train "${common[@]}" --run-dir "$parent/stage2" --timesteps 147456 --eval-freq 24576 \
    --init-from "$stage1"
