"""Tests for litzoo/datamodules/reasoning.py."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.reasoning import get_task

ADD = {"tasks": ["arithmetic"], "task_options": {"arithmetic": {"ops": "+"}}, "difficulties": [2]}


def _dm(**kwargs):
    args = {**ADD, "num_train": 300, "num_val": 40, "batch_size": 8, **kwargs}
    dm = ReasoningDataModule(**args)
    dm.setup("fit")
    return dm


def test_sft_batches_supervise_exactly_the_response_tokens():
    dm = _dm(mode="sft", trace="cot")
    tok = dm.tokenizer
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    task = get_task("arithmetic")
    for ids, labels, mask, problem in zip(batch["input_ids"], batch["labels"], batch["attention_mask"],
                                         batch["problems"].problems):
        n = int(mask.sum())
        prompt_len = len(problem.prompt) + 1  # bos + one token per character
        assert tok.decode(ids[:prompt_len], skip_special_tokens=True) == problem.prompt
        assert (labels[:prompt_len] == -100).all() and (labels[n:] == -100).all()  # prompt and padding ignored
        assert torch.equal(labels[prompt_len:n], ids[prompt_len:n])  # response supervised, eos included
        assert ids[n - 1] == tok.eos_token_id
        response = tok.decode(ids[prompt_len:n], skip_special_tokens=True)
        assert response.startswith("\n") and task.verify(problem, response) == 1.0


def test_direct_traces_are_the_marked_answer_only():
    dm = _dm(mode="sft", trace="direct")
    batch = next(iter(dm.train_dataloader()))
    p = batch["problems"].problems[0]
    start = len(p.prompt) + 1
    n = int(batch["attention_mask"][0].sum())
    assert dm.tokenizer.decode(batch["input_ids"][0, start:n], skip_special_tokens=True) == f"#{p.answer}"


def test_sft_loader_with_group_by_length_pads_less_and_keeps_every_trace():
    kwargs = {"tasks": ["combination_sum"], "task_options": None, "difficulties": [2], "mode": "sft",
              "num_train": 256, "batch_size": 16}
    plain, grouped = _dm(**kwargs), _dm(**kwargs, group_by_length=8)
    padded = {}
    for name, dm in [("plain", plain), ("grouped", grouped)]:
        batches = list(dm.train_dataloader())
        assert sorted(i for b in batches for i in b["problem_ids"].tolist()) == list(range(256))
        padded[name] = sum(b["input_ids"].numel() for b in batches)
        real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert padded["grouped"] < 0.7 * padded["plain"] and real <= padded["grouped"]


def test_rl_batches_carry_prompts_and_problems_for_the_verifier():
    dm = _dm(mode="rl", rl_steps_per_epoch=3)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 3 == len(loader)
    for batch in batches:
        ids, problems = batch["problem_ids"], batch["problems"]
        assert ids.shape == (8,) and len(problems) == 8
        assert len(set(ids.tolist())) == 8  # no problem twice in one batch
        for i, p, prompt in zip(ids.tolist(), problems.problems, problems.prompt_ids):
            assert p is dm.train_problems[i]
            assert dm.tokenizer.decode(prompt, skip_special_tokens=True) == p.prompt


def test_held_out_set_is_deterministic_disjoint_and_independent_of_the_pool_size():
    a, b, c = _dm(), _dm(), _dm(num_train=500, seed=0)
    assert [p.prompt for p in a.val_problems] == [p.prompt for p in b.val_problems] == [p.prompt for p in c.val_problems]
    assert len(a.val_problems) == 40 and len(a.train_problems) == 300
    assert not {p.prompt for p in a.val_problems} & {p.prompt for p in a.train_problems}
    assert len({p.prompt for p in a.train_problems}) == 300
    assert [p.prompt for p in _dm(seed=1).val_problems] != [p.prompt for p in a.val_problems]
    val = next(iter(a.val_dataloader()))
    assert [p.prompt for p in val["problems"].problems] == [p.prompt for p in a.val_problems]


def test_levels_split_the_pool_and_validation_evenly():
    dm = _dm(tasks=["arithmetic", "max_gap"], task_options=None, difficulties={"arithmetic": [1, 2], "max_gap": [2]},
             num_train=90, num_val=30)
    counts = {}
    for p in dm.val_problems:
        counts[(p.task, p.difficulty)] = counts.get((p.task, p.difficulty), 0) + 1
    assert counts == {("arithmetic", 1): 10, ("arithmetic", 2): 10, ("max_gap", 2): 10}
    assert dm.levels == [("arithmetic", 1), ("arithmetic", 2), ("max_gap", 2)]


def test_ddp_ranks_draw_different_problems_of_the_same_count(monkeypatch):
    single = _dm(mode="rl", batch_size=16)
    global_batch = single.draw_rl_batch()["problem_ids"].tolist()
    per_rank = []
    for rank in range(2):
        dm = _dm(mode="rl", batch_size=8)
        monkeypatch.setattr(dm, "_rank_world", lambda rank=rank: (rank, 2))
        per_rank.append(dm.draw_rl_batch()["problem_ids"].tolist())
    assert len(per_rank[0]) == len(per_rank[1]) == 8
    assert not set(per_rank[0]) & set(per_rank[1])
    assert per_rank[0] + per_rank[1] == global_batch  # slices of one seeded global draw


def test_curriculum_starts_with_the_easiest_level_and_unlocks_the_rest():
    dm = _dm(mode="rl", difficulties=[1, 2, 3], num_train=300, curriculum=True, curriculum_steps=6)
    levels = [{p.difficulty for p in dm.draw_rl_batch()["problems"].problems} for _ in range(6)]
    assert levels[0] == levels[1] == {1}
    assert max(max(s) for s in levels[2:4]) == 2
    assert 3 in set().union(*levels[4:])


def test_prioritized_sampling_follows_reported_results():
    dm = _dm(mode="rl", prioritized=True, num_train=40, batch_size=10)
    solved = list(range(20))  # report the first half solved k times
    dm.record_results(torch.tensor(solved * 4), torch.ones(80))
    drawn = torch.cat([dm.draw_rl_batch()["problem_ids"] for _ in range(10)])
    assert drawn.min() >= 20  # solved problems have weight 1 - 1 = 0


def test_rl_draws_resume_from_the_batches_the_module_reported():
    dm = _dm(mode="rl", rl_steps_per_epoch=4)
    it = iter(dm.train_dataloader())
    first = [next(it)["problem_ids"] for _ in range(3)]  # the third is "prefetched", not trained on
    dm.record_results(torch.tensor([]), torch.tensor([]))
    dm.record_results(torch.tensor([]), torch.tensor([]))
    state = dm.state_dict()
    resumed = _dm(mode="rl", rl_steps_per_epoch=4)
    resumed.load_state_dict(state)
    again = next(iter(resumed.train_dataloader()))["problem_ids"]
    assert state["rl_batches"] == 2 and torch.equal(again, first[2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": ["algebra"]}, r"task='algebra' is unknown; allowed tasks: \['arithmetic', 'combination_sum', 'max_gap'\]"),
        ({"difficulties": [9]}, r"difficulty=9 is not a level of task 'arithmetic'; allowed: integers 1..6"),
        ({"difficulties": {"max_gap": [2]}}, "no entry for task 'arithmetic'"),
        ({"mode": "ppo"}, r"mode='ppo' is not supported; choose one of \['sft', 'rl'\]"),
        ({"trace": "long"}, "trace='long'"),
        ({"task_options": {"max_gap": {}}}, "not in tasks"),
        ({"task_options": {"arithmetic": {"ops": "^"}}}, "ops="),
        ({"num_train": 0}, "num_train=0"),
        ({"group_by_length": -1}, "group_by_length=-1"),
    ],
)
def test_bad_settings_raise_errors_that_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReasoningDataModule(**{**ADD, **kwargs})


def test_a_tokenizer_missing_task_characters_is_refused_by_name():
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for ch in "0123456789=\n":  # no '+', '#', letters or space
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                  unk_token="<unk>")
    dm = ReasoningDataModule(**ADD, num_train=20, num_val=4)
    dm.tokenizer = tok
    with pytest.raises(ValueError, match=r"cannot represent .*'#'.*'\+'"):
        dm.setup("fit")
