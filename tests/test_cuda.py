"""Every litzoo LightningModule trained on a CUDA GPU: the bugs a GPU user hits and CPU tests cannot.

Tensors or generators created on the wrong device, ``.numpy()`` of CUDA tensors, exports of CUDA weights,
checkpoints saved from the GPU and loaded on a CPU machine, and ``bf16-mixed`` under CUDA autocast.

Each test is a tiny fit (seconds on a GPU) that checks, *during* training (Lightning moves the module back
to the CPU when ``fit`` ends), that the parameters, buffers, batches and replay/rollout buffers live on the
device; then that the losses are finite, the module learnt something where that is cheap, the samplers
return tensors on the device, the export written from the module on the device reloads on the CPU with the
same outputs, and a checkpoint saved from the device loads with ``map_location="cpu"``.

CI has no GPU, so the whole file is skipped there. ``LITZOO_TEST_DEVICE=cpu`` runs it on the CPU
(``accelerator="cpu"``) to debug the tests themselves::

    LITZOO_TEST_DEVICE=cpu OMP_NUM_THREADS=1 python -m pytest tests/test_cuda.py -q -p no:randomly
    python -m pytest tests/test_cuda.py -q        # on a machine with a CUDA GPU
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch

DEVICE = os.environ.get("LITZOO_TEST_DEVICE", "cuda")
ACCELERATOR = "gpu" if DEVICE == "cuda" else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (set LITZOO_TEST_DEVICE=cpu to run these on CPU)")
PRECISIONS = ["32-true", "bf16-mixed"]


# ------------------------------------------------------------------------------------------ helpers
def _tensors(obj: Any, depth: int = 0) -> list[torch.Tensor]:
    """The tensors in a (nested) batch: tensors, sequences, dicts, dataclasses/NamedTuples, plain objects."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth > 3 or obj is None or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
        return []
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif dataclasses.is_dataclass(obj):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__"):
        items = vars(obj).values()
    else:
        return []
    return [t for item in items for t in _tensors(item, depth + 1)]


class DeviceProbe(L.Callback):
    """Records, at every training batch, the devices of the module's parameters and buffers, of the batch's
    tensors and of the module's replay buffer, and whether ``training_step`` ran under bf16 autocast; saves a
    checkpoint right after the module's ``on_train_end``, while the module is still on the device (Lightning's
    teardown moves it back to the CPU only afterwards)."""

    def __init__(self, ckpt_path: Path | None = None) -> None:
        self.ckpt_path = ckpt_path
        self.module_devices: set[str] = set()
        self.batch_devices: set[str] = set()
        self.buffer_devices: set[str] = set()
        self.autocast: list[bool] = []
        self.batches = 0

    def on_fit_start(self, trainer, module):
        # Lightning enters the precision plugin's autocast around ``training_step`` only: record it there.
        step = module.training_step

        def probed(*args, **kwargs):
            self.autocast.append(torch.is_autocast_enabled(DEVICE)
                                 and torch.get_autocast_dtype(DEVICE) == torch.bfloat16)
            return step(*args, **kwargs)

        module.training_step = probed
        # Checkpoint after the module's own on_train_end (the VAE computes its latent statistics there), which
        # runs before Lightning's teardown moves the module back to the CPU.
        train_end = module.on_train_end

        def save_after_train_end():
            train_end()
            if self.ckpt_path is not None:
                self.on_device_at_save = {t.device.type for t in module.state_dict().values()}
                trainer.save_checkpoint(self.ckpt_path)

        module.on_train_end = save_after_train_end

    def on_fit_end(self, trainer, module):
        del module.training_step, module.on_train_end

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1
        self.module_devices |= {t.device.type for t in module.state_dict().values() if isinstance(t, torch.Tensor)}
        self.batch_devices |= {t.device.type for t in _tensors(batch)}
        buffer = getattr(module, "_buffer", None)
        if buffer is not None:
            self.buffer_devices |= {t.device.type for t in _tensors(buffer)}

    def assert_all_on_device(self, *, batches: bool = True) -> None:
        assert self.batches > 0, "no training batch ran"
        assert self.module_devices == {DEVICE}, self.module_devices
        if batches:
            assert self.batch_devices <= {DEVICE} and self.batch_devices, self.batch_devices
        if self.ckpt_path is not None:
            assert self.on_device_at_save == {DEVICE}, self.on_device_at_save


