"""Tests for litzoo's sampler (litzoo/reasoning/generation.py ``sample``) against transformers' ``generate``."""

import copy

import lightning as L
import pytest
import torch
from lm_helpers import TINY_TEST_QWEN2, manual_token_log_probs

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.modules.kimi_rl import KimiRL
from litzoo.reasoning.generation import generate, sample, token_log_probs
from litzoo.reasoning.partial_rollout import PartialResponse, continue_responses
from litzoo.reasoning.policy import encode_prompt

TEXTS = ["12+34=", "maxgap 3 9 1 7=", "5+5=", "combsum 2 3 5 target 8="]


@pytest.fixture
def stop_hook(policy):
    """Make the policy emit ``eos`` right after any token whose id is divisible by 7 (deterministic, so greedy
    rows end at different lengths): the embedding records each row's newest input token, the head raises
    ``eos`` after the chosen ones (module hooks, so litzoo's own decoding step sees them too); removed after."""
    model, tok = policy
    last = {}

    def remember(module, args, out):
        last["ids"] = args[0][:, -1]

    def stop(module, args, out):
        out = out.clone()
        out[:, -1, tok.eos_token_id] += 50.0 * (last["ids"] % 7 == 0)
        return out

    handles = [model.get_input_embeddings().register_forward_hook(remember), model.lm_head.register_forward_hook(stop)]
    yield
    for h in handles:
        h.remove()


def _prompts(tok):
    return [encode_prompt(tok, t) for t in TEXTS]


@pytest.mark.parametrize("static_decoder", [True, False])
def test_greedy_equals_transformers_generate_token_for_token(policy, stop_hook, static_decoder):
    model, tok = policy
    ours = sample(model, tok, _prompts(tok), num_samples=2, max_new_tokens=30, greedy=True, static_decoder=static_decoder)
    theirs = generate(model, tok, _prompts(tok), num_samples=2, max_new_tokens=30, greedy=True, sampler="transformers")
    assert sorted(set(ours.lengths.tolist())) == [3, 9]  # rows stop at different steps, so removal happens
    assert torch.equal(ours.response_ids, theirs.response_ids)
    assert torch.equal(ours.response_mask, theirs.response_mask) and torch.equal(ours.finished, theirs.finished)
    assert ours.texts == theirs.texts
    torch.testing.assert_close(ours.log_probs, theirs.log_probs, atol=2e-5, rtol=1e-4)
    # the hand-written decoding step runs peft's LoRA layers too (adapters with non-zero B, so they matter)
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                           init_lora_weights=False))
    ours = sample(lora, tok, _prompts(tok), max_new_tokens=12, greedy=True, static_decoder=static_decoder)
    theirs = generate(lora, tok, _prompts(tok), max_new_tokens=12, greedy=True)
    assert torch.equal(ours.response_ids, theirs.response_ids)
    assert not torch.equal(ours.response_ids, sample(model, tok, _prompts(tok), max_new_tokens=12, greedy=True).response_ids)
    # without the hook nothing stops: every row runs to the budget, still equal
    unhooked = generate(model, tok, _prompts(tok), max_new_tokens=12, greedy=True, sampler="litzoo")
    assert torch.equal(unhooked.response_ids, generate(model, tok, _prompts(tok), max_new_tokens=12, greedy=True).response_ids)


@pytest.mark.parametrize("model_type", ["llama", "mistral"])
def test_other_architectures_greedy_equal_generate(model_type):
    # llama: the hand-written decoding step; mistral (sliding-window config): the model's forward per token
    from lm_helpers import tiny_policy

    from litzoo.reasoning.generation import _StaticDecoder

    model, tok = tiny_policy(model_type=model_type)
    assert (_StaticDecoder.build(model, 1, 1) is not None) == (model_type == "llama")
    ours = sample(model, tok, _prompts(tok), num_samples=2, max_new_tokens=16, greedy=True)
    assert torch.equal(ours.response_ids, generate(model, tok, _prompts(tok), num_samples=2, max_new_tokens=16,
                                                   greedy=True).response_ids)


def test_sampled_log_probs_are_those_of_one_forward_pass(policy):
    model, tok = policy
    prompts = _prompts(tok)
    rollout = sample(model, tok, prompts, num_samples=3, max_new_tokens=16, temperature=0.7, seed=3)
    again = token_log_probs(model, rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1], 0.7)
    torch.testing.assert_close(rollout.log_probs, again * rollout.response_mask, atol=2e-5, rtol=1e-4)
    for row, response in enumerate(rollout.response_token_lists()):
        manual = manual_token_log_probs(model, prompts[row // 3], response, 0.7)
        torch.testing.assert_close(rollout.log_probs[row, : len(response)], manual, atol=2e-5, rtol=1e-4)


def test_first_token_frequencies_follow_the_softmax(policy):
    model, tok = policy
    prompt = encode_prompt(tok, "47+38=")
    n = 4000
    rollout = sample(model, tok, [prompt], num_samples=n, max_new_tokens=1, temperature=1.5, seed=0)
    probs = torch.softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1] / 1.5, -1)
    counts = torch.bincount(rollout.response_ids[:, 0], minlength=probs.numel()).float()
    # each count is Binomial(n, p): within 5 standard deviations (+1 for tiny p)
    assert ((counts - n * probs).abs() <= 5 * (n * probs * (1 - probs)).sqrt() + 1).all()
    assert (counts > 0).sum() > 5  # a spread-out distribution, not a point mass


