"""Tests for litzoo/text/tokenizer.py."""

import random

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from litzoo.reasoning import ArithmeticTask, CombinationSumTask, MaxGapTask
from litzoo.text.tokenizer import CHARS, build_char_tokenizer, check_tokenizer_covers


def task_texts():
    """Prompts, clean and corrected traces and direct answers of every task and level."""
    rng = random.Random(0)
    texts = []
    for task in (ArithmeticTask("+-*"), MaxGapTask(), CombinationSumTask(True), CombinationSumTask(False)):
        for d in task.difficulties:
            for _ in range(20):
                p = task.generate(d, rng)
                texts += [
                    p.prompt + task.write_trace(p, rng),
                    p.prompt + task.write_trace(p, rng, p_mistake=1.0),
                    p.prompt + task.write_direct(p),
                ]
    return texts


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_one_token_per_character_and_exact_round_trip_of_task_text(tok):
    texts = task_texts()
    assert any(" " in t for t in texts) and any("\n" in t for t in texts)
    check_tokenizer_covers(tok, texts)
    for text in texts:
        ids = tok.encode(text)
        assert len(ids) == len(text)  # no bos/eos added, no merges
        assert ids == [tok.convert_tokens_to_ids(ch) for ch in text]
        assert tok.decode(ids) == text


def test_round_trip_keeps_runs_of_spaces_newlines_and_punctuation(tok):
    for text in ["  a  b \n\n c\n ", " ", "\n", "x .", "a , b ; c", "12+34=\n#46", CHARS]:
        assert tok.decode(tok.encode(text)) == text


def test_special_tokens_have_fixed_ids_and_are_skippable(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) == 4 + len(CHARS)
    ids = [tok.bos_token_id] + tok.encode("7+8=") + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "7+8="
    batch = tok(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][2:] == [0, 0] and batch["attention_mask"][0] == [1, 1, 0, 0]


def test_unknown_characters_map_to_unk_and_extra_chars_add_them(tok):
    assert tok.encode("A") == [tok.unk_token_id]
    big = build_char_tokenizer(extra_chars="AB\t")
    assert len(big) == len(tok) + 3
    assert big.encode("a") == tok.encode("a")  # extra chars come after the base alphabet
    assert big.decode(big.encode("A\tB a")) == "A\tB a" and big.unk_token_id not in big.encode("A\tB")


def test_save_and_autotokenizer_load_give_identical_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = task_texts()[:60] + ["  a \n\n b  "]
    for text in texts:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    specials = (loaded.pad_token, loaded.bos_token, loaded.eos_token, loaded.unk_token)
    assert specials == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert loaded.get_vocab() == tok.get_vocab()


def test_missing_characters_error_names_exactly_those_characters(tok):
    with pytest.raises(ValueError) as info:
        check_tokenizer_covers(tok, ["12+34=\n#46", "Héllo\tworld"])
    msg = str(info.value)
    assert "3 character(s)" in msg
    for ch in ("'H'", "'é'", "'\\t'"):
        assert ch in msg
    assert "'l'" not in msg and "'1'" not in msg


def test_check_flags_characters_a_tokenizer_normalizes_away():
    # A tokenizer that knows every character but rewrites newlines to spaces would silently
    # flatten the traces; the check must name the newline.
    vocab = {"<unk>": 0, **{ch: i + 1 for i, ch in enumerate(CHARS)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.normalizer = normalizers.Replace("\n", " ")
    backend.decoder = decoders.Fuse()
    flat = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(ValueError, match=r"1 character\(s\).*'\\n'"):
        check_tokenizer_covers(flat, ["47+38=\n#85"])
    check_tokenizer_covers(flat, ["47+38= #85"])  # no newline: covered


def test_bad_extra_chars_argument_raises():
    with pytest.raises(ValueError, match="extra_chars"):
        build_char_tokenizer(extra_chars=["A"])
