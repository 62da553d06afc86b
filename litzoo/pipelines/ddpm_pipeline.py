"""Class-conditional DDPM sampling with diffusers alone: copied as ``pipeline.py`` into a litzoo DDPM export.

Load with ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (the folder's ``model_index.json``
names this file and class). This file imports only torch and diffusers: the export works without litzoo.
"""

from typing import List, Optional, Union

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor


# diffusers runs every local ``pipeline.py`` in one module (``diffusers_modules.local.pipeline``), keeping what an
# earlier one defined there; ``custom_pipeline=folder`` then finds two pipeline classes and refuses to load. Drop
# the pipeline classes an earlier file defined in this module (another litzoo export's, or a user's), so that
# loading several exports in one process works.
for _name, _value in list(globals().items()):
    if isinstance(_value, type) and issubclass(_value, DiffusionPipeline) and _value.__module__ == __name__:
        del globals()[_name]


class ClassConditionalDDPMPipeline(DiffusionPipeline):
    """Ancestral DDPM sampling of a class-conditional ``UNet2DModel`` with classifier-free guidance.

    The UNet's class table has ``num_classes + 1`` rows; the last is the learned null class (the label
    dropped in training), so ``eps = eps(x, null) + guidance_scale * (eps(x, y) - eps(x, null))``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def num_classes(self) -> int:
        return self.unet.config.num_class_embeds - 1

    @torch.no_grad()
    def __call__(self, class_labels: Union[int, List[int], torch.Tensor], guidance_scale: float = 1.0,
                 num_inference_steps: int = 1000, generator: Optional[torch.Generator] = None,
                 output_type: str = "pil", return_dict: bool = True):
        """One image per entry of ``class_labels`` (ints in ``[0, num_classes)``). ``guidance_scale=1`` is plain
        conditional sampling. ``output_type``: ``"pil"``, ``"np"`` (N, H, W, C) or ``"pt"`` (N, C, H, W), in [0, 1]."""
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1).to(self.device)
        if labels.numel() == 0 or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"class_labels must be labels in [0, {self.num_classes}), got {class_labels!r}.")
        n, size, channels = labels.shape[0], self.unet.config.sample_size, self.unet.config.in_channels
        size = (size, size) if isinstance(size, int) else tuple(size)
        image = randn_tensor((n, channels, *size), generator=generator, device=self.device, dtype=self.unet.dtype)
        null = torch.full_like(labels, self.num_classes)
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            t_batch = t.to(self.device).expand(n)
            if guidance_scale == 1.0:
                output = self.unet(image, t_batch, class_labels=labels).sample
            else:  # both branches in one batch
                both = self.unet(torch.cat([image, image]), torch.cat([t_batch, t_batch]),
                                 class_labels=torch.cat([labels, null])).sample
                cond, uncond = both.chunk(2)
                output = uncond + guidance_scale * (cond - uncond)
            image = self.scheduler.step(output, t, image, generator=generator).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
