"""Rectified-flow DiT benchmark (issue #4): timestep densities vs DDPM, QK-norm, Lightning overhead.

    OMP_NUM_THREADS=1 python bench/rectified_flow.py                      # all parts, prints markdown tables
    OMP_NUM_THREADS=1 python bench/rectified_flow.py --parts compare --methods rf_lognorm
    OMP_NUM_THREADS=1 python bench/rectified_flow.py --parts qknorm --qk-lrs 2e-3 2e-2 1e-1
    OMP_NUM_THREADS=1 python bench/rectified_flow.py --quick              # smoke run (~2 CPU-min)

Every budget and rate is in **CPU time of this process** (``time.process_time``), not wall time: the
machine is shared, so wall time mostly measures the neighbours. Run with ``OMP_NUM_THREADS=1`` so CPU
time equals compute time (wall time is then 1x-4x the CPU time, depending on the load).

1. ``compare``: equal training budget (``--budget`` CPU-seconds each, default 240) on class-conditional
   8x8 digits, batch 128, EMA 0.995, AdamW lr 2e-3 with 100 warm-up steps and a cosine that ends when
   the budget does (:class:`CPUBudget` measures the step cost and re-points the schedule):
   ``RectifiedFlowDiT`` of ``configs/rf_digits.yaml`` (4-layer MMDiT, 0.59 M parameters) with
   logit-normal(0, 1) t vs uniform t, and ``DDPM`` (eps prediction) with the UNet of
   ``configs/ddpm_digits.yaml`` (0.64 M parameters, about the same size). Then class accuracy (digits
   classifier) and FID (classifier features, against all 1797 digits) of 500 samples (50 per class) at
   4, 8 and 25 steps: RF with Euler (``FlowMatchEulerDiscreteScheduler``, shift 1 at the base
   resolution 8x8), DDPM with DDIM (eta 0); with and without classifier-free guidance. The logit-normal
   model also writes ``docs/rf_digits_samples.png`` (column k = class k, 8 Euler steps).
2. ``qknorm``: the same DiT with ``qk_norm="rms_norm"`` vs ``None`` at high learning rates (constant
   after warm-up), same seed and data order: every ``--qk-every`` steps the largest attention logit
   ``|q . k| / sqrt(d)`` over all blocks, heads and (image + context) token pairs on a fixed batch
   (a forward pre-hook on each block's attention recomputes q and k exactly as diffusers'
   ``JointAttnProcessor2_0`` does, norms included), and the training loss (mean over the last
   ``--qk-every`` steps). Table plus ``docs/rf_qknorm.png``.
3. ``throughput``: images per CPU-second of ``RectifiedFlowDiT`` in a Lightning ``Trainer`` vs a plain
   PyTorch loop on the same ``SD3Transformer2DModel`` + class tokens (same batch, AdamW recipe,
   logit-normal t, class dropout, loss). Method of ``bench/ddpm.py``: runs alternate, steady-state
   steps only, images/s from the median step time, median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from torch import nn

from throughput import SKIP, compare_throughput, lightning_throughput, plain_throughput

from litzoo.callbacks import EMA, save_image_grid
from litzoo.datamodules import DigitsDataModule
from litzoo.diffusion.flow import interpolate, sample_timesteps, velocity_target
from litzoo.metrics import evaluate, load_digits_classifier
from litzoo.modules import DDPM, RectifiedFlowDiT
from litzoo.modules.rectified_flow import NUM_TRAIN_TIMESTEPS
from litzoo.optim import warmup_cosine_lambda

DOCS = Path(__file__).resolve().parent.parent / "docs"
# configs/rf_digits.yaml and configs/ddpm_digits.yaml (model sections), without their validation-time evaluation.
RF_CONFIG = dict(sample_size=8, patch_size=2, in_channels=1, num_layers=4, attention_head_dim=16,
                 num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=64, pooled_projection_dim=64,
                 pos_embed_max_size=16, qk_norm="rms_norm", num_classes=10, num_context_tokens=4, class_dropout=0.1,
                 logit_mean=0.0, logit_std=1.0, shift=1.0, sampler="euler", lr=2e-3, warmup_steps=100)
DDPM_CONFIG = dict(image_size=8, num_classes=10, block_out_channels=(32, 64), lr=2e-3, warmup_steps=100)
METHODS = {
    "rf_lognorm": ("RF, logit-normal(0, 1) t", "euler"),
    "rf_uniform": ("RF, uniform t", "euler"),
    "ddpm": ("DDPM (eps), UNet 32/64", "ddim"),
}


def build(method: str, **overrides) -> L.LightningModule:
    if method == "ddpm":
        return DDPM(**{**DDPM_CONFIG, **overrides})
    density = {"rf_lognorm": "logit_normal", "rf_uniform": "uniform"}[method]
    return RectifiedFlowDiT(**{**RF_CONFIG, "timestep_sampling": density, **overrides})


def n_params(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


# ------------------------------------------------------------------------------------------- callbacks
class CPUBudget(L.Callback):
    """Stop training once this process has spent ``seconds`` of CPU time in ``fit`` (from train start).

    Every ``calibrate_every`` steps it measures the CPU cost per step so far and re-points the module's
    warm-up + cosine schedule to end where the budget will (the step count of a CPU budget is unknown
    in advance, and a cosine that ends far later leaves the lr high when training stops).
    """

    def __init__(self, seconds: float, warmup_steps: int = 100, calibrate_every: int = 100) -> None:
        self.seconds, self.warmup_steps, self.calibrate_every = seconds, warmup_steps, calibrate_every
        self.start = 0.0
        self.spent = 0.0
        self.steps = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.spent = time.process_time() - self.start
        self.steps = trainer.global_step
        if self.steps % self.calibrate_every == 0 and trainer.lr_scheduler_configs:
            total = int(self.seconds / (self.spent / self.steps))
            scheduler = trainer.lr_scheduler_configs[0].scheduler
            multiplier = warmup_cosine_lambda(self.warmup_steps, max(total, self.warmup_steps + 1))
            scheduler.lr_lambdas = [multiplier] * len(scheduler.optimizer.param_groups)
        if self.spent >= self.seconds:
            trainer.should_stop = True



def quiet_trainer(max_steps: int, callbacks: list, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, default_root_dir="/tmp/litzoo_bench_rf", **kwargs)


# ------------------------------------------------------------------------------------------- 1. compare
def compare(args) -> None:
    classifier = load_digits_classifier()
    rows = []
    for method in args.methods:
        name, sampler = METHODS[method]
        L.seed_everything(0, verbose=False)
        model = build(method)
        budget = CPUBudget(args.budget, warmup_steps=100)
        trainer = quiet_trainer(10**7, [EMA(decay=0.995), budget])
        trainer.fit(model, DigitsDataModule(batch_size=128))  # EMA weights are copied in at fit end
        model.eval()
        print(f"{name}: {budget.steps} steps in {budget.spent:.0f} CPU-s ({n_params(model):.2f} M parameters)",
              flush=True)
        for steps in args.sample_steps:
            for cfg in args.cfg:
                generator = torch.Generator().manual_seed(0)
                start = time.process_time()
                scores = evaluate(lambda n, y: model.sample(n, steps=steps, sampler=sampler, y=y, cfg_scale=cfg,
                                                            generator=generator),
                                  n_per_class=50, classifier=classifier)
                seconds = time.process_time() - start
                rows.append((name, budget.steps, sampler, steps, cfg, scores["class_accuracy"], scores["fid"],
                             seconds))
                print(f"  {sampler} {steps} steps cfg {cfg}: acc {scores['class_accuracy']:.3f} "
                      f"FID {scores['fid']:.1f}", flush=True)
        if method == "rf_lognorm" and args.grid:
            y = torch.arange(100) % 10
            samples = model.sample(100, steps=8, sampler="euler", y=y, cfg_scale=args.grid_cfg,
                                   generator=torch.Generator().manual_seed(0))
            path = save_image_grid(samples, DOCS / "rf_digits_samples.png", nrow=10, upscale=4)
            print(f"  wrote {path}", flush=True)
    print(f"\n### Equal CPU budget ({args.budget:.0f} CPU-s of training each, batch 128, EMA 0.995; "
          f"500 samples, 50 per class)\n")
    print("| method | training steps | sampler | steps | CFG scale | class accuracy | FID (classifier features) "
          "| sampling CPU-s (incl. metrics) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, trained, sampler, steps, cfg, acc, score, seconds in rows:
        print(f"| {name} | {trained} | {sampler} | {steps} | {cfg:g} | {acc:.3f} | {score:.1f} | {seconds:.1f} |")


# ------------------------------------------------------------------------------------------- 2. qknorm
@torch.no_grad()
def max_attention_logit(transformer: SD3Transformer2DModel, call) -> float:
    """Largest |q . k| / sqrt(d) in any joint-attention layer while ``call()`` runs a forward pass.

    q and k are recomputed from the attention module's inputs exactly as ``JointAttnProcessor2_0``
    does (projections, per-head QK-norm when present, image tokens then context tokens).
    """
    found: list[float] = []

    def hook(attn, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        b, heads = hidden.shape[0], attn.heads

        def split(x):
            return x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        q, k = split(attn.to_q(hidden)), split(attn.to_k(hidden))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if context is not None:
            cq, ck = split(attn.add_q_proj(context)), split(attn.add_k_proj(context))
            if attn.norm_added_q is not None:
                cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
            q, k = torch.cat([q, cq], dim=2), torch.cat([k, ck], dim=2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        found.append(logits.abs().max().item())

    handles = [block.attn.register_forward_pre_hook(hook, with_kwargs=True)
               for block in transformer.transformer_blocks]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return max(found)


class AttentionLogitProbe(L.Callback):
    """Every ``every`` steps: max attention logit on a fixed batch and the mean training loss since last time."""

    def __init__(self, x0: torch.Tensor, y: torch.Tensor, every: int) -> None:
        self.x0, self.y, self.every = x0, y, every
        self.t = torch.full((len(y),), 0.5)
        self.noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        self.losses: list[float] = []
        self.history: list[tuple[int, float, float]] = []  # (step, max logit, mean loss)

    def probe(self, pl_module) -> float:
        z = interpolate(self.x0, self.noise, self.t)
        return max_attention_logit(pl_module.transformer, lambda: pl_module(z, self.t, y=self.y))

    def on_train_start(self, trainer, pl_module) -> None:
        self.history.append((0, self.probe(pl_module), float("nan")))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        step = trainer.global_step
        if step % self.every == 0:
            loss = statistics.fmean(self.losses) if self.losses else float("nan")
            self.history.append((step, self.probe(pl_module), loss))
            self.losses = []


def qknorm(args) -> None:
    dm = DigitsDataModule(batch_size=128)
    dm.setup("fit")
    x0, y = dm.val_set.tensors[0][:64], dm.val_set.tensors[1][:64]
    runs: dict[tuple[float, str], list[tuple[int, float, float]]] = {}
    for lr in args.qk_lrs:
        for qk in ("rms_norm", None):
            L.seed_everything(0, verbose=False)
            # total_steps=-1: constant lr after warm-up (the trainer's estimate would be the max_steps cosine).
            model = build("rf_lognorm", qk_norm=qk, lr=lr, total_steps=-1)
            probe = AttentionLogitProbe(x0, y, args.qk_every)
            start = time.process_time()
            quiet_trainer(args.qk_steps, [probe]).fit(model, DigitsDataModule(batch_size=128))
            runs[(lr, str(qk))] = probe.history
            last = probe.history[-1]
            print(f"lr {lr:g} qk_norm {qk}: max logit {last[1]:.1f}, loss {last[2]:.4f} "
                  f"({time.process_time() - start:.0f} CPU-s)", flush=True)
    keys = list(runs)
    print(f"\n### QK-norm at high learning rates ({args.qk_steps} steps, batch 128, AdamW, 100 warm-up steps "
          f"then constant lr; max |q.k|/sqrt(d) over all layers/heads/tokens on a fixed batch of 64 at t = 0.5; "
          f"loss = mean training loss of the last {args.qk_every} steps)\n")
    print("| step | " + " | ".join(f"lr {lr:g}, qk_norm={qk}: max logit / loss" for lr, qk in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for i, (step, _, _) in enumerate(runs[keys[0]]):
        cells = []
        for key in keys:
            _, logit, loss = runs[key][i]
            cells.append(f"{logit:.1f} / {loss:.4f}")
        print(f"| {step} | " + " | ".join(cells) + " |")
    plot_qknorm(runs, DOCS / "rf_qknorm.png")


def plot_qknorm(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_logit, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lrs = sorted({lr for lr, _ in runs})
    for (lr, qk), history in runs.items():
        steps, logits, losses = zip(*history)
        style = dict(color=colors[lrs.index(lr) % len(colors)], linestyle="-" if qk == "rms_norm" else "--",
                     label=f"lr {lr:g}, qk_norm={qk}")
        ax_logit.plot(steps, logits, **style)
        ax_loss.plot(steps[1:], losses[1:], **style)
    ax_logit.set(yscale="log", xlabel="step", ylabel="max attention logit |q.k|/sqrt(d)",
                 title="attention-logit growth")
    ax_loss.set(yscale="log", xlabel="step", ylabel="training loss", title="rectified-flow loss")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"\nwrote {path}")


# ------------------------------------------------------------------------------------------- 3. throughput
class PlainDiT(nn.Module):
    """The parameters RectifiedFlowDiT trains: the transformer plus the class tokens and pooled table."""

    def __init__(self, reference: RectifiedFlowDiT) -> None:
        super().__init__()
        self.transformer = SD3Transformer2DModel(**reference.transformer.config)
        self.context_tokens = nn.Parameter(torch.randn_like(reference.conditioning.context_tokens))
        self.class_pooled = nn.Embedding(*reference.conditioning.class_pooled.weight.shape)


def lightning_run(steps: int, skip: int, batch_size: int, bare: bool) -> float:
    torch.manual_seed(0)
    model = build("rf_lognorm", total_steps=steps + skip)
    return lightning_throughput(model, DigitsDataModule(batch_size=batch_size), steps, batch_size, bare, "/tmp/litzoo_bench_rf")


def plain_run(steps: int, skip: int, batch_size: int) -> float:
    torch.manual_seed(0)
    net = PlainDiT(build("rf_lognorm"))
    null_class = 10

    def loss_fn(x0, y):
        t = sample_timesteps(x0.shape[0], "logit_normal", logit_mean=0.0, logit_std=1.0)
        eps = torch.randn_like(x0)
        y = torch.where(torch.rand(x0.shape[0]) < 0.1, torch.full_like(y, null_class), y)
        v = net.transformer(hidden_states=interpolate(x0, eps, t), timestep=t * NUM_TRAIN_TIMESTEPS,
                            encoder_hidden_states=net.context_tokens[y], pooled_projections=net.class_pooled(y),
                            return_dict=False)[0]
        return F.mse_loss(v.float(), velocity_target(x0, eps).float())

    return plain_throughput(net, loss_fn, DigitsDataModule(batch_size=batch_size), steps, batch_size)


def throughput(args) -> None:
    compare_throughput("RectifiedFlowDiT", lambda: plain_run(args.steps, SKIP, args.batch_size),
                       lambda bare: lightning_run(args.steps, SKIP, args.batch_size, bare),
                       args.steps, args.batch_size, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="compare,qknorm,throughput",
                        help="comma-separated subset of compare,qknorm,throughput")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--budget", type=float, default=240.0, help="CPU-seconds of training per method")
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[4, 8, 25])
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0], help="guidance scales to evaluate")
    parser.add_argument("--grid-cfg", type=float, default=2.0, help="guidance scale of docs/rf_digits_samples.png")
    parser.add_argument("--no-grid", dest="grid", action="store_false", help="do not write the sample grid")
    parser.add_argument("--qk-lrs", type=float, nargs="+", default=[2e-3, 2e-2, 1e-1])
    parser.add_argument("--qk-steps", type=int, default=400)
    parser.add_argument("--qk-every", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="throughput: steady-state steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (no PNGs)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"compare", "qknorm", "throughput"}
    if unknown:
        parser.error(f"--parts has {sorted(unknown)}; choose from compare,qknorm,throughput")
    if args.quick:
        args.budget, args.sample_steps, args.cfg, args.grid = 5.0, [4], [1.0], False
        args.qk_lrs, args.qk_steps, args.qk_every = [2e-2], 10, 5
        args.steps, args.repeats = 10, 1
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads")
    if "compare" in parts:
        compare(args)
    if "qknorm" in parts:
        if args.quick:
            global DOCS
            DOCS = Path("/tmp/litzoo_bench_rf")
        qknorm(args)
    if "throughput" in parts:
        throughput(args)


if __name__ == "__main__":
    main()
