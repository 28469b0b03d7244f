#!/usr/bin/env bash
# Regenerate the tiny-shapes experts (pruned + distilled UNets, router, manifest) into
# models/packs/tiny-shapes/experts/ and measure them. CPU only, fixed seeds, ~25 min on 2 cores.
#   bash models/train/experts/build_experts.sh
#   DISTIL_MINUTES=10 ROUTER_PROMPTS=512 THREADS=1 TARGETS="0.7 0.6 0.45" SKIPS="0 0 4" bash models/train/experts/build_experts.sh
#   DISTIL_MINUTES=10 EXTRA_MINUTES=30 EXTRA_ONLY="0 1 2" bash models/train/experts/build_experts.sh   # the caption base's run
# Needs the trained base pack first (models/train/build_pack.sh: checkpoints/unet.pt, the latent cache and
# models/packs/tiny-shapes/), /usr/bin/python3 with torch 1.13 + onnx, and node_modules (npm ci).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
DISTIL_MINUTES=${DISTIL_MINUTES:-10}
EXTRA_MINUTES=${EXTRA_MINUTES:-7}   # a second distillation phase
EXTRA_ONLY=${EXTRA_ONLY:-1 2}       # ... for these students (0 = the largest); the caption base used "0 1 2" and 30 min
ROUTER_PROMPTS=${ROUTER_PROMPTS:-512}
TARGETS=${TARGETS:-0.7 0.6 0.45}
SKIPS=${SKIPS:-0 0 4}   # per target: attention blocks skipped whole (the least important first)
# 1 thread: on a machine shared with other jobs, 2 OpenMP threads ran 8x slower (barrier waits); use 2 on an idle one
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
mkdir -p logs checkpoints
# shellcheck disable=SC2086
echo "[1/4] prune + distil (${DISTIL_MINUTES} min)"; $PY train_experts.py --targets $TARGETS --skip-blocks $SKIPS --minutes "$DISTIL_MINUTES" --threads "$THREADS"
# shellcheck disable=SC2086
echo "[1b]  continue students ${EXTRA_ONLY} (${EXTRA_MINUTES} min)"; $PY train_experts.py --resume checkpoints/experts.pt --only $EXTRA_ONLY --minutes "$EXTRA_MINUTES" --lr 3e-4 --threads "$THREADS" --seed 4
echo "[2/4] router (${ROUTER_PROMPTS} prompts)";     $PY train_router.py --n "$ROUTER_PROMPTS" --seeds 2 --per-seed --threads "$THREADS"
echo "[3/4] export + latency";                        $PY export_experts.py --threads "$THREADS"
echo "[4/4] benchmark (held-out set)";               (cd ../../.. && npx tsx test/bench/experts.ts --threads "$THREADS" --json models/train/experts/logs/bench.json | tee models/train/experts/logs/bench.md)
du -sh ../../packs/tiny-shapes/experts
