#!/usr/bin/env bash
# Train, export and measure the tiny-shapes concept adapters (run after the base pack is exported).
#   bash models/train/adapters/run_all.sh               # 6 adapters x 700 steps (~3.5 min each on one core), one after another, then evaluation + bench
#   SKIP_EVAL=1 bash models/train/adapters/run_all.sh   # train only
#   PARALLEL=1 bash models/train/adapters/run_all.sh    # all 6 at once (a machine with >= 6 free cores)
#   ADAPTER_ARGS="--reg-weight 0" bash models/train/adapters/run_all.sh   # override the training recipe
# Writes models/packs/tiny-shapes/adapters/{diamond,heart,ring}.safetensors (orthogonal, basis blocks 0, 1, 2),
# {diamond,heart,ring}-lora.safetensors (plain LoRA, same layers, rank, concept token and regulariser),
# orthogonal-basis.safetensors; logs/ and results.json, bench.json here.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
MIN=${ADAPTER_MINUTES:-60}  # a time limit; the recipe trains a fixed number of steps (--steps)
# the recipe (README "Training"): cross-attention to_k/to_v only, rank 8, shared text basis, a learned concept token,
# independent regulariser
ARGS=${ADAPTER_ARGS:-"--targets kv --rank 8 --lr 1e-2 --basis text --learn-token --token-reg 0.1 --reg-weight 0.3 --p-uncond-concept 0 --steps 700"}
# one thread each: on a shared machine OpenMP spin-waiting with more threads than free cores is ~10x slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ADAPTER_THREADS=${ADAPTER_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p logs
$PY shapes.py >/dev/null                       # logs/concepts_preview.png
train() { # name concept args...
  local name=$1
  shift
  # shellcheck disable=SC2086
  $PY train_adapter.py --name "$name" --concept "$@" --minutes "$MIN" --preview > "logs/$name.log" 2>&1
  grep "eps-MSE\|response" "logs/$name.log"
}
jobs_=()
block=0
for c in diamond heart ring; do
  # shellcheck disable=SC2086
  if [ -n "${PARALLEL:-}" ]; then train "$c" "$c" --method orthogonal --block "$block" $ARGS & jobs_+=($!); else train "$c" "$c" --method orthogonal --block "$block" $ARGS; fi
  block=$((block + 1))
done
for c in diamond heart ring; do
  # shellcheck disable=SC2086
  if [ -n "${PARALLEL:-}" ]; then train "$c-lora" "$c" --method lora ${ARGS/--basis text/} & jobs_+=($!); else train "$c-lora" "$c" --method lora ${ARGS/--basis text/}; fi
done
for j in "${jobs_[@]}"; do wait "$j"; done
if [ -z "${SKIP_EVAL:-}" ]; then
  cd ../../..
  npx tsx pipelines/evaluation/adapters.ts --out models/train/adapters/results.json > models/train/adapters/logs/evaluate.log 2>&1
  npx tsx test/bench/adapters.ts > models/train/adapters/bench.json 2> models/train/adapters/logs/bench.log
fi