def _trainer(precision: str, callbacks=(), **kwargs) -> L.Trainer:
    defaults = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, limit_val_batches=0)
    return L.Trainer(accelerator=ACCELERATOR, devices=1, precision=precision, callbacks=list(callbacks),
                     **{**defaults, **kwargs})


def _assert_autocast(probe: DeviceProbe, precision: str) -> None:
    # bf16-mixed: the training step runs under the device's autocast; 32-true: never.
    assert probe.autocast and all(a == (precision == "bf16-mixed") for a in probe.autocast), probe.autocast


def _assert_finite_params(module: torch.nn.Module) -> None:
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
    assert not bad, bad
    assert all(p.dtype == torch.float32 for p in module.parameters())  # bf16-mixed keeps fp32 master weights


def _assert_checkpoint_loads_on_cpu(cls, path: Path, module: torch.nn.Module) -> torch.nn.Module:
    """``cls.load_from_checkpoint(path, map_location="cpu")`` of a checkpoint saved on the device: every
    tensor on the CPU and equal to the trained module's."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    loaded = cls.load_from_checkpoint(path, map_location="cpu")
    state = loaded.state_dict()
    assert {t.device.type for t in state.values()} == {"cpu"}
    trained = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    assert state.keys() == trained.keys()
    for key, value in state.items():
        assert torch.equal(value, trained[key]), key
    assert raw["state_dict"].keys() == trained.keys()
    return loaded


def _device_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


@contextlib.contextmanager
def _exact_fp32():
    """Full-precision float32 kernels while comparing device outputs with CPU ones: cuDNN convolutions use
    TF32 by default on Ampere+ GPUs (a 1e-3 relative error), which is not what an export round trip tests."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


TOL = dict(rtol=1e-4, atol=1e-4)  # fp32, GPU kernels vs CPU kernels (summation order differs)


# ------------------------------------------------------------------------------------------ DDPM
@pytest.mark.parametrize("precision", PRECISIONS)
def test_ddpm_trains_on_device_samples_there_and_exports_and_checkpoints_for_cpu(tmp_path, precision):
    from litzoo.datamodules import Toy2DDataModule
    from litzoo.diffusion import SAMPLERS
    from litzoo.modules import DDPM

    module = DDPM(data_dim=2, num_classes=None, mlp_hidden=64, mlp_depth=2, lr=3e-3, warmup_steps=5,
                  sample_steps=10, sampler="ddim")
    x = Toy2DDataModule(n_samples=4096)
    x.setup("fit")
    fixed = next(iter(x.train_dataloader()))
    fixed = (fixed[0] if isinstance(fixed, (list, tuple)) else fixed)[:256]
    fixed = torch.cat([fixed] * 8)  # many noise draws of the same points: a low-variance loss estimate

    def loss() -> float:
        with torch.no_grad():
            return module.diffusion_loss(fixed, None, torch.Generator().manual_seed(1))[0].item()

    before = loss()
    probe = DeviceProbe(tmp_path / "ddpm.ckpt")
    _trainer(precision, [probe], max_steps=60).fit(module, Toy2DDataModule(n_samples=4096, batch_size=256))
    probe.assert_all_on_device()
    _assert_autocast(probe, precision)
    _assert_finite_params(module)
    after = loss()
    assert after < 0.8 * before, (before, after)  # it learns the noise of the 8 Gaussians

    module.to(DEVICE).eval()
    for sampler in SAMPLERS:
        samples = module.sample(64, steps=4, sampler=sampler, generator=_device_generator())
        assert samples.device.type == DEVICE and samples.shape == (64, 2), sampler
        assert torch.isfinite(samples).all(), sampler
        # the same generator seed gives the same samples (the generator drives all the noise)
        again = module.sample(64, steps=4, sampler=sampler, generator=_device_generator())
        torch.testing.assert_close(samples, again)
    assert module.sample(8, steps=3).device.type == DEVICE  # no generator: the module's device
    ll = module.log_likelihood(fixed[:16].to(DEVICE), generator=_device_generator(), rtol=1e-3, atol=1e-3)
    assert torch.isfinite(torch.as_tensor(ll["bpd"])).all()

    # export of the weights on the device, reloaded on the CPU: same denoiser outputs
    out = module.export(tmp_path / "export")
    from safetensors.torch import load_file

    cpu_module = DDPM(**{k: v for k, v in module.hparams.items()})
    cpu_module.net.load_state_dict(load_file(out / "model.safetensors"))
    cpu_module.eval()
    x_t, t = torch.randn(32, 2), torch.randint(0, 1000, (32,))
    with torch.no_grad(), _exact_fp32():
        torch.testing.assert_close(cpu_module(x_t, t), module(x_t.to(DEVICE), t.to(DEVICE)).cpu(), **TOL)
    assert json.loads((out / "litzoo.json").read_text())["class"] == "litzoo.modules.DDPM"
    _assert_checkpoint_loads_on_cpu(DDPM, tmp_path / "ddpm.ckpt", module)


