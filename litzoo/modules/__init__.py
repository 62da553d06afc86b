"""LightningModules, one method per file."""

from litzoo.modules.actor_critic import ActorCritic
from litzoo.modules.cot_sft import CoTSFT
from litzoo.modules.ddpg import DDPG, TD3
from litzoo.modules.ddpm import DDPM
from litzoo.modules.dqn import DQN
from litzoo.modules.kimi_rl import KimiRL
from litzoo.modules.ppo import PPO
from litzoo.modules.rectified_flow import RectifiedFlowDiT
from litzoo.modules.sac import SAC
from litzoo.modules.trpo import TRPO
from litzoo.modules.vae import VAE
from litzoo.modules.value_function_approximation import ValueFunctionApproximation

__all__ = ["DDPM", "RectifiedFlowDiT", "VAE", "DDPG", "TD3", "ActorCritic", "TRPO", "PPO", "SAC", "DQN", "ValueFunctionApproximation", "CoTSFT",
           "KimiRL"]
