"""Tests for litzoo/reasoning/losses.py: k1.5 loss, length penalty, DPO."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from lm_helpers import manual_token_log_probs, tiny_policy

from litzoo.reasoning.generation import generate, token_log_probs
from litzoo.reasoning.losses import dpo_loss, kimi_policy_loss, length_penalty, masked_sum, soft_overlong_punishment
from litzoo.reasoning.partial_rollout import PartialResponse, RolloutGroup, pack_groups


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_policy(max_position_embeddings=128)
    with torch.no_grad():  # never stop early, so the k responses have several tokens each
        model.lm_head.weight[tok.eos_token_id] = -5 * model.lm_head.weight[tok.eos_token_id].abs()
    return model, tok


# --------------------------------------------------------------------------- length penalty
def test_length_penalty_matches_hand_computed_examples():
    # lambda = 0.5 - (len - 10) / (30 - 10): 0.5, 0.25, 0, -0.5
    lengths = torch.tensor([[10, 15, 20, 30]])
    assert length_penalty(lengths, torch.tensor([[1, 1, 1, 1]])).tolist() == [[0.5, 0.25, 0.0, -0.5]]
    # wrong answers get min(0, lambda): never a bonus for being short
    assert length_penalty(lengths, torch.tensor([[0, 0, 0, 0]])).tolist() == [[0.0, 0.0, 0.0, -0.5]]
    assert length_penalty(lengths, torch.tensor([[1, 0, 1, 0]])).tolist() == [[0.5, 0.0, 0.0, -0.5]]


def test_length_penalty_is_zero_when_all_lengths_are_equal_and_is_per_problem():
    lengths = torch.tensor([[7, 7, 7], [4, 6, 5]])
    correct = torch.tensor([[1, 0, 1], [0, 1, 1]])
    # row 2: lambda = 0.5, -0.5, 0  -> wrong short: min(0, .5) = 0; correct long: -0.5; correct mid: 0
    assert length_penalty(lengths, correct).tolist() == [[0.0, 0.0, 0.0], [0.0, -0.5, 0.0]]


def test_length_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        length_penalty(torch.ones(2, 3), torch.ones(2, 4))


# --------------------------------------------------------------------------- DAPO overlong punishment
def test_soft_overlong_punishment_matches_dapo_eq_13_by_hand():
    # L_max = 10, L_cache = 4: free up to 6 tokens, then (6 - |y|) / 4 down to -1 at 10, -1 beyond
    lengths = torch.tensor([[1, 6, 7, 8], [9, 10, 11, 40]])
    assert soft_overlong_punishment(lengths, 10, 4).tolist() == [[0.0, 0.0, -0.25, -0.5], [-0.75, -1.0, -1.0, -1.0]]
    # L_cache = L_max: the ramp starts at 0 tokens
    assert soft_overlong_punishment(torch.tensor([0, 2, 8]), 8, 8).tolist() == [0.0, -0.25, -1.0]


def test_soft_overlong_punishment_equals_trls_reward_function():
    trl_rewards = pytest.importorskip("trl.rewards")
    lengths = list(range(0, 14))
    ours = soft_overlong_punishment(torch.tensor(lengths), 12, 5).tolist()
    theirs = trl_rewards.get_soft_overlong_punishment(12, 5)([[1] * n for n in lengths])
    assert ours == pytest.approx(theirs, abs=1e-7)


def test_soft_overlong_punishment_rejects_a_cache_outside_the_budget():
    for cache in (0, 11):
        with pytest.raises(ValueError, match=r"must be in \[1, max_len=10\]"):
            soft_overlong_punishment(torch.tensor([3]), 10, cache)


# --------------------------------------------------------------------------- k1.5 surrogate loss
def _rollout_groups(model, tok, k=4, seed=0):
    prompts = [[tok.bos_token_id] + tok.encode("12+34=", add_special_tokens=False),
               [tok.bos_token_id] + tok.encode("7+8=", add_special_tokens=False)]  # different lengths: left padding
    rollout = generate(model, tok, prompts, num_samples=k, max_new_tokens=5, temperature=1.0, seed=seed)
    groups = []
    for i, prompt in enumerate(prompts):
        samples = [PartialResponse(prompt, response, 0, True) for response in rollout.response_token_lists()[i * k:(i + 1) * k]]
        groups.append(RolloutGroup(None, i, samples))
    return groups


def test_tau_zero_gradient_equals_reinforce_with_mean_baseline_by_hand(tiny):
    model, tok = tiny
    k = 4
    groups = _rollout_groups(model, tok, k)
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    # litzoo: padded batch -> per-token log-probs -> k1.5 loss with tau = 0
    packed = pack_groups(groups, tok.pad_token_id)
    log_probs = masked_sum(
        token_log_probs(model, packed["input_ids"], packed["attention_mask"], packed["prompt_width"]), packed["grad_mask"]
    ).view(2, k)
    loss, _ = kimi_policy_loss(log_probs, log_probs.detach() + 3.0, rewards, tau=0.0)
    params = list(model.parameters())
    ours = torch.autograd.grad(loss, params)
    # by hand: -(1/P) sum_p (1/k) sum_j (r_j - mean_j r) grad log pi(y_j | x_p), one sequence at a time
    expected = [torch.zeros_like(p) for p in params]
    for p_idx, group in enumerate(groups):
        r_bar = rewards[p_idx].mean()
        for j, sample in enumerate(group.samples):
            grads = torch.autograd.grad(manual_token_log_probs(model, sample.prompt_ids, sample.response_ids).sum(), params)
            for e, g in zip(expected, grads):
                e -= (rewards[p_idx, j] - r_bar) / (2 * k) * g
    assert any(e.abs().max() > 1e-4 for e in expected)  # the check has something to compare
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-4)


def test_squared_log_ratio_and_its_gradient_vanish_at_the_reference_policy(tiny):
    model, tok = tiny
    k = 4
    groups = _rollout_groups(model, tok, k, seed=1)
    packed = pack_groups(groups, tok.pad_token_id)
    ref = copy.deepcopy(model)
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])

    def loss_and_grads(policy, tau):
        lp = masked_sum(token_log_probs(policy, packed["input_ids"], packed["attention_mask"], packed["prompt_width"]),
                        packed["grad_mask"]).view(2, k)
        with torch.no_grad():
            lp_ref = masked_sum(token_log_probs(ref, packed["input_ids"], packed["attention_mask"], packed["prompt_width"]),
                                packed["grad_mask"]).view(2, k)
        loss, parts = kimi_policy_loss(lp, lp_ref, rewards, tau)
        return loss, parts, torch.autograd.grad(loss, list(policy.parameters())), lp, lp_ref

    # pi = pi_ref: the loss with tau is the tau = 0 loss, same value, same gradient
    loss_tau, parts, grads_tau, _, _ = loss_and_grads(model, tau=2.0)
    loss_0, _, grads_0, _, _ = loss_and_grads(model, tau=0.0)
    assert parts["log_ratio_sq"] == 0.0
    assert loss_tau.item() == loss_0.item()
    for a, b in zip(grads_tau, grads_0):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # away from pi_ref it is (tau/2) * mean (log pi - log pi_ref)^2 and pulls back
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.lm_head.weight.add_(0.05 * torch.randn_like(moved.lm_head.weight))
    loss_tau, parts, grads_tau, lp, lp_ref = loss_and_grads(moved, tau=2.0)
    loss_0, _, grads_0, _, _ = loss_and_grads(moved, tau=0.0)
    expected_term = (2.0 / 2) * ((lp.detach() - lp_ref) ** 2).mean()
    assert parts["log_ratio_sq"] > 0
    torch.testing.assert_close(loss_tau - loss_0, expected_term)
    assert max((a - b).abs().max() for a, b in zip(grads_tau, grads_0)) > 1e-4


def test_kimi_loss_value_on_hand_computed_numbers():
    log_probs = torch.tensor([[-1.0, -2.0], [-3.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0], [-3.0, -0.0]])
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    loss, parts = kimi_policy_loss(log_probs, ref, rewards, tau=0.5)
    # problem 1: adv (0.5, -0.5): pg = -(0.5 * -1 + -0.5 * -2) / 2 = -0.25; sq = (0.25 + 0) / 2
    # problem 2: adv 0: pg = 0; sq = (0 + 1) / 2
    expected = ((-0.25 + 0.25 * 0.125) + (0.0 + 0.25 * 0.5)) / 2
    assert loss.item() == pytest.approx(expected)
    assert parts["advantages"].tolist() == [[0.5, -0.5], [0.0, 0.0]]


def test_kimi_loss_rejects_bad_shapes_and_negative_tau():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\(problems, k\)"):
        kimi_policy_loss(x, x, torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match="tau"):
        kimi_policy_loss(x, x, x, -1.0)


# --------------------------------------------------------------------------- DPO
def test_dpo_loss_is_log2_at_the_reference_and_follows_the_formula():
    chosen, rejected = torch.tensor([-3.0, -5.0], requires_grad=True), torch.tensor([-4.0, -2.0], requires_grad=True)
    loss, parts = dpo_loss(chosen, rejected, chosen.detach(), rejected.detach(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    ref_c, ref_r = torch.tensor([-3.5, -5.0]), torch.tensor([-4.0, -1.0])
    loss, parts = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5)
    margins = 0.5 * torch.tensor([(-3.0 + 3.5) - (-4.0 + 4.0), (-5.0 + 5.0) - (-2.0 + 1.0)])
    assert loss.item() == pytest.approx(-F.logsigmoid(margins).mean().item())
    assert parts["accuracy"].item() == 1.0
    loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected


def test_dpo_rejects_non_positive_beta():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
