#!/usr/bin/env bash
# Regenerate the whole tiny-shapes pack and the ONNX contract fixtures (CPU only, fixed seeds).
#   bash models/train/build_pack.sh            # full run (~80 min on 2 cores)
#   VAE_MINUTES=17 UNET_MINUTES=55 bash models/train/build_pack.sh
# Requires /usr/bin/python3 with torch 1.13, onnx 1.12, numpy; node + onnxruntime-node for the verify step.
# NOTE: Debian's torch uses the system BLAS; install an optimised one first or training is ~3x slower:
#   apt-get install -y libopenblas0-openmp
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
VAE_MINUTES=${VAE_MINUTES:-17}
UNET_MINUTES=${UNET_MINUTES:-55}
mkdir -p logs checkpoints
export OMP_NUM_THREADS=2
# passive OpenMP waiting: 3-4x faster when other processes share the 2 cores
export OMP_WAIT_POLICY=PASSIVE
echo "[1/6] scenes.json, heldout.json, preview"; $PY scenes.py
echo "[2/6] tokenizer";                         $PY clip_tokenizer.py
echo "[3/6] VAE (${VAE_MINUTES} min)";           $PY train_vae.py --steps 4500 --max-minutes "$VAE_MINUTES" --seed 1
echo "[4/6] text encoder + UNet (${UNET_MINUTES} min)"; $PY train_unet.py --n-scenes 30000 --steps 9000 --max-minutes "$UNET_MINUTES" --seed 2
echo "[5/6] export + evaluation";               $PY export_pack.py && $PY evaluate.py
# optional, on a CUDA machine: bash train_unet_gpu.sh, then export_pack.py --unet-ckpt <variant> (README.md)
echo "[6/6] contract fixtures";                 $PY export_fixtures.py
npx tsx verify-onnx.ts --parity logs/parity.json ../packs/tiny-shapes ../../test/fixtures/contracts/*
du -sh ../packs/tiny-shapes ../../test/fixtures/contracts
