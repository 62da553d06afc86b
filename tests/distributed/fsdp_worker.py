"""Train one tiny litzoo module on 2 CPU processes (gloo), sharded (FSDP2 via ModelParallelStrategy) or DDP.

    python fsdp_worker.py METHOD OUT {fsdp,ddp} STEPS [--save NAME] [--resume CKPT] [--checkpointing]
        [--precision P] [--lora] [--nan-save] [--uneven-finish] [--skip-uniform]

Lightning's launcher runs this file once per rank. Writes into OUT (rank 0): ``result.pt`` with the weights
after the first optimizer step (``step1``) and at the end (``final``, gathered from the shards), the evaluation
loss at the start and the end (a fixed noise draw on each rank's fixed batch), and for the generators the weights
of one *unsharded* AdamW step computed in this process on the same global batch (``reference``). Every rank then
runs the exit handlers and writes ``exit_rank{rank}.json``: its gloo threads before and after them.
"""

import copy
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from dist_helpers import gloo_threads  # noqa: E402
from lm_helpers import TINY_TEST_QWEN2  # noqa: E402

from litzoo.seeding import step_generator  # noqa: E402
from litzoo.sharding import full_state_dict  # noqa: E402

METHOD, OUT, STRATEGY, STEPS = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
SAVE = sys.argv[sys.argv.index("--save") + 1] if "--save" in sys.argv else None
RESUME = sys.argv[sys.argv.index("--resume") + 1] if "--resume" in sys.argv else None
CHECKPOINTING = "--checkpointing" in sys.argv
LORA = {"lora_rank": 4} if "--lora" in sys.argv else {}  # the causal LMs: adapters only (pi_ref: adapters off)
NAN_SAVE = "--nan-save" in sys.argv  # after fit: a NaN in rank 1's shard only, then a checkpoint save
# KimiRL partial rollouts whose responses finish every step on rank 0 (one 32-token segment there) and take up to
# 8 steps on rank 1 (4-token segments): rank 1 has steps without a finished group while rank 0 trains
UNEVEN = {"segment_tokens": 4} if "--uneven-finish" in sys.argv else {}
UNEVEN.update({"skip_uniform_groups": True} if "--skip-uniform" in sys.argv else {})
PRECISION = sys.argv[sys.argv.index("--precision") + 1] if "--precision" in sys.argv else "32-true"
SEED = 3
OPT = {"lr": 1e-3, "warmup_steps": 0, "total_steps": -1, "seed": SEED, "gradient_checkpointing": CHECKPOINTING}
X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
Y = torch.tensor([0, 1, 1, 0])


def make_module():
    torch.manual_seed(0)
    if METHOD == "ddpm":
        from litzoo.modules import DDPM

        return DDPM(image_size=8, num_classes=2, block_out_channels=(8, 16), norm_num_groups=4, **OPT)
    if METHOD == "vae":
        from litzoo.modules import VAE

        return VAE(image_size=8, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4, **OPT)
    if METHOD == "rectified_flow":
        from litzoo.modules import RectifiedFlowDiT

        return RectifiedFlowDiT(sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                                joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
                                num_classes=2, **OPT)
    if METHOD == "cot_sft":
        from litzoo.modules import CoTSFT

        return CoTSFT(model_config=TINY_TEST_QWEN2, lr=1e-3, warmup_steps=0, total_steps=100, min_lr_ratio=1.0,
                      gradient_checkpointing=CHECKPOINTING, **LORA)
    from litzoo.modules import KimiRL

    if UNEVEN:  # record each rank's (own, all ranks') finished groups from the real all-reduce
        counted = KimiRL._finished_groups_total

        def recorded(self, n):
            total, world = counted(self, n)
            with open(OUT / f"totals_rank{self.global_rank}.txt", "a") as f:
                f.write(f"{n} {total} {world}\n")
            return total, world

        KimiRL._finished_groups_total = recorded
    # a length reward: an untrained policy is never right, and equal rewards give no gradient
    return KimiRL(model_config=TINY_TEST_QWEN2, k=2, max_new_tokens=32, eval_k=0, lr=1e-3, seed=SEED,
                  iteration_steps=2, length_penalty_weight=1.0, gradient_checkpointing=CHECKPOINTING, **LORA,
                  **UNEVEN)


class Images(L.LightningDataModule):
    """Rank r trains on the fixed half X[r::2] every step (no sampler: the reference knows each rank's batch)."""

    def train_dataloader(self):
        r = self.trainer.global_rank if self.trainer is not None else 0
        return DataLoader(TensorDataset(X[r::2], Y[r::2]), batch_size=2)


def make_data():
    if METHOD in ("ddpm", "vae", "rectified_flow"):
        return Images()
    from litzoo.datamodules import ReasoningDataModule

    return ReasoningDataModule(tasks=["arithmetic"], difficulties=[1], trace="direct",
                               mode="sft" if METHOD == "cot_sft" else "rl", num_train=16, num_val=4, batch_size=2,
                               **({"rl_steps_per_epoch": 10} if METHOD == "kimi_rl" else {}), seed=0)


