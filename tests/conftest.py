"""Fixtures shared across the test packages (pytest runs with --import-mode=importlib: share through fixtures)."""

from __future__ import annotations

import pytest
import torch


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
