"""Recover torch weights from the exported pack (the pack is committed; checkpoints/ is not).

python3 from_onnx.py [--pack models/packs/tiny-shapes]
  -> checkpoints/vae.pt, checkpoints/unet.pt (text encoder + UNet = the exported weights, scaling factor, tokenizer)

torch.onnx.export keeps Conv/Gemm/LayerNorm weights under their parameter names but stores MatMul weights
transposed under generated names (onnx::MatMul_281) and GroupNorm affines reshaped ([C,1,1]). The mapping is
found by exporting the same architecture with distinct random values in every parameter and matching each
initializer to the parameter it came from (as is, transposed or reshaped); the exporter names initializers
deterministically, so that mapping applies to the pack's files. Each recovered model is checked by exporting it
again: every initializer must equal the pack's bit for bit.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from clip_tokenizer import ClipTokenizer  # noqa: E402
from export_pack import PACK_DIR, export_pack  # noqa: E402
from models import MAIN_CONFIG, VAE, TextEncoder, UNet  # noqa: E402


def initializers(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


def probe_mapping(modules, export, files):
    """initializer name -> (module key, parameter name, 'same' | 'T' | 'reshape'): fills every parameter with
    distinct random values, calls export(dir) and finds each initializer's source."""
    params = {}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, m in modules.items():
            for name, p in m.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g))
                params[(key, name)] = p.detach().numpy().copy()
    with tempfile.TemporaryDirectory() as d:
        export(d)
        exported = {f: initializers(os.path.join(d, f)) for f in files}
    mapping = {}
    for f in files:
        for iname, arr in exported[f].items():
            hit = None
            for pk, pv in params.items():
                if arr.shape == pv.shape and np.array_equal(arr, pv):
                    hit = (pk, "same")
                elif arr.ndim == 2 and arr.shape == pv.T.shape and np.array_equal(arr, pv.T):
                    hit = (pk, "T")
                elif arr.size == pv.size and arr.shape != pv.shape and np.array_equal(arr.reshape(-1), pv.reshape(-1)):
                    hit = (pk, "reshape")
                if hit:
                    break
            if hit is None:
                raise RuntimeError(f"{f}: initializer {iname} {arr.shape} matches no parameter")
            mapping[(f, iname)] = hit
    return mapping


def load_from_pack(modules, mapping, pack):
    got = set()
    with torch.no_grad():
        for (f, iname), ((key, pname), how) in mapping.items():
            arr = _cached(pack, f)[iname]
            p = dict(modules[key].named_parameters())[pname]
            v = arr.T if how == "T" else arr.reshape(p.shape)
            p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
            got.add((key, pname))
    missing = [(k, n) for k, m in modules.items() for n, _ in m.named_parameters() if (k, n) not in got]
    if missing:
        raise RuntimeError(f"parameters not found in the pack: {missing[:5]} ...")


_CACHE = {}


def _cached(pack, f):
    if (pack, f) not in _CACHE:
        _CACHE[(pack, f)] = initializers(os.path.join(pack, f))
    return _CACHE[(pack, f)]


FILES = ["text_encoder/model.onnx", "unet/model.onnx", "vae_encoder/model.onnx", "vae_decoder/model.onnx"]


def recover(pack):
    vocab = len(json.load(open(os.path.join(pack, "tokenizer", "vocab.json"))))
    mods = {"te": TextEncoder(vocab, **MAIN_CONFIG["text"]), "unet": UNet(**MAIN_CONFIG["unet"]), "vae": VAE(**MAIN_CONFIG["vae"])}
    index = json.load(open(os.path.join(pack, "model_index.json")))
    sf = float(index["tiny_shapes"]["scaling_factor"])
    def export(d):
        export_pack(d, mods["te"], mods["unet"], mods["vae"], sf, os.path.join(pack, "tokenizer"))

    load_from_pack(mods, probe_mapping(mods, export, FILES), pack)
    # check: a fresh export of the recovered weights has the pack's initializers, bit for bit
    with tempfile.TemporaryDirectory() as d:
        export(d)
        for f in FILES:
            a, b = initializers(os.path.join(d, f)), _cached(pack, f)
            bad = [n for n in b if n not in a or not np.array_equal(a[n], b[n])]
            if bad:
                raise RuntimeError(f"{f}: re-export differs in {bad[:5]}")
    return mods, sf, index["tiny_shapes"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", default=PACK_DIR)
    ap.add_argument("--out", default=os.path.join(HERE, "checkpoints"))
    args = ap.parse_args()
    torch.manual_seed(0)
    mods, sf, info = recover(args.pack)
    os.makedirs(args.out, exist_ok=True)
    torch.save({"model": mods["vae"].state_dict(), "cfg": mods["vae"].cfg}, os.path.join(args.out, "vae.pt"))
    keep = {k: info[k] for k in ("train", "vae", "params") if k in info}
    torch.save({"unet": mods["unet"].state_dict(), "text_encoder": mods["te"].state_dict(), "scaling_factor": sf,
                "step": int(info.get("train", {}).get("unet_steps", 0)), "info": keep,
                "tokenizer": ClipTokenizer(os.path.join(args.pack, "tokenizer")).state()}, os.path.join(args.out, "unet.pt"))
    if "vae" in info:
        json.dump(info["vae"], open(os.path.join(args.out, "vae_metrics.json"), "w"), indent=1)
    print("recovered", args.pack, "-> checkpoints/vae.pt, checkpoints/unet.pt; re-export matches bit for bit")


if __name__ == "__main__":
    main()
