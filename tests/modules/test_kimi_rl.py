"""Tests for litzoo/modules/kimi_rl.py: learning, partial rollouts, length penalty, Lightning plumbing."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lm_helpers import TINY_TEST_QWEN2, never_stop
from transformers import AutoModelForCausalLM, AutoTokenizer

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.export import export_checkpoint
from litzoo.modules.cot_sft import CoTSFT
from litzoo.modules.kimi_rl import KimiRL
from litzoo.reasoning.generation import generate, token_log_probs
from litzoo.reasoning.policy import encode_prompt
from litzoo.reasoning.rewards import score

ADD = {"tasks": ["arithmetic"], "task_options": {"arithmetic": {"ops": "+"}}, "difficulties": [2]}
REPO = Path(__file__).resolve().parents[2]


def _trainer(tmp_path, steps, **kwargs):
    kwargs = {"logger": False, "enable_checkpointing": False, "limit_val_batches": 0, **kwargs}
    return L.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs)


class Recorder(L.Callback):
    """What each training batch did: optimizer step, rewards, finished and pending groups."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        self.rows.append({
            "step": trainer.global_step,
            "finished": len(pl_module.last_groups),
            "pending": len(pl_module.buffer),
            "grad_tokens": [sum(s.grad_mask) for g in pl_module.last_groups for s in g.samples],
            "reward": float(metrics["train/reward"]) if pl_module.last_groups else None,
            "total_reward": float(metrics["train/total_reward"]) if pl_module.last_groups else None,
        })


def _rl_data(**kwargs):
    return ReasoningDataModule(**{**ADD, "trace": "direct", "mode": "rl", "num_train": 200, "num_val": 8,
                                  "batch_size": 2, "rl_steps_per_epoch": 50, **kwargs})


# --------------------------------------------------------------------------- learning
def _accuracy(module, problems, max_new_tokens):
    ids = [encode_prompt(module.tokenizer, p.prompt) for p in problems]
    rollout = generate(module.policy, module.tokenizer, ids, greedy=True, max_new_tokens=max_new_tokens)
    return score(problems, rollout.texts).mean().item(), rollout.lengths.float().mean().item()


def test_kimi_rl_raises_greedy_accuracy_on_its_problems_after_sft_warmup(tmp_path):
    # Fast version of the learning claim: a short SFT warm-up on 64 problems (direct answers) leaves
    # them about 60 % solved; 45 KimiRL steps on the same problems (prioritised by 1 - success rate)
    # solve more of them. The slow tests below measure held-out accuracy after a long-CoT warm-up.
    torch.manual_seed(0)
    sft_data = ReasoningDataModule(**ADD, trace="direct", num_train=64, num_val=200, batch_size=32)
    sft = CoTSFT(lr=3e-3, warmup_steps=10, eval_max_new_tokens=8)
    _trainer(tmp_path, 90).fit(sft, sft_data)
    sft.export(tmp_path / "warmup")
    dm = ReasoningDataModule(**ADD, trace="direct", mode="rl", num_train=64, num_val=200, batch_size=16, prioritized=True)
    dm.setup("fit")
    torch.manual_seed(0)
    rl = KimiRL(pretrained_path=str(tmp_path / "warmup"), k=16, temperature=0.5, max_new_tokens=8, tau=0.1, lr=2e-4,
                iteration_steps=8, eval_k=0)
    before = _accuracy(rl, dm.train_problems, 8)[0]
    _trainer(tmp_path, 45).fit(rl, dm)
    after = _accuracy(rl, dm.train_problems, 8)[0]
    print(f"greedy pass@1 on the 64 RL problems: {before:.3f} -> {after:.3f}")
    assert 0.2 < before < 0.9  # a warm but imperfect start
    assert after >= before + 4 / 64  # at least 4 more of the 64 problems solved greedily


# The slow learning tests share one long-CoT warm-up: CoTSFT on traces of 2-digit addition in which
# 30 % of the traces make a slip, catch it in their check and redo the work (k1.5's "plan, work,
# check, correct" long CoT). Held-out set: 500 problems, disjoint from every training pool.
LONG_COT = {**ADD, "num_train": 4000, "num_val": 500}


