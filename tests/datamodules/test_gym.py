"""GymDataModule, EnvRunner and the shared collection loop: final observations, truncation
bootstrapping, batch counts and ordering, per-rank seeds, and 2-process CPU DDP training."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces

from litzoo.datamodules.gym import (
    EnvRunner,
    GymDataModule,
    _EnvStream,
    collect_rollout,
    step_into_replay,
)
from litzoo.rl.buffers import ReplayBuffer, RolloutBuffer

REPO = Path(__file__).resolve().parents[2]


class Counter(gym.Env):
    """obs = number of steps taken in the episode; reward 1 per step; terminates at ``terminate_at``."""

    def __init__(self, terminate_at=None, render_mode=None):
        self.observation_space = spaces.Box(0.0, 1000.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.terminate_at, self.render_mode = terminate_at, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([self.t], np.float32), 1.0, terminated, False, {}


def runner(num_envs=1, max_episode_steps=3, **env_kwargs) -> EnvRunner:
    dm = GymDataModule(Counter, num_envs=num_envs, max_episode_steps=max_episode_steps, env_kwargs=env_kwargs)
    dm.setup("fit")
    dm.env.reset(seed=0)
    return dm.env


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


def test_runner_returns_the_real_final_observation_and_flags_truncation_not_termination():
    env = runner(max_episode_steps=3)
    action = torch.zeros(1, 1)
    for t in (1, 2):
        step = env.step(action)
        assert step.obs.item() == t and step.final_obs.item() == t and not step.truncated.item()
    step = env.step(action)  # the time limit ends the episode
    assert step.truncated.item() and not step.terminated.item()
    assert step.final_obs.item() == 3.0  # the real s_{t+1}
    assert step.obs.item() == 0.0 and env.obs.item() == 0.0  # already the next episode's first observation
    assert env.pop_episodes() == ([3.0], [3]) and env.pop_episodes() == ([], [])
    assert env.steps == 3


def test_runner_flags_termination_and_keeps_envs_independent():
    env = runner(num_envs=2, max_episode_steps=None, terminate_at=2)
    env.step(torch.zeros(2, 1))
    step = env.step(torch.zeros(2, 1))
    assert step.terminated.tolist() == [True, True] and step.truncated.tolist() == [False, False]
    assert step.final_obs[:, 0].tolist() == [2.0, 2.0] and step.obs[:, 0].tolist() == [0.0, 0.0]
    assert step.rewards.dtype == torch.float32 and step.obs.dtype == torch.float32


def test_runner_rejects_next_step_autoreset_vector_envs():
    envs = gym.vector.SyncVectorEnv([Counter])  # gymnasium's default NEXT_STEP mode
    with pytest.raises(ValueError, match="SAME_STEP"):
        EnvRunner(envs)


def test_step_into_replay_stores_the_final_observation_and_done_only_on_termination():
    env = runner(max_episode_steps=3)
    buffer = ReplayBuffer(10, (1,), (1,))
    for _ in range(3):
        step_into_replay(env, buffer, torch.zeros(1, 1), torch.zeros(1, 1))
    assert buffer.obs[:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert buffer.next_obs[:3, 0].tolist() == [1.0, 2.0, 3.0]  # not the reset observation 0
    assert buffer.dones[:3].tolist() == [0.0, 0.0, 0.0]  # truncation is not termination


def test_collect_rollout_bootstraps_a_truncated_episode_from_its_final_observation():
    env = runner(max_episode_steps=3)
    buffer = RolloutBuffer(4, 1, (1,), (1,))
    value = lambda obs: 10.0 * obs[:, 0]  # V(s) = 10 * count  # noqa: E731

    def act(obs):
        return torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1)

    last_values = collect_rollout(env, buffer, act, value)
    assert buffer.obs[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 0.0]
    assert buffer.values[:, 0].tolist() == [0.0, 10.0, 20.0, 0.0]  # V(s_t) of every stored step
    assert buffer.truncated[:, 0].tolist() == [False, False, True, False]
    assert buffer.final_values[2, 0].item() == 30.0  # V(final obs = 3), not V(reset obs = 0)
    assert last_values.tolist() == [10.0]  # V(s_T), s_T = 1
    gamma = 0.5
    _, returns = buffer.compute_returns_and_advantages(last_values, gamma, gae_lambda=1.0)
    # step 2 is cut by the time limit: 1 + gamma * V(3); step 3 bootstraps from V(s_T)
    torch.testing.assert_close(returns[:, 0], torch.tensor([1 + 0.5 * (1 + 0.5 * 16.0), 1 + 0.5 * 16.0, 16.0, 6.0]))


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


def test_collect_rollout_step_values_see_each_stored_observation_and_action():
    """QAC stores q(s_t, a_t): step_values gets the (T*N) stored observations and actions, in order."""
    env = runner(num_envs=2, max_episode_steps=10)
    buffer = RolloutBuffer(3, 2, (1,), (1,))

    def act(obs):
        actions = obs + 0.5  # a function of the state, so a mix-up of rows would show
        return actions, actions, torch.zeros(2)

    last_values = collect_rollout(env, buffer, act, lambda obs: -obs[:, 0],
                                  step_values=lambda obs, actions: 100 * obs[:, 0] + actions[:, 0])
    expected = 100 * buffer.obs[..., 0] + buffer.obs[..., 0] + 0.5
    assert buffer.obs[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    torch.testing.assert_close(buffer.values, expected)
    torch.testing.assert_close(last_values, -env.obs[:, 0])
