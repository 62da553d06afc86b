"""Fine-tuning at real width: peak memory and step time of litzoo vs a plain PyTorch loop (issue 17 §3, 18 §4).

    OMP_NUM_THREADS=1 python bench/finetune.py                     # the BENCHMARKS.md table (CPU, ~30 min)
    OMP_NUM_THREADS=1 python bench/finetune.py --quick             # smoke run on tiny shapes (seconds)
    python bench/finetune.py --device cuda                          # GPU: full-size SD3-medium DiT, 128x128, bf16
    OMP_NUM_THREADS=1 python bench/finetune.py --rl                # KimiRL + LoRA vs TRL GRPOTrainer + peft_config

Two models, random weights built from configs (no hub):

* **DiT**: diffusers' ``SD3Transformer2DModel`` at SD3-medium width (1536 = 24 heads x 64, patch 2, 16 latent
  channels, joint_attention_dim 4096, pooled 2048, no QK-norm, positions cropped from 192x192) with
  ``--dit-layers`` joint blocks (SD3-medium has 24), on 32x32 latents (256 image tokens) with precomputed prompt
  embeddings of 77 tokens in the batch (what diffusers' SD3 scripts feed the transformer once the text encoders'
  outputs are cached). litzoo: ``RectifiedFlowDiT`` (logit-normal t, no condition dropout). Plain loop: the
  ``train_dreambooth_sd3.py`` / ``train_dreambooth_lora_sd3.py`` step (velocity target, no preconditioning).
* **LM**: a Qwen2.5-0.5B-shaped Qwen2 (hidden 896, 14 heads, 2 KV heads, intermediate 4864, vocab 151936, tied
  embeddings) with ``--lm-layers`` layers (0.5B has 24), saved with ``save_pretrained`` into a temporary folder;
  batch 2 x 256 tokens, loss on the last 224 (the first 32 are the "prompt", label -100). litzoo: ``CoTSFT``
  (``pretrained_path`` = that folder). Plain loop: what TRL's ``SFTTrainer`` / transformers' ``Trainer`` run per
  step, ``model(input_ids, attention_mask, labels).loss`` (transformers' shifted cross-entropy).

Modes: ``full`` (every weight trains), ``full+ckpt`` (activation checkpointing: the modules have no argument for it
in this tree, so the benchmark calls ``transformer.enable_gradient_checkpointing()`` / ``policy.
gradient_checkpointing_enable(use_reentrant=False)`` on the wrapped network, and the plain loop does the same) and
``lora`` (rank 16, alpha 16, Gaussian init; DiT targets: diffusers' SD3 LoRA script's, LM: q/k/v/o/gate/up/down;
the DiT through diffusers' ``add_adapter``, the LM through peft's ``get_peft_model``, in both trainers).

Both trainers: the same batches, AdamW (fused kernel in both, lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0,
constant lr for the DiT / cosine without warm-up for the LM), float32, and the same noise draws (the plain loop
seeds its per-step generator as litzoo does) so that their losses agree step by step: they train the same thing.
litzoo runs in a Lightning ``Trainer`` without logger, progress bar or checkpointing (the training loop only).

``--rl``: the same LM with LoRA (rank 16, same targets) in litzoo's ``KimiRL`` (Lightning) and TRL's ``GRPOTrainer``
with ``peft_config`` (fused AdamW, lr 1e-4, grad clipping 1.0, ``beta=0``), 2 prompts x 4 samples of 16 new tokens
(2-digit addition prompts), temperature 1. A step holds generation, so every ``generate`` call's CPU time is also
measured (bench/kimi.py's ``GenMeter``) and "update" = step - generation (scoring, loss forward/backward, optimizer).
The two algorithms differ (k1.5 loss with the base policy as reference vs GRPO's clipped ratio), so the update times
compare the trainers' whole non-generation work, not one identical computation.

Method: every (model, mode, trainer) runs in its **own process** (``--worker``): peak RSS is that process's
``ru_maxrss`` (nothing subtracted), and the RSS after the model is built is reported beside it. ``--warmup`` steps,
then ``--steps`` timed steps; a step is the gap between two batch-start stamps (data, forward, backward, optimizer,
hooks), in **process CPU time** (the machine is shared: CPU time counts each run's own work) and wall time;
medians over the timed steps. ``--repeats`` runs per configuration, the trainer order alternating; the table gives
the median and the range (min-max) of the per-run medians. One configuration at a time, never in parallel.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 0
LR = 1e-4
LORA_RANK = 16
MODES = ("full", "full+ckpt", "lora")
TRAINERS = ("litzoo", "plain")
PROMPT_TOKENS = 32  # LM: the first tokens of every row are the prompt (label -100)

# SD3-medium's transformer config (stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json).
SD3_MEDIUM = dict(patch_size=2, in_channels=16, attention_head_dim=64, num_attention_heads=24,
                  joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
                  pos_embed_max_size=192, qk_norm=None)
SD3_TINY = dict(patch_size=2, in_channels=16, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                caption_projection_dim=32, pooled_projection_dim=16, pos_embed_max_size=16, qk_norm=None)
# Qwen2.5-0.5B's config.json (hidden sizes, heads, vocab, tied embeddings, rope), fewer layers.
QWEN25_05B = dict(hidden_size=896, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                  vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                  max_position_embeddings=32768)
QWEN_TINY = dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                 vocab_size=1000, tie_word_embeddings=True, max_position_embeddings=512)


# ----------------------------------------------------------------------------- shapes
def shapes(args) -> dict:
    """The run's model and batch shapes (``--tiny``/``--quick``: a few seconds per process)."""
    gpu = args.device == "cuda" or args.gpu_preset
    if args.tiny:
        return {"dit": SD3_TINY, "dit_layers": 2, "latent": 8, "context": 8, "batch": 2,
                "lm": QWEN_TINY, "lm_layers": 1, "seq": 48, "lm_batch": 2}
    if gpu:  # the full-size SD3-medium transformer at 128x128 latents (1024px images), 4096 image tokens
        return {"dit": SD3_MEDIUM, "dit_layers": 24, "latent": 128, "context": 333, "batch": args.gpu_batch,
                "lm": QWEN25_05B, "lm_layers": 24, "seq": 256, "lm_batch": 2}
    return {"dit": SD3_MEDIUM, "dit_layers": args.dit_layers, "latent": 32, "context": 77, "batch": args.dit_batch,
            "lm": QWEN25_05B, "lm_layers": args.lm_layers, "seq": 256, "lm_batch": 2}


