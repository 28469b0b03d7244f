"""Regenerate the ONNX contract fixtures in test/fixtures/contracts/ (random-initialised, narrow
models of the tiny-shapes architecture; each folder is a complete pack).

python3 export_fixtures.py [--out test/fixtures/contracts]
"""
import argparse
import json
import os
import shutil
import sys

import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from export_pack import PACK_DIR, export_pack  # noqa: E402
from models import FIXTURE_CONFIG, UNet, VAE, TextEncoder  # noqa: E402

def compact(path):
    """Shrink a fixture graph without changing semantics or node names: intermediate tensor
    (edge) names become short ids, identical Constant nodes are merged. Node names (module
    scoped, e.g. /down_blocks.1/attentions.0/.../to_q/MatMul), graph input/output names and
    initializer names are kept."""
    m = onnx.load(path)
    g = m.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return  # subgraphs reference outer names; leave such graphs untouched
    keep = {i.name for i in g.input} | {o.name for o in g.output} | {i.name for i in g.initializer}
    # merge identical constants
    seen, alias, nodes = {}, {}, []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            key = n.attribute[0].t.SerializeToString()
            if key in seen and n.output[0] not in keep:
                alias[n.output[0]] = seen[key]
                continue
            seen[key] = n.output[0]
        nodes.append(n)
    rename = {}
    for n in nodes:
        for i, x in enumerate(n.input):
            x = alias.get(x, x)
            n.input[i] = rename.get(x, x)
        for i, x in enumerate(n.output):
            if x and x not in keep:
                rename[x] = f"t{len(rename)}"
                n.output[i] = rename[x]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    for n in g.node:
        n.doc_string = ""
    onnx.checker.check_model(m)
    onnx.save(m, path)


VARIANTS = {
    "base": {},
    "int64-timestep": {"timestep": "int64"},
    "scalar-timestep": {"timestep": "float32_scalar"},
    "fp16": {"fp16": True},
    "latent-parameters": {"vae_output": "latent_parameters"},
    "int64-ids": {"ids_dtype": "int64"},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..", "..", "test", "fixtures", "contracts")))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok_dir = os.path.join(PACK_DIR, "tokenizer")
    vocab = json.load(open(os.path.join(tok_dir, "vocab.json")))
    for name, contract in VARIANTS.items():
        torch.manual_seed(1234)  # same random weights in every variant
        te = TextEncoder(len(vocab), **FIXTURE_CONFIG["text"])
        unet = UNet(**FIXTURE_CONFIG["unet"])
        vae = VAE(**FIXTURE_CONFIG["vae"])
        d = os.path.join(args.out, name)
        shutil.rmtree(d, ignore_errors=True)
        export_pack(d, te, unet, vae, 1.0, tok_dir, contract=contract,
                    info={"fixture": name, "random_weights": True, "note": "contract test fixture; outputs are meaningless"})
        for sub in ("text_encoder", "unet", "vae_encoder", "vae_decoder"):
            compact(os.path.join(d, sub, "model.onnx"))
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        print(f"{name:20s} {size/1024:.0f} KB {contract}")


if __name__ == "__main__":
    main()