@pytest.fixture(scope="module")
def long_cot_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("long_cot")
    torch.manual_seed(0)
    sft = CoTSFT(lr=3e-3, warmup_steps=30, eval_max_new_tokens=160)
    _trainer(tmp, 350).fit(sft, ReasoningDataModule(**LONG_COT, p_mistake=0.3, batch_size=64))
    sft.export(tmp / "sft")
    data = ReasoningDataModule(**LONG_COT, mode="rl", batch_size=16)
    data.setup("fit")
    runs = {"sft": _accuracy(sft, data.val_problems, 160) + (_sampled_length(sft, data),)}
    for name, weight in [("rl", 0.0), ("rl_length_penalty", 1.0)]:
        torch.manual_seed(0)
        rl = KimiRL(pretrained_path=str(tmp / "sft"), k=8, temperature=0.5, max_new_tokens=160, tau=0.1, lr=5e-5,
                    iteration_steps=8, length_penalty_weight=weight, eval_k=0)
        _trainer(tmp, 40).fit(rl, ReasoningDataModule(**LONG_COT, mode="rl", batch_size=16))
        runs[name] = _accuracy(rl, data.val_problems, 160) + (_sampled_length(rl, data),)
    task = data.tasks["arithmetic"]
    runs["clean_trace_length"] = sum(len(task.write_trace(p)) + 1 for p in data.val_problems) / len(data.val_problems)
    print("greedy accuracy / greedy length / sampled length:", runs)
    return runs


def _sampled_length(module, data):
    ids = [encode_prompt(module.tokenizer, p.prompt) for p in data.val_problems[:200]]
    return generate(module.policy, module.tokenizer, ids, num_samples=4, temperature=1.0, max_new_tokens=160,
                    seed=1).lengths.float().mean().item()


@pytest.mark.slow
def test_kimi_rl_takes_held_out_two_digit_addition_to_95_percent(long_cot_runs):
    sft_accuracy, rl_accuracy = long_cot_runs["sft"][0], long_cot_runs["rl"][0]
    assert rl_accuracy >= max(0.95, sft_accuracy + 0.02)  # >= 10 more of the 500 held-out problems


@pytest.mark.slow
def test_length_penalty_shortens_responses_without_losing_accuracy(long_cot_runs):
    sft, plain, penalised = long_cot_runs["sft"], long_cot_runs["rl"], long_cot_runs["rl_length_penalty"]
    clean = long_cot_runs["clean_trace_length"]  # the shortest trace: no slip, no fix
    assert penalised[0] >= max(sft[0], 0.95)  # accuracy kept (it even rises with RL)
    assert penalised[2] <= plain[2] - 2.0  # sampled responses shorter than after the same RL without penalty
    assert penalised[2] - clean <= 0.25 * (sft[2] - clean)  # >= 3/4 of the slip-and-fix detours gone
    assert penalised[1] <= plain[1] + 0.5  # greedy responses not longer either


# --------------------------------------------------------------------------- rollouts and rewards
def test_partial_rollouts_train_each_group_once_all_k_finish_on_the_newest_segment_only(tmp_path):
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=2, max_new_tokens=6, segment_tokens=2, eval_k=0)
    never_stop(rl.policy, rl.tokenizer)
    recorder = Recorder()
    _trainer(tmp_path, 2, callbacks=[recorder]).fit(rl, _rl_data())
    # batch 1, 2: segments 1-2 of the first groups, nothing finished, no optimizer step;
    # batch 3: the first batch's groups reach 6 tokens and are trained on; batch 4: the second batch's.
    assert [r["step"] for r in recorder.rows] == [0, 0, 1, 2]
    assert [r["finished"] for r in recorder.rows] == [0, 0, 2, 2]
    assert [r["pending"] for r in recorder.rows] == [2, 4, 4, 4]
    assert all(n == 2 for r in recorder.rows for n in r["grad_tokens"])  # 6 tokens, gradient on the last 2


def test_length_penalty_joins_the_reward_after_its_warmup(tmp_path):
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=4, max_new_tokens=10, length_penalty_weight=1.0, length_penalty_warmup_steps=2,
                eval_k=0, temperature=1.5)
    recorder = Recorder()
    _trainer(tmp_path, 5, callbacks=[recorder]).fit(rl, _rl_data(batch_size=4))
    rows = recorder.rows
    assert all(r["total_reward"] == r["reward"] for r in rows[:2])  # steps 0, 1: verifier reward only
    # afterwards, with random lengths, the length reward moves the mean (it is < 0 on average for wrong answers)
    assert all(r["total_reward"] < r["reward"] for r in rows[2:])