def test_early_removal_and_batch_company_change_no_sample(policy):
    model, tok = policy
    bias = model.lm_head.register_forward_hook(lambda m, i, o: o + 2.0 * (torch.arange(o.shape[-1]) == tok.eos_token_id))
    try:
        prompts = _prompts(tok)
        kept = sample(model, tok, prompts, num_samples=4, max_new_tokens=24, temperature=1.0, seed=7)
        full = sample(model, tok, prompts, num_samples=4, max_new_tokens=24, temperature=1.0, seed=7, early_removal=False)
        forward = sample(model, tok, prompts, num_samples=4, max_new_tokens=24, temperature=1.0, seed=7,
                         static_decoder=False)
        other = sample(model, tok, prompts[:1] + [encode_prompt(tok, "9+9=")] * 3, num_samples=4, max_new_tokens=24,
                       temperature=1.0, seed=7)
        different = sample(model, tok, prompts, num_samples=4, max_new_tokens=24, temperature=1.0, seed=8)
    finally:
        bias.remove()
    assert 1 < len(set(kept.lengths.tolist())) and kept.finished.any() and not kept.finished.all()
    assert torch.equal(kept.response_ids, full.response_ids) and torch.equal(kept.response_mask, full.response_mask)
    torch.testing.assert_close(kept.log_probs, full.log_probs, atol=2e-5, rtol=1e-4)
    assert torch.equal(kept.response_ids, forward.response_ids)  # the model's own forward per token: the same draws
    torch.testing.assert_close(kept.log_probs, forward.log_probs, atol=2e-5, rtol=1e-4)
    # prompt 0's samples do not depend on what else is in the batch; another seed gives other samples
    n0 = int(kept.lengths[:4].max())
    assert torch.equal(kept.response_ids[:4, :n0], other.response_ids[:4, :n0])
    assert not torch.equal(kept.response_ids, different.response_ids[:, : kept.response_ids.shape[1]])


def test_eos_and_token_budget(policy):
    model, tok = policy
    eos = tok.eos_token_id
    bias = model.lm_head.register_forward_hook(lambda m, i, o: o + 2.0 * (torch.arange(o.shape[-1]) == eos))
    try:
        torch.manual_seed(1)
        before = torch.rand(1)
        torch.manual_seed(1)
        rollout = sample(model, tok, _prompts(tok), num_samples=16, max_new_tokens=10, seed=0)
        assert torch.rand(1) == before  # the caller's RNG is untouched
    finally:
        bias.remove()
    assert rollout.response_ids.shape[1] <= 10 and 0 < int(rollout.finished.sum()) < 64
    for ids, n, done in zip(rollout.response_ids, rollout.lengths.tolist(), rollout.finished.tolist()):
        assert (ids[:n] == eos).nonzero().flatten().tolist() == ([n - 1] if done else [])
        assert done or n == 10  # an unfinished response used the whole budget
        assert (ids[n:] == tok.pad_token_id).all()


def test_partial_rollouts_with_the_litzoo_sampler_continue_exactly(policy, stop_hook):
    model, tok = policy
    items = [PartialResponse(list(p)) for p in _prompts(tok) for _ in range(2)]
    for _ in range(8):  # segments of 4 tokens up to 20: the same greedy text as one call
        continue_responses(model, tok, items, segment_tokens=4, max_response_tokens=20, greedy=True, sampler="litzoo")
    whole = generate(model, tok, _prompts(tok), num_samples=2, max_new_tokens=20, greedy=True)
    assert [it.response_ids for it in items] == whole.response_token_lists()
    assert all(it.finished for it in items)


def test_kimi_rl_step_uses_the_litzoo_sampler_and_refuses_unknown_ones(tmp_path):
    with pytest.raises(ValueError, match="sampler='vllm' must be one of"):
        KimiRL(model_config=TINY_TEST_QWEN2, sampler="vllm")
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=3, max_new_tokens=6, eval_k=0, lr=1e-2)
    assert rl.hparams.sampler == "litzoo"
    before = copy.deepcopy(rl.policy)
    data = ReasoningDataModule(tasks=["arithmetic"], task_options={"arithmetic": {"ops": "+"}}, difficulties=[2],
                               trace="direct", mode="rl", num_train=32, num_val=4, batch_size=2)
    L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
              enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path).fit(rl, data)
    groups = rl.last_groups
    assert len(groups) == 2 and rl.global_step == 1  # one optimizer step on the two finished groups
    # the step's responses are exactly litzoo's samples of the pre-step policy with the step's seed
    redo = sample(before, rl.tokenizer, [g.samples[0].prompt_ids for g in groups], num_samples=3, max_new_tokens=6,
                  temperature=rl.hparams.temperature, seed=rl.last_seed)
    assert [s.response_ids for g in groups for s in g.samples] == redo.response_token_lists()
