"""TD3's update (400-300, batch 256) in a bare loop, eager vs ``torch.compile`` of the critics' and actors' forwards.

    OMP_NUM_THREADS=1 python bench/offpolicy_compile.py fp32      # or bf16 (CPU autocast)

``DDPG.training_step`` is called directly on 8 fixed random batches (no Trainer: its optimizer, backward
and gradient all-reduce are stood in for), so the numbers are the update alone. Measured result in
BENCHMARKS.md ("Off-policy update speed"): compiling made the update slower, and was not kept.
"""
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from litzoo.modules.ddpg import TD3
from litzoo.rl.buffers import ReplayBatch
import gymnasium as gym
from litzoo.rl.policy import space_to_spec
import litzoo.bases.rl as R
R.all_reduce_gradients = lambda *a: None
R.RLModule.trainer = property(lambda s: None)
env = gym.make("Pendulum-v1")
def make():
    torch.manual_seed(0)
    m = TD3(observation_space=space_to_spec(env.observation_space), action_space=space_to_spec(env.action_space),
            actor_hidden_sizes=(400, 300), critic_hidden_sizes=(400, 300), batch_size=256, buffer_size=1000,
            learning_starts=0, seed=0)
    opt = m.configure_optimizers()
    m._generator = torch.Generator().manual_seed(0)
    class FakeOpt:
        def __init__(s,o): s.optimizer=o
        def zero_grad(s, set_to_none=True): s.optimizer.zero_grad(set_to_none=set_to_none)
        def step(s): s.optimizer.step()
    fo = FakeOpt(opt); m.optimizers = lambda: fo; m.manual_backward = lambda loss: loss.backward(); m._env = None
    return m
B=256
g = torch.Generator().manual_seed(1)
batches = [ReplayBatch(torch.randn(B, 3, generator=g), torch.rand(B, 1, generator=g) * 2 - 1, torch.randn(B, generator=g),
                       torch.randn(B, 3, generator=g), torch.zeros(B)) for _ in range(8)]
dt = sys.argv[1] if len(sys.argv) > 1 else "fp32"
for mode in ["eager", "compiled"]:
    m = make()
    if mode == "compiled":
        for net in (m.critic, m.critic_target, m.policy.actor, m.actor_target):
            net.forward = torch.compile(net.forward, dynamic=False)
        m.critic.q1 = torch.compile(m.critic.q1, dynamic=False)
    bf16 = dt == "bf16"
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16))
    def step(i):
        with ctx():
            m.training_step(batches[i % 8], 0)
    t=time.process_time()
    for i in range(4): step(i)
    first = time.process_time()-t
    for i in range(50): step(i)
    t=time.process_time()
    for i in range(400): step(i)
    print(f"{dt} {mode}: first 4 updates {first:.1f} CPU-s, then {(time.process_time()-t)/400*1e3:.2f} ms/update", flush=True)
