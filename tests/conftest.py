"""Fixtures shared across the test packages; with --import-mode=importlib the test files reach plain helper
modules (``rl_helpers``, ``lm_helpers``, ``dist_helpers``) through the ``sys.path`` entry made here."""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

# pytest-xdist runs tests in several processes at once, and diffusers/transformers copy a custom pipeline's code into
# one shared folder (HF_MODULES_CACHE/diffusers_modules/local): two workers loading different pipelines there at the
# same moment import each other's file. Each worker gets its own folder (set before anything imports diffusers).
_WORKER_MODULES_CACHE = None
if os.environ.get("PYTEST_XDIST_WORKER"):
    _WORKER_MODULES_CACHE = tempfile.mkdtemp(prefix=f"litzoo_hf_modules_{os.environ['PYTEST_XDIST_WORKER']}_")
    os.environ["HF_MODULES_CACHE"] = _WORKER_MODULES_CACHE

import numpy as np
import pytest
import torch

# Plain helper modules next to this file (rl_helpers.py, lm_helpers.py, dist_helpers.py): importable by the test files.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for the whole run, module- and session-scoped fixtures included: the models here are
    tiny, so a second thread only adds synchronisation (on a loaded 2-core machine it collapses), and a test's
    numbers must not depend on the machine's core count or OMP_NUM_THREADS."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded_and_one_thread():
    """Every test starts from the same global random state (torch, numpy, random: seed 0; no global Lightning
    seed) and one thread,
    whatever ran before it: a test's result never depends on the order or the selection of tests. Envs,
    exploration and noise are seeded by the datamodules/modules themselves."""
    torch.set_num_threads(1)  # a test may have changed it
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    # seed_everything(N) sets PL_GLOBAL_SEED, which seed=None modules/datamodules follow: not into the next test.
    global_seed = os.environ.pop("PL_GLOBAL_SEED", None)
    yield
    os.environ.pop("PL_GLOBAL_SEED", None)
    if global_seed is not None:
        os.environ["PL_GLOBAL_SEED"] = global_seed


def pytest_unconfigure(config):
    if _WORKER_MODULES_CACHE is not None:  # the worker's own HF_MODULES_CACHE (top of this file)
        shutil.rmtree(_WORKER_MODULES_CACHE, ignore_errors=True)
