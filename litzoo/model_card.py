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
              text: bool, metrics: Optional[Mapping[str, float]] = None, data: Optional[str] = None) -> dict[str, Any]:
    """The card of a ``RectifiedFlowDiT`` export (``write_model_card(out_dir, **flow_card(...))``)."""
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
