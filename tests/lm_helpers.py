"""Helpers shared by the causal-LM tests (``tests/conftest.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from litzoo.reasoning.policy import build_policy

# The test policy: a 2-layer width-32 Qwen2 with the char tokenizer (the library's demo model,
# litzoo.reasoning.policy.TINY_QWEN2, is twice as wide). Spread it to change a field: {**TINY_TEST_QWEN2, ...}.
TINY_TEST_QWEN2 = {"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 256}


def tiny_policy(seed: int = 0, **config):
    """``(model, tokenizer)``: the test policy (fields in ``config`` replaced), initialised from ``seed``."""
    torch.manual_seed(seed)
    return build_policy({**TINY_TEST_QWEN2, **config})


def never_stop(model, tokenizer):
    """Mask ``eos`` out of the model's logits (a forward hook), so responses run to the token budget;
    returns the hook's handle (``.remove()`` restores the model)."""
    eos = torch.tensor([tokenizer.eos_token_id])
    return model.lm_head.register_forward_hook(lambda mod, inp, out: out.index_fill(-1, eos, -1e4))


def manual_token_log_probs(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> torch.Tensor:
    """``log pi(response_t | prompt, response_<t)`` from one unpadded forward pass, written independently of
    :mod:`litzoo.reasoning.generation`."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return F.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
