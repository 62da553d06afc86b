"""Export the trained module to its ecosystem format when ``fit`` ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info


class ExportOnFitEnd(Callback):
    """Call ``pl_module.export(out_dir)`` on rank 0 after fit (with EMA weights, which Lightning's
    weight averaging has copied into the module by then). ``out_dir`` defaults to ``<log_dir>/export``."""

    def __init__(self, out_dir: Optional[str] = None) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero or trainer.interrupted:
            return
        out_dir = Path(self.out_dir or os.path.join(log_dir, "export"))
        path = pl_module.export(out_dir, overwrite=True)  # this run's own folder (a resumed fit re-exports)
        rank_zero_info(f"Exported {type(pl_module).__name__} to {path}")
