"""Tests for litzoo/reasoning/generation.py: sampling, per-token log-probs, the response mask."""

import pytest
import torch
from lm_helpers import manual_token_log_probs

from litzoo.reasoning.generation import generate, token_log_probs
from litzoo.reasoning.policy import encode_prompt


def test_generated_log_probs_match_an_unpadded_manual_forward(policy):
    model, tok = policy
    prompts = [encode_prompt(tok, "12+34="), encode_prompt(tok, "maxgap 3 9 1 7="), encode_prompt(tok, "5+5=")]
    rollout = generate(model, tok, prompts, num_samples=2, max_new_tokens=12, temperature=0.7, seed=3)
    ours = token_log_probs(model, rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1], 0.7)
    for row, response in enumerate(rollout.response_token_lists()):
        manual = manual_token_log_probs(model, prompts[row // 2], response, 0.7)
        n = len(response)
        torch.testing.assert_close(rollout.log_probs[row, :n], manual, atol=2e-5, rtol=1e-4)  # from generate's logits
        torch.testing.assert_close(ours[row, :n], manual, atol=2e-5, rtol=1e-4)  # one padded forward pass
        assert (rollout.log_probs[row, n:] == 0).all()


def test_generate_is_reproducible_with_a_seed_and_leaves_the_global_rng_alone(policy):
    model, tok = policy
    prompts = [encode_prompt(tok, "47+38=")]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate(model, tok, prompts, num_samples=4, max_new_tokens=8, seed=5)
    after = torch.rand(1)
    b = generate(model, tok, prompts, num_samples=4, max_new_tokens=8, seed=5)
    c = generate(model, tok, prompts, num_samples=4, max_new_tokens=8, seed=6)
    assert before == after
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids, c.response_ids)
    # Both clocks are recorded; this process's CPU time cannot exceed the wall time by more than its threads.
    assert 0 < a.cpu_seconds <= a.seconds * (torch.get_num_threads() + 1) + 0.1


def test_response_mask_ends_at_the_first_eos(policy):
    model, tok = policy
    rollout = generate(model, tok, [encode_prompt(tok, "1+1=")], num_samples=64, max_new_tokens=20, seed=0)
    stopped = 0
    for ids, mask, done in zip(rollout.response_ids, rollout.response_mask, rollout.finished):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # contiguous from the start
        eos = (ids[:n] == tok.eos_token_id).nonzero().flatten().tolist()
        assert eos == ([n - 1] if done else [])  # eos only as the last response token
        assert (ids[n:] == tok.pad_token_id).all()
        stopped += bool(done)
    assert 0 < stopped < 64  # the random tiny model sometimes stops early, sometimes not


def test_generate_refuses_prompts_longer_than_the_model_positions(policy):
    model, tok = policy
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        generate(model, tok, [encode_prompt(tok, "1" * 100)], max_new_tokens=64)
