"""Tests for litzoo/datamodules/captions.py: captioned images (image folder + metadata.jsonl, save_to_disk, parquet)
with exact crops, flips, caption pairing, seeded order and mid-epoch resume; a text-conditioned RectifiedFlowDiT
trains on them end to end."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from PIL import Image

from litzoo.datamodules import ImageCaptionDataModule

COLORS = ["red", "green", "blue", "white", "black", "gray"]


def stripes(width: int, height: int, tag: int) -> Image.Image:
    """Grayscale, pixel (x, y) = 10 * x + tag (+ 100 on the bottom rows): any crop or flip is readable from it."""
    image = Image.new("L", (width, height))
    image.putdata([10 * x + tag + (100 if y >= height // 2 else 0) for y in range(height) for x in range(width)])
    return image


def caption(i: int) -> str:
    return f"a {COLORS[i % len(COLORS)]} picture number {i}"


def image_folder(root, n: int = 24, size=(8, 4)):
    """``n`` stripe images (tag i % 10 in the pixels, caption naming i) in subfolders, with metadata.jsonl."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = f"sub/{i:03d}.png" if i % 2 else f"{i:03d}.png"
        stripes(*size, tag=i % 10).save(root / name)
        lines.append(json.dumps({"file_name": name, "text": caption(i), "id": i}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).round().long()


def test_centre_crop_is_exact_and_random_crops_and_flips_are_windows_of_the_image(tmp_path):
    root = image_folder(tmp_path / "data", n=6)
    centre = ImageCaptionDataModule(str(root), resolution=4, center_crop=True, grayscale=True, seed=0)
    centre.setup()
    x = _pixels(centre.train_set[(0, 0)]["images"])[0]  # 8x4 -> 4x4: columns 2..5
    assert x.tolist() == [[20, 30, 40, 50]] * 2 + [[120, 130, 140, 150]] * 2
    dm = ImageCaptionDataModule(str(root), resolution=4, center_crop=False, random_flip=True, grayscale=True, seed=0)
    dm.setup()
    seen = set()
    for epoch in range(8):
        for i in range(6):
            x = _pixels(dm.train_set[(i, epoch)]["images"])[0]
            tag = i % 10
            flipped = bool(x[0, 0] > x[0, -1])
            left = (int(x[0, -1]) if flipped else int(x[0, 0])) // 10 - tag // 10
            want = torch.tensor([[10 * c + tag for c in range(left, left + 4)]] * 2 +
                                [[10 * c + tag + 100 for c in range(left, left + 4)]] * 2)
            assert torch.equal(x, want.flip(-1) if flipped else want)
            seen.add((left, flipped))
            assert torch.equal(dm.train_set[(i, epoch)]["images"], dm.train_set[(i, epoch)]["images"])  # keyed
    assert {left for left, _ in seen} == set(range(5)) and {f for _, f in seen} == {True, False}


def test_resize_takes_the_shorter_side_to_the_resolution(tmp_path):
    root = image_folder(tmp_path / "data", n=2, size=(16, 8))
    dm = ImageCaptionDataModule(str(root), resolution=4, center_crop=True, batch_size=2, seed=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 4, 4) and batch["images"].dtype == torch.float32
    assert batch["images"].min() >= -1 and batch["images"].max() <= 1
    # RGB of a grayscale file: the three channels are equal.
    assert torch.equal(batch["images"][:, 0], batch["images"][:, 1])


def test_captions_stay_paired_with_their_images_and_the_order_is_seeded(tmp_path):
    root = image_folder(tmp_path / "data")
    def epoch(seed, e):
        dm = ImageCaptionDataModule(str(root), resolution=4, center_crop=True, grayscale=True, batch_size=4, seed=seed)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(e)
        return list(loader)
    batches = epoch(3, 0)
    prompts = [p for b in batches for p in b["prompts"]]
    assert sorted(prompts) == sorted(caption(i) for i in range(24))  # every image once per epoch
    for b in batches:
        for x, p in zip(b["images"], b["prompts"]):
            i = int(p.split()[-1])
            assert int(_pixels(x)[0, 0, 0]) == 20 + i % 10  # the centre crop of image i starts at column 2
    again = epoch(3, 0)
    assert [b["prompts"] for b in again] == [b["prompts"] for b in batches]
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(again, batches))
    assert [b["prompts"] for b in epoch(3, 1)] != [b["prompts"] for b in batches]  # reshuffled per epoch
    assert [b["prompts"] for b in epoch(4, 0)] != [b["prompts"] for b in batches]


