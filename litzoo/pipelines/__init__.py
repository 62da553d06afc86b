"""Pipeline source files that litzoo writes into its diffusers exports (they import only torch and diffusers, so
an export samples with diffusers alone), and the helper that writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SOURCES = Path(__file__).parent


def write_custom_pipeline(out_dir: Path, source: str, class_name: str, name_in_index: bool = True) -> None:
    """Copy ``source`` (a file of this package) to ``out_dir/pipeline.py``. With ``name_in_index``,
    ``model_index.json``'s ``_class_name`` becomes ``["pipeline", class_name]``, so that
    ``DiffusionPipeline.from_pretrained(out_dir, trust_remote_code=True)`` builds that class; otherwise the folder
    keeps its diffusers pipeline and ``custom_pipeline=out_dir`` selects this one."""
    shutil.copyfile(SOURCES / source, out_dir / "pipeline.py")
    if name_in_index:
        index_path = out_dir / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = ["pipeline", class_name]
        index_path.write_text(json.dumps(index, indent=2))


def write_class_embeddings(out_dir: Path, context_tokens, pooled) -> list[str]:
    """The per-label SD3 conditions (row K = null) as a diffusers component ``out_dir/class_embeddings/``
    (``config.json``, safetensors weights, ``class_embeddings.py``), and ``pipeline.py`` that samples by label.
    ``model_index.json`` keeps ``StableDiffusion3Pipeline`` (``custom_pipeline=out_dir`` picks the label
    pipeline); returns the component's ``model_index.json`` entry."""
    from litzoo.pipelines.class_embeddings import ClassEmbeddings

    rows, length, width = context_tokens.shape
    module = ClassEmbeddings(num_classes=rows - 1, num_context_tokens=length, joint_attention_dim=width,
                             pooled_projection_dim=pooled.shape[1])
    module.context_tokens.data.copy_(context_tokens.float().cpu())
    module.pooled.data.copy_(pooled.float().cpu())
    module.save_pretrained(out_dir / "class_embeddings", safe_serialization=True)
    shutil.copyfile(SOURCES / "class_embeddings.py", out_dir / "class_embeddings" / "class_embeddings.py")
    write_custom_pipeline(out_dir, "flow_pipeline.py", "ClassConditionalFlowPipeline", name_in_index=False)
    return ["class_embeddings", "ClassEmbeddings"]
