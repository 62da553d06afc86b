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

import sys
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
    ).logits[:, -keep:-1].float()  # (N, T - start, V)
    if temperature != 1.0:
        logits = logits / temperature
    # log softmax at the taken token only: no (N, T, V) log-prob tensor (nor its gradient buffer) is made
    return logits.gather(-1, input_ids[:, start:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


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


def _check_generation_args(prompt_ids, num_samples: int, max_new_tokens: int, temperature: float, greedy: bool):
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples={num_samples} and max_new_tokens={max_new_tokens} must be >= 1.")
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 for sampling (use greedy=True for arg-max).")
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (encode_prompt adds bos).")


def _check_positions(model, prompt_width: int, max_new_tokens: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and prompt_width + max_new_tokens > limit:
        raise ValueError(
            f"prompt length {prompt_width} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_position_embeddings={limit}; lower max_new_tokens or use a model with longer positions."
        )


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
    sampler: str = "transformers",
) -> Rollout:
    """Sample ``num_samples`` responses per prompt with ``model.generate`` (KV cache).

    ``greedy`` takes the arg-max token (``temperature`` is then ignored for the log-probs too);
    otherwise tokens are drawn from ``softmax(logits / temperature)`` without top-k/top-p
    truncation. ``seed`` makes the draw reproducible without touching the caller's RNG state.
    ``sampler="litzoo"`` hands the call to :func:`sample` (same contract, own decoding loop).
    """
    from transformers import GenerationConfig

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} must be one of {SAMPLERS}.")
    if sampler == "litzoo":
        return sample(model, tokenizer, prompt_ids, num_samples=num_samples, max_new_tokens=max_new_tokens,
                      temperature=temperature, greedy=greedy, seed=seed)
    _check_generation_args(prompt_ids, num_samples, max_new_tokens, temperature, greedy)
    model = _unwrap(model)
    device = next(model.parameters()).device
    expanded = [p for p in prompt_ids for _ in range(num_samples)]
    ids, mask = left_pad(expanded, tokenizer.pad_token_id, device)
    _check_positions(model, ids.shape[1], max_new_tokens)
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


# ----------------------------------------------------------------------------------- litzoo's sampler
SAMPLERS = ("litzoo", "transformers")


class _StaticDecoder:
    """One decoding step of a Qwen2 / Llama model written out over its own modules, with a preallocated KV cache.

    Why: per token, transformers' forward spends more time in Python (mask building, output records, cache
    objects, ``torch.cat`` growing the cache) than in arithmetic on a model this small. The step calls the
    model's modules (norms, projections -- LoRA layers included --, rotary table, MLP, head) in the order of
    ``Qwen2DecoderLayer.forward`` and writes each new key/value into a buffer sized for the whole response.
    Greedy tokens equal ``generate``'s (tested); other architectures use the model's forward (``build`` -> None).
    """

    ARCHITECTURES = ("qwen2", "llama")

    def __init__(self, lm, n: int, length: int) -> None:
        self.lm, self.base = lm, lm.model
        layers = self.base.layers
        self.rope = sys.modules[type(layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.n, self.length = n, length
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []

    @classmethod
    def build(cls, model, n: int, length: int) -> "_StaticDecoder | None":
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the model with LoRA layers
        config = getattr(lm, "config", None)
        if (getattr(config, "model_type", None) not in cls.ARCHITECTURES or getattr(config, "use_sliding_window", False)
                or any(t != "full_attention" for t in (getattr(config, "layer_types", None) or []))
                or not hasattr(getattr(lm, "model", None), "layers")):
            return None
        return cls(lm, n, length)

    def load(self, cache, source: Tensor) -> None:
        """The buffers, in the prefill cache's dtype (under autocast, the one the projections return), filled with
        each row's prompt keys and values."""
        for layer in cache.layers:
            shape = (self.n, layer.keys.shape[1], self.length, layer.keys.shape[3])
            width = layer.keys.shape[2]
            self.k.append(layer.keys.new_zeros(shape))
            self.v.append(layer.values.new_zeros(shape))
            self.k[-1][:, :, :width] = layer.keys[source]
            self.v[-1][:, :, :width] = layer.values[source]

    def select(self, keep: Tensor, used: int) -> None:
        """Keep the rows ``keep`` (ascending), in place. Only the first ``used`` columns hold keys and values (the
        rest is written before it is read), so only they are copied: copying whole buffers cost more than decoding
        for long budgets (2048 rows x 990 columns: 3.3x slower sampling)."""
        m = keep.numel()
        for buffers in (self.k, self.v):
            for i, x in enumerate(buffers):
                x[:m, :, :used] = x[keep, :, :used]  # the gather copies first, so overlapping rows are safe
                buffers[i] = x[:m]

    def step(self, token: Tensor, position: Tensor, column: int, mask: Tensor) -> Tensor:
        """Logits after ``token`` (N,) at ``position`` (N,), its key/value stored in cache ``column``."""
        h = self.base.embed_tokens(token[:, None])
        cos, sin = self.base.rotary_emb(h, position[:, None])
        attend = mask[:, None, None, : column + 1]
        n = h.shape[0]
        for layer, keys, values in zip(self.base.layers, self.k, self.v):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q, k, v = (proj(x).view(n, 1, -1, attn.head_dim).transpose(1, 2)
                       for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
            q, k = self.rope(q, k, cos, sin)
            keys[:, :, column], values[:, :, column] = k[:, :, 0], v[:, :, 0]
            o = F.scaled_dot_product_attention(q, keys[:, :, : column + 1], values[:, :, : column + 1],
                                               attn_mask=attend, scale=attn.scaling, enable_gqa=True)
            h = h + attn.o_proj(o.transpose(1, 2).reshape(n, 1, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.lm.lm_head(self.base.norm(h))[:, -1]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    early_removal: bool = True,
    static_decoder: bool = True,
) -> Rollout:
    """:func:`generate`'s contract with litzoo's own decoding loop (faster on RL rollout shapes).

    Why not ``model.generate``: for small policies the time goes into per-token Python (logits
    processors, stopping criteria, cache bookkeeping), the ``k`` copies of each prompt are prefilled
    ``k`` times, and finished rows keep being decoded until the longest one ends. Here

    * every distinct input is prefilled **once** and its KV cache expanded to its copies
      (``k`` samples of a prompt, or the identical fresh rows of a partial-rollout step);
    * with ``early_removal`` a row leaves the batch (and the KV cache) once it emits ``eos``;
    * with ``static_decoder`` (Qwen2 / Llama models) a token costs one pass through the model's modules and a
      preallocated KV cache (:class:`_StaticDecoder`), not a call of transformers' forward;
    * a token is drawn by inverting the CDF of ``softmax(logits / T)`` at a uniform ``u`` (exactly a
      categorical draw), with one ``u`` per *original* row and step from a private generator: the
      samples do not depend on which rows are still running, so early removal and prompt sharing
      change nothing (a test checks it) and the caller's RNG is untouched.

    Greedy decoding is ``argmax`` as in ``generate`` (token for token equal; a test checks it);
    sampled tokens follow the same distribution as ``generate``'s but with another random stream.
    """
    _check_generation_args(prompt_ids, num_samples, max_new_tokens, temperature, greedy)
    model = _unwrap(model)
    device = next(model.parameters()).device
    expanded = [tuple(p) for p in prompt_ids for _ in range(num_samples)]
    unique: dict[tuple[int, ...], int] = {}
    source = torch.tensor([unique.setdefault(p, len(unique)) for p in expanded], dtype=torch.long, device=device)
    ids, mask = left_pad(expanded, tokenizer.pad_token_id, device)
    _check_positions(model, ids.shape[1], max_new_tokens)
    n, width = ids.shape
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    scale = 1.0 if greedy else temperature
    generator = None
    if not greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(torch.randint(2**62, ()).item()) if seed is None else seed)
    response = torch.full((n, max_new_tokens), pad, dtype=torch.long, device=device)
    log_probs = torch.zeros((n, max_new_tokens), device=device)
    full_mask = torch.cat([mask, mask.new_ones(n, max_new_tokens)], 1).bool()  # a running row attends to all it made
    prompt_len = mask.sum(-1)

    was_training = model.training
    model.eval()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        u_ids, u_mask = left_pad(list(unique), pad, device)
        out = model(input_ids=u_ids, attention_mask=u_mask, position_ids=position_ids_from_mask(u_mask),
                    use_cache=True, logits_to_keep=1)
        cache = out.past_key_values if getattr(out, "cache", None) is None else out.cache
        decoder = _StaticDecoder.build(model, n, width + max_new_tokens) if static_decoder else None
        # prompt-shared prefill: copy each distinct prompt's cache to its rows
        decoder.load(cache, source) if decoder else cache.batch_select_indices(source)
        logits = out.logits[source, -1]
        rows = torch.arange(n, device=device)  # original indices of the rows still in the batch
        for t in range(max_new_tokens):
            step_log_probs = F.log_softmax(logits.float() / scale, dim=-1)
            if greedy:
                token = step_log_probs.argmax(-1)
            else:  # inverse CDF; one uniform per original row, so a row's draw does not depend on the others
                cdf = step_log_probs.exp().cumsum(-1)
                u = torch.rand((n, 1), device=device, generator=generator)[rows] * cdf[:, -1:]
                token = (cdf <= u).sum(-1).clamp(max=cdf.shape[-1] - 1)
            response[rows, t] = token
            log_probs[rows, t] = step_log_probs.gather(-1, token[:, None]).squeeze(-1)
            done = token == eos
            if t + 1 == max_new_tokens:
                break
            if early_removal and bool(done.any()):
                keep = (~done).nonzero().squeeze(-1)
                if keep.numel() == 0:
                    break
                rows, token = rows[keep], token[keep]
                decoder.select(keep, width + t) if decoder else cache.batch_select_indices(keep)
            if decoder:
                logits = decoder.step(token, prompt_len[rows] + t, width + t, full_mask[rows])
            else:
                out = model(input_ids=token[:, None], attention_mask=full_mask[rows, : width + t + 1],
                            position_ids=(prompt_len[rows] + t)[:, None], cache=cache, use_cache=True)
                logits = out.logits[:, -1]
    finally:
        model.train(was_training)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    # A row without early removal may have run past its eos: the response ends at the first one.
    is_eos = response == eos
    response_mask = (is_eos.long().cumsum(-1) - is_eos.long()) == 0
    # As generate's: as wide as the longest response (it stops when every row has finished).
    used = int(response_mask.sum(-1).max())
    response_mask, log_probs = response_mask[:, :used], log_probs[:, :used] * response_mask[:, :used]
    response = response[:, :used].masked_fill(~response_mask, pad)
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Rollout(ids, mask, response, response_mask.long(), log_probs, is_eos.any(-1), texts, seconds, cpu_seconds)
