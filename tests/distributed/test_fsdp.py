"""Sharded training (FSDP2 through Lightning's ModelParallelStrategy) on 2 CPU processes (gloo).

Each run is ``fsdp_worker.py`` in a fresh Python (Lightning launches the second rank): ~15-40 s on a loaded 2-core
machine, so one fast representative (DDPM) and the rest ``slow`` (the exit-handler test's one-process script is
fast). Tolerance of "same weights": 1e-6 absolute after one AdamW step of lr 1e-3 (the sharded step reduce-scatters
the gradients: another summation order, ~1e-8 measured).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_helpers import assert_clean_exit
from safetensors.torch import load_file

from litzoo.base import CheckpointError, load_checkpoint
from litzoo.export import main as export_main
from litzoo.sharding import block_classes, default_roots, enable_gradient_checkpointing

WORKER = Path(__file__).with_name("fsdp_worker.py")
REPO = WORKER.parents[2]
ATOL = 1e-6


def run_worker(out: Path, method: str, strategy: str, steps: int, *extra: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(WORKER), method, str(out), strategy, str(steps), *extra], cwd=out,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_clean_exit(proc.stderr)
    for rank in (0, 1):  # the exit hook ended gloo's threads before finalisation, sharded runs included
        threads = json.loads((out / f"exit_rank{rank}.json").read_text())
        assert threads["gloo_threads_before"] > 0 and threads["after"] == 0, threads
    return torch.load(out / "result.pt", weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


EXIT_SCRIPT = """
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from dist_helpers import gloo_threads
from litzoo.base import _destroy_process_group

dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
model = torch.nn.Linear(4, 4)  # still referenced when the process exits, as in a script's top level
fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
model(torch.ones(2, 4)).sum().backward()
full = {k: v.full_tensor() for k, v in model.state_dict().items()}
before = gloo_threads()
if sys.argv[2] != "litzoo":  # torch's destroy (a script's own), alone or before litzoo's exit handler
    dist.destroy_process_group()
if sys.argv[2] != "torch":
    _destroy_process_group()