# ------------------------------------------------------------------------------------------ RectifiedFlowDiT
@pytest.mark.parametrize("precision", PRECISIONS)
def test_rectified_flow_dit_trains_on_device_samples_with_cfg_and_exports_to_diffusers_for_cpu(tmp_path, precision):
    from diffusers import SD3Transformer2DModel

    from litzoo.datamodules import DigitsDataModule
    from litzoo.modules.rectified_flow import RectifiedFlowDiT

    module = RectifiedFlowDiT(num_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                              caption_projection_dim=16, pooled_projection_dim=16, lr=3e-3, warmup_steps=5,
                              sample_steps=4, cfg_scale=2.0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    images, labels = dm.train_set.tensors[0][:256], dm.train_set.tensors[1][:256]

    def loss() -> float:
        with torch.no_grad():
            x0, cond = module._unpack((images, labels))
            return module.flow_loss(x0, cond, torch.Generator().manual_seed(1))[0].item()

    before = loss()
    probe = DeviceProbe(tmp_path / "rf.ckpt")
    _trainer(precision, [probe], max_steps=40).fit(module, DigitsDataModule(batch_size=64))
    probe.assert_all_on_device()
    _assert_autocast(probe, precision)
    _assert_finite_params(module)
    after = loss()
    assert after < 0.9 * before, (before, after)

    module.to(DEVICE).eval()
    y = torch.arange(10, device=DEVICE)
    for sampler in ("euler", "heun"):
        guided = module.sample(10, steps=3, sampler=sampler, y=y, cfg_scale=3.0, generator=_device_generator())
        plain = module.sample(10, steps=3, sampler=sampler, y=y, cfg_scale=1.0, generator=_device_generator())
        assert guided.device.type == DEVICE and guided.shape == (10, 1, 8, 8), sampler
        assert torch.isfinite(guided).all() and guided.min() >= 0 and guided.max() <= 1
        assert not torch.allclose(guided, plain)  # the guidance scale reaches the velocity
    # labels given on the CPU (what users type) work for a module on the device
    assert module.sample(4, steps=2, y=torch.tensor([0, 1, 2, 3])).device.type == DEVICE

    out = module.export(tmp_path / "export")
    transformer = SD3Transformer2DModel.from_pretrained(out, subfolder="transformer").eval()
    assert {p.device.type for p in transformer.parameters()} == {"cpu"}
    config = json.loads((out / "litzoo.json").read_text())
    tokens, pooled = torch.tensor(config["context_tokens"]), torch.tensor(config["pooled_class_embeddings"])
    x, t, yy = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.8]), torch.tensor([0, 5, 10])
    with torch.no_grad(), _exact_fp32():
        theirs = transformer(hidden_states=x, timestep=t * config["timestep_scale"], encoder_hidden_states=tokens[yy],
                             pooled_projections=pooled[yy]).sample
        ours = module(x.to(DEVICE), t.to(DEVICE), yy.to(DEVICE)).cpu()
    torch.testing.assert_close(theirs, ours, **TOL)
    _assert_checkpoint_loads_on_cpu(RectifiedFlowDiT, tmp_path / "rf.ckpt", module)


