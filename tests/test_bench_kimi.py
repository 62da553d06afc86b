"""bench/kimi.py's pure pieces (issue 19 protocol): the unbiased pass@k estimator, mean ± standard error and
Welch's test over seeds, the budget-fraction snapshots of the accuracy-per-CPU-second curve, the RL seed's own
stream of batches from the same pool, and the --tables-only merge of saved per-(task, trainer, seed) results.
Training and evaluation themselves run in the benchmark (``--quick`` smoke run), not here."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "kimi.py"


@pytest.fixture(scope="module")
def kimi():
    spec = importlib.util.spec_from_file_location("bench_kimi", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_kimi"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_pass_at_k_is_the_unbiased_estimator(kimi):
    assert kimi.pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)  # 1 - C(6,4)/C(8,4)
    assert kimi.pass_at_k(8, 2, 1) == pytest.approx(2 / 8)  # pass@1 = c / n
    assert kimi.pass_at_k(8, 0, 8) == 0.0 and kimi.pass_at_k(8, 1, 8) == 1.0  # n = k: any correct sample
    assert kimi.pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples: every k-subset holds a correct one
    with pytest.raises(ValueError, match="k=9"):
        kimi.pass_at_k(8, 1, 9)


def test_mean_se_and_welch_on_a_hand_case(kimi):
    mean, se = kimi.mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3) / 2)  # sd = sqrt(5/3), n = 4
    assert math.isnan(kimi.mean_se([0.7])[1])
    # a: mean 2, var 1, n 3; b: mean 5.5, var 5/3, n 4 -> SE = sqrt(1/3 + 5/12) = sqrt(0.75)
    c = kimi.compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0])
    assert c["diff"] == -3.5
    assert c["diff_se_units"] == pytest.approx(-3.5 / math.sqrt(0.75)) and c["t"] == pytest.approx(c["diff_se_units"])
    # Welch-Satterthwaite degrees of freedom (not the pooled test's 5)
    df = 0.75**2 / ((1 / 3) ** 2 / 2 + (5 / 12) ** 2 / 3)
    from scipy.stats import t as student_t

    assert c["p"] == pytest.approx(2 * student_t.sf(3.5 / math.sqrt(0.75), df))
    assert math.isnan(kimi.compare([0.5], [0.4, 0.6])["p"])  # one seed: no test


def test_snapshots_copy_the_weights_when_the_budget_fractions_are_crossed(kimi):
    model = torch.nn.Linear(2, 1)
    snaps = kimi.BudgetSnapshots(10.0, [0.5, 0.25, 1.0])
    for used, value in [(1.0, 1.0), (6.0, 2.0), (8.0, 3.0), (10.5, 4.0), (12.0, 5.0)]:
        with torch.no_grad():
            model.weight.fill_(value)
        snaps.take(used, model)
    with torch.no_grad():
        model.weight.fill_(9.0)  # copies, not views of the live weights
    # 6 CPU-s crosses 0.25 and 0.5 at once: both get that step's weights; 10.5 crosses 1.0; later steps add nothing
    assert [(f, used, s["weight"].flatten().tolist()) for f, used, s in snaps.taken] == [
        (0.25, 6.0, [2.0, 2.0]), (0.5, 6.0, [2.0, 2.0]), (1.0, 10.5, [4.0, 4.0])]


def test_each_rl_seed_draws_its_own_batches_from_the_same_pool(kimi):
    def data(rl_seed):
        dm = kimi.HeldOutDisjointData(tasks=["arithmetic"], task_options={"arithmetic": {"ops": "+"}}, difficulties=[2],
                                      num_train=60, num_val=8, batch_size=4, mode="rl", trace="cot", seed=0)
        dm.rl_seed = rl_seed
        dm.setup("fit")
        return dm, [dm.draw_rl_batch()["problem_ids"].tolist() for _ in range(3)]

    (dm0, seed0), (dm1, seed1), (_, again1) = data(0), data(1), data(1)
    assert [p.prompt for p in dm0.train_problems] == [p.prompt for p in dm1.train_problems]  # one pool
    assert seed0 != seed1 and seed1 == again1  # its own stream, reproducible
    # the batches of RL seed 0 are the data seed's (as in earlier single-seed runs)
    generator = torch.Generator().manual_seed(kimi.zlib.crc32(b"0/rl/0"))
    assert seed0[0] == torch.multinomial(torch.ones(len(dm0.train_problems)), 4, generator=generator).tolist()
    assert dm1.seed == 0  # the data seed is back after each draw


def _args(kimi, tmp_path, *extra):
    import argparse

    ns = argparse.Namespace(tasks=["addition"], trainers=list(kimi.TRAINERS), seeds=[0, 1, 2], budget_cpu_s=60.0,
                            k=8, prompts_per_step=8, temperature=0.5, lr=5e-5, tau=0.1, num_train=4000,
                            curve_fractions=[0.5, 1.0], curve_eval=50, pass_k=8, pass_n=8, harder=True,
                            sft_batch_size=64, kimi_overlong=False, kimi_sampling="uniform", kimi_sampler="litzoo",
                            overlong_cache=None, curve=str(tmp_path / "curves.png"))
    for key, value in zip(extra[::2], extra[1::2]):
        setattr(ns, key, value)
    return ns


def test_tables_only_merges_the_saved_seeds_and_tests_kimi_against_the_best_trl(kimi, tmp_path, capsys):
    args = _args(kimi, tmp_path)
    settings = {k: getattr(args, k) for k in ("k", "prompts_per_step", "temperature", "lr", "tau", "num_train",
                                              "curve_fractions")}
    ev = lambda acc: {"accuracy": acc, "length": 50.0, "truncated": 0.0, "pass@k": acc + 0.05,  # noqa: E731
                      "harder_accuracy": acc / 2, "harder_length": 80.0, "harder_truncated": 0.1,
                      "harder_pass@k": acc / 2 + 0.1, "correct": "1" * round(acc * 100) + "0" * round(100 - acc * 100)}
    (tmp_path / "addition__sft.json").write_text(json.dumps({
        "sft": "S", "settings": settings, "sft_info": {"steps": 350, "cpu_s": 100.0, "params": 82624},
        "eval": ev(0.8), "curve0": 0.8}))
    accs = {"kimi": [0.90, 0.92, 0.94], "grpo": [0.85, 0.86, 0.87], "grpo_dapo_overlong32": [0.80, 0.84, 0.82]}
    for key, values in accs.items():
        for seed, acc in enumerate(values):
            (tmp_path / f"addition__{key}__rl{seed}.json").write_text(json.dumps({
                "sft": "S", "settings": settings, "task": "addition", "trainer": key, "seed": seed,
                "info": {"steps": 40 + seed, "cpu_s": 60.0, "gen_tok_per_cpu_s": 1000.0, "train_reward_last": acc},
                "eval": ev(acc), "curve": [[0.5, 30.0, acc - 0.05], [1.0, 60.0, acc]]}))
    (tmp_path / "addition__grpo__rl3.json").write_text("{}")  # a seed not asked for is left out
    kimi.report(args, tmp_path, settings)
    out = capsys.readouterr().out
    assert "| addition | litzoo KimiRL | 3 | 0.920 ± 0.012 |" in out  # sd 0.02 / sqrt(3) = 0.0115
    assert "| addition | TRL GRPOTrainer (defaults) | 3 | 0.860 ± 0.006 |" in out
    # best TRL by greedy pass@1 is grpo (0.86 > 0.82); difference 0.06 over SE sqrt(0.0115^2 + 0.0058^2)
    diff_se = 0.06 / math.sqrt((0.02**2 + 0.01**2) / 3)
    assert f"| addition | greedy pass@1, level 2 | 0.920 ± 0.012 | 0.860 ± 0.006 (grpo) | +0.060 | +{diff_se:.1f} |" in out
    # paired over 100 problems: KimiRL solves the first 90/92/94 (seed means 1, 1, ..., 2/3, 1/3, 0), TRL 85/86/87
    from scipy.stats import ttest_rel

    per = lambda accs: [sum(i < round(a * 100) for a in accs) / 3 for i in range(100)]  # noqa: E731
    paired = ttest_rel(per(accs["kimi"]), per(accs["grpo"]))
    assert f"| {paired.statistic:.2f} | {paired.pvalue:.3f} |" in out.split("greedy pass@1, level 2")[1].split("\n")[0]
    assert "| addition | litzoo KimiRL | 0.870 ± 0.012 @ 30 s | 0.920 ± 0.012 @ 60 s |" in out
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # a result with other settings (here another SFT start) is not merged
    (tmp_path / "addition__kimi__rl0.json").write_text(
        (tmp_path / "addition__kimi__rl0.json").read_text().replace('"sft": "S"', '"sft": "other"'))
    kimi.report(args, tmp_path, settings)
    assert "| addition | litzoo KimiRL | 2 | 0.930 ± 0.010 |" in capsys.readouterr().out


def test_trainer_keys_name_every_option_that_changes_the_run(kimi, tmp_path):
    spec = kimi.TASK_SPECS["addition"]
    assert kimi.trainer_key("kimi", spec, _args(kimi, tmp_path)) == "kimi"
    assert kimi.trainer_key("grpo_dapo", spec, _args(kimi, tmp_path)) == "grpo_dapo_overlong32"  # 128 // 4
    args = _args(kimi, tmp_path, "kimi_overlong", True, "kimi_sampling", "prioritized", "overlong_cache", 20)
    assert kimi.trainer_key("kimi", spec, args) == "kimi_overlong20_prioritized"
    assert kimi.trainer_key("grpo_dapo", spec, args) == "grpo_dapo_overlong20"
    assert kimi.trainer_key("grpo", spec, args) == "grpo"
    args = _args(kimi, tmp_path, "iteration_steps", 32, "segment_tokens", 48)
    assert kimi.trainer_key("kimi", spec, args) == "kimi_ref32_seg48"
    assert kimi.trainer_key("grpo_dapo", spec, args) == "grpo_dapo_overlong32"  # KimiRL's own options only
    assert kimi.trainer_key("kimi", spec, _args(kimi, tmp_path, "iteration_steps", 8)) == "kimi"  # the default


def test_the_hard_level_task_trains_on_level_3_from_the_level_2_start_and_keeps_its_classes_out(kimi, tmp_path,
                                                                                                 monkeypatch):
    """max_gap_hard: RL pool and held-out problems of level 3, harder level 4 (fitting its budget), from maximum
    gap's level-2 SFT start, whose pool is checked disjoint from the held-out problems; not in the default tasks."""
    import argparse

    spec = kimi.TASK_SPECS["max_gap_hard"]
    assert "max_gap_hard" not in kimi.DEFAULT_TASKS and spec.sft_task == "max_gap"
    args = argparse.Namespace(seed=0, num_train=200, num_eval=20, sft_num_train=500, p_mistake=0.3, sft_batch_size=64,
                              group_by_length=None, sft_lr=3e-3, cache_dir=str(tmp_path), prompts_per_step=8)
    data = kimi.datamodule(spec, "rl", args, batch_size=8)
    data.setup("fit")
    hard = kimi.harder_problems(spec, args)
    assert {p.difficulty for p in data.val_problems} == {p.difficulty for p in data.train_problems} == {3}
    task = kimi.get_task("max_gap")
    assert {p.difficulty for p in hard} == {4} and max(len(task.write_trace(p)) + 1 for p in hard) <= 352
    calls = []
    with monkeypatch.context() as m:
        m.setattr(kimi, "sft_checkpoint", lambda name, sft_spec, steps, a, **kw: calls.append((name, sft_spec)) or "S")
        assert kimi.sft_start("max_gap_hard", 4000, args, data, hard) == "S"
    assert calls == [("max_gap", kimi.TASK_SPECS["max_gap"])]
    # a held-out problem that the level-2 SFT pool also holds (up to input order) is refused
    sft_pool = kimi.datamodule(kimi.TASK_SPECS["max_gap"], "sft", args, num_train=args.sft_num_train)
    sft_pool.prepare_problems()
    leak = sft_pool.train_problems[0]
    data.val_problems = data.val_problems + [task.make_problem(list(reversed(leak.data["nums"])), 3)]
    with pytest.raises(ValueError, match="SFT pool"):  # checked before the (here absent) cached start is looked up
        kimi.sft_start("max_gap_hard", 4000, args, data, hard, train=False)


