"""Model cards: Hub front matter, and the usage lines of every export's card run and give the module's answers."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lm_helpers import TINY_TEST_QWEN2
from rl_helpers import fit

from litzoo.model_card import read_front_matter, render_model_card, usage_code
from litzoo.modules import DDPM, DQN, VAE, CoTSFT, RectifiedFlowDiT
from litzoo.rl.policy import load_policy


def run_card(out_dir, monkeypatch) -> dict:
    """Execute the card's python block (from another working directory) and return its variables."""
    monkeypatch.chdir(out_dir.parent)
    namespace: dict = {}
    exec(usage_code((out_dir / "README.md").read_text()), namespace)  # noqa: S102 (the card's own lines)
    return namespace


def test_render_writes_hub_front_matter_recipe_and_metrics():
    text = render_model_card(title="T", summary="S.", library_name="diffusers", usage="x = 1", tags=["ddpm"],
                             pipeline_tag="unconditional-image-generation", datasets=["mnist"],
                             recipe={"lr": 0.001, "block_out_channels": (8, 16), "name": "yes"},
                             metrics={"val/class_accuracy": 0.975})
    assert read_front_matter(text) == {"library_name": "diffusers", "license": "apache-2.0",
                                       "tags": ["litzoo", "ddpm"], "pipeline_tag": "unconditional-image-generation",
                                       "datasets": ["mnist"]}
    assert "block_out_channels: [8, 16]" in text and "name: 'yes'" in text
    assert "| `val/class_accuracy` | 0.975 |" in text
    assert usage_code(text) == "x = 1"
    bare = render_model_card(title="T", summary="S.", library_name="litzoo", usage="pass")
    assert "Metrics" not in bare and "base_model" not in read_front_matter(bare)


def test_every_export_writes_a_card(tmp_path):
    exports = {"ddpm": DDPM(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=10),
               "ddpm_vector": DDPM(data_dim=2, num_classes=None, num_train_timesteps=10),
               "rf": RectifiedFlowDiT(num_layers=1, num_attention_heads=2, attention_head_dim=8, joint_attention_dim=16,
                                      caption_projection_dim=16, pooled_projection_dim=16, num_classes=None),
               "vae": VAE(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4)}
    libraries = {}
    for name, module in exports.items():
        card = (module.export(tmp_path / name) / "README.md").read_text()
        libraries[name] = read_front_matter(card)["library_name"]
        assert "## Usage" in card and "Hyperparameters" in card
    assert libraries == {"ddpm": "diffusers", "ddpm_vector": "litzoo", "rf": "diffusers", "vae": "diffusers"}


def test_vector_ddpm_and_unconditional_rf_card_lines_load_the_export(tmp_path, monkeypatch):
    ddpm = DDPM(data_dim=2, num_classes=None, num_train_timesteps=10, sample_steps=5).eval()
    ns = run_card(ddpm.export(tmp_path / "vector"), monkeypatch)
    for a, b in zip(ns["model"].state_dict().values(), ddpm.state_dict().values()):
        assert torch.equal(a, b)
    assert ns["x"].shape == (16, 2)
    rf = RectifiedFlowDiT(num_layers=1, num_attention_heads=2, attention_head_dim=8, joint_attention_dim=16,
                          caption_projection_dim=16, pooled_projection_dim=16, num_classes=None)
    ns = run_card(rf.export(tmp_path / "rf"), monkeypatch)
    for a, b in zip(ns["transformer"].state_dict().values(), rf.transformer.state_dict().values()):
        assert torch.equal(a, b)


def test_vae_card_lines_encode_like_the_module(tmp_path, monkeypatch):
    vae = VAE(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4).eval()
    vae.scaling_factor.fill_(1.7)
    vae.shift_factor.fill_(0.3)
    ns = run_card(vae.export(tmp_path / "vae"), monkeypatch)
    torch.testing.assert_close(ns["z"], vae.encode(ns["x"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ns["x_rec"], vae.decode(ns["z"]), atol=1e-6, rtol=0)


def test_lm_card_lines_give_the_modules_greedy_answer_and_state_the_prompt_format(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = CoTSFT(model_config=TINY_TEST_QWEN2, eval_max_new_tokens=12).eval()
    out_dir = module.export(tmp_path / "lm")
    text = (out_dir / "README.md").read_text()
    front = read_front_matter(text)
    assert (front["library_name"], front["pipeline_tag"]) == ("transformers", "text-generation")
    assert "## Prompt format" in text and "`<bos>`" in text and "max_new_tokens=12" in usage_code(text)
    ns = run_card(out_dir, monkeypatch)
    assert ns["answer"] == module.answer(["47+38="])[0]


def test_rl_card_names_the_env_and_its_lines_act_like_load_policy_with_metrics_from_the_trainer(tmp_path,
                                                                                                monkeypatch):
    from litzoo.datamodules import GymDataModule

    class LogMetric(L.Callback):  # a metric measured during training, as RLEvalCallback's eval/mean_return
        def on_train_end(self, trainer, pl_module):
            trainer.callback_metrics["eval/mean_return"] = torch.tensor(12.5)

    module = DQN(learning_starts=100, batch_size=8, buffer_size=100)
    fit(module, GymDataModule("CartPole-v1", batches_per_epoch=4), callbacks=[LogMetric()])
    out_dir = module.export(tmp_path / "policy")
    text = (out_dir / "README.md").read_text()
    front = read_front_matter(text)
    assert front["pipeline_tag"] == "reinforcement-learning" and "CartPole-v1" in front["tags"]
    assert "| `eval/mean_return` | 12.5 |" in text and "GymDataModule(env_id='CartPole-v1'" in text
    ns = run_card(out_dir, monkeypatch)
    np.testing.assert_array_equal(ns["action"], load_policy(out_dir).predict(ns["obs"]))


def test_policy_saved_without_a_module_gets_a_card_with_spaces(tmp_path, monkeypatch):
    from gymnasium import spaces

    from litzoo.rl.policy import space_to_spec

    module = DQN(observation_space=space_to_spec(spaces.Box(-1, 1, (3,))),
                  action_space=space_to_spec(spaces.Discrete(2)))
    out_dir = module.policy.save(tmp_path / "p")
    ns = run_card(out_dir, monkeypatch)
    assert ns["action"] == load_policy(out_dir).predict(ns["obs"])
    assert "observation space `{\"type\": \"Box\"" in (out_dir / "README.md").read_text()
