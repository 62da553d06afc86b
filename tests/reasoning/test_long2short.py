"""Tests for litzoo/reasoning/long2short.py: model merging, shortest rejection sampling, DPO pairs and training."""

import pytest
import torch
from lm_helpers import TINY_TEST_QWEN2

from litzoo.reasoning import get_task
from litzoo.reasoning.long2short import (
    SampledResponses,
    dpo_pairs,
    dpo_train,
    merge_models,
    merge_policies,
    sample_responses,
    sequence_log_probs,
    sft_train,
    shortest_correct,
    shortest_rejection_sampling,
)
from litzoo.reasoning.generation import generate
from litzoo.reasoning.policy import build_policy, encode_chat_prompt, encode_prompt, encode_response

SMALL = {**TINY_TEST_QWEN2, "num_hidden_layers": 1, "max_position_embeddings": 128}


def _pairs(tok, operands=((12, 30), (41, 7), (5, 5), (20, 22))):
    """(prompt, chosen = the direct answer, rejected = the trace) per addition."""
    task = get_task("arithmetic")
    problems = [task.make_problem(a, b, "+") for a, b in operands]
    return [(encode_prompt(tok, p.prompt), encode_response(tok, task.write_direct(p)),
             encode_response(tok, task.write_trace(p))) for p in problems]


def test_merge_models_is_the_weighted_average_of_the_weights():
    torch.manual_seed(0)
    a, tok = build_policy(SMALL)
    b, _ = build_policy(SMALL)
    merged = merge_policies([a, b], [0.25, 0.75])
    for (name, m), pa, pb in zip(merged.state_dict().items(), a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(m, 0.25 * pa + 0.75 * pb, msg=name)
    same = merge_models([a.state_dict(), a.state_dict()])
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in same.items())


def test_merge_models_refuses_bad_weights_and_different_architectures():
    a, _ = build_policy(SMALL)
    b, _ = build_policy({**SMALL, "hidden_size": 16})
    with pytest.raises(ValueError, match="summing to 1"):
        merge_models([a.state_dict(), a.state_dict()], [0.5, 0.6])
    with pytest.raises(ValueError, match="names and shapes"):
        merge_models([a.state_dict(), b.state_dict()])
    with pytest.raises(ValueError, match="at least 2"):
        merge_models([a.state_dict()])


def _samples():
    task = get_task("arithmetic")
    p = task.make_problem(47, 38, "+")
    responses = ["\n7+8+0=15 w5 c1\n4+3+1=8 w8 c0\nsum 85\n#85", "#85", "#84", "#8555", "\nlong wrong answer #86",
                 "\nno fix redo\nsum 85\n#85", "#085"]
    ids = [list(range(len(r))) for r in responses]  # token counts = text lengths (char tokenizer)
    rewards = [task.verify(p, r) for r in responses]
    return SampledResponses(p, [1, 2], ids, responses, rewards)


def test_shortest_correct_and_dpo_pairs_follow_the_k15_rules():
    s = _samples()
    assert s.rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert shortest_correct(s) == 1  # "#85", 3 tokens
    pairs = dpo_pairs([s], long_factor=1.5)
    rejected = [s.texts[s.responses.index(r)] for _, c, r in pairs]
    assert all(c == s.responses[1] for _, c, _ in pairs)
    # wrong and longer: "#8555", "...#86"; correct and >= 1.5x longer: the full trace, "...sum 85 #85";
    # not rejected: "#84" (wrong but not longer), "#085" (correct, only 4/3 as long)
    assert rejected == [s.texts[0], s.texts[3], s.texts[4], s.texts[5]]
    none_correct = SampledResponses(s.problem, [1], [[1]], ["#1"], [0.0])
    assert dpo_pairs([none_correct]) == [] and shortest_correct(none_correct) is None
    with pytest.raises(ValueError, match="long_factor"):
        dpo_pairs([s], long_factor=0.5)


