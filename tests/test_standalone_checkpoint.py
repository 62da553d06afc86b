"""Causal-LM checkpoints stand alone (issue 15, item 6): a KimiRL checkpoint carries its policy's config and
tokenizer, so it loads, exports and resumes after the SFT folder it started from (``pretrained_path``) was deleted or
overwritten by another SFT export; an older checkpoint without them names the missing folder and the fix."""

import contextlib
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_helpers import TINY_TEST_QWEN2
from transformers import AutoModelForCausalLM, AutoTokenizer

from litzoo.base import CheckpointError, load_checkpoint, restoring_from
from litzoo.bases.causal_lm import POLICY_KEY
from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.modules.cot_sft import CoTSFT
from litzoo.modules.kimi_rl import KimiRL
from litzoo.reasoning.generation import generate
from litzoo.reasoning.policy import encode_prompt, policy_spec, policy_spec_differences

ADD = {"tasks": ["arithmetic"], "task_options": {"arithmetic": {"ops": "+"}}}
PROMPTS = ["12+34=", "7+8=", "50+5="]
RL = {"k": 3, "max_new_tokens": 8, "segment_tokens": 4, "tau": 0.5, "iteration_steps": 3, "eval_k": 0, "lr": 1e-3}


def _trainer(root, steps, callbacks=()):
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=bool(callbacks),
                     callbacks=list(callbacks), limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
                     enable_progress_bar=False, enable_model_summary=False)