def test_overlong_punishment_joins_the_reward_of_every_response(tmp_path, monkeypatch):
    import litzoo.modules.kimi_rl as kimi_rl_module
    from litzoo.reasoning.losses import kimi_policy_loss, soft_overlong_punishment
    from litzoo.reasoning.rewards import score

    seen = []  # the (P, k) rewards each step hands to the k1.5 loss

    def spy(log_probs, ref_log_probs, rewards, tau):
        seen.append(rewards.detach().clone())
        return kimi_policy_loss(log_probs, ref_log_probs, rewards, tau)

    class Expected(L.Callback):  # verifier reward + 0.5 x the punishment of each response, from its own length
        def __init__(self):
            self.rewards = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            groups = pl_module.last_groups
            samples = [s for g in groups for s in g.samples]
            correct = score([g.problem for g in groups for _ in g.samples], [s.text for s in samples])
            lengths = torch.tensor([len(s.response_ids) for s in samples])
            self.rewards.append((correct + 0.5 * soft_overlong_punishment(lengths, 10, 6)).view(len(groups), -1))

    monkeypatch.setattr(kimi_rl_module, "kimi_policy_loss", spy)
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=4, max_new_tokens=10, overlong_buffer=6, overlong_penalty=0.5,
                eval_k=0, temperature=1.5)
    recorder, expected = Recorder(), Expected()
    _trainer(tmp_path, 3, callbacks=[recorder, expected]).fit(rl, _rl_data(batch_size=4))
    assert len(seen) == len(expected.rewards) == 3
    for got, want in zip(seen, expected.rewards):  # response by response, not only the mean
        torch.testing.assert_close(got, want.to(got), rtol=0, atol=1e-6)
    assert any((w != w.round()).any() for w in expected.rewards)  # some responses do reach the ramp
    shifts = [r["total_reward"] - r["reward"] for r in recorder.rows]  # and the logged mean shows it
    assert min(shifts) < 0


def _step_grads(tmp_path, monkeypatch, steps, **kwargs):
    """Run ``steps`` KimiRL steps (k=4, 4 prompts) with a verifier patched to a fixed pattern per step; return the
    gradient at each optimizer step, the rows each step's policy forward saw and the logged ``train/pg``."""
    import litzoo.modules.kimi_rl as kimi_rl_module

    patterns = [  # per step, the correct flags of the 4 groups: 2 uniform + 2 mixed, then all uniform
        [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]],
        [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]],
        [[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]],
    ]
    calls, rows, grads, pg = [0], [], [], []

    def verifier(problems, texts):
        pattern = torch.tensor(patterns[calls[0]], dtype=torch.float32).flatten()
        calls[0] += 1
        assert len(texts) == pattern.numel()
        return pattern

    def counted(model, input_ids, *args):
        rows.append(input_ids.shape[0])
        return token_log_probs(model, input_ids, *args)

    class Grads(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads.append([p.grad.clone() for p in pl_module.policy.parameters()])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pg.append(float(trainer.callback_metrics["train/pg"]))

    monkeypatch.setattr(kimi_rl_module, "score", verifier)
    monkeypatch.setattr(kimi_rl_module, "token_log_probs", counted)
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=4, max_new_tokens=8, eval_k=0, temperature=1.5, max_grad_norm=0.0,
                **kwargs)
    _trainer(tmp_path, steps, callbacks=[Grads()]).fit(rl, _rl_data(batch_size=4))
    return grads, rows, pg


def test_skipping_uniform_groups_gives_the_same_policy_gradient_from_the_informative_rows_only(tmp_path, monkeypatch):
    full, full_rows, full_pg = _step_grads(tmp_path / "full", monkeypatch, 3, tau=0.0)
    skip, skip_rows, skip_pg = _step_grads(tmp_path / "skip", monkeypatch, 3, tau=0.0, skip_uniform_groups=True)
    assert full_rows == [16, 16, 16]
    # step 1: 2 mixed groups x 4 samples; step 2: all uniform, yet one group's forward, weighted 0 (sharded ranks
    # must all join the forward/backward); step 3: 2 mixed groups again
    assert skip_rows == [8, 4, 8]
    np.testing.assert_allclose(skip_pg, full_pg, rtol=1e-5, atol=1e-7)  # the logged term counts skipped groups as 0
    assert len(full) == len(skip) == 3  # every step still steps the optimizer, as without skipping
    for got, want in zip(skip, full):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)
    assert any(g.count_nonzero() > 0 for g in full[0])  # the mixed groups do give a gradient
    assert all(g.count_nonzero() == 0 for g in full[1])  # all groups uniform: zero gradient either way
    # with tau > 0 the reference forward is skipped with them too (policy + pi_ref rows)
    _, tau_rows, _ = _step_grads(tmp_path / "tau", monkeypatch, 1, tau=0.1, skip_uniform_groups=True)
    assert tau_rows == [8, 8]


