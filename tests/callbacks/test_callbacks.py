import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from litzoo.callbacks import EMA, NaNGuard, NonFiniteLossError, SampleGrid, make_grid
from litzoo.callbacks.nan_guard import fix_hint
from litzoo.callbacks.ema import ema_decay


class Regression(L.LightningModule):
    """y = 2x fitted by SGD; ``nan_at`` poisons the loss at that step."""

    def __init__(self, nan_at: int = -1):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.nan_at = nan_at
        self.trajectory = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.w * x - y) ** 2).mean()
        if self.global_step == self.nan_at:
            loss = loss * float("nan")
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.trajectory.append(self.w.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    @torch.no_grad()
    def sample(self, n, *, steps, sampler=None, y=None, cfg_scale=1.0, generator=None):
        # An "image model" whose sample k is filled with its class value / 10.
        return (y.float() / 10).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()

    num_classes = 10


def _loader():
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    return DataLoader(TensorDataset(x, 2 * x), batch_size=8)


def _trainer(tmp_path, callbacks, steps=16):
    return L.Trainer(max_steps=steps, callbacks=callbacks, default_root_dir=tmp_path, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_ema_decay_warms_up_then_caps():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.9, 0, warmup=False) == 0.9


def test_ema_callback_leaves_the_exponential_average_of_the_trajectory(tmp_path):
    model = Regression()
    _trainer(tmp_path, [EMA(decay=0.9)]).fit(model, _loader())
    # Reference EMA over the weights seen after each optimizer step (first update copies).
    expected = model.trajectory[0]
    for n, w in enumerate(model.trajectory[1:], start=1):
        d = ema_decay(0.9, n)
        expected = d * expected + (1 - d) * w
    torch.testing.assert_close(model.w.detach(), expected)
    assert not torch.allclose(model.w.detach(), model.trajectory[-1])  # really the average, not the last weights


def test_nan_guard_stops_with_step_and_loss_in_message_before_weights_are_hit(tmp_path):
    model = Regression(nan_at=3)
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 3"):
        _trainer(tmp_path, [NaNGuard()]).fit(model, _loader())
    assert torch.isfinite(model.w).all()  # checked before backward: the NaN step never reached the weights


def _checkpoints_on_disk(folder):
    """{file name: (global step, all floating tensors of weights and optimizer state finite)}."""
    out = {}
    for path in sorted(folder.glob("*.ckpt")):
        ckpt = torch.load(path, weights_only=True)
        tensors = list(ckpt["state_dict"].values())
        tensors += [v for s in ckpt["optimizer_states"] for p in s["state"].values() for v in p.values()
                    if torch.is_tensor(v) and v.is_floating_point()]
        out[path.name] = (ckpt["global_step"], all(bool(torch.isfinite(t).all()) for t in tensors))
    return out


@pytest.mark.parametrize("every_n_steps", [1, 2, 4])
def test_nan_guard_leaves_no_non_finite_checkpoint_and_the_weights_of_the_last_finite_step(tmp_path, every_n_steps):
    model = Regression(nan_at=3)  # the loss of step 3 (the 4th optimizer step) is NaN
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{step}", save_top_k=-1,
                                                      save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(max_steps=16, callbacks=[NaNGuard(every_n_steps), checkpoints], default_root_dir=tmp_path,
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 3\b"):
        trainer.fit(model, _loader())
    # The weights after step 2 (the trajectory holds the weights after each finished step), bit for bit.
    assert len(model.trajectory) == 3
    assert torch.equal(model.w.detach(), model.trajectory[2]) and torch.isfinite(model.w).all()
    # Checkpoints after steps 0, 1, 2 (global_step 1..3), all finite; nothing after the NaN step.
    assert _checkpoints_on_disk(tmp_path / "ckpts") == {
        "last.ckpt": (3, True), "step=1.ckpt": (1, True), "step=2.ckpt": (2, True), "step=3.ckpt": (3, True)}
    torch.testing.assert_close(torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]["w"],
                               model.trajectory[2], rtol=0, atol=0)


def test_nan_guard_checks_the_losses_since_its_last_check_when_training_ends(tmp_path):
    model = Regression(nan_at=3)
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 3 \(found by the check at global step 5"):
        _trainer(tmp_path, [NaNGuard(every_n_steps=8)], steps=5).fit(model, _loader())
    assert torch.equal(model.w.detach(), model.trajectory[2])


def test_nan_guard_refuses_to_write_a_checkpoint_with_non_finite_weights_even_with_finite_losses(tmp_path):
    class PoisonAfterStep2(L.Callback):  # e.g. an inf gradient from a finite loss
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                pl_module.w.data.fill_(float("inf"))

    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{step}", save_top_k=-1,
                                                      every_n_train_steps=1)
    trainer = L.Trainer(max_steps=16, callbacks=[PoisonAfterStep2(), NaNGuard(4), checkpoints],
                        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(NonFiniteLossError, match=r"Refusing to write a checkpoint at global step 3: non-finite values "
                                                 r"in w\b"):
        trainer.fit(Regression(), _loader())
    assert _checkpoints_on_disk(tmp_path / "ckpts") == {"step=1.ckpt": (1, True), "step=2.ckpt": (2, True)}


def test_nan_guard_hint_on_manual_optimisation_modules_names_their_max_grad_norm(tmp_path):
    import inspect

    from litzoo.datamodules.gym import GymDataModule
    from litzoo.envs.toy import ContextBandit
    from litzoo.modules.actor_critic import ActorCritic

    class Diverging(ActorCritic):
        def manual_backward(self, loss, *args, **kwargs):
            super().manual_backward(loss * float("nan") if self.num_updates == 2 else loss, *args, **kwargs)

    for every_n_steps in (1, 2):
        module = Diverging(hidden_sizes=(8,), n_steps=2, max_grad_norm=None)
        trainer = L.Trainer(max_steps=8, callbacks=[NaNGuard(every_n_steps)], default_root_dir=tmp_path,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        with pytest.raises(NonFiniteLossError) as err:
            trainer.fit(module, GymDataModule(ContextBandit, num_envs=2, batches_per_epoch=8))
        message = str(err.value)
        assert "nan at global step 2" in message
        assert "--model.init_args.max_grad_norm 0.5, now None" in message and "gradient_clip_val does not" in message
        assert "max_grad_norm" in inspect.signature(ActorCritic).parameters  # the hint names a real argument
        assert all(torch.isfinite(p).all() for p in module.parameters())
    # Automatic optimisation: the Trainer's clipping works there.
    assert "--trainer.gradient_clip_val 1.0" in fix_hint(Regression())


def test_make_grid_places_images_row_major():
    images = torch.stack([torch.full((1, 2, 2), i / 5) for i in range(6)])
    grid = make_grid(images, nrow=3, padding=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == round(0.2 * 255) and grid[4, 1, 0] == round(0.6 * 255)
    with pytest.raises(ValueError, match="N, C, H, W"):
        make_grid(torch.zeros(3, 4, 4))


def test_sample_grid_writes_png_with_one_column_per_class(tmp_path):
    callback = SampleGrid(every_n_steps=8, n=20, steps=1, upscale=1)
    _trainer(tmp_path, [callback]).fit(Regression(), _loader())
    pngs = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert pngs == ["final.png", "step_000008.png", "step_000016.png"]
    grid = np.asarray(Image.open(tmp_path / "samples" / "final.png"))
    assert grid.shape == (2 * 5 + 1, 10 * 5 + 1)  # 2 rows of 10 classes, 4x4 images + padding
    # column k holds class k: value k/10
    assert grid[1, 1 + 3 * 5] == round(0.3 * 255) and grid[6, 1 + 3 * 5] == round(0.3 * 255)


def test_init_from_checkpoint_loads_an_rl_module_built_in_setup_with_a_fresh_optimizer_and_new_lr(tmp_path):
    from litzoo.base import CheckpointError
    from litzoo.callbacks import InitFromCheckpoint
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.envs.toy import ContextBandit
    from litzoo.modules.actor_critic import ActorCritic

    def run(module, callbacks, steps):
        saves = any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks)
        trainer = L.Trainer(max_steps=steps, callbacks=callbacks, default_root_dir=tmp_path, logger=False,
                            enable_checkpointing=saves, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, GymDataModule(ContextBandit, num_envs=2, batches_per_epoch=8))
        return trainer

    first = ActorCritic(hidden_sizes=(8,), n_steps=2, lr=0.01)
    run(first, [L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="first")], 3)

    class Start(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}
            optimizer = trainer.optimizers[0]
            self.lr, self.optimizer_state = optimizer.param_groups[0]["lr"], len(optimizer.state)
            self.env_steps = pl_module.env_steps

    start = Start()
    init_from = InitFromCheckpoint(str(tmp_path / "first.ckpt"))
    run(ActorCritic(hidden_sizes=(8,), n_steps=2, lr=0.001), [init_from, start], 1)
    assert start.state.keys() == first.state_dict().keys()
    assert all(torch.equal(start.state[k], v) for k, v in first.state_dict().items())
    assert (start.lr, start.optimizer_state, start.env_steps) == (0.001, 0, 0)
    with pytest.raises(CheckpointError, match=r"Cannot initialise ActorCritic .* different shapes: "
                                              r".*\(checkpoint \(8, 2\), module \(16, 2\)\)"):
        run(ActorCritic(hidden_sizes=(16,), n_steps=2), [InitFromCheckpoint(str(tmp_path / "first.ckpt"))], 1)


def test_export_on_fit_end_replaces_an_earlier_export_but_never_deletes_other_files(tmp_path):
    from types import SimpleNamespace

    from litzoo.callbacks import ExportOnFitEnd
    from litzoo.modules import DDPM

    module = DDPM(data_dim=2, num_classes=None, mlp_hidden=8, mlp_depth=1)
    trainer = SimpleNamespace(log_dir=str(tmp_path), default_root_dir=str(tmp_path), is_global_zero=True,
                              interrupted=False)
    out = tmp_path / "mine"
    ExportOnFitEnd(str(out)).on_fit_end(trainer, module)  # empty: written
    ExportOnFitEnd(str(out)).on_fit_end(trainer, module)  # an earlier export (a resumed fit): replaced
    assert (out / "litzoo.json").is_file() and (out / "README.md").is_file()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        ExportOnFitEnd(str(notes)).on_fit_end(trainer, module)
    assert (notes / "keep.txt").read_text() == "mine"
