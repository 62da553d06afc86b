"""The SD3 backbone and the latent VAE of a rectified-flow model: config checks and local loaders (no Lightning).

``SD3Transformer2DModel`` (Esser et al. 2024) runs joint attention over image patches and context tokens; the
frozen ``AutoencoderKL`` (Rombach et al. 2022) maps images to the latents a latent flow trains on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from diffusers import AutoencoderKL, SD3Transformer2DModel

from litzoo.checks import check_choice, check_positive_int

QK_NORMS = (None, "rms_norm", "layer_norm")
# What an exported folder lacks for ``StableDiffusion3Pipeline``: load it with these set to None and pass
# ``prompt_embeds``/``pooled_prompt_embeds`` (e.g. the class tokens of litzoo.json) and ``output_type="latent"``.
PIPELINE_ABSENT_COMPONENTS = ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
                              "tokenizer_3", "image_encoder", "feature_extractor")


def sd3_model_index(vae: bool) -> dict:
    """The ``model_index.json`` of an exported ``StableDiffusion3Pipeline`` folder: transformer, scheduler and,
    with ``vae``, the VAE; every other component absent (``None``)."""
    import diffusers

    model_index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": diffusers.__version__,
                   "transformer": ["diffusers", "SD3Transformer2DModel"],
                   "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                   **{name: [None, None] for name in PIPELINE_ABSENT_COMPONENTS}}
    if vae:
        model_index["vae"] = ["diffusers", "AutoencoderKL"]
    return model_index


def check_architecture(sample_size: int, patch_size: int, in_channels: int, num_layers: int, attention_head_dim: int,
                       num_attention_heads: int, joint_attention_dim: int, caption_projection_dim: int,
                       pooled_projection_dim: int, pos_embed_max_size: int, qk_norm: Optional[str]) -> None:
    """Raise a ``ValueError`` naming the argument and the fix for a config ``SD3Transformer2DModel`` cannot run."""
    for name, value in [("sample_size", sample_size), ("patch_size", patch_size), ("in_channels", in_channels),
                        ("num_layers", num_layers), ("attention_head_dim", attention_head_dim),
                        ("num_attention_heads", num_attention_heads), ("joint_attention_dim", joint_attention_dim),
                        ("pooled_projection_dim", pooled_projection_dim), ("pos_embed_max_size", pos_embed_max_size)]:
        check_positive_int(name, value)
    if sample_size % patch_size:
        divisors = [p for p in range(1, sample_size + 1) if sample_size % p == 0]
        raise ValueError(f"patch_size={patch_size} does not divide sample_size={sample_size}: the image must split "
                         f"into whole patches. Use a patch_size in {divisors} or resize the images.")
    inner_dim = num_attention_heads * attention_head_dim
    if caption_projection_dim != inner_dim:
        raise ValueError(
            f"caption_projection_dim={caption_projection_dim} must equal num_attention_heads * attention_head_dim = "
            f"{num_attention_heads} * {attention_head_dim} = {inner_dim}: joint attention runs the context tokens "
            f"through the same width as the image tokens. Set caption_projection_dim={inner_dim}.")
    grid = sample_size // patch_size
    if grid > pos_embed_max_size:
        raise ValueError(
            f"sample_size={sample_size} with patch_size={patch_size} gives a {grid}x{grid} patch grid, larger than "
            f"pos_embed_max_size={pos_embed_max_size} (the 2-D position table is cropped from a "
            f"pos_embed_max_size^2 grid). Set pos_embed_max_size>={grid} or a larger patch_size.")
    check_choice("qk_norm", qk_norm, QK_NORMS)


def check_data_shape(datamodule, config, vae: bool) -> None:
    """Raise a ``ValueError`` naming the fix when a datamodule's ``image_size``/``in_channels`` differ from those of
    ``config`` (the VAE's with ``vae``, else the transformer's)."""
    for name, value in {"image_size": config.sample_size, "in_channels": config.in_channels}.items():
        got = getattr(datamodule, name, None)
        if got is not None and got != value:
            arg = "sample_size" if name == "image_size" else name
            if vae:
                raise ValueError(f"{type(datamodule).__name__}.{name}={got} but the VAE at vae_path takes "
                                 f"{name}={value}; use data with {name}={value} or another VAE.")
            raise ValueError(f"{type(datamodule).__name__}.{name}={got} but RectifiedFlowDiT was built with "
                             f"{arg}={value}; set model.{arg}={got} (or change the datamodule).")


def load_sd3_transformer(path: str) -> SD3Transformer2DModel:
    """The transformer of a local SD3 diffusers folder (or of a transformer folder), in train mode."""
    root = Path(path)
    if (root / "transformer" / "config.json").is_file():
        return SD3Transformer2DModel.from_pretrained(root, subfolder="transformer").train()
    if (root / "config.json").is_file():
        return SD3Transformer2DModel.from_pretrained(root).train()
    raise ValueError(f"pretrained_path={path!r} is not an SD3 diffusers folder: expected "
                     f"{root / 'transformer' / 'config.json'} (or a transformer folder with config.json). "
                     "Save one with pipeline.save_pretrained(path) or transformer.save_pretrained(path).")


def load_latent_vae(path: str, config) -> AutoencoderKL:
    """A frozen ``AutoencoderKL`` from a local folder whose latents have the shape the transformer `config` takes."""
    if not (Path(path) / "config.json").is_file():
        raise ValueError(f"vae_path={path!r} is not a diffusers AutoencoderKL folder (no config.json); "
                         "export one with litzoo.modules.vae.VAE.export(path).")
    vae = AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)
    size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    if (vae.config.latent_channels, size) != (config.in_channels, config.sample_size):
        raise ValueError(f"vae_path={path!r} gives latents ({vae.config.latent_channels}, {size}, {size}) but the "
                         f"transformer takes ({config.in_channels}, {config.sample_size}, {config.sample_size}); "
                         f"set in_channels={vae.config.latent_channels} and sample_size={size}.")
    return vae
