"""Verifiable reasoning tasks (arithmetic, maximum gap, combination sum) for a Kimi k1.5-style
long-CoT RL fine-tuner, with its policy I/O (`policy`), generation and token log-probs
(`generation`), partial rollouts (`partial_rollout`), verifier rewards (`rewards`), per-level
meters (`meters`), loss pieces (`losses`), problem sampling (`sampling`) and long2short tools
(`long2short`). No Lightning here.

The char tokenizer lives in :mod:`litzoo.text` (the image models' text encoder uses it too). It
needs `transformers` and the policy/generation/loss/sampling/long2short names need `torch`; they
are imported on first use so the tasks stay importable with the standard library alone.
"""

from litzoo.reasoning.arithmetic import ArithmeticTask
from litzoo.reasoning.base import ANSWER_MARKER, Problem, ReasoningTask
from litzoo.reasoning.combination_sum import CombinationSumTask, combination_sum
from litzoo.reasoning.max_gap import MaxGapTask, max_gap
from litzoo.reasoning.tasks import TASKS, get_task

__all__ = [
    "ANSWER_MARKER",
    "ArithmeticTask",
    "CombinationSumTask",
    "MaxGapTask",
    "Problem",
    "ReasoningTask",
    "TASKS",
    "build_char_tokenizer",
    "check_tokenizer_covers",
    "combination_sum",
    "get_task",
    "max_gap",
]


# Lazily imported names -> their submodule (torch / transformers are loaded on first use).
_LAZY = {
    **dict.fromkeys(("build_char_tokenizer", "check_tokenizer_covers", "CHARS"), "litzoo.text.tokenizer"),
    **dict.fromkeys(("TINY_QWEN2", "build_policy", "save_policy", "encode_prompt", "encode_response"),
                    "litzoo.reasoning.policy"),
    **dict.fromkeys(("Rollout", "generate", "token_log_probs", "left_pad", "right_pad", "position_ids_from_mask"),
                    "litzoo.reasoning.generation"),
    **dict.fromkeys(("PartialResponse", "RolloutGroup", "PartialRolloutBuffer", "continue_responses", "pack_groups"),
                    "litzoo.reasoning.partial_rollout"),
    **dict.fromkeys(("score",), "litzoo.reasoning.rewards"),
    **dict.fromkeys(("LevelMeter", "level_key", "level_keys"), "litzoo.reasoning.meters"),
    **dict.fromkeys(("kimi_policy_loss", "length_penalty", "soft_overlong_punishment", "dpo_loss", "masked_sum"),
                    "litzoo.reasoning.losses"),
    **dict.fromkeys(("PrioritizedSampler", "curriculum_level_weights"), "litzoo.reasoning.sampling"),
    **dict.fromkeys(("merge_models", "merge_policies", "sample_responses", "shortest_correct",
                     "shortest_rejection_sampling", "dpo_pairs", "dpo_train", "sft_train", "sequence_log_probs"),
                    "litzoo.reasoning.long2short"),
}
__all__ += sorted(set(_LAZY) - set(__all__))


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'litzoo.reasoning' has no attribute {name!r}")
