"""Tests for litzoo/reasoning/policy.py: building, exporting and reloading a policy; prompt/target encoding."""

import pytest
import torch
from lm_helpers import TINY_TEST_QWEN2
from transformers import AutoModelForCausalLM, AutoTokenizer

from litzoo.reasoning.generation import generate
from litzoo.reasoning.policy import build_policy, encode_prompt, encode_response, save_policy


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
        build_policy({**TINY_TEST_QWEN2, "vocab_size": 10})
    with pytest.raises(ValueError, match="model_type='no_such_arch'"):
        build_policy({**TINY_TEST_QWEN2, "model_type": "no_such_arch"})


def test_encode_response_ends_with_eos(policy):
    tok = policy[1]
    assert encode_response(tok, "#5")[-1] == tok.eos_token_id


def test_exported_tokenizer_adds_bos_so_tok_and_generate_equal_the_modules_greedy_answer(tmp_path):
    """The natural transformers call on an export, ``model.generate(**tok(prompts))``, sees the ids the model
    was trained on (``[bos] + tokens``) and gives the module's greedy answers, batched with padding too."""
    from litzoo.modules import CoTSFT

    module = CoTSFT(model_config=TINY_TEST_QWEN2, eval_max_new_tokens=10)
    module.export(tmp_path / "export")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    tok = AutoTokenizer.from_pretrained(tmp_path / "export")
    prompts = ["47+38=", "maxgap 1 5 2=", "3*4="]
    assert tok(prompts[0])["input_ids"] == encode_prompt(module.tokenizer, prompts[0])
    assert tok(prompts[0])["input_ids"][0] == module.tokenizer.bos_token_id == 1
    # The training ids do not change: litzoo encodes without the tokenizer's special tokens.
    assert [encode_prompt(tok, p) for p in prompts] == [encode_prompt(module.tokenizer, p) for p in prompts]
    expected = module.answer(prompts)
    for prompt, answer in zip(prompts, expected):
        out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=10, do_sample=False)
        assert tok.decode(out[0, len(prompt) + 1:], skip_special_tokens=True) == answer
    batch = tok(prompts, return_tensors="pt", padding=True)  # the export pads on the left, as generate needs
    out = model.generate(**batch, max_new_tokens=10, do_sample=False)
    assert tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True) == expected
    # A policy continued from the export (KimiRL's pretrained_path) exports the same way again.
    model2, tok2 = build_policy(pretrained_path=str(tmp_path / "export"))
    save_policy(model2, tok2, tmp_path / "again")
    assert AutoTokenizer.from_pretrained(tmp_path / "again")(prompts[0])["input_ids"] == encode_prompt(tok2, prompts[0])