# ------------------------------------------------------------------------------------------ VAE
@pytest.mark.parametrize("precision", PRECISIONS)
def test_vae_trains_on_device_computes_latent_statistics_and_exports_for_cpu(tmp_path, precision):
    from diffusers import AutoencoderKL

    from litzoo.datamodules import DigitsDataModule
    from litzoo.modules.vae import VAE

    module = VAE(block_out_channels=(16, 32))
    dm = DigitsDataModule(batch_size=128)
    dm.setup("fit")
    x = dm.val_set.tensors[0][:128]

    def mse() -> float:
        with torch.no_grad():
            return module.vae_loss(x, torch.Generator().manual_seed(0))[1].item()

    before = mse()
    probe = DeviceProbe(tmp_path / "vae.ckpt")
    _trainer(precision, [probe], max_steps=40).fit(module, DigitsDataModule(batch_size=128))
    probe.assert_all_on_device()
    _assert_autocast(probe, precision)
    _assert_finite_params(module)
    after = mse()
    assert after < 0.7 * before, (before, after)
    # on_train_end computed the latent statistics on the device (the factors normalise the latents)
    module.to(DEVICE)
    z = module.encode(dm.train_set.tensors[0].to(DEVICE))
    assert z.device.type == DEVICE
    assert abs(z.mean().item()) < 1e-2 and abs(z.std().item() - 1) < 1e-2  # TF32 convolutions on GPU: ~1e-3
    assert module.decode(z[:4]).device.type == DEVICE

    out = module.export(tmp_path / "export")
    loaded = AutoencoderKL.from_pretrained(out).eval()
    assert loaded.config.scaling_factor == pytest.approx(float(module.scaling_factor))
    with torch.no_grad(), _exact_fp32():
        theirs = loaded.decode(loaded.encode(x[:8]).latent_dist.mode()).sample
        ours = module.vae.decode(module.vae.encode(x[:8].to(DEVICE)).latent_dist.mode()).sample.cpu()
    torch.testing.assert_close(theirs, ours, **TOL)
    _assert_checkpoint_loads_on_cpu(VAE, tmp_path / "vae.ckpt", module)


# ------------------------------------------------------------------------------------------ RL helpers
def _assert_policy_export_matches(module, tmp_path: Path, obs: np.ndarray, env: gym.Env | None = None) -> None:
    """``module.export`` from the device, ``litzoo.load_policy`` on the CPU: the same deterministic actions
    as the policy on the device (raw outputs to fp32 tolerance, and ``predict`` on numpy input)."""
    from litzoo.rl.policy import load_policy

    module.to(DEVICE).eval()
    out = module.export(tmp_path / "policy")
    exported = load_policy(out, env=env)
    assert {p.device.type for p in exported.parameters()} == {"cpu"}
    on_device = module.policy.predict(obs)  # numpy in, numpy out: the CUDA tensor must be copied back
    assert isinstance(on_device, np.ndarray)
    with torch.no_grad(), _exact_fp32():
        theirs = exported(torch.as_tensor(obs), deterministic=True)
        ours = module.policy(torch.as_tensor(obs).to(DEVICE), deterministic=True).cpu()
    if theirs.dtype.is_floating_point:
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(exported.predict(obs), on_device, rtol=1e-4, atol=1e-4)
    else:
        assert torch.equal(theirs, ours)
        np.testing.assert_array_equal(exported.predict(obs), on_device)
    # a policy loaded onto the device acts like the CPU one
    if DEVICE != "cpu":
        on_gpu = load_policy(out, device=DEVICE)
        np.testing.assert_allclose(on_gpu.predict(obs), exported.predict(obs), rtol=1e-4, atol=1e-4)


def _rl_fit(module, datamodule, precision: str, ckpt: Path, **kwargs) -> tuple[L.Trainer, DeviceProbe]:
    probe = DeviceProbe(ckpt)
    trainer = _trainer(precision, [probe], max_epochs=1, **kwargs)
    trainer.fit(module, datamodule)
    probe.assert_all_on_device()
    _assert_autocast(probe, precision)
    _assert_finite_params(module)
    assert module._generator is not None and module._generator.device.type == DEVICE
    return trainer, probe


def _finite_metrics(trainer: L.Trainer, prefix: str = "train/") -> None:
    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
    assert metrics, trainer.callback_metrics.keys()
    bad = {k: v for k, v in metrics.items() if not torch.isfinite(torch.as_tensor(v)).all()}
    assert not bad, bad


