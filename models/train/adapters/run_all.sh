#!/usr/bin/env bash
# Train, export and measure the tiny-shapes concept adapters (run after the base pack is exported).
#   bash models/train/adapters/run_all.sh               # 6 adapters x 2.5 min on one core, then evaluation + bench
#   ADAPTER_MINUTES=3 SKIP_EVAL=1 bash models/train/adapters/run_all.sh
#   ADAPTER_ARGS="--reg-weight 0" bash models/train/adapters/run_all.sh   # override the training recipe
# Writes models/packs/tiny-shapes/adapters/{diamond,heart,ring}.safetensors (orthogonal, basis blocks 0, 1, 2),
# {diamond,heart,ring}-lora.safetensors (plain LoRA, same layers, rank and regulariser),
# orthogonal-basis.safetensors; logs/ and results.json, bench.json here.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
MIN=${ADAPTER_MINUTES:-2.5}
# the recipe (README "Training"): cross-attention to_k/to_v only, rank 8, shared text basis, independent regulariser
ARGS=${ADAPTER_ARGS:-"--targets kv --rank 8 --lr 1e-2 --basis text --reg-weight 0.1 --p-uncond-concept 0"}
# one thread: on a shared 2-core machine OpenMP spin-waiting with more threads than free cores is ~10x slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ADAPTER_THREADS=${ADAPTER_THREADS:-1}
mkdir -p logs
$PY shapes.py >/dev/null                       # logs/concepts_preview.png
block=0
for c in diamond heart ring; do
  # shellcheck disable=SC2086
  $PY train_adapter.py --concept "$c" --method orthogonal --block "$block" --minutes "$MIN" --preview $ARGS > "logs/$c.log" 2>&1
  grep "eps-MSE\|response" "logs/$c.log"
  block=$((block + 1))
done
for c in diamond heart ring; do
  # shellcheck disable=SC2086
  $PY train_adapter.py --concept "$c" --method lora --minutes "$MIN" --preview ${ARGS/--basis text/} > "logs/$c-lora.log" 2>&1
  grep "eps-MSE\|response" "logs/$c-lora.log"
done
if [ -z "${SKIP_EVAL:-}" ]; then
  cd ../../..
  npx tsx models/train/adapters/evaluate.ts --out models/train/adapters/results.json > models/train/adapters/logs/evaluate.log 2>&1
  npx tsx test/bench/adapters.ts > models/train/adapters/bench.json 2> models/train/adapters/logs/bench.log
fi
