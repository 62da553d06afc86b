"""VAE (AutoencoderKL, 16 latent channels): reconstruction learning, latent statistics, export, bad input."""

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL

from litzoo.datamodules import DigitsDataModule
from litzoo.modules.vae import VAE

# One torch thread and torch.manual_seed(0) before every test (tests/conftest.py): the learning tests train
# the same way alone, after other files, or wherever the suite left the thread count.


@pytest.mark.parametrize("kwargs, words", [
    ({"image_size": 6, "block_out_channels": (16, 32, 32)}, ["image_size=6", "divisible by 4"]),
    ({"norm_num_groups": 7}, ["norm_num_groups=7"]),
    ({"kl_weight": -1.0}, ["kl_weight"]),
])
def test_invalid_config_raises_at_construction(kwargs, words):
    with pytest.raises(ValueError) as err:
        VAE(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_vae_learns_to_reconstruct_digits_and_normalises_its_latents(tmp_path):
    torch.manual_seed(0)
    model = VAE(block_out_channels=(16, 32))
    dm = DigitsDataModule(batch_size=128)
    dm.setup("fit")
    x = dm.val_set.tensors[0]
    before = model.vae_loss(x, torch.Generator().manual_seed(0))[1].item()
    L.Trainer(max_steps=300, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0).fit(model, dm)
    with torch.no_grad():
        mse = torch.mean((model.decode(model.encode(x)) - x) ** 2).item()
    # Untrained: ~1.2 (measured); after 300 steps ~0.026 on held-out digits in [-1, 1] (an RMS error of ~0.16).
    assert before > 0.5 and mse < 0.05, (before, mse)
    z = model.encode(dm.train_set.tensors[0])
    assert z.shape[1:] == (16, 4, 4) == model.latent_shape
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3  # factors computed from the data

    model.export(tmp_path)
    loaded = AutoencoderKL.from_pretrained(tmp_path).eval()
    assert loaded.config.latent_channels == 16
    assert loaded.config.scaling_factor == pytest.approx(float(model.scaling_factor))
    assert loaded.config.shift_factor == pytest.approx(float(model.shift_factor))
    with torch.no_grad():
        latents = loaded.encode(x[:8]).latent_dist.mode()
        theirs = loaded.decode(latents).sample
        torch.testing.assert_close(theirs, model.vae.decode(model.vae.encode(x[:8]).latent_dist.mode()).sample)


def test_a_checkpoint_written_during_training_holds_the_latent_factors_of_its_weights(tmp_path):
    """ModelCheckpoint saves before on_train_end computes the factors: the checkpoint must not carry 1.0 / 0.0."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    model = VAE(block_out_channels=(16, 32))
    dm = DigitsDataModule(batch_size=256)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=10)
    L.Trainer(max_steps=10, accelerator="cpu", logger=False, callbacks=[checkpoint], enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0).fit(model, dm)
    restored = VAE.load_from_checkpoint(tmp_path / "last.ckpt")
    assert float(restored.scaling_factor) != 1.0 and float(restored.shift_factor) != 0.0
    dm.setup("fit")
    z = restored.encode(dm.train_set.tensors[0])  # the restored factors normalise the restored weights' latents
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3
