"""Fixtures of the reasoning tests: the tiny test policy."""

import pytest
from lm_helpers import tiny_policy


@pytest.fixture(scope="module")
def policy():
    """``(model, tokenizer)``: the test policy with 128 positions, seed 0, shared by a file's tests."""
    return tiny_policy(max_position_embeddings=128)
