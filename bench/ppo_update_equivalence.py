"""litzoo's PPO vs Stable-Baselines3's on identical data, in the two places where they could differ.

    OMP_NUM_THREADS=1 python bench/ppo_update_equivalence.py

1. **The update.** SB3 collects one rollout of the zoo's CartPole recipe (8 envs x 32 steps, batch 256 = the
   whole rollout, 20 epochs, gamma 0.98, lambda 0.8, Adam lr 1e-3 eps 1e-5, clip 0.2, gradient norm clipped
   at 0.5) and takes its 20 gradient steps; litzoo's ``PPO.training_step`` (through ``Trainer.fit``'s manual
   optimisation, the path a user runs) takes its steps on SB3's rollout tensors from SB3's initial weights.
   With one minibatch per epoch the shuffling cannot differ, so the weights must agree to float32 rounding.
2. **The advantages.** litzoo collects 30 rollouts of its own; SB3's ``RolloutBuffer.compute_returns_and_advantage``
   is run on each rollout's rewards, values and episode ends, and its GAE advantages are compared with litzoo's.
   This checks the GAE recursion and where episodes cut it; the truncation bootstrap (``r + gamma V(final_obs)``,
   the same rule as SB3's) is given to both as litzoo computes it, and CartPole rarely truncates in 30 x 32 steps,
   so it is not compared here (tests/rl/test_buffers.py covers it).

If both agree, a difference in learning curves comes from the random streams (env resets, sampled actions),
not from the algorithm.
"""

from __future__ import annotations

import logging
import warnings

import gymnasium as gym
import lightning as L
import numpy as np
import torch

RECIPE = dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, clip_range=0.2)
# litzoo's parameter names -> SB3's ActorCriticPolicy names (separate 64-64 tanh actor and critic MLPs)
NAMES = {"policy.actor.logits.0": "mlp_extractor.policy_net.0", "policy.actor.logits.2": "mlp_extractor.policy_net.2",
         "policy.actor.logits.4": "action_net", "critic.0": "mlp_extractor.value_net.0",
         "critic.2": "mlp_extractor.value_net.2", "critic.4": "value_net"}


def _trainer(max_steps: int) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False)


def update_difference(seed: int = 0) -> tuple[float, float]:
    """(largest |litzoo - SB3| weight difference after one rollout's update, largest weight change)."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    from litzoo.modules.ppo import PPO
    from litzoo.rl.buffers import RolloutBatch

    sb3 = SB3PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), seed=seed, device="cpu",
                 learning_rate=1e-3, ent_coef=0.0, **RECIPE)
    init = {k: v.clone() for k, v in sb3.policy.state_dict().items()}
    sb3.learn(256)  # one rollout, one update of 20 epochs
    after = sb3.policy.state_dict()
    rb, n = sb3.rollout_buffer, 256
    rollout = RolloutBatch(*(torch.as_tensor(x).reshape(n, *shape).to(dtype) for x, shape, dtype in (
        (rb.observations, (4,), torch.float32), (rb.actions, (), torch.long), (rb.log_probs, (), torch.float32),
        (rb.values, (), torch.float32), (rb.advantages, (), torch.float32), (rb.returns, (), torch.float32))))

    class OneRollout(PPO):  # the user's module; only the data source is SB3's rollout
        def train_dataloader(self):
            return torch.utils.data.DataLoader([rollout], batch_size=None)

    module = OneRollout(observation_space=gym.spaces.Box(-np.inf, np.inf, (4,)), action_space=gym.spaces.Discrete(2),
                        hidden_sizes=(64, 64), lr=1e-3, max_grad_norm=0.5, **RECIPE)
    module.load_state_dict({f"{a}.{w}": init[f"{b}.{w}"] for a, b in NAMES.items() for w in ("weight", "bias")})
    _trainer(1).fit(module)
    ours = module.state_dict()
    diff = max(float((ours[f"{a}.{w}"] - after[f"{b}.{w}"]).abs().max()) for a, b in NAMES.items() for w in ("weight", "bias"))
    moved = max(float((after[f"{b}.{w}"] - init[f"{b}.{w}"]).abs().max()) for b in NAMES.values() for w in ("weight", "bias"))
    return diff, moved


def gae_difference(seed: int = 0, rollouts: int = 30) -> tuple[float, int]:
    """(largest |litzoo - SB3| GAE advantage over ``rollouts`` litzoo rollouts, episode ends seen)."""
    from stable_baselines3.common.buffers import RolloutBuffer as SB3RolloutBuffer

    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.ppo import PPO
    from litzoo.rl.buffers import RolloutBuffer

    seen = []
    compute = RolloutBuffer.compute_returns_and_advantages

    def recording(self, last_values, gamma, gae_lambda):
        advantages, returns = compute(self, last_values, gamma, gae_lambda)
        # the rewards here already carry the truncation bootstrap (SB3 adds it to the reward the same way)
        rewards = torch.where(self.truncated & ~self.terminated, self.rewards + gamma * self.final_values, self.rewards)
        seen.append((rewards.clone(), self.values.clone(), (self.terminated | self.truncated).clone(),
                     torch.as_tensor(last_values).clone(), advantages.clone()))
        return advantages, returns

    RolloutBuffer.compute_returns_and_advantages = recording
    try:
        module = PPO(hidden_sizes=(64, 64), lr=1e-3, log_every_n_env_steps=10**6, seed=seed, **RECIPE)
        _trainer(rollouts).fit(module, GymDataModule("CartPole-v1", num_envs=8, batches_per_epoch=1000, seed=seed))
    finally:
        RolloutBuffer.compute_returns_and_advantages = compute
    worst, ends = 0.0, 0
    for rewards, values, ended, last_values, advantages in seen:
        sb3 = SB3RolloutBuffer(32, gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Discrete(2), device="cpu",
                               gae_lambda=RECIPE["gae_lambda"], gamma=RECIPE["gamma"], n_envs=8)
        sb3.rewards[:], sb3.values[:] = rewards.numpy(), values.numpy()
        sb3.episode_starts[:] = np.concatenate([np.zeros((1, 8)), ended[:-1].numpy()])  # s_t starts an episode
        sb3.compute_returns_and_advantage(last_values, ended[-1].numpy().astype(np.float32))
        worst, ends = max(worst, float(np.abs(sb3.advantages - advantages.numpy()).max())), ends + int(ended.sum())
    return worst, ends


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    diff, moved = update_difference()
    print(f"update: largest weight difference litzoo vs SB3 after 20 epochs on SB3's rollout: {diff:.1e} "
          f"(largest weight change in the update: {moved:.1e})")
    worst, ends = gae_difference()
    print(f"GAE: largest advantage difference litzoo vs SB3 over 30 rollouts ({ends} episode ends): {worst:.1e}")


if __name__ == "__main__":
    main()
