r"""Sampling responses from a policy, and the log-probabilities of its tokens.

A response ``y`` to a prompt ``x`` is the generated tokens up to and including ``eos``. Its
log-probability factorises over tokens,

    log pi_theta(y | x) = sum_t log softmax(f_theta(x, y_<t) / T)[y_t],

with ``T`` the sampling temperature, so the log-probability a loss differentiates is the one of
the distribution the response was actually drawn from (``T = 1`` for greedy decoding).

Batches are **left**-padded prompts followed by right-padded responses, with position ids
``cumsum(attention_mask) - 1`` (padding gets position 0): exactly what transformers' ``generate``
uses, so :func:`token_log_probs` (one forward pass with gradient) reproduces the log-probs of
:func:`generate` (KV cache, token by token) -- a test checks it.

No Lightning here: everything works on a bare ``transformers`` model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


# ----------------------------------------------------------------------------------- batching
def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[Tensor, Tensor]:
    """``(ids, mask)`` of shape (N, max_len), each sequence right-aligned (left padding)."""
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int, width: int | None = None, device=None):
    """``(ids, mask)`` of shape (N, width), each sequence left-aligned (right padding)."""
    width = max((len(s) for s in sequences), default=0) if width is None else width
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``cumsum(mask) - 1`` with padding at 0: the positions ``generate`` gives left-padded rows."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_log_probs(model, input_ids: Tensor, attention_mask: Tensor, start: int, temperature: float = 1.0) -> Tensor:
    """``log pi(input_ids[:, t] | input_ids[:, :t]) `` for ``t >= start``, shape (N, T - start).

    One forward pass (with gradient if enabled); logits are computed only for the positions
    that predict the scored tokens (``logits_to_keep``), which saves memory on long prompts.
    """
    if not 0 < start <= input_ids.shape[1]:
        raise ValueError(f"start={start} must be in [1, {input_ids.shape[1]}] (the prompt needs >= 1 token).")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0.")
    keep = input_ids.shape[1] - start + 1
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=keep, use_cache=False,
    ).logits[:, -keep:-1]
    log_probs = F.log_softmax(logits.float() / temperature, dim=-1)
    return log_probs.gather(-1, input_ids[:, start:].unsqueeze(-1)).squeeze(-1)


# ----------------------------------------------------------------------------------- generation
@dataclass
class Rollout:
    """Responses sampled for a batch of prompts (row ``i * num_samples + j`` = sample ``j`` of prompt ``i``).

    Attributes:
        prompt_ids, prompt_mask: (N, P) left-padded prompts.
        response_ids: (N, R) generated tokens, ``pad`` after ``eos``.
        response_mask: (N, R) 1 on the response tokens (up to and including ``eos``).
        log_probs: (N, R) ``log pi(y_t | x, y_<t)`` under the sampling distribution, 0 off the mask.
        finished: (N,) the response emitted ``eos`` (else it hit the token budget).
        texts: decoded responses, special tokens removed.
        seconds: wall time of generation.
        cpu_seconds: CPU time of this process during generation (on a shared machine the wall time also
            measures the neighbours; on a GPU the wall time is the number to read).
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    log_probs: Tensor
    finished: Tensor
    texts: list[str]
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1)

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def response_token_lists(self) -> list[list[int]]:
        return [row[: int(n)].tolist() for row, n in zip(self.response_ids, self.lengths)]


def _unwrap(model):
    # DDP / FSDP wrappers hide .generate; the HF model is their .module.
    return getattr(model, "module", model) if not hasattr(model, "generate") else model


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
) -> Rollout:
    """Sample ``num_samples`` responses per prompt with ``model.generate`` (KV cache).

    ``greedy`` takes the arg-max token (``temperature`` is then ignored for the log-probs too);
    otherwise tokens are drawn from ``softmax(logits / temperature)`` without top-k/top-p
    truncation. ``seed`` makes the draw reproducible without touching the caller's RNG state.
    """
    from transformers import GenerationConfig

    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples={num_samples} and max_new_tokens={max_new_tokens} must be >= 1.")
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 for sampling (use greedy=True for arg-max).")
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (encode_prompt adds bos).")
    model = _unwrap(model)
    device = next(model.parameters()).device
    expanded = [p for p in prompt_ids for _ in range(num_samples)]
    ids, mask = left_pad(expanded, tokenizer.pad_token_id, device)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and ids.shape[1] + max_new_tokens > limit:
        raise ValueError(
            f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_position_embeddings={limit}; lower max_new_tokens or use a model with longer positions."
        )
    config = GenerationConfig(
        do_sample=not greedy, temperature=None if greedy else temperature, top_k=None if greedy else 0,
        top_p=None, max_new_tokens=max_new_tokens, min_new_tokens=0, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, use_cache=True, return_dict_in_generate=True, output_logits=True,
    )
    was_training = model.training
    model.eval()
    start, cpu_start = time.perf_counter(), time.process_time()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    finally:
        model.train(was_training)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    response = out.sequences[:, ids.shape[1]:]
    is_eos = response == tokenizer.eos_token_id
    # Tokens up to and including the first eos belong to the response.
    response_mask = (is_eos.long().cumsum(-1) - is_eos.long()) == 0
    response = response.masked_fill(~response_mask, tokenizer.pad_token_id)
    logits = torch.stack(out.logits, dim=1).float()
    log_probs = F.log_softmax(logits / (1.0 if greedy else temperature), dim=-1)
    log_probs = log_probs.gather(-1, response.unsqueeze(-1)).squeeze(-1) * response_mask
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Rollout(ids, mask, response, response_mask.long(), log_probs, is_eos.any(-1), texts, seconds,
                   cpu_seconds)
