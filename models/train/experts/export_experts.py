"""Export the experts into the pack: <pack>/experts/{manifest.json, router.json, expert_NNN/model.onnx}.

python3 export_experts.py [--pack models/packs/tiny-shapes] [--no-latency]
 1. checks that the pack's UNet is the teacher the experts were distilled from (same checkpoint step)
 2. each pruned expert: rebuilt from its plan + weights, exported with the pack UNet's contract
    (model_index.json tiny_shapes.contract) through export_pack._export; config.json records the plan
 3. router.json: {type: "linear", input_dim, weights [K][D], bias [K], expert_for_code [K names], info}
 4. latency: measure_latency.ts (onnxruntime-node, batch 1, 16x16 latents, interleaved medians)
 5. manifest.json: {experts: [{name, path, relative_macs, parameters, latency_ms, info}], router, full, info}
    MACs are counted at 16x16 latents (pruning.count_macs); the full expert is the pack's own unet/.
"""
import argparse
import json
import os
import shutil
import subprocess

import torch

import common
import pruning
from onnx_export import export_unet

ROOT = os.path.normpath(os.path.join(common.HERE, "..", "..", ".."))
FULL = "full"


def expert_name(relative_macs):
    return f"expert_{int(round(100 * relative_macs)):03d}"


def measure_latency(paths, threads=1, rounds=300):
    cmd = ["npx", "tsx", os.path.join(common.HERE, "measure_latency.ts"), "--threads", str(threads), "--rounds", str(rounds), *paths]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["latency_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", default=common.PACK)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--teacher", default=common.BASE_CKPT)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (1 keeps latency steady on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P = common.logger("export_experts.log")
    # 1. pack and teacher
    index = json.load(open(os.path.join(args.pack, "model_index.json")))
    contract = index.get("tiny_shapes", {}).get("contract", {})
    pack_step = index.get("tiny_shapes", {}).get("train", {}).get("unet_steps")
    teacher, te, _, teacher_step = common.load_teacher(args.teacher)
    ek = torch.load(common.EXPERTS_CKPT, map_location="cpu")
    rk = torch.load(common.ROUTER_CKPT, map_location="cpu")
    if ek["teacher_step"] != teacher_step or (pack_step is not None and pack_step != teacher_step):
        raise SystemExit(f"teacher step mismatch: experts distilled from step {ek['teacher_step']}, checkpoint {teacher_step}, pack {pack_step}")
    d = te.config["hidden_size"]
    out = os.path.join(args.pack, "experts")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    # 2. experts
    entries = [{"name": FULL, "path": "../unet/model.onnx", "relative_macs": 1.0, "parameters": pruning.count_params(teacher),
                "info": {"macs": ek["full_macs"]}}]
    for plan, state, macs in zip(ek["plans"], ek["states"], ek["macs"]):
        m = pruning.rebuild(teacher, plan, state).eval()
        name = expert_name(macs)
        path = os.path.join(out, name, "model.onnx")
        kept = pruning.describe(teacher, plan)
        export_unet(m, path, d, contract=contract, config_extra={"pruned_from": "../../unet", "relative_macs": macs, "kept_groups": kept,
                                                                  "num_parameters": pruning.count_params(m)})
        entries.append({"name": name, "path": f"{name}/model.onnx", "relative_macs": round(float(macs), 4),
                        "parameters": pruning.count_params(m), "info": {"macs": int(round(macs * ek["full_macs"])),
                                                                         "distillation_steps": ek["steps"]}})
        P(f"exported {name} MACs {macs:.3f} params {pruning.count_params(m)}")
    # 3. router: output k -> entries[order[k]]
    router = {"type": "linear", "input_dim": d,
              "weights": [[float(v) for v in r] for r in rk["weights"]],
              "bias": [float(v) for v in rk["bias"]],
              "expert_for_code": [entries[k]["name"] for k in rk["order"]],
              "info": dict(rk["stats"], method="measured labels (smallest expert within tolerance of the full model) + "
                                                "multinomial logistic regression on pooler_output; see models/train/experts/README.md")}
    json.dump(router, open(os.path.join(out, "router.json"), "w"), indent=1)
    # 4. latency
    paths = [os.path.normpath(os.path.join(out, e["path"])) for e in entries]
    lat = [0.0] * len(entries) if args.no_latency else measure_latency(paths, args.threads)
    for e, ms in zip(entries, lat):
        e["latency_ms"] = ms
    P("latency_ms " + " ".join(f"{e['name']}={e['latency_ms']}" for e in entries))
    # 5. manifest
    manifest = {"experts": [{k: e[k] for k in ("name", "path", "relative_macs", "parameters", "latency_ms", "info")} for e in entries],
                "router": "router.json", "full": FULL,
                "info": {"macs_at": "batch 1, 16x16 latents (128x128 images), conv + linear + attention matmuls",
                         "latency": f"onnxruntime-node CPU, {args.threads} intra-op thread(s), batch 1, 16x16 latents, median of interleaved runs",
                         "teacher_step": teacher_step, "generator": "models/train/experts/build_experts.sh"}}
    json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=1)
    P(f"wrote {out}")


if __name__ == "__main__":
    main()