def test_a_rank_s_loss_is_scaled_to_its_share_of_the_mean_over_all_ranks_finished_groups(tmp_path, monkeypatch):
    """Partial rollouts finish unevenly across ranks; DDP/FSDP average the ranks' gradients, so a rank's loss is
    scaled by world * n_rank / n_all: the averaged gradient is the mean over all finished groups."""
    for skip in (False, True):  # skip_uniform_groups: 2 of the 4 groups skipped, the share still counts all 4
        alone, _, alone_pg = _step_grads(tmp_path / f"alone{skip}", monkeypatch, 1, tau=0.0, skip_uniform_groups=skip)
        for others, factor in ((0, 2.0), (4, 1.0), (8, 2 / 3)):  # the other rank's finished groups (this one: 4)
            monkeypatch.setattr(KimiRL, "_finished_groups_total", lambda self, n, o=others: (n + o, 2))
            grads, _, pg = _step_grads(tmp_path / f"others{others}{skip}", monkeypatch, 1, tau=0.0,
                                       skip_uniform_groups=skip)
            monkeypatch.undo()
            assert pg == alone_pg  # the logged term stays this rank's own
            for g, want in zip(grads[0], alone[0]):  # float32 rounding of the scaled backward: ~5e-7 of the
                # tensor's largest entry (an absolute 1e-8 failed on a near-zero entry with transformers 5.25)
                torch.testing.assert_close(g, want * factor, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        assert any(g.count_nonzero() > 0 for g in alone[0])


def test_bad_arguments_and_sft_batches_are_refused(tmp_path):
    with pytest.raises(ValueError, match="k=1"):
        KimiRL(model_config=TINY_TEST_QWEN2, k=1)
    with pytest.raises(ValueError, match=r"segment_tokens=9 must be in \[1, max_new_tokens=8\]"):
        KimiRL(model_config=TINY_TEST_QWEN2, max_new_tokens=8, segment_tokens=9)
    with pytest.raises(ValueError, match="tau=-1"):
        KimiRL(model_config=TINY_TEST_QWEN2, tau=-1)
    for buffer in (0, 9):
        with pytest.raises(ValueError, match=rf"overlong_buffer={buffer} must be in \[1, max_new_tokens=8\]"):
            KimiRL(model_config=TINY_TEST_QWEN2, max_new_tokens=8, overlong_buffer=buffer)
    with pytest.raises(ValueError, match="overlong_penalty"):
        KimiRL(model_config=TINY_TEST_QWEN2, overlong_penalty=-1.0)
    sft_data = ReasoningDataModule(**ADD, num_train=16, num_val=4, batch_size=4, mode="sft")
    with pytest.raises(ValueError, match="mode='rl'"):
        _trainer(tmp_path, 1).fit(KimiRL(model_config=TINY_TEST_QWEN2, eval_k=0), sft_data)


# --------------------------------------------------------------------------- Lightning
def _fit_rl(tmp_path, steps, ckpt_path=None, callbacks=()):
    torch.manual_seed(0)
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=3, max_new_tokens=8, segment_tokens=4, tau=0.5, iteration_steps=3,
                reset_optimizer=True, length_penalty_weight=0.5, eval_k=0, lr=1e-3)
    dm = _rl_data(curriculum=True, difficulties=[1, 2], curriculum_steps=4)
    trainer = _trainer(tmp_path, steps, callbacks=list(callbacks), enable_checkpointing=bool(callbacks))
    trainer.fit(rl, dm, ckpt_path=ckpt_path)
    return rl


