"""Your own captioned images: a text-conditioned RectifiedFlowDiT trains on an ImageCaptionDataModule end to end
(the captions are the prompts its text encoder sees), and the README's YAML + command run as written."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import lightning as L
import torch
import yaml
from PIL import Image

from litzoo.datamodules import ImageCaptionDataModule
from litzoo.modules.rectified_flow import RectifiedFlowDiT
from readme_helpers import readme_blocks

REPO = Path(__file__).resolve().parents[2]
TINY = dict(sample_size=8, patch_size=2, in_channels=1, num_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=8)
TEXT = dict(hidden_size=16, projection_dim=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32)


def captioned_folder(root: Path, n: int = 16) -> Path:
    """Dark and bright 12x8 images ("a dark square 3" / "a bright square 4") in two folders, with metadata.jsonl."""
    (root / "more").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = f"more/{i:04d}.png" if i % 3 == 0 else f"{i:04d}.png"
        shade = ("dark", 30) if i % 2 else ("bright", 220)
        Image.new("L", (12, 8), shade[1] + i).save(root / name)
        lines.append(json.dumps({"file_name": name, "text": f"a {shade[0]} square {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_rectified_flow_dit_trains_on_captioned_images_with_their_captions_as_prompts(tmp_path):
    torch.manual_seed(0)
    model = RectifiedFlowDiT(**TINY, text_encoder=TEXT, num_classes=None, class_dropout=0.0, lr=1e-2, warmup_steps=1)
    dm = ImageCaptionDataModule(str(captioned_folder(tmp_path / "my_images")), resolution=8, grayscale=True,
                                random_flip=True, batch_size=4, seed=0)
    seen, losses = [], []
    encode = model.conditioning.encode_prompts
    model.conditioning.encode_prompts = lambda prompts: seen.append(list(prompts)) or encode(prompts)

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Losses()],
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    # The prompts of each step are the captions of that step's images, in the loader's (seed, epoch) order.
    loader = ImageCaptionDataModule(str(tmp_path / "my_images"), resolution=8, grayscale=True, random_flip=True,
                                    batch_size=4, seed=0).train_dataloader()
    want = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        want += [b["prompts"] for b in loader]
    assert seen == want[:6]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[k], v) for k, v in model.transformer.state_dict().items())
    images = model.sample(2, prompts=["a dark square 1", "a bright square 2"], steps=2,
                          generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 8, 8)



def test_readme_captioned_images_yaml_and_command_run_as_written(tmp_path, monkeypatch):
    blocks = readme_blocks("### Your own captioned images")
    (config,), (command,), (usage,) = blocks["yaml"], blocks["bash"], blocks["python"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    captioned_folder(tmp_path / "my_images", n=24)
    (tmp_path / "my_captions.yaml").write_text(config)
    args = shlex.split(command)
    assert args[:2] == ["python", "train.py"]
    sys.path.insert(0, str(REPO))
    argv, sys.argv = sys.argv, ["train.py"]
    try:
        import train

        # A 2-step run: the README's values are for a real one.
        cli = train.main(args[2:] + ["--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false"])
    finally:
        sys.argv = argv
        sys.path.remove(str(REPO))
    dm, model = cli.datamodule, cli.model
    assert isinstance(dm, ImageCaptionDataModule) and cli.trainer.global_step == 2
    assert dict(dm.hparams) | yaml.safe_load(config)["data"]["init_args"] == dict(dm.hparams)  # as written
    assert model.num_classes is None and model.hparams.class_prompts is None
    assert len(dm.train_set) == 22 and len(dm.val_set) == 2
    assert (tmp_path / "runs" / "rf_digits_text").is_dir() and model.hparams.lora_rank == 8
    # The README's reload lines: the frozen base + the adapters give the trained transformer's outputs exactly.
    namespace: dict = {}
    exec(usage, namespace)  # noqa: S102 (the README's own lines)
    c = model.transformer.config
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=g),
                  encoder_hidden_states=torch.randn(2, 3, c.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(2, c.pooled_projection_dim, generator=g),
                  timestep=torch.tensor([100.0, 700.0]))
    model.eval()
    with torch.no_grad():
        expected = model.transformer(**inputs).sample
        torch.testing.assert_close(namespace["transformer"](**inputs).sample, expected, rtol=0, atol=0)
        torch.testing.assert_close(namespace["pipe"].transformer(**inputs).sample, expected, rtol=0, atol=0)
