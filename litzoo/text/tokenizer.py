"""A character-level tokenizer (reasoning tasks, prompt text encoders), built with the `tokenizers` library.

One token per character: a BPE model with an empty merge list and no normalizer or
pre-tokenizer, so the whole text (spaces and newlines included) is split into its characters
and each maps to its own id; the `Fuse` decoder joins them back without inserting spaces.
Hence ``decode(encode(s)) == s`` for every ``s`` over `CHARS` (+ ``extra_chars``), and the
tokenizer survives ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` unchanged.

Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then the characters in `CHARS` order,
then ``extra_chars``. Special tokens are **not** added by ``encode`` (so round trips are
exact); the data pipeline appends ``eos_token_id`` where it wants one.
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
# Digits, lowercase letters, space, newline and the punctuation the task prompts/traces use
# (plus a few spare symbols so a user's variant prompt rarely needs extra_chars).
CHARS = string.digits + string.ascii_lowercase + " \n" + "+-*/%=#:;,.!?<>()[]_'|^"


def build_char_tokenizer(extra_chars: str = "") -> PreTrainedTokenizerFast:
    """A one-token-per-character `PreTrainedTokenizerFast` over `CHARS` + ``extra_chars``.

    Args:
        extra_chars: more characters to give ids (after `CHARS`); repeats are ignored.
    """
    if not isinstance(extra_chars, str):
        raise ValueError(f"extra_chars={extra_chars!r} must be a str of characters, e.g. 'ABC'.")
    chars = list(dict.fromkeys(CHARS + extra_chars))  # keep order, drop repeats
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    # BPE without merges never joins characters: one token per char, unknown chars -> <unk>.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.decoder = decoders.Fuse()  # concatenate tokens; the default would join with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        clean_up_tokenization_spaces=False,  # it would delete the space in "x ." -> "x."
        **SPECIAL_TOKENS,
    )


def build_prompt_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """:func:`build_char_tokenizer` plus upper case, framed like CLIP's tokenizer for a prompt text encoder:
    ``<bos> prompt <eot>``, truncated/padded to ``max_length`` with ``<pad>``.

    ``<eot>`` is a new end token because CLIP pools the hidden state at the first ``eos_token_id``, except that
    it falls back to the legacy arg-max rule when that id is 2 (the char tokenizer's ``<eos>``). It survives
    ``save_pretrained``/``AutoTokenizer.from_pretrained`` (the framing lives in ``tokenizer.json``).
    """
    tokenizer = build_char_tokenizer(extra_chars=string.ascii_uppercase)
    tokenizer.add_special_tokens({"eos_token": "<eot>"})
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A {tokenizer.eos_token}",
        special_tokens=[(tokenizer.bos_token, tokenizer.bos_token_id), (tokenizer.eos_token, tokenizer.eos_token_id)])
    tokenizer.model_max_length = max_length
    return tokenizer


def check_tokenizer_covers(tokenizer, texts: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every character of ``texts`` that ``tokenizer`` cannot
    encode and decode back exactly (it maps to the unknown token, to nothing, or decodes to
    something else, e.g. a tokenizer that normalizes newlines away).

    Use it when bringing your own tokenizer: a task trace the tokenizer cannot represent would
    silently train the model on different text and break the answer verifier.
    """
    if isinstance(texts, str):
        texts = [texts]
    seen = sorted(set().union(*map(set, texts)))
    unk_id = getattr(tokenizer, "unk_token_id", None)
    missing = []
    for ch in seen:
        ids = tokenizer.encode(ch, add_special_tokens=False)
        if not ids or (unk_id is not None and unk_id in ids) or tokenizer.decode(ids) != ch:
            missing.append(ch)
    if missing:
        raise ValueError(
            f"the tokenizer cannot represent {len(missing)} character(s) used by the task text: "
            f"{', '.join(map(repr, missing))}. Use build_char_tokenizer(extra_chars=...) or a "
            "tokenizer whose vocabulary covers them."
        )