@pytest.mark.parametrize("name, plain", [("addition_optcheck", "addition"), ("max_gap_optcheck", "max_gap"),
                                         ("combination_sum_optcheck", "combination_sum")])
def test_the_long2short_tasks_write_sft_traces_of_two_lengths_and_rl_problems_like_their_task(kimi, name, plain):
    """addition_optcheck / max_gap_optcheck / combination_sum_optcheck: their SFT traces leave out every check in
    30 % of the clean ones (the long2short benchmark's tasks; maximum gap's checked traces also add every gap back,
    combination sum's every search subtraction); their problems are the plain task's (combination sum's: those whose
    checked trace fits its budget, in the same order), only the traces differ."""
    import argparse

    spec, plain_spec = kimi.TASK_SPECS[name], kimi.TASK_SPECS[plain]
    assert name not in kimi.DEFAULT_TASKS and spec.options["check_rate"] == 0.7
    args = argparse.Namespace(seed=0, num_train=300, num_eval=20, sft_num_train=300, p_mistake=0.3, prompts_per_step=8)
    sft = kimi.datamodule(spec, "sft", args, num_train=300, p_mistake=0.3)
    sft.prepare_problems()
    traces = [sft.response_text(p, i) for i, p in enumerate(sft.train_problems)]
    clean = [t for t in traces if "\nfix" not in t]
    unchecked = sum("\nchk " not in t for t in clean) / len(clean)
    assert 0.2 < unchecked < 0.4, unchecked  # ~210 clean traces: 4 SD around 0.3
    assert all("\nchk " in t for t in traces if "\nfix" in t)
    if name == "max_gap_optcheck":  # a checked trace adds back each of its n - 1 gaps
        for p, t in zip(sft.train_problems, traces):
            if "\nchk " in t and "\nfix" not in t and len(p.data["nums"]) > 1:
                assert sum("+" in line for line in t.split("\n")) == len(p.data["nums"]) - 1
    if name == "combination_sum_optcheck":  # a checked trace adds back each search line's subtraction
        for t in traces:
            if "\nchk " in t and "\nfix" not in t:
                lines = t.split("\n")
                steps = sum("-" in x for x in lines if not x.startswith("chk "))
                sums = 0 if lines[-1] == "#none" else len(lines[-1].split(";"))  # one closing sum per combination
                assert sum(x.startswith("chk ") for x in lines) == steps + sums
    task = kimi.get_task(spec.task, **{k: v for k, v in spec.options.items() if k != "check_rate"})
    fits = lambda p: len(task.write_trace(p)) + 1 <= (spec.max_trace_tokens or spec.max_new_tokens)  # noqa: E731
    ref = kimi.datamodule(plain_spec, "sft", args, num_train=500, p_mistake=0.3)
    ref.prepare_problems()  # the plain pool, longer: the filtered one is its first problems that fit, in order
    assert [p.prompt for p in sft.train_problems] == [p.prompt for p in ref.train_problems if fits(p)][:300]
    # the held-out problems are the plain task's that fit, never refilled with others (which a start continued from
    # may have trained on); the harder level's likewise
    assert [p.prompt for p in sft.val_problems] == [p.prompt for p in ref.val_problems if fits(p)]
    if spec.sft_init is not None:
        init_hard = kimi.harder_problems(kimi.TASK_SPECS[spec.sft_init], args)
        assert {p.prompt for p in kimi.harder_problems(spec, args)} <= {p.prompt for p in init_hard}
    # the budget holds the longest clean trace of the level (combination sum: of the problems kept); a slipped trace
    # of a kept problem fits the model's positions with its prompt (bos + prompt, trace + eos)
    drawn = [task.generate(spec.difficulty, i) for i in range(2000)]
    kept = [p for p in drawn if fits(p)]
    assert max(len(task.write_trace(p)) + 1 for p in kept) <= spec.max_new_tokens
    assert max(len(p.prompt) + len(task.write_trace(p, i, p_mistake=1.0)) + 2 for i, p in enumerate(kept)) <= \
        spec.model.get("max_position_embeddings", 512)
    assert len(kept) / len(drawn) > (0.98 if spec.max_trace_tokens else 0.999)


