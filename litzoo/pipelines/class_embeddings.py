"""The class conditions of a litzoo rectified-flow export: copied as ``class_embeddings/class_embeddings.py``.

Imports only torch and diffusers: the export loads without litzoo.
"""

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class ClassEmbeddings(ModelMixin, ConfigMixin):
    """Per-label SD3 conditions: ``context_tokens`` (K + 1, L, joint_attention_dim) and ``pooled``
    (K + 1, pooled_projection_dim); row K is the null condition used for classifier-free guidance."""

    @register_to_config
    def __init__(self, num_classes: int, num_context_tokens: int, joint_attention_dim: int,
                 pooled_projection_dim: int):
        super().__init__()
        self.context_tokens = torch.nn.Parameter(torch.zeros(num_classes + 1, num_context_tokens, joint_attention_dim),
                                                 requires_grad=False)
        self.pooled = torch.nn.Parameter(torch.zeros(num_classes + 1, pooled_projection_dim), requires_grad=False)