def rank_loss(module, r: int) -> torch.Tensor:
    """Rank r's training loss at step 0 (its batch, its noise): what one unsharded step averages over ranks."""
    generator = step_generator(SEED, 0, r)
    if METHOD == "vae":
        return module.vae_loss(X[r::2], generator)[0]
    x0, cond = module._unpack((X[r::2], Y[r::2]))
    return module.loss(x0, cond, generator)[0]


class Record(L.Callback):
    def __init__(self):
        self.out = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0 and trainer.global_step == 0:  # the dtype a sharded block's weights have in its forward
            from torch.distributed.fsdp import FSDPModule

            blocks = [m for m in module.modules() if isinstance(m, FSDPModule)]

            def record(m, args):  # runs after FSDP's own pre-forward hook: the gathered weights
                self.out.setdefault("compute_dtype", str(next(m.parameters()).dtype))

            for block in blocks[:1]:
                block.register_forward_pre_hook(record)

    def _eval(self, trainer, module):
        if METHOD in ("ddpm", "vae", "rectified_flow"):
            with torch.no_grad():  # every rank runs it: the sharded forward is a collective
                return rank_loss(module, trainer.global_rank).item()
        return None

    def on_train_start(self, trainer, module):
        if UNEVEN and trainer.global_rank == 0:
            module.hparams.segment_tokens = 32  # (read each step; a test-only stand-in for uneven response lengths)
        self.out["loss_start"] = self._eval(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if UNEVEN:  # each rank's finished groups per step, and the share of them with all-equal rewards
            uniform = float(trainer.callback_metrics.get("train/uniform_groups", -1.0)) if module.last_groups else -1.0
            with open(OUT / f"finished_rank{trainer.global_rank}.txt", "a") as f:
                f.write(f"{len(module.last_groups)} {uniform}\n")
        if trainer.global_step == 1 and "step1" not in self.out:
            self.out["step1"] = full_state_dict(module)

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:  # greedy answers generated with the gathered sharded policy
            self.out["val_pass@1"] = float(trainer.callback_metrics["val/pass@1"])

    def on_train_end(self, trainer, module):
        self.out["loss_end"] = self._eval(trainer, module)


def main():
    from lightning.pytorch.strategies import ModelParallelStrategy

    module = make_module()
    initial = copy.deepcopy(module) if METHOD in ("ddpm", "vae", "rectified_flow") else None
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if STRATEGY == "fsdp" else "ddp"
    record = Record()
    callbacks = [record]
    if METHOD in ("ddpm", "rectified_flow"):  # a sampling grid: every rank samples with the gathered weights
        from litzoo.callbacks import SampleGrid

        callbacks.append(SampleGrid(every_n_steps=1000, n=4, steps=2))
    if NAN_SAVE:
        from litzoo.callbacks import NaNGuard

        callbacks.append(NaNGuard())
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=STEPS, precision=PRECISION, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=METHOD not in ("ddpm", "vae", "rectified_flow"),
                        num_sanity_val_steps=0, callbacks=callbacks, default_root_dir=OUT,
                        # causal LMs validate once (greedy answers: each rank stops at its own length)
                        **({"limit_val_batches": 0} if METHOD in ("ddpm", "vae", "rectified_flow") else
                           {"limit_val_batches": 1, "val_check_interval": 2, "check_val_every_n_epoch": None}))
    trainer.fit(module, datamodule=make_data(), ckpt_path=RESUME)
    if NAN_SAVE:  # every rank must refuse the save (a rank that went on into the collective save would hang)
        from litzoo.callbacks import NonFiniteLossError

        if trainer.global_rank == 1:
            with torch.no_grad():
                next(module.parameters()).to_local().fill_(float("nan"))
        try:
            trainer.save_checkpoint(OUT / "nan.ckpt")
        except NonFiniteLossError as err:
            (OUT / f"refused_rank{trainer.global_rank}.txt").write_text(str(err))
        return
    if SAVE:
        trainer.save_checkpoint(OUT / SAVE)
    final = full_state_dict(module)
    if trainer.global_rank != 0:
        return
    result = {**record.out, "final": final}
    if initial is not None and RESUME is None:
        opt = initial.configure_optimizers()["optimizer"]
        (sum(rank_loss(initial, r) for r in range(2)) / 2).backward()
        opt.step()
        result["reference"] = {k: v.detach().clone() for k, v in initial.state_dict().items()}
        if SAVE:  # the export of the same final weights straight from an unsharded module
            initial.load_state_dict(final)
            initial.export(OUT / "export_unsharded")
    torch.save(result, OUT / "result.pt")


if __name__ == "__main__":
    main()
    # What the interpreter runs at exit, run here to check it: litzoo's hook destroys the groups and frees them (the
    # device meshes in DTensor's caches and FSDP2's mesh infos hold them), so gloo's threads end before Python's
    # finalisation (a gloo thread taking the GIL during finalisation aborts the process)
    import atexit
    import json

    import torch.distributed as dist

    rank, before = dist.get_rank(), gloo_threads()
    atexit._run_exitfuncs()
    (OUT / f"exit_rank{rank}.json").write_text(json.dumps({"gloo_threads_before": before, "after": gloo_threads()}))