def test_paired_test_over_problems_averages_each_problem_over_seeds(kimi):
    """KimiRL vs TRL paired over held-out problems: each problem's greedy result (``correct``) averaged over a
    configuration's seeds, then scipy's paired t-test; n/a without per-problem results or any difference."""
    from scipy.stats import ttest_rel

    ev = lambda marks, crc="abcd0123": [{"correct": m, "prompts_crc": crc} for m in marks]  # noqa: E731
    a = ev(["1101", "1111"])  # per problem over 2 seeds: 1, 1, 0.5, 1
    b = ev(["1000", "0100", "1001"])  # 2/3, 1/3, 0, 1/3
    c = kimi.compare_per_problem(a, b)
    want = ttest_rel([1, 1, 0.5, 1], [2 / 3, 1 / 3, 0, 1 / 3])
    assert c["t"] == pytest.approx(want.statistic) and c["p"] == pytest.approx(want.pvalue)
    # by hand: differences 1/3, 2/3, 1/2, 2/3 -> mean 13/24, t = mean / (sd / 2)
    d = [1 / 3, 2 / 3, 1 / 2, 2 / 3]
    sd = math.sqrt(sum((x - 13 / 24) ** 2 for x in d) / 3)
    assert c["t"] == pytest.approx(13 / 24 / (sd / 2))
    assert kimi.compare_per_problem(a, [{"correct": m} for m in ["1000", "0100", "1001"]])["t"] == c["t"]  # no crc
    assert math.isnan(kimi.compare_per_problem(a, ev(["0000", "0110"]) + [{}])["p"])  # a run saved without them
    assert math.isnan(kimi.compare_per_problem(a, ev(["1000", "0100"], crc="ffff0000"))["p"])  # other problems
    assert math.isnan(kimi.compare_per_problem(a[:1], b)["p"])  # one seed a side: no test, as for Welch's
    assert math.isnan(kimi.compare_per_problem(ev(["11", "11"]), ev(["00", "00"]))["p"])  # no spread: no test
    assert math.isnan(kimi.compare_per_problem(a, a)["p"])  # no difference at all