print(before, gloo_threads(), dist.is_initialized(), flush=True)
os._exit(0)  # only the counts are measured: no finalisation with torch's case's threads still running (may abort)
"""


@pytest.mark.parametrize("handler", ["litzoo", "torch", "torch_then_litzoo"])
def test_exit_handler_frees_the_groups_a_live_fsdp2_model_holds_where_torch_s_destroy_leaves_them(tmp_path, handler):
    """torch 2.13's destroy_process_group leaves a live FSDP2 model's groups (held by its device mesh and mesh
    infos), and so gloo's threads, to Python's finalisation; litzoo's exit handler drops those references, also
    after the script destroyed the groups itself: no gloo thread left."""
    (tmp_path / "exit.py").write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(tmp_path / "exit.py"), str(tmp_path / "store"), handler], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    before, after, initialized = proc.stdout.split()
    assert int(before) > 0 and initialized == "False"
    assert int(after) == (int(before) if handler == "torch" else 0)


def check_generator(tmp_path: Path, method: str) -> dict:
    result = run_worker(tmp_path, method, "fsdp", 4, "--save", "sharded.ckpt")
    # one sharded step == one unsharded step on the same global batch (each rank's half, each rank's noise)
    assert max_difference(result["step1"], result["reference"]) < ATOL
    assert result["compute_dtype"] == "torch.float32"  # full precision: no mixed-precision policy
    if method != "vae":  # SampleGrid's final grid: all ranks sampled (collectives), rank 0 wrote it
        assert (tmp_path / "samples" / "final.png").is_file()
    assert result["loss_end"] < 0.95 * result["loss_start"]  # 4 steps on a fixed batch: the loss falls
    # the sharded checkpoint exports the same files as the unsharded module with the same weights (`python -m
    # litzoo.export`'s main, in this process: the README test runs `train.py export` on a folder as a command)
    export = tmp_path / "export_sharded"
    export_main([str(tmp_path / "sharded.ckpt"), str(export)])
    unsharded = tmp_path / "export_unsharded"
    files = sorted(p.relative_to(unsharded) for p in unsharded.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(export) for p in export.rglob("*.safetensors"))
    for f in files:
        a, b = load_file(unsharded / f), load_file(export / f)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), f
    return result


def test_ddpm_sharded_step_equals_unsharded_and_sharded_checkpoint_exports(tmp_path):
    check_generator(tmp_path, "ddpm")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vae", "rectified_flow"])
def test_generator_sharded_step_equals_unsharded_and_exports(tmp_path, method):
    check_generator(tmp_path, method)


@pytest.mark.slow
def test_bf16_mixed_gathers_and_computes_in_bf16_and_keeps_fp32_weights(tmp_path):
    result = run_worker(tmp_path, "ddpm", "fsdp", 4, "--precision", "bf16-mixed")
    assert result["compute_dtype"] == "torch.bfloat16"  # FSDP2's MixedPrecisionPolicy(param_dtype=bf16)
    assert {v.dtype for v in result["final"].values() if v.is_floating_point()} == {torch.float32}
    # bf16 gradients flip the sign of a few of Adam's first (sign-like) updates of size lr = 1e-3: measured 1.2e-5
    differences = torch.cat([(result["step1"][k] - v).abs().flatten() for k, v in result["reference"].items()
                             if v.is_floating_point()])
    assert differences.mean() < 1e-4
    assert result["loss_end"] < 0.95 * result["loss_start"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cot_sft", "kimi_rl"])
def test_causal_lm_sharded_steps_equal_ddp(tmp_path, method):
    """The same ranks' batches (and KimiRL's rollouts, sampled with the gathered sharded policy, and its sharded
    pi_ref) give the same weights as DDP, the unsharded data-parallel run, after 1 and 3 steps."""
    # CoTSFT's sharded run also recomputes activations (gradient_checkpointing): the same gradients
    sharded = run_worker(tmp_path / "fsdp", method, "fsdp", 3, *(["--checkpointing"] if method == "cot_sft" else []))
    ddp = run_worker(tmp_path / "ddp", method, "ddp", 3)
    assert max_difference(sharded["step1"], ddp["step1"]) < ATOL
    assert max_difference(sharded["final"], ddp["final"]) < 1e-5
    assert max_difference(sharded["final"], sharded["step1"]) > 1e-4  # it trained
    assert sharded["val_pass@1"] == ddp["val_pass@1"]  # validation's greedy answers, generated gathered


@pytest.mark.slow
def test_kimi_rl_with_lora_adapters_sharded_equals_ddp(tmp_path):
    """LoRA under FSDP2: only the adapters train, pi_ref is the sharded base with its adapters off (no copy), and
    the sharded steps give DDP's weights."""
    sharded = run_worker(tmp_path / "fsdp", "kimi_rl", "fsdp", 3, "--lora")
    ddp = run_worker(tmp_path / "ddp", "kimi_rl", "ddp", 3, "--lora")
    assert max_difference(sharded["step1"], ddp["step1"]) < ATOL
    assert max_difference(sharded["final"], ddp["final"]) < 1e-5
    moved = {k for k in sharded["final"] if not torch.equal(sharded["final"][k], sharded["step1"][k])}
    assert moved and all("lora_" in k for k in moved)  # the adapters trained, the base did not


