"""Tests for litzoo/modules/cot_sft.py."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_helpers import TINY_TEST_QWEN2
from transformers import AutoModelForCausalLM, AutoTokenizer

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.export import export_checkpoint
from litzoo.modules.cot_sft import CoTSFT
from litzoo.reasoning import get_task
from litzoo.reasoning.generation import generate
from litzoo.reasoning.policy import encode_prompt

ADD = {"tasks": ["arithmetic"], "task_options": {"arithmetic": {"ops": "+"}}}


def _trainer(tmp_path, steps, **kwargs):
    kwargs = {"logger": False, "enable_checkpointing": False, **kwargs}
    return L.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs)


def test_sft_loss_is_the_mean_nll_of_the_response_tokens_only():
    torch.manual_seed(0)
    module = CoTSFT(model_config=TINY_TEST_QWEN2)
    dm = ReasoningDataModule(**ADD, difficulties=[2], num_train=16, num_val=4, batch_size=4)
    dm.tokenizer = module.tokenizer
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    nll, count = 0.0, 0
    for problem, ids, mask in zip(batch["problems"].problems, batch["input_ids"], batch["attention_mask"]):
        n, start = int(mask.sum()), len(encode_prompt(module.tokenizer, problem.prompt))
        logits = module.policy(input_ids=ids[None, :n]).logits[0]  # unpadded, independent of the batch
        log_probs = F.log_softmax(logits[start - 1:n - 1].float(), -1)
        nll -= log_probs.gather(-1, ids[start:n, None]).sum().item()
        count += n - start
    assert module.sft_loss(batch).item() == pytest.approx(nll / count, rel=1e-5)


def test_validation_logs_greedy_accuracy_per_level_that_matches_the_verifier(tmp_path):
    torch.manual_seed(0)
    module = CoTSFT(model_config=TINY_TEST_QWEN2, lr=3e-3, warmup_steps=5, eval_max_new_tokens=8)
    dm = ReasoningDataModule(**ADD, difficulties=[1, 2], trace="direct", num_train=200, num_val=40, batch_size=32)
    trainer = _trainer(tmp_path, 150, limit_val_batches=0)
    before = _trainer(tmp_path, 0).validate(module, dm, verbose=False)[0]
    trainer.fit(module, dm)
    after = _trainer(tmp_path, 0).validate(module, dm, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"] - 0.5  # it learns from the traces
    task = get_task("arithmetic")
    for d in (1, 2):
        problems = [p for p in dm.val_problems if p.difficulty == d]
        answers = module.answer([p.prompt for p in problems], max_new_tokens=8)
        accuracy = sum(task.verify(p, a) for p, a in zip(problems, answers)) / len(problems)
        assert after[f"val/pass@1/arithmetic_d{d}"] == pytest.approx(accuracy)
    assert after["val/pass@1/arithmetic_d1"] > 0.1  # one-digit sums are learnt first


def test_checkpoint_export_reloads_with_auto_classes_and_generates_the_same_tokens(tmp_path):
    torch.manual_seed(0)
    module = CoTSFT(model_config=TINY_TEST_QWEN2, eval_max_new_tokens=16)
    dm = ReasoningDataModule(**ADD, difficulties=[2], num_train=32, num_val=4, batch_size=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, 2, enable_checkpointing=True, callbacks=[checkpoint], limit_val_batches=0).fit(module, dm)
    out = export_checkpoint(checkpoint.last_model_path, tmp_path / "export")  # load_from_checkpoint(weights_only)
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompts = ["12+34=", "90+9="]
    ids = [encode_prompt(tok, p) for p in prompts]
    ours = module.answer(prompts, max_new_tokens=16)
    assert generate(model, tok, ids, greedy=True, max_new_tokens=16).texts == ours
    raw = model.generate(input_ids=torch.tensor([ids[0]]), do_sample=False, max_new_tokens=16)
    assert tok.decode(raw[0, len(ids[0]):], skip_special_tokens=True) == ours[0]


def test_rl_batches_and_bad_arguments_are_refused(tmp_path):
    module = CoTSFT(model_config=TINY_TEST_QWEN2)
    dm = ReasoningDataModule(**ADD, difficulties=[2], num_train=16, num_val=4, batch_size=4, mode="rl")
    with pytest.raises(ValueError, match="mode='sft'"):
        _trainer(tmp_path, 1, limit_val_batches=0).fit(module, dm)
    with pytest.raises(ValueError, match="lr=0"):
        CoTSFT(model_config=TINY_TEST_QWEN2, lr=0)
    with pytest.raises(ValueError, match="not a local folder"):
        CoTSFT(pretrained_path=str(tmp_path / "nothing"))


def test_traces_longer_than_the_position_table_are_rejected_naming_the_limit():
    module = CoTSFT(model_config={**TINY_TEST_QWEN2, "max_position_embeddings": 16})
    dm = ReasoningDataModule(**ADD, difficulties=[2], num_train=4, num_val=4, batch_size=4)
    dm.tokenizer = module.tokenizer
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] > 16  # 2-digit addition traces are longer than 16 tokens
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        module.sft_loss(batch)