def test_the_long_input_task_evaluates_longer_inputs_of_the_trained_values(kimi, tmp_path):
    """max_gap_long: max_gap_hard's RL (level 3 from the level-2 start: the same pool and held-out problems), its
    harder level 9-10 integers in 0-99 (fitting its budget, their classes out of the pool), named so in the tables."""
    import argparse

    spec, hard_spec = kimi.TASK_SPECS["max_gap_long"], kimi.TASK_SPECS["max_gap_hard"]
    assert "max_gap_long" not in kimi.DEFAULT_TASKS and spec.sft_task == "max_gap" and spec.difficulty == 3
    args = argparse.Namespace(seed=0, num_train=200, num_eval=40, prompts_per_step=8)
    hard = kimi.harder_problems(spec, args)
    assert {len(p.data["nums"]) for p in hard} == {9, 10} and max(max(p.data["nums"]) for p in hard) <= 99
    task = kimi.get_task("max_gap")
    assert {p.difficulty for p in hard} == {4}
    # the budget drops no problem of the level (harder_problems keeps those whose clean trace fits): 2000 draws fit
    level = kimi.get_task("max_gap", **spec.harder_options)
    rng = __import__("random").Random(1)
    assert max(len(task.write_trace(level.generate(4, rng))) + 1 for _ in range(2000)) <= spec.harder_max_new_tokens
    data, ref = kimi.datamodule(spec, "rl", args, batch_size=8), kimi.datamodule(hard_spec, "rl", args, batch_size=8)
    data.setup("fit"), ref.setup("fit")
    assert [p.prompt for p in data.train_problems] == [p.prompt for p in ref.train_problems]
    assert [p.prompt for p in data.val_problems] == [p.prompt for p in ref.val_problems]
    assert kimi.problem_keys(hard) == data.reserved
    assert kimi.harder_label(spec) == "harder level 4 (9-10 integers in 0-99)"
    assert kimi.harder_label(hard_spec) == "harder level 4"


