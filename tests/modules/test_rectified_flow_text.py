"""RectifiedFlowDiT with a text encoder (prompts, CFG, checkpoint, SD3 pipeline export) and cached VAE latents."""

import json

import lightning as L
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, CLIPTextModelWithProjection

from litzoo.data.latents import CachedLatents
from litzoo.datamodules import DigitsDataModule
from litzoo.modules.rectified_flow import PIPELINE_ABSENT_COMPONENTS, RectifiedFlowDiT

# One torch thread and torch.manual_seed(0) before every test (tests/conftest.py): the learning tests train
# the same way alone, after other files, or wherever the suite left the thread count.

TINY = dict(num_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
            caption_projection_dim=16, pooled_projection_dim=16)
# A 1-layer CLIP text encoder: hidden 16 = joint_attention_dim, projection 16 = pooled_projection_dim.
TEXT = dict(hidden_size=16, projection_dim=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32)


def _text_model(**kwargs):
    torch.manual_seed(0)
    return RectifiedFlowDiT(**{**TINY, "text_encoder": TEXT, **kwargs})


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, words", [
    ({"hidden_size": 32}, ["hidden_size=32", "joint_attention_dim=16", "text_encoder['hidden_size']=16"]),
    ({"projection_dim": 8}, ["projection_dim=8", "pooled_projection_dim=16", "text_encoder['projection_dim']=16"]),
])
def test_text_encoder_width_mismatch_raises_naming_both_widths_and_the_fix(override, words):
    with pytest.raises(ValueError) as err:
        RectifiedFlowDiT(**TINY, text_encoder={**TEXT, **override})
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"text_encoder": {**TEXT, "vocab_size": 10}}, r"\['vocab_size'\].*set from the tokenizer"),
    ({"text_encoder": {**TEXT, "hiden_size": 16}}, r"\['hiden_size'\].*not CLIPTextConfig fields"),
    ({"text_encoder": TEXT, "text_encoder_path": "/nonexistent"}, "set only one"),
    ({"class_prompts": ["a", "b"]}, "class_prompts needs a text encoder"),
    ({"text_encoder": TEXT, "class_prompts": ["a", "b"], "num_classes": 3},
     r"num_classes=3 but there are 2 class_prompts; set num_classes=2"),
    ({"text_encoder": TEXT, "class_prompts": ["a", "\u00e9t\u00e9"], "num_classes": None}, "cannot represent"),
    ({"text_encoder_path": "/nonexistent"}, "text_encoder_path='/nonexistent' holds no text encoder"),
])
def test_invalid_text_configuration_raises_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RectifiedFlowDiT(**TINY, **kwargs)


def test_prompts_given_to_a_class_label_model_raise_a_clear_error(tmp_path, cpu_trainer):
    model = RectifiedFlowDiT(**TINY)
    with pytest.raises(ValueError, match="no text encoder .*Pass y= / prompt_embeds="):
        model.sample(2, steps=2, prompts=["a photo of the digit one", "a photo of the digit two"])
    rows = [{"images": torch.zeros(1, 8, 8), "prompts": "a photo"} for _ in range(4)]
    with pytest.raises(ValueError, match="no text encoder"):
        cpu_trainer(tmp_path, limit_val_batches=0, max_steps=1).fit(model, DataLoader(rows, batch_size=2))
    # And the text model's own misuse: labels without class prompts, a batch with no condition, wrong counts.
    text = _text_model(num_classes=None)
    with pytest.raises(ValueError, match="without class_prompts; pass prompts"):
        text.sample(2, steps=2, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="holds 1 prompts for n=2"):
        text.sample(2, steps=2, prompts=["one"])
    with pytest.raises(ValueError, match="one condition"):
        _text_model(class_prompts=["a", "b"], num_classes=None).sample(2, steps=2, y=[0, 1], prompts="a")
    with pytest.raises(ValueError, match="without prompts or labels"):
        cpu_trainer(tmp_path, limit_val_batches=0, max_steps=1).fit(text, DataLoader(torch.zeros(4, 1, 8, 8), batch_size=2))


