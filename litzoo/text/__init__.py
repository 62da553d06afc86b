"""Text helpers shared by several packages (no Lightning): the character-level tokenizer that the reasoning
tasks and the rectified-flow text encoder both build on."""

from litzoo.text.tokenizer import (CHARS, SPECIAL_TOKENS, build_char_tokenizer, build_prompt_tokenizer,
                                   check_tokenizer_covers)

__all__ = ["CHARS", "SPECIAL_TOKENS", "build_char_tokenizer", "build_prompt_tokenizer", "check_tokenizer_covers"]
