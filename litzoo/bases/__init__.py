"""Base LightningModules: the plumbing one family of methods shares, written once.

:class:`GenerativeModule` (DDPM, RectifiedFlowDiT), :class:`RLModule` (the environment-driven RL modules) and
:class:`OnPolicyModule` (ActorCritic, TRPO: a stochastic policy, one rollout per batch),
:class:`CausalLMModule` (CoTSFT, KimiRL).
Method files in :mod:`litzoo.modules` subclass these; nothing here imports a datamodule.
"""

# Lazy: an RL module importing litzoo.bases.rl should not load the causal-LM stack (transformers, reasoning).
_WHERE = {"CausalLMModule": "causal_lm", "GenerativeModule": "generative", "OnPolicyModule": "rl", "RLModule": "rl"}

__all__ = ["CausalLMModule", "GenerativeModule", "OnPolicyModule", "RLModule"]


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"litzoo.bases.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'litzoo.bases' has no attribute {name!r}")
