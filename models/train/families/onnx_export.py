"""ONNX export of the family modules in the I/O contracts real exports have (REFERENCE section 5), per vintage:

  vintage            input_ids  UNet timestep        vae_encoder output       written by
  diffusers-script   int32      float32 [batch]      latent_sample (a draw)   diffusers' convert_stable_diffusion_checkpoint_to_onnx.py
  optimum-1.14       int64      int64 [batch]        latent_sample (a draw)   optimum-cli export onnx, 1.14 - 1.22
  optimum-1.23       int64      int64 [batch]        latent_parameters        optimum 1.23
  optimum-1.24       int64      float32 [] (scalar)  latent_parameters        optimum >= 1.24

SDXL text encoders also return every hidden state (hidden_states.0 .. hidden_states.N), as optimum exports them.
fp16 packs are converted after export (fp16.py). Two ways to write a model:
  export()           torch.onnx.export with constant folding, weights inline or in model.onnx_data (small widths)
  export_streamed()  for the full widths: the graph is traced from a module whose weights are never filled in
                     (untouched memory), weight transposes are folded the way torch's constant folding does
                     (anonymous onnx::MatMul_<n> initializers), and the values are generated tensor by tensor
                     straight into model.onnx_data (weights.py), so a 10 GB UNet needs no 10 GB copy in memory.
"""
import contextlib
import glob
import os
import types

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from fp16 import convert_graph
from weights import initial_value

OPSET = 14  # what both exporters use for SD (Trilu for the CLIP mask needs 14)
PROTOBUF_LIMIT = 2 ** 31 - 2 ** 20  # a model.onnx above this needs external data

VINTAGES = {
    "diffusers-script": dict(ids="int32", timestep="float32[batch]", vae_output="latent_sample", pipeline="OnnxStableDiffusionPipeline", axes="script"),
    "optimum-1.14": dict(ids="int64", timestep="int64[batch]", vae_output="latent_sample", pipeline="ORTStableDiffusionPipeline", axes="optimum"),
    "optimum-1.23": dict(ids="int64", timestep="int64[batch]", vae_output="latent_parameters", pipeline="ORTStableDiffusionPipeline", axes="optimum"),
    "optimum-1.24": dict(ids="int64", timestep="float32[]", vae_output="latent_parameters", pipeline="ORTStableDiffusionPipeline", axes="optimum"),
}


def _axes(vintage, script, optimum):
    return script if VINTAGES[vintage]["axes"] == "script" else optimum


# ---------------------------------------------------------------- forwards as the exporters patch them

def text_encoder_io(model, vintage, outputs):
    """outputs: names in order, from last_hidden_state, pooler_output, text_embeds, hidden_states.N."""
    ids_dtype = torch.int32 if VINTAGES[vintage]["ids"] == "int32" else torch.int64
    ids = torch.full((1, 77), 49407, dtype=ids_dtype)
    ids[0, :4] = torch.tensor([49406, 320, 1125, 49407], dtype=ids_dtype)
    base = type(model).forward

    def forward(self, input_ids):
        last, pooled, states = base(self, input_ids)
        values = {"last_hidden_state": last, "pooler_output": pooled, "text_embeds": pooled}
        values.update({f"hidden_states.{i}": s for i, s in enumerate(states)})
        return tuple(values[n] for n in outputs)

    seq = _axes(vintage, {0: "batch", 1: "sequence"}, {0: "batch_size", 1: "sequence_length"})
    axes = {"input_ids": seq}
    for n in outputs:
        axes[n] = {0: seq[0]} if n in ("pooler_output", "text_embeds") else seq
    return forward, (ids,), ["input_ids"], list(outputs), axes


