"""Class-conditional diffusers exports sample by label with diffusers alone (litzoo not importable): the usage
lines of the export's model card, run in a clean subprocess, equal ``module.sample`` for the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from litzoo.model_card import usage_code
from litzoo.modules import DDPM, RectifiedFlowDiT
from litzoo.modules.rectified_flow import PIPELINE_ABSENT_COMPONENTS

# Runs first in the subprocess: any import of litzoo fails, as on a machine where it is not installed.
BLOCK_LITZOO = '''
import sys
class _NoLitzoo:
    def find_spec(self, name, path=None, target=None):
        if name == "litzoo" or name.startswith("litzoo."):
            raise ImportError("litzoo is blocked in this test: the export must work with diffusers alone")
sys.meta_path.insert(0, _NoLitzoo())
'''


def run_without_litzoo(code: str, cwd) -> str:
    """Run ``code`` in a fresh interpreter with litzoo unimportable and the Hub unreachable; return stdout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(cwd / "hf_modules"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", BLOCK_LITZOO + code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_class_conditional_ddpm_export_samples_labels_with_diffusers_alone(tmp_path):
    model = DDPM(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=50, sample_steps=10).eval()
    out_dir = model.export(tmp_path / "export")
    assert json.loads((out_dir / "model_index.json").read_text())["_class_name"] == [
        "pipeline", "ClassConditionalDDPMPipeline"]
    code = usage_code((out_dir / "README.md").read_text())
    assert "num_inference_steps=10" in code and "class_labels=[0, 3, 7]" in code
    expected = {}
    for cfg in (1.0, 2.0):
        expected[cfg] = model.sample(3, sampler="ddpm", steps=10, y=torch.tensor([0, 3, 7]), cfg_scale=cfg,
                                     generator=torch.Generator().manual_seed(0))
    script = code + textwrap.dedent(f'''
        import numpy as np
        assert [im.size for im in images] == [(8, 8)] * 3
        np.save("pil.npy", np.stack([np.asarray(im) for im in images]))
        for g in (1.0, 2.0):
            x = pipe(class_labels=[0, 3, 7], guidance_scale=g, num_inference_steps=10, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).images
            torch.save(x, f"images_{{g}}.pt")
        pipe2 = DiffusionPipeline.from_pretrained(path, custom_pipeline=path, trust_remote_code=True)
        print(type(pipe).__name__, type(pipe2).__name__)
    ''')
    stdout = run_without_litzoo(script, tmp_path)
    assert stdout.split() == ["ClassConditionalDDPMPipeline"] * 2
    for cfg in (1.0, 2.0):
        torch.testing.assert_close(torch.load(tmp_path / f"images_{cfg}.pt"), expected[cfg], atol=1e-5, rtol=0)
    # The PIL images of the card's lines (guidance 1) are the same images in 8-bit.
    import numpy as np

    pil = np.load(tmp_path / "pil.npy")
    assert np.abs(pil.astype(float) - (expected[1.0][:, 0].numpy() * 255).round()).max() <= 1


def test_unconditional_ddpm_export_stays_a_ddpm_pipeline(tmp_path):
    model = DDPM(num_classes=None, block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=50)
    out_dir = model.export(tmp_path / "export")
    assert json.loads((out_dir / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert not (out_dir / "pipeline.py").exists()


def _tiny_rf(**kwargs) -> RectifiedFlowDiT:
    return RectifiedFlowDiT(num_layers=1, num_attention_heads=2, attention_head_dim=8, joint_attention_dim=16,
                            caption_projection_dim=16, pooled_projection_dim=16, sample_steps=4, cfg_scale=2.0,
                            **kwargs).eval()


def test_class_conditional_rectified_flow_export_samples_labels_with_diffusers_alone(tmp_path):
    model = _tiny_rf()
    out_dir = model.export(tmp_path / "export")
    code = usage_code((out_dir / "README.md").read_text())
    assert "custom_pipeline=path" in code and "guidance_scale=2.0" in code and "num_inference_steps=4" in code
    expected = {cfg: model.sample(3, steps=4, y=torch.tensor([0, 3, 7]), cfg_scale=cfg,
                                  generator=torch.Generator().manual_seed(0)) for cfg in (1.0, 2.0)}
    script = code + textwrap.dedent('''
        assert len(images) == 3
        for g in (1.0, 2.0):
            x = pipe(class_labels=[0, 3, 7], guidance_scale=g, num_inference_steps=4, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).images
            torch.save(x, f"images_{g}.pt")
        print(type(pipe).__name__)
    ''')
    assert run_without_litzoo(script, tmp_path).split() == ["ClassConditionalFlowPipeline"]
    for cfg in (1.0, 2.0):
        torch.testing.assert_close(torch.load(tmp_path / f"images_{cfg}.pt"), expected[cfg], atol=1e-5, rtol=0)


def test_ddpm_and_rectified_flow_exports_load_one_after_the_other_in_one_process(tmp_path):
    # diffusers runs both exports' pipeline.py in one module (diffusers_modules.local.pipeline); before the fix the
    # flow export, loaded after a DDPM export, failed with "Multiple classes that inherit from DiffusionPipeline".
    ddpm = DDPM(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=50).export(tmp_path / "ddpm")
    flow = _tiny_rf().export(tmp_path / "flow")
    script = textwrap.dedent(f'''
        from diffusers import DiffusionPipeline
        for path in [{str(ddpm)!r}, {str(flow)!r}, {str(ddpm)!r}]:
            pipe = DiffusionPipeline.from_pretrained(path, custom_pipeline=path, trust_remote_code=True)
            print(type(pipe).__name__)
    ''')
    assert run_without_litzoo(script, tmp_path).split() == [
        "ClassConditionalDDPMPipeline", "ClassConditionalFlowPipeline", "ClassConditionalDDPMPipeline"]


def test_rectified_flow_export_still_loads_as_stable_diffusion3_pipeline(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    out_dir = _tiny_rf().export(tmp_path / "export")
    pipe = StableDiffusion3Pipeline.from_pretrained(out_dir, **dict.fromkeys(PIPELINE_ABSENT_COMPONENTS))
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"


def test_class_labels_out_of_range_are_refused_by_the_exported_pipeline(tmp_path):
    from diffusers import DiffusionPipeline

    out_dir = DDPM(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=50).export(tmp_path / "e")
    pipe = DiffusionPipeline.from_pretrained(out_dir, trust_remote_code=True)
    with pytest.raises(ValueError, match=r"class_labels must be labels in \[0, 10\)"):
        pipe(class_labels=[10], num_inference_steps=2)
