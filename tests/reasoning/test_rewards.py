"""Tests for litzoo/reasoning/rewards.py: verifier scores of sampled responses."""

from litzoo.reasoning import get_task
from litzoo.reasoning.generation import generate
from litzoo.reasoning.policy import encode_prompt
from litzoo.reasoning.rewards import score


def test_verifier_scores_malformed_answers_zero_without_raising():
    task = get_task("arithmetic")
    p = task.make_problem(47, 38, "+")
    texts = ["#85", "\n7+8+0=15 w5 c1\n#85", "#86", "85", "#", "#8 5", "#85#", "##", "", "#" + "9" * 5000,
             "#\u0668\u0665", "#-", "#+85", None]
    rewards = score([p] * len(texts), texts)
    assert rewards.tolist() == [1.0, 1.0] + [0.0] * (len(texts) - 2)


def test_random_model_answers_score_zero_not_crash(policy):
    model, tok = policy
    problems = [get_task(name).generate(2, 0) for name in ("arithmetic", "max_gap", "combination_sum")]
    rollout = generate(model, tok, [encode_prompt(tok, p.prompt) for p in problems], num_samples=8, max_new_tokens=16, seed=0)
    rewards = score([p for p in problems for _ in range(8)], rollout.texts)
    assert rewards.shape == (24,) and set(rewards.tolist()) <= {0.0, 1.0}
