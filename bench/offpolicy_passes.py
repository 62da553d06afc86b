"""Two more ways to cut a bf16 DDPG/TD3/SAC update's fixed costs on a CPU, measured (neither paid; not kept).

    OMP_NUM_THREADS=1 python bench/offpolicy_passes.py --algo ddpg     # or td3, sac

One update (target, critic loss, actor loss through the critic, backward, fused AdamW; Pendulum shapes, batch 256,
CPU autocast bf16) on fixed random batches, three ways interleaved in one process (median and range of
``--repeats`` rounds of ``--updates`` updates):

* ``library``: as the modules do it: the critic on the replay actions, then again on the actor's actions with its
  parameters frozen (``requires_grad_(False)``), TD3/DDPG through ``QCritic.q1``.
* ``pair``: both critic terms in *one* pass of 2B rows, through a batched linear whose weight gradient comes from the
  first B rows only (a custom ``autograd.Function``): half the critic's matmul calls, each of which has a fixed cost
  of ~25-40 us in bf16 here (``bench/offpolicy_matmuls.py``). Same gradients (the differences are printed first).
* ``compiled``: the whole loss under ``torch.compile`` (inductor; AOTAutograd compiles its backward too), the critic
  frozen in the actor's term through detached weights (``requires_grad_`` inside would break the graph).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from litzoo.nets.actors_critics import DeterministicActor, QCritic, SquashedGaussianActor


class TrainOnFirstRows(torch.autograd.Function):
    """``bias + x @ weight`` (batched) whose weight and bias gradients come from the first ``n`` rows only."""

    @staticmethod
    def forward(ctx, bias, x, weight, n):
        ctx.save_for_backward(x, weight)
        ctx.n = n
        return torch.baddbmm(bias, x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        n = ctx.n
        grad_x = torch.bmm(grad, weight.transpose(1, 2)) if ctx.needs_input_grad[1] else None
        return grad[:, :n].sum(1, keepdim=True), grad_x, torch.bmm(x[:, :n].transpose(1, 2), grad[:, :n]), None


def critic_pair(critic: QCritic, features, actions, policy_actions):
    """(Q(s, a), Q(s, pi(s)) with the critic constant), one pass of 2B rows: (E, B) each."""
    n = features.shape[0]
    h = torch.cat([torch.cat([features, actions], -1), torch.cat([features, policy_actions], -1)], 0)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else h.dtype
    h = h.to(dtype).expand(critic.num_critics, *h.shape)
    for i, layer in enumerate(critic.layers):  # cast outside, so the custom backward runs in that dtype too
        h = TrainOnFirstRows.apply(layer.bias.to(dtype), h, layer.weight.to(dtype), n)
        if i < len(critic.layers) - 1:
            h = torch.relu(h)
    q = h.squeeze(-1)
    return q[:, :n], q[:, n:]


def critic_detached(critic: QCritic, features, actions):
    """Q(s, a) with the critic's weights detached: what ``requires_grad_(False)`` does, compilable."""
    h = torch.cat([features, actions], -1).expand(critic.num_critics, -1, -1)
    for i, layer in enumerate(critic.layers):
        h = torch.baddbmm(layer.bias.detach(), h, layer.weight.detach())
        if i < len(critic.layers) - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=["ddpg", "td3", "sac"], default="ddpg")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--updates", type=int, default=50, help="updates per round")
    args = p.parse_args()
    torch.set_num_threads(1)
    algo = args.algo
    hidden, E = {"ddpg": ((400, 300), 1), "td3": ((400, 300), 2), "sac": ((256, 256), 2)}[algo]
    torch.manual_seed(0)
    critic, target = QCritic(3, 1, hidden, num_critics=E), QCritic(3, 1, hidden, num_critics=E).requires_grad_(False)
    actor = SquashedGaussianActor(3, 1, hidden) if algo == "sac" else DeterministicActor(3, 1, hidden)
    actor_target = DeterministicActor(3, 1, hidden).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    obs, actions, next_obs = torch.randn(256, 3, generator=g), torch.rand(256, 1, generator=g) * 2 - 1, torch.randn(256, 3, generator=g)
    rewards, dones = torch.randn(256, generator=g), torch.zeros(256)

    def loss(variant: str) -> torch.Tensor:
        with torch.no_grad():
            if algo == "sac":
                next_actions, next_log_probs = actor.sample_with_log_prob(next_obs, torch.Generator().manual_seed(1))
                q_next = target(next_obs, next_actions).float().min(0).values - 0.1 * next_log_probs
            else:
                q_next = target(next_obs, actor_target(next_obs)).float().min(0).values
            y = rewards + 0.99 * (1 - dones) * q_next
        if algo == "sac":
            a, log_probs = actor.sample_with_log_prob(obs, torch.Generator().manual_seed(2))
        else:
            a = actor(obs)
        if variant == "pair":
            q, q_pi = critic_pair(critic, obs, actions, a)
        elif variant == "compiled":
            q, q_pi = critic(obs, actions), critic_detached(critic, obs, a)
        else:
            q = critic(obs, actions)
            critic.requires_grad_(False)
            q_pi = critic(obs, a) if algo == "sac" else critic.q1(obs, a).unsqueeze(0)
            critic.requires_grad_(True)
        q_pi = q_pi.min(0).values if algo == "sac" else q_pi[0]
        actor_loss = (0.1 * log_probs - q_pi.float()).mean() if algo == "sac" else -q_pi.float().mean()
        return (q.float() - y).pow(2).mean(1).sum() + actor_loss

    compiled = torch.compile(lambda: loss("compiled"), dynamic=False)
    fns = {"library": lambda: loss("library"), "pair": lambda: loss("pair"), "compiled": compiled}
    params = [*critic.parameters(), *actor.parameters()]
    grads = {}
    for name, fn in fns.items():  # the same loss and gradients (one step from the same weights)
        t0 = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = fn()
        grads[name] = torch.autograd.grad(value, params)
        if name == "compiled":
            print(f"{algo} compiled: first call (compilation) {time.process_time() - t0:.1f} CPU-s")
    for name in ("pair", "compiled"):
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(grads["library"], grads[name]))
        print(f"{algo} {name}: largest gradient difference vs library {diff:.2e}")
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def update(fn) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # as Lightning's bf16-mixed
            value = fn()
        for param in params:
            param.grad = None
        value.backward()
        opt.step()

    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():  # interleaved: the machine's load drifts alike for all
            for _ in range(5):
                update(fn)
            t0 = time.process_time()
            for _ in range(args.updates):
                update(fn)
            times[name].append((time.process_time() - t0) / args.updates * 1e3)
    base = statistics.median(times["library"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{algo} {name:8s}: {med:.3f} ms/update [{min(ts):.3f}-{max(ts):.3f}], {med / base:.3f}x the library's")


if __name__ == "__main__":
    main()
