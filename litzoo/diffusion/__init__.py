"""The math of diffusion models, no Lightning: noise schedules, VP/VE SDEs, samplers, likelihood."""

from litzoo.diffusion.likelihood import bits_per_dim, log_likelihood
from litzoo.diffusion.samplers import SAMPLERS, ODESolution, sample, solve_ivp_dopri5
from litzoo.diffusion.schedules import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    NoiseSchedule,
    predict_eps,
    predict_x0,
    training_target,
)
from litzoo.diffusion.sde import SDE, SDES, VESDE, VPSDE, make_sde

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "SAMPLERS",
    "SDES",
    "SDE",
    "VPSDE",
    "VESDE",
    "NoiseSchedule",
    "ODESolution",
    "bits_per_dim",
    "log_likelihood",
    "make_sde",
    "predict_eps",
    "predict_x0",
    "sample",
    "solve_ivp_dopri5",
    "training_target",
]