# ------------------------------------------------------------------------------------------ DDPG / TD3
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("algo", ["DDPG", "TD3"])
def test_ddpg_and_td3_on_pendulum_keep_replay_buffer_on_device_and_export_for_cpu(tmp_path, algo, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.modules import ddpg as ddpg_module

    cls = getattr(ddpg_module, algo)
    module = cls(actor_hidden_sizes=(32, 32), critic_hidden_sizes=(32, 32), learning_starts=64, batch_size=32,
                 log_every_n_env_steps=50)
    trainer, probe = _rl_fit(module, GymDataModule("Pendulum-v1", num_envs=2, batches_per_epoch=30), precision,
                             tmp_path / "rl.ckpt")
    assert probe.buffer_devices == {DEVICE}
    assert module.env_steps == 64 + 2 * 29  # learning_starts, then one vector step (2 envs) per update
    assert len(module._buffer) == module.env_steps
    _finite_metrics(trainer)
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    _assert_policy_export_matches(module, tmp_path, obs, env=gym.make("Pendulum-v1"))
    loaded = _assert_checkpoint_loads_on_cpu(cls, tmp_path / "rl.ckpt", module)
    assert loaded.env_steps == module.env_steps


# ------------------------------------------------------------------------------------------ ActorCritic
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("critic", ["advantage", "q"])
def test_a2c_and_qac_on_vector_cartpole_train_on_device_and_export_for_cpu(tmp_path, critic, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.modules import ActorCritic

    module = ActorCritic(critic=critic, normalize_observations=True, log_every_n_env_steps=40)
    trainer, probe = _rl_fit(module, GymDataModule("CartPole-v1", num_envs=4, batches_per_epoch=10), precision,
                             tmp_path / "rl.ckpt")
    n_steps = module.hparams.n_steps
    assert module.env_steps == 10 * n_steps * 4 and module.num_updates == 10
    assert module.policy.encoder.normalizer.rms.count == 10 * n_steps * 4  # every observation, counted on device
    _finite_metrics(trainer)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    _assert_policy_export_matches(module, tmp_path, obs, env=gym.make("CartPole-v1"))
    loaded = _assert_checkpoint_loads_on_cpu(ActorCritic, tmp_path / "rl.ckpt", module)
    np.testing.assert_array_equal(loaded.policy.predict(obs), module.policy.predict(obs))


# ------------------------------------------------------------------------------------------ TRPO
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_trpo_discrete_and_continuous_train_on_device_and_export_for_cpu(tmp_path, env_id, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.modules import TRPO

    module = TRPO(n_steps=32, hidden_sizes=(32, 32), normalize_observations=True, log_every_n_env_steps=64)
    trainer, probe = _rl_fit(module, GymDataModule(env_id, num_envs=2, batches_per_epoch=4), precision,
                             tmp_path / "rl.ckpt")
    assert module.env_steps == 4 * 32 * 2 and trainer.global_step == 4
    _finite_metrics(trainer)
    assert trainer.callback_metrics["train/kl"] <= module.hparams.max_kl * 1.5 + 1e-6  # the trust region holds
    dim = gym.make(env_id).observation_space.shape[0]
    obs = np.random.default_rng(0).normal(size=(16, dim)).astype(np.float32)
    _assert_policy_export_matches(module, tmp_path, obs, env=gym.make(env_id))
    _assert_checkpoint_loads_on_cpu(TRPO, tmp_path / "rl.ckpt", module)


# ------------------------------------------------------------------------------------------ PPO / SAC
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_discrete_and_continuous_train_on_device_and_export_for_cpu(tmp_path, env_id, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.modules import PPO

    module = PPO(n_steps=16, batch_size=16, n_epochs=2, hidden_sizes=(32, 32), normalize_observations=True,
                 log_every_n_env_steps=32)
    trainer, probe = _rl_fit(module, GymDataModule(env_id, num_envs=2, batches_per_epoch=4), precision,
                             tmp_path / "rl.ckpt")
    assert module.env_steps == 4 * 16 * 2 and module.num_updates == 4
    _finite_metrics(trainer)
    dim = gym.make(env_id).observation_space.shape[0]
    obs = np.random.default_rng(0).normal(size=(16, dim)).astype(np.float32)
    _assert_policy_export_matches(module, tmp_path, obs, env=gym.make(env_id))
    _assert_checkpoint_loads_on_cpu(PPO, tmp_path / "rl.ckpt", module)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sac_on_pendulum_keeps_replay_buffer_on_device_and_exports_for_cpu(tmp_path, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.modules import SAC

    module = SAC(actor_hidden_sizes=(32, 32), critic_hidden_sizes=(32, 32), learning_starts=64, batch_size=32,
                 log_every_n_env_steps=50)
    trainer, probe = _rl_fit(module, GymDataModule("Pendulum-v1", num_envs=2, batches_per_epoch=30), precision,
                             tmp_path / "rl.ckpt")
    assert probe.buffer_devices == {DEVICE}
    assert module.env_steps == 64 + 2 * 29 and len(module._buffer) == module.env_steps
    _finite_metrics(trainer)
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    _assert_policy_export_matches(module, tmp_path, obs, env=gym.make("Pendulum-v1"))
    loaded = _assert_checkpoint_loads_on_cpu(SAC, tmp_path / "rl.ckpt", module)
    assert loaded.env_steps == module.env_steps


# ------------------------------------------------------------------------------------------ DQN
@pytest.mark.parametrize("precision", PRECISIONS)
def test_dqn_on_cartpole_keeps_replay_buffer_on_device_and_exports_for_cpu(tmp_path, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.modules import DQN

    module = DQN(hidden_sizes=(32,), learning_starts=64, train_freq=2, batch_size=32, log_every_n_env_steps=64)
    trainer, probe = _rl_fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=40), precision,
                             tmp_path / "rl.ckpt")
    assert probe.buffer_devices == {DEVICE}
    assert module.num_updates == 40
    assert module.env_steps == module.env_steps_for_updates(40, num_envs=2)
    assert len(module._buffer) == module.env_steps
    _finite_metrics(trainer)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    _assert_policy_export_matches(module, tmp_path, obs, env=gym.make("CartPole-v1"))
    _assert_checkpoint_loads_on_cpu(DQN, tmp_path / "rl.ckpt", module)


# ------------------------------------------------------------------------------------------ VFA
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("algorithm, features, alpha", [("td_linear", "onehot", 0.5), ("q_learning", "tile", 0.2)])
def test_value_function_approximation_on_grid_world_trains_on_device_and_compares_on_cpu(tmp_path, algorithm, features,
                                                                                         alpha, precision):
    from litzoo.datamodules import GymDataModule
    from litzoo.envs import GridWorld
    from litzoo.modules import ValueFunctionApproximation

    module = ValueFunctionApproximation(algorithm=algorithm, features=features, alpha=alpha, n_steps=2,
                                        log_every_n_env_steps=10**9)
    trainer, probe = _rl_fit(module, GymDataModule("litzoo/GridWorld-v0", num_envs=4, batches_per_epoch=20), precision,
                             tmp_path / "rl.ckpt")
    assert module.env_steps == 4 * 20 * 2
    module.to(DEVICE)
    # numpy views of values learnt on the device (compare_with_exact runs numpy Bellman solvers)
    # td_linear learns v (25 states), the control algorithms q (25 x 5 actions)
    values = module.values() if algorithm == "td_linear" else module.action_values()
    assert isinstance(values, np.ndarray) and values.shape[0] == 25, type(values)
    assert np.isfinite(values).all() and np.abs(values).max() > 0  # rewards reached the table
    errors = module.compare_with_exact(GridWorld())
    assert all(np.isfinite(v) for v in errors.values() if isinstance(v, (float, int, np.floating))), errors
    image = module.plot(str(tmp_path / "vfa.png"))
    assert image.ndim == 3 and (tmp_path / "vfa.png").stat().st_size > 0
    loaded = _assert_checkpoint_loads_on_cpu(ValueFunctionApproximation, tmp_path / "rl.ckpt", module)
    reloaded = loaded.values() if algorithm == "td_linear" else loaded.action_values()
    np.testing.assert_allclose(reloaded, values, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ CoT SFT / Kimi RL
ADD = {"tasks": ["arithmetic"], "task_options": {"arithmetic": {"ops": "+"}}}
PROMPTS = ["12+34=", "90+9="]


def _assert_hf_export_matches(module, tmp_path: Path) -> None:
    """``module.export`` from the device, ``AutoModelForCausalLM``/``AutoTokenizer`` on the CPU: the same
    logits as the module on the device, and greedy answers of the module on the device decode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from litzoo.reasoning.policy import encode_prompt

    module.to(DEVICE).eval()
    out = module.export(tmp_path / "export")
    model, tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    ids = torch.tensor([encode_prompt(tok, PROMPTS[0])])
    with torch.no_grad(), _exact_fp32():
        theirs = model(input_ids=ids).logits.float()
        ours = module.policy(input_ids=ids.to(DEVICE)).logits.float().cpu()
    torch.testing.assert_close(theirs, ours, rtol=1e-3, atol=1e-3)
    answers = module.answer(PROMPTS, max_new_tokens=6)  # generation on the device, decoded on the host
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cot_sft_trains_on_device_and_exports_a_transformers_folder_for_cpu(tmp_path, precision):
    from lm_helpers import TINY_TEST_QWEN2

    from litzoo.datamodules.reasoning import ReasoningDataModule
    from litzoo.modules.cot_sft import CoTSFT

    module = CoTSFT(model_config=TINY_TEST_QWEN2, lr=3e-3, warmup_steps=2, eval_max_new_tokens=6)
    fixed_dm = ReasoningDataModule(**ADD, difficulties=[2], num_train=64, num_val=4, batch_size=32)
    fixed_dm.tokenizer = module.tokenizer
    fixed_dm.setup("fit")
    fixed = next(iter(fixed_dm.train_dataloader()))

    def loss() -> float:
        with torch.no_grad():
            return module.sft_loss(fixed).item()

    before = loss()
    probe = DeviceProbe(tmp_path / "sft.ckpt")
    dm = ReasoningDataModule(**ADD, difficulties=[2], num_train=64, num_val=4, batch_size=32)
    _trainer(precision, [probe], max_steps=20).fit(module, dm)
    probe.assert_all_on_device()
    _assert_autocast(probe, precision)
    _assert_finite_params(module)
    after = loss()
    assert after < before - 0.5, (before, after)  # it learns the traces
    _assert_hf_export_matches(module, tmp_path)
    _assert_checkpoint_loads_on_cpu(CoTSFT, tmp_path / "sft.ckpt", module)


class RefPolicyProbe(L.Callback):
    def __init__(self) -> None:
        self.devices: set[str] = set()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.devices |= {p.device.type for p in module.ref_policy.parameters()}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_kimi_rl_rolls_out_and_updates_on_device_and_exports_for_cpu(tmp_path, precision):
    from lm_helpers import TINY_TEST_QWEN2

    from litzoo.datamodules.reasoning import ReasoningDataModule
    from litzoo.modules.kimi_rl import KimiRL

    # random model, verifier rewards all 0: the length reward gives the policy gradient something to do
    module = KimiRL(model_config=TINY_TEST_QWEN2, k=4, max_new_tokens=6, eval_k=2, tau=0.1, lr=1e-3, length_penalty_weight=1.0)
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    probe, ref_probe = DeviceProbe(tmp_path / "rl.ckpt"), RefPolicyProbe()
    dm = ReasoningDataModule(**ADD, trace="direct", mode="rl", num_train=200, num_val=8, batch_size=4,
                             rl_steps_per_epoch=50)
    trainer = _trainer(precision, [probe, ref_probe], max_steps=3, limit_val_batches=1, val_check_interval=3)
    trainer.fit(module, dm)
    probe.assert_all_on_device(batches=False)  # RL batches are problems (text); rollouts live in the module
    _assert_autocast(probe, precision)
    _assert_finite_params(module)
    assert any(not torch.equal(before[k], v.cpu()) for k, v in module.policy.state_dict().items())
    assert ref_probe.devices == {DEVICE}  # the KL reference policy (kept out of state_dict) follows the module
    _finite_metrics(trainer)
    assert 0.0 <= trainer.callback_metrics["val/pass@1"] <= trainer.callback_metrics["val/pass@2"] <= 1.0
    _assert_hf_export_matches(module, tmp_path)
    _assert_checkpoint_loads_on_cpu(KimiRL, tmp_path / "rl.ckpt", module)