def _rl_data():
    return ReasoningDataModule(**ADD, difficulties=[1, 2], trace="direct", mode="rl", num_train=100, num_val=4,
                               batch_size=2, rl_steps_per_epoch=50)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """CoTSFT (3 steps) -> export ``sft/`` -> KimiRL from that folder, 4 steps, checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("standalone")
    torch.manual_seed(0)
    sft = CoTSFT(model_config=TINY_TEST_QWEN2, warmup_steps=0, eval_max_new_tokens=8)
    _trainer(root / "sft_run", 3).fit(sft, ReasoningDataModule(**ADD, difficulties=[2], trace="direct", num_train=32,
                                                               num_val=4, batch_size=8))
    sft.export(root / "sft")
    torch.manual_seed(0)
    rl = KimiRL(pretrained_path=str(root / "sft"), **RL)
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, save_top_k=-1)
    _trainer(root / "rl_run", 4, [checkpoints]).fit(rl, _rl_data())
    rl.eval()
    return {"root": root, "sft": root / "sft", "mid": root / "ckpt" / "epoch=0-step=2.ckpt",
            "last": root / "ckpt" / "epoch=0-step=4.ckpt", "state": _state(rl), "ref": _state(rl.ref_policy),
            "ref_step": rl._ref_step, "answers": rl.answer(PROMPTS, max_new_tokens=8)}


@contextlib.contextmanager
def _sft_folder(run, replacement=None):
    """The run's SFT folder is gone (``replacement=None``) or holds ``replacement``'s export, for the duration."""
    saved = run["root"] / "sft_saved"
    run["sft"].rename(saved)
    try:
        if replacement is not None:
            replacement.export(run["sft"])
        yield
    finally:
        shutil.rmtree(run["sft"], ignore_errors=True)
        saved.rename(run["sft"])


def _other_sft():
    """A different SFT export: another width, another tokenizer (one more character)."""
    torch.manual_seed(1)
    return CoTSFT(model_config={**TINY_TEST_QWEN2, "hidden_size": 16, "intermediate_size": 32}, extra_chars="@")


def test_the_checkpoint_carries_plain_config_and_tokenizer_of_the_policy_it_was_trained_with(run):
    checkpoint = load_checkpoint(run["last"])  # weights_only=True
    spec = checkpoint[POLICY_KEY]
    assert spec["config"]["hidden_size"] == TINY_TEST_QWEN2["hidden_size"]
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(spec["tokenizer_files"])
    # a module built from the intact folder has the same policy: a plain resume does not rebuild it
    fresh = KimiRL(pretrained_path=str(run["sft"]), **RL)
    assert policy_spec_differences(policy_spec(fresh.policy, fresh.tokenizer), spec) == []


@pytest.mark.parametrize("folder", ["deleted", "overwritten"])
def test_load_and_export_without_the_sft_folder_give_the_trained_policy_and_its_reference(run, folder, tmp_path):
    with _sft_folder(run, None if folder == "deleted" else _other_sft()):
        loaded = KimiRL.load_from_checkpoint(run["last"]).eval()
        _assert_same(_state(loaded), run["state"])
        _assert_same(_state(loaded.ref_policy), run["ref"])  # pi_ref: the saved one, not a copy of the policy
        assert loaded._ref_step == run["ref_step"] == 3
        assert loaded.answer(PROMPTS, max_new_tokens=8) == run["answers"]
        out = loaded.export(tmp_path / "export")
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    ids = [encode_prompt(tok, p) for p in PROMPTS]
    assert generate(model, tok, ids, greedy=True, max_new_tokens=8).texts == run["answers"]


@pytest.mark.parametrize("folder", ["deleted", "overwritten"])
def test_fit_resumes_without_the_sft_folder_exactly_as_the_uninterrupted_run(run, folder, tmp_path):
    other = None if folder == "deleted" else _other_sft()
    with _sft_folder(run, other):
        if other is None:  # how train.py fit --ckpt_path builds the module (the folder's path is in the hparams)
            with restoring_from(run["mid"]):
                rl = KimiRL(pretrained_path=str(run["sft"]), **RL)
        else:  # a module of the new folder's policy: the checkpoint's replaces it, with a warning saying so
            rl = KimiRL(pretrained_path=str(run["sft"]), **RL)
            assert rl.policy.config.hidden_size == 16
        warns = pytest.warns(UserWarning, match="hidden_size.*tokenizer") if other else contextlib.nullcontext()
        with warns:
            _trainer(tmp_path, 4).fit(rl, _rl_data(), ckpt_path=run["mid"])
    _assert_same(_state(rl), run["state"])
    _assert_same(_state(rl.ref_policy), run["ref"])


def test_an_old_checkpoint_without_its_folder_names_the_folder_and_the_pretrained_path_fix(run, tmp_path):
    checkpoint = load_checkpoint(run["last"])
    del checkpoint[POLICY_KEY]  # as written before checkpoints carried their policy
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    moved = tmp_path / "sft_moved"
    shutil.copytree(run["sft"], moved)
    with _sft_folder(run):
        with pytest.raises(CheckpointError, match=rf"pretrained_path='{run['sft']}'.*is gone.*"
                                                  r"load_from_checkpoint\(ckpt, pretrained_path="):
            KimiRL.load_from_checkpoint(old)
        loaded = KimiRL.load_from_checkpoint(old, pretrained_path=str(moved))  # the fix the message gives
    _assert_same(_state(loaded), run["state"])


def _train_py_main(*args: str):
    """``train.main(args)`` in-process (train.py imported from the repository root)."""
    import sys

    root = str(Path(__file__).resolve().parents[1])
    argv, sys.argv = sys.argv, ["train.py"]
    sys.path.insert(0, root)
    try:
        import train

        return train.main(list(args))
    finally:
        sys.path.remove(root)
        sys.argv = argv


def test_train_py_resumes_with_the_sft_folder_gone(run, tmp_path):
    # LightningCLI applies the checkpoint's hyperparameters, pretrained_path included: the module must not need it.
    rl_args = [f"--model.init_args.{k}={v}" for k, v in RL.items()]
    data = {**ADD, "difficulties": [1, 2], "trace": "direct", "mode": "rl", "num_train": 100, "num_val": 4,
            "batch_size": 2, "rl_steps_per_epoch": 50}
    checkpoint = load_checkpoint(run["mid"])
    checkpoint["hyper_parameters"]["_class_path"] = "litzoo.modules.kimi_rl.KimiRL"  # as a train.py run records it
    torch.save(checkpoint, tmp_path / "mid.ckpt")
    with _sft_folder(run):
        cli = _train_py_main(
            "fit", "--seed_everything", "0", "--model", "litzoo.modules.kimi_rl.KimiRL",
            "--model.init_args.pretrained_path", str(run["sft"]), *rl_args,
            "--data", "litzoo.datamodules.reasoning.ReasoningDataModule", "--data.init_args", str(data),
            "--trainer.max_steps", "4", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(tmp_path / "mid.ckpt"))
    _assert_same(_state(cli.model), run["state"])


def test_a_module_of_a_missing_folder_is_refused_at_construction_pointing_to_the_checkpoint_route(tmp_path):
    with pytest.raises(ValueError, match=r"'.*nowhere'.*KimiRL\.load_from_checkpoint\(ckpt\) or train\.py fit"):
        KimiRL(pretrained_path=str(tmp_path / "nowhere"), **RL)


def test_a_cot_sft_checkpoint_of_a_fine_tuned_folder_loads_after_the_folder_was_deleted(run, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(run["sft"], base)
    torch.manual_seed(0)
    sft = CoTSFT(pretrained_path=str(base), warmup_steps=0, eval_max_new_tokens=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, 2, [checkpoint]).fit(sft, ReasoningDataModule(**ADD, difficulties=[2], trace="direct",
                                                                     num_train=16, num_val=4, batch_size=8))
    shutil.rmtree(base)
    loaded = CoTSFT.load_from_checkpoint(checkpoint.last_model_path)
    _assert_same(_state(loaded), _state(sft))
    assert loaded.answer(PROMPTS, max_new_tokens=8) == sft.eval().answer(PROMPTS, max_new_tokens=8)
