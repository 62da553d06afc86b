"""Fixtures of the reasoning tests: one torch thread per file, and the tiny test policy."""

import pytest
from lm_helpers import tiny_policy


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_file(one_thread):
    yield


@pytest.fixture(scope="module")
def policy():
    """``(model, tokenizer)``: the test policy with 128 positions, seed 0, shared by a file's tests."""
    return tiny_policy(max_position_embeddings=128)
