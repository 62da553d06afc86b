"""LoRA on the causal-LM modules (CoTSFT, KimiRL): only adapters train, exports reload with peft/transformers,
resume restores the adapters bit for bit, KimiRL's pi_ref is the base with the adapters off (no copy)."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_helpers import TINY_TEST_QWEN2, tiny_policy
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.model_card import usage_code
from litzoo.modules.cot_sft import CoTSFT
from litzoo.modules.kimi_rl import KimiRL
from litzoo.reasoning.generation import generate, token_log_probs
from litzoo.reasoning.policy import encode_prompt

ADD = {"tasks": ["arithmetic"], "task_options": {"arithmetic": {"ops": "+"}}, "difficulties": [2]}
LORA = {"lora_rank": 4, "lora_alpha": 8.0}


def _trainer(tmp_path, steps, **kwargs):
    kwargs = {"logger": False, "enable_checkpointing": False, "limit_val_batches": 0, **kwargs}
    return L.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs)


def _sft_data():
    return ReasoningDataModule(**ADD, num_train=32, num_val=4, batch_size=8, seed=0)


def _fit_sft(tmp_path, steps, ckpt_path=None, callbacks=()):
    torch.manual_seed(0)
    module = CoTSFT(model_config=TINY_TEST_QWEN2, lr=1e-2, warmup_steps=0, total_steps=4,
                    eval_max_new_tokens=8, **LORA)
    trainer = _trainer(tmp_path, steps, callbacks=list(callbacks), enable_checkpointing=bool(callbacks))
    trainer.fit(module, _sft_data(), ckpt_path=ckpt_path)
    return module, trainer


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_bad_lora_arguments_are_refused_naming_the_modules_there_are():
    with pytest.raises(ValueError, match="lora_rank=-1"):
        CoTSFT(model_config=TINY_TEST_QWEN2, lora_rank=-1)
    with pytest.raises(ValueError, match="lora_dropout"):
        KimiRL(model_config=TINY_TEST_QWEN2, lora_rank=2, lora_dropout=1.0)
    with pytest.raises(ValueError, match=r"\['qkv'\] match no module.*q_proj.*up_proj"):
        CoTSFT(model_config=TINY_TEST_QWEN2, lora_rank=2, lora_target_modules=["qkv"])


def test_sft_lora_trains_only_adapters_and_exports_reload_with_peft_and_merged(tmp_path):
    base, _ = tiny_policy(0)  # the same initial weights as the module's policy (same seed, same build)
    module, trainer = _fit_sft(tmp_path, 3)
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]} == \
        {id(p) for p in module.parameters() if p.requires_grad}
    lora_b = [p for n, p in module.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # the adapters moved from B = 0
    for name, weight in base.state_dict().items():  # the base did not
        assert torch.equal(module.policy.get_base_model().state_dict()[name.replace("proj.", "proj.base_layer.")],
                           weight), name

    out = module.export(tmp_path / "lora")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (4, 8.0, str(out / "base"))
    tok = AutoTokenizer.from_pretrained(out)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base"), out)
    merged = AutoModelForCausalLM.from_pretrained(module.export(tmp_path / "merged", merge_lora=True))
    ids = encode_prompt(tok, "12+34=")
    ours = _logits(module.policy.eval(), ids)
    assert not torch.allclose(ours, _logits(AutoModelForCausalLM.from_pretrained(out / "base"), ids), atol=1e-3)
    torch.testing.assert_close(_logits(reloaded, ids), ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(merged, ids), ours, atol=1e-5, rtol=1e-5)
    prompts = ["12+34=", "90+9="]
    answers = module.answer(prompts, max_new_tokens=8)
    for model in (reloaded, merged):
        assert generate(model, tok, [encode_prompt(tok, p) for p in prompts], greedy=True,
                        max_new_tokens=8).texts == answers
    namespace: dict = {}
    exec(usage_code((out / "README.md").read_text()), namespace)  # noqa: S102 (the card's own lines)
    continued = KimiRL(pretrained_path=str(out), lora_rank=2)  # a LoRA export continues with the adapters merged
    torch.testing.assert_close(_logits(continued.policy.eval(), ids), ours, atol=1e-5, rtol=1e-5)
    assert "PeftModel.from_pretrained" in usage_code((out / "README.md").read_text())
    assert namespace["answer"] == module.answer([namespace["prompt"]], max_new_tokens=8)[0]  # the card's budget


def test_sft_lora_resume_restores_the_adapters_and_repeats_the_run_exactly(tmp_path):
    straight, _ = _fit_sft(tmp_path / "a", 4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
    first, _ = _fit_sft(tmp_path / "b", 2, callbacks=[checkpoint])  # mid-epoch: 4 batches of 8
    loaded = CoTSFT.load_from_checkpoint(checkpoint.last_model_path)  # weights_only
    assert list(first.state_dict()) == list(loaded.state_dict())  # no key missing
    for (name, a), b in zip(first.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == \
        [n for n, p in first.named_parameters() if p.requires_grad]
    resumed, _ = _fit_sft(tmp_path / "c", 4, ckpt_path=checkpoint.last_model_path)
    assert list(straight.state_dict()) == list(resumed.state_dict())  # no key missing
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _fit_rl(tmp_path, steps, callbacks=(), ckpt_path=None, **kwargs):
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=3, max_new_tokens=6, tau=0.5, iteration_steps=2, eval_k=0, lr=1e-2,
                length_penalty_weight=1.0, **LORA)
    dm = ReasoningDataModule(**ADD, trace="direct", mode="rl", num_train=50, num_val=4, batch_size=2,
                             rl_steps_per_epoch=10, seed=0)
    trainer = _trainer(tmp_path, steps, callbacks=list(callbacks), enable_checkpointing=bool(callbacks), **kwargs)
    trainer.fit(rl, dm, ckpt_path=ckpt_path)
    return rl


def test_kimi_rl_lora_reference_is_the_frozen_base_without_a_copy(tmp_path):
    base, tok = tiny_policy(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    rl = _fit_rl(tmp_path, 3, callbacks=[checkpoint])
    assert rl._ref is None  # no second model was made
    ids = torch.tensor([encode_prompt(tok, "12+34=") + tok.encode("46", add_special_tokens=False)])
    mask = torch.ones_like(ids)
    with torch.no_grad(), rl.reference() as ref:
        ref_lp = token_log_probs(ref, ids, mask, 4)
    with torch.no_grad():
        assert torch.equal(ref_lp, token_log_probs(base, ids, mask, 4))  # the base's log-probs exactly
        policy_lp = token_log_probs(rl.policy, ids, mask, 4)  # adapters back on after the context
    assert not torch.allclose(policy_lp, ref_lp, atol=1e-4)
    saved = torch.load(checkpoint.last_model_path, weights_only=True)
    assert saved["kimi_rl"]["ref_state"] is None
    loaded = KimiRL.load_from_checkpoint(checkpoint.last_model_path)
    assert list(rl.state_dict()) == list(loaded.state_dict())  # no key missing
    for (name, a), b in zip(rl.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded._ref is None


def test_kimi_rl_lora_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    straight = _fit_rl(tmp_path / "a", 4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
    _fit_rl(tmp_path / "b", 2, callbacks=[checkpoint])
    resumed = _fit_rl(tmp_path / "c", 4, ckpt_path=checkpoint.last_model_path)
    assert list(straight.state_dict()) == list(resumed.state_dict())  # no key missing
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed._ref is None


def test_kimi_rl_lora_trains_adapters_under_bf16_mixed(tmp_path):
    rl = _fit_rl(tmp_path, 2, precision="bf16-mixed")
    assert all(p.dtype == torch.float32 for p in rl.parameters())
    assert all(torch.isfinite(p).all() for p in rl.parameters())
    assert any(p.abs().sum() > 0 for n, p in rl.named_parameters() if "lora_B" in n)
    assert all(not p.requires_grad for n, p in rl.named_parameters() if "lora_" not in n)


DDP_SCRIPT = """
import json, os, sys
import lightning as L
import torch
sys.path.insert(0, {repo!r})
from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.modules.kimi_rl import KimiRL

