"""Tests for litzoo/reasoning/partial_rollout.py: continued segments, gradient on the newest one, the buffer."""

import torch
from lm_helpers import manual_token_log_probs, never_stop

from litzoo.reasoning import get_task
from litzoo.reasoning.generation import generate, token_log_probs
from litzoo.reasoning.losses import masked_sum
from litzoo.reasoning.partial_rollout import (
    PartialResponse,
    PartialRolloutBuffer,
    RolloutGroup,
    continue_responses,
    pack_groups,
)
from litzoo.reasoning.policy import encode_prompt


def test_partial_rollout_continues_exactly_where_it_stopped(policy):
    model, tok = policy
    handle = never_stop(model, tok)
    try:
        prompts = [encode_prompt(tok, "12+34="), encode_prompt(tok, "9+9=")]
        full = generate(model, tok, prompts, greedy=True, max_new_tokens=10).response_token_lists()
        items = [PartialResponse(p) for p in prompts]
        segments = []
        for _ in range(3):  # 4 + 4 + 2 tokens under a 10-token cap
            continue_responses(model, tok, items, segment_tokens=4, max_response_tokens=10, greedy=True)
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
    manual = manual_token_log_probs(model, prompt, old + new, 1.0)
    only_new = torch.autograd.grad(manual[len(old):].sum(), params, retain_graph=True)
    with_old = torch.autograd.grad(manual.sum(), params)
    torch.testing.assert_close(seq[0], manual[len(old):].sum())
    for a, b in zip(ours, only_new):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert max((a - b).abs().max() for a, b in zip(ours, with_old)) > 1e-4  # the old tokens would have counted
    assert packed["lengths"].tolist() == [len(old) + len(new), 2]


def test_partial_rollout_buffer_hands_out_groups_only_when_all_k_are_done_and_survives_a_checkpoint(policy):
    model, tok = policy
    handle = never_stop(model, tok)
    task = get_task("arithmetic")
    try:
        problem = task.generate(2, 0)
        buffer = PartialRolloutBuffer()
        buffer.add([RolloutGroup(problem, 7, [PartialResponse(encode_prompt(tok, problem.prompt)) for _ in range(3)])])
        buffer.step(model, tok, segment_tokens=3, max_response_tokens=5, temperature=1.0, seed=0)
        assert buffer.pop_finished() == [] and len(buffer) == 1
        restored = PartialRolloutBuffer()
        restored.load_state_dict(buffer.state_dict())
        restored.step(model, tok, segment_tokens=3, max_response_tokens=5, temperature=1.0, seed=1)
    finally:
        handle.remove()
    (group,) = restored.pop_finished()
    assert group.problem == problem and group.problem_id == 7 and len(restored) == 0
    assert all(len(s.response_ids) == 5 and s.segment_start == 3 for s in group.samples)
