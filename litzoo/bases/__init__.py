"""Base LightningModules: the plumbing one family of methods shares, written once.

:class:`GenerativeModule` (DDPM, RectifiedFlowDiT), :class:`RLModule` (the environment-driven RL modules) and
:class:`OnPolicyModule` (ActorCritic, TRPO: a stochastic policy, one rollout per batch),
:class:`CausalLMModule` (CoTSFT, KimiRL).
Method files in :mod:`litzoo.modules` subclass these; nothing here imports a datamodule.
"""

from litzoo.bases.causal_lm import CausalLMModule
from litzoo.bases.generative import GenerativeModule
from litzoo.bases.rl import OnPolicyModule, RLModule

__all__ = ["CausalLMModule", "GenerativeModule", "OnPolicyModule", "RLModule"]
