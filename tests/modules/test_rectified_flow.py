"""RectifiedFlowDiT: config validation, learning, Lightning integration, export, fine-tuning from a folder."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from torch.utils.data import DataLoader

from litzoo.callbacks import EMA
from litzoo.datamodules import DigitsDataModule
from litzoo.diffusion.flow import interpolate, velocity_target
from litzoo.metrics import class_accuracy
from litzoo.modules.rectified_flow import PIPELINE_ABSENT_COMPONENTS, RectifiedFlowDiT

# One torch thread and torch.manual_seed(0) before every test (tests/conftest.py): the learning tests train
# the same way alone, after other files, or wherever the suite left the thread count.

TINY = dict(num_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
            caption_projection_dim=16, pooled_projection_dim=16)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"sample_size": 8, "patch_size": 3}, ["patch_size=3", "sample_size=8", "[1, 2, 4, 8]"]),
        ({"caption_projection_dim": 48}, ["caption_projection_dim=48", "4 * 16 = 64", "caption_projection_dim=64"]),
        ({"sample_size": 32, "patch_size": 1, "pos_embed_max_size": 16},
         ["pos_embed_max_size=16", "32x32", "pos_embed_max_size>=32"]),
        ({"timestep_sampling": "beta"}, ["timestep_sampling='beta'", "logit_normal", "cosmap", "mode"]),
        ({"sampler": "ddim"}, ["sampler='ddim'", "euler", "heun"]),
        ({"qk_norm": "l3"}, ["qk_norm", "rms_norm"]),
        ({"timestep_sampling": "mode", "mode_scale": 5.0}, ["mode_scale"]),
        ({"shift": 0.0}, ["shift"]),
        ({"class_dropout": 1.0}, ["class_dropout"]),
        ({"num_classes": 0}, ["num_classes"]),
    ],
)
def test_invalid_config_raises_at_construction_naming_argument_and_fix(kwargs, words):
    # The caption case keeps the default widths (4 heads x 16), the others use the tiny ones.
    config = kwargs if "caption_projection_dim" in kwargs else {**TINY, **kwargs}
    with pytest.raises(ValueError) as err:
        RectifiedFlowDiT(**config)
    for word in words:
        assert word in str(err.value)


def test_sample_and_data_reject_bad_arguments(tmp_path, cpu_trainer):
    model = RectifiedFlowDiT(**TINY)
    with pytest.raises(ValueError, match="sampler"):
        model.sample(2, sampler="dpm")
    with pytest.raises(ValueError, match=r"class labels in \[0, 10\)"):
        model.sample(2, y=torch.tensor([0, 10]), steps=2)
    with pytest.raises(ValueError, match="num_classes=None"):
        RectifiedFlowDiT(**TINY, num_classes=None).sample(2, y=torch.tensor([0, 1]), steps=2)
    with pytest.raises(ValueError, match="image_size=16 but RectifiedFlowDiT was built with sample_size=8"):
        cpu_trainer(tmp_path, max_steps=1).fit(model, DigitsDataModule(image_size=16))
    with pytest.raises(ValueError, match="pretrained_path"):
        RectifiedFlowDiT(pretrained_path=str(tmp_path))


# ----------------------------------------------------------------------------- API
def test_forward_is_the_sd3_transformer_with_class_tokens_and_null_class():
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY).eval()
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1, 2, 3])
    out = model(x, t, y)
    assert out.shape == x.shape
    # The same call by hand: timestep scale 1000, context tokens and pooled vector of the class.
    by_hand = model.transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=model.conditioning.context_tokens[y],
                                pooled_projections=model.conditioning.class_pooled.weight[y]).sample
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((3,), 10)))  # None = null class (last row)
    assert model.conditioning.context_tokens.shape == (11, 4, 16)
    assert any(isinstance(m, torch.nn.RMSNorm) or "RMSNorm" in type(m).__name__
               for m in model.transformer.transformer_blocks[0].attn.modules())  # QK-norm is on


def test_cfg_scale_one_is_the_conditional_model_and_other_scales_change_samples():
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY).eval()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = torch.tensor([1, 2, 3])
    a = model.sample(3, steps=3, y=y, generator=g())
    b = model.sample(3, steps=3, y=y, cfg_scale=1.0, generator=g())
    c = model.sample(3, steps=3, y=y, cfg_scale=3.0, generator=g())
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_euler_sampler_is_the_diffusers_scheduler_loop_and_heun_uses_the_same_shifted_grid():
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, shift=3.0).eval()
    y = torch.tensor([4, 5])
    ours = model.sample(2, steps=6, sampler="euler", y=y, generator=torch.Generator().manual_seed(1),
                        return_latents=True)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(6)
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            v = model.transformer(hidden_states=z, timestep=timestep.expand(2), encoder_hidden_states=model.conditioning.context_tokens[y],
                                  pooled_projections=model.conditioning.class_pooled.weight[y]).sample
            z = scheduler.step(v, timestep, z).prev_sample
    torch.testing.assert_close(ours, z)
    heun = model.sample(2, steps=6, sampler="heun", y=y, generator=torch.Generator().manual_seed(1))
    assert heun.shape == ours.shape and torch.isfinite(heun).all()


def test_training_loss_is_mse_to_eps_minus_x0_at_timesteps_of_the_density():
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, class_dropout=0.0, timestep_sampling="logit_normal", shift=3.0)
    x0, y = torch.randn(512, 1, 8, 8), torch.arange(512) % 10
    loss, t = model.flow_loss(x0, {"y": y}, torch.Generator().manual_seed(0))
    # Recompute with the same generator draws in the same order.
    g = torch.Generator().manual_seed(0)
    t_ref = torch.sigmoid(torch.randn(512, generator=g))
    t_ref = 3 * t_ref / (1 + 2 * t_ref)
    eps = torch.randn(x0.shape, generator=g)
    torch.testing.assert_close(t, t_ref)
    expected = ((model(interpolate(x0, eps, t_ref), t_ref, y) - velocity_target(x0, eps)) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert t.median() > 0.6  # shift 3 moves the logit-normal median 0.5 to 0.75


# ----------------------------------------------------------------------------- learning
def _accuracy(model, steps=10, per_class=30, sampler="euler", cfg_scale=1.0):
    y = torch.arange(10 * per_class) % 10
    images = model.sample(len(y), steps=steps, sampler=sampler, y=y, cfg_scale=cfg_scale,
                          generator=torch.Generator().manual_seed(0))
    return class_accuracy(images, y)


FAST = dict(num_layers=2, lr=3e-3, warmup_steps=50)


@pytest.mark.slow  # ~1.5-2 min on 1 CPU thread; the fast suite has the image-folder test below
def test_class_conditional_dit_learns_the_digit_classes(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**FAST)
    cpu_trainer(tmp_path, max_steps=400, callbacks=[EMA(decay=0.99)], limit_val_batches=0).fit(model, DigitsDataModule())
    # Measured 0.89 (euler, 10 steps, cfg 2); chance = 0.1. An unconditional or untrained net stays near 0.1.
    assert _accuracy(model, cfg_scale=2.0) >= 0.6


def test_class_tokens_learn_the_labels_of_an_image_folder(tmp_path, cpu_trainer, brightness_folder):
    # The class-token path (learned tokens, label dropout, CFG null class) on two flat classes: seconds, not minutes.
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, num_classes=2, lr=3e-3, warmup_steps=5)
    cpu_trainer(tmp_path, limit_val_batches=0, max_steps=100).fit(model, brightness_folder(tmp_path / "data"))
    images = model.sample(16, steps=10, y=torch.arange(16) % 2, generator=torch.Generator().manual_seed(0))
    bright, dark = images[0::2].mean().item(), images[1::2].mean().item()
    # Data means 0.84 / 0.16; measured 0.83 / 0.19 (seeds 1, 2: 0.84 / 0.18, 0.84 / 0.17); untrained ~0.49 / 0.48.
    assert dark < 0.4 < 0.6 < bright, (dark, bright)


@pytest.mark.slow
def test_class_conditional_dit_reaches_high_class_accuracy_at_10_euler_steps(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(lr=2e-3, warmup_steps=100)
    cpu_trainer(tmp_path, max_steps=3000, callbacks=[EMA(decay=0.995)], limit_val_batches=0).fit(model, DigitsDataModule())
    for sampler, steps, w in [("euler", 10, 1.0), ("euler", 4, 2.0), ("heun", 5, 2.0)]:
        print(f"class accuracy {sampler} {steps} steps cfg {w}: {_accuracy(model, steps, 50, sampler, w):.3f}")
    accuracy = _accuracy(model, steps=10, per_class=50, cfg_scale=2.0)
    print(f"class accuracy euler 10 steps cfg 2.0: {accuracy:.3f}")
    assert accuracy >= 0.95


# ----------------------------------------------------------------------------- Lightning integration
def test_bf16_mixed_training_reduces_the_loss(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, lr=3e-3, warmup_steps=10)
    dm = DigitsDataModule(batch_size=128)
    dm.setup("fit")
    x, y = dm.val_set.tensors
    before = model.flow_loss(x, {"y": y}, torch.Generator().manual_seed(0), drop=False)[0].item()
    cpu_trainer(tmp_path, max_steps=60, precision="bf16-mixed", limit_val_batches=0).fit(model, dm)
    after = model.flow_loss(x, {"y": y}, torch.Generator().manual_seed(0), drop=False)[0].item()
    assert np.isfinite(after) and after < 0.8 * before


def test_resume_from_checkpoint_continues_the_same_loss_curve(tmp_path, cpu_trainer, loss_recorder):
    dm_kwargs = dict(batch_size=256)  # 1617 training digits: 6 full batches per epoch
    # A fixed total_steps: the interrupted run must follow the same lr schedule as the full one.
    make = lambda: RectifiedFlowDiT(**TINY, warmup_steps=5, total_steps=40)  # noqa: E731
    full = loss_recorder()
    torch.manual_seed(0)
    cpu_trainer(tmp_path / "a", max_epochs=4, callbacks=[full, EMA(decay=0.9)], limit_val_batches=0).fit(
        make(), DigitsDataModule(**dm_kwargs))
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    torch.manual_seed(0)
    cpu_trainer(tmp_path / "b", max_epochs=2, callbacks=[ckpt, EMA(decay=0.9)], enable_checkpointing=True,
             limit_val_batches=0).fit(make(), DigitsDataModule(**dm_kwargs))
    resumed = loss_recorder()
    torch.manual_seed(123)  # the global RNG state must not matter
    cpu_trainer(tmp_path / "b", max_epochs=4, callbacks=[resumed, EMA(decay=0.9)], limit_val_batches=0).fit(
        make(), DigitsDataModule(**dm_kwargs), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    steps = sorted(full.losses)
    assert sorted(resumed.losses) == steps[len(steps) // 2:]  # exactly the second half, no step repeated
    np.testing.assert_allclose([resumed.losses[s] for s in resumed.losses],
                               [full.losses[s] for s in resumed.losses], rtol=1e-5)


def test_load_from_checkpoint_with_weights_only_gives_the_same_model(tmp_path, cpu_trainer):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = RectifiedFlowDiT(**TINY, qk_norm=None, shift=2.0)
    cpu_trainer(tmp_path, max_steps=3, callbacks=[ckpt], enable_checkpointing=True, limit_val_batches=0).fit(
        model, DigitsDataModule(batch_size=64))
    raw = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain types only: no pickle needed
    assert raw["litzoo_class"] == "litzoo.modules.rectified_flow.RectifiedFlowDiT"
    loaded = RectifiedFlowDiT.load_from_checkpoint(tmp_path / "last.ckpt")
    assert loaded.hparams.qk_norm is None and loaded.hparams.shift == 2.0
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = torch.arange(4)
    torch.testing.assert_close(loaded.sample(4, steps=4, y=y, generator=g()), model.sample(4, steps=4, y=y, generator=g()))


# ----------------------------------------------------------------------------- export
def test_export_reloads_in_diffusers_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, shift=3.0).eval()
    model.export(tmp_path)
    assert not list(tmp_path.rglob("*.bin"))  # safetensors only
    transformer = SD3Transformer2DModel.from_pretrained(tmp_path, subfolder="transformer").eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert scheduler.config.shift == 3.0
    config = json.loads((tmp_path / "litzoo.json").read_text())
    tokens = torch.tensor(config["context_tokens"])
    pooled = torch.tensor(config["pooled_class_embeddings"])
    torch.testing.assert_close(tokens, model.conditioning.context_tokens.detach())
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.8]), torch.tensor([0, 5, 10])
    with torch.no_grad():
        theirs = transformer(hidden_states=x, timestep=t * config["timestep_scale"], encoder_hidden_states=tokens[y],
                             pooled_projections=pooled[y]).sample
        assert torch.equal(theirs, model(x, t, y))
    # The reloaded scheduler gives the same sampling grid as the module's.
    ours = model.scheduler()
    ours.set_timesteps(8)
    scheduler.set_timesteps(8)
    torch.testing.assert_close(ours.sigmas, scheduler.sigmas)


def test_exported_folder_runs_in_stable_diffusion3_pipeline_and_reproduces_sample(tmp_path):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, shift=3.0).eval()
    model.export(tmp_path)
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path, **dict.fromkeys(PIPELINE_ABSENT_COMPONENTS))
    config = json.loads((tmp_path / "litzoo.json").read_text())
    tokens, pooled = torch.tensor(config["context_tokens"]), torch.tensor(config["pooled_class_embeddings"])
    y = torch.tensor([1, 2, 3])
    null = torch.full_like(y, config["null_class_label"])
    theirs = pipe(prompt_embeds=tokens[y], pooled_prompt_embeds=pooled[y], negative_prompt_embeds=tokens[null],
                  negative_pooled_prompt_embeds=pooled[null], guidance_scale=2.0, num_inference_steps=5,
                  output_type="latent", generator=torch.Generator().manual_seed(0)).images
    ours = model.sample(3, steps=5, y=y, cfg_scale=2.0, generator=torch.Generator().manual_seed(0), return_latents=True)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def _tiny_sd3_folder(path, channels=4):
    torch.manual_seed(1)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=channels, out_channels=channels, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=12,
                                        caption_projection_dim=16, pooled_projection_dim=10, pos_embed_max_size=8)
    transformer.save_pretrained(path / "transformer")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(path / "scheduler")
    return transformer


def test_fine_tunes_a_local_sd3_folder_on_precomputed_prompt_embeddings(tmp_path, cpu_trainer):
    original = _tiny_sd3_folder(tmp_path / "sd3")
    model = RectifiedFlowDiT(pretrained_path=str(tmp_path / "sd3"), num_classes=None, lr=1e-3, warmup_steps=1)
    for name, value in original.state_dict().items():  # the pretrained weights, not a fresh init
        assert torch.equal(model.transformer.state_dict()[name], value)
    g = torch.Generator().manual_seed(0)
    n = 64
    images = torch.rand(n, 4, 8, 8, generator=g) * 2 - 1
    prompt_embeds, pooled = torch.randn(n, 5, 12, generator=g), torch.randn(n, 10, generator=g)
    rows = [{"images": images[i], "prompt_embeds": prompt_embeds[i], "pooled_prompt_embeds": pooled[i]}
            for i in range(n)]
    loader = DataLoader(rows, batch_size=16, shuffle=False)  # default collate stacks the dict entries
    before = model.flow_loss(images, {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled},
                             torch.Generator().manual_seed(0), drop=False)[0].item()
    cpu_trainer(tmp_path, max_epochs=8, limit_val_batches=0).fit(model, train_dataloaders=loader)
    after = model.flow_loss(images, {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled},
                            torch.Generator().manual_seed(0), drop=False)[0].item()
    assert after < before
    assert not torch.equal(model.transformer.proj_out.weight, original.proj_out.weight)
    out = model.sample(2, steps=3, prompt_embeds=prompt_embeds[:2], pooled_prompt_embeds=pooled[:2], cfg_scale=2.0)
    assert out.shape == (2, 4, 8, 8)


# ----------------------------------------------------------------------------- CLI + DDP
@pytest.mark.slow  # two processes start and import torch: ~40-80 s on the shared 2-core machine
def test_cli_fit_with_two_process_cpu_ddp_trains_and_exports(tmp_path, cli_fit_two_processes):
    log_dir, val = cli_fit_two_processes(tmp_path, "configs/rf_digits.yaml", "--trainer.max_steps", "40",
                                         "--trainer.log_every_n_steps", "5", "--model.init_args.num_layers", "1",
                                         "--model.init_args.eval_every_n_epochs", "0")
    assert len(val) >= 2 and val[-1] < val[0]  # it trains
    assert SD3Transformer2DModel.from_pretrained(log_dir / "export", subfolder="transformer").config.num_layers == 1
    assert (log_dir / "samples" / "final.png").is_file()


def test_fine_tunes_on_an_image_folder_with_one_precomputed_prompt_per_class(tmp_path, cpu_trainer):
    from PIL import Image
    from safetensors.torch import save_file

    from litzoo.datamodules import ImageFolderDataModule

    # Two class folders: dark images and bright images; the prompt of class k is row k of the file.
    g = torch.Generator().manual_seed(0)
    for name, level in [("0_dark", 40), ("1_bright", 215)]:  # sorted folder names give labels 0, 1
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(24):
            pixels = (level + torch.randint(-30, 30, (8, 8, 3), generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(tmp_path / "data" / name / f"{i}.png")
    save_file({"prompt_embeds": torch.randn(2, 5, 12, generator=g), "pooled_prompt_embeds": torch.randn(2, 10, generator=g)},
              tmp_path / "prompts.safetensors")
    _tiny_sd3_folder(tmp_path / "sd3", channels=3)
    model = RectifiedFlowDiT(pretrained_path=str(tmp_path / "sd3"), prompt_embeds_path=str(tmp_path / "prompts.safetensors"),
                             num_classes=None, lr=3e-3, warmup_steps=5, class_dropout=0.0)
    assert model.num_classes == 2 and not hasattr(model.conditioning, "context_tokens")
    dm = ImageFolderDataModule(str(tmp_path / "data"), image_size=8, batch_size=16, random_flip=False, val_fraction=0.25)
    cpu_trainer(tmp_path, max_steps=100, limit_val_batches=0).fit(model, dm)
    # The prompt decides the brightness of the samples: the condition was learned from the prompts.
    images = model.sample(16, steps=10, y=torch.arange(16) % 2, generator=torch.Generator().manual_seed(0))
    dark, bright = images[0::2].mean().item(), images[1::2].mean().item()
    assert dark < 0.4 < 0.6 < bright, (dark, bright)
    with pytest.raises(ValueError, match="num_classes=3 but .* holds 2 prompts"):
        RectifiedFlowDiT(pretrained_path=str(tmp_path / "sd3"), prompt_embeds_path=str(tmp_path / "prompts.safetensors"),
                         num_classes=3)


def test_trains_on_normalised_vae_latents_and_decodes_samples(tmp_path, cpu_trainer):
    from litzoo.modules.vae import VAE

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    x = dm.train_set.tensors[0]
    vae = VAE(block_out_channels=(16, 32), latent_channels=4)
    vae.compute_latent_statistics(x)
    vae.export(tmp_path / "vae")
    model = RectifiedFlowDiT(**{**TINY, "sample_size": 4, "in_channels": 4, "pos_embed_max_size": 4},
                             vae_path=str(tmp_path / "vae"))
    z = model.to_latents(x)
    assert z.shape == (len(x), 4, 4, 4)
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3  # the VAE's shift/scale from data
    torch.testing.assert_close(model.from_latents(z), vae.vae.decode(vae.vae.encode(x).latent_dist.mode()).sample,
                               atol=1e-4, rtol=1e-4)
    cpu_trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(model, dm)
    assert all(not p.requires_grad for p in model.vae.parameters())
    torch.testing.assert_close(model.vae.state_dict()["decoder.conv_out.weight"], vae.vae.state_dict()["decoder.conv_out.weight"])
    images = model.sample(2, steps=2, y=torch.tensor([0, 1]))
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    model.export(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderKL"]
    # With the VAE in the folder, StableDiffusion3Pipeline decodes to the same images as module.sample.
    absent = dict.fromkeys(c for c in PIPELINE_ABSENT_COMPONENTS if c != "vae")
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "export", **absent)
    y, null = torch.tensor([3, 7]), torch.tensor([10, 10])
    tokens, pooled = model.conditioning.condition_tables()
    with torch.no_grad():
        theirs = pipe(prompt_embeds=tokens[y], pooled_prompt_embeds=pooled[y], negative_prompt_embeds=tokens[null],
                      negative_pooled_prompt_embeds=pooled[null], guidance_scale=2.0, num_inference_steps=3,
                      height=8, width=8, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    ours = model.sample(2, steps=3, y=y, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="set in_channels=4 and sample_size=4"):
        RectifiedFlowDiT(**TINY, vae_path=str(tmp_path / "vae"))
