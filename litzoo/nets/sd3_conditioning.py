r"""The SD3 conditioning ``c = (context tokens, pooled vector)`` of a rectified-flow transformer (no Lightning).

Esser et al. 2024 (SD3) condition the MMDiT on a sequence of context tokens (joint attention) and one pooled
vector (added to the timestep embedding). :class:`SD3Conditioning` provides them from one of three sources:

* class labels (default): a learned table ``context_tokens`` of shape ``(K + 1, L, joint_attention_dim)`` and
  the pooled vectors ``class_pooled`` ``(K + 1, pooled_projection_dim)``; row ``K`` is the learned null class;
* a frozen prompt table, one precomputed prompt per class (``prompt_embeds_path``); the null prompt is zeros;
* text through a small transformers ``CLIPTextModelWithProjection`` (``text_encoder``: a ``CLIPTextConfig`` dict
  with litzoo's character tokenizer, :func:`litzoo.text.build_prompt_tokenizer`; or ``text_encoder_path``: a
  local folder). Its last hidden states are the context tokens and its projected pooled output (the ``<eot>``
  token) the pooled vector; labels map to ``class_prompts``. The null prompt is all zeros (tokens and pooled).

The null condition is what label dropout trains (:meth:`SD3Conditioning.drop`) and what classifier-free
guidance subtracts (:meth:`SD3Conditioning.null_condition`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from litzoo.text.tokenizer import build_prompt_tokenizer, check_tokenizer_covers

# CLIPTextConfig fields the tokenizer fixes (a config dict must not set them).
TOKENIZER_FIELDS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


def check_text_encoder_widths(hidden_size: int, projection_dim: int, joint_attention_dim: int,
                              pooled_projection_dim: int) -> None:
    """The text encoder's token width must be the transformer's context width, its pooled width the pooled one."""
    if hidden_size != joint_attention_dim:
        raise ValueError(
            f"text encoder hidden_size={hidden_size} must equal joint_attention_dim={joint_attention_dim}: its hidden "
            f"states are the transformer's context tokens. Set text_encoder['hidden_size']={joint_attention_dim} "
            f"(or joint_attention_dim={hidden_size}).")
    if projection_dim != pooled_projection_dim:
        raise ValueError(
            f"text encoder projection_dim={projection_dim} must equal pooled_projection_dim={pooled_projection_dim}: "
            f"its projected pooled output is the transformer's pooled vector. Set text_encoder['projection_dim']="
            f"{pooled_projection_dim} (or pooled_projection_dim={projection_dim}).")


def build_text_encoder(text_encoder: Optional[dict], path: Optional[str], joint_attention_dim: int,
                       pooled_projection_dim: int):
    """``(CLIPTextModelWithProjection, tokenizer)`` from a ``CLIPTextConfig`` dict (random init, char tokenizer)
    or from a local folder (``text_encoder/`` + ``tokenizer/``, or an encoder folder that holds its tokenizer)."""
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

    if path is not None:
        root = Path(path)
        sub = "text_encoder" if (root / "text_encoder" / "config.json").is_file() else ""
        tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
        if not (root / sub / "config.json").is_file():
            raise ValueError(f"text_encoder_path={path!r} holds no text encoder: expected "
                             f"{root / 'text_encoder' / 'config.json'} (and {root / 'tokenizer'}) or a "
                             "CLIPTextModelWithProjection folder; export a text-conditioned RectifiedFlowDiT "
                             "there.")
        encoder = CLIPTextModelWithProjection.from_pretrained(root, subfolder=sub)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        tokenizer.model_max_length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    else:
        if not isinstance(text_encoder, dict):
            raise ValueError("text_encoder must be a dict of CLIPTextConfig fields, got "
                             f"{type(text_encoder).__name__}.")
        unknown = sorted(set(text_encoder) - set(CLIPTextConfig().to_dict()))
        fixed = sorted(set(text_encoder) & set(TOKENIZER_FIELDS))
        if unknown or fixed:
            raise ValueError(f"text_encoder has keys {unknown + fixed} that are not CLIPTextConfig fields "
                             f"or are set from the tokenizer ({list(TOKENIZER_FIELDS)}); remove them. Fields: "
                             f"hidden_size, projection_dim, intermediate_size, num_hidden_layers, "
                             f"num_attention_heads, max_position_embeddings, ...")
        clip = CLIPTextConfig(**text_encoder)
        tokenizer = build_prompt_tokenizer(clip.max_position_embeddings)
        clip.vocab_size = len(tokenizer)
        clip.bos_token_id, clip.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        clip.pad_token_id = tokenizer.pad_token_id
        check_text_encoder_widths(clip.hidden_size, clip.projection_dim, joint_attention_dim, pooled_projection_dim)
        encoder = CLIPTextModelWithProjection(clip)
    check_text_encoder_widths(encoder.config.hidden_size, encoder.config.projection_dim, joint_attention_dim,
                              pooled_projection_dim)
    return encoder, tokenizer


def load_prompt_table(path: str, joint_attention_dim: int, pooled_projection_dim: int) -> tuple[Tensor, Tensor]:
    """``(prompt_embeds (K, L, joint_attention_dim), pooled_prompt_embeds (K, pooled_projection_dim))`` from a
    safetensors file, one prompt per class."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ValueError(f"prompt_embeds_path={path!r} does not exist; write it with safetensors.torch.save_file("
                         "{'prompt_embeds': (K, L, D), 'pooled_prompt_embeds': (K, P)}, path).")
    tensors = load_file(path)
    missing = {"prompt_embeds", "pooled_prompt_embeds"} - set(tensors)
    if missing:
        raise ValueError(f"prompt_embeds_path={path!r} lacks {sorted(missing)}; it has {sorted(tensors)}.")
    prompts, pooled = tensors["prompt_embeds"].float(), tensors["pooled_prompt_embeds"].float()
    if prompts.ndim != 3 or prompts.shape[-1] != joint_attention_dim or pooled.shape != (prompts.shape[0],
                                                                                         pooled_projection_dim):
        raise ValueError(f"prompt_embeds_path={path!r}: prompt_embeds {tuple(prompts.shape)} must be (K, L, "
                         f"{joint_attention_dim}) and pooled_prompt_embeds {tuple(pooled.shape)} must be "
                         f"(K, {pooled_projection_dim}) for this transformer.")
    return prompts, pooled


