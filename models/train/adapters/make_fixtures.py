"""Test fixtures for the adapter code (test/fixtures/adapters/, < 1 MB):

  fixture-a.safetensors  orthogonal, basis column block 0, rank 2: every transformer Linear of the contract
                         fixture UNet (MatMul nodes) + conv_in (Conv 3x3) + time_embedding.linear_1 (Gemm)
  fixture-b.safetensors  orthogonal, column block 1 (disjoint from a)
  fixture-c.safetensors  plain LoRA (random down-projections: overlaps a and b)
  unet-lora-branch.onnx  the contract fixture UNet (test/fixtures/contracts/base) with explicit LoRA branches
                         y = W x + 1.0 * s_a up_a (down_a x) + 0.5 * s_b up_b (down_b x) added as graph nodes:
                         the reference a merged model (a at weight 1, b at weight 0.5) must reproduce.

python3 make_fixtures.py
"""
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lora  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
BASE = os.path.join(ROOT, "test", "fixtures", "contracts", "base", "unet", "model.onnx")
OUT = os.path.join(ROOT, "test", "fixtures", "adapters")
RANK = 2
ALPHA = 1.0
BRANCH_WEIGHTS = {"fixture-a": 1.0, "fixture-b": 0.5}


def targets(model):
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        path = n.name.lstrip("/").rsplit("/", 1)[0].replace("/", ".")
        if n.op_type == "MatMul" and n.input[1] in inits and ".attentions." in path and path.endswith(lora.TARGET_SUFFIXES):
            w = numpy_helper.to_array(inits[n.input[1]])  # [in, out]
            out.append((n, path, w.shape[0], w.shape[1], None))
        elif n.name in ("/conv_in/Conv", "/time_embedding/linear_1/Gemm"):
            w = numpy_helper.to_array(inits[n.input[1]])  # [out, in(, kh, kw)]
            out.append((n, path, w.shape[0], int(np.prod(w.shape[1:])), w.shape[2:] if w.ndim == 4 else None))
    return out


def make_adapter(name, tg, method, block, seed):
    rng = np.random.default_rng(seed)
    tensors, layers = {}, {}
    for n, path, fin, fout_or_in, kernel in tg:
        if n.op_type == "MatMul":
            nin, nout = fin, fout_or_in
        else:
            nout, nin = fin, fout_or_in
        if method == "orthogonal":
            down = lora.orthogonal_basis(nin)[:, block * RANK:(block + 1) * RANK].T.copy()
        else:
            down = (rng.standard_normal((RANK, nin)) / np.sqrt(nin)).astype(np.float32)
        up = (0.3 * rng.standard_normal((nout, RANK))).astype(np.float32)
        key = lora.kohya_key(path)
        d = down.reshape(RANK, nin // int(np.prod(kernel)), *kernel) if kernel is not None else down
        u = up.reshape(nout, RANK, 1, 1) if kernel is not None else up
        tensors[key + ".lora_down.weight"] = d
        tensors[key + ".lora_up.weight"] = u
        tensors[key + ".alpha"] = np.array(ALPHA, np.float32)
        layers[n.name] = (d, u, ALPHA / RANK)
    meta = {"kind": "adapter", "method": method, "concept": name, "trigger": name, "rank": RANK, "alpha": ALPHA,
            "basis_seed": lora.BASIS_SEED if method == "orthogonal" else "", "column_block": block if method == "orthogonal" else ""}
    lora.write_safetensors(os.path.join(OUT, f"{name}.safetensors"), tensors, meta)
    return layers


def add_branches(model, adapters):
    g = model.graph
    nodes = []
    for n in g.node:
        nodes.append(n)
        branches = [(a, w, layers[n.name]) for a, (w, layers) in adapters.items() if n.name in layers]
        if not branches:
            continue
        y = n.output[0]
        n.output[0] = y + "_base"
        acc = y + "_base"
        for k, (a, w, (down, up, s)) in enumerate(branches):
            p = f"{n.name}_lora_{a}"
            if n.op_type == "Conv":
                attrs = {at.name: helper.get_attribute_value(at) for at in n.attribute}
                g.initializer.append(numpy_helper.from_array(down, p + "_down"))
                g.initializer.append(numpy_helper.from_array((up * s * w).astype(np.float32), p + "_up"))
                nodes.append(helper.make_node("Conv", [n.input[0], p + "_down"], [p + "_h"], name=p + "/down", **{k2: v for k2, v in attrs.items() if k2 != "group"}))
                nodes.append(helper.make_node("Conv", [p + "_h", p + "_up"], [p + "_b"], name=p + "/up"))
            else:
                g.initializer.append(numpy_helper.from_array(down.reshape(down.shape[0], -1).T.copy(), p + "_down"))
                g.initializer.append(numpy_helper.from_array((up.reshape(up.shape[0], -1).T * s * w).astype(np.float32), p + "_up"))
                nodes.append(helper.make_node("MatMul", [n.input[0], p + "_down"], [p + "_h"], name=p + "/down"))
                nodes.append(helper.make_node("MatMul", [p + "_h", p + "_up"], [p + "_b"], name=p + "/up"))
            out = y if k == len(branches) - 1 else p + "_sum"
            nodes.append(helper.make_node("Add", [acc, p + "_b"], [out], name=p + "/add"))
            acc = out
    del g.node[:]
    g.node.extend(nodes)
    return model


def main():
    os.makedirs(OUT, exist_ok=True)
    model = onnx.load(BASE)
    tg = targets(model)
    a = make_adapter("fixture-a", tg, "orthogonal", 0, 1)
    b = make_adapter("fixture-b", tg, "orthogonal", 1, 2)
    make_adapter("fixture-c", tg, "lora", 0, 3)
    ref = add_branches(model, {"fixture-a": (BRANCH_WEIGHTS["fixture-a"], a), "fixture-b": (BRANCH_WEIGHTS["fixture-b"], b)})
    onnx.checker.check_model(ref)
    onnx.save(ref, os.path.join(OUT, "unet-lora-branch.onnx"))
    print(len(tg), "target layers;", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
