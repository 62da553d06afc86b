import math

import pytest
import torch
from torch import nn

from litzoo.optim import (
    adamw_for_networks, adamw_param_groups, adamw_with_warmup_cosine, build_adamw, fused_adamw_step,
    fused_or_foreach, warmup_cosine_lambda,
)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.pos_embed = nn.Parameter(torch.randn(1, 3, 4))
        self.time_embedding = nn.Sequential(nn.Linear(4, 4))  # a Linear inside an "embedding" block decays
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 2)


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_no_decay_on_biases_norms_embeddings_and_positional_tables():
    model = Net()
    decay, no_decay = adamw_param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert _names(model, decay) == {"time_embedding.0.weight", "conv.weight", "head.weight"}
    assert _names(model, no_decay) == {
        "embed.weight", "pos_embed", "time_embedding.0.bias", "conv.bias", "norm.weight", "norm.bias",
        "gn.weight", "gn.bias", "head.bias",
    }


def test_weight_decay_is_decoupled_from_adam_moments():
    # With zero loss gradient Adam's moments stay 0, so the only change is the decoupled shrink
    # theta <- theta * (1 - lr * lambda); Adam+L2 would instead take a full normalised step of size lr.
    model = nn.Linear(3, 3)
    before_w, before_b = model.weight.detach().clone(), model.bias.detach().clone()
    opt = build_adamw(model, lr=0.1, weight_decay=0.5)
    (model.weight.sum() * 0.0 + model.bias.sum() * 0.0).backward()
    opt.step()
    torch.testing.assert_close(model.weight.detach(), before_w * (1 - 0.1 * 0.5))
    torch.testing.assert_close(model.bias.detach(), before_b)  # bias is in the no-decay group


def test_warmup_then_cosine_schedule_values():
    f = warmup_cosine_lambda(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert warmup_cosine_lambda(0, 0)(1000) == 1.0  # no total: constant after warmup


def test_configure_optimizers_dict_steps_lr_per_step():
    model = nn.Linear(2, 2)
    out = adamw_with_warmup_cosine(model, lr=1.0, weight_decay=0.0, warmup_steps=4, total_steps=8)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 4)))
    assert out["lr_scheduler"]["interval"] == "step"


@pytest.mark.parametrize("kwargs, word", [({"lr": 0.0}, "lr"), ({"lr": 1.0, "weight_decay": -1}, "weight_decay")])
def test_bad_optimizer_values_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_adamw(nn.Linear(2, 2), **kwargs)