def unet_io(model, vintage, batch=2, latent=8):
    c = model.config
    t_kind = VINTAGES[vintage]["timestep"]
    if t_kind == "float32[]":
        t = torch.tensor(999.0)
    elif t_kind == "int64[batch]":
        t = torch.tensor([999, 499][:batch], dtype=torch.int64)
    else:
        t = torch.tensor([999.0, 499.0][:batch])
    args = [torch.randn(batch, c["in_channels"], latent, latent), t, torch.randn(batch, 77, c["cross_attention_dim"])]
    names = ["sample", "timestep", "encoder_hidden_states"]
    b = _axes(vintage, "batch", "batch_size")
    axes = {"sample": _axes(vintage, {0: b, 1: "channels", 2: "height", 3: "width"}, {0: b, 2: "height", 3: "width"}),
            "timestep": {} if t_kind == "float32[]" else {0: _axes(vintage, "batch", "steps")},
            "encoder_hidden_states": {0: b, 1: _axes(vintage, "sequence", "sequence_length")},
            "out_sample": {0: b, 2: "height", 3: "width"}}
    if c.get("addition_embed_type") == "text_time":
        args += [torch.randn(batch, c["projection_class_embeddings_input_dim"] - 6 * c["addition_time_embed_dim"]), torch.tensor([[512.0, 512, 0, 0, 512, 512]] * batch)]
        names += ["text_embeds", "time_ids"]
        axes.update({"text_embeds": {0: b}, "time_ids": {0: b}})
    if c.get("time_cond_proj_dim"):
        args.append(torch.randn(batch, c["time_cond_proj_dim"]))
        names.append("timestep_cond")
        axes["timestep_cond"] = {0: b}
    base = type(model).forward
    if "timestep_cond" in names and "text_embeds" not in names:
        forward = lambda self, sample, timestep, ehs, cond: base(self, sample, timestep, ehs, timestep_cond=cond)
    else:
        forward = lambda self, *a: base(self, *a)
    return forward, tuple(args), names, ["out_sample"], axes


