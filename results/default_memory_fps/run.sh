#!/usr/bin/env bash
# Training speed of each EBMM agent's `default` config section (envs with no section of their own) beside its committed
# env sections, one run after another on one core: fps over the first STEPS steps, without evaluations or checkpoints.
set -euo pipefail
STEPS=${STEPS:-16384}
out=$(dirname "$0")/fps.csv
runs=$(mktemp -d)
echo "agent,env,section,steps,fps" > "$out"
measure() {  # agent env section
  line=$(OMP_NUM_THREADS=1 python -m ebmm_rl.train --agent "$1" --env "$2" --timesteps "$STEPS" --eval-freq 0 \
    --eval-episodes 1 --checkpoint-freq 0 --threads 1 --no-progress --run-dir "$runs" | tail -1)
  fps=$(sed -E 's/.* ([0-9]+) fps;.*/\1/' <<< "$line")
  echo "$1,$2,$3,$STEPS,$fps" | tee -a "$out"
}
for env in EBMM-MemoryTMaze-v0 EBMM-MemoryShort-v0 EBMM-MemoryS13TMaze-v0 MiniGrid-Memory-v0; do
  measure ppo_ebmm "$env" "$env"
done
for env in MiniGrid-MemoryS9-v0 CartPole-v1; do measure ppo_ebmm "$env" default; done
for env in EBMM-MemoryShort-v0 MiniGrid-Memory-v0 EBMM-MemoryTMaze-v0; do
  measure ppo_ebmm_recurrent "$env" "$env"
done
for env in MiniGrid-MemoryS9-v0 CartPole-v1; do measure ppo_ebmm_recurrent "$env" default; done
rm -r "$runs"
