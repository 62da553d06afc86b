"""Callbacks shared by all litzoo methods."""

from litzoo.callbacks.ema import EMA, find_ema_module
from litzoo.callbacks.export import ExportOnFitEnd
from litzoo.callbacks.init_from import InitFromCheckpoint, load_weights
from litzoo.callbacks.progress import ProgressLog, StepProgressBar, default_progress_bar
from litzoo.callbacks.rl_eval import RLEvaluation
from litzoo.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from litzoo.callbacks.sample_grid import SampleGrid, make_grid, save_image_grid, save_scatter

__all__ = [
    "EMA",
    "ExportOnFitEnd",
    "InitFromCheckpoint",
    "NaNGuard",
    "NonFiniteLossError",
    "ProgressLog",
    "RLEvaluation",
    "SampleGrid",
    "StepProgressBar",
    "default_progress_bar",
    "find_ema_module",
    "load_weights",
    "make_grid",
    "save_image_grid",
    "save_scatter",
]