def _with_null_row(table: Tensor) -> Tensor:
    return torch.cat([table, torch.zeros_like(table[:1])])


class SD3Conditioning(nn.Module):
    """Context tokens and pooled vectors of labels, prompts or precomputed prompt embeddings (module docstring).

    Args:
        joint_attention_dim, pooled_projection_dim: the transformer's context-token and pooled widths.
        num_classes: the number of labels (``None``: no labels); for a prompt table it must be ``K`` or ``None``,
            for a text encoder ``len(class_prompts)`` or ``None``.
        num_context_tokens: context tokens per class (learned class tokens only).
        prompt_embeds_path, text_encoder, text_encoder_path, class_prompts, train_text_encoder: as in
            :class:`litzoo.modules.RectifiedFlowDiT`.
    """

    def __init__(self, joint_attention_dim: int, pooled_projection_dim: int, num_classes: Optional[int] = None,
                 num_context_tokens: int = 4, prompt_embeds_path: Optional[str] = None,
                 text_encoder: Optional[dict] = None, text_encoder_path: Optional[str] = None,
                 class_prompts: Optional[list[str]] = None, train_text_encoder: bool = False) -> None:
        super().__init__()
        self.joint_attention_dim, self.pooled_projection_dim = joint_attention_dim, pooled_projection_dim
        self.requested_num_classes = num_classes  # what the user asked for; class_prompts may arrive later
        self.train_text_encoder = train_text_encoder
        self.class_prompts: Optional[list[str]] = None
        self._class_prompt_cache = None
        self.register_buffer("prompt_table", None)
        self.register_buffer("pooled_prompt_table", None)
        if prompt_embeds_path is not None:
            prompts, pooled = load_prompt_table(prompt_embeds_path, joint_attention_dim, pooled_projection_dim)
            if num_classes is not None and num_classes != prompts.shape[0]:
                raise ValueError(f"num_classes={num_classes} but {prompt_embeds_path} holds {prompts.shape[0]} "
                                 f"prompts; set num_classes={prompts.shape[0]} (or None).")
            num_classes = prompts.shape[0]
            # Buffers, so checkpoints carry the prompts.
            self.register_buffer("prompt_table", _with_null_row(prompts))
            self.register_buffer("pooled_prompt_table", _with_null_row(pooled))
        self.text_encoder, self.tokenizer = None, None
        if text_encoder is not None or text_encoder_path is not None:
            self.text_encoder, self.tokenizer = build_text_encoder(text_encoder, text_encoder_path,
                                                                   joint_attention_dim, pooled_projection_dim)
            if not train_text_encoder:
                self.text_encoder.requires_grad_(False).eval()
            num_classes = None
            if class_prompts is not None:
                num_classes = self.set_class_prompts(class_prompts)
        self.num_classes = num_classes
        self.null_class = num_classes or 0  # the row of the null condition (the last)
        if self.prompt_table is None and self.text_encoder is None:
            rows = self.null_class + 1
            # Unit-variance init (like text-encoder outputs): classes are distinct from step 0, which
            # makes the small conditional models learn the classes far sooner than a near-zero init.
            self.context_tokens = nn.Parameter(torch.randn(rows, num_context_tokens, joint_attention_dim))
            self.class_pooled = nn.Embedding(rows, pooled_projection_dim)

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def train(self, mode: bool = True):
        super().train(mode)
        if self.text_encoder is not None and not self.train_text_encoder:
            self.text_encoder.eval()  # frozen: no dropout, whatever Lightning sets
        return self

    # ----------------------------------------------------------------- text
    def set_class_prompts(self, class_prompts) -> int:
        """Validate ``class_prompts`` (one per label) against ``num_classes`` and the tokenizer, use them for the
        labels and return their count."""
        if isinstance(class_prompts, str) or not class_prompts or not all(isinstance(p, str) for p in class_prompts):
            raise ValueError(f"class_prompts must be a non-empty list of strings (one per label), got "
                             f"{class_prompts!r}.")
        given = self.requested_num_classes
        if given is not None and given != len(class_prompts):
            raise ValueError(f"num_classes={given} but there are {len(class_prompts)} class_prompts; set "
                             f"num_classes={len(class_prompts)} (or None) or give one prompt per class.")
        check_tokenizer_covers(self.tokenizer, class_prompts)
        self.class_prompts = list(class_prompts)
        self.num_classes = self.null_class = len(class_prompts)
        return len(class_prompts)

    def encode_prompts(self, prompts) -> tuple[Tensor, Tensor]:
        """``(prompt_embeds (B, L, joint_attention_dim), pooled_prompt_embeds (B, pooled_projection_dim))`` of
        ``prompts`` (a list of strings): the text encoder's last hidden states and its projected pooled output."""
        if self.text_encoder is None:
            raise ValueError("prompts were given but this RectifiedFlowDiT has no text encoder (it is conditioned on "
                             "class labels or prompt embeddings). Pass y= / prompt_embeds= instead, or build it with "
                             "text_encoder={...} (a CLIPTextConfig dict) or text_encoder_path=... .")
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}.")
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids.to(self.device)
        # No attention mask, as SD3: CLIP is causal, so the padding after <eot> changes no earlier token.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_text_encoder):
            out = self.text_encoder(input_ids=ids)
        return out.last_hidden_state, out.text_embeds

    # ----------------------------------------------------------------- labels
    def condition_tables(self) -> tuple[Tensor, Tensor]:
        """(context tokens (K+1, L, D), pooled vectors (K+1, P)) per label; row K is the null condition."""
        if self.prompt_table is not None:
            return self.prompt_table, self.pooled_prompt_table
        if self.text_encoder is None:
            return self.context_tokens, self.class_pooled.weight
        if not self.class_prompts:
            raise ValueError("Class labels were given to a text-conditioned RectifiedFlowDiT without class_prompts; "
                             "set class_prompts=[one prompt per label], or pass prompts instead of labels.")
        if self.train_text_encoder:
            tokens, pooled = self.encode_prompts(self.class_prompts)
            return _with_null_row(tokens), _with_null_row(pooled)
        # A frozen encoder gives the same class-prompt embeddings every step: encode them once per
        # (prompts, device, autocast dtype) instead of running the encoder in every training step.
        device = self.device
        key = (tuple(self.class_prompts), device,
               torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None,
               torch.is_inference_mode_enabled())  # inference tensors must not reach a training graph
        if self._class_prompt_cache is None or self._class_prompt_cache[0] != key:
            tokens, pooled = self.encode_prompts(self.class_prompts)
            self._class_prompt_cache = (key, (_with_null_row(tokens), _with_null_row(pooled)))
        return self._class_prompt_cache[1]

    def forward(self, y: Optional[Tensor], n: int) -> tuple[Tensor, Tensor]:
        """(context tokens, pooled vectors) of ``n`` labels ``y``; ``None`` is the null condition."""
        if y is None and self.text_encoder is not None:  # the null prompt: zeros, whatever class_prompts are
            device = self.device
            return (torch.zeros(n, self.tokenizer.model_max_length, self.joint_attention_dim, device=device),
                    torch.zeros(n, self.pooled_projection_dim, device=device))
        if y is None:
            y = torch.full((n,), self.null_class, device=self.device, dtype=torch.long)
        tokens, pooled = self.condition_tables()
        return tokens[y], pooled[y]

    # ----------------------------------------------------------------- the null condition
    def drop(self, cond: dict, dropped: Tensor) -> dict:
        """``cond`` (``{"y"}`` or ``{"prompt_embeds", "pooled_prompt_embeds"}``) with the rows ``dropped``
        replaced by the null condition: label dropout, so one network also learns the unconditional velocity."""
        cond = dict(cond)
        b = dropped.shape[0]
        if cond.get("prompt_embeds") is not None:
            keep = (~dropped).to(cond["prompt_embeds"].dtype)
            cond["prompt_embeds"] = cond["prompt_embeds"] * keep.view(b, 1, 1)
            cond["pooled_prompt_embeds"] = cond["pooled_prompt_embeds"] * keep.view(b, 1)
        elif cond.get("y") is not None:
            cond["y"] = torch.where(dropped, torch.full_like(cond["y"], self.null_class), cond["y"])
        return cond

    @staticmethod
    def null_condition(cond: dict) -> dict:
        """The null condition of prompt embeddings, for classifier-free guidance: zeros."""
        return {k: torch.zeros_like(v) for k, v in cond.items()}