def dit_batches(s: dict, n: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(1234)
    b, c, hw = s["batch"], s["dit"]["in_channels"], s["latent"]
    return [{"latents": torch.randn(b, c, hw, hw, generator=g),
             "prompt_embeds": torch.randn(b, s["context"], s["dit"]["joint_attention_dim"], generator=g),
             "pooled_prompt_embeds": torch.randn(b, s["dit"]["pooled_projection_dim"], generator=g)} for _ in range(n)]


def lm_batches(s: dict, n: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(n):
        ids = torch.randint(0, s["lm"]["vocab_size"], (s["lm_batch"], s["seq"]), generator=g)
        labels = ids.clone()
        labels[:, :PROMPT_TOKENS] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def save_lm_folder(s: dict, folder: str) -> str:
    """A Qwen2 with the 0.5B shape (``lm_layers`` layers), random weights, + litzoo's char tokenizer (the batches
    are random ids over the whole vocabulary, so only the model's vocab size matters)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from litzoo.reasoning.policy import save_policy
    from litzoo.text.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    config = Qwen2Config(**s["lm"], num_hidden_layers=s["lm_layers"], pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(SEED)
    # litzoo's save_policy writes the char tokenizer so that AutoTokenizer keeps spaces and newlines (the RL rows'
    # task text has them); the weights are save_pretrained's
    save_policy(AutoModelForCausalLM.from_config(config), tok, folder)
    return folder


# ----------------------------------------------------------------------------- memory and time
def rss_mib(field: str = "VmRSS") -> float:
    """Resident set size of this process now (``VmHWM``: its peak so far)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def resident(module) -> None:
    """Read every weight once: ``from_pretrained`` maps safetensors lazily, so the RSS after the build would not
    count weights not yet touched."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.sum()


def peak_rss_mib() -> float:
    # ru_maxrss (KiB on Linux) is the process's peak; VmHWM is the same number, updated without delay
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mib("VmHWM"))


class Stamps:
    """(CPU time, wall time) at the start of every step and once after the last: gaps are whole steps."""

    def __init__(self, device: str) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.device = device

    def stamp(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        self.cpu.append(time.process_time())
        self.wall.append(time.perf_counter())

    def medians(self, skip: int) -> tuple[float, float]:
        def med(xs):
            return statistics.median(b - a for a, b in zip(xs[skip:], xs[skip + 1:]))

        return med(self.cpu), med(self.wall)


# ----------------------------------------------------------------------------- litzoo
def litzoo_module(model: str, mode: str, s: dict, lm_folder: str | None):
    from litzoo.modules import CoTSFT, RectifiedFlowDiT

    lora = {"lora_rank": LORA_RANK} if mode == "lora" else {}
    if model == "dit":
        module = RectifiedFlowDiT(sample_size=s["latent"], num_layers=s["dit_layers"], **s["dit"], num_classes=None,
                                  class_dropout=0.0, lr=LR, weight_decay=0.0, warmup_steps=0, total_steps=-1,
                                  seed=SEED, **lora)
        if mode == "full+ckpt":  # no gradient_checkpointing argument in this tree yet: on the network directly
            module.transformer.enable_gradient_checkpointing()
        return module
    module = CoTSFT(pretrained_path=lm_folder, lr=LR, weight_decay=0.0, adam_betas=(0.9, 0.999), warmup_steps=0,
                    total_steps=1_000_000, min_lr_ratio=0.0, **lora)
    if mode == "full+ckpt":
        module.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return module


def run_litzoo(model: str, mode: str, s: dict, batches: list[dict], lm_folder: str | None, args) -> dict:
    import lightning as L
    import torch

    torch.manual_seed(SEED)
    module = litzoo_module(model, mode, s, lm_folder)
    resident(module)
    built = rss_mib()
    stamps, losses = Stamps(args.device), []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            stamps.stamp()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))
            if batch_idx == len(batches) - 1:
                stamps.stamp()

    precision = "bf16-mixed" if args.bf16 else "32-true"
    trainer = L.Trainer(max_steps=len(batches), accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[Recorder()])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return {"built_rss_mib": built, "stamps": stamps, "losses": losses, "trainable": trainable, "params": total}


# ----------------------------------------------------------------------------- plain loops
def plain_dit(mode: str, s: dict, device: str):
    """The network as diffusers' SD3 scripts build and adapt it."""
    from diffusers import SD3Transformer2DModel
    from peft import LoraConfig

    from litzoo.nets.lora import DIT_LORA_TARGETS

    transformer = SD3Transformer2DModel(sample_size=s["latent"], num_layers=s["dit_layers"], **s["dit"],
                                        out_channels=s["dit"]["in_channels"]).to(device)
    if mode == "lora":  # train_dreambooth_lora_sd3.py: freeze, then add_adapter (Gaussian A, B = 0)
        transformer.requires_grad_(False)
        transformer.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                                           target_modules=list(DIT_LORA_TARGETS)))
    if mode == "full+ckpt":
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return transformer


