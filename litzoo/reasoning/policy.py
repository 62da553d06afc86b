r"""The policy of a reasoning fine-tuner: build it, save it, and encode its prompts and targets.

A policy is any Hugging Face causal LM ``pi_theta`` with its tokenizer: a local pretrained folder, or
a fresh model from a config dict with the char tokenizer (:mod:`litzoo.text.tokenizer`). A prompt
``x`` is encoded as ``[bos] + tokens(x)`` (no ``bos`` if the tokenizer has none); a supervised
response as ``tokens(y) + [eos]``. :func:`save_policy` writes a transformers folder that
``AutoModelForCausalLM`` / ``AutoTokenizer`` reload.

No Lightning here: everything works on a bare ``transformers`` model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from litzoo.model_card import causal_lm_card, write_model_card

# The CPU demo model: 2 layers of width 64, about 80 k parameters with the char tokenizer.
TINY_QWEN2: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}


def build_policy(
    model_config: Mapping[str, Any] | None = None,
    pretrained_path: str | os.PathLike | None = None,
    extra_chars: str = "",
):
    """``(model, tokenizer)``: a local pretrained folder, or a fresh model from a config dict.

    Args:
        model_config: plain values for ``AutoConfig.for_model`` (``"model_type"`` picks the
            architecture, default ``"qwen2"``); ``vocab_size`` and the special token ids are
            taken from the tokenizer. ``None`` = :data:`TINY_QWEN2`. Ignored with ``pretrained_path``.
        pretrained_path: a local folder with a causal LM and its tokenizer (``save_pretrained``
            output, e.g. a litzoo export; a litzoo LoRA export loads with its adapters merged in). Never a
            hub name: nothing is downloaded.
        extra_chars: characters added to the char tokenizer (fresh models only).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not path.is_dir():
            # A relative path is taken from the working directory, not from a config file that names it.
            where = "" if path.is_absolute() else (
                f" (relative paths are resolved from the working directory {os.getcwd()!r}, not from the config "
                "file: run from the folder the earlier run was started in, e.g. the repository root for "
                "configs/kimi_rl_addition.yaml, or give an absolute path)")
            raise ValueError(
                f"pretrained_path={str(pretrained_path)!r} is not a local folder{where}. Give the folder written by "
                "save_pretrained / litzoo export (models are never downloaded), or pretrained_path=None for a "
                "fresh model built from model_config."
            )
        tokenizer = _checked_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True), repr(str(path)))
        if (path / "adapter_config.json").is_file() and (path / "base" / "config.json").is_file():
            return _merged_lora_export(path).train(), tokenizer
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).train()  # from_pretrained gives eval mode
        return model, tokenizer

    from litzoo.text.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(extra_chars)
    cfg = dict(TINY_QWEN2 if model_config is None else model_config)
    model_type = cfg.pop("model_type", "qwen2")
    for reserved in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"):
        if reserved in cfg:
            raise ValueError(
                f"model_config[{reserved!r}] is set from the tokenizer; remove it from model_config."
            )
    try:
        config = AutoConfig.for_model(
            model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **cfg,
        )
    except ValueError as err:
        raise ValueError(f"model_config model_type={model_type!r}: {err}") from None
    return AutoModelForCausalLM.from_config(config), tokenizer


