"""Builds a model pack of one family in the diffusers/optimum ONNX layout with random weights.

python3 build.py --family sd15|sd-turbo|sdxl-turbo --out DIR [--width reduced|full] [--vintage V] [--fp16]
                 [--lora NAME --reference FILE] [--seed N]

  --width reduced  the test packs (seconds; shipped in test/fixtures/families/)
  --width full     the published sizes, for the benchmark only (minutes and GBs; never commit them)
  --vintage        diffusers-script | optimum-1.14 | optimum-1.23 | optimum-1.24 (onnx_export.py)
  --lcm-distilled  an LCM-distilled UNet (SimianLuo/LCM_Dreamshaper_v7 style: time_cond_proj_dim 256, input timestep_cond)
  --lora NAME      also writes adapters/NAME.safetensors, a kohya LoRA for the UNet and text encoder(s)
  --reference F    torch outputs of the pack's models with and without that LoRA on fixed inputs (safetensors)

Writes model_index.json, scheduler/, tokenizer[_2]/, text_encoder[_2]/, unet/, vae_encoder/, vae_decoder/ and for
SDXL-Turbo taesd_encoder/ + taesd_decoder/, each model with a config.json as diffusers/transformers write them.
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from autoencoders import AutoencoderKL, AutoencoderTiny  # noqa: E402
from clip_text import CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402
from families import FAMILIES, SHIPPED  # noqa: E402
from lora import TEXT_TARGETS, UNET_TARGETS, ldm_path, make_lora, merge_lora, round_to_fp16, write_safetensors  # noqa: E402
from onnx_export import VINTAGES, describe_io, export, export_streamed, text_encoder_io, uninitialised, unet_io, vae_io  # noqa: E402
from weights import init_module  # noqa: E402

TOKENIZER = os.path.join(HERE, "tokenizer")
GB2 = 2 ** 31
LORA_RANK = 4


def param_bytes(model, fp16):
    return sum(p.numel() for p in model.parameters()) * (2 if fp16 else 4)


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def write_tokenizer(out, folder, pad):
    d = os.path.join(out, folder)
    os.makedirs(d, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(TOKENIZER, f), os.path.join(d, f))
    token = lambda t: {"content": t, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    write_json(os.path.join(d, "special_tokens_map.json"), {"bos_token": token("<|startoftext|>"), "eos_token": token("<|endoftext|>"),
                                                            "pad_token": pad if pad == "!" else token(pad), "unk_token": token("<|endoftext|>")})
    write_json(os.path.join(d, "tokenizer_config.json"), {"add_prefix_space": False, "bos_token": token("<|startoftext|>"), "clean_up_tokenization_spaces": True,
                                                          "do_lower_case": True, "eos_token": token("<|endoftext|>"), "errors": "replace",
                                                          "model_max_length": 77, "pad_token": pad if pad == "!" else token(pad),
                                                          "tokenizer_class": "CLIPTokenizer", "unk_token": token("<|endoftext|>")})


def component(model, io, path, width, fp16, external_name, seed, real_bytes):
    """Exports one model; weights go to external data when the real full-size model is over 2 GB (as the exporters do)."""
    t0 = time.time()
    if width == "full":
        export_streamed(model, io, path, seed, fp16)
        if external_name != "model.onnx_data" and os.path.exists(path + "_data"):
            _rename_external(path, external_name)
    else:
        export(model, io, path, fp16, external=real_bytes > GB2)
        if real_bytes > GB2 and external_name != "model.onnx_data":
            _rename_external(path, external_name)
    print(f"  {os.path.relpath(path)}: {time.time() - t0:.1f} s", flush=True)


def _rename_external(path, name):
    """The diffusers script names the UNet's external data weights.pb."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = name
    os.replace(path + "_data", os.path.join(os.path.dirname(path), name))
    onnx.save_model(m, path)