def plain_lm(mode: str, lm_folder: str, device: str):
    """The policy as TRL's trainers load and adapt it (``peft_config`` -> ``get_peft_model``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from litzoo.nets.lora import CAUSAL_LM_LORA_TARGETS

    model = AutoModelForCausalLM.from_pretrained(lm_folder).to(device).train()
    if mode == "lora":
        model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                                                 target_modules=list(CAUSAL_LM_LORA_TARGETS), task_type="CAUSAL_LM"))
    if mode == "full+ckpt":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def run_plain(model: str, mode: str, s: dict, batches: list[dict], lm_folder: str | None, args) -> dict:
    import torch
    import torch.nn.functional as F

    from litzoo.seeding import step_generator

    device = args.device
    torch.manual_seed(SEED)
    net = plain_dit(mode, s, device) if model == "dit" else plain_lm(mode, lm_folder, device)
    resident(net)
    built = rss_mib()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    if model == "dit":  # diffusers' get_scheduler("constant")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    else:  # transformers' cosine schedule, no warm-up (the Trainer's lr_scheduler_type="cosine")
        from transformers import get_cosine_schedule_with_warmup

        scheduler = get_cosine_schedule_with_warmup(optimizer, 0, 1_000_000)
    stamps, losses = Stamps(device), []
    for step, batch in enumerate(batches):
        stamps.stamp()
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device if device == "cuda" else "cpu", dtype=torch.bfloat16, enabled=args.bf16):
            if model == "dit":
                x0 = batch["latents"]
                # diffusers draws t and the noise from the global RNG; a per-step generator seeded as litzoo seeds
                # its own gives the same draws, so the two trainers' losses can be compared.
                g = step_generator(SEED, step, 0, device=device)
                t = torch.sigmoid(torch.randn(x0.shape[0], generator=g, device=device))  # logit-normal(0, 1)
                noise = torch.randn(x0.shape, generator=g, device=device, dtype=x0.dtype)
                sigmas = t.view(-1, 1, 1, 1)
                noisy = (1.0 - sigmas) * x0 + sigmas * noise
                pred = net(hidden_states=noisy, timestep=t * 1000, encoder_hidden_states=batch["prompt_embeds"],
                           pooled_projections=batch["pooled_prompt_embeds"], return_dict=False)[0]
                loss = F.mse_loss(pred.float(), (noise - x0).float())
            else:
                loss = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    stamps.stamp()
    trainable = sum(p.numel() for p in params)
    return {"built_rss_mib": built, "stamps": stamps, "losses": losses, "trainable": trainable,
            "params": sum(p.numel() for p in net.parameters())}


# ----------------------------------------------------------------------------- RL: KimiRL + LoRA vs GRPO + peft
GRPO_PROMPTS, GRPO_K, GRPO_NEW_TOKENS = 2, 4, 16


def run_rl(trainer_name: str, lm_folder: str, args) -> dict:
    """One RL run on the LM with LoRA: litzoo ``KimiRL(lora_rank=16)`` in a Lightning Trainer, or TRL ``GRPOTrainer``
    with ``peft_config`` (same LoRA); 2 prompts x 4 samples, 16 new tokens. Steps include generation, so the
    generation CPU time (every ``generate`` call, timed by bench/kimi.py's ``GenMeter``) is also reported and
    subtracted: the rest is the update (scoring, loss forward/backward, optimizer)."""
    import lightning as L
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from kimi import GenMeter

    from litzoo.datamodules import ReasoningDataModule
    from litzoo.nets.lora import CAUSAL_LM_LORA_TARGETS

    n = args.warmup + args.steps
    data = ReasoningDataModule(tasks=["arithmetic"], task_options={"arithmetic": {"ops": "+"}}, difficulties=[2],
                               num_train=64, num_val=8, mode="rl", trace="cot", seed=SEED, batch_size=GRPO_PROMPTS)
    stamps, gen_at = Stamps("cpu"), []
    torch.manual_seed(SEED)
    if trainer_name == "litzoo":
        from litzoo.modules import KimiRL

        module = KimiRL(pretrained_path=lm_folder, k=GRPO_K, max_new_tokens=GRPO_NEW_TOKENS, lr=LR,
                        adam_betas=(0.9, 0.999), weight_decay=0.0, max_grad_norm=1.0, eval_k=0, seed=SEED,
                        lora_rank=LORA_RANK, sampler="transformers")  # TRL's generate: the rows compare updates
        meter = GenMeter(module.tokenizer.eos_token_id)
        meter.wrap(module.policy)
        resident(module)
        built = rss_mib()

        class Timer(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                stamps.stamp()
                gen_at.append(meter.cpu_s)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if batch_idx == n - 1:
                    stamps.stamp()
                    gen_at.append(meter.cpu_s)

        L.Trainer(max_steps=n, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                  callbacks=[Timer()]).fit(module, data)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from transformers.trainer_callback import PrinterCallback, ProgressCallback
        from trl import GRPOConfig, GRPOTrainer

        tokenizer = AutoTokenizer.from_pretrained(lm_folder)
        model = AutoModelForCausalLM.from_pretrained(lm_folder)
        data.setup("fit")
        problems = data.train_problems
        dataset = Dataset.from_dict({"prompt": [tokenizer.bos_token + p.prompt for p in problems],
                                     "problem_index": list(range(len(problems)))})
        from litzoo.reasoning import get_task

        task = get_task("arithmetic", ops="+")

        def verifier(prompts, completions, problem_index, **kwargs):
            return [task.verify(problems[i], c) for i, c in zip(problem_index, completions)]

        class Timer(TrainerCallback):
            def on_step_begin(self, targs, state, control, **kw):
                stamps.stamp()
                gen_at.append(meter.cpu_s)

            def on_train_end(self, targs, state, control, **kw):
                stamps.stamp()
                gen_at.append(meter.cpu_s)

        config = GRPOConfig(
            output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, fp16=False, report_to=[], disable_tqdm=True,
            save_strategy="no", logging_steps=1, seed=SEED, max_steps=n, per_device_train_batch_size=GRPO_PROMPTS
            * GRPO_K, gradient_accumulation_steps=1, num_generations=GRPO_K, max_completion_length=GRPO_NEW_TOKENS,
            temperature=1.0, top_k=0, top_p=1.0, beta=args.grpo_beta, num_iterations=1, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.0,
            max_grad_norm=1.0, gradient_checkpointing=False, dataloader_num_workers=0, remove_unused_columns=False,
            optim="adamw_torch_fused")
        peft_config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                                 target_modules=list(CAUSAL_LM_LORA_TARGETS), task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=verifier, args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=[Timer()])
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        meter = GenMeter(tokenizer.eos_token_id)
        meter.wrap(trainer.model)
        resident(trainer.model)
        built = rss_mib()
        trainer.train()
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    cpu, wall = stamps.medians(args.warmup)
    gaps = [b - a for a, b in zip(gen_at[args.warmup:], gen_at[args.warmup + 1:])]
    return {"built_rss_mib": built, "gen_cpu_s_per_step": statistics.median(gaps), "losses": [float("nan")],
            "trainable": trainable, "params": trainable, "cpu_s_per_step": cpu, "wall_s_per_step": wall}

# ----------------------------------------------------------------------------- one configuration, one process
def worker(args) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    s = shapes(args)
    n = args.warmup + args.steps
    batches = dit_batches(s, n) if args.model == "dit" else lm_batches(s, n)
    if args.mode == "grpo":
        result = run_rl(args.trainer, args.lm_folder, args)
        cpu, wall = result.pop("cpu_s_per_step"), result.pop("wall_s_per_step")
    else:
        run = run_litzoo if args.trainer == "litzoo" else run_plain
        result = run(args.model, args.mode, s, batches, args.lm_folder, args)
        cpu, wall = result.pop("stamps").medians(args.warmup)
    row = {"model": args.model, "mode": args.mode, "trainer": args.trainer, "cpu_s_per_step": cpu,
           "wall_s_per_step": wall, "peak_rss_mib": peak_rss_mib(), **result,
           "threads": torch.get_num_threads(), "device": args.device}
    if args.device == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["images_per_s"] = s["batch"] / wall if args.model == "dit" else None
    return row


def run_configuration(args, model: str, mode: str, trainer: str, lm_folder: str | None) -> dict:
    """One configuration in a fresh process: its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--mode", mode, "--trainer", trainer,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--device", args.device,
           "--dit-layers", str(args.dit_layers), "--lm-layers", str(args.lm_layers),
           "--dit-batch", str(args.dit_batch), "--gpu-batch", str(args.gpu_batch), "--grpo-beta", str(args.grpo_beta)]
    cmd += ["--tiny"] * args.tiny + ["--bf16"] * args.bf16 + ["--gpu-preset"] * args.gpu_preset
    cmd += ["--lm-folder", lm_folder] if lm_folder else []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{model}/{mode}/{trainer} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the table