def test_resume_mid_iteration_repeats_the_uninterrupted_run_exactly(tmp_path):
    straight = _fit_rl(tmp_path / "a", 5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    _fit_rl(tmp_path / "b", 2, callbacks=[checkpoint])
    path = tmp_path / "ckpt" / "epoch=0-step=2.ckpt"
    assert torch.load(path, weights_only=True)["kimi_rl"]["ref_step"] == 0  # saved inside iteration [0, 3)
    resumed = _fit_rl(tmp_path / "c", 5, ckpt_path=path)
    for (name, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ref_policy.state_dict().values(), resumed.ref_policy.state_dict().values()):
        assert torch.equal(a, b)
    assert straight._ref_step == resumed._ref_step == 3


class AutocastProbe(L.Callback):
    def __init__(self):
        self.autocast = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        original = pl_module.policy.forward

        def probe(*args, **kwargs):
            self.autocast.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
            return original(*args, **kwargs)

        pl_module.policy.forward = probe

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        del pl_module.policy.forward


def test_bf16_mixed_trains_under_autocast_with_fp32_weights(tmp_path):
    torch.manual_seed(0)
    # random model, verifier rewards all 0: the length reward gives the policy gradient something to do
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=4, max_new_tokens=6, eval_k=2, tau=0.1, lr=1e-3, length_penalty_weight=1.0)
    before = {k: v.clone() for k, v in rl.policy.state_dict().items()}
    probe, recorder = AutocastProbe(), Recorder()
    trainer = _trainer(tmp_path, 3, precision="bf16-mixed", callbacks=[probe, recorder], limit_val_batches=1,
                       val_check_interval=3)
    trainer.fit(rl, _rl_data(batch_size=4))
    assert probe.autocast and all(probe.autocast)
    assert all(p.dtype == torch.float32 for p in rl.policy.parameters())
    assert any(not torch.equal(before[k], v) for k, v in rl.policy.state_dict().items())
    assert all(torch.isfinite(p).all() for p in rl.policy.parameters())
    assert 0.0 <= trainer.callback_metrics["val/pass@1"] <= trainer.callback_metrics["val/pass@2"] <= 1.0


def test_the_reference_policy_follows_every_device_and_dtype_move_of_the_module():
    """pi_ref is kept out of the submodules (state_dict, DDP, optimizer), yet .to() must move it: after fit
    Lightning moves the module back to the CPU, and a GPU copy of pi_ref left behind holds GPU memory."""
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=2, max_new_tokens=4)
    ref = rl.ref_policy
    rl.double()
    assert all(p.dtype == torch.float64 for p in ref.parameters())
    rl.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in ref.parameters())
    assert not any(name.startswith("_ref") for name in rl.state_dict())


def test_export_from_checkpoint_reloads_and_generates_the_same_greedy_tokens(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    rl = _fit_rl(tmp_path, 1, callbacks=[checkpoint])
    out = export_checkpoint(checkpoint.last_model_path, tmp_path / "export")
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompts = ["12+34=", "7+8="]
    ids = [encode_prompt(tok, p) for p in prompts]
    assert generate(model, tok, ids, greedy=True, max_new_tokens=8).texts == rl.answer(prompts, max_new_tokens=8)


DDP_SCRIPT = """
import json, os, sys
import lightning as L
import torch
sys.path.insert(0, {repo!r})
from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.modules.kimi_rl import KimiRL

torch.set_num_threads(1)


class Record(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({{"problems": batch["problem_ids"].tolist(), "seed": pl_module.last_seed}})

    def on_train_end(self, trainer, pl_module):
        params = torch.cat([p.detach().flatten() for p in pl_module.policy.parameters()])
        out = {{"rows": self.rows, "params": params.double().sum().item(), "first": params[:8].tolist(),
                "step": trainer.global_step}}
        with open(os.path.join({out!r}, f"rank{{trainer.global_rank}}.json"), "w") as f:
            json.dump(out, f)


torch.manual_seed(0)
rl = KimiRL(model_config={small!r}, k=2, max_new_tokens=6, eval_k=0, lr=1e-3)
dm = ReasoningDataModule(tasks=["arithmetic"], difficulties=[2], trace="direct", mode="rl", num_train=100,
                         num_val=4, batch_size=3, rl_steps_per_epoch=10)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Record()])
trainer.fit(rl, dm)
"""


@pytest.mark.slow  # two fresh Python processes importing torch + transformers: ~20 s
def test_two_process_ddp_ranks_roll_out_their_own_problems_and_stay_in_sync(tmp_path):
    script = tmp_path / "ddp_kimi.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(repo=str(REPO), out=str(tmp_path), small=TINY_TEST_QWEN2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["step"] == r1["step"] == 3
    for a, b in zip(r0["rows"], r1["rows"]):
        assert len(a["problems"]) == len(b["problems"]) == 3  # the same problem count
        assert not set(a["problems"]) & set(b["problems"])  # different problems
        assert a["seed"] != b["seed"]  # different rollout seeds
    assert r0["first"] == r1["first"] and r0["params"] == r1["params"]  # DDP kept the weights identical