def build(family, out, width, vintage, fp16, seed, lora_name=None, reference=None, lcm_distilled=False):
    spec = FAMILIES[family](width)
    if lcm_distilled:
        spec["unet"]["time_cond_proj_dim"] = 256
    v = VINTAGES[vintage]
    external_name = "weights.pb" if vintage == "diffusers-script" else "model.onnx_data"
    full_spec = FAMILIES[family]("full")
    os.makedirs(out, exist_ok=True)
    models = {}
    scope = uninitialised if width == "full" else contextlib.nullcontext  # full width: weights generated while writing
    # 1. text encoders and tokenizers
    for k, (folder, tok_folder, config, pad, hidden_states) in enumerate(spec["text_encoders"]):
        with scope():
            te = CLIPTextModelWithProjection(config) if folder == "text_encoder_2" else CLIPTextModel(config)
        if width == "reduced":
            init_module(te, seed + k)
        outputs = (["text_embeds", "last_hidden_state"] if folder == "text_encoder_2" else ["last_hidden_state", "pooler_output"])
        if hidden_states:
            outputs += [f"hidden_states.{i}" for i in range(config["num_hidden_layers"] + 1)]
        full_te = full_spec["text_encoders"][k][2]
        real = (full_te["vocab_size"] + 77 + 12 * full_te["num_hidden_layers"] * full_te["hidden_size"]) * full_te["hidden_size"] * (2 if fp16 else 4)
        path = os.path.join(out, folder, "model.onnx")
        component(te, text_encoder_io(te, vintage, outputs), path, width, fp16, "model.onnx_data", seed + k, real)
        write_json(os.path.join(out, folder, "config.json"), dict(config, _name_or_path=f"{family}/{folder}", torch_dtype="float16" if fp16 else "float32",
                                                                   onnx_io=describe_io(path)))
        write_tokenizer(out, tok_folder, pad)
        models[folder] = te
    # 2. UNet
    with scope():
        unet = _unet(spec)
    if width == "reduced":
        init_module(unet, seed + 10)
    path = os.path.join(out, "unet", "model.onnx")
    with uninitialised():  # the published size decides external data; its memory is never touched
        real = param_bytes(_unet(full_spec), fp16)
    component(unet, unet_io(unet, vintage), path, width, fp16, external_name, seed + 10, real)
    write_json(os.path.join(out, "unet", "config.json"), dict(spec["unet"], onnx_io=describe_io(path)))
    models["unet"] = unet
    # 3. VAE (and TAESD)
    with scope():
        vae = AutoencoderKL(spec["vae"])
    if width == "reduced":
        init_module(vae, seed + 20)
    for part, folder in (("encoder", "vae_encoder"), ("decoder", "vae_decoder")):
        path = os.path.join(out, folder, "model.onnx")
        component(vae, vae_io(vae, vintage, part), path, width, fp16, "model.onnx_data", seed + 20, 0)
        write_json(os.path.join(out, folder, "config.json"), dict(spec["vae"], onnx_io=describe_io(path)))
    if spec["taesd"]:
        with scope():
            tiny = AutoencoderTiny(spec["taesd"])
        if width == "reduced":
            init_module(tiny, seed + 30)
        for part, folder in (("encoder", "taesd_encoder"), ("decoder", "taesd_decoder")):
            path = os.path.join(out, folder, "model.onnx")
            component(tiny, vae_io(tiny, vintage, part), path, width, fp16, "model.onnx_data", seed + 30, 0)
            write_json(os.path.join(out, folder, "config.json"), dict(spec["taesd"], onnx_io=describe_io(path)))
    # 4. scheduler and index
    write_json(os.path.join(out, "scheduler", "scheduler_config.json"), spec["scheduler"])
    index = {"_class_name": v["pipeline"].replace("StableDiffusion", "StableDiffusionXL") if family == "sdxl-turbo" else v["pipeline"],
             "_diffusers_version": "0.25.0", "scheduler": ["diffusers", spec["scheduler"]["_class_name"]]}
    for folder, tok_folder, *_ in spec["text_encoders"]:
        index[folder] = ["diffusers", "OnnxRuntimeModel"]
        index[tok_folder] = ["transformers", "CLIPTokenizer"]
    for folder in ("unet", "vae_encoder", "vae_decoder") + (("taesd_encoder", "taesd_decoder") if spec["taesd"] else ()):
        index[folder] = ["diffusers", "OnnxRuntimeModel"]
    index.update(spec["index_extra"])
    index["family_pack"] = {"family": family, "width": width, "vintage": vintage, "fp16": fp16, "seed": seed, "lcm_distilled": lcm_distilled,
                            "random_weights": True, "built_by": "models/train/families/build.py"}
    write_json(os.path.join(out, "model_index.json"), index)
    if lora_name:
        write_lora(family, spec, models, out, lora_name, seed, fp16, vintage, reference)


def _unet(spec):
    from unet_2d_condition import UNet2DConditionModel

    return UNet2DConditionModel(spec["unet"])