# ----------------------------------------------------------------------------- the condition
def test_prompts_are_tokenized_bos_chars_eot_and_pooled_at_eot():
    model = _text_model(num_classes=None).eval()
    tok = model.conditioning.tokenizer
    ids = tok(["ab"], padding="max_length", truncation=True, return_tensors="pt").input_ids[0]
    chars = tok.encode("ab", add_special_tokens=False)
    assert ids.tolist() == [tok.bos_token_id, *chars, tok.eos_token_id] + [tok.pad_token_id] * (32 - 4)
    assert tok.eos_token_id != 2  # id 2 would make CLIP pool at the arg-max id instead of at <eot>
    tokens, pooled = model.encode_prompts(["ab", "abc"])
    assert tokens.shape == (2, 32, 16) and pooled.shape == (2, 16)
    with torch.no_grad():
        hidden = model.conditioning.text_encoder.text_model(input_ids=tok(["ab", "abc"], padding="max_length",
                                                             return_tensors="pt").input_ids).last_hidden_state
        by_hand = model.conditioning.text_encoder.text_projection(hidden[[0, 1], [3, 4]])  # the <eot> positions
    torch.testing.assert_close(pooled, by_hand)
    # Causal encoder: "ab" and "abc" share <bos> a b, so their first three token states agree; the rest differ.
    torch.testing.assert_close(tokens[0, :3], tokens[1, :3])
    assert not torch.allclose(tokens[0, 3], tokens[1, 3])


def test_forward_uses_the_encoder_outputs_labels_map_to_class_prompts_and_null_is_zeros():
    prompts = ["a photo of the digit zero", "a photo of the digit one", "a photo of the digit two"]
    model = _text_model(class_prompts=prompts, num_classes=None).eval()
    assert model.num_classes == 3 and not hasattr(model.conditioning, "context_tokens")
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.8]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        tokens, pooled = model.encode_prompts([prompts[k] for k in y])
        by_hand = model.transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=tokens,
                                    pooled_projections=pooled).sample
        torch.testing.assert_close(model(x, t, y), by_hand, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, t, prompt_embeds=tokens, pooled_prompt_embeds=pooled), by_hand)
        null = model.transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=torch.zeros_like(tokens),
                                 pooled_projections=torch.zeros_like(pooled)).sample
        torch.testing.assert_close(model(x, t), null)  # y=None: the null prompt (zeros)
        torch.testing.assert_close(model(x, t, torch.full((3,), model.null_class)), null)  # what label dropout uses