def test_mid_epoch_resume_serves_the_same_remaining_batches(tmp_path):
    root = image_folder(tmp_path / "data")
    make = lambda: ImageCaptionDataModule(str(root), resolution=4, random_flip=True, grayscale=True, batch_size=4,
                                          seed=5)
    loader = make().train_dataloader()
    loader.sampler.set_epoch(2)
    full = list(loader)
    loader.sampler.set_epoch(2)
    it = iter(loader)
    for _ in range(2):
        next(it)
    state = loader.state_dict()
    resumed = make().train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(full) - 2
    for a, b in zip(rest, full[2:]):
        assert a["prompts"] == b["prompts"] and torch.equal(a["images"], b["images"])


def test_list_captions_pick_one_per_epoch_and_the_first_for_validation(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    lines = []
    for i in range(4):
        stripes(4, 4, i).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "captions": [f"first {i}", f"second {i}"]}))
    (root / "metadata.jsonl").write_text("\n".join(lines))
    dm = ImageCaptionDataModule(str(root), caption_column="captions", resolution=4, val_fraction=0.25, seed=0)
    dm.setup()
    picks = {dm.train_set[(0, e)]["prompts"].split()[0] for e in range(10)}
    assert picks == {"first", "second"}
    assert dm.val_set[0]["prompts"].startswith("first ")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 1


def test_saved_datasets_folder_and_parquet_give_the_image_folders_items(tmp_path):
    import datasets

    root = image_folder(tmp_path / "data", n=6)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    table = datasets.Dataset.from_dict({"image": [str(root / r["file_name"]) for r in rows],
                                        "caption": [r["text"] for r in rows]}).cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    want = ImageCaptionDataModule(str(root), resolution=4, center_crop=True, seed=0)
    want.setup()
    for path in (tmp_path / "saved", tmp_path / "parquet"):
        dm = ImageCaptionDataModule(str(path), caption_column="caption", resolution=4, center_crop=True, seed=0,
                                    cache_dir=str(tmp_path / "cache"))
        dm.setup()
        for i in range(6):
            a, b = dm.train_set[(i, 0)], want.train_set[(i, 0)]
            assert a["prompts"] == b["prompts"] and torch.equal(a["images"], b["images"])


def test_errors_at_construction_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ImageCaptionDataModule(str(tmp_path / "nowhere"))
    bare = tmp_path / "bare"
    bare.mkdir()
    stripes(4, 4, 0).save(bare / "a.png")
    with pytest.raises(ValueError, match=r"has no metadata.jsonl \(it holds images, e.g. \['a.png'\]\): write one"):
        ImageCaptionDataModule(str(bare))
    root = image_folder(tmp_path / "data", n=3)
    with pytest.raises(ValueError, match=r"caption_column='caption' is missing on line\(s\) \[1, 2, 3\]; the "
                                         r"columns are \['file_name', 'text', 'id'\]"):
        ImageCaptionDataModule(str(root), caption_column="caption")
    (root / "sub" / "001.png").unlink()
    with pytest.raises(ValueError, match=r"names image files that do not exist: \[\(2, 'sub/001.png'\)\]"):
        ImageCaptionDataModule(str(root))
    import datasets

    datasets.Dataset.from_dict({"img": ["x.png"], "text": ["a"]}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"image_column='image' is not a column .*its columns are \['img', 'text'\]"):
        ImageCaptionDataModule(str(tmp_path / "saved"))


def test_plain_parquet_with_image_bytes_or_relative_paths(tmp_path):
    """Parquet written without datasets' metadata: image cells as {"bytes", "path"} structs or relative paths."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = image_folder(tmp_path / "data", n=4)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    blobs = []
    for r in rows:
        buffer = io.BytesIO()
        Image.open(root / r["file_name"]).save(buffer, format="PNG")
        blobs.append({"bytes": buffer.getvalue(), "path": None})
    (tmp_path / "bytes").mkdir()
    pq.write_table(pa.table({"image": blobs, "text": [r["text"] for r in rows]}), tmp_path / "bytes" / "a.parquet")
    pq.write_table(pa.table({"image": [r["file_name"] for r in rows], "text": [r["text"] for r in rows]}),
                   root / "paths.parquet")
    want = ImageCaptionDataModule(str(root), resolution=4, center_crop=True, seed=0)
    want.setup()
    for path in (tmp_path / "bytes", root / "paths.parquet"):
        dm = ImageCaptionDataModule(str(path), resolution=4, center_crop=True, seed=0, cache_dir=str(tmp_path / "c"))
        dm.setup()
        for i in range(4):
            a, b = dm.train_set[(i, 0)], want.train_set[(i, 0)]
            assert a["prompts"] == b["prompts"] and torch.equal(a["images"], b["images"])
