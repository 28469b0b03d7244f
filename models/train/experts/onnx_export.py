"""ONNX export of one expert UNet with exactly the pack UNet's I/O contract, through export_pack._export
(same opset, dynamic axes, checker): sample [batch,4,height,width], timestep, encoder_hidden_states
[batch,77,D] -> out_sample [batch,4,height,width]."""
import json
import os

import torch

import common  # noqa: F401  (puts models/train on sys.path)
from export_pack import DEFAULT_CONTRACT, _export


def export_unet(unet, path, ctx_dim, latent=16, contract=None, config_extra=None):
    c = dict(DEFAULT_CONTRACT)
    c.update(contract or {})
    fdt = torch.float16 if c["fp16"] else torch.float32
    sample = torch.randn(2, 4, latent, latent).to(fdt)
    ehs = torch.randn(2, 77, ctx_dim).to(fdt)
    if c["timestep"] == "float32_scalar":
        t, t_axes = torch.tensor(999.0).to(fdt), {}
    else:
        t = torch.tensor([999, 499])
        t = t.to(torch.int64) if c["timestep"] == "int64" else t.to(fdt)
        t_axes = {"timestep": {0: "batch"}}
    _export(unet, (sample, t, ehs), path, ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
            {"sample": {0: "batch", 2: "height", 3: "width"}, **t_axes, "encoder_hidden_states": {0: "batch"},
             "out_sample": {0: "batch", 2: "height", 3: "width"}})
    cfg = dict(unet.config)
    cfg["_class_name"] = "UNet2DConditionModel"
    cfg["prediction_type"] = "epsilon"
    cfg["latent_multiple"] = 2 ** (len(unet.config["block_out_channels"]) - 1)
    cfg.update(config_extra or {})
    json.dump(cfg, open(os.path.join(os.path.dirname(path), "config.json"), "w"), indent=1)
