r"""Rectified-flow DiT as in Stable Diffusion 3: MMDiT backbone, QK-norm, 2-D positions, logit-normal t.

Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (SD3);
Liu et al. 2023 (rectified flow); Ho & Salimans 2022 (classifier-free guidance).

Objective (SD3 §2-3), with ``t = 0`` data and ``t = 1`` noise::

    z_t = (1 - t) x_0 + t eps,    eps ~ N(0, I),
    t   = shift(t~),               t~ ~ pi  (uniform | logit_normal(m, s) | mode(s) | cosmap)
    L   = E_{t, x_0, eps} || v_theta(z_t, t, c) - (eps - x_0) ||^2

The backbone is diffusers' ``SD3Transformer2DModel`` (joint attention over image patches and context
tokens, 2-D sin-cos positions cropped from a ``pos_embed_max_size`` grid, optional RMS QK-norm that
keeps attention logits from growing at high learning rates, SD3 §5.3.2). Its conditioning is
``c = (context tokens, pooled vector)``:

* class labels: ``context_tokens[y]`` (a learned ``(num_classes + 1, num_context_tokens, joint_attention_dim)``
  table; the last row is the null class) and the pooled vector ``class_pooled(y)``;
* or one precomputed prompt per class (``prompt_embeds_path``, e.g. the class folders of an
  ``ImageFolderDataModule``), or precomputed prompt embeddings in the batch (``prompt_embeds``,
  ``pooled_prompt_embeds``); the null prompt is all zeros;
* or text through a small transformers ``CLIPTextModelWithProjection`` (``text_encoder``: a ``CLIPTextConfig``
  dict, with litzoo's character-level tokenizer framed as ``<bos> prompt <eot>`` and padded to
  ``max_position_embeddings``; or ``text_encoder_path``: a local folder). Its last hidden states are the
  context tokens (``hidden_size = joint_attention_dim``) and its projected pooled output (the ``<eot>`` token)
  the pooled vector (``projection_dim = pooled_projection_dim``), the two roles CLIP plays in SD3 (SD3 takes the
  penultimate layer and concatenates CLIP-L/G and T5; one small encoder's last layer suffices here). Prompts come
  in the batch (``{"images", "prompts"}``) or from labels through ``class_prompts`` (e.g. "a photo of the digit
  three" per digit, or the class folder names; taken from the datamodule's ``class_prompts`` when not given).
  As in SD3 the encoder is frozen by default; a *randomly initialised* encoder still separates prompts (a fixed
  random feature map), and ``train_text_encoder=True`` trains it jointly with the flow loss. The null prompt is
  again all zeros (tokens and pooled), so CFG's negative embeddings are zeros.

The condition is replaced by the null condition with probability ``class_dropout`` during training, so
one network also gives the unconditional velocity for guidance,
``v_cfg = v(z, t, null) + w (v(z, t, c) - v(z, t, null))``. Sampling integrates dz/dt = v from t = 1 to 0
with diffusers' ``FlowMatchEulerDiscreteScheduler(shift=...)`` ("euler") or the Heun sampler of
:mod:`litzoo.diffusion.flow` ("heun"). The transformer sees the timestep as ``1000 t``, diffusers' convention,
so an exported folder works with the diffusers scheduler and pipelines as is.

Latent flows (``vae_path``, Rombach et al. 2022; SD3 §5.2.1) train on ``x_0 = (mode(q(z|x)) - shift) * scale``.
With ``cache_latents`` the datamodule's train split is encoded once at fit start and the epochs read the cached
latents (a frozen VAE gives the same latents every epoch, so encoding them again is wasted work). The posterior
*mode* is cached because it is deterministic: the cache equals :meth:`RectifiedFlowDiT.to_latents` exactly and a
resumed run sees the same data; one cached *sample* of q(z|x) would freeze one draw of the posterior noise anyway
(and for a VAE with a small KL weight sigma(x) is tiny, so mode and sample hardly differ).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from litzoo.bases.generative import GenerativeModule
from litzoo.diffusion.flow import (
    FLOW_SAMPLERS,
    TIMESTEP_DENSITIES,
    check_mode_scale,
    interpolate,
    sample_flow,
    sample_timesteps,
    velocity_target,
)

QK_NORMS = (None, "rms_norm", "layer_norm")
NUM_TRAIN_TIMESTEPS = 1000  # diffusers' timestep scale: the transformer sees 1000 * t
# What an exported folder lacks for ``StableDiffusion3Pipeline``: load it with these set to None and pass
# ``prompt_embeds``/``pooled_prompt_embeds`` (e.g. the class tokens of litzoo.json) and ``output_type="latent"``.
PIPELINE_ABSENT_COMPONENTS = ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
                              "tokenizer_3", "image_encoder", "feature_extractor")
ARCHITECTURE_ARGS = ("sample_size", "patch_size", "in_channels", "num_layers", "attention_head_dim",
                     "num_attention_heads", "joint_attention_dim", "caption_projection_dim",
                     "pooled_projection_dim", "pos_embed_max_size", "qk_norm")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(allowed)}.")


def check_architecture(sample_size: int, patch_size: int, in_channels: int, num_layers: int, attention_head_dim: int,
                       num_attention_heads: int, joint_attention_dim: int, caption_projection_dim: int,
                       pooled_projection_dim: int, pos_embed_max_size: int, qk_norm: Optional[str]) -> None:
    """Raise a ``ValueError`` naming the argument and the fix for a config ``SD3Transformer2DModel`` cannot run."""
    for name, value in [("sample_size", sample_size), ("patch_size", patch_size), ("in_channels", in_channels),
                        ("num_layers", num_layers), ("attention_head_dim", attention_head_dim),
                        ("num_attention_heads", num_attention_heads), ("joint_attention_dim", joint_attention_dim),
                        ("pooled_projection_dim", pooled_projection_dim), ("pos_embed_max_size", pos_embed_max_size)]:
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
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
    _check_choice("qk_norm", qk_norm, QK_NORMS)


# CLIPTextConfig fields the tokenizer fixes (a config dict must not set them).
TOKENIZER_FIELDS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


def build_prompt_tokenizer(max_length: int):
    """litzoo's character-level tokenizer (:func:`litzoo.text.tokenizer.build_char_tokenizer`, plus upper case)
    framed like CLIP's: ``<bos> prompt <eot>``, truncated/padded to ``max_length`` with ``<pad>``.

    ``<eot>`` is a new end token because CLIP pools the hidden state at the first ``eos_token_id``, except that
    it falls back to the legacy arg-max rule when that id is 2 (the char tokenizer's ``<eos>``). It survives
    ``save_pretrained``/``AutoTokenizer.from_pretrained`` (the framing lives in ``tokenizer.json``).
    """
    import string

    from tokenizers import processors

    from litzoo.text.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(extra_chars=string.ascii_uppercase)
    tokenizer.add_special_tokens({"eos_token": "<eot>"})
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A {tokenizer.eos_token}",
        special_tokens=[(tokenizer.bos_token, tokenizer.bos_token_id), (tokenizer.eos_token, tokenizer.eos_token_id)])
    tokenizer.model_max_length = max_length
    return tokenizer


def check_text_encoder_widths(hidden_size: int, projection_dim: int, joint_attention_dim: int,
                              pooled_projection_dim: int) -> None:
    """The text encoder's token width must be the transformer's context width, its pooled width the pooled one."""
    if hidden_size != joint_attention_dim:
        raise ValueError(
            f"text encoder hidden_size={hidden_size} must equal joint_attention_dim={joint_attention_dim}: its hidden "
            f"states are the transformer's context tokens. Set text_encoder['hidden_size']={joint_attention_dim} "
            f"(or joint_attention_dim={hidden_size}).")
    if projection_dim != pooled_projection_dim:
        raise ValueError(
            f"text encoder projection_dim={projection_dim} must equal pooled_projection_dim={pooled_projection_dim}: "
            f"its projected pooled output is the transformer's pooled vector. Set text_encoder['projection_dim']="
            f"{pooled_projection_dim} (or pooled_projection_dim={projection_dim}).")


class CachedLatents(Dataset):
    """A train split's VAE latents, computed once: item i is ``{"latents": z_i, "y": label_i}``.

    ``images`` is the split it replaces (kept so it can be restored). Where that split flips images at random
    (``random_flip``), the latents of the flipped images are cached too and drawn with probability 1/2.
    """

    def __init__(self, images: Dataset, latents: Tensor, labels: Optional[Tensor],
                 flipped: Optional[Tensor] = None) -> None:
        self.images, self.latents, self.labels, self.flipped = images, latents, labels, flipped

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict:
        use_flip = self.flipped is not None and bool(torch.rand(()) < 0.5)
        item = {"latents": (self.flipped if use_flip else self.latents)[index]}
        if self.labels is not None:
            item["y"] = self.labels[index]
        return item


class RectifiedFlowDiT(GenerativeModule):
    """SD3-style rectified-flow transformer on images or latents (see module docstring).

    The defaults are the CPU demo: a class-conditional 4-layer MMDiT on 8x8 digits (patch 2: 16 tokens).

    Args:
        sample_size, patch_size, in_channels, num_layers, attention_head_dim, num_attention_heads,
        joint_attention_dim, caption_projection_dim, pooled_projection_dim, pos_embed_max_size, qk_norm:
            the ``SD3Transformer2DModel`` (``out_channels = in_channels``); ``caption_projection_dim`` must be
            ``num_attention_heads * attention_head_dim``. Ignored when ``pretrained_path`` is set.
        pretrained_path: a local SD3 diffusers folder (with ``transformer/``) or transformer folder to fine-tune;
            its config defines the architecture. It must still exist when the checkpoint is reloaded.
        prompt_embeds_path: a safetensors file with precomputed ``prompt_embeds`` (K, L, joint_attention_dim)
            and ``pooled_prompt_embeds`` (K, pooled_projection_dim), one prompt per class (e.g. the class folders
            of an ``ImageFolderDataModule``): label k is conditioned on prompt k (frozen) instead of learned tokens;
            the null condition is all zeros. ``num_classes`` must be K or None.
        vae_path: a diffusers ``AutoencoderKL`` folder (e.g. :meth:`litzoo.modules.vae.VAE.export`): the flow
            then trains on its normalised latents ``(mode(q(z|x)) - shift_factor) * scaling_factor`` (the VAE is
            frozen) and :meth:`sample` decodes; ``sample_size``/``in_channels`` are the latent's.
        cache_latents: with ``vae_path``, encode the datamodule's train split once at fit start (posterior mode,
            normalised; kept in memory) and train from those latents instead of encoding every batch. Training
            from plain dataloaders (no datamodule ``train_set``) encodes per batch.
        text_encoder: a ``CLIPTextConfig`` dict (plain types, e.g. ``{"hidden_size": 64, "projection_dim": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 40}``) for a randomly initialised ``CLIPTextModelWithProjection`` with
            :func:`build_prompt_tokenizer`; ``hidden_size`` must be ``joint_attention_dim`` and ``projection_dim``
            ``pooled_projection_dim``; ``vocab_size`` and the token ids come from the tokenizer.
        text_encoder_path: instead, a local folder with ``text_encoder/`` and ``tokenizer/`` (e.g. an export of a
            text-conditioned model) or a ``CLIPTextModelWithProjection`` folder that also holds its tokenizer.
        class_prompts: the prompt of each label (label k -> ``class_prompts[k]``), for labelled data and
            ``sample(y=...)``; ``None`` takes the datamodule's ``class_prompts`` at fit. With text conditioning the
            label count is ``len(class_prompts)``; ``num_classes`` must then be None or that number.
        train_text_encoder: train the text encoder with the flow loss (default frozen, as in SD3; see the module
            docstring).
        num_classes: class conditioning with learned context tokens; ``None`` = unconditional or prompt embeddings
            passed in the batch.
        num_context_tokens: context tokens per class.
        class_dropout: probability of the null condition in training (for classifier-free guidance).
        timestep_sampling, logit_mean, logit_std, mode_scale: the training density of t (SD3 §3.1).
        shift: resolution-dependent shift alpha used for training t and the sampling grid (SD3 §5.3.2).
        sampler, sample_steps, cfg_scale: defaults of :meth:`sample`.
        lr, weight_decay, adam_betas, warmup_steps, total_steps: AdamW + warmup/cosine (``total_steps=0`` uses
            the trainer's estimate; ``-1``: constant lr after warm-up).
        eval_every_n_epochs, eval_samples_per_class, eval_steps: class accuracy of samples logged at
            validation every N epochs (0 = never; 1-channel class-conditional images only).
        seed: seeds the per-step noise so a resumed run repeats the uninterrupted one exactly.
    """

    def __init__(
        self,
        sample_size: int = 8,
        patch_size: int = 2,
        in_channels: int = 1,
        num_layers: int = 4,
        attention_head_dim: int = 16,
        num_attention_heads: int = 4,
        joint_attention_dim: int = 64,
        caption_projection_dim: int = 64,
        pooled_projection_dim: int = 64,
        pos_embed_max_size: int = 16,
        qk_norm: Optional[str] = "rms_norm",
        pretrained_path: Optional[str] = None,
        prompt_embeds_path: Optional[str] = None,
        vae_path: Optional[str] = None,
        cache_latents: bool = True,
        num_classes: Optional[int] = 10,
        num_context_tokens: int = 4,
        class_dropout: float = 0.1,
        text_encoder: Optional[dict] = None,
        text_encoder_path: Optional[str] = None,
        class_prompts: Optional[list[str]] = None,
        train_text_encoder: bool = False,
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
        shift: float = 1.0,
        sampler: str = "euler",
        sample_steps: int = 25,
        cfg_scale: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        total_steps: int = 0,
        eval_every_n_epochs: int = 0,
        eval_samples_per_class: int = 20,
        eval_steps: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_choice("timestep_sampling", timestep_sampling, TIMESTEP_DENSITIES)
        _check_choice("sampler", sampler, FLOW_SAMPLERS)
        if timestep_sampling == "mode":
            check_mode_scale(mode_scale)
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}.")
        if shift <= 0:
            raise ValueError(f"shift must be > 0 (1.0 = no shift), got {shift}.")
        if sample_steps < 1 or eval_steps < 1:
            raise ValueError(f"sample_steps and eval_steps must be >= 1, got {sample_steps}, {eval_steps}.")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None (no class conditioning), got {num_classes}.")
        if num_context_tokens < 1:
            raise ValueError(f"num_context_tokens must be >= 1, got {num_context_tokens}.")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout}.")
        text = text_encoder is not None or text_encoder_path is not None
        if text_encoder is not None and text_encoder_path is not None:
            raise ValueError("Both text_encoder (a config) and text_encoder_path were given; set only one of them.")
        if text and prompt_embeds_path is not None:
            raise ValueError("prompt_embeds_path (precomputed prompts) and a text encoder were both given; use one "
                             "condition: drop prompt_embeds_path, or text_encoder/text_encoder_path.")
        if class_prompts is not None and not text:
            raise ValueError("class_prompts needs a text encoder: set text_encoder={...} (a CLIPTextConfig dict) or "
                             "text_encoder_path, or drop class_prompts to learn class tokens.")
        self.save_hyperparameters()
        if pretrained_path is None:
            arch = {name: getattr(self.hparams, name) for name in ARCHITECTURE_ARGS}
            check_architecture(**arch)
            self.transformer = SD3Transformer2DModel(**arch, out_channels=in_channels)
        else:
            self.transformer = self._load_pretrained(pretrained_path)
        config = self.transformer.config
        self.vae = self._load_vae(vae_path, config) if vae_path is not None else None
        self.register_buffer("prompt_table", None)
        self.register_buffer("pooled_prompt_table", None)
        if prompt_embeds_path is not None:
            prompts, pooled = self._load_prompt_table(prompt_embeds_path, config)
            if num_classes is not None and num_classes != prompts.shape[0]:
                raise ValueError(f"num_classes={num_classes} but {prompt_embeds_path} holds {prompts.shape[0]} "
                                 f"prompts; set num_classes={prompts.shape[0]} (or None).")
            num_classes = prompts.shape[0]
            # Row K (zeros) is the null prompt; buffers, so checkpoints carry the prompts.
            self.register_buffer("prompt_table", torch.cat([prompts, torch.zeros_like(prompts[:1])]))
            self.register_buffer("pooled_prompt_table", torch.cat([pooled, torch.zeros_like(pooled[:1])]))
        self.text_encoder, self.tokenizer = None, None
        self._latent_cache: Optional[CachedLatents] = None
        if text:
            self.text_encoder, self.tokenizer = self._build_text_encoder(text_encoder, text_encoder_path, config)
            if not train_text_encoder:
                self.text_encoder.requires_grad_(False).eval()
            num_classes = self._check_class_prompts(class_prompts) if class_prompts is not None else None
        self.num_classes = num_classes
        # Row ``null_class`` (the last) is the learned null condition used for classifier-free guidance.
        self.null_class = num_classes or 0
        rows = self.null_class + 1
        if self.prompt_table is None and self.text_encoder is None:
            self._init_class_tokens(rows, num_context_tokens, config)

    def _init_class_tokens(self, rows: int, num_context_tokens: int, config) -> None:
        # Unit-variance init (like text-encoder outputs): classes are distinct from step 0, which
        # makes the small conditional models learn the classes far sooner than a near-zero init.
        self.context_tokens = nn.Parameter(torch.randn(rows, num_context_tokens, config.joint_attention_dim))
        self.class_pooled = nn.Embedding(rows, config.pooled_projection_dim)

    @staticmethod
    def _build_text_encoder(text_encoder: Optional[dict], path: Optional[str], config):
        from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

        if path is not None:
            root = Path(path)
            sub = "text_encoder" if (root / "text_encoder" / "config.json").is_file() else ""
            tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
            if not (root / sub / "config.json").is_file():
                raise ValueError(f"text_encoder_path={path!r} holds no text encoder: expected "
                                 f"{root / 'text_encoder' / 'config.json'} (and {root / 'tokenizer'}) or a "
                                 "CLIPTextModelWithProjection folder; export a text-conditioned RectifiedFlowDiT "
                                 "there.")
            encoder = CLIPTextModelWithProjection.from_pretrained(root, subfolder=sub)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            tokenizer.model_max_length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
        else:
            if not isinstance(text_encoder, dict):
                raise ValueError("text_encoder must be a dict of CLIPTextConfig fields, got "
                                 f"{type(text_encoder).__name__}.")
            allowed = set(CLIPTextConfig().to_dict())
            unknown = sorted(set(text_encoder) - allowed)
            fixed = sorted(set(text_encoder) & set(TOKENIZER_FIELDS))
            if unknown or fixed:
                raise ValueError(f"text_encoder has keys {unknown + fixed} that are not CLIPTextConfig fields "
                                 f"or are set from the tokenizer ({list(TOKENIZER_FIELDS)}); remove them. Fields: "
                                 f"hidden_size, projection_dim, intermediate_size, num_hidden_layers, "
                                 f"num_attention_heads, max_position_embeddings, ...")
            clip = CLIPTextConfig(**text_encoder)
            tokenizer = build_prompt_tokenizer(clip.max_position_embeddings)
            clip.vocab_size = len(tokenizer)
            clip.bos_token_id, clip.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
            clip.pad_token_id = tokenizer.pad_token_id
            check_text_encoder_widths(clip.hidden_size, clip.projection_dim, config.joint_attention_dim,
                                      config.pooled_projection_dim)
            encoder = CLIPTextModelWithProjection(clip)
        check_text_encoder_widths(encoder.config.hidden_size, encoder.config.projection_dim,
                                  config.joint_attention_dim, config.pooled_projection_dim)
        return encoder, tokenizer

    def _check_class_prompts(self, class_prompts) -> int:
        """Validate ``class_prompts`` against ``num_classes`` and the tokenizer; return their count."""
        from litzoo.text.tokenizer import check_tokenizer_covers

        if isinstance(class_prompts, str) or not class_prompts or not all(isinstance(p, str) for p in class_prompts):
            raise ValueError(f"class_prompts must be a non-empty list of strings (one per label), got "
                             f"{class_prompts!r}.")
        given = self.hparams.num_classes
        if given is not None and given != len(class_prompts):
            raise ValueError(f"num_classes={given} but there are {len(class_prompts)} class_prompts; set "
                             f"num_classes={len(class_prompts)} (or None) or give one prompt per class.")
        check_tokenizer_covers(self.tokenizer, class_prompts)
        return len(class_prompts)

    def _set_class_prompts(self, class_prompts: list[str]) -> None:
        # Stored in the hyperparameters so checkpoints and exports carry them.
        self.num_classes = self._check_class_prompts(list(class_prompts))
        self.null_class = self.num_classes
        self.hparams.class_prompts = list(class_prompts)

    def encode_prompts(self, prompts) -> tuple[Tensor, Tensor]:
        """``(prompt_embeds (B, L, joint_attention_dim), pooled_prompt_embeds (B, pooled_projection_dim))`` of
        ``prompts`` (a list of strings): the text encoder's last hidden states and its projected pooled output,
        for ``forward``/``sample`` or ``StableDiffusion3Pipeline(prompt_embeds=..., pooled_prompt_embeds=...)``."""
        if self.text_encoder is None:
            raise ValueError("prompts were given but this RectifiedFlowDiT has no text encoder (it is conditioned on "
                             "class labels or prompt embeddings). Pass y= / prompt_embeds= instead, or build it with "
                             "text_encoder={...} (a CLIPTextConfig dict) or text_encoder_path=... .")
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}.")
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids.to(self.device)
        # No attention mask, as SD3: CLIP is causal, so the padding after <eot> changes no earlier token.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.hparams.train_text_encoder):
            out = self.text_encoder(input_ids=ids)
        return out.last_hidden_state, out.text_embeds

    @staticmethod
    def _load_vae(path: str, config):
        from diffusers import AutoencoderKL

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

    @torch.no_grad()
    def to_latents(self, x: Tensor) -> Tensor:
        """Normalised VAE latents of images in [-1, 1] (identity without a VAE). The posterior mean is
        deterministic, so a datamodule may cache these once."""
        if self.vae is None:
            return x
        c = self.vae.config
        return (self.vae.encode(x).latent_dist.mode() - (c.shift_factor or 0.0)) * c.scaling_factor

    @torch.no_grad()
    def from_latents(self, z: Tensor) -> Tensor:
        """Images in [-1, 1] from normalised latents (identity without a VAE)."""
        if self.vae is None:
            return z
        c = self.vae.config
        return self.vae.decode(z / c.scaling_factor + (c.shift_factor or 0.0)).sample

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "vae", None) is not None:
            self.vae.eval()  # frozen: no dropout/batch statistics, whatever Lightning sets
        if getattr(self, "text_encoder", None) is not None and not self.hparams.train_text_encoder:
            self.text_encoder.eval()
        return self

    @staticmethod
    def _load_prompt_table(path: str, config) -> tuple[Tensor, Tensor]:
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise ValueError(f"prompt_embeds_path={path!r} does not exist; write it with safetensors.torch.save_file("
                             "{'prompt_embeds': (K, L, D), 'pooled_prompt_embeds': (K, P)}, path).")
        tensors = load_file(path)
        missing = {"prompt_embeds", "pooled_prompt_embeds"} - set(tensors)
        if missing:
            raise ValueError(f"prompt_embeds_path={path!r} lacks {sorted(missing)}; it has {sorted(tensors)}.")
        prompts, pooled = tensors["prompt_embeds"].float(), tensors["pooled_prompt_embeds"].float()
        if (prompts.ndim != 3 or prompts.shape[-1] != config.joint_attention_dim or pooled.shape !=
                (prompts.shape[0], config.pooled_projection_dim)):
            raise ValueError(f"prompt_embeds_path={path!r}: prompt_embeds {tuple(prompts.shape)} must be (K, L, "
                             f"{config.joint_attention_dim}) and pooled_prompt_embeds {tuple(pooled.shape)} must be "
                             f"(K, {config.pooled_projection_dim}) for this transformer.")
        return prompts, pooled

    @staticmethod
    def _load_pretrained(path: str) -> SD3Transformer2DModel:
        root = Path(path)
        if (root / "transformer" / "config.json").is_file():
            return SD3Transformer2DModel.from_pretrained(root, subfolder="transformer").train()
        if (root / "config.json").is_file():
            return SD3Transformer2DModel.from_pretrained(root).train()
        raise ValueError(f"pretrained_path={path!r} is not an SD3 diffusers folder: expected "
                         f"{root / 'transformer' / 'config.json'} (or a transformer folder with config.json). "
                         "Save one with pipeline.save_pretrained(path) or transformer.save_pretrained(path).")

    # ----------------------------------------------------------------- network
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c = self.transformer.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def condition_tables(self) -> tuple[Tensor, Tensor]:
        """(context tokens (K+1, L, D), pooled vectors (K+1, P)) per label; row K is the null condition."""
        if self.prompt_table is not None:
            return self.prompt_table, self.pooled_prompt_table
        if self.text_encoder is not None:
            if not self.hparams.class_prompts:
                raise ValueError("Class labels were given to a text-conditioned RectifiedFlowDiT without "
                                 "class_prompts; "
                                 "set class_prompts=[one prompt per label], or pass prompts instead of labels.")
            # A frozen encoder gives the same class-prompt embeddings every step: encode them once per
            # (prompts, device, autocast dtype) instead of running the encoder in every training step.
            key = (tuple(self.hparams.class_prompts), self.device,
                   torch.get_autocast_dtype(self.device.type) if torch.is_autocast_enabled(self.device.type) else None,
                   torch.is_inference_mode_enabled())  # inference tensors must not reach a training graph
            cached = getattr(self, "_class_prompt_cache", None)
            if self.hparams.train_text_encoder or cached is None or cached[0] != key:
                tokens, pooled = self.encode_prompts(self.hparams.class_prompts)
                tables = (torch.cat([tokens, torch.zeros_like(tokens[:1])]),
                          torch.cat([pooled, torch.zeros_like(pooled[:1])]))
                if self.hparams.train_text_encoder:
                    return tables
                self._class_prompt_cache = cached = (key, tables)
            return cached[1]
        return self.context_tokens, self.class_pooled.weight

    def class_condition(self, y: Optional[Tensor], n: int) -> tuple[Tensor, Tensor]:
        """(context tokens, pooled vector) of labels ``y``; ``None`` is the null class."""
        if y is None and self.text_encoder is not None:  # the null prompt: zeros, whatever class_prompts are
            c = self.transformer.config
            return (torch.zeros(n, self.tokenizer.model_max_length, c.joint_attention_dim, device=self.device),
                    torch.zeros(n, c.pooled_projection_dim, device=self.device))
        if y is None:
            y = torch.full((n,), self.null_class, device=self.device, dtype=torch.long)
        tokens, pooled = self.condition_tables()
        return tokens[y], pooled[y]

    def forward(self, x_t: Tensor, t: Tensor, y: Optional[Tensor] = None, prompt_embeds: Optional[Tensor] = None,
                pooled_prompt_embeds: Optional[Tensor] = None) -> Tensor:
        """Velocity v_theta(x_t, t, c) for flow time ``t`` in [0, 1] (1 = noise).

        The condition is ``prompt_embeds`` (B, L, joint_attention_dim) + ``pooled_prompt_embeds``
        (B, pooled_projection_dim) when given, otherwise class labels ``y`` (``None`` = null class).
        """
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        if prompt_embeds is None:
            prompt_embeds, pooled_prompt_embeds = self.class_condition(y, x_t.shape[0])
        elif pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds was given without pooled_prompt_embeds; SD3 needs both.")
        return self.transformer(hidden_states=x_t, timestep=t * NUM_TRAIN_TIMESTEPS,
                                encoder_hidden_states=prompt_embeds, pooled_projections=pooled_prompt_embeds,
                                return_dict=False)[0]

    # ----------------------------------------------------------------- training
    def _unpack(self, batch) -> tuple[Tensor, dict]:
        if isinstance(batch, dict):
            x0 = batch.get("images", batch.get("pixel_values"))
            if x0 is None:
                raise ValueError(f"A dict batch needs 'images' (or 'pixel_values'); got keys {sorted(batch)}.")
            cond = {k: batch[k] for k in ("y", "prompts", "prompt_embeds", "pooled_prompt_embeds") if k in batch}
            return x0, cond
        if isinstance(batch, (tuple, list)):
            return batch[0], ({"y": batch[1]} if len(batch) > 1 and self.num_classes else {})
        return batch, {}

    def _latents_and_condition(self, batch) -> tuple[Tensor, dict]:
        """(x_0 for the flow, i.e. latents with a VAE, condition) of a batch; prompts become prompt embeddings."""
        if isinstance(batch, dict) and "latents" in batch:  # from CachedLatents: already encoded
            x0 = batch["latents"]
            cond = {k: batch[k] for k in ("y", "prompts", "prompt_embeds", "pooled_prompt_embeds") if k in batch}
        else:
            x0, cond = self._unpack(batch)
            x0 = self.to_latents(x0)
        if "prompts" in cond:
            prompts = cond["prompts"]
            cond = {k: v for k, v in cond.items() if k not in ("prompts", "y")}
            cond["prompt_embeds"], cond["pooled_prompt_embeds"] = self.encode_prompts(prompts)
        elif self.text_encoder is not None and not cond:
            raise ValueError("A text-conditioned RectifiedFlowDiT got a batch without prompts or labels: give dict "
                             "batches with 'prompts', or (images, labels) with class_prompts (or a datamodule that "
                             "has class_prompts).")
        return x0, cond

    def flow_loss(self, x0: Tensor, cond: dict, generator: torch.Generator, drop: bool = True,
                  reduce: bool = True) -> tuple[Tensor, Tensor]:
        """MSE(v_theta(z_t, t, c), eps - x0) with t from the training density; returns (loss, t)."""
        h = self.hparams
        b = x0.shape[0]
        t = sample_timesteps(b, h.timestep_sampling, logit_mean=h.logit_mean, logit_std=h.logit_std,
                             mode_scale=h.mode_scale, shift=h.shift, generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        z_t = interpolate(x0, eps, t)
        cond = dict(cond)
        if drop and h.class_dropout > 0:
            dropped = torch.rand(b, device=x0.device, generator=generator) < h.class_dropout
            if cond.get("prompt_embeds") is not None:
                keep = (~dropped).to(cond["prompt_embeds"].dtype)
                cond["prompt_embeds"] = cond["prompt_embeds"] * keep.view(b, 1, 1)
                cond["pooled_prompt_embeds"] = cond["pooled_prompt_embeds"] * keep.view(b, 1)
            elif cond.get("y") is not None:
                cond["y"] = torch.where(dropped, torch.full_like(cond["y"], self.null_class), cond["y"])
        v = self(z_t, t, **cond)
        per_sample = F.mse_loss(v.float(), velocity_target(x0, eps).float(), reduction="none").flatten(1).mean(1)
        return (per_sample.mean(), t) if reduce else (per_sample, t)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x0, cond = self._latents_and_condition(batch)
        loss, _ = self.flow_loss(x0, cond, self._step_generator())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x0, cond = self._latents_and_condition(batch)
        generator = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        per_sample, t = self.flow_loss(x0, cond, generator, drop=False, reduce=False)
        self._log_validation_loss(per_sample, t)

    def on_validation_epoch_end(self) -> None:
        if self._eval_due() and not self.trainer.sanity_checking:
            self._log_class_accuracy()

    # AdamW trains ``self``, not only the transformer: the context tokens and pooled class table train too
    # (no decay), and so does the text encoder when ``train_text_encoder``.

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        c = self.vae.config if self.vae is not None else self.transformer.config
        for name, value in {"image_size": c.sample_size, "in_channels": c.in_channels}.items():
            got = getattr(datamodule, name, None)
            if got is not None and got != value:
                arg = "sample_size" if name == "image_size" else name
                if self.vae is not None:
                    raise ValueError(f"{type(datamodule).__name__}.{name}={got} but the VAE at vae_path takes "
                                     f"{name}={value}; use data with {name}={value} or another VAE.")
                raise ValueError(f"{type(datamodule).__name__}.{name}={got} but RectifiedFlowDiT was built with "
                                 f"{arg}={value}; set model.{arg}={got} (or change the datamodule).")
        data_prompts = getattr(datamodule, "class_prompts", None)
        if self.text_encoder is not None and self.hparams.class_prompts is None and data_prompts:
            self._set_class_prompts(data_prompts)
        self._check_data_classes(datamodule)
        if stage == "fit":
            self._install_latent_cache(datamodule)

    # ----------------------------------------------------------------- latent cache
    def _install_latent_cache(self, datamodule) -> None:
        # From ``setup("fit")``: after the datamodule's setup and before any train dataloader is built (Lightning
        # builds one early to estimate the steps for the lr schedule), so every loader reads the cache.
        if self.vae is None or not self.hparams.cache_latents or getattr(datamodule, "train_set", None) is None:
            return
        split = datamodule.train_set
        split = split.images if isinstance(split, CachedLatents) else split
        if self._latent_cache is None or self._latent_cache.images is not split:  # keyed to this train split
            # Encode on the training device (Lightning moves the rest of the model there later).
            self.vae.to(self.trainer.strategy.root_device)
            self._latent_cache = self.cache_latents(split)
        datamodule.train_set = self._latent_cache

    def teardown(self, stage: str) -> None:
        # Give the datamodule its images back, so it can serve another model (or this one without a cache).
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(getattr(datamodule, "train_set", None), CachedLatents):
            datamodule.train_set = datamodule.train_set.images

    @torch.no_grad()
    def cache_latents(self, split: Dataset, batch_size: int = 256) -> CachedLatents:
        """Encode a train split once with :meth:`to_latents` (items ``(image, label)`` or images), on the VAE's
        device."""
        random_flip = bool(getattr(split, "random_flip", False))
        if random_flip:
            split.random_flip = False  # read the images as they are stored; the flips are cached separately
        latents, flipped, labels = [], [], []
        try:
            for batch in DataLoader(split, batch_size=batch_size, shuffle=False):
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if isinstance(batch, (tuple, list)) and len(batch) > 1:
                    labels.append(batch[1])
                x = x.to(next(self.vae.parameters()).device)
                latents.append(self.to_latents(x).cpu())
                if random_flip:
                    flipped.append(self.to_latents(x.flip(-1)).cpu())
        finally:
            if random_flip:
                split.random_flip = random_flip
        return CachedLatents(split, torch.cat(latents), torch.cat(labels) if labels else None,
                             torch.cat(flipped) if flipped else None)

    # ----------------------------------------------------------------- sampling
    def _labels(self, n: int, y) -> Optional[Tensor]:
        if y is None:
            return None
        if not self.num_classes:
            if self.text_encoder is not None:
                raise ValueError("y was given to a text-conditioned RectifiedFlowDiT without class_prompts; pass "
                                 "prompts=[...] or set class_prompts.")
            raise ValueError("y was given but this RectifiedFlowDiT has no classes (num_classes=None).")
        y = torch.as_tensor(y, device=self.device, dtype=torch.long)
        if y.ndim == 0:
            y = y.expand(n)
        if y.shape != (n,) or y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"y must be {n} class labels in [0, {self.num_classes}), got shape {tuple(y.shape)}.")
        return y

    def denoiser(self, y: Optional[Tensor] = None, cfg_scale: float = 1.0, prompt_embeds: Optional[Tensor] = None,
                 pooled_prompt_embeds: Optional[Tensor] = None):
        """``model(z, t) -> v`` for the samplers, with the condition and classifier-free guidance bound in."""
        if prompt_embeds is not None:
            cond = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}
            null = {"prompt_embeds": torch.zeros_like(prompt_embeds),
                    "pooled_prompt_embeds": torch.zeros_like(pooled_prompt_embeds)}
        else:
            cond, null = {"y": y}, {"y": None if y is None else torch.full_like(y, self.null_class)}
        if cfg_scale == 1.0 or (y is None and prompt_embeds is None):
            return lambda z, t: self(z, t, **cond)

        def guided(z: Tensor, t: Tensor) -> Tensor:
            t = t.expand(z.shape[0]) if t.ndim == 0 else t
            both = {k: torch.cat([cond[k], null[k]]) for k in cond}
            v_cond, v_null = self(torch.cat([z, z]), torch.cat([t, t]), **both).chunk(2)
            return v_null + cfg_scale * (v_cond - v_null)

        return guided

    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        """The diffusers scheduler this model samples with (and exports)."""
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=self.hparams.shift)

    @torch.no_grad()
    def sample(self, n: int, *, steps: Optional[int] = None, sampler: Optional[str] = None, y=None,
               cfg_scale: Optional[float] = None, generator: Optional[torch.Generator] = None,
               prompt_embeds: Optional[Tensor] = None, pooled_prompt_embeds: Optional[Tensor] = None,
               prompts=None, return_latents: bool = False) -> Tensor:
        """Draw ``n`` samples as images in [0, 1] (N, C, H, W) (``return_latents``: the raw z_0).

        The condition is one of ``y`` (labels; a text model uses ``class_prompts[y]``), ``prompts`` (``n`` strings or
        one for all; text models) or ``prompt_embeds`` + ``pooled_prompt_embeds``; none = unconditional (null).

        "euler" steps diffusers' ``FlowMatchEulerDiscreteScheduler(shift)``; "heun" is
        :func:`litzoo.diffusion.flow.sample_flow` on the same shifted grid (2 evaluations per step).
        """
        sampler = sampler or self.hparams.sampler
        steps = steps or self.hparams.sample_steps
        cfg_scale = self.hparams.cfg_scale if cfg_scale is None else cfg_scale
        _check_choice("sampler", sampler, FLOW_SAMPLERS)
        if n < 1 or steps < 1:
            raise ValueError(f"n and steps must be >= 1, got n={n}, steps={steps}.")
        if sum(c is not None for c in (y, prompts, prompt_embeds)) > 1:
            raise ValueError("Give one condition to sample: y, prompts or prompt_embeds (+ pooled_prompt_embeds).")
        y = self._labels(n, y)
        if y is not None and self.text_encoder is not None:
            if not self.hparams.class_prompts:
                raise ValueError("y was given to a text-conditioned RectifiedFlowDiT without class_prompts; pass "
                                 "prompts=[...] or set class_prompts.")
            prompts, y = [self.hparams.class_prompts[k] for k in y.tolist()], None
        if prompts is not None:
            prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
            if len(prompts) != n:
                raise ValueError(f"prompts holds {len(prompts)} prompts for n={n} samples; give n prompts or one "
                                 "string.")
            prompt_embeds, pooled_prompt_embeds = self.encode_prompts(prompts)
        model = self.denoiser(y, cfg_scale, prompt_embeds, pooled_prompt_embeds)
        noise = torch.randn((n, *self.sample_shape), generator=generator, device=self.device)
        with torch.autocast(self.device.type, enabled=False):
            if sampler == "euler":
                scheduler = self.scheduler()
                scheduler.set_timesteps(steps, device=self.device)
                z = noise
                for timestep in scheduler.timesteps:
                    v = model(z, (timestep / NUM_TRAIN_TIMESTEPS).expand(n).to(z.dtype))
                    z = scheduler.step(v, timestep, z, return_dict=False)[0]
            else:
                z = sample_flow(model, noise, steps=steps, sampler="heun", shift=self.hparams.shift)
        return z if return_latents else (self.from_latents(z) / 2 + 0.5).clamp(0, 1)

    # ----------------------------------------------------------------- export
    def export(self, out_dir: str | os.PathLike) -> Path:
        """A diffusers folder: ``transformer/`` (``SD3Transformer2DModel.from_pretrained(out_dir,
        subfolder="transformer")``), ``scheduler/`` (``FlowMatchEulerDiscreteScheduler``), safetensors only,
        plus ``litzoo.json`` with the hyperparameters and the class conditioning (context tokens, pooled table).

        ``model_index.json`` makes it a ``StableDiffusion3Pipeline`` folder without VAE and text encoders::

            pipe = StableDiffusion3Pipeline.from_pretrained(out_dir, **dict.fromkeys(PIPELINE_ABSENT_COMPONENTS))
            pipe(prompt_embeds=tokens[y], pooled_prompt_embeds=pooled[y], negative_prompt_embeds=tokens[null],
                 negative_pooled_prompt_embeds=pooled[null], guidance_scale=w, output_type="latent")

        reproduces ``sample(..., y=y, cfg_scale=w, return_latents=True)`` for the same generator (w > 1).

        A text-conditioned model also writes ``text_encoder/`` and ``tokenizer/`` (``CLIPTextModelWithProjection``
        and ``AutoTokenizer.from_pretrained(out_dir, subfolder=...)``). They stay out of ``model_index.json``: the
        pipeline's own prompt encoding (penultimate CLIP layer, two CLIPs + T5) is not this model's, so compute
        ``prompt_embeds, pooled = module.encode_prompts(prompts)`` (or by hand with the saved encoder: last hidden
        state and ``text_embeds``) and pass zeros as the negative embeddings (the null prompt).
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(out_dir / "transformer", safe_serialization=True)
        self.scheduler().save_pretrained(out_dir / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(out_dir / "vae", safe_serialization=True)
        if self.text_encoder is not None:
            self.text_encoder.save_pretrained(out_dir / "text_encoder")
            self.tokenizer.save_pretrained(out_dir / "tokenizer")
        import diffusers

        model_index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": diffusers.__version__,
                       "transformer": ["diffusers", "SD3Transformer2DModel"],
                       "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                       **{name: [None, None] for name in PIPELINE_ABSENT_COMPONENTS}}
        if self.vae is not None:
            model_index["vae"] = ["diffusers", "AutoencoderKL"]
        (out_dir / "model_index.json").write_text(json.dumps(model_index, indent=2))
        litzoo_config = {
            "class": "litzoo.modules.rectified_flow.RectifiedFlowDiT",
            "hyperparameters": dict(self.hparams),
            "null_class_label": self.null_class,
            "timestep_scale": NUM_TRAIN_TIMESTEPS,
        }
        if self.text_encoder is None or self.hparams.class_prompts:  # per-label tables exist
            with torch.no_grad():
                tokens, pooled = self.condition_tables()
            litzoo_config["context_tokens"] = tokens.detach().float().cpu().tolist()
            litzoo_config["pooled_class_embeddings"] = pooled.detach().float().cpu().tolist()
        (out_dir / "litzoo.json").write_text(json.dumps(litzoo_config, indent=1, default=list))
        return out_dir
