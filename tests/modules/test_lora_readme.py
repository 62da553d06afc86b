"""The README's LoRA code blocks, run as they are: the reloads give the modules' outputs."""

import re
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel

from litzoo.reasoning.policy import encode_prompt

README = Path(__file__).resolve().parents[2] / "README.md"


def _lora_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("### LoRA adapters"):]
    section = section[:section.index("\n## ")]
    return re.findall(r"```python\n(.*?)\n```", section, flags=re.S)


def test_readme_lora_lines_build_export_and_reload_to_the_modules_outputs(tmp_path, monkeypatch):
    build, reload = _lora_blocks()
    namespace: dict = {}
    exec(build, namespace)  # noqa: S102 (the README's own lines)
    dit, sft, rl = namespace["dit"], namespace["sft"], namespace["rl"]
    assert rl._ref is None and type(rl.policy).__name__ == "PeftModelForCausalLM"
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stand-in for training: adapters away from B = 0
        for module in (dit, sft):
            for name, param in module.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    dit.eval(), sft.eval()
    monkeypatch.chdir(tmp_path)
    exec(reload, namespace)  # noqa: S102

    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(2, 1, 8, 8, generator=g), torch.rand(2, generator=g), torch.tensor([3, 7])
    tokens, pooled = (c.detach() for c in dit.conditioning(y, 2))

    def velocity(transformer):
        with torch.no_grad():
            return transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=tokens,
                               pooled_projections=pooled).sample

    ours = velocity(dit.transformer)
    assert torch.equal(velocity(namespace["transformer"]), ours)
    assert torch.equal(velocity(namespace["pipe"].transformer), ours)
    merged_dit = SD3Transformer2DModel.from_pretrained("dit-merged", subfolder="transformer")
    torch.testing.assert_close(velocity(merged_dit), ours, atol=1e-5, rtol=1e-5)

    ids = torch.tensor([encode_prompt(namespace["tok"], "47+38=")])
    with torch.no_grad():
        logits = sft.policy(input_ids=ids).logits
        assert torch.equal(namespace["model"](input_ids=ids).logits, logits)
        torch.testing.assert_close(namespace["merged"](input_ids=ids).logits, logits, atol=1e-5, rtol=1e-5)
