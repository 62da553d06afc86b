"""Running statistics against numpy, and the observation / return normalisers built on them."""

import io

import numpy as np
import pytest
import torch

from litzoo.rl import ObservationNormalizer, ReturnNormalizer, RunningMeanStd


def test_running_mean_std_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=[1.0, 5.0, 0.1], size=(n, 3)) for n in (1, 7, 64, 2, 300)]
    rms = RunningMeanStd(shape=(3,))
    seen = []
    for batch in batches:
        rms.update(torch.from_numpy(batch))
        seen.append(batch)
        data = np.concatenate(seen)
        np.testing.assert_allclose(rms.mean.numpy(), data.mean(axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rms.var.numpy(), data.var(axis=0), rtol=1e-10, atol=1e-12)
        assert rms.count.item() == len(data)


def test_running_mean_std_is_identity_before_the_first_update():
    x = torch.tensor([[1.0, -2.0]])
    torch.testing.assert_close(RunningMeanStd((2,)).normalize(x, epsilon=0.0), x)


def test_running_mean_std_state_dict_round_trip_and_float32_output():
    rms = RunningMeanStd((2,))
    rms.update(torch.randn(50, 2, dtype=torch.float32) * 4 + 1)
    blob = io.BytesIO()
    torch.save(rms.state_dict(), blob)
    blob.seek(0)
    restored = RunningMeanStd((2,))
    restored.load_state_dict(torch.load(blob))
    for name in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(restored, name), getattr(rms, name))
    x = torch.randn(5, 2)
    out = restored.normalize(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ((x.double() - rms.mean) / (rms.var + 1e-8).sqrt()).float())


def test_running_mean_std_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="expected a non-empty batch"):
        RunningMeanStd((3,)).update(torch.zeros(4, 2))


def test_observation_normalizer_whitens_and_clips():
    torch.manual_seed(0)
    data = torch.randn(5000, 2) * torch.tensor([10.0, 0.5]) + torch.tensor([-3.0, 7.0])
    norm = ObservationNormalizer((2,), clip=3.0)
    for chunk in data.split(100):
        norm.update(chunk)
    z = norm(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=0.02, rtol=0)
    assert z.abs().max() <= 3.0
    assert norm(torch.tensor([[1e6, 7.0]]))[0, 0] == 3.0


def test_observation_normalizer_statistics_live_in_the_owner_state_dict():
    owner = torch.nn.Module()
    owner.obs_norm = ObservationNormalizer((4,))
    owner.obs_norm.update(torch.randn(10, 4))
    keys = set(owner.state_dict())
    assert {"obs_norm.rms.mean", "obs_norm.rms.var", "obs_norm.rms.count"} <= keys


def test_return_normalizer_scales_rewards_by_the_std_of_the_discounted_return():
    gamma, num_envs, T = 0.9, 3, 40
    rng = np.random.default_rng(1)
    rewards = rng.normal(1.0, 2.0, size=(T, num_envs))
    dones = rng.random((T, num_envs)) < 0.1
    norm = ReturnNormalizer(num_envs, gamma, clip=None, epsilon=0.0)
    # Reference: the running discounted returns G_t = gamma G_{t-1} + r_t, restarted after each episode.
    G, history = np.zeros(num_envs), []
    for t in range(T):
        norm.update(torch.from_numpy(rewards[t]), torch.from_numpy(dones[t]))
        G = gamma * G + rewards[t]
        history.append(G.copy())
        G[dones[t]] = 0.0
    np.testing.assert_allclose(norm.returns.numpy(), G)
    expected_var = np.concatenate(history).var()
    np.testing.assert_allclose(norm.rms.var.item(), expected_var, rtol=1e-10)
    r = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(norm(r), r / float(np.sqrt(expected_var)))
    # the running returns are transient; the statistics are saved
    assert set(norm.state_dict()) == {"rms.mean", "rms.var", "rms.count"}


def test_return_normalizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="gamma"):
        ReturnNormalizer(2, gamma=1.5)
    with pytest.raises(ValueError, match="shape"):
        ReturnNormalizer(2, gamma=0.99).update(torch.zeros(3), torch.zeros(3))