def test_cfg_sampling_with_prompts_is_the_zero_embedding_guided_euler_loop():
    model = _text_model(num_classes=None, class_dropout=0.2).eval()
    prompts = ["dark", "bright"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ours = model.sample(2, steps=3, prompts=prompts, cfg_scale=3.0, generator=g(), return_latents=True)
    tokens, pooled = model.encode_prompts(prompts)
    z = torch.randn(2, 1, 8, 8, generator=g())
    scheduler = model.scheduler()
    scheduler.set_timesteps(3)
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            t = (timestep / 1000).expand(2)
            v_c = model(z, t, prompt_embeds=tokens, pooled_prompt_embeds=pooled)
            v_0 = model(z, t, prompt_embeds=torch.zeros_like(tokens), pooled_prompt_embeds=torch.zeros_like(pooled))
            z = scheduler.step(v_0 + 3.0 * (v_c - v_0), timestep, z).prev_sample
    torch.testing.assert_close(ours, z, atol=1e-5, rtol=1e-5)
    single = model.sample(2, steps=3, prompts="dark", cfg_scale=3.0, generator=g(), return_latents=True)
    torch.testing.assert_close(single[0], ours[0], atol=1e-5, rtol=1e-5)  # one string = that prompt for all


# ----------------------------------------------------------------------------- training
def test_text_model_learns_the_prompts_of_an_image_folder_with_a_frozen_random_encoder(tmp_path, cpu_trainer,
                                                                                      brightness_folder):
    dm = brightness_folder(tmp_path / "data")
    model = _text_model(num_classes=None, lr=3e-3, warmup_steps=5, class_dropout=0.1)
    frozen = {k: v.clone() for k, v in model.conditioning.text_encoder.state_dict().items()}
    cpu_trainer(tmp_path, limit_val_batches=0, max_steps=100).fit(model, dm)
    assert model.hparams.class_prompts == ["bright", "dark"]  # taken from the folder names at fit
    assert all(torch.equal(frozen[k], v) for k, v in model.conditioning.text_encoder.state_dict().items())  # frozen (default)
    # The prompt decides the brightness: the flow learned the condition through the text encoder.
    images = model.sample(16, steps=10, prompts=["dark", "bright"] * 8, generator=torch.Generator().manual_seed(0))
    dark, bright = images[0::2].mean().item(), images[1::2].mean().item()
    # Data means 0.16 / 0.84; measured 0.28 / 0.78 (seeds 1, 2: 0.19 / 0.83, 0.23 / 0.83); no condition gives ~0.5 both.
    assert dark < 0.4 < 0.6 < bright, (dark, bright)
    by_label = model.sample(16, steps=10, y=torch.arange(16) % 2, generator=torch.Generator().manual_seed(0))
    assert by_label[0::2].mean() > 0.6 > 0.4 > by_label[1::2].mean()  # label 0 = "bright"


def test_train_text_encoder_updates_the_encoder_with_the_flow_loss(tmp_path, cpu_trainer):
    model = _text_model(num_classes=None, train_text_encoder=True, lr=3e-3, warmup_steps=1)
    before = {k: v.clone() for k, v in model.conditioning.text_encoder.named_parameters()}
    rows = [{"images": torch.rand(1, 8, 8) * 2 - 1, "prompts": ["dark", "bright"][i % 2]} for i in range(8)]
    cpu_trainer(tmp_path, limit_val_batches=0, max_steps=3).fit(model, DataLoader(rows, batch_size=4))  # prompts in the batch
    after = dict(model.conditioning.text_encoder.named_parameters())
    assert all(p.requires_grad for p in after.values())
    assert not torch.equal(before["text_projection.weight"], after["text_projection.weight"])
    assert not torch.equal(before["text_model.embeddings.token_embedding.weight"],
                           after["text_model.embeddings.token_embedding.weight"])


def test_load_from_checkpoint_with_weights_only_restores_encoder_and_class_prompts(tmp_path, cpu_trainer):
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = _text_model(train_text_encoder=True)  # num_classes=10: the digits' 10 prompts are adopted at fit
    cpu_trainer(tmp_path, limit_val_batches=0, max_steps=3, callbacks=[ckpt], enable_checkpointing=True).fit(
        model, DigitsDataModule(batch_size=64))
    raw = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain types only
    assert raw["hyper_parameters"]["text_encoder"] == TEXT
    assert raw["hyper_parameters"]["class_prompts"][3] == "a photo of the digit three"
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint's weights
    loaded = RectifiedFlowDiT.load_from_checkpoint(tmp_path / "last.ckpt")
    assert loaded.num_classes == 10
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(loaded.sample(4, steps=3, y=torch.arange(4), cfg_scale=2.0, generator=g()),
                               model.sample(4, steps=3, y=torch.arange(4), cfg_scale=2.0, generator=g()))


# ----------------------------------------------------------------------------- export
def test_export_saves_encoder_and_tokenizer_and_sd3_pipeline_reproduces_sample(tmp_path):
    model = _text_model(num_classes=None, shift=3.0).eval()
    model.export(tmp_path)
    assert not list(tmp_path.rglob("*.bin"))  # safetensors only
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None]  # the pipeline's own prompt encoding is not this model's
    # The encoder and tokenizer reload with transformers and give the module's embeddings.
    encoder = CLIPTextModelWithProjection.from_pretrained(tmp_path, subfolder="text_encoder").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, subfolder="tokenizer")
    prompts = ["a dark one", "a bright one", "dark"]
    ids = tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = encoder(input_ids=ids)
    prompt_embeds, pooled = model.encode_prompts(prompts)
    assert torch.equal(out.last_hidden_state, prompt_embeds) and torch.equal(out.text_embeds, pooled)
    # The diffusers pipeline, text encoders None, on those embeddings (zeros = the null prompt for CFG).
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path, **dict.fromkeys(PIPELINE_ABSENT_COMPONENTS))
    theirs = pipe(prompt_embeds=out.last_hidden_state, pooled_prompt_embeds=out.text_embeds,
                  negative_prompt_embeds=torch.zeros_like(prompt_embeds),
                  negative_pooled_prompt_embeds=torch.zeros_like(pooled), guidance_scale=2.0, num_inference_steps=4,
                  output_type="latent", generator=torch.Generator().manual_seed(0)).images
    ours = model.sample(3, steps=4, prompts=prompts, cfg_scale=2.0, generator=torch.Generator().manual_seed(0),
                        return_latents=True)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    # text_encoder_path: a new model built on the exported encoder encodes prompts identically.
    again = RectifiedFlowDiT(**TINY, text_encoder_path=str(tmp_path), num_classes=None)
    torch.testing.assert_close(again.encode_prompts(prompts), (prompt_embeds, pooled))


