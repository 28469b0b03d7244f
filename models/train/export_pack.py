"""Export a diffusers/optimum-layout ONNX pack.

python3 export_pack.py [--out models/packs/tiny-shapes] [--random]
  (default: load checkpoints/vae.pt and checkpoints/unet.pt)

Library use: export_pack(out_dir, text_encoder, unet, vae, scaling_factor, contract=..., info=...)
contract keys (defaults = main pack):
  ids_dtype:     "int32" | "int64"                 text_encoder input_ids
  timestep:      "float32" | "int64" | "float32_scalar"
  fp16:          False | True                        unet sample / timestep / encoder_hidden_states / out_sample float16
  vae_output:    "latent_sample" | "latent_parameters"
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
from models import MAIN_CONFIG, UNet, VAE, TextEncoder, count_params  # noqa: E402

OPSET = 17
DEFAULT_CONTRACT = dict(ids_dtype="int32", timestep="float32", fp16=False, vae_output="latent_sample")
PACK_DIR = os.path.normpath(os.path.join(HERE, "..", "packs", "tiny-shapes"))
SCHEDULER = {
    "_class_name": "LCMScheduler",
    "_diffusers_version": "0.25.0",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "original_inference_steps": 50,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "rescale_betas_zero_snr": False,
}


def _export(model, args, path, input_names, output_names, dynamic_axes, output_shapes=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, args, path, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                          export_params=True)
    m = onnx.load(path)
    if output_shapes:  # pin declared output shapes (the exporter invents dim names for some outputs)
        for o in m.graph.output:
            if o.name in output_shapes:
                dims = o.type.tensor_type.shape.dim
                for d, v in zip(dims, output_shapes[o.name]):
                    if isinstance(v, int):
                        d.ClearField("dim_param")
                        d.dim_value = v
                    else:
                        d.ClearField("dim_value")
                        d.dim_param = v
        onnx.save(m, path)
    onnx.checker.check_model(m)
    return m


# What the service should keep requests within (models/pack-kinds.ts): measured with the evaluator on held-out
# captions, full CFG 2 keeps .98+ accuracy and 7 drops it to about .6; 128-160 px sides render well, 96 and 192 do not.
RECOMMENDED = {"guidance_range": [1, 2], "size_range": [128, 160]}


def export_pack(out, te, unet, vae, scaling_factor, tok_dir, contract=None, info=None, image_size=128, recommended=None):
    c = dict(DEFAULT_CONTRACT)
    c.update(contract or {})
    os.makedirs(out, exist_ok=True)
    D = te.config["hidden_size"]
    lat = image_size // 8
    # ---- text encoder
    ids_dtype = torch.int32 if c["ids_dtype"] == "int32" else torch.int64
    ids = torch.full((2, 77), te.config["vocab_size"] - 1, dtype=ids_dtype)
    ids[:, 0] = te.config["vocab_size"] - 2
    _export(te, (ids,), os.path.join(out, "text_encoder", "model.onnx"), ["input_ids"],
            ["last_hidden_state", "pooler_output"],
            {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}},
            {"last_hidden_state": ["batch", 77, D], "pooler_output": ["batch", D]})
    tcfg = dict(te.config)
    tcfg.update({"_name_or_path": "tiny-shapes/text_encoder", "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
                 "bos_token_id": te.config["vocab_size"] - 2, "eos_token_id": te.config["vocab_size"] - 1,
                 "pad_token_id": te.config["vocab_size"] - 1, "projection_dim": D, "layer_norm_eps": 1e-5,
                 "onnx_io": {"inputs": {"input_ids": [c["ids_dtype"], ["batch", 77]]},
                             "outputs": {"last_hidden_state": ["float32", ["batch", 77, D]], "pooler_output": ["float32", ["batch", D]]}},
                 "num_parameters": count_params(te)})
    json.dump(tcfg, open(os.path.join(out, "text_encoder", "config.json"), "w"), indent=1)
    # ---- unet
    fdt = torch.float16 if c["fp16"] else torch.float32
    fname = "float16" if c["fp16"] else "float32"
    sample = torch.randn(2, 4, lat, lat).to(fdt)
    ehs = torch.randn(2, 77, D).to(fdt)
    if c["timestep"] == "float32_scalar":
        t = torch.tensor(999.0).to(fdt)
        t_axes = {}
        t_shape = []
    else:
        t = torch.tensor([999, 499])
        t = t.to(torch.int64) if c["timestep"] == "int64" else t.to(fdt)
        t_axes = {"timestep": {0: "batch"}}
        t_shape = ["batch"]
    t_type = "int64" if c["timestep"] == "int64" else fname
    _export(unet, (sample, t, ehs), os.path.join(out, "unet", "model.onnx"),
            ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
            {"sample": {0: "batch", 2: "height", 3: "width"}, **t_axes, "encoder_hidden_states": {0: "batch"},
             "out_sample": {0: "batch", 2: "height", 3: "width"}})
    ucfg = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.25.0", "sample_size": lat,
            "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "mid_block_scale_factor": 1,
            "norm_eps": 1e-5, "only_cross_attention": False, "use_linear_projection": True, "upcast_attention": False}
    ucfg.update(unet.config)
    ucfg["attention_head_dim_note"] = "attention_head_dim is the true per-head width; num_attention_heads lists heads per block"
    ucfg["latent_multiple"] = 2 ** (len(unet.config["block_out_channels"]) - 1)
    ucfg["prediction_type"] = "epsilon"
    ucfg["onnx_io"] = {"inputs": {"sample": [fname, ["batch", 4, "height", "width"]], "timestep": [t_type, t_shape],
                                  "encoder_hidden_states": [fname, ["batch", 77, D]]},
                       "outputs": {"out_sample": [fname, ["batch", 4, "height", "width"]]}}
    ucfg["num_parameters"] = count_params(unet)
    json.dump(ucfg, open(os.path.join(out, "unet", "config.json"), "w"), indent=1)
    # ---- vae
    vcfg_base = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.25.0", "in_channels": 3, "out_channels": 3,
                 "latent_channels": vae.latent, "block_out_channels": vae.cfg["ch"], "norm_num_groups": vae.cfg["groups"],
                 "layers_per_block": 1, "act_fn": "silu", "sample_size": image_size, "scaling_factor": scaling_factor,
                 "downsample_factor": 8,
                 "architecture_note": "tiny-shapes VAE: 2x pixel-unshuffle + conv stages (encoder), nearest-upsample+conv stages and a final 2x pixel-shuffle (decoder); no quant_conv"}
    img = torch.rand(2, 3, image_size, image_size) * 2 - 1
    vae.mode = "encode_parameters" if c["vae_output"] == "latent_parameters" else "encode_mean"
    nch = 2 * vae.latent if c["vae_output"] == "latent_parameters" else vae.latent
    _export(vae, (img,), os.path.join(out, "vae_encoder", "model.onnx"), ["sample"], [c["vae_output"]],
            {"sample": {0: "batch", 2: "height", 3: "width"}, c["vae_output"]: {0: "batch", 2: "latent_height", 3: "latent_width"}})
    ecfg = dict(vcfg_base)
    ecfg["onnx_io"] = {"inputs": {"sample": ["float32", ["batch", 3, "height", "width"], "range [-1,1]"]},
                       "outputs": {c["vae_output"]: ["float32", ["batch", nch, "height/8", "width/8"],
                                   "mean then logvar (unscaled)" if nch == 2 * vae.latent else "posterior mean (unscaled; multiply by scaling_factor)"]}}
    json.dump(ecfg, open(os.path.join(out, "vae_encoder", "config.json"), "w"), indent=1)
    vae.mode = "decode"
    z = torch.randn(2, vae.latent, lat, lat)
    _export(vae, (z,), os.path.join(out, "vae_decoder", "model.onnx"), ["latent_sample"], ["sample"],
            {"latent_sample": {0: "batch", 2: "latent_height", 3: "latent_width"}, "sample": {0: "batch", 2: "height", 3: "width"}})
    vae.mode = "encode_mean"
    dcfg = dict(vcfg_base)
    dcfg["onnx_io"] = {"inputs": {"latent_sample": ["float32", ["batch", vae.latent, "latent_height", "latent_width"], "unscaled: divide by scaling_factor first"]},
                       "outputs": {"sample": ["float32", ["batch", 3, "8*latent_height", "8*latent_width"], "approx [-1,1], not clamped"]}}
    json.dump(dcfg, open(os.path.join(out, "vae_decoder", "config.json"), "w"), indent=1)
    # ---- tokenizer, scheduler, index
    td = os.path.join(out, "tokenizer")
    if os.path.abspath(td) != os.path.abspath(tok_dir):
        shutil.rmtree(td, ignore_errors=True)
        shutil.copytree(tok_dir, td)
    os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
    json.dump(SCHEDULER, open(os.path.join(out, "scheduler", "scheduler_config.json"), "w"), indent=1)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.25.0",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "LCMScheduler"],
        "text_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
        "vae_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tiny_shapes": dict({"version": 1, "image_size": image_size, "latent_size": lat, "latent_channels": vae.latent,
                             "scaling_factor": scaling_factor, "contract": c}, **(info or {})),
    }
    if recommended:
        index["streamdiffusion"] = recommended
    json.dump(index, open(os.path.join(out, "model_index.json"), "w"), indent=1)


def load_trained():
    vocab = json.load(open(os.path.join(PACK_DIR, "tokenizer", "vocab.json")))
    te = TextEncoder(len(vocab), **MAIN_CONFIG["text"])
    unet = UNet(**MAIN_CONFIG["unet"])
    vae = VAE(**MAIN_CONFIG["vae"])
    return te, unet, vae


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=PACK_DIR)
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--unet-ckpt", default=os.path.join(HERE, "checkpoints", "unet.pt"))
    args = ap.parse_args()
    torch.manual_seed(0)
    te, unet, vae = load_trained()
    info = {}
    sf = 1.0
    if not args.random:
        vck = torch.load(os.path.join(HERE, "checkpoints", "vae.pt"), map_location="cpu")
        vae.load_state_dict(vck["model"])
        uck = torch.load(args.unet_ckpt, map_location="cpu")
        unet.load_state_dict(uck["unet"])
        te.load_state_dict(uck["text_encoder"])
        sf = float(uck["scaling_factor"])
        info = uck.get("info", {})
        mpath = os.path.join(HERE, "checkpoints", "vae_metrics.json")
        if os.path.exists(mpath):
            info["vae"] = json.load(open(mpath))
    info["train"] = dict(info.get("train", {}), random_weights=bool(args.random))
    info["params"] = {"text_encoder": count_params(te), "unet": count_params(unet),
                      "vae_encoder": count_params(vae.encoder), "vae_decoder": count_params(vae.decoder)}
    export_pack(args.out, te, unet, vae, sf, os.path.join(PACK_DIR, "tokenizer"), info=info, recommended=None if args.random else RECOMMENDED)
    print("exported", args.out, "scaling_factor", sf)


if __name__ == "__main__":
    main()