def write_lora(family, spec, models, out, name, seed, fp16, vintage, reference):
    """adapters/<name>.safetensors plus torch reference outputs (base and merged) on fixed inputs."""
    xl = family == "sdxl-turbo"
    unet_key = (lambda p: ldm_path(p, spec["unet"])) if xl else (lambda p: p)
    te_prefix = {"text_encoder": "lora_te1_" if xl else "lora_te_", "text_encoder_2": "lora_te2_"}
    tensors = make_lora(models["unet"], "lora_unet_", UNET_TARGETS, LORA_RANK, seed + 100, unet_key)
    for k, folder in enumerate(f for f in ("text_encoder", "text_encoder_2") if f in models):
        tensors.update(make_lora(models[folder], te_prefix[folder], TEXT_TARGETS, LORA_RANK, seed + 101 + k))
    os.makedirs(os.path.join(out, "adapters"), exist_ok=True)
    write_safetensors(os.path.join(out, "adapters", name + ".safetensors"), tensors,
                      {"ss_network_module": "networks.lora", "ss_network_dim": LORA_RANK, "ss_network_alpha": LORA_RANK / 2,
                       "ss_base_model_version": "sdxl_base_v1-0" if xl else ("sd_v2" if family == "sd-turbo" else "sd_v1"),
                       "ss_network_args": json.dumps({"conv_dim": LORA_RANK, "conv_alpha": LORA_RANK / 2}), "family_pack": family})
    if not reference:
        return
    weight = 0.8
    ref = {}
    g = torch.Generator().manual_seed(seed + 200)
    ids_rows = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])  # BOS, 5 tokens, EOS, padding
    c = spec["unet"]
    latent = 8
    inputs = {"sample": torch.randn(1, 4, latent, latent, generator=g), "encoder_hidden_states": torch.randn(1, 77, c["cross_attention_dim"], generator=g)}
    timestep = torch.tensor(999.0) if VINTAGES[vintage]["timestep"] == "float32[]" else torch.tensor([999.0])
    if xl:
        inputs["text_embeds"] = torch.randn(1, c["projection_class_embeddings_input_dim"] - 6 * c["addition_time_embed_dim"], generator=g)
        inputs["time_ids"] = torch.tensor([[512.0, 512, 0, 0, 512, 512]])
    for key, value in inputs.items():
        ref[f"unet.{key}"] = value.numpy()
    ref["unet.timestep"] = timestep.reshape(-1).numpy()
    ref["text.input_ids"] = ids_rows.float().numpy()
    for stage in ("base", "lora"):
        for folder in [f for f in ("text_encoder", "text_encoder_2") if f in models] + ["unet"]:
            m = models[folder]
            if fp16 and stage == "base":
                round_to_fp16(m)
            if stage == "lora":
                prefix = te_prefix.get(folder, "lora_unet_")
                merge_lora(m, tensors, prefix, weight, unet_key if folder == "unet" else (lambda p: p), round_fp16=fp16)
            m.eval()
            with torch.no_grad():
                if folder == "unet":
                    y = m(inputs["sample"], timestep, inputs["encoder_hidden_states"], inputs.get("text_embeds"), inputs.get("time_ids"))
                    ref[f"unet.out_sample.{stage}"] = y.numpy()
                else:
                    last, pooled, states = m(ids_rows)
                    ref[f"{folder}.last_hidden_state.{stage}"] = last.numpy()
                    ref[f"{folder}.pooled.{stage}"] = pooled.numpy()
                    ref[f"{folder}.penultimate.{stage}"] = states[-2].numpy()
    os.makedirs(os.path.dirname(reference), exist_ok=True)
    write_safetensors(reference, {k: np.ascontiguousarray(v, np.float32) for k, v in ref.items()},
                      {"adapter": name, "weight": weight, "family": family, "fp16": fp16, "vintage": vintage,
                       "note": "torch outputs of the pack's models without (base) and with (lora) the adapter merged at this weight"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", default="reduced", choices=["reduced", "full"])
    ap.add_argument("--vintage", choices=sorted(VINTAGES))
    ap.add_argument("--fp16", action="store_true", default=None)
    ap.add_argument("--fp32", dest="fp16", action="store_false")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lcm-distilled", action="store_true")
    ap.add_argument("--lora")
    ap.add_argument("--reference")
    args = ap.parse_args()
    shipped = SHIPPED[args.family]
    vintage = args.vintage or shipped["vintage"]
    fp16 = shipped["fp16"] if args.fp16 is None else args.fp16
    torch.set_num_threads(2)
    t0 = time.time()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    build(args.family, args.out, args.width, vintage, fp16, args.seed, args.lora, args.reference, args.lcm_distilled)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
    print(f"{args.family} ({args.width}, {vintage}, {'fp16' if fp16 else 'fp32'}) -> {args.out}: {size / 2**20:.1f} MiB in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
