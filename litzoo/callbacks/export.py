"""Export the trained module to its ecosystem format when ``fit`` ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


#: a file every litzoo export writes at its top (diffusers pipeline, transformers model or VAE, RL policy folder)
EXPORT_MARKERS = ("model_index.json", "config.json", "policy.json", "litzoo.json")


class ExportOnFitEnd(Callback):
    """Call ``pl_module.export(out_dir)`` on rank 0 after fit (with EMA weights, which Lightning's
    weight averaging has copied into the module by then). ``out_dir`` defaults to ``<log_dir>/export``. An earlier
    export in ``out_dir`` is replaced (a resumed fit exports again); a folder holding anything else is refused."""

    def __init__(self, out_dir: Optional[str] = None) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank must ask
        from litzoo.sharding import is_sharded

        if is_sharded(pl_module):  # rank 0 holds a slice of every weight: export the saved checkpoint folder instead
            rank_zero_warn("ExportOnFitEnd skipped: the model is sharded (FSDP). Export the run's checkpoint folder: "
                           "python train.py export --ckpt <checkpoints/last.ckpt> --out DIR.", category=UserWarning)
            return
        if not trainer.is_global_zero or trainer.interrupted:
            return
        out_dir = Path(self.out_dir or os.path.join(log_dir, "export"))
        # A resumed fit re-exports: replace an earlier export there (or anything in this run's own folder), but never
        # delete a folder that holds something else (export then refuses, naming the folder).
        overwrite = self.out_dir is None or any((out_dir / name).is_file() for name in EXPORT_MARKERS)
        path = pl_module.export(out_dir, overwrite=overwrite)
        rank_zero_info(f"Exported {type(pl_module).__name__} to {path}")
