r"""Float32 linear layers on the CPU through oneDNN where torch's BLAS takes a slow path.

torch computes a CPU float32 matmul with MKL's ``sgemm``. MKL chooses its kernels by CPU *vendor*: on AMD CPUs it
runs its generic AVX2 code even where the CPU has AVX-512 (``MKL_VERBOSE=1`` names no instruction set there), so on
a Zen 5 EPYC a float32 matmul reaches ~105 GFLOP/s on one core, half of what the core can do. oneDNN, the other
library in every x86 torch build (torch's bf16 matmuls use it), dispatches on the instruction set and runs
AVX-512 kernels there: the same :math:`Y = XW^\top + b` in IEEE float32 (no bf16 or TF32 rounding, a different
summation order) at ~220-240 GFLOP/s (``bench/offpolicy_matmuls.py``). torch has no switch that sends a float32 matmul to
oneDNN without a lower-precision mode, so :class:`Linear` calls oneDNN's linear op itself for the forward and the
two backward matmuls,

.. math::  \frac{\partial L}{\partial X} = G W, \qquad \frac{\partial L}{\partial W} = G^\top X,
           \qquad \frac{\partial L}{\partial b} = \textstyle\sum_i G_i ,

each as one more oneDNN linear (the backward is itself differentiable, so Hessian-vector products, as in TRPO,
still work). A oneDNN call costs ~10 us more than MKL's (it builds its primitive per call) and this backward runs in
Python, so only matmuls with :math:`m n k \ge 2^{21}` (the crossover of a bare matmul is near :math:`2^{20}`; acting
on a few envs never gets there) of a weight with :math:`k n \ge 2^{15}` entries take it: TRPO's 64-64 networks
(Fisher-vector products through a ``create_graph`` gradient) ran 15 % slower through oneDNN, although a 64-64
layer's own forward and backward on 1024 rows is faster there.

The backend is process-wide, like torch's own matmul settings: ``"auto"`` (default; oneDNN on an AMD x86 CPU with
AVX-512 whose torch uses MKL, the BLAS elsewhere: the CPUs it was measured on), ``"onednn"`` or ``"blas"``.
:func:`set_cpu_float32_matmul` or the environment variable ``LITZOO_CPU_FLOAT32_MATMUL`` sets it. Under autocast,
``torch.compile``, TorchScript, tracing (jit, FX), ``vmap``, forward-mode AD, a dispatch mode (``FlopCounterMode``),
for tensor subclasses (DTensor; FSDP2's parameters are plain tensors inside its forward, so they take oneDNN there),
sparse tensors and other dtypes or devices, :func:`linear` is ``torch.nn.functional.linear``.
Parameters and state dicts are those of ``nn.Linear``; tools that map modules by exact type (``quantize_dynamic``'s
``{nn.Linear}``) need :class:`Linear` named too.
"""

from __future__ import annotations

import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import forward_ad
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

BACKENDS = ("auto", "onednn", "blas")
MIN_MNK = 2**21  # m * n * k from which oneDNN's ~10 us per call pays (measured crossover ~2**20)
MIN_KN = 2**15  # and k * n, the weight's entries: 64-64 networks (TRPO) ran slower through oneDNN

_backend = "auto"
_PLAIN = (torch.Tensor, nn.Parameter)  # not DTensor, FX proxies or other subclasses: they bring their own dispatch


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"CPU float32 matmul backend {backend!r} is not one of {BACKENDS}; 'auto' picks oneDNN "
                         "on AMD AVX-512 CPUs, 'onednn' or 'blas' force one.")
    if backend == "onednn" and not _onednn_usable():
        raise RuntimeError("CPU float32 matmul backend 'onednn': this torch build has no usable oneDNN linear op "
                           "(torch.ops.mkldnn._linear_pointwise); use 'blas' or 'auto'.")
    return backend


def set_cpu_float32_matmul(backend: str) -> None:
    """Use ``"onednn"``, ``"blas"`` (torch's MKL/OpenBLAS) or ``"auto"`` for large CPU float32 matmuls of
    :class:`Linear` and the RL critics, in this process."""
    global _backend
    _backend = _check_backend(backend)


