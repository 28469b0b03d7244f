#!/usr/bin/env bash
# Rebuilds the family test packs in test/fixtures/families/ (reduced width, random weights, seed 0) with their
# kohya LoRA and torch reference outputs. Debian's python3-torch / python3-onnx; about 10 minutes on 2 cores.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/../../../test/fixtures/families"
mkdir -p "$OUT/references"
for family in sd15 sd-turbo sdxl-turbo; do
  OMP_WAIT_POLICY=PASSIVE nice -n 5 /usr/bin/python3 "$HERE/build.py" --family "$family" --out "$OUT/$family" \
    --lora detail --reference "$OUT/references/$family.safetensors" 2>&1 | grep -v -i -e warn -e "_C._jit"
done
# an LCM-distilled UNet (timestep_cond) in optimum 1.23's fp16 layout; the tests put it into a copy of the sd15 pack
TMP="$(mktemp -d)"
OMP_WAIT_POLICY=PASSIVE nice -n 5 /usr/bin/python3 "$HERE/build.py" --family sd15 --vintage optimum-1.23 --fp16 --lcm-distilled \
  --out "$TMP/lcm" 2>&1 | grep -v -i -e warn -e "_C._jit"
rm -rf "$OUT/sd15-lcm-unet" && mv "$TMP/lcm/unet" "$OUT/sd15-lcm-unet" && rm -rf "$TMP"
du -sh "$OUT"
