"""Your own verifiable problems and your own causal LM: a jsonl table + a verifier + a local Qwen2-shaped model with
a BPE tokenizer trained here (no hub) -> ReasoningDataModule -> CoTSFT -> KimiRL -> export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Tokenizer

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.model_card import usage_code
from litzoo.modules.cot_sft import CoTSFT
from litzoo.modules.kimi_rl import KimiRL
from litzoo.reasoning.generation import generate
from litzoo.reasoning.policy import encode_chat_prompt
from litzoo.reasoning.rewards import score
from readme_helpers import readme_blocks

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def addition_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append({"question": f"What is {a}+{b}?", "solution": str(a + b),
                     "worked": f"{a}+{b}={a + b}. The answer is \\boxed{{{a + b}}}"})
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bpe_chat_tokenizer(texts) -> Qwen2Tokenizer:
    """A byte-level BPE trained with `tokenizers` on ``texts`` (Qwen2's normalizer and pre-tokenizer, so that
    AutoTokenizer, which reloads a qwen2 folder as Qwen2Tokenizer, gives the same ids), ChatML template."""
    proto = Qwen2Tokenizer(vocab={"a": 0}, merges=[])._tokenizer
    bpe = Tokenizer(models.BPE())
    bpe.normalizer, bpe.pre_tokenizer = proto.normalizer, proto.pre_tokenizer
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tok = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", extra_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    return tok


def save_tiny_chat_model(folder: Path) -> Path:
    """A 2-layer width-32 Qwen2 from a config plus its BPE tokenizer, saved with save_pretrained."""
    tok = bpe_chat_tokenizer([r["question"] + " " + r["worked"] for r in addition_rows(300, seed=99)])
    config = AutoConfig.for_model("qwen2", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                  max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_lm")
    return {"model": save_tiny_chat_model(root / "my_model"),
            "problems": write_jsonl(root / "problems.jsonl", addition_rows(24))}


COLUMNS = {"prompt_column": "question", "answer_column": "solution"}


def _dm(own, **kwargs):
    args = {"data_path": str(own["problems"]), **COLUMNS, "num_val": 4, "batch_size": 4,
            "tokenizer_path": str(own["model"]), "seed": 0, **kwargs}
    dm = ReasoningDataModule(**args)
    dm.setup("fit")
    return dm


def _trainer(root, steps, **kwargs):
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, default_root_dir=root, **kwargs)


def test_table_problems_prompts_are_the_chat_template_rendering_and_targets_the_worked_response(own):
    dm = _dm(own, mode="sft", response_column="worked", verifier="boxed")
    tok = AutoTokenizer.from_pretrained(own["model"])
    rows = {r["question"]: r for r in addition_rows(24)}
    assert len(dm.train_problems) == 20 and len(dm.val_problems) == 4
    assert {p.prompt for p in dm.train_problems + dm.val_problems} == set(rows)  # every row, once
    batch = next(iter(dm.train_dataloader()))
    for ids, labels, mask, p in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], batch["problems"]):
        rendered = f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n"
        prompt_ids = tok.encode(rendered, add_special_tokens=False)
        assert prompt_ids == tok.apply_chat_template([{"role": "user", "content": p.prompt}],
                                                     add_generation_prompt=True, return_dict=True)["input_ids"]
        n = int(mask.sum())
        assert ids[:len(prompt_ids)].tolist() == prompt_ids and (labels[:len(prompt_ids)] == -100).all()
        response = tok.encode(rows[p.prompt]["worked"], add_special_tokens=False) + [tok.eos_token_id]
        assert ids[len(prompt_ids):n].tolist() == labels[len(prompt_ids):n].tolist() == response
        assert p.answer == rows[p.prompt]["solution"]
    # Without response_column the target is the answer itself.
    direct = next(iter(_dm(own, mode="sft").train_dataloader()))
    p, ids, n = direct["problems"].problems[0], direct["input_ids"][0], int(direct["attention_mask"][0].sum())
    assert tok.decode(ids[len(encode_chat_prompt(tok, p.prompt)):n], skip_special_tokens=True) == p.answer


def test_table_rewards_of_known_responses_and_a_held_out_file(own, tmp_path):
    val = write_jsonl(tmp_path / "val.jsonl", [{"question": "What is 1+1?", "solution": "2"}])
    dm = _dm(own, mode="rl", verifier="last_number", val_data_path=str(val))
    assert len(dm.train_problems) == 24 and [p.prompt for p in dm.val_problems] == ["What is 1+1?"]
    p = dm.val_problems[0]
    assert score([p] * 4, ["1+1=2", "so 2.0", "2 not 3", "-2"]).tolist() == [1.0, 1.0, 0.0, 0.0]
    boxed = _dm(own, mode="rl", verifier="boxed").train_problems[0]
    answer = boxed.answer
    assert score([boxed] * 3, [f"\\boxed{{{answer}}}", answer, f"\\boxed{{{int(answer) + 1}}}"]).tolist() == [1, 0, 0]
    batch = next(iter(dm.train_dataloader()))  # RL batches: the chat-rendered prompt ids of the drawn problems
    tok = dm.tokenizer
    assert batch["problems"].prompt_ids == [encode_chat_prompt(tok, q.prompt) for q in batch["problems"]]
    # a held-out file that repeats training problems is said
    first = dm.train_problems[0]
    leaky = write_jsonl(tmp_path / "leaky.jsonl", [{"question": first.prompt, "solution": first.answer}])
    with pytest.warns(UserWarning, match=r"1 of the 1 problems of val_data_path=.* are also in data_path"):
        _dm(own, mode="rl", verifier="last_number", val_data_path=str(leaky))


def test_table_errors_at_construction_name_the_problem(own, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ReasoningDataModule(data_path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"prompt_column='prompt' is not a column of .*its columns are "
                                         r"\['question', 'solution', 'worked'\]"):
        ReasoningDataModule(data_path=str(own["problems"]))
    with pytest.raises(ValueError, match="verifier='nearly' is unknown"):
        ReasoningDataModule(data_path=str(own["problems"]), **COLUMNS, verifier="nearly")
    with pytest.raises(ValueError, match=r"num_val=24 leaves no training problems .*\(24 rows\)"):
        ReasoningDataModule(data_path=str(own["problems"]), **COLUMNS, num_val=24)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "solution": "1"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is a list, not a JSON object"):
        ReasoningDataModule(data_path=str(bad), **COLUMNS)
    holes = write_jsonl(tmp_path / "holes.jsonl", [{"question": "q", "solution": "1"}, {"question": "", "solution": "2"},
                                                   {"question": "r", "solution": "3"}])
    with pytest.raises(ValueError, match="row 1 of the problems has prompt '' and answer '2'"):
        ReasoningDataModule(data_path=str(holes), **COLUMNS, num_val=1)
    with pytest.raises(ValueError, match="curriculum=True needs difficulty levels"):
        ReasoningDataModule(data_path=str(own["problems"]), **COLUMNS, curriculum=True)


def test_saved_datasets_folder_and_parquet_give_the_same_problems(own, tmp_path):
    import datasets

    table = datasets.Dataset.from_list(addition_rows(24))
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "problems.parquet"))
    want = [(p.prompt, p.answer) for p in _dm(own).train_problems]
    for path in (tmp_path / "saved", tmp_path / "problems.parquet"):
        dm = _dm(own, data_path=str(path), cache_dir=str(tmp_path / "cache"))
        assert [(p.prompt, p.answer) for p in dm.train_problems] == want


def test_own_model_sft_then_kimi_rl_then_export_reproduces_the_modules_greedy_answer(own, tmp_path):
    sft = CoTSFT(pretrained_path=str(own["model"]), lr=1e-2, warmup_steps=0, eval_max_new_tokens=8)
    before = {k: v.clone() for k, v in sft.policy.state_dict().items()}
    _trainer(tmp_path, 2).fit(sft, _dm(own, mode="sft", response_column="worked", verifier="boxed"))
    assert any(not torch.equal(before[k], v) for k, v in sft.policy.state_dict().items())
    sft_dir = sft.export(tmp_path / "sft")
    rl = KimiRL(pretrained_path=str(sft_dir), k=2, max_new_tokens=6, eval_k=2, seed=0)
    rl_dm = _dm(own, mode="rl", verifier="boxed", batch_size=2, rl_steps_per_epoch=2)
    _trainer(tmp_path, 2).fit(rl, rl_dm)
    assert rl.global_step == 2
    out = rl.export(tmp_path / "rl")
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompts = [p.prompt for p in rl_dm.val_problems]
    ours = rl.answer(prompts, max_new_tokens=6)
    assert all(ours)  # the policy says something: the comparison below is about tokens, not empty strings
    for prompt, answer in zip(prompts, ours):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        new = model.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1]:]
        assert tok.decode(new, skip_special_tokens=True) == answer
    ids = [encode_chat_prompt(tok, p) for p in prompts]
    assert generate(model, tok, ids, greedy=True, max_new_tokens=6).texts == ours
    # The export's model card says to use the chat template, and its usage lines give the module's answer.
    card = (out / "README.md").read_text()
    assert "apply_chat_template" in card and "no template" not in card
    namespace = {}
    exec(usage_code(card), namespace)  # noqa: S102 (the card's own lines)
    assert namespace["answer"] == rl.answer(["47+38="], max_new_tokens=6)[0]


# --------------------------------------------------------------------------- the README recipe, as written
REPO = Path(__file__).resolve().parents[2]



def bash_commands(block: str) -> list[list[str]]:
    """The commands of a bash block (continuation lines joined), each split like the shell does."""
    import shlex

    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def run_train_py(args: list[str]):
    """``python train.py ARGS`` in-process (no second interpreter start-up)."""
    import sys

    sys.path.insert(0, str(REPO))
    argv, sys.argv = sys.argv, ["train.py"]
    try:
        import train

        return train.main(args)
    finally:
        sys.argv = argv
        sys.path.remove(str(REPO))


# Appended to each README command: a 2-step run with tiny generation budgets (the README's values are for real
# runs); everything the README line sets stays as it is.
QUICK = ["--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false"]
QUICK_RL = ["--model.init_args.k", "2", "--model.init_args.max_new_tokens", "6", "--data.init_args.batch_size", "2"]


def test_readme_own_problems_recipe_runs_as_written_and_the_export_answers_like_the_module(own, tmp_path,
                                                                                          monkeypatch, capsys):
    blocks = readme_blocks("### Your own problems and your own causal LM")
    (sft_line, rl_line), (usage,) = bash_commands(blocks["bash"][0]), blocks["python"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    import shutil

    shutil.copytree(own["model"], tmp_path / "my_model")
    write_jsonl(tmp_path / "problems.jsonl", addition_rows(40, seed=3))
    assert sft_line[:2] == rl_line[:2] == ["python", "train.py"]
    sft_cli = run_train_py(sft_line[2:] + QUICK)
    assert sft_cli.trainer.global_step == 2 and sft_cli.model.hparams.lora_rank == 8
    assert (tmp_path / "runs/cot_sft_addition/export/adapter_config.json").is_file()  # a peft adapter folder
    rl_cli = run_train_py(rl_line[2:] + QUICK + QUICK_RL)
    module, dm = rl_cli.model, rl_cli.datamodule
    assert module.trainer.global_step == 2 and dm.hparams.verifier == "boxed" and len(dm.val_problems) == 20
    assert module.hparams.lora_rank == 8
    assert module.hparams.pretrained_path == "runs/cot_sft_addition/export"
    capsys.readouterr()
    exec(usage, {})  # noqa: S102 (the README's own lines)
    printed = capsys.readouterr().out
    assert printed == module.answer(["What is 12+30?"], max_new_tokens=64)[0] + "\n"