def _merged_lora_export(path: Path):
    """A litzoo LoRA export (a peft adapter folder with its frozen base in ``base/``) as one plain model, the
    adapters merged in: a run continuing from it (e.g. KimiRL after a LoRA CoTSFT) starts from what was trained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(path / "base", local_files_only=True)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def _checked_tokenizer(tokenizer, where: str):
    if tokenizer.pad_token_id is None:  # e.g. GPT-2 style tokenizers: pad with eos (masked anyway)
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {where} has no eos token; responses could never end.")
    return tokenizer


# Config fields that record where a policy came from or how it was saved, not what it computes.
_PROVENANCE_FIELDS = ("_name_or_path", "transformers_version", "architectures", "dtype")


def policy_spec(model, tokenizer) -> dict[str, Any]:
    """What rebuilds a policy without the folder it came from, weights excluded: the model's config and generation
    config, its parameter dtype, and the tokenizer's ``save_pretrained`` files (text, or bytes for binary ones).
    Plain types only, so it can live in a checkpoint read with ``torch.load(weights_only=True)``."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files: dict[str, str | bytes] = {}
        for file in sorted(Path(tmp).rglob("*")):
            if file.is_file():
                data = file.read_bytes()
                try:
                    files[file.relative_to(tmp).as_posix()] = data.decode("utf-8")
                except UnicodeDecodeError:  # e.g. a sentencepiece model
                    files[file.relative_to(tmp).as_posix()] = data
    generation = getattr(model, "generation_config", None)
    return {
        "config": json.loads(model.config.to_json_string(use_diff=False)),
        "generation_config": None if generation is None else json.loads(generation.to_json_string(use_diff=False)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "tokenizer_files": files,
    }


def build_policy_from_spec(spec: Mapping[str, Any]):
    """``(model, tokenizer)`` from a :func:`policy_spec`: the same architecture, dtype and tokenizer, freshly
    initialised weights (load the saved ``state_dict`` into it)."""
    import json
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    with tempfile.TemporaryDirectory() as tmp:
        for name, content in spec["tokenizer_files"].items():
            file = Path(tmp, name)
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        # The tokenizer first, from its own files only: with a config.json beside them AutoTokenizer may pick the
        # architecture's tokenizer class instead of the saved one.
        tokenizer = _checked_tokenizer(AutoTokenizer.from_pretrained(tmp, local_files_only=True), "the checkpoint")
        Path(tmp, "config.json").write_text(json.dumps(spec["config"]))
        config = AutoConfig.from_pretrained(tmp, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, spec["dtype"])).train()
    if spec.get("generation_config") is not None:
        model.generation_config = GenerationConfig.from_dict(spec["generation_config"])
    return model, tokenizer


def policy_spec_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`policy_spec` results: config fields (where the policy came from aside) and
    ``"tokenizer"`` when the vocabularies or special tokens differ; ``[]`` for the same policy."""
    import json

    fields = sorted(k for k in set(a["config"]) | set(b["config"])
                    if k not in _PROVENANCE_FIELDS and a["config"].get(k, None) != b["config"].get(k, None))

    def vocabulary(spec: Mapping[str, Any]):
        files = spec["tokenizer_files"]
        if "tokenizer.json" not in files:  # a slow tokenizer: compare its files as they are
            return {k: v for k, v in files.items() if k != "tokenizer_config.json"}
        state = json.loads(files["tokenizer.json"])
        special = json.loads(files.get("tokenizer_config.json", "{}"))
        tokens = {k: v for k, v in special.items() if k.endswith("_token") or k == "additional_special_tokens"}
        return [state.get(k) for k in ("model", "added_tokens", "normalizer", "pre_tokenizer")], tokens

    return fields + (["tokenizer"] if vocabulary(a) != vocabulary(b) else [])


def save_policy(model, tokenizer, out_dir: str | os.PathLike, card: dict | None = None) -> Path:
    """``save_pretrained`` of model (safetensors) and tokenizer, with a generation config that
    stops at ``eos``: ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(out_dir)`` reload it.

    The char tokenizer is written in byte-level form (space -> ``"Ġ"``, newline -> ``"Ċ"``, as
    GPT-2/Qwen/Llama-3 tokenizers store them): ``AutoTokenizer`` loads some architectures' folders
    (Qwen2 among them) with that architecture's own byte-level tokenizer class, which would
    otherwise drop spaces and newlines. The reloaded tokenizer is checked to give the same ids.

    Prompt format: the plain prompt text (``"47+38="``, no chat template), encoded as :func:`encode_prompt`
    does, ``[bos] + tokens(prompt)``. The saved tokenizer adds that ``bos`` itself (a ``<bos> $A`` post-processor,
    see :func:`_match_prompt_encoding`) and pads on the left, so ``model.generate(**tok(prompts, ...))`` sees the
    ids the model was trained on.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = getattr(tokenizer, "bos_token_id", None)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    chars = _single_char_vocab(tokenizer)
    if chars is not None:
        _write_byte_level_tokenizer(tokenizer, out_dir / "tokenizer.json")
        from transformers import AutoTokenizer

        reloaded = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
        text = "".join(chars)
        if reloaded.encode(text, add_special_tokens=False) != tokenizer.encode(text, add_special_tokens=False):
            raise ValueError(
                f"AutoTokenizer.from_pretrained({str(out_dir)!r}) ({type(reloaded).__name__}) does not reproduce the "
                "tokenizer's ids; the export would not round-trip."
            )
    _match_prompt_encoding(tokenizer, out_dir)
    write_model_card(out_dir, **causal_lm_card(out_dir, getattr(tokenizer, "bos_token", None), **(card or {}),
                                               chat_template=bool(getattr(tokenizer, "chat_template", None))))
    return out_dir


def _match_prompt_encoding(tokenizer, out_dir: Path, probe: str = "47+38=") -> None:
    """Make the saved tokenizer's default call ``tok(prompt)`` give :func:`encode_prompt`'s ids, and pad left.

    litzoo encodes with ``add_special_tokens=False`` and prepends ``bos`` itself, so the training ids do not
    depend on the tokenizer's post-processor; a user calling ``tok(prompt)`` does, and without ``bos`` the model
    answers garbage. Where the reloaded tokenizer differs, ``tokenizer.json`` gets a ``<bos> $A`` template.
    Left padding: a decoder-only model continues after the last prompt token, which right padding would hide.
    """
    import json

    from tokenizers import Tokenizer, processors
    from transformers import AutoTokenizer

    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "padding_side": "left"}, indent=2, ensure_ascii=False) + "\n")

    def saved_ids() -> tuple[str, list[int]]:
        reloaded = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
        return type(reloaded).__name__, list(reloaded(probe)["input_ids"])

    wanted = encode_prompt(tokenizer, probe)
    if saved_ids()[1] == wanted:
        return
    path = out_dir / "tokenizer.json"
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    single = f"{bos} $A" if bos_id is not None else "$A"
    if path.is_file():
        backend = Tokenizer.from_file(str(path))
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=f"{single} $B:1", special_tokens=[(bos, bos_id)] if bos_id is not None else [])
        backend.save(str(path))
    name, ids = saved_ids()
    if ids != wanted:
        raise ValueError(
            f"AutoTokenizer.from_pretrained({str(out_dir)!r}) ({name}) encodes {probe!r} as {ids}, but the model was "
            f"trained on {wanted} (encode_prompt: [bos] + tokens); tok(prompt) + generate would not match training."
        )


def _single_char_vocab(tokenizer) -> list[str] | None:
    """The characters of a one-token-per-ASCII-character BPE tokenizer (the char tokenizer), else ``None``."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    model = json.loads(backend.to_str()).get("model", {})
    special = set(tokenizer.all_special_tokens)
    chars = [t for t in model.get("vocab", {}) if t not in special]
    if model.get("type") != "BPE" or model.get("merges") or not all(len(t) == 1 and t.isascii() for t in chars):
        return None
    return chars


def _write_byte_level_tokenizer(tokenizer, path: Path) -> None:
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    special = set(tokenizer.all_special_tokens)
    vocab = {(t if t in special else byte_to_char[ord(t)]): i for t, i in state["model"]["vocab"].items()}
    byte_level = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=tokenizer.unk_token))
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    byte_level.decoder = decoders.ByteLevel()
    new = json.loads(byte_level.to_str())
    for key in ("model", "pre_tokenizer", "decoder"):
        state[key] = new[key]
    path.write_text(json.dumps(state, ensure_ascii=False))


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """``[bos] + tokens(prompt)``: the exact ids every litzoo reasoning component feeds the policy."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([bos] if bos is not None else []) + list(ids)


def encode_response(tokenizer, response: str) -> list[int]:
    """``tokens(response) + [eos]``: a training target that teaches the policy to stop."""
    return list(tokenizer.encode(response, add_special_tokens=False)) + [tokenizer.eos_token_id]


def encode_chat_prompt(tokenizer, prompt: str) -> list[int]:
    """A prompt's ids as the policy sees them: with a tokenizer that has a chat template, the template's rendering of
    one user turn plus the assistant header (``apply_chat_template(..., add_generation_prompt=True)``, the text
    tokenized as it is, special tokens written by the template); without one, :func:`encode_prompt`."""
    if not getattr(tokenizer, "chat_template", None):
        return encode_prompt(tokenizer, prompt)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))
