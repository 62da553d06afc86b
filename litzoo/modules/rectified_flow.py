r"""Rectified-flow DiT as in Stable Diffusion 3: MMDiT backbone, QK-norm, 2-D positions, logit-normal t.

Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (SD3);
Liu et al. 2023 (rectified flow); Ho & Salimans 2022 (classifier-free guidance).

Objective (SD3 §2-3), with ``t = 0`` data and ``t = 1`` noise::

    z_t = (1 - t) x_0 + t eps,    eps ~ N(0, I),
    t   = shift(t~),               t~ ~ pi  (uniform | logit_normal(m, s) | mode(s) | cosmap)
    L   = E_{t, x_0, eps} || v_theta(z_t, t, c) - (eps - x_0) ||^2

The backbone is diffusers' ``SD3Transformer2DModel`` (joint attention over image patches and context
tokens, 2-D sin-cos positions cropped from a ``pos_embed_max_size`` grid, optional RMS QK-norm that
keeps attention logits from growing at high learning rates, SD3 §5.3.2). Its conditioning
``c = (context tokens, pooled vector)`` comes from :class:`litzoo.nets.sd3_conditioning.SD3Conditioning`:
learned class tokens, one precomputed prompt per class (``prompt_embeds_path``), prompt embeddings in the
batch, or text through a small CLIP text encoder (``text_encoder``/``text_encoder_path``; prompts in the batch or
``class_prompts[y]``). As in SD3 the encoder is frozen by default; a *randomly initialised* encoder still
separates prompts (a fixed random feature map), and ``train_text_encoder=True`` trains it with the flow loss
(SD3 takes the penultimate layer and concatenates CLIP-L/G and T5; one small encoder's last layer suffices here).

The condition is replaced by the null condition with probability ``class_dropout`` during training, so
one network also gives the unconditional velocity for guidance,
``v_cfg = v(z, t, null) + w (v(z, t, c) - v(z, t, null))``. Sampling integrates dz/dt = v from t = 1 to 0
with diffusers' ``FlowMatchEulerDiscreteScheduler(shift=...)`` ("euler") or the Heun sampler of
:mod:`litzoo.diffusion.flow` ("heun"). The transformer sees the timestep as ``1000 t``, diffusers' convention,
so an exported folder works with the diffusers scheduler and pipelines as is.

Latent flows (``vae_path``, Rombach et al. 2022; SD3 §5.2.1) train on ``x_0 = (mode(q(z|x)) - shift) * scale``
(:meth:`RectifiedFlowDiT.to_latents`). With ``cache_latents`` the image datamodules encode their train split
once per fit (:func:`litzoo.data.latents.encode_split`) and the epochs read the cached latents: a frozen VAE gives
the same posterior *mode* every epoch, so the cache equals ``to_latents(x)`` and a resumed run sees the same data
(one cached *sample* of q(z|x) would freeze one draw of the posterior noise anyway).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from torch import Tensor

from litzoo.base import prepare_export_dir
from litzoo.bases.generative import GenerativeModule, check_optimizer_args
from litzoo.checks import check_choice, check_positive, check_positive_int, check_range
from litzoo.diffusion.flow import (FLOW_SAMPLERS, TIMESTEP_DENSITIES, check_mode_scale, interpolate, sample_flow,
                                   sample_timesteps, velocity_target)
from litzoo.nets.lora import DIT_LORA_TARGETS, check_lora_args, save_sd3_lora
from litzoo.nets.sd3 import PIPELINE_ABSENT_COMPONENTS  # noqa: F401  (imported from here by users and tests)
from litzoo.nets.sd3 import check_architecture, check_data_shape, load_latent_vae, load_sd3_transformer, sd3_model_index
from litzoo.nets.sd3_conditioning import SD3Conditioning
from litzoo.model_card import flow_card, trainer_metrics, training_data, write_model_card
from litzoo.pipelines import write_class_embeddings

NUM_TRAIN_TIMESTEPS = 1000  # diffusers' timestep scale: the transformer sees 1000 * t
ARCHITECTURE_ARGS = ("sample_size", "patch_size", "in_channels", "num_layers", "attention_head_dim",
                     "num_attention_heads", "joint_attention_dim", "caption_projection_dim",
                     "pooled_projection_dim", "pos_embed_max_size", "qk_norm")
# Checkpoint keys written before the conditioning had its own module (they now live under ``conditioning.``).
_CONDITIONING_KEYS = ("context_tokens", "class_pooled", "prompt_table", "pooled_prompt_table", "text_encoder")


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
        cache_latents: with ``vae_path``, ask the datamodule to encode its train split once per fit (posterior
            mode, normalised; kept in memory; see :meth:`latent_encoder`) and train from those latents instead of
            encoding every batch. Plain dataloaders and datamodules without latent caching encode per batch.
        text_encoder: a ``CLIPTextConfig`` dict (plain types, e.g. ``{"hidden_size": 64, "projection_dim": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 40}``) for a randomly initialised ``CLIPTextModelWithProjection`` with
            :func:`litzoo.text.build_prompt_tokenizer`; ``hidden_size`` must be ``joint_attention_dim`` and
            ``projection_dim`` ``pooled_projection_dim``; ``vocab_size`` and the token ids come from the tokenizer.
        text_encoder_path: instead, a local folder with ``text_encoder/`` and ``tokenizer/`` (e.g. an export of a
            text-conditioned model) or a ``CLIPTextModelWithProjection`` folder that also holds its tokenizer.
        class_prompts: the prompt of each label (label k -> ``class_prompts[k]``), for labelled data and
            ``sample(y=...)``; ``None`` takes the datamodule's ``class_prompts`` at fit. With text conditioning the
            label count is ``len(class_prompts)``; ``num_classes`` must then be None or that number.
        train_text_encoder: train the text encoder with the flow loss (default frozen, as in SD3).
        lora_rank, lora_alpha, lora_dropout, lora_target_modules: LoRA on the transformer, only it trains (0 = off;
            alpha None = rank; targets: diffusers' SD3 LoRA script's); ``GenerativeModule.add_lora``, :meth:`export`.
        num_classes: class conditioning with learned context tokens; ``None`` = unconditional or prompt embeddings
            passed in the batch.
        num_context_tokens: context tokens per class.
        class_dropout: probability of the null condition in training (for classifier-free guidance).
        timestep_sampling, logit_mean, logit_std, mode_scale: the training density of t (SD3 §3.1).
        shift: resolution-dependent shift alpha used for training t and the sampling grid (SD3 §5.3.2).
        sampler, sample_steps, cfg_scale: defaults of :meth:`sample`.
        lr, weight_decay, adam_betas, warmup_steps, total_steps: AdamW + warmup/cosine (``total_steps=0`` uses
            the trainer's estimate; ``-1``: constant lr after warm-up). AdamW trains the whole module: the
            transformer, the class tokens and pooled table (no decay), and the text encoder if it trains.
        eval_every_n_epochs, eval_samples_per_class, eval_steps: class accuracy of samples logged at
            validation every N epochs (0 = never; 1-channel class-conditional images only).
        seed: seeds the per-step noise so a resumed run repeats the uninterrupted one exactly. ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
        gradient_checkpointing, fsdp_blocks: sharded training (``LitzooModule.configure_model``).
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
        lora_rank: int = 0,
        lora_alpha: Optional[float] = None,
        lora_dropout: float = 0.0,
        lora_target_modules: Optional[list[str]] = None,
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
        seed: Optional[int] = None,
        gradient_checkpointing: bool = False, fsdp_blocks: Optional[list[str]] = None,
    ) -> None:
        super().__init__()
        check_choice("timestep_sampling", timestep_sampling, TIMESTEP_DENSITIES)
        check_choice("sampler", sampler, FLOW_SAMPLERS)
        if timestep_sampling == "mode":
            check_mode_scale(mode_scale)
        check_positive("logit_std", logit_std)
        check_positive("shift", shift)  # 1.0 = no shift
        for name, value in [("sample_steps", sample_steps), ("eval_steps", eval_steps),
                            ("num_context_tokens", num_context_tokens)]:
            check_positive_int(name, value)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None (no class conditioning), got {num_classes}.")
        check_range("class_dropout", class_dropout, 0.0, 1.0, high_open=True)
        check_optimizer_args(lr, weight_decay, warmup_steps, total_steps, adam_betas)
        check_lora_args(lora_rank, lora_alpha, lora_dropout, lora_target_modules)
        if lora_rank and train_text_encoder:
            raise ValueError("train_text_encoder=True trains the whole text encoder, lora_rank>0 only adapters on the "
                             "transformer; set one of them.")
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
            self.transformer = load_sd3_transformer(pretrained_path)
        config = self.transformer.config
        self.vae = load_latent_vae(vae_path, config) if vae_path is not None else None
        self.conditioning = SD3Conditioning(
            config.joint_attention_dim, config.pooled_projection_dim, num_classes, num_context_tokens,
            prompt_embeds_path, text_encoder, text_encoder_path, class_prompts, train_text_encoder)
        self.add_lora(self.transformer, DIT_LORA_TARGETS)
        self._register_load_state_dict_pre_hook(self._nest_conditioning_keys)

    @staticmethod
    def _nest_conditioning_keys(state_dict, prefix, *args) -> None:
        for key in [k for k in state_dict if k[len(prefix):].split(".")[0] in _CONDITIONING_KEYS]:
            state_dict[f"{prefix}conditioning.{key[len(prefix):]}"] = state_dict.pop(key)

    @property
    def num_classes(self) -> Optional[int]:
        return self.conditioning.num_classes

    @property
    def null_class(self) -> int:
        """The label of the learned null condition (the last row of the condition tables)."""
        return self.conditioning.null_class

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "vae", None) is not None:
            self.vae.eval()  # frozen: no dropout/batch statistics, whatever Lightning sets
        return self

    # ----------------------------------------------------------------- latents and conditions
    @torch.no_grad()
    def to_latents(self, x: Tensor) -> Tensor:
        """Normalised VAE latents of images in [-1, 1] (identity without a VAE). The posterior mode is
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

    def latent_encoder(self):
        """:meth:`to_latents` when a datamodule should serve its train split encoded once (a VAE and
        ``cache_latents``), else ``None``."""
        return self.to_latents if self.vae is not None and self.hparams.cache_latents else None

    def encode_prompts(self, prompts) -> tuple[Tensor, Tensor]:
        """``(prompt_embeds, pooled_prompt_embeds)`` of prompts through the text encoder, for ``forward``/``sample``
        or ``StableDiffusion3Pipeline(prompt_embeds=..., pooled_prompt_embeds=...)``."""
        return self.conditioning.encode_prompts(prompts)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c = self.transformer.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def forward(self, x_t: Tensor, t: Tensor, y: Optional[Tensor] = None, prompt_embeds: Optional[Tensor] = None,
                pooled_prompt_embeds: Optional[Tensor] = None) -> Tensor:
        """Velocity v_theta(x_t, t, c) for flow time ``t`` in [0, 1] (1 = noise).

        The condition is ``prompt_embeds`` (B, L, joint_attention_dim) + ``pooled_prompt_embeds``
        (B, pooled_projection_dim) when given, otherwise class labels ``y`` (``None`` = null class).
        """
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        if prompt_embeds is None:
            prompt_embeds, pooled_prompt_embeds = self.conditioning(y, x_t.shape[0])
        elif pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds was given without pooled_prompt_embeds; SD3 needs both.")
        return self.transformer(hidden_states=x_t, timestep=t * NUM_TRAIN_TIMESTEPS,
                                encoder_hidden_states=prompt_embeds, pooled_projections=pooled_prompt_embeds,
                                return_dict=False)[0]

    # ----------------------------------------------------------------- training
    def _unpack(self, batch) -> tuple[Tensor, dict]:
        """(x_0 for the flow, i.e. latents with a VAE, condition) of a batch; prompts become prompt embeddings."""
        keys = ("y", "prompts", "prompt_embeds", "pooled_prompt_embeds")
        if isinstance(batch, dict) and "latents" in batch:  # from CachedLatents: already encoded
            x0, cond = batch["latents"], {k: batch[k] for k in keys if k in batch}
        else:
            if isinstance(batch, dict):
                x0, cond = batch.get("images", batch.get("pixel_values")), {k: batch[k] for k in keys if k in batch}
                if x0 is None:
                    raise ValueError(f"A dict batch needs 'images' (or 'pixel_values'); got keys {sorted(batch)}.")
            elif isinstance(batch, (tuple, list)):
                x0, cond = batch[0], ({"y": batch[1]} if len(batch) > 1 and self.num_classes else {})
            else:
                x0, cond = batch, {}
            x0 = self.to_latents(x0)
        if "prompts" in cond:
            prompts = cond["prompts"]
            cond = {k: v for k, v in cond.items() if k not in ("prompts", "y")}
            cond["prompt_embeds"], cond["pooled_prompt_embeds"] = self.encode_prompts(prompts)
        elif self.conditioning.text_encoder is not None and not cond:
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
        if drop and h.class_dropout > 0:
            dropped = torch.rand(b, device=x0.device, generator=generator) < h.class_dropout
            cond = self.conditioning.drop(cond, dropped)
        v = self(z_t, t, **cond)
        per_sample = F.mse_loss(v.float(), velocity_target(x0, eps).float(), reduction="none").flatten(1).mean(1)
        return (per_sample.mean(), t) if reduce else (per_sample, t)

    loss = flow_loss  # what GenerativeModule's training and validation steps call

    def on_validation_epoch_end(self) -> None:
        if self._eval_due() and not self.trainer.sanity_checking:
            self._log_class_accuracy()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._datamodule()
        if datamodule is None:
            return
        check_data_shape(datamodule, self.vae.config if self.vae is not None else self.transformer.config,
                         self.vae is not None)
        data_prompts = getattr(datamodule, "class_prompts", None)
        if self.conditioning.text_encoder is not None and self.hparams.class_prompts is None and data_prompts:
            self.conditioning.set_class_prompts(list(data_prompts))
            self.hparams.class_prompts = list(data_prompts)  # so checkpoints and exports carry them
        self._check_data_classes(datamodule)

    # ----------------------------------------------------------------- sampling
    def _unconditional_error(self) -> str:
        if self.conditioning.text_encoder is not None:
            return "y was given to a text-conditioned RectifiedFlowDiT without class_prompts; pass prompts=[...] or " \
                   "set class_prompts."
        return "y was given but this RectifiedFlowDiT has no classes (num_classes=None)."

    def denoiser(self, y: Optional[Tensor] = None, cfg_scale: float = 1.0, prompt_embeds: Optional[Tensor] = None,
                 pooled_prompt_embeds: Optional[Tensor] = None):
        """``model(z, t) -> v`` for the samplers, with the condition and classifier-free guidance bound in."""
        if prompt_embeds is None:
            return super().denoiser(y, cfg_scale)
        cond = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}
        return self._guided(cond, self.conditioning.null_condition(cond), cfg_scale)

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
        steps = self.hparams.sample_steps if steps is None else steps  # steps=0 is an error, not the default
        cfg_scale = self.hparams.cfg_scale if cfg_scale is None else cfg_scale
        check_choice("sampler", sampler, FLOW_SAMPLERS)
        check_positive_int("n", n)
        check_positive_int("steps", steps)
        if sum(c is not None for c in (y, prompts, prompt_embeds)) > 1:
            raise ValueError("Give one condition to sample: y, prompts or prompt_embeds (+ pooled_prompt_embeds).")
        y = self._labels(n, y)
        if y is not None and self.conditioning.text_encoder is not None:
            prompts, y = [self.conditioning.class_prompts[k] for k in y.tolist()], None
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
    def export(self, out_dir: str | os.PathLike, overwrite: bool = False, merge_lora: bool = False) -> Path:
        """A diffusers folder: ``transformer/`` (``SD3Transformer2DModel.from_pretrained(out_dir,
        subfolder="transformer")``), ``scheduler/`` (``FlowMatchEulerDiscreteScheduler``), safetensors only,
        ``README.md`` (model card), ``litzoo.json`` (hyperparameters, class conditioning). Class-conditional:
        ``class_embeddings/`` and ``pipeline.py``: ``DiffusionPipeline.from_pretrained(out_dir, custom_pipeline=
        out_dir, trust_remote_code=True)(class_labels=..., guidance_scale=w)`` equals ``sample(y=..., cfg_scale=w)``.

        ``model_index.json`` also makes it a ``StableDiffusion3Pipeline`` folder without VAE and text encoders:
            pipe = StableDiffusion3Pipeline.from_pretrained(out_dir, **dict.fromkeys(PIPELINE_ABSENT_COMPONENTS))
            pipe(prompt_embeds=tokens[y], pooled_prompt_embeds=pooled[y], negative_prompt_embeds=tokens[null],
                 negative_pooled_prompt_embeds=pooled[null], guidance_scale=w, output_type="latent")
        reproduces ``sample(..., y=y, cfg_scale=w, return_latents=True)`` for the same generator (w > 1).

        A text-conditioned model also writes ``text_encoder/`` and ``tokenizer/`` (``CLIPTextModelWithProjection`` and
        ``AutoTokenizer.from_pretrained(out_dir, subfolder=...)``). They stay out of ``model_index.json``: the
        pipeline's own prompt encoding (penultimate CLIP layer, two CLIPs + T5) is not this model's, so compute
        ``prompt_embeds, pooled = module.encode_prompts(prompts)`` (or by hand with the saved encoder: last hidden
        state and ``text_embeds``) and pass zeros as the negative embeddings (the null prompt). LoRA: ``transformer/`` is the frozen base, ``pytorch_lora_weights.safetensors`` the adapters (diffusers'
        ``load_lora_weights``/``load_lora_adapter``); ``merge_lora=True``: the merged transformer, no adapter file.
        """
        out_dir = prepare_export_dir(out_dir, overwrite)
        self.exported_network(self.transformer, merge_lora).save_pretrained(out_dir / "transformer")
        if self.lora_rank and not merge_lora:
            save_sd3_lora(self.transformer, out_dir)
        self.scheduler().save_pretrained(out_dir / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(out_dir / "vae", safe_serialization=True)
        text_encoder = self.conditioning.text_encoder
        if text_encoder is not None:
            text_encoder.save_pretrained(out_dir / "text_encoder")
            self.conditioning.tokenizer.save_pretrained(out_dir / "tokenizer")
        model_index = sd3_model_index(vae=self.vae is not None)
        litzoo_config = {"class": "litzoo.modules.rectified_flow.RectifiedFlowDiT",
                         "hyperparameters": dict(self.hparams), "null_class_label": self.null_class,
                         "timestep_scale": NUM_TRAIN_TIMESTEPS}
        if text_encoder is None or self.conditioning.class_prompts:  # per-label tables exist
            tokens, pooled = (t.detach() for t in self.conditioning.condition_tables())
            litzoo_config["context_tokens"] = tokens.detach().float().cpu().tolist()
            litzoo_config["pooled_class_embeddings"] = pooled.detach().float().cpu().tolist()
            if self.num_classes:  # SD3's pipeline takes only embeddings: ship the tables and a pipeline for labels
                model_index["class_embeddings"] = write_class_embeddings(out_dir, tokens.detach(), pooled.detach())
        (out_dir / "model_index.json").write_text(json.dumps(model_index, indent=2))
        (out_dir / "litzoo.json").write_text(json.dumps(litzoo_config, indent=1, default=list))
        write_model_card(out_dir, **flow_card(out_dir, dict(self.hparams), self.num_classes, self.vae is not None,
                                              text_encoder is not None, trainer_metrics(self), training_data(self),
                                              lora=self.lora_rank > 0 and not merge_lora))
        return out_dir
