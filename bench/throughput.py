"""Training throughput of a litzoo module in a Lightning Trainer vs a plain PyTorch loop (shared by the
generative benchmarks; the scripts run as ``python bench/<name>.py``, so ``bench/`` is on ``sys.path``).

Every step is time-stamped in **CPU time of the process** (the machine is shared: CPU time measures each
trainer's own work, Lightning's overhead included) and throughput comes from the *median* step time of the
steady state, which is robust to bursts of load. Runs alternate between trainers and the table reports the
median of the repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import lightning as L
import torch

SKIP = 20  # warm-up steps left out of the steady state


class StepTimer(L.Callback):
    """Time stamps at the start of every training batch: the gap between two is one whole step
    (data fetch, hooks, forward, backward, optimizer, logging)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.stamps.append(time.process_time())


def images_per_second(stamps: list[float], skip: int, batch_size: int) -> float:
    """From the median step time of the steady state."""
    gaps = [b - a for a, b in zip(stamps[skip:], stamps[skip + 1 :])]
    return batch_size / statistics.median(gaps)


def lightning_throughput(model: L.LightningModule, datamodule: L.LightningDataModule, steps: int, batch_size: int,
                         bare: bool, root_dir: str) -> float:
    """Images per CPU-second of ``model`` trained by a Trainer (``bare``: no logger, no progress bar)."""
    timer = StepTimer()
    trainer = L.Trainer(max_steps=steps + SKIP, accelerator="cpu", devices=1, callbacks=[timer],
                        logger=not bare, enable_checkpointing=False, enable_progress_bar=not bare,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=root_dir)
    trainer.fit(model, datamodule)
    return images_per_second(timer.stamps, SKIP, batch_size)


def compare_throughput(name: str, plain_run: Callable[[bool], float], lightning_run: Callable[[bool], float],
                       steps: int, batch_size: int, repeats: int) -> None:
    """Alternate plain / Lightning (bare) / Lightning (logger + progress bar) runs and print the markdown table.
    ``plain_run()`` and ``lightning_run(bare)`` return images per CPU-second."""
    rows = {"plain PyTorch loop": [], f"litzoo {name}, Lightning (no logger/progress bar)": [],
            f"litzoo {name}, Lightning (CSV logger + progress bar)": []}
    for r in range(repeats):
        for label in (list(rows) if r % 2 == 0 else list(reversed(rows))):
            value = plain_run() if label.startswith("plain") else lightning_run("no logger" in label)
            rows[label].append(value)
            print(f"{label}: {value:.0f} images/CPU-s", flush=True)
    plain = statistics.median(rows["plain PyTorch loop"])
    print(f"\n### Training throughput (8x8 digits, batch {batch_size}, {steps} steady-state steps, "
          f"median step time; median of {repeats} runs, {torch.get_num_threads()} threads)\n")
    print("| trainer | images per CPU-second (median) | runs | overhead vs plain |")
    print("|---|---|---|---|")
    for label, values in rows.items():
        med = statistics.median(values)
        print(f"| {label} | {med:.0f} | {', '.join(f'{v:.0f}' for v in values)} | {100 * (1 - med / plain):+.1f} % |")


def plain_throughput(net: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     datamodule: L.LightningDataModule, steps: int, batch_size: int) -> float:
    """Images per CPU-second of a plain PyTorch loop (the style of diffusers' training scripts) training ``net``
    with ``loss_fn(x0, y)`` and the same AdamW + warm-up/cosine recipe as the modules."""
    from litzoo.optim import adamw_with_warmup_cosine

    opt = adamw_with_warmup_cosine(net, lr=2e-3, weight_decay=0.0, warmup_steps=100, total_steps=steps + SKIP)
    optimizer, lr_scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    net.train()
    stamps: list[float] = []
    while len(stamps) < steps + SKIP:
        for x0, y in loader:
            stamps.append(time.process_time())
            loss = loss_fn(x0, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            if len(stamps) == steps + SKIP:
                break
    return images_per_second(stamps, SKIP, batch_size)
