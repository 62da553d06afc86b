"""The README's code blocks, for the tests that run a recipe needing files they build (see tests/test_readme.py)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(heading: str) -> dict[str, list[str]]:
    """The fenced code blocks of a README section (up to the next heading), by language."""
    text = README.read_text()
    start = text.index(heading + "\n")
    end = min([i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if i > 0] + [len(text)])
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks
