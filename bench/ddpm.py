"""DDPM benchmark: Lightning overhead vs a plain PyTorch loop, and samplers' quality vs steps.

    python bench/ddpm.py                 # full run (~15-20 min on 2 cores), prints markdown tables
    python bench/ddpm.py --quick         # smoke run

1. Training throughput (images/s) of ``litzoo.modules.DDPM`` in a Lightning ``Trainer`` vs the
   same ``UNet2DModel`` trained by a plain loop in the style of diffusers'
   ``train_unconditional.py`` (``DDPMScheduler.add_noise``, MSE on eps, AdamW, same data loader).
   Runs alternate and repeat; steady-state steps only; median of the repeats.
   Images/s come from the median step time (time between consecutive batch starts) measured in
   this process's CPU time (``time.process_time``): on a shared machine wall time mostly measures
   the neighbours, CPU time measures the work each trainer does (framework overhead included).
   Run it with ``OMP_NUM_THREADS=1`` so CPU time equals compute time.
2. Sampling: a DDPM trained for ``--train-steps`` steps, then for each sampler and step count the
   wall time, network evaluations, class accuracy (digits classifier) and FID (classifier features)
   of 50 samples per class.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from throughput import SKIP, compare_throughput, lightning_throughput, plain_throughput

from litzoo.callbacks import EMA
from litzoo.datamodules import DigitsDataModule
from litzoo.diffusion import SAMPLERS
from litzoo.metrics import class_accuracy, digits_images, fid, load_digits_classifier
from litzoo.modules import DDPM



def lightning_run(steps: int, skip: int, batch_size: int, bare: bool) -> float:
    torch.manual_seed(0)
    model = DDPM()
    return lightning_throughput(model, DigitsDataModule(batch_size=batch_size), steps, batch_size, bare, "/tmp/litzoo_bench")


def plain_run(steps: int, skip: int, batch_size: int) -> float:
    torch.manual_seed(0)
    reference = DDPM()  # only to copy the identical UNet config
    unet = type(reference.net)(**reference.net.config)
    scheduler = DDPMScheduler(**reference.schedule.scheduler_config())

    def loss_fn(x0, y):
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],))
        y = torch.where(torch.rand(x0.shape[0]) < 0.1, torch.full_like(y, 10), y)  # label dropout for CFG
        pred = unet(scheduler.add_noise(x0, noise, t), t, class_labels=y).sample
        return F.mse_loss(pred.float(), noise.float())

    return plain_throughput(unet, loss_fn, DigitsDataModule(batch_size=batch_size), steps, batch_size)


def throughput(args) -> None:
    compare_throughput("DDPM", lambda: plain_run(args.steps, SKIP, args.batch_size),
                       lambda bare: lightning_run(args.steps, SKIP, args.batch_size, bare),
                       args.steps, args.batch_size, args.repeats)


def sampling(args) -> None:
    if args.ckpt:  # e.g. the demo's last.ckpt: `python train.py fit --config configs/ddpm_digits.yaml`
        model = DDPM.load_from_checkpoint(args.ckpt, map_location="cpu")
        trained = f"loaded from {args.ckpt} (EMA weights)"
    else:
        torch.manual_seed(0)
        model = DDPM()
        start = time.perf_counter()
        trainer = L.Trainer(max_steps=args.train_steps, accelerator="cpu", devices=1,
                            callbacks=[EMA(decay=0.995)], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        trainer.fit(model, DigitsDataModule())
        trained = f"trained {args.train_steps} steps in {time.perf_counter() - start:.0f} s with EMA"
    model.eval()
    classifier = load_digits_classifier()
    real, _ = digits_images(8)
    y = torch.arange(50 * 10) % 10
    print(f"\n### Samplers vs steps (DDPM {trained}; 500 samples, 50 per class)\n")
    print("| sampler | steps | network evals | seconds | class accuracy | FID (classifier features) |")
    print("|---|---|---|---|---|---|")
    for sampler in args.samplers:
        for steps in ([0] if sampler == "pf_ode_rk45" else args.sample_steps):
            kwargs = {"rtol": 1e-3, "atol": 1e-3} if sampler == "pf_ode_rk45" else {}
            nfe = [0]

            def counting(x, t, _model=model.denoiser(y)):
                nfe[0] += 1
                return _model(x, t)

            start = time.perf_counter()
            with torch.no_grad():
                from litzoo.diffusion import sample

                x = sample(counting, model.schedule, (len(y), 1, 8, 8), sampler=sampler, steps=max(steps, 1),
                           generator=torch.Generator().manual_seed(0), device="cpu", **kwargs)
            seconds = time.perf_counter() - start
            images = (x / 2 + 0.5).clamp(0, 1)
            acc = class_accuracy(images, y, classifier=classifier)
            score = fid(real, images)
            label = "adaptive (rtol=atol=1e-3)" if sampler == "pf_ode_rk45" else steps
            print(f"| {sampler} | {label} | {nfe[0]} | {seconds:.1f} | {acc:.3f} | {score:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[10, 25, 50, 1000])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--ckpt", help="sample from this DDPM checkpoint instead of training one")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.train_steps, args.sample_steps = 20, 1, 50, [5]
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_sampling:
        sampling(args)


if __name__ == "__main__":
    main()
