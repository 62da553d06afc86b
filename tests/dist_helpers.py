"""Helpers shared by the multi-process tests and their worker scripts (``tests/conftest.py`` puts this folder on
``sys.path``; ``distributed/fsdp_worker.py`` inserts it itself, the tests' inline scripts get it through
``PYTHONPATH``)."""

import contextlib
from pathlib import Path


def gloo_threads() -> int:
    """This process's threads started by gloo (its TCP loop ``gloo_tcp_loop``, the groups' ``pt_gloo_runloop``s),
    read from ``/proc`` (Linux)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            names.append((task / "comm").read_text())
    return sum("gloo" in name for name in names)


def assert_clean_exit(stderr: str) -> None:
    """No rank aborted at exit and no exit handler failed. Needed beyond the launching rank's exit status: Lightning's
    launcher does not wait for rank 1, whose abort or failing handler shows only in the shared stderr."""
    assert "terminate called" not in stderr and "Exception ignored" not in stderr, stderr[-4000:]
