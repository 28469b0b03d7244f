"""fp32 -> fp16 ONNX graphs, the way onnxconverter-common's float16 conversion (used by Olive and ORT's SD
examples) writes them: every float tensor becomes float16 - weights, graph inputs and outputs, Constant values,
Cast targets - except inputs that the ONNX spec requires to be float32 (Resize scales). Hand-written because
onnxconverter-common is not installed here. torch 1.13 cannot trace a half-precision model on the CPU, which is how
optimum's --dtype fp16 export makes one on a GPU.

Initializers in memory are converted; external ones are only marked float16 (whoever writes their data writes fp16).
"""
import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# (op type, input index) pairs that must stay float32
FLOAT32_INPUTS = {("Resize", 2), ("Upsample", 1)}


def _float32_only(graph):
    """Values that must stay float32, and the nodes computing them: the inputs of FLOAT32_INPUTS and everything
    upstream of them (without constant folding, Resize scales are a Concat of Constants)."""
    producers = {o: n for n in graph.node for o in n.output}
    values = {name for node in graph.node for i, name in enumerate(node.input) if (node.op_type, i) in FLOAT32_INPUTS}
    nodes = set()
    work = list(values)
    while work:
        node = producers.get(work.pop())
        if node is None or node.output[0] in nodes:
            continue
        nodes.add(node.output[0])
        for name in node.input:
            if name and name not in values:
                values.add(name)
                work.append(name)
    return values, nodes


def convert_graph(model):
    """Changes every float32 type in the graph to float16 (values of in-memory initializers included)."""
    g = model.graph
    keep, keep_nodes = _float32_only(g)
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep and not init.external_data:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
        elif init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.data_type = TensorProto.FLOAT16  # external: the values are written as fp16 by the caller
    for node in g.node:
        if node.output and node.output[0] in keep_nodes:
            continue
        for attr in node.attribute:
            if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
    for value in list(g.input) + list(g.output):
        t = value.type.tensor_type
        if t.elem_type == TensorProto.FLOAT:
            t.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    return model


def convert_model_file(src, dst):
    """One model.onnx (and its external data) -> fp16, tensor by tensor: a multi-GB model never sits in memory."""
    import os

    m = onnx.load(src, load_external_data=False)
    external = [t for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not external:
        m = onnx.load(src)
        convert_graph(m)
        onnx.save_model(m, dst)
        return
    keep, _ = _float32_only(m.graph)
    base = os.path.dirname(src)
    data_name = os.path.basename(dst) + "_data"
    handles = {}
    with open(os.path.join(os.path.dirname(dst), data_name), "wb") as out:
        for t in external:
            info = {e.key: e.value for e in t.external_data}
            path = os.path.join(base, info["location"])
            f = handles.setdefault(path, open(path, "rb"))
            f.seek(int(info.get("offset", 0)))
            dtype = onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[t.data_type]
            count = int(np.prod(t.dims)) if len(t.dims) else 1
            values = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype.newbyteorder("<"))
            if t.data_type == TensorProto.FLOAT and t.name not in keep:
                values = values.astype("<f2")
            raw = values.tobytes()
            offset = out.tell()
            out.write(raw)
            del t.external_data[:]
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
    for f in handles.values():
        f.close()
    convert_graph(m)  # external initializers are only retyped here; their values were written above
    onnx.save_model(m, dst)


def main():
    """python3 fp16.py SRC_PACK DST_PACK: the same pack with every model in fp16 (configs and tokenizers copied)."""
    import argparse
    import json
    import os
    import shutil

    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    args = ap.parse_args()
    for root, _, files in os.walk(args.src):
        rel = os.path.relpath(root, args.src)
        os.makedirs(os.path.join(args.dst, rel), exist_ok=True)
        for name in files:
            src, dst = os.path.join(root, name), os.path.join(args.dst, rel, name)
            if name == "model.onnx":
                convert_model_file(src, dst)
            elif name.endswith(("_data", ".pb")) or name.endswith(".onnx_data"):
                continue  # rewritten with its model
            else:
                shutil.copyfile(src, dst)
    index = os.path.join(args.dst, "model_index.json")
    meta = json.load(open(index))
    meta.setdefault("family_pack", {})["fp16"] = True
    json.dump(meta, open(index, "w"), indent=2)


if __name__ == "__main__":
    main()
