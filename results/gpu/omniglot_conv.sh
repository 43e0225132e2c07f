#!/usr/bin/env bash
# The paper's Omniglot protocol with the conv energy, as one GPU device call of at most 10 minutes:
# EBMM-conv at 2,308, 4,616 and 9,232 floats (2, 4 and 8 fast channels) and Memory Networks at 3,072 and 8,192 floats
# (48 and 128 floats per slot), trained side by side on one GPU on Omniglot's background small archives (small1
# trains; small2 without the alphabets it shares with small1 tests), 32x32 binarised, a 16x16 block occluded, 64
# images per memory, 5 write / 5 read steps, second order; then one evaluation (200 memories, Hamming error with
# 5-95% bands, the unstored-query control, Hopfield and modern Hopfield baselines). Each run's last line says how many
# meta-steps it reached, at what rate and at what peak GPU memory (train_*.log). The paper: EBMM-conv 19.07, 9.25 and
# 4.06 bits, MemNets 19.11 (3,072 floats) and 4.64 (8,192), after ~10^6 meta-steps.
#
#   bash results/gpu/omniglot_conv.sh OUT_DIR [DATA_ROOT] [TRAIN_SECONDS]
#
# DATA_ROOT: the folder of images_background_small1.zip and images_background_small2.zip (default: the first of
# ../shared/data/omniglot and shared/data/omniglot that exists). TRAIN_SECONDS (default 360) bounds each training; the
# evaluation takes about a minute more. MEMORY_CHUNK (default 4) is the memories meta-differentiated at once per
# EBMM: a memory of 64 32x32 images needs about 7 GB in the second-order graph (on the CPU), so three EBMMs at 4 need
# about 85 GB; lower it if a run reports CUDA out of memory. DEVICE (default cuda) and BATCHES (default 200, the
# evaluated memories) exist for a smoke test on the CPU: DEVICE=cpu BATCHES=2 bash results/gpu/omniglot_conv.sh OUT "" 0
# Run it as one device call, e.g.
#   bash results/gpu/omniglot_conv.sh /tmp/omniglot_gpu; tar czf "$OUT/omniglot_gpu.tgz" -C /tmp omniglot_gpu
set -u
out=${1:?usage: bash results/gpu/omniglot_conv.sh OUT_DIR [DATA_ROOT] [TRAIN_SECONDS]}
data=${2:-}
if [ -z "$data" ]; then
  for candidate in ../shared/data/omniglot shared/data/omniglot; do
    if [ -d "$candidate" ]; then data=$candidate; break; fi
  done
fi
[ -n "$data" ] || { echo "no Omniglot folder: pass DATA_ROOT" >&2; exit 2; }
seconds=${3:-360}
chunk=${MEMORY_CHUNK:-4}
device=${DEVICE:-cuda}
batches=${BATCHES:-200}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
runs="$out/runs"
log() { echo "[$(date +%T)] $*"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} | tee "$out/machine.txt"

common=(python3 -m ebmm_rl.recall train --dataset omniglot --omniglot-split small --data-root "$data" --device "$device"
        --steps 1000000 --time-limit "$seconds" --checkpoint-every 50 --no-progress)
log "training 5 models side by side for $seconds s each (EBMM chunks of $chunk memories)"
for memory in 2308 4616 9232; do
  timeout $((seconds + 120)) "${common[@]}" --memory-sizes "$memory" --memory-chunk "$chunk" \
    --run-dir "$runs/ebmm_conv_$memory" > "$out/train_ebmm_conv_$memory.log" 2>&1 &
done
for memory in 3072 8192; do
  timeout $((seconds + 120)) "${common[@]}" --model memnet --memory-sizes "$memory" \
    --run-dir "$runs/memnet_$memory" > "$out/train_memnet_$memory.log" 2>&1 &
done
wait
for file in "$out"/train_*.log; do log "$(basename "$file"): $(tail -n 1 "$file")"; done

log "evaluating"
timeout 150 python3 -m ebmm_rl.recall evaluate --dataset omniglot --omniglot-split small --data-root "$data" \
  --device "$device" --checkpoints "$runs"/ebmm_conv_*/* "$runs"/memnet_*/* --batches "$batches" --no-progress \
  --out "$out/evaluation" 2>&1 | tee "$out/evaluate.log"
rm -f "$runs"/*/*/checkpoint.pt  # the numbers are in evaluation/; what comes back from the device stays small
log "done"
