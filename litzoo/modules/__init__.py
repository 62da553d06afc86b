"""LightningModules, one method per file."""

from litzoo.modules.ddpm import DDPM

__all__ = ["DDPM"]