def test_fused_cpu_adamw_takes_the_same_steps_as_the_reference_loop():
    """The fused kernel (chosen on CPU for speed) must not change the optimisation: same weights as
    torch's reference per-tensor AdamW, over the same parameter groups, after 20 steps."""
    import copy

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), nn.Linear(4, 1)]
    twins, start = copy.deepcopy(nets), nets[0][0].weight.detach().clone()
    fused = adamw_for_networks([(nets[0], 1e-2), (nets[1], 3e-3)], weight_decay=0.1)
    assert all(g["fused"] for g in fused.param_groups) and fused_or_foreach(list(nets[0].parameters())) == {"fused": True}
    twin_of = {id(p): q for p, q in zip([*nets[0].parameters(), *nets[1].parameters()],
                                         [*twins[0].parameters(), *twins[1].parameters()])}
    loop = torch.optim.AdamW([{**{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
                               "params": [twin_of[id(p)] for p in g["params"]]} for g in fused.param_groups],
                             foreach=False, fused=False)
    x, y = torch.randn(16, 3), torch.randn(16, 4)
    for _ in range(20):
        for (a, c), opt in ((nets, fused), (twins, loop)):
            opt.zero_grad()
            (a(x).pow(2).mean() + c(y).sin().mean()).backward()
            opt.step()
    assert (nets[0][0].weight - start).abs().max() > 1e-2  # the comparison is not between untouched weights
    for p, q in zip([*nets[0].parameters(), *nets[1].parameters()], [*twins[0].parameters(), *twins[1].parameters()]):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_fused_adamw_allows_gradient_clipping_under_bf16_mixed_precision(monkeypatch):
    """Lightning refuses to clip with an optimizer that unscales fp16 gradients itself (fused AdamW's
    default flag); litzoo's AdamW clears that flag, so bf16-mixed + gradient_clip_val trains and clips."""
    import lightning as L
    from lightning.pytorch.plugins.precision import Precision

    clipped: list[float] = []
    original = Precision.clip_grad_by_norm

    def recording(self, optimizer, clip_val):
        clipped.append(float(clip_val))
        return original(self, optimizer, clip_val)

    monkeypatch.setattr(Precision, "clip_grad_by_norm", recording)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return (self.net(batch[0]) - 100.0).pow(2).mean()

        def configure_optimizers(self):
            return build_adamw(self.net, lr=1e-2)

    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 4)), batch_size=8)
    model = Tiny()
    before = model.net.weight.detach().clone()
    L.Trainer(max_steps=4, precision="bf16-mixed", gradient_clip_val=0.5, accelerator="cpu", logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(model, data)
    assert model.trainer.optimizers[0].param_groups[0]["fused"]
    assert clipped == [0.5] * 4 and not torch.equal(model.net.weight, before)


def _twin_adamw(**kwargs):
    """Two copies of the same two networks, each with its own fused AdamW (per-network lr, decayed and no-decay groups)."""
    import copy

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2)), nn.Linear(4, 1)]
    twins = copy.deepcopy(nets)
    make = lambda ns: torch.optim.AdamW(
        [{"params": [*ns[0].parameters()], "lr": 1e-2, "weight_decay": 0.1},
         {"params": [*ns[1].parameters()], "lr": 3e-3, "weight_decay": 0.0}], fused=True, **kwargs)
    return nets, twins, make(nets), make(twins)


def _backward(nets, x, y, skip_bias=False):
    for p in [*nets[0].parameters(), *nets[1].parameters()]:
        p.grad = None
    (nets[0](x).pow(2).mean() + nets[1](y).sin().mean()).backward()
    if skip_bias:  # a parameter without a gradient this step: torch's step skips it (and its step counter)
        nets[1].bias.grad = None


