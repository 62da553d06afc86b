"""Tests for litzoo/reasoning/meters.py: per-level sums and means."""

import torch

from litzoo.reasoning.meters import LevelMeter


def test_level_meter_sums_per_level():
    meter = LevelMeter(("correct", "length"))
    meter.add(["a_d1", "a_d2", "a_d1"], correct=torch.tensor([1.0, 0.0, 0.0]), length=[3, 4, 5])
    assert meter.table(["a_d1", "a_d2", "b_d1"]).tolist() == [[2, 1, 8], [1, 0, 4], [0, 0, 0]]


def test_level_meter_summarize_gives_overall_and_per_level_means_over_ranks():
    meter = LevelMeter(("correct", "length"))
    meter.add(["a_d1", "a_d2", "a_d1"], correct=torch.tensor([1.0, 0.0, 0.0]), length=[3, 4, 5])
    # A fake 2-rank reduce: the other rank saw the same rows again.
    stats = meter.summarize(["a_d1", "a_d2", "b_d1"], reduce=lambda t: t * 2)
    assert stats["correct"].item() == 1 / 3 and stats["length"].item() == 4.0
    assert stats["correct/a_d1"].item() == 0.5 and stats["length/a_d2"].item() == 4.0
    assert "correct/b_d1" not in stats  # nothing seen at that level: no 0/0
    assert meter.sums == {} and meter.summarize() == {}  # reset after summarizing
