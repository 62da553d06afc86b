"""LoRA on RectifiedFlowDiT: only adapters train (also under bf16-mixed), the export's diffusers LoRA file reloads
with load_lora_adapter / load_lora_weights to the module's outputs, the merged export too, resume is exact."""

import json

import pytest
import torch
from diffusers import SD3Transformer2DModel
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors import safe_open

from litzoo.datamodules import DigitsDataModule
from litzoo.model_card import usage_code
from litzoo.modules.rectified_flow import RectifiedFlowDiT
from litzoo.nets.lora import DIT_LORA_TARGETS

TINY = dict(num_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
            caption_projection_dim=16, pooled_projection_dim=16)
LORA = dict(lora_rank=4, lora_alpha=8.0)


def _fit(cpu_trainer, root, steps, ckpt_path=None, callbacks=(), **kwargs):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, **LORA, lr=1e-2, warmup_steps=0, total_steps=4)
    trainer = cpu_trainer(root, max_steps=steps, callbacks=callbacks, limit_val_batches=0,
                          enable_checkpointing=bool(callbacks), **kwargs)
    trainer.fit(model, DigitsDataModule(batch_size=32, seed=0), ckpt_path=ckpt_path)
    return model, trainer


def _inputs(model):
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(3, 1, 8, 8, generator=g), torch.rand(3, generator=g), torch.tensor([1, 2, 10])
    tokens, pooled = model.conditioning(y, 3)
    return x, t, tokens.detach(), pooled.detach()


def _velocity(transformer, x, t, tokens, pooled):
    with torch.no_grad():
        return transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=tokens,
                           pooled_projections=pooled).sample


def test_bad_lora_arguments_are_refused():
    with pytest.raises(ValueError, match=r"\['to_qkv'\] match no module.*add_k_proj.*to_out\.0"):
        RectifiedFlowDiT(**TINY, lora_rank=2, lora_target_modules=["to_qkv"])
    with pytest.raises(ValueError, match="train_text_encoder"):
        RectifiedFlowDiT(**TINY, lora_rank=2, train_text_encoder=True, num_classes=None,
                         text_encoder={"hidden_size": 16, "projection_dim": 16, "intermediate_size": 32,
                                       "num_hidden_layers": 1, "num_attention_heads": 2})
    with pytest.raises(ValueError, match="lora_alpha"):
        RectifiedFlowDiT(**TINY, lora_rank=2, lora_alpha=0.0)


def test_only_adapters_train_under_bf16_and_both_exports_reload_in_diffusers(tmp_path, cpu_trainer):
    torch.manual_seed(0)
    initial = RectifiedFlowDiT(**TINY).state_dict()  # the same seed and build: the module's base weights
    model, trainer = _fit(cpu_trainer, tmp_path, 3, precision="bf16-mixed")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    adapted = {n.split(".lora_")[0] for n in trainable}
    assert {t for t in DIT_LORA_TARGETS if any(a.endswith("." + t) for a in adapted)} == set(DIT_LORA_TARGETS)
    assert sum(len(g["params"]) for g in trainer.optimizers[0].param_groups) == len(trainable)
    state = model.state_dict()
    for name, weight in initial.items():  # the base (class tokens included) is untouched
        assert torch.equal(state.get(name, state.get(name.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias"))), weight), name
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # Every adapter moved from B = 0 but one: the last block's context queries feed no output (context_pre_only).
    assert [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() == 0] == \
        ["transformer.transformer_blocks.1.attn.add_q_proj.lora_B.default.weight"]

    model.eval()
    inputs = _inputs(model)
    ours = _velocity(model.transformer, *inputs)
    out = model.export(tmp_path / "lora")
    with safe_open(out / "pytorch_lora_weights.safetensors", "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("transformer.") and ".lora_" in k and ".default." not in k for k in keys)
    assert json.loads(metadata["lora_adapter_metadata"])["transformer.lora_alpha"] == 8.0  # alpha != rank survives
    base = SD3Transformer2DModel.from_pretrained(out, subfolder="transformer")
    assert not torch.allclose(_velocity(base, *inputs), ours, atol=1e-4)  # the adapters matter
    base.load_lora_adapter(out, prefix="transformer", weight_name="pytorch_lora_weights.safetensors")
    assert torch.equal(_velocity(base, *inputs), ours)
    merged = SD3Transformer2DModel.from_pretrained(model.export(tmp_path / "merged", merge_lora=True),
                                                   subfolder="transformer")
    assert not (tmp_path / "merged" / "pytorch_lora_weights.safetensors").exists()
    torch.testing.assert_close(_velocity(merged, *inputs), ours, atol=1e-5, rtol=1e-5)
    # The card's usage lines (the class pipeline + the adapter line) sample as the module does.
    namespace: dict = {}
    exec(usage_code((out / "README.md").read_text()), namespace)  # noqa: S102 (the card's own lines)
    y, g = [0, 3, 7], lambda: torch.Generator().manual_seed(0)
    theirs = namespace["pipe"](class_labels=y, guidance_scale=2.0, num_inference_steps=4, output_type="pt",
                               generator=g()).images
    torch.testing.assert_close(theirs, model.sample(3, steps=4, y=torch.tensor(y), cfg_scale=2.0, generator=g()),
                               atol=1e-5, rtol=1e-5)


def test_resume_restores_the_adapters_and_repeats_the_run_exactly(tmp_path, cpu_trainer):
    straight, _ = _fit(cpu_trainer, tmp_path / "a", 4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
    first, _ = _fit(cpu_trainer, tmp_path / "b", 2, callbacks=[checkpoint])
    loaded = RectifiedFlowDiT.load_from_checkpoint(checkpoint.last_model_path)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == \
        [n for n, p in first.named_parameters() if p.requires_grad]
    for (name, a), b in zip(first.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    resumed, _ = _fit(cpu_trainer, tmp_path / "c", 4, ckpt_path=checkpoint.last_model_path, callbacks=[checkpoint])
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