torch.set_num_threads(1)


class Record(L.Callback):
    def on_train_end(self, trainer, pl_module):
        lora = {{n: p.detach().double().sum().item() for n, p in pl_module.named_parameters() if "lora_B" in n}}
        with open(os.path.join({out!r}, f"rank{{trainer.global_rank}}.json"), "w") as f:
            json.dump({{"lora_B": lora, "ref": pl_module._ref is None, "step": trainer.global_step}}, f)


torch.manual_seed(0)
rl = KimiRL(model_config={small!r}, k=2, max_new_tokens=6, eval_k=0, lr=1e-2, lora_rank=4, length_penalty_weight=1.0)
dm = ReasoningDataModule(tasks=["arithmetic"], difficulties=[2], trace="direct", mode="rl", num_train=100,
                         num_val=4, batch_size=3, rl_steps_per_epoch=10)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Record()])
trainer.fit(rl, dm)
"""


@pytest.mark.slow  # two fresh Python processes importing torch + transformers: ~20 s
def test_two_process_ddp_keeps_the_adapters_in_sync(tmp_path):
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = tmp_path / "ddp_lora.py"
    repo = Path(__file__).resolve().parents[2]
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(repo=str(repo), out=str(tmp_path), small=TINY_TEST_QWEN2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["step"] == r1["step"] == 3 and r0["ref"] and r1["ref"]
    assert r0["lora_B"] == r1["lora_B"] and any(v != 0 for v in r0["lora_B"].values())  # trained, in sync