@pytest.mark.parametrize("sampler", ["litzoo", "transformers"])
def test_shortest_rejection_sampling_keeps_a_correct_sample_of_minimal_length(sampler):
    torch.manual_seed(0)
    model, tok = build_policy(SMALL)
    task = get_task("arithmetic")
    problems = [task.make_problem(1, 1, "+"), task.make_problem(2, 3, "+")]
    # make "#2"/"#5" likely: a few SFT steps on the direct answers
    data = [(encode_prompt(tok, p.prompt), encode_response(tok, task.write_direct(p))) for p in problems]
    sft_train(model, tok, data, lr=3e-2, steps=30, batch_size=2)
    sampled = sample_responses(model, tok, problems, n=6, temperature=1.5, max_new_tokens=6, seed=0, sampler=sampler)
    kept = shortest_rejection_sampling(model, tok, problems, n=6, temperature=1.5, max_new_tokens=6, seed=0,
                                       sampler=sampler)
    # the sampler is the one asked for: its rollout of the same prompts, seed and shape
    prompts = [encode_chat_prompt(tok, p.prompt) for p in problems]
    rollout = generate(model, tok, prompts, num_samples=6, max_new_tokens=6, temperature=1.5, seed=0, sampler=sampler)
    assert [t for s in sampled for t in s.texts] == rollout.texts
    expected = [(s.prompt_ids, s.responses[shortest_correct(s)]) for s in sampled if shortest_correct(s) is not None]
    assert kept == expected and kept
    for s in sampled:
        j = shortest_correct(s)
        if j is not None:
            assert len(s.responses[j]) == min(len(r) for r, w in zip(s.responses, s.rewards) if w == 1.0)


def test_dpo_training_raises_the_chosen_over_the_rejected_response():
    torch.manual_seed(0)
    model, tok = build_policy(SMALL)
    pairs = _pairs(tok)
    prompts, chosen, rejected = zip(*pairs)

    def margin():
        with torch.no_grad():
            return (sequence_log_probs(model, tok.pad_token_id, prompts, chosen)
                    - sequence_log_probs(model, tok.pad_token_id, prompts, rejected))

    before = margin()
    losses = dpo_train(model, tok, pairs, beta=0.1, lr=3e-3, steps=25, batch_size=4)
    after = margin()
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # log 2 at pi = pi_ref
    assert losses[-1] < 0.3 and (after > before + 5).all()
    with pytest.raises(ValueError, match="no pairs"):
        dpo_train(model, tok, [])
    with pytest.raises(ValueError, match="rpo_alpha=-1.0 must be >= 0"):
        dpo_train(model, tok, pairs, rpo_alpha=-1.0)


def test_rpo_adds_the_chosen_nll_per_token_to_the_dpo_loss_and_keeps_the_chosen_likely():
    """RPO (``rpo_alpha``): the first step's loss is log 2 (pi = pi_ref) plus alpha times the chosen responses' NLL
    per token (over all chosen tokens of the batch, as TRL's ``rpo_alpha``; chosen answers of 2 to 5 characters, so a
    mean of per-sequence means would differ), computed here independently; training with it makes the chosen
    responses likelier."""
    torch.manual_seed(0)
    model, tok = build_policy(SMALL)
    pairs = _pairs(tok, ((1, 2), (41, 7), (512, 600), (5, 5)))
    prompts, chosen, _ = zip(*pairs)
    assert len({len(c) for c in chosen}) == 3
    with torch.no_grad():
        nll = -sequence_log_probs(model, tok.pad_token_id, prompts, chosen).sum().item() / sum(map(len, chosen))
    losses = dpo_train(model, tok, pairs, beta=0.1, lr=3e-3, steps=25, batch_size=4, rpo_alpha=0.5)
    assert losses[0] == pytest.approx(0.693147 + 0.5 * nll, rel=1e-5)
    with torch.no_grad():
        after = -sequence_log_probs(model, tok.pad_token_id, prompts, chosen).sum().item() / sum(map(len, chosen))
    assert after < 0.5 * nll
