"""The math of RL, no Lightning: buffers, GAE, running normalisers, Polyak updates, TRPO's trust-region
solver, grid-world features for linear value functions.

Every piece runs and is tested without a Trainer; the LightningModules in ``litzoo.modules`` wire
them together.
"""

from litzoo.rl.features import FEATURES, make_features
from litzoo.rl.buffers import ReplayBatch, ReplayBuffer, RolloutBatch, RolloutBuffer
from litzoo.rl.gae import compute_gae
from litzoo.rl.normalization import ObservationNormalizer, ReturnNormalizer, RunningMeanStd
from litzoo.rl.trust_region import backtracking_line_search, conjugate_gradient, fisher_vector_product
from litzoo.rl.utils import explained_variance, polyak_update

__all__ = [
    "FEATURES",
    "backtracking_line_search",
    "conjugate_gradient",
    "fisher_vector_product",
    "make_features",
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
