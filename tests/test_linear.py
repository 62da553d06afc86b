"""litzoo.nets.linear: float32 linears through oneDNN (forward, both gradients, double backward, strided operands,
no_grad / inference_mode) against float64 references and torch's own path; the backend choice; where it must not
apply (small, autocast, float64, forward AD, dispatch modes, TorchScript / FX); the RL critics' members."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad as fwAD
from torch.utils.flop_counter import FlopCounterMode

from litzoo.nets import linear as L
from litzoo.nets.actors_critics import DeterministicActor, EnsembleLinear, QCritic

needs_onednn = pytest.mark.skipif(not L._onednn_usable(), reason="this torch build has no oneDNN linear op")


@pytest.fixture
def backend():
    """Set the backend for one test and put the process's setting back after it."""
    before = L._backend
    yield L.set_cpu_float32_matmul
    L.set_cpu_float32_matmul(before)


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts oneDNN linear calls (forward and backward matmuls alike)."""
    calls = []
    op = torch.ops.mkldnn._linear_pointwise

    class Spy:
        def __call__(self, *args):
            calls.append(tuple(args[0].shape))
            return op(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    return calls


def _case(m=256, k=400, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=torch.float64)
    w = torch.randn(n, k, generator=g, dtype=torch.float64) / k**0.5
    b = torch.randn(n, generator=g, dtype=torch.float64)
    grad = torch.randn(m, n, generator=g, dtype=torch.float64)
    return x, w, b, grad


def _rel(got, want):
    return ((got.double() - want).abs().max() / want.abs().max()).item()


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="'mkl' is not one of .*'auto', 'onednn', 'blas'"):
        L.set_cpu_float32_matmul("mkl")


@pytest.mark.parametrize("vendor, capability, mkl, want", [
    ("AuthenticAMD", "AVX512", True, "onednn"),   # MKL runs its generic AVX2 code on a non-Intel AVX-512 CPU
    ("GenuineIntel", "AVX512", True, "blas"),     # MKL's own AVX-512 kernels
    ("AuthenticAMD", "AVX2", True, "blas"),       # no wider kernels for oneDNN to use
    ("AuthenticAMD", "AVX512", False, "blas"),    # torch's BLAS is not MKL
    ("AMD64 Family 26 Model 2 Stepping 1, AuthenticAMD", "AVX512", True, "onednn"),  # Windows' platform.processor()
    ("Intel64 Family 6 Model 85 Stepping 7, GenuineIntel", "AVX512", True, "blas"),
    ("", "AVX512", True, "blas"),                 # vendor unknown: keep torch's
])
def test_auto_picks_onednn_only_on_amd_avx512_with_mkl(monkeypatch, backend, vendor, capability, mkl, want):
    monkeypatch.setattr(L, "_cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    monkeypatch.setattr(L.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(L, "_onednn_usable", lambda: True)
    L._auto_choice.cache_clear()
    try:
        backend("auto")
        assert L.cpu_float32_matmul() == want
        backend("blas")
        assert L.cpu_float32_matmul() == "blas"
    finally:
        L._auto_choice.cache_clear()


@needs_onednn
def test_forward_and_gradients_are_float32_products(backend, onednn_calls):
    backend("onednn")
    x64, w64, b64, g64 = _case()
    x, w, b = (t.float().requires_grad_() for t in (x64, w64, b64))
    y = L.linear(x, w, b)
    y.backward(g64.float())
    assert onednn_calls == [(256, 400), (256, 300), (300, 256)]  # forward, grad X = G W, grad W = G^T X
    want_y, want_gx, want_gw = x64 @ w64.T + b64, g64 @ w64, g64.T @ x64
    # float32 rounding of a 300-400 term sum: ~1e-6 of the scale; bf16/TF32 inputs would give ~1e-3
    for got, want in ((y, want_y), (x.grad, want_gx), (w.grad, want_gw), (b.grad, g64.sum(0))):
        assert got.dtype == torch.float32 and _rel(got, want) < 2e-6
    # torch's own float32 path is as close: the two differ by rounding only
    x2, w2, b2 = (t.float().requires_grad_() for t in (x64, w64, b64))
    F.linear(x2, w2, b2).backward(g64.float())
    assert _rel(w2.grad, want_gw) < 2e-6 and _rel(x2.grad, want_gx) < 2e-6


@needs_onednn
def test_leading_dims_strided_weight_and_no_bias(backend, onednn_calls):
    backend("onednn")
    x64, w64, _, _ = _case(m=512)
    x = x64.float().view(2, 256, 400)
    w_t = w64.float().T.contiguous().requires_grad_()  # (K, N) stored: pass its transpose, a strided (N, K) view
    y = L.linear(x, w_t.t())
    assert y.shape == (2, 256, 300) and onednn_calls == [(512, 400)]
    assert _rel(y.reshape(512, 300), x64 @ w64.T) < 2e-6
    y.sum().backward()
    assert w_t.grad.shape == (400, 300) and _rel(w_t.grad, x64.T @ torch.ones(512, 300, dtype=torch.float64)) < 2e-6


@needs_onednn
def test_repeated_calls_are_bitwise_equal(backend, onednn_calls):
    backend("onednn")
    x, w, b, _ = (t.float() for t in _case())
    assert torch.equal(L.linear(x, w, b), L.linear(x, w, b))
    y_grad = L.linear(x.requires_grad_(), w, b)
    with torch.no_grad():  # no autograd node: oneDNN's op directly, the same numbers
        y = L.linear(x, w, b)
    with torch.inference_mode():
        y_inf = L.linear(x, w, b)
    assert y_grad.grad_fn is not None and y.grad_fn is None and torch.equal(y, y_grad.detach())
    assert torch.equal(y_inf, y) and len(onednn_calls) == 5


@needs_onednn
def test_double_backward_gives_the_hessian_vector_product(backend, onednn_calls):
    """TRPO differentiates gradients again: the oneDNN backward must be differentiable (a non-differentiable
    backward would silently give a zero Hessian-vector product)."""
    x64, w64, b64, _ = _case(m=128, k=256, n=128)
    v64 = torch.randn(w64.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def hvp(fn, dtype):
        w = w64.to(dtype).requires_grad_()
        loss = torch.tanh(fn(x64.to(dtype), w, b64.to(dtype))).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, w, create_graph=True)
        (hv,) = torch.autograd.grad((grad * v64.to(dtype)).sum(), w)
        return hv

    want = hvp(F.linear, torch.float64)
    backend("onednn")
    assert 128 * 256 * 128 >= L.MIN_MNK and 256 * 128 >= L.MIN_KN
    got = hvp(L.linear, torch.float32)
    # oneDNN inputs: forward X (128, 256); grad W = G^T X with create_graph, G^T (128, 128); the second backward:
    # that call's input gradient from its (128, 256) output gradient, then the forward's weight gradient again
    assert onednn_calls == [(128, 256), (128, 128), (128, 256), (128, 128)]
    assert want.abs().max() > 1 and _rel(got, want) < 1e-5


def test_where_torch_computes_it(backend, onednn_calls):
    """Below MIN_MNK, under autocast, for float64, under forward AD and with the 'blas' backend: torch's F.linear,
    bitwise."""
    backend("onednn" if L._onednn_usable() else "blas")
    x, w, b, _ = (t.float() for t in _case())
    small_x = x[:8, :16].contiguous()  # 8 * 16 * 300 < MIN_MNK
    assert torch.equal(L.linear(small_x, w[:, :16], b), F.linear(small_x, w[:, :16], b))
    rows = torch.randn(1024, 64)  # 1024 * 64 * 64 = 2 * MIN_MNK, but a 64-64 weight < MIN_KN
    narrow, narrow_b = w[:64, :64].contiguous(), b[:64]
    assert torch.equal(L.linear(rows, narrow, narrow_b), F.linear(rows, narrow, narrow_b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = L.linear(x, w, b)
        assert y.dtype == torch.bfloat16 and torch.equal(y, F.linear(x, w, b))
    x64, w64, b64, _ = _case()
    assert torch.equal(L.linear(x64, w64, b64), F.linear(x64, w64, b64))
    tangent = torch.ones_like(x)
    with fwAD.dual_level():  # oneDNN's linear has no forward-mode formula: torch's path keeps the tangent
        out = fwAD.unpack_dual(L.linear(fwAD.make_dual(x, tangent), w, b))
    assert torch.equal(out.tangent, F.linear(tangent, w))
    assert onednn_calls == []
    backend("blas")
    assert torch.equal(L.linear(x, w, b), F.linear(x, w, b)) and onednn_calls == []


@needs_onednn
def test_strided_bias_and_frozen_weight(backend, onednn_calls):
    """oneDNN reads a bias as contiguous whatever its strides: linear() hands it a contiguous one. A frozen weight
    (the actor's term through the critic) still gives the input gradient."""
    backend("onednn")
    x64, w64, b64, g64 = _case()
    packed = torch.stack([b64, -b64], 1).float().requires_grad_()  # (N, 2): packed[:, 0] has stride 2
    x, w = x64.float().requires_grad_(), w64.float()
    y = L.linear(x, w, packed[:, 0])
    y.backward(g64.float())
    assert len(onednn_calls) == 2  # forward and grad X: no weight gradient asked for
    assert _rel(y, x64 @ w64.T + b64) < 2e-6 and _rel(x.grad, g64 @ w64) < 2e-6
    assert torch.equal(packed.grad[:, 1], torch.zeros(300)) and _rel(packed.grad[:, 0], g64.sum(0)) < 2e-6


def test_sparse_input_and_a_mismatched_ensemble_take_torch_s_path(backend, onednn_calls):
    backend("onednn" if L._onednn_usable() else "blas")
    x, w, b, _ = (t.float() for t in _case())
    sparse = x.relu().to_sparse()
    assert torch.allclose(L.linear(sparse, w, b), F.linear(x.relu(), w, b), rtol=1e-5, atol=1e-5)
    layer = EnsembleLinear(2, 400, 300)
    with pytest.raises(RuntimeError):  # 3 stacked inputs for 2 members: baddbmm's error, not a silent slice
        layer(torch.randn(3, 256, 400))
    assert onednn_calls == []


def test_checking_onednn_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    L._onednn_usable.cache_clear()
    L._onednn_usable()
    assert torch.equal(torch.rand(3), want)


@needs_onednn
def test_flop_counting_compile_scripting_and_fx_see_torch_s_linear(backend, onednn_calls):
    backend("onednn")
    layer = L.Linear(400, 300)
    x = torch.randn(256, 400, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        layer(x).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 256 * 400 * 300  # forward + two gradients
    y = layer(x)  # forward outside, backward inside the mode: the backward's matmuls are torch's too
    with FlopCounterMode(display=False) as counter:
        y.sum().backward()
    assert counter.get_total_flops() == 2 * 2 * 256 * 400 * 300
    assert onednn_calls == [(256, 400)]  # only that forward went to oneDNN
    compiled = torch.compile(layer, backend="eager", dynamic=True)
    for rows in (8, 256):  # either side of MIN_MNK: torch's linear inside the graph, no size guard to trip on
        assert torch.equal(compiled(x[:rows]), F.linear(x[:rows], layer.weight, layer.bias))
    assert onednn_calls == [(256, 400)]
    actor = DeterministicActor(3, 1, (400, 300))
    obs = torch.randn(256, 3)
    for compiled in (torch.jit.script(actor), torch.fx.symbolic_trace(actor)):
        assert _rel(compiled(obs), actor(obs).double()) < 1e-5


def test_onednn_is_refused_where_this_torch_has_none(monkeypatch, backend):
    monkeypatch.setattr(L, "_onednn_usable", lambda: False)
    with pytest.raises(RuntimeError, match="no usable oneDNN linear op"):
        backend("onednn")


def test_blas_backend_keeps_the_critic_s_batched_matmul(backend):
    """With the BLAS, the critic's members are one baddbmm and q1 one addmm, as before oneDNN existed."""
    backend("blas")
    torch.manual_seed(0)
    layer = EnsembleLinear(2, 400, 300)
    x = torch.randn(256, 400)
    assert torch.equal(layer(x), torch.baddbmm(layer.bias, x.expand(2, 256, 400), layer.weight))
    assert torch.equal(layer.member(x, 1), torch.addmm(layer.bias[1], x, layer.weight[1]))


@needs_onednn
def test_critic_and_actor_through_onednn_match_the_blas(backend, onednn_calls):
    torch.manual_seed(0)
    critic, actor = QCritic(3, 1, (400, 300), num_critics=2), DeterministicActor(3, 1, (400, 300))
    params = [*critic.parameters(), *actor.parameters()]
    obs, act = torch.randn(256, 3), torch.randn(256, 1)

    def run():
        for p in params:
            p.grad = None
        q, q1 = critic(obs, act), critic.q1(obs, act)
        (q.square().sum() + q1.sum() + actor(obs).sum()).backward()
        return [q, q1, *(p.grad.clone() for p in params)]

    backend("blas")
    want = run()
    assert onednn_calls == []
    backend("onednn")
    got = run()
    # the 400->300 layers only (256*4*400 and 256*300*1 stay below MIN_MNK): 2 critic members + q1 + actor,
    # each a forward and two gradients
    assert len(onednn_calls) == 4 * 3
    assert _rel(got[1], got[0][0].double()) < 1e-6  # q1 is member 0
    for g, w in zip(got, want):
        assert _rel(g, w.double()) < 1e-5


def test_the_environment_variable_sets_the_backend_and_is_checked():
    code = "from litzoo.nets.linear import cpu_float32_matmul; print(cpu_float32_matmul())"
    env = {**os.environ, "LITZOO_CPU_FLOAT32_MATMUL": "blas"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "blas"
    env["LITZOO_CPU_FLOAT32_MATMUL"] = "fast"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "LITZOO_CPU_FLOAT32_MATMUL: CPU float32 matmul backend 'fast' is not one of" in out.stderr
