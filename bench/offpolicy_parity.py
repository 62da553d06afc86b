"""Fixed-seed short off-policy runs, for checking that a speed change leaves training bit-identical.

    OMP_NUM_THREADS=1 python bench/offpolicy_parity.py --flush-denormals 0 --out /tmp/before.pt   # flush off
    OMP_NUM_THREADS=1 python bench/offpolicy_parity.py --out /tmp/after.pt                        # flush on (default)
    OMP_NUM_THREADS=1 python bench/offpolicy_parity.py --compare /tmp/before.pt /tmp/after.pt

``--flush-denormals 0`` is the code path before the flush existed (nothing else changed), so the A/B runs in
one checkout.

Trains TD3, DDPG and SAC on Pendulum (bench/rl.py's shapes, warm-up of ``batch_size`` steps) for ``--updates``
updates with ``Trainer.fit`` and saves every parameter, optimizer state and the logged losses; ``--compare``
says, per algorithm and precision, whether two such files are bitwise equal (and the largest difference).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(algo: str, precision: str, updates: int, **kwargs) -> dict[str, torch.Tensor]:
    import lightning as L

    from bench.offpolicy_profile import litzoo_module
    from litzoo.datamodules.gym import GymDataModule

    module = litzoo_module(algo, 256, **kwargs)

    class Stop(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.num_updates >= updates:
                trainer.should_stop = True

    module.hparams.log_every_n_env_steps = 50
    trainer = L.Trainer(max_steps=-1, max_epochs=-1, accelerator="cpu", devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Stop()])
    trainer.fit(module, GymDataModule("Pendulum-v1", num_envs=1, batches_per_epoch=1000, seed=0))
    out = {f"param/{k}": v.detach().clone() for k, v in module.state_dict().items()}
    for i, state in enumerate(trainer.optimizers[0].state.values()):
        out.update({f"opt/{i}/{k}": v.clone() for k, v in state.items() if torch.is_tensor(v)})
    out.update({f"metric/{k}": torch.as_tensor(v).clone() for k, v in trainer.callback_metrics.items()})
    return out


def compare(a: dict, b: dict) -> str:
    """Which groups (parameters, optimizer state, logged metrics; the clock's ``time/`` metrics left out) differ."""
    if a.keys() != b.keys():
        return f"different keys: {sorted(set(a) ^ set(b))[:5]}"
    out = []
    for group in ("param", "opt", "metric"):
        keys = [k for k in a if k.startswith(group + "/") and not k.startswith("metric/time/")]
        diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in keys if not torch.equal(a[k], b[k])}
        if not diffs:
            out.append(f"{group}: bitwise identical ({len(keys)} tensors)")
        else:
            worst = max(diffs, key=diffs.get)
            out.append(f"{group}: {len(diffs)}/{len(keys)} differ, largest |diff| {diffs[worst]:.3g} ({worst})")
    return "; ".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out")
    p.add_argument("--compare", nargs=2)
    p.add_argument("--algos", nargs="+", default=["td3", "ddpg", "sac"])
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--updates", type=int, default=1500)
    p.add_argument("--flush-denormals", type=int, choices=(0, 1), default=1, help="the modules' flush_denormals")
    args = p.parse_args()
    if args.compare:
        a, b = (torch.load(f) for f in args.compare)
        for key in a:
            print(f"{key}: {compare(a[key], b[key])}")
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results = {f"{algo} {prec}": run(algo, prec, args.updates, flush_denormals=bool(args.flush_denormals))
               for algo in args.algos for prec in args.precisions}
    torch.save(results, args.out)


if __name__ == "__main__":
    main()
