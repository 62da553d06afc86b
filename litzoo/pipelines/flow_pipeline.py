"""Class-conditional rectified-flow (SD3 MMDiT) sampling with diffusers alone: copied as ``pipeline.py`` into a
litzoo ``RectifiedFlowDiT`` export.

Load with ``DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)``. This
file imports only torch and diffusers: the export works without litzoo.
"""

from typing import List, Optional, Union

import torch
from diffusers import (AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput,
                       SD3Transformer2DModel)


# diffusers runs every local ``pipeline.py`` in one module (``diffusers_modules.local.pipeline``), keeping what an
# earlier one defined there; ``custom_pipeline=folder`` then finds two pipeline classes and refuses to load. Drop
# the pipeline classes an earlier file defined in this module (another litzoo export's, or a user's), so that
# loading several exports in one process works.
for _name, _value in list(globals().items()):
    if isinstance(_value, type) and issubclass(_value, DiffusionPipeline) and _value.__module__ == __name__:
        del globals()[_name]


class ClassConditionalFlowPipeline(DiffusionPipeline):
    """Euler sampling of dz/dt = v(z, t, c) from t = 1 (noise) to 0 with ``FlowMatchEulerDiscreteScheduler``, the
    condition ``c`` of each label taken from ``class_embeddings`` (context tokens + pooled vector; the last row is
    the null condition), with classifier-free guidance ``v = v(z, null) + guidance_scale * (v(z, c) - v(z, null))``.
    A ``vae`` (optional) decodes latents as ``vae.decode(z / scaling_factor + shift_factor)``."""

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, transformer: SD3Transformer2DModel, scheduler: FlowMatchEulerDiscreteScheduler,
                 class_embeddings, vae: Optional[AutoencoderKL] = None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, class_embeddings=class_embeddings,
                              vae=vae)

    @property
    def num_classes(self) -> int:
        return self.class_embeddings.pooled.shape[0] - 1

    @torch.no_grad()
    def __call__(self, class_labels: Union[int, List[int], torch.Tensor], guidance_scale: float = 1.0,
                 num_inference_steps: int = 25, generator: Optional[torch.Generator] = None,
                 output_type: str = "pil", return_dict: bool = True):
        """One image per entry of ``class_labels`` (ints in ``[0, num_classes)``). ``guidance_scale=1`` is plain
        conditional sampling. ``output_type``: ``"pil"``, ``"np"`` (N, H, W, C), ``"pt"`` (N, C, H, W) in [0, 1],
        or ``"latent"`` (the raw z_0)."""
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1).to(self.device)
        if labels.numel() == 0 or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"class_labels must be labels in [0, {self.num_classes}), got {class_labels!r}.")
        n, config = labels.shape[0], self.transformer.config
        tokens, pooled = self.class_embeddings.context_tokens, self.class_embeddings.pooled
        if guidance_scale != 1.0:  # both branches in one batch: the labels, then the null condition
            labels = torch.cat([labels, torch.full_like(labels, self.num_classes)])
        context, pooled = tokens[labels].to(self.transformer.dtype), pooled[labels].to(self.transformer.dtype)
        z = torch.randn((n, config.in_channels, config.sample_size, config.sample_size), generator=generator,
                        device=self.device)
        timescale = self.scheduler.config.num_train_timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for timestep in self.progress_bar(self.scheduler.timesteps):
            t = (timestep / timescale).expand(n).to(z.dtype)
            z_in, t_in = (z, t) if guidance_scale == 1.0 else (torch.cat([z, z]), torch.cat([t, t]))
            v = self.transformer(hidden_states=z_in, timestep=t_in * timescale, encoder_hidden_states=context,
                                 pooled_projections=pooled, return_dict=False)[0]
            if guidance_scale != 1.0:
                cond, uncond = v.chunk(2)
                v = uncond + guidance_scale * (cond - uncond)
            z = self.scheduler.step(v, timestep, z, return_dict=False)[0]
        if output_type == "latent":
            image = z
        else:
            if self.vae is not None:
                c = self.vae.config
                z = self.vae.decode(z / c.scaling_factor + (c.shift_factor or 0.0)).sample
            image = (z / 2 + 0.5).clamp(0, 1)
            if output_type != "pt":
                image = image.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
