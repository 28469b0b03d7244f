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


def _float32_only_values(graph):
    names = set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            if (node.op_type, i) in FLOAT32_INPUTS:
                names.add(name)
    return names


def convert_graph(model):
    """Changes every float32 type in the graph to float16 (values of in-memory initializers included)."""
    g = model.graph
    keep = _float32_only_values(g)
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep and not init.external_data:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
        elif init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.data_type = TensorProto.FLOAT16  # external: the values are written as fp16 by the caller
    for node in g.node:
        for attr in node.attribute:
            if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT and not (node.output and node.output[0] in keep):
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
    for value in list(g.input) + list(g.output):
        t = value.type.tensor_type
        if t.elem_type == TensorProto.FLOAT:
            t.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    return model
