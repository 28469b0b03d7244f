"""The model families and their two widths. Full widths are the published configs (diffusers / transformers
config.json values of runwayml/stable-diffusion-v1-5, stabilityai/sd-turbo (SD 2.1 architecture) and
stabilityai/sdxl-turbo); reduced widths keep every block, layer count, transformer depth, module name and I/O
contract and shrink only channel widths (and with them head widths; CLIP towers keep their head counts at 1-2
values per head) so that a pack builds in seconds and ships in the repository.
"""
from autoencoders import autoencoder_kl_config, autoencoder_tiny_config
from clip_text import clip_config

VOCAB = 49408
CLIP_L = dict(hidden_size=768, layers=12, heads=12, act="quick_gelu")  # openai/clip-vit-large-patch14
OPENCLIP_H = dict(hidden_size=1024, layers=23, heads=16, act="gelu", projection_dim=1024)  # SD 2.x (penultimate layer kept)
OPENCLIP_BIGG = dict(hidden_size=1280, layers=32, heads=20, act="gelu", projection_dim=1280)  # SDXL text_encoder_2

LCM_SCHEDULER = {"_class_name": "LCMScheduler", "_diffusers_version": "0.25.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995,
                 "num_train_timesteps": 1000, "original_inference_steps": 50, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
                 "sample_max_value": 1.0, "set_alpha_to_one": True, "steps_offset": 1, "thresholding": False, "timestep_scaling": 10.0,
                 "timestep_spacing": "leading", "trained_betas": None}
EULER = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
         "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
         "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
         "use_karras_sigmas": False}
EULER_ANCESTRAL = {"_class_name": "EulerAncestralDiscreteScheduler", "_diffusers_version": "0.24.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
                   "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                   "timestep_spacing": "trailing", "trained_betas": None, "use_karras_sigmas": False}


def unet_config(**kw):
    c = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.25.0", "act_fn": "silu", "center_input_sample": False,
         "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
         "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
         "sample_size": 64, "upcast_attention": False, "only_cross_attention": False, "resnet_time_scale_shift": "default",
         "class_embed_type": None, "addition_embed_type": None, "time_cond_proj_dim": None, "transformer_layers_per_block": 1}
    c.update(kw)
    return c


SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
XL_DOWN = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
XL_UP = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]


def text(tower, width, pad_token_id=1):
    t = dict(tower)
    if width == "reduced":
        t["hidden_size"] = t["heads"]  # one value per head: the 49,408-row token table dominates the pack's size
        if "projection_dim" in t:
            t["projection_dim"] = t["hidden_size"]
    h = t["hidden_size"]
    return clip_config(VOCAB, h, t["layers"], t["heads"], t["act"], t.get("projection_dim"), 4 * h, pad_token_id)


def sd15(width):
    te = text(CLIP_L, width)
    full = width == "full"
    return {
        "pipeline": "StableDiffusionPipeline",
        "text_encoders": [("text_encoder", "tokenizer", te, "<|endoftext|>", False)],
        "unet": unet_config(block_out_channels=[320, 640, 1280, 1280] if full else [8, 16, 16, 16], attention_head_dim=8,
                            cross_attention_dim=te["hidden_size"], down_block_types=SD_DOWN, up_block_types=SD_UP,
                            use_linear_projection=False, norm_num_groups=32 if full else 8),
        "vae": autoencoder_kl_config([128, 256, 512, 512] if full else [4, 8, 8, 8], 32 if full else 4, 0.18215, 512),
        "taesd": None,
        "scheduler": LCM_SCHEDULER,
        "index_extra": {"requires_safety_checker": False},
    }


def sd_turbo(width):
    te = text(OPENCLIP_H, width)
    full = width == "full"
    return {
        "pipeline": "StableDiffusionPipeline",
        "text_encoders": [("text_encoder", "tokenizer", te, "!", False)],
        "unet": unet_config(block_out_channels=[320, 640, 1280, 1280] if full else [8, 16, 16, 16],
                            attention_head_dim=[5, 10, 20, 20] if full else [1, 1, 2, 2], cross_attention_dim=te["hidden_size"],
                            down_block_types=SD_DOWN, up_block_types=SD_UP, use_linear_projection=True, norm_num_groups=32 if full else 8),
        "vae": autoencoder_kl_config([128, 256, 512, 512] if full else [4, 8, 8, 8], 32 if full else 4, 0.18215, 512),
        "taesd": None,
        "scheduler": EULER,
        "index_extra": {"requires_safety_checker": False},
    }


def sdxl_turbo(width):
    te1 = text(CLIP_L, width)
    te2 = text(OPENCLIP_BIGG, width, pad_token_id=1)
    full = width == "full"
    time_dim = 256 if full else 8
    return {
        "pipeline": "StableDiffusionXLPipeline",
        "text_encoders": [("text_encoder", "tokenizer", te1, "<|endoftext|>", True), ("text_encoder_2", "tokenizer_2", te2, "!", True)],
        "unet": unet_config(block_out_channels=[320, 640, 1280] if full else [8, 16, 16], attention_head_dim=[5, 10, 20] if full else [1, 1, 2],
                            transformer_layers_per_block=[1, 2, 10], cross_attention_dim=te1["hidden_size"] + te2["hidden_size"],
                            down_block_types=XL_DOWN, up_block_types=XL_UP, use_linear_projection=True, norm_num_groups=32 if full else 8,
                            addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                            projection_class_embeddings_input_dim=te2["projection_dim"] + 6 * time_dim),
        "vae": autoencoder_kl_config([128, 256, 512, 512] if full else [4, 8, 8, 8], 32 if full else 4, 0.13025, 512),
        "taesd": autoencoder_tiny_config(64 if full else 8),
        "scheduler": EULER_ANCESTRAL,
        "index_extra": {"force_zeros_for_empty_prompt": True, "add_watermarker": None},
    }


FAMILIES = {"sd15": sd15, "sd-turbo": sd_turbo, "sdxl-turbo": sdxl_turbo}
# What each family's shipped reduced pack is built as: three export vintages, both precisions.
SHIPPED = {
    "sd15": dict(vintage="diffusers-script", fp16=False),
    "sd-turbo": dict(vintage="optimum-1.14", fp16=True),
    "sdxl-turbo": dict(vintage="optimum-1.24", fp16=True),
}
