"""DDPM LightningModule: config validation, learning, Lightning integration, export round trip."""

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline
from torch.utils.data import DataLoader, TensorDataset

from litzoo.base import CheckpointError
from litzoo.callbacks import EMA, NaNGuard, NonFiniteLossError
from litzoo.data.toy2d import EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD
from litzoo.datamodules import DigitsDataModule, Toy2DDataModule
from litzoo.diffusion import SAMPLERS
from litzoo.metrics import class_accuracy, eight_gaussians_coverage
from litzoo.modules import DDPM

# One torch thread and torch.manual_seed(0) before every test (tests/conftest.py): the learning tests train
# the same way alone, after other files, or wherever the suite left the thread count.

ROOT = Path(__file__).resolve().parents[2]


def toy_ddpm(**kwargs) -> DDPM:
    defaults = dict(data_dim=2, num_classes=None, mlp_hidden=128, mlp_depth=3, lr=3e-3, warmup_steps=50,
                    sample_steps=100, sampler="ddim")
    return DDPM(**{**defaults, **kwargs})


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"sampler": "euler"}, ["sampler", "ddim", "pf_ode"]),
        ({"beta_schedule": "quadratic"}, ["beta_schedule", "cosine", "linear"]),
        ({"prediction_type": "score"}, ["prediction_type", "epsilon", "v_prediction"]),
        ({"image_size": 12, "block_out_channels": (32, 32, 64, 64)}, ["image_size=12", "divisible by 8"]),
        ({"sample_steps": 0}, ["sample_steps", "positive"]),
        ({"num_train_timesteps": -5}, ["num_train_timesteps"]),
        ({"class_dropout": 1.0}, ["class_dropout"]),
        ({"norm_num_groups": 7}, ["norm_num_groups"]),
        ({"num_classes": 0}, ["num_classes"]),
    ],
)
def test_invalid_config_raises_at_construction_naming_argument_and_allowed_values(kwargs, words):
    with pytest.raises(ValueError) as err:
        DDPM(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_sample_rejects_bad_arguments():
    model = toy_ddpm()
    with pytest.raises(ValueError, match="sampler"):
        model.sample(4, sampler="nope")
    with pytest.raises(ValueError, match="steps"):
        model.sample(4, steps=-1)
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(4, y=torch.zeros(4, dtype=torch.long))
    conditional = DDPM(num_classes=10)
    with pytest.raises(ValueError, match=r"class labels in \[0, 10\)"):
        conditional.sample(3, y=torch.tensor([0, 1, 10]), steps=2)


def test_datamodule_mismatch_is_reported_before_training(tmp_path, cpu_trainer):
    with pytest.raises(ValueError, match="image_size=16 but DDPM was built with image_size=8"):
        cpu_trainer(tmp_path, max_steps=1).fit(DDPM(image_size=8), DigitsDataModule(image_size=16))


# ----------------------------------------------------------------------------- API
def test_forward_shapes_and_null_class_for_cfg():
    model = DDPM(image_size=8, num_classes=10).eval()
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 500, 999])
    assert model(x, t, torch.tensor([1, 2, 3])).shape == x.shape
    # y=None is the learned null class (index num_classes), used for the unconditional branch of CFG.
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((3,), 10)))
    # cfg_scale = 1 is the plain conditional model; another scale changes the output
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = torch.tensor([1, 2, 3])
    a = model.sample(3, steps=3, sampler="ddim", y=y, generator=g())
    b = model.sample(3, steps=3, sampler="ddim", y=y, cfg_scale=1.0, generator=g())
    c = model.sample(3, steps=3, sampler="ddim", y=y, cfg_scale=3.0, generator=g())
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_is_wired_through_the_module(sampler):
    model = DDPM(image_size=8, num_classes=10, num_train_timesteps=50)
    images = model.sample(2, steps=5, sampler=sampler, y=torch.tensor([3, 4]), generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()


# ----------------------------------------------------------------------------- learning
def test_ddpm_learns_eight_gaussians(tmp_path, cpu_trainer):
    # 800 MLP steps take seconds; the threshold (8/8 modes, >= 70 % of samples within 3 std of a mode)
    # fails for an untrained net (~0 modes) and for a net that collapsed to one mode.
    torch.manual_seed(0)
    model = toy_ddpm()
    cpu_trainer(tmp_path, max_steps=800, callbacks=[EMA(decay=0.99)]).fit(model, Toy2DDataModule(n_samples=8000))
    samples = model.sample(2000, steps=100, sampler="ddim", generator=torch.Generator().manual_seed(0))
    coverage = eight_gaussians_coverage(samples)
    assert coverage["modes_covered"] == 8, coverage
    assert coverage["quality"] >= 0.7, coverage


@pytest.mark.slow
def test_ddpm_learns_eight_gaussians_closely(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    model = toy_ddpm()
    cpu_trainer(tmp_path, max_steps=4000, callbacks=[EMA(decay=0.995)]).fit(model, Toy2DDataModule())
    for sampler, steps in [("ddpm", 1000), ("ddim", 50), ("pf_ode", 50)]:
        samples = model.sample(4000, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(1))
        coverage = eight_gaussians_coverage(samples)
        assert coverage["modes_covered"] == 8 and coverage["quality"] >= 0.9, (sampler, coverage)
        # every mode gets its share (1/8 = 0.125) within a factor 2
        assert min(coverage["mode_fractions"]) > 0.06, (sampler, coverage)


def _digits_accuracy(model, steps=25, per_class=30):
    y = torch.arange(10 * per_class) % 10
    images = model.sample(len(y), steps=steps, sampler="ddim", y=y, generator=torch.Generator().manual_seed(0))
    return class_accuracy(images, y)


def test_conditional_ddpm_samples_the_asked_mixture_component(tmp_path, cpu_trainer):
    # The class-conditional path (label embedding, label dropout, CFG null class) on the 8-Gaussians toy, labelled
    # by component: 300 MLP steps take seconds. Measured 0.96 of the samples of label k nearest centre k
    # (0.91 also within 3 std); an untrained or unconditional net gives ~1/8.
    torch.manual_seed(0)
    model = toy_ddpm(num_classes=8)
    cpu_trainer(tmp_path, max_steps=300, callbacks=[EMA(decay=0.99)]).fit(model, Toy2DDataModule(n_samples=8000))
    y = torch.arange(800) % 8
    x = model.sample(800, steps=50, sampler="ddim", y=y, generator=torch.Generator().manual_seed(0))
    distance, nearest = torch.cdist(x, torch.as_tensor(EIGHT_GAUSSIANS_CENTERS, dtype=torch.float32)).min(dim=1)
    assert (nearest == y).float().mean() >= 0.8
    assert ((nearest == y) & (distance <= 3 * EIGHT_GAUSSIANS_STD)).float().mean() >= 0.7


@pytest.mark.slow  # ~2 min of UNet training on 1 CPU thread; the fast suite has the toy test above
def test_conditional_digits_ddpm_learns_the_classes(tmp_path, cpu_trainer):
    # 400 steps at 8x8: samples are blurry but mostly of the asked class (chance = 0.1). Measured 0.84 (1 thread).
    torch.manual_seed(0)
    model = DDPM()
    cpu_trainer(tmp_path, max_steps=400, callbacks=[EMA(decay=0.99)]).fit(model, DigitsDataModule())
    assert _digits_accuracy(model) >= 0.6


@pytest.mark.slow
def test_conditional_digits_ddpm_reaches_high_class_accuracy(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    model = DDPM()
    cpu_trainer(tmp_path, max_steps=2500, callbacks=[EMA(decay=0.995)]).fit(model, DigitsDataModule())
    assert _digits_accuracy(model, per_class=50) >= 0.95


# ----------------------------------------------------------------------------- Lightning integration
def test_bf16_mixed_precision_trains(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    model = toy_ddpm()
    dm = Toy2DDataModule(n_samples=4000)
    dm.setup("fit")
    x = dm.val_dataloader().dataset.tensors[0][:1000]
    before = model.diffusion_loss(x, None, torch.Generator().manual_seed(0))[0].item()
    cpu_trainer(tmp_path, max_steps=300, precision="bf16-mixed").fit(model, dm)
    after = model.diffusion_loss(x, None, torch.Generator().manual_seed(0))[0].item()
    assert np.isfinite(after) and after < 0.7 * before


def test_resume_from_checkpoint_continues_the_same_loss_curve(tmp_path, cpu_trainer, loss_recorder):
    dm_kwargs = dict(n_samples=1000, batch_size=100)  # 9 steps per epoch
    full = loss_recorder()
    torch.manual_seed(0)
    cpu_trainer(tmp_path / "a", max_epochs=6, callbacks=[full, EMA(decay=0.9)]).fit(toy_ddpm(), Toy2DDataModule(**dm_kwargs))

    # "Killed" after 3 epochs (a checkpoint at each epoch end), then resumed by a new process-like run.
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    torch.manual_seed(0)
    cpu_trainer(tmp_path / "b", max_epochs=3, callbacks=[ckpt, EMA(decay=0.9)], enable_checkpointing=True).fit(
        toy_ddpm(), Toy2DDataModule(**dm_kwargs))
    resumed = loss_recorder()
    torch.manual_seed(123)  # the global RNG state must not matter
    cpu_trainer(tmp_path / "b", max_epochs=6, callbacks=[resumed, EMA(decay=0.9)]).fit(
        toy_ddpm(), Toy2DDataModule(**dm_kwargs), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert sorted(resumed.losses) == list(range(28, 55))
    np.testing.assert_allclose([resumed.losses[s] for s in resumed.losses],
                               [full.losses[s] for s in resumed.losses], rtol=1e-5)


def test_load_from_checkpoint_with_weights_only_gives_the_same_model(tmp_path, cpu_trainer):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = DDPM(num_train_timesteps=20, block_out_channels=(16, 32))
    cpu_trainer(tmp_path, max_steps=3, callbacks=[ckpt], enable_checkpointing=True).fit(
        model, DigitsDataModule(batch_size=64))
    raw = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain types only: no pickle needed
    assert raw["litzoo_class"] == "litzoo.modules.ddpm.DDPM"
    loaded = DDPM.load_from_checkpoint(tmp_path / "last.ckpt")
    assert loaded.hparams.block_out_channels == (16, 32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = torch.arange(4)
    torch.testing.assert_close(loaded.sample(4, steps=5, y=y, generator=g()), model.sample(4, steps=5, y=y, generator=g()))


def test_corrupt_or_truncated_checkpoint_gives_a_clear_error(tmp_path, cpu_trainer):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    cpu_trainer(tmp_path, max_steps=1, callbacks=[ckpt], enable_checkpointing=True).fit(
        toy_ddpm(), Toy2DDataModule(n_samples=500))
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt.*corrupt or truncated"):
        DDPM.load_from_checkpoint(tmp_path / "truncated.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        DDPM.load_from_checkpoint(tmp_path / "garbage.ckpt")
    from litzoo.export import main as export_main  # `python -m litzoo.export`: one error line (SystemExit's message)

    with pytest.raises(SystemExit) as info:
        export_main([str(tmp_path / "truncated.ckpt"), str(tmp_path / "o")])
    assert isinstance(info.value.code, str) and info.value.code.startswith("error: Checkpoint")
    assert "corrupt or truncated" in info.value.code and info.value.__suppress_context__


def test_nan_loss_stops_training_with_a_message(tmp_path, cpu_trainer):
    x = torch.randn(64, 2)
    x[5] = float("nan")
    loader = DataLoader(TensorDataset(x, torch.zeros(64, dtype=torch.long)), batch_size=64)
    model = toy_ddpm()
    with pytest.raises(NonFiniteLossError, match="global step 0"):
        cpu_trainer(tmp_path, max_steps=5, callbacks=[NaNGuard()]).fit(model, loader)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("steps", [40, 8])
def test_export_reloads_in_diffusers_and_gives_the_same_images(tmp_path, steps):
    torch.manual_seed(0)
    model = DDPM(image_size=8, num_classes=None, block_out_channels=(16, 32), num_train_timesteps=40).eval()
    model.export(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin"))  # no pickle
    pipeline = DDPMPipeline.from_pretrained(tmp_path)
    ours = model.sample(4, steps=steps, sampler="ddpm", generator=torch.Generator().manual_seed(7))
    theirs = pipeline(batch_size=4, num_inference_steps=steps, generator=torch.Generator().manual_seed(7),
                      output_type="np").images
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), theirs, atol=1e-5)


def test_export_cli_from_a_checkpoint_writes_a_diffusers_folder(tmp_path, cpu_trainer):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    cpu_trainer(tmp_path, max_steps=2, callbacks=[ckpt], enable_checkpointing=True).fit(
        DDPM(num_classes=None, block_out_channels=(16, 32)), DigitsDataModule(batch_size=64))
    sys.path.insert(0, str(ROOT))  # train.py's export subcommand, in-process (no second interpreter start-up)
    try:
        import train
    finally:
        sys.path.remove(str(ROOT))
    train.main(["export", "--ckpt", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "export")])
    config = json.loads((tmp_path / "export" / "model_index.json").read_text())
    assert config["_class_name"] == "DDPMPipeline"
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "export")
    assert pipeline.unet.config.block_out_channels == [16, 32]


def test_vector_model_export_writes_safetensors_and_config(tmp_path):
    from safetensors.torch import load_file

    model = toy_ddpm()
    model.export(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert state.keys() == model.net.state_dict().keys()
    assert json.loads((tmp_path / "litzoo.json").read_text())["hyperparameters"]["data_dim"] == 2
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()


# ----------------------------------------------------------------------------- CLI + DDP
def test_cli_fit_with_two_process_cpu_ddp_trains(tmp_path, cli_fit_two_processes):
    log_dir, val = cli_fit_two_processes(tmp_path, "configs/ddpm_toy2d.yaml", "--trainer.max_steps", "150",
                                         "--trainer.log_every_n_steps", "10", "--data.init_args.n_samples", "4000")
    assert len(val) >= 2 and val[-1] < val[0]  # it trains
    assert (log_dir / "export" / "model.safetensors").is_file()
    assert (log_dir / "samples" / "final.png").is_file()


def test_module_log_likelihood_reports_bits_per_dim_on_the_8_bit_scale():
    model = DDPM(image_size=8, num_classes=10, num_train_timesteps=50, block_out_channels=(16, 32))
    x = torch.rand(2, 1, 8, 8)
    out = model.log_likelihood(x, y=torch.tensor([1, 2]), rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(0))
    # logp is of data in [-1, 1]; bits/dim adds log2(256 / 2) = 7 to put it on the scale of 8-bit pixels
    expected = -out["logp"] / (64 * np.log(2)) + 7
    torch.testing.assert_close(out["bpd"], expected)
    assert torch.isfinite(out["logp"]).all() and out["nfe"] > 0
