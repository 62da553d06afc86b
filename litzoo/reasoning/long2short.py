r"""long2short: make a long-CoT policy answer with shorter chains of thought (Kimi k1.5 Sec. 2.4).

Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv:2501.12599, Sec. 2.4.
Four ways to transfer a long-CoT model's accuracy to a short-CoT budget:

* **Model merging** -- average the weights of the long-CoT and the short-CoT models,
  ``theta = sum_i w_i theta_i`` with ``sum_i w_i = 1`` (:func:`merge_models`).
* **Shortest rejection sampling** -- sample ``n`` responses per problem and keep the shortest
  correct one as supervised data (:func:`shortest_rejection_sampling`, then :func:`sft_train`).
* **DPO** (Rafailov et al. 2023, arXiv:2305.18290) -- the shortest correct response is the
  chosen one; wrong responses longer than it, and correct ones at least ``long_factor`` (1.5)
  times longer, are rejected (:func:`dpo_pairs`, :func:`dpo_train`; the loss is
  :func:`litzoo.reasoning.losses.dpo_loss`), optionally plus ``rpo_alpha`` times the chosen
  response's NLL per token (RPO, Pang et al. 2024, arXiv:2404.19733; TRL's ``rpo_alpha``), which keeps
  the chosen traces likely while the rejected ones are pushed down.
* **Length-penalty RL** -- :class:`~litzoo.modules.KimiRL` with ``length_penalty_weight > 0``
  (the Sec. 2.3.3 length reward, :func:`litzoo.reasoning.losses.length_penalty`).

Plain PyTorch loops, no Lightning: these are short post-processing passes over a trained policy.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from litzoo.optim import build_adamw
from litzoo.reasoning.base import Problem
from litzoo.reasoning.losses import dpo_loss, masked_sum
from litzoo.reasoning.generation import generate, left_pad, right_pad, token_log_probs
from litzoo.reasoning.policy import encode_chat_prompt
from litzoo.reasoning.rewards import score


# ----------------------------------------------------------------------------------- merging
def merge_models(state_dicts: Sequence[Mapping[str, Tensor]], weights: Sequence[float] | None = None) -> dict[str, Tensor]:
    """Weighted average ``sum_i w_i theta_i`` of models with identical architecture.

    ``weights`` default to uniform and must be non-negative and sum to 1. Integer buffers
    (e.g. position counters) are not averaged: they must agree and are copied.
    """
    if len(state_dicts) < 2:
        raise ValueError(f"merge_models needs at least 2 models, got {len(state_dicts)}.")
    weights = [1.0 / len(state_dicts)] * len(state_dicts) if weights is None else list(weights)
    if len(weights) != len(state_dicts) or any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights={weights} must be {len(state_dicts)} non-negative numbers summing to 1.")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd) != keys or any(sd[k].shape != state_dicts[0][k].shape for k in keys):
            raise ValueError(f"model {i} does not have the parameters (names and shapes) of model 0; merge equal architectures.")
    merged = {}
    for k in keys:
        first = state_dicts[0][k]
        if not first.is_floating_point():
            if any(not torch.equal(sd[k], first) for sd in state_dicts[1:]):
                raise ValueError(f"non-float entry {k!r} differs between the models and cannot be averaged.")
            merged[k] = first.clone()
        else:
            merged[k] = sum(w * sd[k].double() for w, sd in zip(weights, state_dicts)).to(first.dtype)
    return merged


def merge_policies(models: Sequence[torch.nn.Module], weights: Sequence[float] | None = None) -> torch.nn.Module:
    """A copy of ``models[0]`` holding the weighted average of all their weights."""
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(merge_models([m.state_dict() for m in models], weights))
    return merged


# ----------------------------------------------------------------------------------- sampling
@dataclass
class SampledResponses:
    """``n`` responses to one problem: token ids (incl. eos when finished), texts, rewards."""

    problem: Problem
    prompt_ids: list[int]
    responses: list[list[int]]
    texts: list[str]
    rewards: list[float]


def sample_responses(model, tokenizer, problems: Sequence[Problem], n: int = 8, *, temperature: float = 1.0,
                     max_new_tokens: int = 128, batch_size: int = 32, seed: int = 0,
                     sampler: str = "litzoo") -> list[SampledResponses]:
    """``n`` sampled responses per problem, scored by the tasks' verifiers. ``sampler``: ``"litzoo"`` (its own
    decoding loop, :func:`~litzoo.reasoning.generation.sample`: finished rows leave the batch) or
    ``"transformers"`` (``model.generate``, which decodes all ``batch_size * n`` rows until the longest ends: 10x
    slower on combination sum's long-tailed lengths); the same distribution, other samples for a seed."""
    out = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [encode_chat_prompt(tokenizer, p.prompt) for p in chunk]  # as the module encoded them
        rollout = generate(model, tokenizer, prompts, num_samples=n, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed + start, sampler=sampler)
        rewards = score([p for p in chunk for _ in range(n)], rollout.texts).tolist()
        tokens = rollout.response_token_lists()
        for i, (p, prompt) in enumerate(zip(chunk, prompts)):
            sl = slice(i * n, (i + 1) * n)
            out.append(SampledResponses(p, prompt, tokens[sl], rollout.texts[sl], rewards[sl]))
    return out


def shortest_correct(samples: SampledResponses) -> int | None:
    """Index of the shortest correct response (the first of equal ones), ``None`` if none is correct."""
    correct = [j for j, r in enumerate(samples.rewards) if r >= 1.0]
    return min(correct, key=lambda j: len(samples.responses[j])) if correct else None


def shortest_rejection_sampling(model, tokenizer, problems: Sequence[Problem], n: int = 8, **kwargs) -> list[tuple[list[int], list[int]]]:
    """SFT data ``(prompt_ids, response_ids)``: for each problem the shortest of its correct
    samples among ``n`` (problems without a correct sample are dropped). ``kwargs`` go to
    :func:`sample_responses`."""
    data = []
    for s in sample_responses(model, tokenizer, problems, n, **kwargs):
        j = shortest_correct(s)
        if j is not None:
            data.append((s.prompt_ids, s.responses[j]))
    return data


def dpo_pairs(samples: Sequence[SampledResponses], long_factor: float = 1.5,
              max_pairs_per_problem: int | None = None) -> list[tuple[list[int], list[int], list[int]]]:
    """``(prompt_ids, chosen_ids, rejected_ids)``: chosen = shortest correct; rejected = wrong
    responses longer than it and correct ones at least ``long_factor`` times its length."""
    if long_factor < 1.0:
        raise ValueError(f"long_factor={long_factor} must be >= 1 (a rejected correct answer is the longer one).")
    pairs = []
    for s in samples:
        j = shortest_correct(s)
        if j is None:
            continue
        chosen = s.responses[j]
        rejected = [
            r for r, reward in zip(s.responses, s.rewards)
            if (reward < 1.0 and len(r) > len(chosen)) or (reward >= 1.0 and len(r) >= long_factor * len(chosen))
        ]
        pairs += [(s.prompt_ids, chosen, r) for r in rejected[:max_pairs_per_problem]]
    return pairs


# ----------------------------------------------------------------------------------- training loops
def sequence_log_probs(model, pad_id: int, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> Tensor:
    """``log pi(response | prompt)`` for each pair, shape (N,), with gradient."""
    device = next(model.parameters()).device
    p_ids, p_mask = left_pad(prompts, pad_id, device)
    r_ids, r_mask = right_pad(responses, pad_id, device=device)
    per_token = token_log_probs(model, torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1), p_ids.shape[1])
    return masked_sum(per_token, r_mask)


def nll_per_token(log_probs: Tensor, responses: Sequence[Sequence[int]]) -> Tensor:
    """Mean NLL per response token of a batch: ``-sum log pi(response | prompt) / total response tokens`` (the SFT loss
    of :func:`sft_train` and RPO's term in :func:`dpo_train`); ``log_probs`` (N,) from :func:`sequence_log_probs`."""
    return -log_probs.sum() / sum(len(r) for r in responses)


def dpo_train(policy, tokenizer, pairs: Sequence[tuple[list[int], list[int], list[int]]], *, ref=None,
              beta: float = 0.1, lr: float = 1e-4, steps: int = 100, batch_size: int = 16, seed: int = 0,
              rpo_alpha: float = 0.0) -> list[float]:
    """DPO on ``pairs`` for ``steps`` AdamW steps; ``ref`` defaults to a frozen copy of ``policy``
    as it is now; ``rpo_alpha > 0`` adds that times the chosen responses' NLL per token (RPO).
    Returns the loss of every step."""
    if not pairs:
        raise ValueError("dpo_train got no pairs; sample more responses or relax long_factor.")
    if not rpo_alpha >= 0.0:
        raise ValueError(f"rpo_alpha={rpo_alpha!r} must be >= 0 (0: plain DPO; RPO's paper uses 1).")
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if ref is None else ref
    optimizer = build_adamw(policy, lr=lr)
    rng, losses = random.Random(seed), []
    policy.train()
    for _ in range(steps):
        batch = rng.sample(list(pairs), min(batch_size, len(pairs)))
        prompts = [p for p, _, _ in batch] * 2
        responses = [c for _, c, _ in batch] + [r for _, _, r in batch]
        log_probs = sequence_log_probs(policy, tokenizer.pad_token_id, prompts, responses)
        with torch.no_grad():
            ref_log_probs = sequence_log_probs(ref, tokenizer.pad_token_id, prompts, responses)
        n = len(batch)
        loss, _ = dpo_loss(log_probs[:n], log_probs[n:], ref_log_probs[:n], ref_log_probs[n:], beta)
        if rpo_alpha:
            loss = loss + rpo_alpha * nll_per_token(log_probs[:n], [c for _, c, _ in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def sft_train(policy, tokenizer, data: Sequence[tuple[list[int], list[int]]], *, lr: float = 1e-4, steps: int = 100,
              batch_size: int = 16, seed: int = 0) -> list[float]:
    """Supervised steps on ``(prompt_ids, response_ids)`` pairs (e.g. shortest rejection samples):
    mean NLL per response token. Returns the loss of every step."""
    if not data:
        raise ValueError("sft_train got no data.")
    optimizer = build_adamw(policy, lr=lr)
    rng, losses = random.Random(seed), []
    policy.train()
    for _ in range(steps):
        batch = rng.sample(list(data), min(batch_size, len(data)))
        log_probs = sequence_log_probs(policy, tokenizer.pad_token_id, [p for p, _ in batch], [r for _, r in batch])
        loss = nll_per_token(log_probs, [r for _, r in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