@pytest.mark.slow
@pytest.mark.parametrize("skip_uniform", [False, True])
def test_kimi_rl_partial_rollouts_sharded_when_one_rank_has_no_finished_group(tmp_path, skip_uniform):
    """With partial rollouts a rank can have no finished group in a step while another trains: sharded, it runs the
    forward and backward on a pending group, weighted 0 (a sharded rank that skipped them left the others waiting in
    the collectives; under DDP it takes a zero loss). Rank 1's responses take up to 8 steps, rank 0's one: the
    sharded run completes and gives DDP's weights, and each rank's loss share comes from both ranks' counts; also
    with skip_uniform_groups, where a rank whose finished groups all have equal rewards runs one of them weighted 0."""
    extra = ("--uneven-finish", *(["--skip-uniform"] if skip_uniform else []))
    sharded = run_worker(tmp_path / "fsdp", "kimi_rl", "fsdp", 3, *extra)
    ddp = run_worker(tmp_path / "ddp", "kimi_rl", "ddp", 3, *extra)
    assert max_difference(sharded["step1"], ddp["step1"]) < ATOL
    assert max_difference(sharded["final"], ddp["final"]) < 1e-5
    assert max_difference(sharded["final"], sharded["step1"]) > 1e-4  # it trained (rank 0's groups)
    for run in ("fsdp", "ddp"):  # the cases under test happened: per step and rank, (finished groups, uniform share)
        steps = [[line.split() for line in (tmp_path / run / f"finished_rank{r}.txt").read_text().splitlines()]
                 for r in (0, 1)]
        assert any(int(a[0]) > 0 and int(b[0]) == 0 for a, b in zip(*steps)), steps
        totals = [[[int(x) for x in line.split()] for line in (tmp_path / run / f"totals_rank{r}.txt").read_text()
                   .splitlines()] for r in (0, 1)]  # (own, all ranks', world) per step: the loss share's inputs
        assert len(totals[0]) == len(totals[1]) == 3
        assert all(a[1] == b[1] == a[0] + b[0] and a[2] == b[2] == 2 for a, b in zip(*totals)), totals
        if skip_uniform:
            assert any(int(n) > 0 and float(u) == 1.0 for rank in steps for n, u in rank), steps


@pytest.mark.slow
def test_nan_guard_refuses_a_sharded_save_on_every_rank_when_one_rank_s_shard_is_not_finite(tmp_path):
    out = tmp_path / "nan"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(WORKER), "ddpm", str(out), "fsdp", "1", "--nan-save"], cwd=out,
                          env=env, capture_output=True, text=True, timeout=300)  # a hang would be the bug
    assert proc.returncode == 0, proc.stderr[-4000:]
    rank0, rank1 = ((out / f"refused_rank{r}.txt").read_text() for r in (0, 1))
    assert "(the shards of another rank)" in rank0 and "Refusing to write a checkpoint" in rank0
    assert "(the shards of another rank)" not in rank1 and "Refusing to write a checkpoint" in rank1
    assert not (out / "nan.ckpt").exists()


@pytest.mark.slow
def test_resume_from_sharded_checkpoint_equals_uninterrupted_run(tmp_path):
    whole = run_worker(tmp_path / "whole", "ddpm", "fsdp", 4)
    run_worker(tmp_path / "first", "ddpm", "fsdp", 2, "--save", "half.ckpt")
    resumed = run_worker(tmp_path / "resumed", "ddpm", "fsdp", 4, "--resume", str(tmp_path / "first" / "half.ckpt"))
    assert max_difference(resumed["final"], whole["final"]) == 0.0


def test_load_checkpoint_folder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no '.metadata' file"):
        load_checkpoint(tmp_path)
    (tmp_path / ".metadata").write_bytes(b"")
    with pytest.raises(CheckpointError, match="has no 'meta.pt'"):
        load_checkpoint(tmp_path)
    torch.save({"hyper_parameters": {}}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="a shard is missing or truncated"):
        load_checkpoint(tmp_path)


def test_blocks_default_to_the_librarys_and_can_be_overridden():
    from diffusers import SD3Transformer2DModel, UNet2DModel

    from litzoo.reasoning.policy import build_policy
    from lm_helpers import TINY_TEST_QWEN2

    policy, _ = build_policy(TINY_TEST_QWEN2)
    assert [c.__name__ for c in block_classes(policy)] == ["Qwen2DecoderLayer"]
    sd3 = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=1, num_layers=1, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                pooled_projection_dim=16, out_channels=1, pos_embed_max_size=8)
    assert [c.__name__ for c in block_classes(sd3)] == ["JointTransformerBlock"]
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    assert sorted(c.__name__ for c in block_classes(unet)) == ["DownBlock2D", "UpBlock2D"]
    assert [c.__name__ for c in block_classes(unet, ["ResnetBlock2D"])] == ["ResnetBlock2D"]
    with pytest.raises(ValueError, match="no submodule of UNet2DModel is a"):
        block_classes(unet, ["Qwen2DecoderLayer"])


