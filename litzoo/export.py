"""Export a litzoo checkpoint to its ecosystem format.

    python -m litzoo.export CKPT OUT_DIR          (or: python train.py export --ckpt CKPT --out OUT_DIR)

The checkpoint records which litzoo class wrote it; that class rebuilds itself with
``load_from_checkpoint`` (``weights_only=True``) and writes its format through ``export``:
a diffusers folder for DDPM, etc. A sharded checkpoint (the folder a ``ModelParallelStrategy`` / FSDP2 run saves)
is consolidated in this one process first (no process group, no GPUs): its export equals that of an unsharded
checkpoint of the same weights.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from litzoo.base import CheckpointError, load_checkpoint


def module_class_from_checkpoint(checkpoint: dict[str, Any]) -> type:
    """The litzoo LightningModule class recorded in a checkpoint."""
    class_path = checkpoint.get("litzoo_class")
    if not class_path:
        raise CheckpointError("The checkpoint has no 'litzoo_class' entry: it was not written by a litzoo module.")
    if not class_path.startswith("litzoo."):
        raise CheckpointError(f"Refusing to import {class_path!r}: only litzoo classes can be exported.")
    module_name, _, class_name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def export_checkpoint(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Load the module stored in ``ckpt_path`` and write its ecosystem format to ``out_dir`` (new or empty, unless
    ``overwrite=True``: then its contents are deleted first)."""
    cls = module_class_from_checkpoint(load_checkpoint(ckpt_path, mmap=True))  # its entries: the weights are read next
    module = cls.load_from_checkpoint(ckpt_path, map_location="cpu")
    module.eval()
    return module.export(out_dir, overwrite=overwrite)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="litzoo.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt_pos", nargs="?", metavar="CKPT", help="checkpoint path")
    parser.add_argument("out_pos", nargs="?", metavar="OUT_DIR", help="output folder")
    parser.add_argument("--ckpt", help="checkpoint path")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="delete the output folder's contents first")
    args = parser.parse_args(argv)
    ckpt, out = args.ckpt or args.ckpt_pos, args.out or args.out_pos
    if not ckpt or not out:
        parser.error("give a checkpoint and an output folder: export --ckpt CKPT --out DIR")
    try:
        path = export_checkpoint(ckpt, out, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"Exported {ckpt} -> {path}")


if __name__ == "__main__":
    main()