# ----------------------------------------------------------------------------- latent caching
@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from litzoo.modules.vae import VAE

    torch.manual_seed(0)
    dm = DigitsDataModule()
    dm.setup("fit")
    vae = VAE(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4)
    vae.compute_latent_statistics(dm.train_set.tensors[0])
    return vae.export(tmp_path_factory.mktemp("vae"))


LATENT = {**TINY, "sample_size": 4, "in_channels": 4, "pos_embed_max_size": 4}


def _count_encoded_images(model):
    counter = {"images": 0}
    encode = model.vae.encode

    def counting(x, *args, **kwargs):
        counter["images"] += x.shape[0]
        return encode(x, *args, **kwargs)

    model.vae.encode = counting
    return counter


class _TrainData(L.Callback):
    """Records the dataset the trainer's train loader reads."""

    def on_train_start(self, trainer, pl_module):
        self.dataset = trainer.train_dataloader.dataset


def test_latents_are_cached_once_per_image_equal_to_latents_and_training_lowers_the_loss(tmp_path, vae_dir, cpu_trainer):
    dm = DigitsDataModule(batch_size=256)
    dm.setup("fit")
    images, split = dm.train_set.tensors[0], dm.train_set
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**LATENT, vae_path=str(vae_dir), lr=3e-3, warmup_steps=2)
    z = model.to_latents(images)
    y = dm.train_set.tensors[1]
    before = model.flow_loss(z, {"y": y}, torch.Generator().manual_seed(0), drop=False)[0].item()
    counter, data = _count_encoded_images(model), _TrainData()
    cpu_trainer(tmp_path, limit_val_batches=0, max_epochs=3, callbacks=[data]).fit(model, dm)  # 3 epochs of 7 batches
    assert counter["images"] == len(images)  # each training image through the encoder once, not once per epoch
    cache = data.dataset  # the datamodule's train loader read the cache
    assert isinstance(cache, CachedLatents) and cache.images is split and cache.flipped is None
    torch.testing.assert_close(cache.latents, z, atol=1e-5, rtol=1e-5)  # the cache is to_latents(x)
    assert torch.equal(cache.labels, y)
    assert dm.train_set is split  # the datamodule's train split is never replaced
    assert dm.train_dataloader().dataset is split  # and after fit its loader serves the images again
    after = model.flow_loss(z, {"y": y}, torch.Generator().manual_seed(0), drop=False)[0].item()
    assert after < 0.8 * before, (before, after)  # measured 2.03 -> 1.37 over these 18 steps
    # Without the cache the encoder sees every batch of every epoch.
    per_epoch = sum(len(x) for x, _ in dm.train_dataloader())  # the train loader drops the last partial batch
    plain = RectifiedFlowDiT(**LATENT, vae_path=str(vae_dir), cache_latents=False)
    counter, data = _count_encoded_images(plain), _TrainData()
    cpu_trainer(tmp_path, limit_val_batches=0, max_epochs=2, callbacks=[data]).fit(plain, dm)
    assert counter["images"] == 2 * per_epoch > len(images) and data.dataset is split


def test_a_frozen_text_encoder_encodes_the_class_prompts_once_not_every_step(monkeypatch):
    model = RectifiedFlowDiT(**TINY, text_encoder=TEXT, num_classes=None, class_prompts=["zero", "one"])
    calls = []
    original = model.conditioning.encode_prompts
    monkeypatch.setattr(model.conditioning, "encode_prompts", lambda prompts: calls.append(1) or original(prompts))
    x = torch.randn(2, 1, 8, 8)
    first = model(x, torch.full((2,), 0.5), y=torch.tensor([0, 1]))
    again = model(x, torch.full((2,), 0.5), y=torch.tensor([1, 0]))
    assert len(calls) == 1  # the second step reused the cached tables
    torch.testing.assert_close(again.flip(0), model(x.flip(0), torch.full((2,), 0.5), y=torch.tensor([0, 1])))
    model.conditioning.train_text_encoder = True  # a trained encoder changes every step: no cache
    model(x, torch.full((2,), 0.5), y=torch.tensor([0, 1]))
    assert len(calls) == 2 and first.shape == x.shape
