"""Tests for litzoo/reasoning/rollout.py: generation, per-token log-probs, partial rollouts, policy I/O."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from litzoo.reasoning import get_task
from litzoo.reasoning.losses import masked_sum
from litzoo.reasoning.rollout import (
    LevelMeter,
    PartialResponse,
    PartialRolloutBuffer,
    RolloutGroup,
    build_policy,
    continue_responses,
    encode_prompt,
    encode_response,
    generate,
    pack_groups,
    save_policy,
    score,
    token_log_probs,
)

SMALL = {"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return build_policy(SMALL)


def _never_stopping(model, tok):
    """The same model with eos masked out of its logits (a hook), so responses run to the token budget."""
    handle = model.lm_head.register_forward_hook(
        lambda mod, inp, out: out.index_fill(-1, torch.tensor([tok.eos_token_id]), -1e4)
    )
    return model, handle


def _manual_token_log_probs(model, prompt, response, temperature):
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return F.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def test_generated_log_probs_match_an_unpadded_manual_forward(policy):
    model, tok = policy
    prompts = [encode_prompt(tok, "12+34="), encode_prompt(tok, "maxgap 3 9 1 7="), encode_prompt(tok, "5+5=")]
    rollout = generate(model, tok, prompts, num_samples=2, max_new_tokens=12, temperature=0.7, seed=3)
    ours = token_log_probs(model, rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1], 0.7)
    for row, response in enumerate(rollout.response_token_lists()):
        manual = _manual_token_log_probs(model, prompts[row // 2], response, 0.7)
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


def test_partial_rollout_continues_exactly_where_it_stopped(policy):
    model, tok = policy
    never, handle = _never_stopping(model, tok)
    try:
        prompts = [encode_prompt(tok, "12+34="), encode_prompt(tok, "9+9=")]
        full = generate(never, tok, prompts, greedy=True, max_new_tokens=10).response_token_lists()
        items = [PartialResponse(p) for p in prompts]
        segments = []
        for _ in range(3):  # 4 + 4 + 2 tokens under a 10-token cap
            continue_responses(never, tok, items, segment_tokens=4, max_response_tokens=10, greedy=True)
            segments.append([(it.segment_start, len(it.response_ids), it.finished) for it in items])
    finally:
        handle.remove()
    assert [it.response_ids for it in items] == full
    assert segments == [[(0, 4, False)] * 2, [(4, 8, False)] * 2, [(8, 10, True)] * 2]
    assert items[0].grad_mask == [0] * 8 + [1] * 2


def test_only_the_newest_segment_gets_gradient(policy):
    model, tok = policy
    prompt = encode_prompt(tok, "12+34=")
    old, new = tok.encode("\n4+2", add_special_tokens=False), tok.encode("=6 w6", add_special_tokens=False)
    item = PartialResponse(prompt, old + new, segment_start=len(old), finished=True)
    other = PartialResponse(encode_prompt(tok, "1+1="), tok.encode("#2", add_special_tokens=False), 0, True)
    packed = pack_groups([RolloutGroup(None, 0, [item, other])], tok.pad_token_id)
    seq = masked_sum(token_log_probs(model, packed["input_ids"], packed["attention_mask"], packed["prompt_width"]),
                     packed["grad_mask"])
    params = list(model.parameters())
    ours = torch.autograd.grad(seq[0], params)
    # by hand: log pi of the new tokens only, the old segment as plain context
    manual = _manual_token_log_probs(model, prompt, old + new, 1.0)
    only_new = torch.autograd.grad(manual[len(old):].sum(), params, retain_graph=True)
    with_old = torch.autograd.grad(manual.sum(), params)
    torch.testing.assert_close(seq[0], manual[len(old):].sum())
    for a, b in zip(ours, only_new):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert max((a - b).abs().max() for a, b in zip(ours, with_old)) > 1e-4  # the old tokens would have counted
    assert packed["lengths"].tolist() == [len(old) + len(new), 2]


def test_partial_rollout_buffer_hands_out_groups_only_when_all_k_are_done_and_survives_a_checkpoint(policy):
    model, tok = policy
    never, handle = _never_stopping(model, tok)
    task = get_task("arithmetic")
    try:
        problem = task.generate(2, 0)
        buffer = PartialRolloutBuffer()
        buffer.add([RolloutGroup(problem, 7, [PartialResponse(encode_prompt(tok, problem.prompt)) for _ in range(3)])])
        buffer.step(never, tok, segment_tokens=3, max_response_tokens=5, temperature=1.0, seed=0)
        assert buffer.pop_finished() == [] and len(buffer) == 1
        restored = PartialRolloutBuffer()
        restored.load_state_dict(buffer.state_dict())
        restored.step(never, tok, segment_tokens=3, max_response_tokens=5, temperature=1.0, seed=1)
    finally:
        handle.remove()
    (group,) = restored.pop_finished()
    assert group.problem == problem and group.problem_id == 7 and len(restored) == 0
    assert all(len(s.response_ids) == 5 and s.segment_start == 3 for s in group.samples)


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


def test_export_round_trip_reloads_with_auto_classes_and_same_greedy_tokens(policy, tmp_path):
    model, tok = policy
    save_policy(model, tok, tmp_path)
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    text = "combsum 2 3 6 7 target 7=\n2 r5\n#2 2 3;7"
    assert tok2.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert tok2.decode(tok.encode(text, add_special_tokens=False)) == text
    prompts = [encode_prompt(tok, "12+34="), encode_prompt(tok, "maxgap 1 5 2=")]
    a = generate(model, tok, prompts, greedy=True, max_new_tokens=12)
    b = model2.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=12, do_sample=False)
    assert b[0, len(prompts[0]):].tolist()[: int(a.lengths[0])] == a.response_token_lists()[0]
    assert generate(model2, tok2, prompts, greedy=True, max_new_tokens=12).texts == a.texts


def test_build_policy_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not a local folder"):
        build_policy(pretrained_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="vocab_size"):
        build_policy({**SMALL, "vocab_size": 10})
    with pytest.raises(ValueError, match="model_type='no_such_arch'"):
        build_policy({**SMALL, "model_type": "no_such_arch"})


def test_generate_refuses_prompts_longer_than_the_model_positions(policy):
    model, tok = policy
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        generate(model, tok, [encode_prompt(tok, "1" * 100)], max_new_tokens=64)


def test_encode_response_ends_with_eos_and_level_meter_sums_per_level():
    tok = build_policy(SMALL)[1]
    assert encode_response(tok, "#5")[-1] == tok.eos_token_id
    meter = LevelMeter(("correct", "length"))
    meter.add(["a_d1", "a_d2", "a_d1"], correct=torch.tensor([1.0, 0.0, 0.0]), length=[3, 4, 5])
    assert meter.table(["a_d1", "a_d2", "b_d1"]).tolist() == [[2, 1, 8], [1, 0, 4], [0, 0, 0]]


def test_level_meter_summarize_gives_overall_and_per_level_means_over_ranks():
    meter = LevelMeter(("correct", "length"))
    meter.add(["a_d1", "a_d2", "a_d1"], correct=torch.tensor([1.0, 0.0, 0.0]), length=[3, 4, 5])
    # A fake 2-rank reduce: the other rank saw the same rows again.
    stats = meter.summarize(["a_d1", "a_d2", "b_d1"], reduce=lambda t: t * 2)
    assert stats["correct"].item() == 1 / 3 and stats["length"].item() == 4.0
    assert stats["correct/a_d1"].item() == 0.5 and stats["length/a_d2"].item() == 4.0
    assert "correct/b_d1" not in stats  # nothing seen at that level: no 0/0
    assert meter.sums == {} and meter.summarize() == {}  # reset after summarizing
