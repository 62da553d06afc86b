"""Model cards: the ``README.md`` every litzoo export writes, in the Hugging Face Hub's format.

YAML front matter (``library_name``, ``license``, ``tags``, ``pipeline_tag``, ``base_model``, ``datasets`` where
they apply), then what the model is, the exact lines that load and sample it (the first ``python`` block; the
tests run it), the prompt format of language models, the training recipe (hyperparameters) and the metrics
measured at export. Plain dicts and strings in, no Lightning, no network.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

CARD_NAME = "README.md"
LICENSE = "apache-2.0"


def trainer_metrics(module: Any) -> dict[str, float]:
    """The last logged scalar metrics (``trainer.callback_metrics``: e.g. ``val/class_accuracy``, ``val/pass@1``,
    ``eval/mean_return``) of a module attached to a trainer; ``{}`` without one."""
    trainer = getattr(module, "_trainer", None)
    metrics = getattr(trainer, "callback_metrics", None) or {}
    out = {}
    for name, value in sorted(metrics.items()):
        value = value.item() if hasattr(value, "numel") and value.numel() == 1 else value
        if isinstance(value, numbers.Real) and math.isfinite(float(value)):
            out[str(name)] = float(value)
    return out


def training_data(module: Any) -> Optional[str]:
    """``ClassName(arg=value, ...)`` of the datamodule the module was trained on, when a trainer has one."""
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None:
        return None
    hparams = dict(getattr(datamodule, "hparams", {}) or {})
    args = ", ".join(f"{k}={v!r}" for k, v in hparams.items())
    return f"`{type(datamodule).__name__}({args})`"


def card_metadata(module: Any) -> dict[str, Any]:
    """What an export knows from the module's trainer: ``metrics``, ``data`` (the datamodule) and, for RL,
    ``env_id`` (a registered gymnasium id), each only when known."""
    trainer = getattr(module, "_trainer", None)
    env_id = getattr(getattr(trainer, "datamodule", None), "env_id", None) if trainer is not None else None
    out = {"metrics": trainer_metrics(module), "data": training_data(module),
           "env_id": env_id if isinstance(env_id, str) else None}
    return {k: v for k, v in out.items() if v}


def _yaml_value(value: Any) -> str:
    # JSON scalars and flow lists are valid YAML, and quoting every string keeps "1.0" or "yes" strings strings.
    return json.dumps(list(value) if isinstance(value, (list, tuple)) else value)


def render_model_card(*, title: str, summary: str, library_name: str, usage: str, tags: Sequence[str] = (),
                      pipeline_tag: Optional[str] = None, base_model: Optional[str] = None,
                      datasets: Optional[Sequence[str]] = None, prompt_format: Optional[str] = None,
                      recipe: Optional[Mapping[str, Any]] = None, metrics: Optional[Mapping[str, float]] = None,
                      data: Optional[str] = None, notes: Optional[str] = None) -> str:
    """The card's text. ``usage`` is Python code (the loading and sampling lines); ``recipe`` the module's
    hyperparameters; ``metrics`` the values measured at export (omitted when empty)."""
    front = {"library_name": library_name, "license": LICENSE, "tags": ["litzoo", *tags],
             "pipeline_tag": pipeline_tag, "base_model": base_model, "datasets": list(datasets) if datasets else None}
    lines = ["---", *(f"{k}: {_yaml_value(v)}" for k, v in front.items() if v is not None), "---", "",
             f"# {title}", "", summary.strip(), "", "## Usage", "", "```python", usage.strip(), "```", ""]
    if notes:
        lines += [notes.strip(), ""]
    if prompt_format:
        lines += ["## Prompt format", "", prompt_format.strip(), ""]
    lines += ["## Training", ""]
    if data:
        lines += [f"Data: {data}", ""]
    if recipe:
        plain = json.loads(json.dumps(dict(recipe), default=list))  # tuples -> lists, for YAML
        lines += ["Hyperparameters (the module's `__init__` arguments):", "", "```yaml",
                  yaml.safe_dump(plain, default_flow_style=None, sort_keys=True, width=120).strip(), "```", ""]
    if metrics:
        lines += ["## Metrics at export", "", "| metric | value |", "|---|---|",
                  *(f"| `{k}` | {v:.6g} |" for k, v in metrics.items()), ""]
    lines += ["Written by litzoo at export.", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, **card: Any) -> Path:
    """Write :func:`render_model_card` ``(**card)`` to ``out_dir/README.md`` and return its path."""
    path = Path(out_dir) / CARD_NAME
    path.write_text(render_model_card(**card))
    return path


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card as a dict."""
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    if not match:
        raise ValueError("The card has no YAML front matter (--- ... ---) at its top.")
    return yaml.safe_load(match.group(1))


def usage_code(text: str) -> str:
    """The first ``python`` code block of a card: the loading and sampling lines."""
    match = re.search(r"```python\n(.*?)\n```", text, flags=re.S)
    if not match:
        raise ValueError("The card has no ```python block.")
    return match.group(1)


def flow_card(out_dir: str | Path, hparams: Mapping[str, Any], num_classes: Optional[int], latent: bool,
              text: bool, metrics: Optional[Mapping[str, float]] = None, data: Optional[str] = None,
              lora: bool = False) -> dict[str, Any]:
    """The card of a ``RectifiedFlowDiT`` export (``write_model_card(out_dir, **flow_card(...))``); ``lora``: the
    folder holds the frozen base and LoRA adapters (``pytorch_lora_weights.safetensors``), loaded in the usage."""
    card = _flow_card(out_dir, hparams, num_classes, latent, text, metrics, data)
    if lora:
        pipe = "pipe.transformer" if num_classes else "transformer"
        load = (f"{pipe}.load_lora_adapter(path, prefix=\"transformer\", "
                "weight_name=\"pytorch_lora_weights.safetensors\")  # the LoRA adapters")
        lines = card["usage"].splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith(pipe.split(".")[0] + " = ")) + 1
        card["usage"] = "\n".join(lines[:at] + [load] + lines[at:])
        card["summary"] += (f" LoRA (rank {hparams['lora_rank']}): `transformer/` is the frozen base and "
                            "`pytorch_lora_weights.safetensors` the adapters (diffusers' `save_lora_weights` format: "
                            "`StableDiffusion3Pipeline.load_lora_weights(path)` or `load_lora_adapter`).")
        card["tags"] = [*card["tags"], "lora"]
    return card


def _flow_card(out_dir, hparams, num_classes, latent, text, metrics, data) -> dict[str, Any]:
    h, path = hparams, str(out_dir)
    kind = "text-conditioned" if text else "class-conditional" if num_classes else "unconditional"
    common = {"title": f"Rectified-flow MMDiT ({kind}, litzoo)", "library_name": "diffusers", "recipe": dict(h),
              "metrics": metrics, "data": data, "tags": ["rectified-flow", "sd3", "mmdit", kind]}
    summary = (f"An SD3-style rectified-flow transformer (diffusers `SD3Transformer2DModel`) trained on "
               f"{'VAE latents (`vae/`)' if latent else 'images'}: `transformer/`, `scheduler/` "
               "(`FlowMatchEulerDiscreteScheduler`). ")
    if num_classes:
        labels = [k % num_classes for k in (0, 3, 7)]
        usage = (f"import torch\nfrom diffusers import DiffusionPipeline\n\npath = {path!r}\n"
                 "pipe = DiffusionPipeline.from_pretrained(path, custom_pipeline=path, trust_remote_code=True)\n"
                 f"images = pipe(class_labels={labels}, guidance_scale={float(h['cfg_scale'])}, "
                 f"num_inference_steps={h['sample_steps']},\n"
                 f"              generator=torch.Generator().manual_seed(0)).images  # PIL images of classes {labels}")
        summary += ("`pipeline.py` (`ClassConditionalFlowPipeline`, torch + diffusers only) samples by label with the "
                    "class conditions of `class_embeddings/` (context tokens + pooled vector per label, the last row "
                    "the null condition for classifier-free guidance); it equals litzoo's `RectifiedFlowDiT.sample(n, "
                    "y=labels, cfg_scale=guidance_scale)` (Euler) for the same generator. The folder also loads as "
                    "`StableDiffusion3Pipeline` (absent components `None`, embeddings passed in).")
        return {**common, "usage": usage, "summary": summary}
    usage = (f"from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel\n\npath = {path!r}\n"
             "transformer = SD3Transformer2DModel.from_pretrained(path, subfolder=\"transformer\")\n"
             "scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder=\"scheduler\")")
    summary += ("Prompts go through the model's own text encoder (`text_encoder/`, `tokenizer/`: last hidden state "
                "and projected `text_embeds`), zeros are the null prompt; `StableDiffusion3Pipeline` (absent "
                "components `None`) samples from those `prompt_embeds`." if text else
                "Sample with `StableDiffusion3Pipeline` (absent components `None`) from the null condition.")
    return {**common, "usage": usage, "summary": summary}


def vae_card(out_dir: str | Path, hparams: Mapping[str, Any], metrics=None, data=None) -> dict[str, Any]:
    """The card of a ``VAE`` export (diffusers ``AutoencoderKL`` with fitted ``scaling_factor``/``shift_factor``)."""
    h, path = hparams, str(out_dir)
    usage = (f"import torch\nfrom diffusers import AutoencoderKL\n\npath = {path!r}\n"
             "vae = AutoencoderKL.from_pretrained(path).eval()\nc = vae.config\n"
             f"x = torch.rand(2, {h['in_channels']}, {h['image_size']}, {h['image_size']}) * 2 - 1  # in [-1, 1]\n"
             "with torch.no_grad():\n"
             "    z = (vae.encode(x).latent_dist.mode() - c.shift_factor) * c.scaling_factor  # normalised latents\n"
             "    x_rec = vae.decode(z / c.scaling_factor + c.shift_factor).sample")
    return {"title": "AutoencoderKL (litzoo VAE)", "library_name": "diffusers", "usage": usage, "recipe": dict(h),
            "metrics": metrics, "data": data, "tags": ["vae", "autoencoder-kl", "latent-diffusion"],
            "summary": f"A diffusers `AutoencoderKL` with {h['latent_channels']} latent channels; `scaling_factor` and "
                       "`shift_factor` in its config were fitted on the training data so that normalised latents "
                       "have mean 0 and variance 1 (what `RectifiedFlowDiT(vae_path=...)` trains on)."}


def causal_lm_card(out_dir: str | Path, bos_token: Optional[str], method: str = "a causal LM",
                   recipe: Optional[Mapping[str, Any]] = None, metrics=None, data=None,
                   base_model: Optional[str] = None, example_prompt: str = "47+38=",
                   max_new_tokens: int = 256, chat_template: bool = False,
                   lora_base: Optional[str] = None) -> dict[str, Any]:
    """The card of a transformers causal-LM export (``CoTSFT`` / ``KimiRL``, or ``save_policy`` alone);
    ``chat_template``: the tokenizer has one, and prompts went through it (one user turn); with ``lora_base`` (a
    subfolder name) the export is a peft adapter folder on the base model in that subfolder."""
    path = str(out_dir)
    load = ("model = AutoModelForCausalLM.from_pretrained(path)\n" if lora_base is None else
            f"from peft import PeftModel\n\nbase = AutoModelForCausalLM.from_pretrained(path + {'/' + lora_base!r})\n"
            "model = PeftModel.from_pretrained(base, path)  # the LoRA adapters on the frozen base\n")
    lora_tags = ["lora", "peft"] if lora_base else []
    lora_summary = (f" LoRA: this folder is a peft adapter (`adapter_config.json`, `adapter_model.safetensors`) on the "
                    f"frozen base model in `{lora_base}/`." if lora_base else "")
    if chat_template:
        card = _chat_lm_card(path, method, recipe, metrics, data, base_model, example_prompt, max_new_tokens, load)
        return {**card, "tags": card["tags"] + lora_tags, "summary": card["summary"] + lora_summary}
    bos = "[tok.bos_token_id] + " if bos_token is not None else ""
    usage = (f"import torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\npath = {path!r}\n"
             f"tok = AutoTokenizer.from_pretrained(path)\n{load}"
             f"prompt = {example_prompt!r}\n"
             f"ids = torch.tensor([{bos}tok.encode(prompt, add_special_tokens=False)])\n"
             f"out = model.generate(ids, max_new_tokens={max_new_tokens}, do_sample=False)\n"
             "answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)")
    start = f"`{bos_token}` (id `tok.bos_token_id`) followed by " if bos_token is not None else ""
    prompt_format = (f"The model reads {start}the task text as it is, with no template (e.g. `{example_prompt}` for "
                     "addition), and writes a chain of thought that ends in the answer, then `<eos>` (generation "
                     "stops there: `generation_config.eos_token_id`).")
    return {"title": f"{method} reasoning model (litzoo)", "library_name": "transformers",
            "pipeline_tag": "text-generation", "usage": usage, "prompt_format": prompt_format, "recipe": recipe,
            "metrics": metrics, "data": data, "base_model": base_model,
            "tags": ["reasoning", "chain-of-thought", method.lower(), *lora_tags],
            "summary": f"{method}: a causal language model fine-tuned by litzoo on verifiable reasoning tasks "
                       "(character-level tokenizer). Greedy decoding is how it was evaluated." + lora_summary}


def _chat_lm_card(path: str, method: str, recipe, metrics, data, base_model, example_prompt: str,
                  max_new_tokens: int, load: str) -> dict[str, Any]:
    usage = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
             f"path = {path!r}\ntok = AutoTokenizer.from_pretrained(path)\n{load}"
             f"chat = [{{\"role\": \"user\", \"content\": {example_prompt!r}}}]\n"
             "ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)\n"
             f"out = model.generate(**ids, max_new_tokens={max_new_tokens}, do_sample=False)\n"
             "answer = tok.decode(out[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True)")
    prompt_format = ("The model reads the prompt through its tokenizer's chat template, as one user turn followed by "
                     "the assistant header (`apply_chat_template(..., add_generation_prompt=True)`), and writes its "
                     "response, then `eos` (generation stops there: `generation_config.eos_token_id`).")
    return {"title": f"{method} reasoning model (litzoo)", "library_name": "transformers",
            "pipeline_tag": "text-generation", "usage": usage, "prompt_format": prompt_format, "recipe": recipe,
            "metrics": metrics, "data": data, "base_model": base_model,
            "tags": ["reasoning", "chain-of-thought", method.lower()],
            "summary": f"{method}: a causal language model fine-tuned by litzoo on problems with verifiable answers. "
                       "Greedy decoding is how it was evaluated."}


def policy_card(out_dir: str | Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The card of an RL policy folder (``policy.json`` + ``policy.safetensors``) from its ``policy.json`` dict."""
    meta = dict(config.get("metadata") or {})
    algorithm, env_id = meta.get("algorithm", "RL"), meta.get("env_id")
    path = str(out_dir)
    if env_id:
        usage = (f"import gymnasium as gym\nfrom litzoo import load_policy  # pip install litzoo (no Lightning needed)"
                 f"\n\npath = {path!r}\nenv = gym.make({env_id!r})\npolicy = load_policy(path, env=env)\n"
                 "obs, _ = env.reset(seed=0)\naction = policy.predict(obs)  # deterministic=True by default")
    else:
        usage = (f"from litzoo import load_policy  # pip install litzoo (no Lightning needed)\n"
                 "from litzoo.rl.policy import spec_to_space\n\n"
                 f"path = {path!r}\npolicy = load_policy(path)\n"
                 "obs = spec_to_space(policy.observation_spec).sample()\naction = policy.predict(obs)")
    tags = ["reinforcement-learning", str(algorithm).lower()] + ([env_id] if env_id else [])
    hyper = meta.get("hyperparameters")
    return {"title": f"{algorithm} policy{f' for {env_id}' if env_id else ''} (litzoo)", "library_name": "litzoo",
            "pipeline_tag": "reinforcement-learning", "usage": usage, "tags": tags, "recipe": hyper,
            "metrics": meta.get("metrics"),
            "data": "; ".join(x for x in (meta.get("data"), f"{meta['env_steps']} environment steps"
                                          if "env_steps" in meta else None) if x) or None,
            "summary": f"A `{config.get('kind')}` policy trained with {algorithm}: observation space "
                       f"`{json.dumps(config.get('observation_space'))}`, action space "
                       f"`{json.dumps(config.get('action_space'))}`. `policy.safetensors` holds the weights and the "
                       "observation-normalisation statistics, `policy.json` the networks and spaces."}
