"""DDIM must not clip x0 at every step, even when the schedule asks ancestral DDPM to clip."""

import torch

from litzoo.diffusion import NoiseSchedule, sample


def test_ddim_does_not_clip_x0_per_step_so_it_reaches_data_outside_the_clip_range():
    # 1-D data N(2, 0.5^2) lies mostly outside [-1, 1]; the ideal eps-predictor is closed form:
    # x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab),  eps = sqrt(1 - ab) (x - sqrt(ab) mu) / (ab s^2 + 1 - ab).
    mu, s = 2.0, 0.5
    schedule = NoiseSchedule(num_train_timesteps=1000, clip_sample=True)
    alphas_cumprod = schedule.alphas_cumprod.float()

    def ideal_eps(x, timestep):
        ab = alphas_cumprod[timestep.long()].view(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)

    assert schedule.ddim_scheduler().config.clip_sample is False
    x = sample(ideal_eps, schedule, (4000, 1), sampler="ddim", steps=200, generator=torch.Generator().manual_seed(0))
    # With per-step clipping every x0 estimate is cut to 1 and the mean lands far below 2.
    assert abs(x.mean().item() - mu) < 0.05 and abs(x.std().item() - s) < 0.05
