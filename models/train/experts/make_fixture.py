"""Small expert fixtures for the TypeScript tests: test/fixtures/experts/ holds two pruned experts of the
contract fixture's UNet (test/fixtures/contracts/base, same random weights: seed 1234 as export_fixtures.py),
a linear router over its 8-dim pooled output and a manifest. Tests copy the base pack and put this folder
in it as experts/.

python3 make_fixture.py [--out test/fixtures/experts]
"""
import argparse
import json
import os
import shutil

import torch

import common
import pruning
from export_fixtures import compact
from models import FIXTURE_CONFIG, TextEncoder, UNet
from onnx_export import export_unet

ANCHORS = [
    "a large red circle on the left on a blue background",
    "a small yellow triangle at the top on a black background",
    "a small red circle on the left and a large blue square on the right on a green background",
]
OUT = os.path.normpath(os.path.join(common.HERE, "..", "..", "..", "test", "fixtures", "experts"))


def magnitude_importance(unet):
    """Data-free importance: L1 norm of each group's columns (the fixture has no training data)."""
    out = {}
    for name, kind, m, g in pruning.units(unet):
        w = pruning._cols(kind, m).detach().abs()
        out[name] = w.transpose(0, 1).reshape(w.shape[1], -1).sum(1).reshape(g, -1).sum(1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vocab = json.load(open(os.path.join(common.PACK, "tokenizer", "vocab.json")))
    torch.manual_seed(1234)  # export_fixtures.py: the text encoder first, then the UNet
    te = TextEncoder(len(vocab), **FIXTURE_CONFIG["text"]).eval()
    unet = UNet(**FIXTURE_CONFIG["unet"]).eval()
    d = FIXTURE_CONFIG["text"]["hidden_size"]
    imp = magnitude_importance(unet)
    full_macs = pruning.count_macs(unet)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    experts = [{"name": "full", "path": "../unet/model.onnx", "relative_macs": 1.0,
                "parameters": pruning.count_params(unet), "latency_ms": 0}]
    for name, target in (("half", 0.5), ("lite", 0.7)):
        plan, ratio = pruning.plan_for_budget(unet, imp, target)
        e = pruning.materialise(unet, plan)
        path = os.path.join(args.out, name, "model.onnx")
        export_unet(e, path, d, latent=16)
        compact(path)
        os.remove(os.path.join(args.out, name, "config.json"))
        experts.append({"name": name, "path": f"{name}/model.onnx", "relative_macs": round(ratio, 4),
                        "parameters": pruning.count_params(e), "latency_ms": 0})
    # a router anchored on three captions (output k = expert k): each weight row is the centred pooled
    # embedding of its anchor, so those prompts (and prompts like them) reach different experts
    tok = common.tokenizer()
    with torch.no_grad():
        pooled = te(torch.tensor([tok(c) for c in ANCHORS], dtype=torch.long))[1]
    w = pooled - pooled.mean(0, keepdim=True)
    w = w / w.norm(dim=1, keepdim=True) * 10
    b = -(w * pooled.mean(0, keepdim=True)).sum(1)
    router = {"type": "linear", "input_dim": d, "weights": [[round(float(v), 5) for v in r] for r in w],
              "bias": [round(float(v), 5) for v in b], "expert_for_code": [e["name"] for e in experts]}
    json.dump(router, open(os.path.join(args.out, "router.json"), "w"), indent=1)
    json.dump({"experts": experts, "router": "router.json", "full": "full",
               "info": {"note": "test fixture: pruned copies of test/fixtures/contracts/base/unet, untrained"}},
              open(os.path.join(args.out, "manifest.json"), "w"), indent=1)
    print("wrote", args.out, [(e["name"], e["relative_macs"]) for e in experts], "full MACs", full_macs)


if __name__ == "__main__":
    main()
