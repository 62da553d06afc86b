r"""Denoising diffusion probabilistic model, with its continuous-time SDE view.

Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; Song et al. 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations"; Nichol & Dhariwal 2021 (cosine
schedule); Salimans & Ho 2022 (v-prediction); Ho & Salimans 2022 (classifier-free guidance).

Forward process with ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``:

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,      eps ~ N(0, I)

Training minimises the simple loss  E_{t, x_0, eps} || f_theta(x_t, t, y) - target ||^2  with

    target = eps                                                  (prediction_type "epsilon")
    target = v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 ("v_prediction")
    target = x_0                                                  ("sample")

and the label ``y`` replaced by a learned null class with probability ``class_dropout`` so one
network gives both the conditional and the unconditional model for guidance,
``eps_cfg = eps(x, null) + w * (eps(x, y) - eps(x, null))``.

As T -> infinity the chain is the VP-SDE  dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,  whose
score is  grad log p_t(x) = -eps(x, t) / sqrt(1 - alpha_bar(t)).  The same trained network
therefore drives the discrete ancestral/DDIM samplers, the reverse-SDE and predictor-corrector
samplers, the probability-flow ODE and the exact likelihood (all in :mod:`litzoo.diffusion`;
this module only wires them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

from litzoo.base import prepare_export_dir
from litzoo.bases.generative import GenerativeModule, check_image_blocks, check_optimizer_args
from litzoo.checks import check_choice, check_positive_int, check_range
from litzoo.diffusion import NoiseSchedule, log_likelihood, training_target
from litzoo.diffusion import sample as run_sampler
from litzoo.diffusion.samplers import SAMPLERS
from litzoo.model_card import trainer_metrics, training_data, write_model_card
from litzoo.nets import TimeMLP
from litzoo.pipelines import write_custom_pipeline

# Short names people type, mapped to diffusers' prediction_type names (which the export keeps).
PREDICTION_TYPES = {"epsilon": "epsilon", "eps": "epsilon", "v_prediction": "v_prediction", "v": "v_prediction",
                    "sample": "sample", "x0": "sample"}
BETA_SCHEDULES = ("linear", "cosine")


class DDPM(GenerativeModule):
    """DDPM on images (diffusers ``UNet2DModel``) or on vectors (``TimeMLP``, set ``data_dim``).

    The defaults are the CPU demo: a class-conditional UNet on 8x8 digits that trains in minutes.

    Args:
        image_size, in_channels: image shape; ``image_size`` must be divisible by
            ``2 ** (len(block_out_channels) - 1)`` (the UNet halves it at every block but the last).
        num_classes: number of classes for class conditioning; ``None`` = unconditional.
        data_dim: set for vector data (e.g. 2 for :class:`Toy2DDataModule`) to use an MLP instead of a UNet.
        block_out_channels, layers_per_block, attention, norm_num_groups: UNet size.
        mlp_hidden, mlp_depth: MLP size (vector data).
        class_dropout: probability of replacing the label by the null class (for CFG).
        num_train_timesteps, beta_schedule, prediction_type, clip_sample: the diffusion (see module docstring).
        sampler, sample_steps: defaults of :meth:`sample`.
        lr, weight_decay, adam_betas, warmup_steps, total_steps: AdamW + warmup/cosine
            (``total_steps=0`` uses the trainer's estimate;
            ``-1``: constant lr after warm-up).
        eval_every_n_epochs, eval_samples_per_class, eval_sampler, eval_steps: class accuracy and FID
            of samples logged at validation every N epochs (0 = never; image data with classes only).
        seed: seeds the per-step noise so a resumed run repeats the uninterrupted one exactly. ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
        gradient_checkpointing, fsdp_blocks: recompute block activations in backward (same gradients, less memory);
            the block classes FSDP shards one by one (default: the library's; see ``LitzooModule.configure_model``).
    """

    def __init__(
        self,
        image_size: int = 8,
        in_channels: int = 1,
        num_classes: Optional[int] = 10,
        data_dim: Optional[int] = None,
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        attention: bool = False,
        norm_num_groups: int = 8,
        mlp_hidden: int = 128,
        mlp_depth: int = 3,
        class_dropout: float = 0.1,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        sampler: str = "ddpm",
        sample_steps: int = 1000,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        total_steps: int = 0,
        eval_every_n_epochs: int = 0,
        eval_samples_per_class: int = 20,
        eval_sampler: str = "ddim",
        eval_steps: int = 25,
        seed: Optional[int] = None,
        gradient_checkpointing: bool = False,
        fsdp_blocks: Optional[list[str]] = None,
    ) -> None:
        super().__init__()
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("sampler", sampler, SAMPLERS)
        check_choice("eval_sampler", eval_sampler, SAMPLERS)
        for name, value in [("sample_steps", sample_steps), ("eval_steps", eval_steps),
                            ("num_train_timesteps", num_train_timesteps), ("image_size", image_size),
                            ("in_channels", in_channels), ("layers_per_block", layers_per_block)]:
            check_positive_int(name, value)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None (unconditional), got {num_classes}.")
        check_range("class_dropout", class_dropout, 0.0, 1.0, high_open=True)
        check_optimizer_args(lr, weight_decay, warmup_steps, total_steps, adam_betas)
        if data_dim is None:
            check_image_blocks(image_size, block_out_channels, norm_num_groups)
        elif data_dim < 1:
            raise ValueError(f"data_dim must be >= 1 for vector data or None for images, got {data_dim}.")
        self.save_hyperparameters()
        self.prediction_type = PREDICTION_TYPES[prediction_type]
        self.num_classes = num_classes
        self.null_class = num_classes  # the label of the learned null class (UNet/MLP class table row num_classes)
        self.schedule = NoiseSchedule(
            num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
            prediction_type=self.prediction_type, clip_sample=clip_sample and data_dim is None,
        )
        self.register_buffer("alphas_cumprod", self.schedule.alphas_cumprod.float(), persistent=False)
        # Index ``num_classes`` is the learned null class used for classifier-free guidance.
        num_class_embeds = num_classes + 1 if num_classes else None
        if data_dim is None:
            n = len(block_out_channels)
            down = tuple("AttnDownBlock2D" if attention and i > 0 else "DownBlock2D" for i in range(n))
            up = tuple("AttnUpBlock2D" if attention and i < n - 1 else "UpBlock2D" for i in range(n))
            self.net = UNet2DModel(
                sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
                block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                down_block_types=down, up_block_types=up, norm_num_groups=norm_num_groups,
                add_attention=attention, attention_head_dim=8, num_class_embeds=num_class_embeds,
                num_train_timesteps=num_train_timesteps,
            )
        else:
            self.net = TimeMLP(data_dim, hidden=mlp_hidden, depth=mlp_depth, num_classes=num_classes)
        self._val_images: list[torch.Tensor] = []

    # ----------------------------------------------------------------- network
    @property
    def sample_shape(self) -> tuple[int, ...]:
        h = self.hparams
        return (h.data_dim,) if h.data_dim else (h.in_channels, h.image_size, h.image_size)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Network prediction (eps, v or x0 per ``prediction_type``) at timestep labels ``t``.

        For a class-conditional model ``y=None`` means unconditional (the null class).
        """
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if self.num_classes and y is None:
            y = torch.full((x_t.shape[0],), self.num_classes, device=x_t.device, dtype=torch.long)
        if not self.num_classes:
            y = None
        if isinstance(self.net, UNet2DModel):
            return self.net(x_t, t, class_labels=y).sample
        return self.net(x_t, t, y)

    # ----------------------------------------------------------------- training
    def diffusion_loss(self, x0: torch.Tensor, y: Optional[torch.Tensor], generator: torch.Generator,
                       drop_labels: bool = True, reduce: bool = True):
        b = x0.shape[0]
        t = torch.randint(0, self.hparams.num_train_timesteps, (b,), device=x0.device, generator=generator)
        eps = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        alpha_bar = self.alphas_cumprod[t].view(b, *([1] * (x0.ndim - 1)))
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
        if self.num_classes and y is not None and drop_labels and self.hparams.class_dropout > 0:
            drop = torch.rand(b, device=x0.device, generator=generator) < self.hparams.class_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        pred = self(x_t, t, y)
        target = training_target(x0, eps, alpha_bar, self.prediction_type)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        return (per_sample.mean(), t) if reduce else (per_sample, t)

    def loss(self, x0: torch.Tensor, y: Optional[torch.Tensor], generator: torch.Generator, drop: bool = True,
             reduce: bool = True):
        """:meth:`diffusion_loss` with ``t`` as a fraction of the chain (what GenerativeModule's steps take)."""
        loss, t = self.diffusion_loss(x0, y, generator, drop_labels=drop, reduce=reduce)
        return loss, t.float() / self.hparams.num_train_timesteps

    def _collect_validation_images(self, x0: torch.Tensor) -> None:
        if self._eval_due() and sum(v.shape[0] for v in self._val_images) < 2000:
            self._val_images.append((x0.float() / 2 + 0.5).clamp(0, 1).cpu())

    def _eval_due(self) -> bool:
        return super()._eval_due() and not self.hparams.data_dim

    def eval_sample_kwargs(self) -> dict:
        return {"sampler": self.hparams.eval_sampler}

    def on_validation_epoch_end(self) -> None:
        if not self._eval_due() or self.trainer.sanity_checking:
            self._val_images.clear()
            return
        from litzoo.metrics import fid

        images = self._log_class_accuracy()
        if self._val_images:
            self.log("val/fid", fid(torch.cat(self._val_images), images.cpu()), sync_dist=True)
        self._val_images.clear()

    @staticmethod
    def _unpack(batch):
        if isinstance(batch, (tuple, list)):
            return batch[0], (batch[1] if len(batch) > 1 else None)
        return batch, None

    def optimized_module(self) -> torch.nn.Module:
        return self.net

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._datamodule()
        if datamodule is None:
            return
        h = self.hparams
        expected = {"data_dim": h.data_dim} if h.data_dim else {"image_size": h.image_size, "in_channels": h.in_channels}
        for name, value in expected.items():
            got = getattr(datamodule, name, None)
            if got is not None and got != value:
                raise ValueError(
                    f"{type(datamodule).__name__}.{name}={got} but DDPM was built with {name}={value}; "
                    f"set model.{name}={got} (or change the datamodule)."
                )
        self._check_data_classes(datamodule)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int, *, steps: Optional[int] = None, sampler: Optional[str] = None, y=None,
               cfg_scale: float = 1.0, generator: Optional[torch.Generator] = None, progress: bool = False,
               **sampler_kwargs) -> torch.Tensor:
        """Draw ``n`` samples: images in [0, 1] (N, C, H, W), or raw vectors for vector data.

        ``sampler`` is one of :data:`litzoo.diffusion.samplers.SAMPLERS`; ``sampler_kwargs`` go to
        :func:`litzoo.diffusion.sample` (``eta``, ``sde``, ``snr``, ``rtol`` ...).
        """
        sampler = sampler or self.hparams.sampler
        steps = self.hparams.sample_steps if steps is None else steps  # steps=0 is an error, not the default
        check_choice("sampler", sampler, SAMPLERS)
        check_positive_int("n", n)
        check_positive_int("steps", steps)
        model = self.denoiser(self._labels(n, y), cfg_scale)
        with torch.autocast(self.device.type, enabled=False):
            x = run_sampler(model, self.schedule, (n, *self.sample_shape), sampler=sampler, steps=steps,
                            generator=generator, progress=progress, device=self.device, **sampler_kwargs)
        return x if self.hparams.data_dim else (x / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, y=None, **kwargs) -> dict:
        """Exact log-likelihood (nats) and bits/dim of data ``x`` through the probability-flow ODE.

        Images are expected in [0, 1] (as ``sample`` returns them) and are mapped to the model's [-1, 1].
        """
        data = x if self.hparams.data_dim else x * 2 - 1
        if not self.hparams.data_dim:
            kwargs.setdefault("data_range", (-1.0, 1.0))  # bits/dim on the 256-level scale of 8-bit images
        model = self.denoiser(self._labels(x.shape[0], y))
        with torch.autocast(self.device.type, enabled=False):
            return log_likelihood(model, self.schedule, data.to(self.device), **kwargs)

    # ----------------------------------------------------------------- export
    def export(self, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """Image model: a diffusers folder (``unet/`` + ``scheduler/``, safetensors weights). Unconditional:
        ``DDPMPipeline.from_pretrained(out_dir)``. Class-conditional: ``pipeline.py`` holds a
        ``ClassConditionalDDPMPipeline`` (torch + diffusers only) that ``model_index.json`` names, so
        ``DiffusionPipeline.from_pretrained(out_dir, trust_remote_code=True)(class_labels=[...], guidance_scale=w,
        num_inference_steps=T, generator=g)`` reproduces ``sample(n, sampler="ddpm", steps=T, y=..., cfg_scale=w,
        generator=g)``. Vector model: ``model.safetensors`` + ``config.json`` + ``scheduler/``.
        Every export has a ``README.md`` model card."""
        out_dir = prepare_export_dir(out_dir, overwrite)
        scheduler = DDPMScheduler(**self.schedule.scheduler_config())
        if isinstance(self.net, UNet2DModel):
            DDPMPipeline(unet=self.net, scheduler=scheduler).save_pretrained(out_dir, safe_serialization=True)
            if self.num_classes:  # DDPMPipeline cannot pass labels: ship the pipeline that can
                write_custom_pipeline(out_dir, "ddpm_pipeline.py", "ClassConditionalDDPMPipeline")
        else:
            scheduler.save_pretrained(out_dir / "scheduler")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                      out_dir / "model.safetensors")
        litzoo_config = {"class": "litzoo.modules.DDPM", "hyperparameters": dict(self.hparams),
                         "null_class_label": self.num_classes}
        (out_dir / "litzoo.json").write_text(json.dumps(litzoo_config, indent=2, default=list))
        write_model_card(out_dir, **self._card(out_dir))
        return out_dir

    def _card(self, out_dir: Path) -> dict:
        h = self.hparams
        steps = min(h.sample_steps, h.num_train_timesteps)
        kind = ("class-conditional" if self.num_classes else "unconditional") if not h.data_dim else "vector"
        common = {"title": f"DDPM ({kind}, litzoo)", "recipe": dict(h), "metrics": trainer_metrics(self),
                  "data": training_data(self), "tags": ["ddpm", "diffusion", kind]}
        if h.data_dim:
            usage = (f"import json\nfrom safetensors.torch import load_file\nfrom litzoo.modules import DDPM\n\n"
                     f"path = {str(out_dir)!r}\nconfig = json.load(open(f\"{{path}}/litzoo.json\"))\n"
                     f"model = DDPM(**config[\"hyperparameters\"]).eval()\n"
                     f"model.net.load_state_dict(load_file(f\"{{path}}/model.safetensors\"))\n"
                     f"x = model.sample(16, steps={steps}, sampler=\"ddpm\")  # (16, {h.data_dim})")
            return {**common, "library_name": "litzoo", "usage": usage,
                    "summary": f"A DDPM on {h.data_dim}-dimensional vectors (time-conditioned MLP). Loading needs "
                               "litzoo (`pip install litzoo`); `scheduler/` is a diffusers `DDPMScheduler`."}
        shape = f"{h.in_channels}x{h.image_size}x{h.image_size}"
        if not self.num_classes:
            usage = (f"import torch\nfrom diffusers import DDPMPipeline\n\npath = {str(out_dir)!r}\n"
                     f"pipe = DDPMPipeline.from_pretrained(path)\nimages = pipe(batch_size=4, num_inference_steps="
                     f"{steps}, generator=torch.Generator().manual_seed(0)).images  # 4 PIL images")
            return {**common, "library_name": "diffusers", "pipeline_tag": "unconditional-image-generation",
                    "usage": usage, "summary": f"An unconditional DDPM (diffusers `UNet2DModel`) on {shape} images."}
        labels = [k % self.num_classes for k in (0, 3, 7)]
        usage = (f"import torch\nfrom diffusers import DiffusionPipeline\n\npath = {str(out_dir)!r}\n"
                 f"pipe = DiffusionPipeline.from_pretrained(path, trust_remote_code=True)  # runs ./pipeline.py\n"
                 f"images = pipe(class_labels={labels}, guidance_scale=1.0, num_inference_steps={steps},\n"
                 f"              generator=torch.Generator().manual_seed(0)).images  # PIL images of classes {labels}")
        summary = (f"A class-conditional DDPM (diffusers `UNet2DModel`, {self.num_classes} classes + a learned null "
                   f"class for classifier-free guidance) on {shape} images. `pipeline.py` "
                   "(`ClassConditionalDDPMPipeline`, torch + diffusers only) samples by label: `guidance_scale` > 1 "
                   "is classifier-free guidance, `output_type=\"pt\"` gives tensors in [0, 1]. It equals litzoo's "
                   "`DDPM.sample(n, sampler=\"ddpm\", y=labels, cfg_scale=guidance_scale)` for the same generator.")
        return {**common, "library_name": "diffusers", "usage": usage, "summary": summary}
