"""Fixtures shared across the test packages; with --import-mode=importlib the test files reach plain helper
modules (``rl_helpers``, ``lm_helpers``) through the ``sys.path`` entry made here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Plain helper modules next to this file (rl_helpers.py, lm_helpers.py): importable by the test files.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def one_thread_and_seeded():
    """One torch thread (tiny RL networks: one thread beats two fighting over a loaded 2-core machine) and a
    fixed seed for network initialisation; envs and action sampling are seeded by the datamodule/module.
    RL test files use it with ``pytestmark = pytest.mark.usefixtures("one_thread_and_seeded")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole test file: tiny models on a loaded 2-core machine run faster (and
    reproducibly) on one. Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
