"""The math of RL, no Lightning: buffers, GAE, running normalisers, Polyak updates.

Every piece runs and is tested without a Trainer; the LightningModules in ``litzoo.modules`` wire
them together.
"""

from litzoo.rl.buffers import ReplayBatch, ReplayBuffer, RolloutBatch, RolloutBuffer
from litzoo.rl.gae import compute_gae
from litzoo.rl.normalization import ObservationNormalizer, ReturnNormalizer, RunningMeanStd
from litzoo.rl.utils import explained_variance, polyak_update

__all__ = [
    "ObservationNormalizer",
    "ReplayBatch",
    "ReplayBuffer",
    "ReturnNormalizer",
    "RolloutBatch",
    "RolloutBuffer",
    "RunningMeanStd",
    "compute_gae",
    "explained_variance",
    "polyak_update",
]