def _count_torch_steps(monkeypatch) -> dict[int, int]:
    """How often torch's ``AdamW.step`` ran, per optimizer (``fused_adamw_step`` takes it only where it must)."""
    calls: dict[int, int] = {}
    original = torch.optim.AdamW.step

    def counted(self, *args, **kwargs):
        calls[id(self)] = calls.get(id(self), 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    return calls


def _assert_same(a, b, opt_a, opt_b):
    for p, q in zip([*a[0].parameters(), *a[1].parameters()], [*b[0].parameters(), *b[1].parameters()]):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for key, state in sa["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[name], sb["state"][key][name], rtol=0, atol=0)


def test_the_lean_fused_adamw_step_is_torchs_step_to_the_bit(monkeypatch):
    """``fused_adamw_step`` (the RL modules' step) launches torch's fused kernel on lists it built once: the weights,
    moments and step counters equal ``AdamW(fused=True).step()``'s to the bit, with the groups' lr changed midway (a
    schedule), a step where a parameter has no gradient (skipped, as torch skips it), and after ``load_state_dict``
    (new state tensors: the lists are rebuilt). Only the first step (which creates the state) is torch's."""
    import copy

    nets, twins, lean, ref = _twin_adamw()
    torch_steps = _count_torch_steps(monkeypatch)
    x, y = torch.randn(16, 3), torch.randn(16, 4)
    start = nets[0][0].weight.detach().clone()
    for i in range(30):
        for ns, opt, step in ((nets, lean, lambda: fused_adamw_step(lean)), (twins, ref, ref.step)):
            if i == 15:  # a schedule's lr, and betas / eps changed per group
                for group in opt.param_groups:
                    group["lr"] *= 0.5
                opt.param_groups[0]["betas"], opt.param_groups[1]["eps"] = (0.8, 0.99), 1e-3
            _backward(ns, x, y, skip_bias=i == 20)
            step()
        if i == 1:  # the first step was torch's (it creates the state); from the second on the kernel is ours
            assert torch_steps == {id(lean): 1, id(ref): 2}
    assert (nets[0][0].weight - start).abs().max() > 1e-2
    _assert_same(nets, twins, lean, ref)
    assert lean.state_dict()["state"][5]["step"] == 29  # the bias skipped once
    lean.load_state_dict(copy.deepcopy(ref.state_dict()))  # (torch may keep the given tensors: not shared with ref)
    for _ in range(5):
        for ns, opt, step in ((nets, lean, lambda: fused_adamw_step(lean)), (twins, ref, ref.step)):
            _backward(ns, x, y)
            step()
    _assert_same(nets, twins, lean, ref)
    assert torch_steps == {id(lean): 1, id(ref): 35}  # the reloaded state is read as torch reads it


@pytest.mark.parametrize("case", ["amsgrad", "hook", "global_hook", "patched_step", "grad_scale", "foreach", "l2",
                                  "maximize"])
def test_the_lean_fused_adamw_step_leaves_what_it_does_not_cover_to_torch(case, monkeypatch):
    """amsgrad / a foreach AdamW / a group turned to L2 decay (``decoupled_weight_decay=False``) or to ``maximize``
    after the first steps take torch's step, a step hook (the optimizer's or a global one) is called, a patched
    ``step`` (an lr scheduler's counter) runs, a gradient scaler's ``grad_scale`` unscales: each by taking
    ``optimizer.step()``, with torch's weights to the bit."""
    kwargs = {"amsgrad": True} if case == "amsgrad" else {}
    nets, twins, opt, ref = _twin_adamw(**kwargs)
    torch_steps = _count_torch_steps(monkeypatch)
    if case == "foreach":
        for group in [*opt.param_groups, *ref.param_groups]:
            group["fused"], group["foreach"] = False, True
    calls = []
    if case == "hook":
        opt.register_step_post_hook(lambda *args: calls.append(1))
    if case == "patched_step":
        step = opt.step
        opt.step = lambda *a, **k: (calls.append(1), step(*a, **k))[1]
    if case == "global_hook":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        handle = register_optimizer_step_post_hook(
            lambda o, *args: calls.append(1) if o is opt else None)
    if case == "grad_scale":  # what torch.amp.GradScaler sets on a fused optimizer: gradients divided by it
        for o in (opt, ref):
            o.grad_scale, o.found_inf = torch.tensor(4.0), torch.tensor(0.0)
    x, y = torch.randn(16, 3), torch.randn(16, 4)
    for i in range(4):
        if case in ("l2", "maximize") and i == 2:
            for group in [*opt.param_groups, *ref.param_groups]:
                if case == "l2":
                    group["decoupled_weight_decay"] = False
                else:
                    group["maximize"] = True
        for ns, o, s in ((nets, opt, lambda: fused_adamw_step(opt)), (twins, ref, ref.step)):
            _backward(ns, x, y)
            s()
    if case == "global_hook":
        handle.remove()
    assert torch_steps[id(opt)] == (3 if case in ("l2", "maximize") else 4)  # (those: the second step was ours)
    assert calls == ([1] * 4 if case in ("hook", "global_hook", "patched_step") else [])
    _assert_same(nets, twins, opt, ref)


def test_the_lean_fused_adamw_step_leaves_mixed_dtypes_and_sparse_gradients_to_torch(monkeypatch):
    """A group mixing dtypes (torch regroups it per dtype) takes torch's step; a sparse gradient goes to torch's step,
    which refuses it before counting a step."""
    weights = [nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(3, 2, dtype=torch.float64))]
    twins = [nn.Parameter(w.detach().clone()) for w in weights]
    opt, ref = torch.optim.AdamW(weights, fused=True), torch.optim.AdamW(twins, fused=True)
    torch_steps = _count_torch_steps(monkeypatch)
    for _ in range(3):
        for ws, step in ((weights, lambda: fused_adamw_step(opt)), (twins, ref.step)):
            for w in ws:
                w.grad = torch.ones_like(w) * w.sum().detach()
            step()
    assert torch_steps[id(opt)] == 3
    for w, v in zip(weights, twins):
        torch.testing.assert_close(w, v, rtol=0, atol=0)
    embed = nn.Embedding(5, 2, sparse=True)
    sparse = torch.optim.AdamW(embed.parameters(), fused=True)
    embed(torch.tensor([1])).sum().backward()
    embed.weight.grad = embed.weight.grad.to_dense()  # a dense first step creates the state
    fused_adamw_step(sparse)
    fused_adamw_step(sparse)  # (the kernel's now)
    assert torch_steps[id(sparse)] == 1 and sparse.state[embed.weight]["step"] == 2
    embed.weight.grad = None
    embed(torch.tensor([2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        fused_adamw_step(sparse)
    assert sparse.state[embed.weight]["step"] == 2


def test_the_lean_fused_adamw_step_follows_a_state_reset_and_an_added_group(monkeypatch):
    """A state reset (KimiRL's ``state.clear()``: torch's next step creates new moments), a moment replaced inside a
    parameter's entry, a parameter swapped in its group's list and ``add_param_group``: the lists are read from the
    groups and the state at every step, so each is followed as torch follows it, to the bit."""
    nets, twins, lean, ref = _twin_adamw()
    torch_steps = _count_torch_steps(monkeypatch)
    x, y, z = torch.randn(16, 3), torch.randn(16, 4), torch.randn(16, 2)
    extra, extra_twin = nn.Linear(2, 1), nn.Linear(2, 1)
    extra_twin.load_state_dict(extra.state_dict())
    start = extra.weight.detach().clone()
    for i in range(12):
        if i == 4:
            lean.state.clear()
            ref.state.clear()
        if i == 6:
            for opt, net in ((lean, nets), (ref, twins)):
                opt.state[net[1].weight]["exp_avg"] = torch.zeros_like(net[1].weight)
        if i == 7:  # a parameter swapped in place in its group's list (the same list, the same length); its old
            for opt, net in ((lean, nets), (ref, twins)):  # state stays, as torch leaves it
                net[1].bias = nn.Parameter(net[1].bias.detach().clone())
                opt.param_groups[1]["params"][1] = net[1].bias
        if i == 8:
            lean.add_param_group({"params": [*extra.parameters()], "lr": 5e-2})
            ref.add_param_group({"params": [*extra_twin.parameters()], "lr": 5e-2})
        for ns, e, step in ((nets, extra, lambda: fused_adamw_step(lean)), (twins, extra_twin, ref.step)):
            _backward(ns, x, y)
            if i >= 8:
                e.weight.grad, e.bias.grad = None, None
                e(z).pow(2).mean().backward()
            step()
    assert len(lean.param_groups) == 3  # torch's step only where state had to be created: i = 0, 4, 7 (new bias), 8
    assert torch_steps[id(lean)] == 4
    assert lean.state[nets[0][0].weight]["step"] == 8  # counted again from the reset
    assert lean.state[nets[1].bias]["step"] == 5  # the swapped-in bias, stepped from i = 7
    assert not torch.equal(extra.weight, start)
    for group, twin_group in zip(lean.param_groups, ref.param_groups):  # (the stale entry of the swapped-out bias
        for p, q in zip(group["params"], twin_group["params"]):  # keeps torch's state_dict from naming it: by
            torch.testing.assert_close(p, q, rtol=0, atol=0)  # parameter instead)
            for name in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(lean.state[p][name], ref.state[q][name], rtol=0, atol=0)