def summarize(rows: list[dict]) -> list[dict]:
    """Per (model, mode, trainer): medians and ranges over the repeats."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["mode"], r["trainer"]), []).append(r)
    out = []
    for (model, mode, trainer), rs in groups.items():
        entry = {"model": model, "mode": mode, "trainer": trainer, "runs": len(rs), "trainable": rs[0]["trainable"],
                 "params": rs[0]["params"], "loss_step1": rs[0]["losses"][0]}
        for r in rs:  # what training added to the built model (the imports and the weights are in both RSS)
            r["train_rss_mib"] = r["peak_rss_mib"] - r["built_rss_mib"]
        gpu_keys = ("images_per_s", "peak_cuda_mib") if "peak_cuda_mib" in rs[0] else ()
        gpu_keys += ("gen_cpu_s_per_step",) if "gen_cpu_s_per_step" in rs[0] else ()
        for key in ("cpu_s_per_step", "wall_s_per_step", "peak_rss_mib", "built_rss_mib", "train_rss_mib", *gpu_keys):
            values = [r[key] for r in rs]
            entry[key] = statistics.median(values)
            entry[key + "_range"] = (min(values), max(values))
        out.append(entry)
    return out


def markdown(summary: list[dict]) -> str:
    by = {(e["model"], e["mode"], e["trainer"]): e for e in summary}
    lines = ["| model | mode | trainer | trainable params | CPU-s/step median (range) | wall-s/step median (range) "
             "| peak RSS MiB median (range) | RSS after build MiB | peak − after build MiB | loss at step 1 "
             "| vs plain: peak RSS, training RSS (peak − build), speed (CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        plain = by.get((e["model"], e["mode"], "plain")) or by.get((e["model"], e["mode"], "trl"))
        ratio = "" if e["trainer"] != "litzoo" or plain is None else (
            f"{e['peak_rss_mib'] - plain['peak_rss_mib']:+.0f} MiB, "
            f"{e['train_rss_mib'] - plain['train_rss_mib']:+.0f} MiB, "
            f"{plain['cpu_s_per_step'] / e['cpu_s_per_step']:.3f}x")
        c, w, p = e["cpu_s_per_step_range"], e["wall_s_per_step_range"], e["peak_rss_mib_range"]
        lines.append(f"| {e['model']} | {e['mode']} | {e['trainer']} | {e['trainable'] / 1e6:.1f} M "
                     f"| {e['cpu_s_per_step']:.3g} ({c[0]:.3g}–{c[1]:.3g}) | {e['wall_s_per_step']:.3g} "
                     f"({w[0]:.3g}–{w[1]:.3g}) | {e['peak_rss_mib']:.0f} ({p[0]:.0f}–{p[1]:.0f}) "
                     f"| {e['built_rss_mib']:.0f} | {e['train_rss_mib']:.0f} | {e['loss_step1']:.6f} | {ratio} |")
    if any("gen_cpu_s_per_step" in e for e in summary):  # RL: the update without the rollouts
        lines += ["", "| trainer | CPU-s/step | of which generation | update (step − generation) |",
                  "|---|---|---|---|"]
        for e in summary:
            if "gen_cpu_s_per_step" in e:
                g = e["gen_cpu_s_per_step"]
                lines.append(f"| {e['trainer']} | {e['cpu_s_per_step']:.3g} | {g:.3g} "
                             f"| {e['cpu_s_per_step'] - g:.3g} |")
    if any("peak_cuda_mib" in e for e in summary):  # the GPU numbers of the issue: images/s and peak memory
        lines += ["", "| model | mode | trainer | images/s median (range) | peak GPU memory MiB | vs plain: memory, "
                  "speed |", "|---|---|---|---|---|---|"]
        for e in summary:
            plain = by.get((e["model"], e["mode"], "plain"))
            ratio = "" if e["trainer"] == "plain" or plain is None or not e.get("images_per_s") else (
                f"{e['peak_cuda_mib'] - plain['peak_cuda_mib']:+.0f} MiB, "
                f"{e['images_per_s'] / plain['images_per_s']:.3f}x")
            ips, rng = e.get("images_per_s"), e.get("images_per_s_range")
            rate = f"{ips:.3g} ({rng[0]:.3g}–{rng[1]:.3g})" if ips else "–"
            lines.append(f"| {e['model']} | {e['mode']} | {e['trainer']} | {rate} | {e['peak_cuda_mib']:.0f} "
                         f"| {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["dit", "lm"], choices=["dit", "lm"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="steps left out of the timing")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument("--dit-layers", type=int, default=2, help="joint blocks of the CPU DiT (SD3-medium: 24)")
    p.add_argument("--lm-layers", type=int, default=2, help="layers of the CPU LM (Qwen2.5-0.5B: 24)")
    p.add_argument("--dit-batch", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--gpu-preset", action="store_true", help="the GPU shapes and bf16 (implied by --device cuda)")
    p.add_argument("--gpu-batch", type=int, default=4, help="DiT batch of the GPU run (128x128 latents)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (Lightning bf16-mixed; implied on the GPU)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test of the code path)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, 1 repeat, 2+2 steps: a smoke run")
    p.add_argument("--json", help="also write the raw rows (after every run) and the summary to this file")
    p.add_argument("--table-from", help="print the table of the rows in this --json file and exit")
    # one configuration (internal: the parent starts one process per configuration)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", choices=["dit", "lm"], help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=(*MODES, "grpo"), help=argparse.SUPPRESS)
    p.add_argument("--grpo-beta", type=float, default=0.0,
                   help="TRL's KL coefficient (> 0: a reference forward per step, the adapters off, as KimiRL does)")
    p.add_argument("--rl", action="store_true",
                   help="instead: KimiRL + LoRA vs TRL GRPOTrainer + peft_config on the LM")
    p.add_argument("--trainer", choices=(*TRAINERS, "trl"), help=argparse.SUPPRESS)
    p.add_argument("--lm-folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "cuda" or args.gpu_preset:
        args.bf16, args.gpu_preset = True, True
        if args.device == "cuda" and args.models == ["dit", "lm"]:
            args.models = ["dit"]  # the GPU row: the full-size SD3-medium transformer
    if args.quick:
        args.tiny, args.repeats, args.warmup, args.steps = True, 1, 2, 2
    if args.worker:
        row = worker(args)
        print(json.dumps(row), flush=True)
        return [row]
    if args.table_from:  # the table of an earlier (maybe cut-short) run's --json file
        return report(args, json.loads(Path(args.table_from).read_text())["rows"])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.rl:
            args.models, args.modes = ["lm"], ["grpo"]
        lm_folder = save_lm_folder(shapes(args), tmp) if "lm" in args.models else None
        trainers = ("litzoo", "trl") if args.rl else TRAINERS
        for model in args.models:
            for mode in args.modes:
                for r in range(args.repeats):
                    for trainer in (trainers if r % 2 == 0 else trainers[::-1]):
                        try:
                            row = run_configuration(args, model, mode, trainer, lm_folder if model == "lm" else None)
                        except RuntimeError as err:  # e.g. out of memory on the GPU: the other rows still count
                            print(err, file=sys.stderr, flush=True)
                            continue
                        rows.append(row)
                        if args.json:  # after every run: a cut-short benchmark keeps what it measured
                            Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
                        print(f"{model} {mode} {trainer}: {row['cpu_s_per_step']:.3f} CPU-s/step, "
                              f"{row['wall_s_per_step']:.3f} wall-s/step, peak RSS {row['peak_rss_mib']:.0f} MiB "
                              f"(after build {row['built_rss_mib']:.0f}), loss[0] {row['losses'][0]:.6f}",
                              file=sys.stderr, flush=True)
    return report(args, rows)


def report(args, rows: list[dict]) -> list[dict]:
    if not rows:
        raise SystemExit("No configuration ran (see the errors above).")
    summary = summarize(rows)
    s = shapes(args)
    print(f"\n### {args.device}, {'bf16 autocast' if args.bf16 else 'float32'}, {rows[0]['threads']} thread(s); "
          f"DiT {s['dit_layers']} joint blocks, batch {s['batch']} x {s['latent']}x{s['latent']} latents + "
          f"{s['context']} context tokens; LM {s['lm_layers']} layers, batch {s['lm_batch']} x {s['seq']} tokens; "
          f"{args.warmup} warm-up + {args.steps} timed steps, median of {max(e['runs'] for e in summary)} runs\n")
    print(markdown(summary))
    if args.json and not args.table_from:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()
