r"""KL-regularised autoencoder (the latent space of latent diffusion / SD3), 16 latent channels by default.

Kingma & Welling 2014 (VAE); Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models" (KL-f8 autoencoder); Esser et al. 2024 (SD3 §5.2.1: 16 latent channels reconstruct markedly
better than 4, and the gap to the diffusion model's loss closes with model size).

The encoder gives q(z | x) = N(mu(x), diag sigma^2(x)); the decoder a reconstruction x^(z). Loss per pixel::

    L = || x - x^(z) ||^2 / D  +  beta * KL(q(z | x) || N(0, I)) / D,      z ~ q(z | x)   (D = pixels x channels)

A small ``beta`` (``kl_weight``) keeps the latent space close to Gaussian without blurring. The
diffusion model trains on normalised latents ``(z - shift_factor) * scaling_factor`` (SD3 convention,
the fields of diffusers' ``AutoencoderKL`` config); both factors are computed from data
(:meth:`compute_latent_statistics`: shift = mean, scale = 1 / std of the latents) after training.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from torch import Tensor

from litzoo.base import LitzooModule, prepare_export_dir
from litzoo.model_card import trainer_metrics, training_data, vae_card, write_model_card
from litzoo.bases.generative import VALIDATION_SEED, check_image_blocks, check_optimizer_args
from litzoo.checks import check_non_negative, check_positive_int
from litzoo.optim import adamw_with_warmup_cosine
from litzoo.seeding import step_generator

#: training batches whose latents set the factors in a checkpoint written during training
LATENT_STATISTICS_BATCHES = 50


class VAE(LitzooModule):
    """diffusers ``AutoencoderKL`` trained with reconstruction + KL; stores the latent scaling/shift factors.

    Args:
        image_size, in_channels: image shape; ``image_size`` must be divisible by
            ``2 ** (len(block_out_channels) - 1)`` (every block but the last halves the resolution).
        latent_channels: channels of z (SD3: 16).
        block_out_channels, layers_per_block, norm_num_groups: encoder/decoder size.
        kl_weight: beta in the loss (module docstring).
        lr, weight_decay, warmup_steps, total_steps: AdamW + warmup/cosine.
        seed: seeds the per-step posterior sample so a resumed run repeats the uninterrupted one. ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
        gradient_checkpointing, fsdp_blocks: recompute block activations in backward (same gradients, less memory);
            the block classes FSDP shards one by one (default: the library's; see ``LitzooModule.configure_model``).
    """

    def __init__(
        self,
        image_size: int = 8,
        in_channels: int = 1,
        latent_channels: int = 16,
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        kl_weight: float = 1e-4,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 50,
        total_steps: int = 0,
        seed: Optional[int] = None,
        gradient_checkpointing: bool = False,
        fsdp_blocks: Optional[list[str]] = None,
    ) -> None:
        super().__init__()
        for name, value in [("image_size", image_size), ("in_channels", in_channels),
                            ("latent_channels", latent_channels), ("layers_per_block", layers_per_block)]:
            check_positive_int(name, value)
        check_image_blocks(image_size, block_out_channels, norm_num_groups)
        check_optimizer_args(lr, weight_decay, warmup_steps, total_steps)
        check_non_negative("kl_weight", kl_weight)
        self.save_hyperparameters()
        n = len(block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=in_channels, out_channels=in_channels, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, latent_channels=latent_channels, norm_num_groups=norm_num_groups,
            sample_size=image_size, scaling_factor=1.0, shift_factor=0.0,
        )
        # Persistent buffers: the factors travel in checkpoints and are written to the diffusers config on export.
        self.register_buffer("scaling_factor", torch.tensor(1.0))
        self.register_buffer("shift_factor", torch.tensor(0.0))

    def sharded_roots(self) -> list[torch.nn.Module]:
        # AutoencoderKL runs through encode/decode, never its forward: shard the parts those call (encoder, decoder,
        # quant convs), each gathered by its own forward.
        return [m for m in self.vae.children() if any(p.requires_grad for p in m.parameters())]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        h = self.hparams
        size = h.image_size // 2 ** (len(h.block_out_channels) - 1)
        return (h.latent_channels, size, size)

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """(reconstruction, per-sample KL) of images ``x`` in [-1, 1], decoding a posterior sample."""
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)
        return self.vae.decode(z).sample, posterior.kl()

    def vae_loss(self, x: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
        recon, kl = self(x, generator)
        d = x[0].numel()
        mse = F.mse_loss(recon.float(), x.float())
        kl = kl.float().mean() / d
        return mse + self.hparams.kl_weight * kl, mse, kl

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        generator = step_generator(self.seed, self.global_step, self.global_rank, device=self.device)
        loss, mse, kl = self.vae_loss(x, generator)
        self.log_dict({"train/loss": loss, "train/mse": mse, "train/kl": kl}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        loss, mse, kl = self.vae_loss(x, torch.Generator(device=self.device).manual_seed(VALIDATION_SEED + batch_idx))
        self.log_dict({"val/loss": loss, "val/mse": mse, "val/kl": kl}, sync_dist=True)

    def configure_optimizers(self):
        h = self.hparams
        return adamw_with_warmup_cosine(self.vae, lr=h.lr, weight_decay=h.weight_decay, warmup_steps=h.warmup_steps,
                                        total_steps=self.total_training_steps())

    def on_train_end(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.compute_latent_statistics(datamodule.train_dataloader())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint written during training (ModelCheckpoint, last.ckpt) must hold the factors of the weights
        # it saves, not the 1.0 / 0.0 that on_train_end would replace: recompute them from (at most
        # LATENT_STATISTICS_BATCHES) training batches first. state_dict() was taken already, so patch its entries.
        super().on_save_checkpoint(checkpoint)
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        if fitting and trainer.state.status == TrainerStatus.RUNNING and datamodule is not None:
            batches = itertools.islice(datamodule.train_dataloader(), LATENT_STATISTICS_BATCHES)
            shift, scale = self.compute_latent_statistics(batches)
            state = checkpoint.get("state_dict", {})
            for name, value in (("shift_factor", shift), ("scaling_factor", scale)):
                if name in state:
                    state[name] = torch.tensor(value, dtype=state[name].dtype)

    # ----------------------------------------------------------------- latents
    @torch.no_grad()
    def compute_latent_statistics(self, images) -> tuple[float, float]:
        """Set ``shift_factor`` = mean and ``scaling_factor`` = 1 / std of the posterior means of ``images``
        (a tensor or an iterable of batches), so the normalised latents have mean 0 and std 1."""
        batches = [images] if isinstance(images, Tensor) else images
        latents = []
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            latents.append(self.vae.encode(x.to(self.device)).latent_dist.mode().float().cpu())
        z = torch.cat(latents)
        self.shift_factor.fill_(z.mean().item())
        self.scaling_factor.fill_(1.0 / z.std().item())
        return float(self.shift_factor), float(self.scaling_factor)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Normalised latents (posterior mean - shift) * scale of images in [-1, 1] (for the diffusion model)."""
        z = self.vae.encode(x.to(self.device)).latent_dist.mode()
        return (z - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images in [-1, 1] from normalised latents (the inverse of :meth:`encode`'s normalisation)."""
        return self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample

    # ----------------------------------------------------------------- export
    def export(self, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """``AutoencoderKL.from_pretrained(out_dir)`` loads it, with ``scaling_factor``/``shift_factor`` in its config."""
        out_dir = prepare_export_dir(out_dir, overwrite)
        self.vae.register_to_config(scaling_factor=float(self.scaling_factor), shift_factor=float(self.shift_factor))
        self.vae.save_pretrained(out_dir, safe_serialization=True)
        write_model_card(out_dir, **vae_card(out_dir, dict(self.hparams), trainer_metrics(self), training_data(self)))
        return out_dir