def vae_io(model, vintage, part, size=64):
    """part: encoder | decoder (AutoencoderKL or AutoencoderTiny)."""
    b = _axes(vintage, "batch", "batch_size")
    tiny = not hasattr(model, "quant_conv")
    if part == "encoder":
        model.mode = "encode" if tiny else VINTAGES[vintage]["vae_output"]
        out = "latent_sample" if tiny else VINTAGES[vintage]["vae_output"]
        axes = {"sample": _axes(vintage, {0: b, 1: "channels", 2: "height", 3: "width"}, {0: b, 2: "sample_height", 3: "sample_width"}),
                out: _axes(vintage, {0: b, 1: "channels", 2: "height", 3: "width"}, {0: b, 2: "sample_height / 8", 3: "sample_width / 8"})}
        return (lambda self, x: type(self).forward(self, x)), (torch.rand(1, 3, size, size) * 2 - 1,), ["sample"], [out], axes
    model.mode = "decode"
    axes = {"latent_sample": _axes(vintage, {0: b, 1: "channels", 2: "height", 3: "width"}, {0: b, 2: "latent_height", 3: "latent_width"}),
            "sample": _axes(vintage, {0: b, 1: "channels", 2: "height", 3: "width"}, {0: b, 2: "latent_height * 8", 3: "latent_width * 8"})}
    return (lambda self, z: type(self).forward(self, z)), (torch.randn(1, 4, size // 8, size // 8),), ["latent_sample"], ["sample"], axes


# ---------------------------------------------------------------- writing

def _trace(model, io, path, fold):
    forward, args, inputs, outputs, axes = io
    # Training mode (dropout is 0 everywhere) so the exporter merges initializers only when they are the same
    # tensor, never by equal values: the streamed path traces all-zero weights.
    model.train()
    model.forward = types.MethodType(forward, model)  # patched on the instance: node names keep the module paths
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                              opset_version=OPSET, do_constant_folding=fold, training=torch.onnx.TrainingMode.PRESERVE)
    finally:
        del model.forward
        model.eval()


def save(model_proto, path, external):
    """external: weights in <path>_data beside the graph (one file, as optimum writes large models)."""
    if os.path.exists(path + "_data"):
        os.remove(path + "_data")
    if external:
        onnx.save_model(model_proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + "_data", size_threshold=1024)
    else:
        onnx.save_model(model_proto, path)


def export(model, io, path, fp16=False, external=False):
    """Small widths: torch's exporter with constant folding; fp16 converted afterwards."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _trace(model, io, path, fold=True)
    m = onnx.load(path)
    if fp16:
        convert_graph(m)
    onnx.checker.check_model(m)
    save(m, path, external)
    return m


@contextlib.contextmanager
def uninitialised():
    """Modules built inside keep torch.empty parameters: large ones are fresh pages never written, so tracing
    reads the shared zero page and a multi-GB model costs little resident memory."""
    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.GroupNorm)
    saved = [(k, k.reset_parameters) for k in kinds]
    for k in kinds:
        k.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for k, f in saved:
            k.reset_parameters = f


def export_streamed(model, io, path, seed, fp16=False):
    """Full widths: trace without folding, fold weight transposes, generate values into model.onnx_data."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    work = path + ".trace"
    os.makedirs(work, exist_ok=True)
    _trace(model, io, os.path.join(work, "model.onnx"), fold=False)
    m = onnx.load(os.path.join(work, "model.onnx"), load_external_data=False)
    g = m.graph
    params = {i.name: i for i in g.initializer}
    # 1. fold Transpose(weight) into an anonymous initializer in the transposed layout
    plan = []  # (initializer name, source parameter name, torch shape, permutation or None)
    keep_nodes = []
    counter = 0
    for node in g.node:
        if node.op_type == "Transpose" and node.input[0] in params:
            src = params[node.input[0]]
            perm = list(helper.get_attribute_value(node.attribute[0])) if node.attribute else list(range(len(src.dims)))[::-1]
            counter += 1
            new = f"onnx::MatMul_{counter}"
            for other in g.node:
                for k, x in enumerate(other.input):
                    if x == node.output[0]:
                        other.input[k] = new
            plan.append((new, src.name, list(src.dims), perm))
            continue
        keep_nodes.append(node)
    del g.node[:]
    g.node.extend(keep_nodes)
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    plan += [(i.name, i.name, list(i.dims), None) for i in g.initializer if i.name in used]
    # 2. values, tensor by tensor, into one external data file
    data_path = path + "_data"
    dtype = np.float16 if fp16 else np.float32
    inits = []
    with open(data_path, "wb") as f:
        for name, source, shape, perm in plan:
            src = params[source]
            if src.data_type != TensorProto.FLOAT:  # integer constants the tracer kept as initializers
                value = numpy_helper.to_array(src, base_dir=work)
            else:
                value = initial_value(source, shape, seed, np.float32)
                value = value.transpose(perm) if perm else value
                value = value.astype(dtype)
            t = numpy_helper.from_array(np.ascontiguousarray(value), name)
            offset = f.tell()
            raw = t.raw_data
            f.write(raw)
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", os.path.basename(data_path)), ("offset", str(offset)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
    del g.initializer[:]
    g.initializer.extend(inits)
    if fp16:
        convert_graph(m)
    onnx.save_model(m, path)
    total = os.path.getsize(data_path)
    if total < PROTOBUF_LIMIT:  # small enough to keep inline, as the exporters do below 2 GB
        inline = onnx.load(path)
        os.remove(data_path)
        onnx.save_model(inline, path)
    for f in glob.glob(os.path.join(work, "*")):
        os.remove(f)
    os.rmdir(work)
    return total


def describe_io(path):
    """{inputs: {name: [dtype, dims]}, outputs: ...} for the component's config.json."""
    m = onnx.load(path, load_external_data=False)
    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return [onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[t.elem_type].name, dims]
    return {"inputs": {i.name: spec(i) for i in m.graph.input}, "outputs": {o.name: spec(o) for o in m.graph.output}}
