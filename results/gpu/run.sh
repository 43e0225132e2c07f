#!/usr/bin/env bash
# GPU check and throughput in one device call (results/gpu/README.md says what it measured on an H200).
#
#   bash results/gpu/run.sh OUT_DIR
#
# 1. the test suite with CUDA present: tests/test_cuda.py (every agent learns on cuda and acts the same once loaded on
#    the CPU) and the memory core's CUDA test run instead of being skipped;
# 2. training throughput (eval off, 32,768 steps) of ppo_ebmm and ppo_lstm on EBMM-MemoryTMaze, on cuda one run at a
#    time, and on the same machine's CPU (1 thread each, in the background on other cores);
# 3. python -m ebmm_rl.bench.recurrent: time per predict at steps 10 and 1,000 on cuda; on the CPU in the background
#    also the training throughput on the EBMM-MemoryDelay configs;
# 4. the default task MiniGrid-Memory (S13, 7x7 view) with the default configs: throughput on cuda;
# 5. python3 -m ebmm_rl.bench.profile: where ppo_ebmm_recurrent's acting and update time goes on cuda.
# Run it as one device call with a limit of 8+ minutes, e.g.
#   bash results/gpu/run.sh /tmp/gpu; tar czf "$OUT/gpu.tgz" -C /tmp gpu
set -u
out=${1:?usage: bash results/gpu/run.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
runs=$(mktemp -d)
log() { echo "[$(date +%T)] $*"; }
train() {  # train NAME DEVICE TIMEOUT ARGS...: one training run, its summary line kept in $out/NAME.log
  local name=$1 device=$2 limit=$3
  shift 3
  timeout "$limit" python3 -m ebmm_rl.train --device "$device" --eval-freq 0 --checkpoint-freq 0 --no-progress \
    --run-dir "$runs/$name" "$@" > "$out/$name.log" 2>&1
  log "$name: $(tail -n 1 "$out/$name.log")"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "cpu cores: $(nproc)"
} | tee "$out/machine.txt"

log "CPU baselines in the background"
for agent in ppo_ebmm ppo_lstm; do
  train "tmaze_${agent}_cpu" cpu 300 --env EBMM-MemoryTMaze --agent "$agent" --threads 1 --timesteps 32768 &
done
timeout 300 python3 -m ebmm_rl.bench.recurrent --agents ppo_ebmm_recurrent ppo_lstm --device cpu \
  --out "$out/bench_recurrent_cpu" > "$out/bench_recurrent_cpu.log" 2>&1 &

# Limits sum to under 8 minutes: an H200 took 48 s for the tests, 50 s and 65 s for the two T-maze runs, and more than
# 90 s for 8,192 steps of ppo_ebmm on MiniGrid-Memory and 190 s for bench.recurrent's training part (2026-11-26).
log "tests"
timeout 100 python3 -m pytest -q -p no:cacheprovider -n 6 2>&1 | tail -n 15 | tee "$out/tests.txt"

log "training on cuda, one run at a time"
for agent in ppo_ebmm ppo_lstm; do
  train "tmaze_${agent}_cuda" cuda 90 --env EBMM-MemoryTMaze --agent "$agent" --threads 1 --timesteps 32768
done
timeout 60 python3 -m ebmm_rl.bench.recurrent --agents ppo_ebmm_recurrent ppo_lstm --device cuda --train-steps 0 \
  --out "$out/bench_recurrent_cuda" > "$out/bench_recurrent_cuda.log" 2>&1
log "bench.recurrent cuda: $(tail -n 3 "$out/bench_recurrent_cuda.log" | tr '\n' ' ')"
train memory_ppo_lstm_cuda cuda 45 --env MiniGrid-Memory --agent ppo_lstm --threads 1 --timesteps 8192
train memory_ppo_ebmm_cuda cuda 90 --env MiniGrid-Memory --agent ppo_ebmm --threads 1 --timesteps 2048
timeout 60 python3 -m ebmm_rl.bench.profile --device cuda --n-steps 16 --out "$out/profile_recurrent_cuda.txt"

log "waiting for the CPU baselines"
wait
for file in "$out"/*/*.csv; do echo "== $file"; cat "$file"; done
log "done"
