"""litzoo's DQN update vs Stable-Baselines3's on identical data: one block of gradient steps from the same
initial weights on the same minibatches (SB3's replay sampling is replaced by the same fixed batches).

    OMP_NUM_THREADS=1 python bench/dqn_update_equivalence.py

The zoo's CartPole recipe (256-256 ReLU net, Adam lr 2.3e-3, batch 64, gamma 0.99, Huber loss, gradient
norm clipped at 10, 128 gradient steps per block). If the largest weight difference after the block is at
float32 rounding level, the two libraries take the same gradient steps, and any difference in learning
curves comes from acting/exploration and the random streams, not the update.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
import numpy as np
import torch


def main(steps: int = 128, batch_size: int = 64) -> float:
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.dqn import DQN
    from litzoo.rl.buffers import ReplayBatch

    torch.manual_seed(0)
    sb3 = SB3DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=batch_size, learning_starts=0,
                 gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=steps,
                 policy_kwargs=dict(net_arch=[256, 256]), device="cpu", seed=0)
    ours = DQN(*GymDataModule("CartPole-v1").space_specs(), hidden_sizes=(256, 256), lr=2.3e-3, batch_size=batch_size,
               train_freq=256, gradient_steps=steps, gamma=0.99, max_grad_norm=10.0, exploration_fraction=0.0)
    init = sb3.q_net.q_net.state_dict()  # one initialisation for both, online and target networks
    ours.q_net.q.load_state_dict(init)
    ours.q_target.q.load_state_dict(init)
    sb3.q_net_target.q_net.load_state_dict(init)

    rng = np.random.default_rng(0)
    obs = torch.tensor(rng.normal(size=(steps, batch_size, 4)), dtype=torch.float32)
    next_obs = obs + 0.05 * torch.tensor(rng.normal(size=(steps, batch_size, 4)), dtype=torch.float32)
    actions = torch.tensor(rng.integers(0, 2, size=(steps, batch_size)))
    rewards = torch.ones(steps, batch_size)
    dones = torch.tensor(rng.random((steps, batch_size)) < 0.05, dtype=torch.float32)

    batches = iter(range(steps))

    def fixed_sample(batch_size: int, env=None) -> ReplayBufferSamples:
        i = next(batches)
        return ReplayBufferSamples(obs[i], actions[i][:, None], next_obs[i], dones[i][:, None], rewards[i][:, None])

    sb3.replay_buffer.sample = fixed_sample
    sb3._setup_learn(1000)
    sb3.train(gradient_steps=steps, batch_size=batch_size)

    block = ReplayBatch(obs, actions, rewards, next_obs, dones)

    class OneBlock(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield block

    L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(ours, torch.utils.data.DataLoader(OneBlock(), batch_size=None))

    theirs, mine = sb3.q_net.q_net.state_dict(), ours.q_net.q.state_dict()
    print(f"after {steps} gradient steps on identical minibatches (batch {batch_size}):\n")
    print("| parameter | max abs difference | max abs value |")
    print("|---|---|---|")
    worst = 0.0
    for name, value in mine.items():
        diff = float((value - theirs[name]).abs().max())
        worst = max(worst, diff)
        print(f"| q.{name} | {diff:.1e} | {float(theirs[name].abs().max()):.3f} |")
    print(f"\nlargest difference: {worst:.1e}")
    return worst


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    main()
