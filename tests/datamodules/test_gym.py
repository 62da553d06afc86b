"""GymDataModule: errors, spaces, batch counts and ordering (no pre-fetching), per-rank seeds, the warning
filters, and 2-process CPU DDP training. The collection it serves is tested in tests/rl/test_collect.py."""

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces

import litzoo.datamodules.gym as gym_module
from litzoo.datamodules.gym import GymDataModule, _EnvStream

from rl_helpers import Counter

REPO = Path(__file__).resolve().parents[2]


def test_unregistered_env_id_raises_value_error_saying_how_to_register():
    with pytest.raises(ValueError, match=r"NoSuchEnv-v0.*not registered.*gymnasium\.register.*import the package"):
        GymDataModule("NoSuchEnv-v0")
    with pytest.raises(ValueError, match=r"import mypkg"):
        GymDataModule("MyPkg/NoSuchEnv-v0")


def test_invalid_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="num_envs=0"):
        GymDataModule("CartPole-v1", num_envs=0)
    with pytest.raises(ValueError, match="vectorization='threads'"):
        GymDataModule("CartPole-v1", vectorization="threads")


def test_grid_world_id_is_available_and_spaces_are_exposed_before_setup():
    dm = GymDataModule("litzoo/GridWorld-v0", env_kwargs={"obs_type": "onehot"})
    assert dm.observation_space.shape == (25,) and dm.action_space == spaces.Discrete(5)
    assert dm.space_specs()[1] == {"type": "Discrete", "n": 5, "start": 0}


class Recorder(L.LightningModule):
    """Records the order of collection and training; one batch per env step."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.events, self.env_steps = [], 0

    def generate_batches(self, env):
        k = 0
        while True:
            env.step(torch.zeros(env.num_envs, 1))
            self.env_steps += env.num_envs
            self.events.append(("collect", k))
            yield torch.tensor([k])
            k += 1

    def training_step(self, batch, batch_idx):
        self.events.append(("train", int(batch)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_each_epoch_serves_batches_per_epoch_batches_collected_after_the_previous_update():
    dm = GymDataModule(Counter, num_envs=2, batches_per_epoch=5, max_episode_steps=4)
    module = Recorder()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, dm)
    expected = [(kind, k) for k in range(15) for kind in ("collect", "train")]
    assert module.events == expected  # no pre-fetching: batch k+1 sees the update of batch k
    assert module.env_steps == 30


def test_env_seeds_are_offset_by_rank_and_by_env_steps_on_resume():
    def first_seed(rank, env_steps):
        dm = GymDataModule(Counter, num_envs=4, seed=100)
        module = Recorder()
        module.env_steps = env_steps
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, lightning_module=module)
        dm.setup("fit")
        next(iter(_EnvStream(dm)))
        return dm.env.seed

    assert first_seed(0, 0) == 100
    assert first_seed(1, 0) == 104  # rank 1's envs get seeds 104..107: no overlap with rank 0's 100..103
    assert first_seed(1, 50) == 154  # a resumed run does not replay its first episodes


def test_module_without_generate_batches_gets_a_clear_error():
    class Plain(L.LightningModule):
        def training_step(self, batch, batch_idx):
            pass

    dm = GymDataModule(Counter)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, lightning_module=Plain())
    dm.setup("fit")
    with pytest.raises(ValueError, match="no generate_batches"):
        next(iter(_EnvStream(dm)))


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.actor_critic import ActorCritic
    from litzoo.modules.ddpg import DDPG

    torch.set_num_threads(1)
    out = sys.argv[1]

    class Record(L.Callback):
        def on_train_start(self, trainer, module):
            self.seed = None
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if self.seed is None:
                self.seed = trainer.datamodule.env.seed
                self.first_obs = trainer.datamodule.env.obs.flatten().tolist()
        def on_train_end(self, trainer, module):
            flat = torch.cat([p.detach().flatten() for p in module.parameters()])
            record = {"seed": self.seed, "first_obs": self.first_obs, "env_steps": module.env_steps,
                      "updates": module.num_updates, "params": flat.tolist(),
                      "logged_env_steps": float(trainer.callback_metrics["time/env_steps"])}
            with open(f"{out}/{trainer.lightning_module.__class__.__name__}_rank{trainer.global_rank}.json", "w") as f:
                json.dump(record, f)

    def fit(module, datamodule):
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                            callbacks=[Record()], enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(module, datamodule)

    fit(DDPG(actor_hidden_sizes=(16, 16), critic_hidden_sizes=(16, 16), learning_starts=32, batch_size=16,
             log_every_n_env_steps=8), GymDataModule("Pendulum-v1", num_envs=2, batches_per_epoch=8))
    fit(ActorCritic(hidden_sizes=(16, 16), log_every_n_env_steps=8), GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=8))
    """
)


def test_two_process_cpu_ddp_ranks_explore_different_episodes_and_keep_identical_weights(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, cwd=REPO, timeout=300,
                   capture_output=True)
    for name, steps_per_rank, updates in (("DDPG", 32 + 2 * 15, 16), ("ActorCritic", 16 * 5 * 2, 16)):
        rank0, rank1 = (json.loads((tmp_path / f"{name}_rank{r}.json").read_text()) for r in (0, 1))
        assert rank0["seed"] != rank1["seed"]  # different env seeds ...
        assert rank0["first_obs"] != rank1["first_obs"]  # ... so different episodes
        assert rank0["env_steps"] == rank1["env_steps"] == steps_per_rank
        assert rank0["updates"] == rank1["updates"] == updates  # same number of batches on every rank
        # different data, yet the same weights after 16 updates: the gradients were averaged
        np.testing.assert_array_equal(rank0["params"], rank1["params"])
        assert rank0["logged_env_steps"] <= 2 * steps_per_rank and rank0["logged_env_steps"] % 2 == 0


def test_max_episode_steps_in_env_kwargs_is_rejected_with_the_way_to_set_it():
    with pytest.raises(ValueError, match=r"GymDataModule\(max_episode_steps=N\).*functools.partial"):
        GymDataModule("litzoo/GridWorld-v0", env_kwargs={"max_episode_steps": None})


def test_train_dataloader_installs_its_warning_filters_once_per_process(monkeypatch):
    monkeypatch.setattr(gym_module, "_stream_warnings_silenced", False)
    with warnings.catch_warnings():
        dm = GymDataModule(Counter)
        dm.train_dataloader()
        installed = list(warnings.filters)
        assert any("IterableDataset" in str(f[1]) for f in installed)
        warnings.simplefilter("error")  # a filter of the user's, put in front after the first call
        dm.train_dataloader()
        GymDataModule(Counter).train_dataloader()
        assert warnings.filters[0][0] == "error"  # ... stays in front: no filter was added or moved again
        assert len(warnings.filters) == len(installed) + 1
