#!/usr/bin/env bash
# Optional: the UNet stage of build_pack.sh on one CUDA GPU, continuing from checkpoints/unet.pt.
# Nothing depends on it; the CPU pipeline (build_pack.sh) produces a complete pack on its own.
# Renders a larger scene cache with all cores, then trains three warm-started variants side by side
# (a 1.4M-parameter UNet leaves the GPU mostly idle, so three runs cost about the time of one):
#   OUT_DIR=/tmp/runs UNET_MINUTES=5.5 bash models/train/train_unet_gpu.sh
# Pick a variant with `python3 export_pack.py --unet-ckpt OUT_DIR/<name>.pt` and `npm run evaluate`.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
OUT_DIR=${OUT_DIR:-checkpoints/gpu}
SAMPLES_DIR=${SAMPLES_DIR:-$OUT_DIR}
MIN=${UNET_MINUTES:-5.5}
N=${N_SCENES:-200000}
WORKERS=${WORKERS:-$(nproc)}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR" "$SAMPLES_DIR"
common=(--device cuda --n-scenes "$N" --steps 10000000 --max-minutes "$MIN" --init checkpoints/unet.pt --samples-every 0 --threads 2)
$PY train_unet.py "${common[@]}" --workers "$WORKERS" --cache-only --log "$OUT_DIR/cache.log"
$PY train_unet.py "${common[@]}" --batch 256 --lr 5e-4 --warmup 200 --ema 0.9995 --seed 11 --out "$OUT_DIR/warm.pt" --log "$OUT_DIR/warm.log" --samples "$SAMPLES_DIR/warm.png" &
$PY train_unet.py "${common[@]}" --batch 256 --lr 5e-4 --warmup 200 --ema 0.9995 --seed 12 --p-grid 0.9 --out "$OUT_DIR/warm-grid.pt" --log "$OUT_DIR/warm-grid.log" --samples "$SAMPLES_DIR/warm-grid.png" &
$PY train_unet.py "${common[@]}" --batch 512 --lr 1e-3 --warmup 300 --ema 0.9995 --seed 13 --out "$OUT_DIR/warm-big.pt" --log "$OUT_DIR/warm-big.log" --samples "$SAMPLES_DIR/warm-big.png" &
wait
tail -n 2 "$OUT_DIR"/*.log