def test_accuracy_by_problem_size_reads_the_per_problem_results_of_the_same_held_out_problems(kimi, capsys):
    """The by-size table re-draws the seeded held-out problems and averages each size's per-problem results over
    seeds: here a policy that solves exactly the 5-input problems (seed 0) and those plus the 6-input ones (seed 1)."""
    import argparse

    args = argparse.Namespace(seed=0, num_train=200, num_eval=40, prompts_per_step=8, harder=True, trainers=["kimi"])
    spec = kimi.TASK_SPECS["max_gap_long"]
    held = kimi.datamodule(spec, "rl", args, batch_size=8)
    held.setup("fit")
    sizes = [kimi.problem_size(p) for p in held.val_problems]
    hard_sizes = [kimi.problem_size(p) for p in kimi.harder_problems(spec, args)]
    assert set(sizes) <= {5, 6, 7, 8} and set(hard_sizes) == {9, 10}
    mark = lambda keep, zs: "".join("1" if z in keep else "0" for z in zs)  # noqa: E731
    runs = [{"eval": {"correct": mark({5}, sizes), "harder_correct": mark({9}, hard_sizes)}},
            {"eval": {"correct": mark({5, 6}, sizes), "harder_correct": mark(set(), hard_sizes)}}]
    start = {"eval": {"correct": mark(set(), sizes)}}  # no harder results: that row is left out
    kimi.report_by_size(args, {"max_gap_long": {"start": start, "runs": {"kimi": runs}}})
    out = capsys.readouterr().out
    n = {z: sizes.count(z) for z in set(sizes)}
    cells = ", ".join(f"{z}: {a:.3f} ({n[z]})" for z, a in sorted({5: 1.0, 6: 0.5, 7: 0.0, 8: 0.0}.items()) if z in n)
    assert f"| max_gap_long | level 3 | litzoo KimiRL | {cells} |" in out
    assert f"| max_gap_long | level 3 | SFT start | " in out
    assert (f"| max_gap_long | harder level 4 (9-10 integers in 0-99) | litzoo KimiRL | 9: 0.500 ({hard_sizes.count(9)}), "
            f"10: 0.000 ({hard_sizes.count(10)}) |") in out
    assert "| harder level 4 (9-10 integers in 0-99) | SFT start | n/a (runs without per-problem results" in out
    # results saved for other problems (their checksum differs) are not paired with these
    runs[1]["eval"]["prompts_crc"] = "00000000"
    kimi.report_by_size(args, {"max_gap_long": {"start": start, "runs": {"kimi": runs}}})
    assert "| max_gap_long | level 3 | litzoo KimiRL | n/a" in capsys.readouterr().out
    assert kimi.problem_size(kimi.get_task("arithmetic").generate(2, __import__("random").Random(0))) is None