def test_default_roots_skip_frozen_children_and_put_nested_library_models_first():
    from litzoo.modules import DDPM, KimiRL
    from lm_helpers import TINY_TEST_QWEN2

    ddpm = DDPM(image_size=8, num_classes=2, block_out_channels=(8, 16), norm_num_groups=4)
    assert default_roots(ddpm) == [ddpm.net]
    rl = KimiRL(model_config=TINY_TEST_QWEN2, k=2)
    assert default_roots(rl) == [rl.policy]  # pi_ref is no child: extra_sharded_modules shards it
    assert rl.extra_sharded_modules() == [rl.ref_policy]
    ddpm.net.requires_grad_(False)
    assert default_roots(ddpm) == []


@pytest.mark.parametrize("method", ["ddpm", "cot_sft"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(method):
    from litzoo.modules import DDPM, CoTSFT
    from lm_helpers import TINY_TEST_QWEN2

    def build(checkpointing):
        torch.manual_seed(0)
        if method == "ddpm":
            return DDPM(image_size=8, num_classes=2, block_out_channels=(8, 16), norm_num_groups=4,
                        gradient_checkpointing=checkpointing)
        return CoTSFT(model_config=TINY_TEST_QWEN2, gradient_checkpointing=checkpointing)

    results = []
    for checkpointing in (False, True):
        module = build(checkpointing)
        module.configure_model()  # no trainer: checkpointing only
        if method == "ddpm":
            x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
            loss = module.loss(x, torch.tensor([0, 1, 1, 0]), torch.Generator().manual_seed(2))[0]
            net = module.net
        else:
            ids = torch.randint(3, 20, (2, 12), generator=torch.Generator().manual_seed(1))
            labels = ids.clone()
            labels[:, :4] = -100
            loss = module.sft_loss({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
            net = module.policy
        flag = next(f for f in ("is_activation_checkpointing", "is_gradient_checkpointing") if hasattr(net, f))
        assert getattr(net, flag) == checkpointing
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.equal(loss0, loss1)
    assert len(grads0) == len(grads1) > 0
    for a, b in zip(grads0, grads1):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_ema_refuses_sharded_strategies_at_setup():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import ModelParallelStrategy

    from litzoo.callbacks import EMA

    with pytest.raises(ValueError, match="EMA does not support sharded training"):
        EMA().setup(SimpleNamespace(strategy=ModelParallelStrategy()), torch.nn.Linear(1, 1), "fit")


def test_gradient_checkpointing_refused_for_a_network_without_it():
    with pytest.raises(ValueError, match="has activation checkpointing"):
        enable_gradient_checkpointing([torch.nn.Linear(2, 2)])


@pytest.mark.slow  # a 2-process CLI run: ~30 s of CPU, minutes of wall time on a loaded machine
def test_readme_fine_tuning_at_scale_commands_run(tmp_path):
    """The README section's commands, as written (config path made absolute; a 4-step run, no validation)."""
    from transformers import AutoModelForCausalLM

    text = (REPO / "README.md").read_text().split("## Fine-tuning at scale", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split() for line in block.strip().splitlines()]
    assert [c[:3] for c in commands] == [["python", "train.py", "fit"], ["python", "train.py", "export"]]
    quick = ["--trainer.max_steps", "4", "--trainer.check_val_every_n_epoch", "100", "--trainer.enable_progress_bar",
             "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for i, command in enumerate(commands):
        args = [str(REPO / a) if a.startswith("configs/") or a == "train.py" else a for a in command[1:]]
        proc = subprocess.run([sys.executable, *args, *(quick if i == 0 else [])], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = tmp_path / "runs/cot_sft_sharded/lightning_logs/version_0/checkpoints/last.ckpt"
    assert (ckpt / ".metadata").is_file() and (ckpt / "meta.pt").is_file()  # a sharded folder
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "runs/cot_sft_sharded/export")
    state = load_checkpoint(ckpt)["state_dict"]
    for name, value in exported.state_dict().items():
        assert torch.equal(value, state[f"policy.{name}"]), name