def _cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (Linux), else ``platform.processor()`` (Windows ends it with the vendor)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@functools.cache
def _onednn_usable() -> bool:
    """oneDNN's linear op is in this torch build and gives a float32 matmul (checked once on a small case)."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    # fixed operands, not torch.randn: checking must not move the global random stream
    x = torch.arange(128, dtype=torch.float64, device="cpu").view(8, 16).sin()
    w = torch.arange(64, dtype=torch.float64, device="cpu").view(4, 16).cos()
    try:
        got = op(x.float(), w.float(), None, "none", [], "")
    except RuntimeError:
        return False
    return got.dtype == torch.float32 and torch.allclose(got.double(), x @ w.T, rtol=1e-5, atol=1e-5)


@functools.cache
def _auto_choice() -> str:
    mkl_on_amd = (
        torch.backends.mkl.is_available() and platform.machine().lower() in ("x86_64", "amd64")
        and "AuthenticAMD" in _cpu_vendor() and torch.backends.cpu.get_cpu_capability() == "AVX512")
    return "onednn" if mkl_on_amd and _onednn_usable() else "blas"


def cpu_float32_matmul() -> str:
    """The backend in use: ``"onednn"`` or ``"blas"`` (``"auto"`` resolved for this CPU and torch build)."""
    return _auto_choice() if _backend == "auto" else _backend


try:
    set_cpu_float32_matmul(os.environ.get("LITZOO_CPU_FLOAT32_MATMUL", "auto"))
except (ValueError, RuntimeError) as err:
    raise type(err)(f"environment variable LITZOO_CPU_FLOAT32_MATMUL: {err}") from None


def use_onednn(m: int, k: int, n: int, *tensors: Tensor | None) -> bool:
    """Whether an ``(m, k) @ (k, n)`` matmul on ``tensors`` goes to oneDNN: float32 plain CPU tensors,
    ``m * k * n >= MIN_MNK`` and ``k * n >= MIN_KN``, none of the modes in the module docstring, and the backend
    says oneDNN."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or is_fx_symbolic_tracing():  # no guard/trace on sizes
        return False
    # then the cheap tests: small networks (acting on a few envs, 64-64 policies) pay only these
    if cpu_float32_matmul() != "onednn" or k * n < MIN_KN or m * k * n < MIN_MNK:
        return False
    for t in tensors:
        if t is not None and not (type(t) in _PLAIN and t.dtype == torch.float32 and t.device.type == "cpu"
                                  and t.layout == torch.strided):
            return False
    if (torch.is_autocast_enabled("cpu") or torch._C._are_functorch_transforms_active()
            or forward_ad._current_level >= 0 or torch._C._len_torch_dispatch_stack() > 0):
        return False
    return True


def _op(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # no fused activation


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` for 2-D ``x`` through oneDNN (differentiably when grad mode is on), without the
    checks: for a caller that decided with :func:`use_onednn`."""
    if torch._C._len_torch_dispatch_stack() > 0:  # a backward run inside a dispatch mode: let it see torch's ops
        return F.linear(x, weight, bias)
    if bias is not None:  # oneDNN reads the bias as contiguous whatever its strides (a strided one gave wrong sums)
        bias = bias.contiguous()
    if torch.is_grad_enabled():
        return _OneDNNLinear.apply(x, weight, bias)
    return _op(x, weight, bias)


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # x (M, K), weight (N, K), bias (N,)
        need_x, need_w, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if need_w else None, weight if need_x else None)  # what each gradient reads
        return _op(x, weight, bias)  # (M, N)

    @staticmethod
    def backward(ctx, grad: Tensor):  # grad (M, N)
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = onednn_linear(grad, weight.t()) if need_x else None  # (M, N) @ (N, K)
        grad_w = onednn_linear(grad.t(), x.t()) if need_w else None  # (N, M) @ (M, K)
        grad_b = grad.sum(0) if need_b else None  # (N,)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)``, through oneDNN when :func:`use_onednn` says so.

    ``x (..., K)``, ``weight (N, K)`` (any strides, e.g. a transposed ``(K, N)`` tensor), ``bias (N,)`` -> ``(..., N)``.
    """
    if not use_onednn(x.shape[:-1].numel(), weight.shape[1], weight.shape[0], x, weight, bias):
        return F.linear(x, weight, bias)
    out = onednn_linear(x.reshape(-1, x.shape[-1]), weight, bias)
    return out if x.ndim == 2 else out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and state dict) whose large CPU float32 matmuls use
    oneDNN where the backend says so (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles this branch only
            return F.linear(x, self.weight, self.bias)
        if self.in_features * self.out_features < MIN_KN:  # a small layer: torch's, without another call
            return F.linear(x, self.weight, self.bias)
        return _eager_linear(x, self.weight, self.bias)


@torch.jit.unused
def _eager_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return linear(x, weight, bias)