def test_per_problem_results_and_saved_weights_give_the_run_back(kimi, tmp_path, monkeypatch):
    """evaluate_per_problem's ``correct`` agrees with its accuracy and names the problems by checksum; a run's saved
    weights (written whole after its JSON) load back into the SFT folder's model with its tokenizer."""
    import random

    from litzoo.reasoning.policy import TINY_QWEN2, build_policy

    policy, tok = build_policy(model_config=dict(TINY_QWEN2))
    policy.save_pretrained(tmp_path / "sft"), tok.save_pretrained(tmp_path / "sft")
    task = kimi.get_task("arithmetic", ops="+")
    problems = [task.generate(1, random.Random(i)) for i in range(6)]
    ev = kimi.evaluate_per_problem(policy, tok, problems, 6)  # an untrained policy: its string must add up anyway
    assert len(ev["correct"]) == 6 and ev["correct"].count("1") / 6 == pytest.approx(ev["accuracy"])
    # each mark is its own problem's verdict, in order: right answers to problems 0, 2, 4 only
    texts = [f"#{task.format_answer(p.answer) if i % 2 == 0 else p.answer + 1}" for i, p in enumerate(problems)]
    monkeypatch.setattr(kimi, "evaluate_with_texts", lambda *a: ({"accuracy": 0.5}, texts))
    assert kimi.evaluate_per_problem(policy, tok, problems, 6)["correct"] == "101010"
    assert ev["prompts_crc"] == kimi.prompts_crc(problems) != kimi.prompts_crc(problems[::-1])
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    path = tmp_path / "run.pt"
    kimi.save_weights(path, state, {"sft": str(tmp_path / "sft"), "seed": 3})
    assert not path.with_suffix(".pt.tmp").exists()
    loaded, tok2, saved = kimi.load_weights(path)
    assert saved["seed"] == 3 and tok2.get_vocab() == tok.get_vocab()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_an_sft_init_entry_continues_the_other_entrys_cached_start_on_its_own_traces(kimi, tmp_path, monkeypatch):
    """``sft_init``: the entry's SFT starts from the named entry's cached start (built first when missing) at its own
    ``sft_lr``; its folder name says which and its checksum covers the start's name and weights, so another start,
    or the same one rebuilt with other weights, is another folder. At a vanishing learning rate the continued
    weights are the start's, not a fresh model's."""
    import argparse

    from litzoo.reasoning.policy import TINY_QWEN2, build_policy

    model = {**TINY_QWEN2, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
             "num_key_value_heads": 1, "num_hidden_layers": 1}
    specs = {"a": kimi.TaskSpec("arithmetic", {"ops": "+"}, 1, 128, model, 2, 128),
             "b": kimi.TaskSpec("arithmetic", {"ops": "+", "check_rate": 0.5}, 1, 128, model, 2, 128, sft_init="a",
                                sft_lr=1e-30)}
    monkeypatch.setattr(kimi, "TASK_SPECS", specs)
    monkeypatch.setattr(kimi, "SFT_STEPS", {"a": 3, "b": 1})
    monkeypatch.setattr(kimi, "GROUP_BY_LENGTH", {"a": 0, "b": 0})
    args = argparse.Namespace(seed=0, num_train=64, num_eval=8, sft_num_train=64, p_mistake=0.3, sft_batch_size=4,
                              group_by_length=None, sft_lr=3e-3, cache_dir=str(tmp_path))
    out, info = kimi.sft_checkpoint("b", specs["b"], 1, args)
    init = tmp_path / next(p.name for p in tmp_path.iterdir() if p.name.startswith("sft_a_"))
    assert info["init"] == init.name and "_lr1e-30_" in out.name and "_from-a_" in out.name
    continued, start = build_policy(pretrained_path=str(out))[0], build_policy(pretrained_path=str(init))[0]
    for (name, x), y in zip(continued.state_dict().items(), start.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    # the same start rebuilt with other weights (same folder name): another continued folder, not the cached one
    with torch.no_grad():
        next(start.parameters()).add_(1.0)
    start.save_pretrained(init)
    out2, info2 = kimi.sft_checkpoint("b", specs["b"], 1, args)
    assert out2 != out and not info2["cached"] and out2.name[:-8] == out.name[:-8]
    # another start (more steps: another folder, another checksum) gives another continued folder
    monkeypatch.setattr(kimi, "SFT_STEPS", {"a": 4, "b": 1})
    out3, _ = kimi.sft_checkpoint("b", specs["b"], 1, args)
    assert out3 not in (out, out2) and out3.name.split("_")[-1] != out.name.split("_")[-1]