def _update_on_rank(rank: int, world_size: int, port: int, data: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    rms = RunningMeanStd((3,))
    for chunk in data[rank].split([5, 2, 9]):  # uneven batches, different data on every rank
        rms.update(chunk)
    torch.save({k: v.clone() for k, v in rms.state_dict().items()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_running_mean_std_merges_all_ranks_under_torch_distributed(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = torch.randn(2, 16, 3, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.1], dtype=torch.float64) + 2.0
    data[1] += 5.0  # the ranks see different distributions
    mp.spawn(_update_on_rank, args=(2, port, data, str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    everything = data.reshape(-1, 3)
    for state in states:  # both ranks hold the statistics of all 32 observations
        assert state["count"].item() == 32
        torch.testing.assert_close(state["mean"], everything.mean(0))
        torch.testing.assert_close(state["var"], everything.var(0, unbiased=False))


def moments(x):
    """A batch's float64 mean and population variance as numpy computes them (torch's variance can differ in the
    last bit: the two reduce in another order)."""
    xs = x.double().numpy()
    return torch.as_tensor(xs.mean(0)), torch.as_tensor(xs.var(0))


def test_the_cpu_numpy_path_is_the_torch_merge_to_the_bit():
    g = torch.Generator().manual_seed(0)
    rms, reference = RunningMeanStd((3,)), RunningMeanStd((3,))
    returns, gamma = ReturnNormalizer(4, 0.9, clip=1.0), 0.9
    G, ref_returns = torch.zeros(4, dtype=torch.float64), RunningMeanStd(())
    for _ in range(200):  # one vector-env step of 4 envs at a time, as collect_rollout does
        x = torch.randn(4, 3, generator=g) * 3 + 1
        rms.update(x)
        reference.update_from_moments(*moments(x), 4)  # the torch merge
        rewards, dones = torch.randn(4, generator=g), torch.rand(4, generator=g) < 0.1
        returns.update(rewards, dones)
        G = G * gamma + rewards.double()
        ref_returns.update_from_moments(*moments(G), 4)
        G = G.masked_fill(dones, 0.0)
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(rms, name), getattr(reference, name)), name
        assert torch.equal(getattr(returns.rms, name), getattr(ref_returns, name)), name
    assert torch.equal(returns.returns, G)
    x = torch.randn(6, 3, generator=g) * 10
    expected = ((x.double() - reference.mean) / (reference.var + 1e-8).sqrt()).clamp(-2.0, 2.0).float()
    assert torch.equal(rms.normalize(x, clip=2.0), expected)
    r = torch.randn(4, generator=g) * 5
    assert torch.equal(returns(r), (r.double() / (ref_returns.var + 1e-8).sqrt()).clamp(-1.0, 1.0).float())


def test_trace_export_vmap_and_other_dtypes_take_the_torch_path(recwarn):
    rms = RunningMeanStd((3,))
    rms.update(torch.randn(50, 3) * 4 + 1)
    x, fresh = torch.randn(5, 3), torch.randn(5, 3) * 7

    class Normalize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rms = rms

        def forward(self, obs):
            return self.rms.normalize(obs, clip=2.0)

    expected = Normalize()(fresh)
    traced = torch.jit.trace(Normalize(), x)  # a numpy detour would be recorded as a constant output
    assert torch.equal(traced(fresh), expected)
    assert torch.equal(torch.export.export(Normalize(), (x,)).module()(fresh), expected)
    assert torch.equal(torch.func.vmap(Normalize())(fresh[:, None])[:, 0], expected)
    for dtype in (torch.bfloat16, torch.float32):  # statistics cast by .to(dtype): torch's own arithmetic
        low = RunningMeanStd((3,))
        low.load_state_dict(rms.state_dict())
        low.to(dtype)
        low.update(x.to(dtype))
        assert low.mean.dtype == dtype and low.normalize(fresh.to(dtype)).dtype == dtype
    rms.update(torch.tensor([[float("inf"), 0.0, 0.0]]))  # inf/nan propagate without warnings, as in torch
    assert torch.isnan(rms.normalize(x)[:, 0]).all() and not [w for w in recwarn if w.category is RuntimeWarning]
