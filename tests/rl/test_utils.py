"""Polyak (soft target) updates and explained variance."""

import copy

import pytest
import torch

from litzoo.rl import explained_variance, polyak_update
from litzoo.rl.utils import flush_denormals, flushing_denormals


def nets():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.data.normal_()
    return online, target


def test_polyak_update_moves_target_by_tau_toward_source():
    online, target = nets()
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(online.parameters(), target.parameters(), tau=0.005)
    for p_new, p_old, p_src in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(p_new, 0.005 * p_src + 0.995 * p_old)


def test_polyak_update_with_tau_one_copies_and_tau_zero_keeps():
    online, target = nets()
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(online.parameters(), target.parameters(), tau=0.0)
    for p, b in zip(target.parameters(), before):
        assert torch.equal(p, b)
    polyak_update(online.parameters(), target.parameters(), tau=1.0)
    for p, s in zip(target.parameters(), online.parameters()):
        assert torch.equal(p, s)


def test_polyak_update_records_no_graph_and_copies_integer_buffers():
    online, target = nets()
    online(torch.randn(8, 3)).sum().backward()  # online has grads; the update must not touch autograd
    online[1].num_batches_tracked.fill_(7)
    polyak_update(online.buffers(), target.buffers(), tau=0.5)
    polyak_update(online.parameters(), target.parameters(), tau=0.5)
    assert target[1].num_batches_tracked.item() == 7
    assert all(p.grad is None and p.grad_fn is None for p in target.parameters())


def test_polyak_update_rejects_mismatched_inputs_and_bad_tau():
    online, target = nets()
    with pytest.raises(ValueError, match="tau"):
        polyak_update(online.parameters(), target.parameters(), tau=1.5)
    with pytest.raises(ValueError, match="matching"):
        polyak_update(list(online.parameters())[:-1], target.parameters(), tau=0.1)
    with pytest.raises(ValueError, match="shape"):
        polyak_update([torch.zeros(2)], [torch.zeros(3)], tau=0.1)


def test_explained_variance_of_perfect_mean_and_constant_predictions():
    y = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert explained_variance(y, y).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, y.mean()), y).item() == pytest.approx(0.0)
    assert explained_variance(-y, y).item() < 0
    assert torch.isnan(explained_variance(y, torch.ones(4)))


def test_flush_denormals_zeroes_denormals_inside_only_and_restores_the_callers_setting():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero flags (torch.set_flush_denormal returned False)")
    torch.set_flush_denormal(False)
    tiny = torch.finfo(torch.float32).tiny  # 1.2e-38, the smallest normal float
    x = torch.tensor([tiny / 4, 3e-40, 1.0])  # two denormals
    decay = torch.tensor(0.9)
    assert not flushing_denormals() and (x * decay)[0] > 0
    with flush_denormals():
        assert flushing_denormals()
        assert torch.equal(x * decay, torch.tensor([0.0, 0.0, 1.0]) * decay)
    assert not flushing_denormals() and (x * decay)[0] > 0
    with flush_denormals(enabled=False):
        assert not flushing_denormals()
    torch.set_flush_denormal(True)  # a caller that flushes keeps flushing after the block
    try:
        with flush_denormals():
            pass
        assert flushing_denormals()
    finally:
        torch.set_flush_denormal(False)
