"""bench/finetune.py on tiny shapes: litzoo's modules and the plain loops train the same thing (equal losses step by
step from the same seed and batches), the table rows carry their fields, and the GPU code path (bf16 autocast)
runs. Speed and memory targets are the benchmark's, not checked here."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "finetune.py"


@pytest.fixture(scope="module")
def finetune():
    spec = importlib.util.spec_from_file_location("bench_finetune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm_folder(finetune, tmp_path_factory):
    args = argparse.Namespace(device="cpu", gpu_preset=False, tiny=True)
    return finetune.save_lm_folder(finetune.shapes(args), str(tmp_path_factory.mktemp("lm")))


def run(finetune, model, mode, trainer, *extra, lm_folder=None):
    argv = ["--worker", "--tiny", "--model", model, "--mode", mode, "--trainer", trainer, "--warmup", "1",
            "--steps", "2", *extra] + (["--lm-folder", lm_folder] if lm_folder else [])
    (row,) = finetune.main(argv)
    return row


@pytest.mark.parametrize(("model", "mode"), [("dit", "full+ckpt"), ("dit", "lora"), ("lm", "full"), ("lm", "lora")])
def test_litzoo_and_plain_loop_train_the_same_thing(finetune, lm_folder, model, mode):
    folder = lm_folder if model == "lm" else None
    ours, plain = (run(finetune, model, mode, t, lm_folder=folder) for t in ("litzoo", "plain"))
    assert len(ours["losses"]) == len(plain["losses"]) == 3
    # step 1: same weights, batch and noise; steps 2-3: also the same optimizer updates
    assert ours["losses"] == pytest.approx(plain["losses"], rel=1e-5)
    assert ours["losses"][1] != ours["losses"][0]  # it trains: the update changed the loss
    # the same weights train; the DiT module also has a learned null condition (unused without condition dropout)
    assert 0 <= ours["trainable"] - plain["trainable"] <= (144 if model == "dit" and mode != "lora" else 0)
    if mode == "lora":
        assert 0 < plain["trainable"] < plain["params"] / 4
    else:
        assert plain["trainable"] == plain["params"]
    for row in (ours, plain):
        assert row["cpu_s_per_step"] > 0 and row["wall_s_per_step"] > 0
        # (Linux's RSS counters are synced lazily: VmRSS may run ahead of the peak by a fraction of a MiB)
        assert row["peak_rss_mib"] >= row["built_rss_mib"] - 1 > 0


def test_gpu_code_path_runs_on_cpu_in_bf16(finetune):
    """The --device cuda path (the GPU preset: bf16 autocast, Lightning bf16-mixed) on tiny shapes on the CPU."""
    ours, plain = (run(finetune, "dit", "full", t, "--gpu-preset", "--bf16") for t in ("litzoo", "plain"))
    assert ours["losses"][0] == pytest.approx(plain["losses"][0], rel=1e-2)  # bf16 forward: same to bf16 rounding



def test_rl_rows_kimi_lora_vs_trl_grpo_peft(finetune, lm_folder):
    """--rl: KimiRL(lora_rank=16) and TRL's GRPOTrainer(peft_config=...) adapt the same layers with the same rank, and
    the generation CPU time is a measured part of each step."""
    pytest.importorskip("trl")  # the benchmark peer: in the bench extra, not the test extra
    ours, trl = (run(finetune, "lm", "grpo", t, lm_folder=lm_folder) for t in ("litzoo", "trl"))
    assert ours["trainable"] == trl["trainable"] > 0
    for row in (ours, trl):
        assert 0 < row["gen_cpu_s_per_step"] < row["cpu_s_per_step"]

def check_table(stdout_or_markdown: str, model: str, mode: str) -> None:
    rows = [line for line in stdout_or_markdown.splitlines() if line.startswith(f"| {model} |")]
    assert len(rows) == 2
    cells = {row.split(" | ")[2]: [c.strip() for c in row.strip("|").split("|")] for row in rows}
    assert set(cells) == {"litzoo", "plain"}
    for trainer, c in cells.items():
        assert c[:3] == [model, mode, trainer] and len(c) == 11
        assert float(c[4].split()[0]) > 0 and float(c[6].split()[0]) > 0  # CPU-s/step, peak RSS
    assert float(cells["litzoo"][9]) == pytest.approx(float(cells["plain"][9]), rel=1e-5)  # loss at step 1
    assert "MiB" in cells["litzoo"][10] and cells["plain"][10] == ""


def test_table_rows_have_their_fields(finetune, lm_folder):
    rows = [run(finetune, "lm", "lora", t, lm_folder=lm_folder) for t in ("plain", "litzoo", "plain")]
    summary = {(e["trainer"]): e for e in finetune.summarize(rows)}
    assert summary["plain"]["runs"] == 2 and summary["litzoo"]["runs"] == 1
    low, high = summary["plain"]["cpu_s_per_step_range"]
    assert low <= summary["plain"]["cpu_s_per_step"] <= high
    check_table(finetune.markdown(list(summary.values())), "lm", "lora")


@pytest.mark.slow
def test_quick_run_prints_the_table():
    """The whole script as run from the shell: one process per configuration (a minute: each imports torch,
    Lightning, diffusers)."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--models", "dit", "--modes", "lora"],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    check_table(out.stdout, "dit", "lora")
