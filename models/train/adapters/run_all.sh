#!/usr/bin/env bash
# Train, export and measure the tiny-shapes concept adapters (run after the base pack is exported).
#   bash models/train/adapters/run_all.sh               # ~20 min of training on 2 cores, then evaluation + bench
#   ADAPTER_MINUTES=3 SKIP_EVAL=1 bash models/train/adapters/run_all.sh
# Writes models/packs/tiny-shapes/adapters/{diamond,heart,ring}.safetensors (orthogonal, basis blocks 0, 1, 2),
# {diamond,heart,ring}-lora.safetensors (plain LoRA), orthogonal-basis.safetensors; logs/ and results.json here.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
MIN=${ADAPTER_MINUTES:-2.8}
# one thread: on a shared 2-core machine OpenMP spin-waiting with more threads than free cores is ~10x slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ADAPTER_THREADS=${ADAPTER_THREADS:-1}
mkdir -p logs
$PY shapes.py >/dev/null                       # logs/concepts_preview.png
block=0
for c in diamond heart ring; do
  $PY train_adapter.py --concept "$c" --method orthogonal --block "$block" --minutes "$MIN" --preview | tail -1
  block=$((block + 1))
done
for c in diamond heart ring; do
  $PY train_adapter.py --concept "$c" --method lora --minutes "$MIN" --preview | tail -1
done
if [ -z "${SKIP_EVAL:-}" ]; then
  cd ../../..
  npx tsx models/train/adapters/evaluate.ts --out models/train/adapters/results.json
  npx tsx test/bench/adapters.ts > models/train/adapters/bench.json
fi
