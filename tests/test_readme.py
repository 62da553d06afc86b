"""The README's doc-test: every command and code block in README.md runs, as written, in a fresh folder.

* ```bash blocks run in bash (``set -e``) in a workspace holding ``train.py`` and ``configs/`` (so the README's
  relative paths, ``runs/...``, land in the workspace). Each ``python train.py fit|validate --config C`` gets the
  ``# Quick check:`` flags of C's header appended (fewer steps; later flags win), so the commands are the README's
  with a shorter budget. ``pip install`` is not rerun (the test environment is that install).
* ```python blocks run in a fresh interpreter in the same workspace after the commands, with the few literal
  budget changes listed in ``SHORTER`` (each must occur in its block: a README edit cannot silently skip it).
* Inline commands in the prose (`` `python train.py ...` ``) run too, unless they show a syntax with placeholders
  (``CKPT``, ``OUT``, ``DIR``, ``PATH``, ``CLASS``, ...).
* The README's test command is CI's: ``.ci/run`` must contain it verbatim.
* A recipe that needs the user's own files (an image folder, a jsonl of problems, a model folder) is run by the
  test that builds them, named in a ``<!-- doc-test: tests/....py runs this block -->`` line above the block; that
  test reads the block out of README.md.

The fast test checks that each block is one of these kinds and each config has quick flags; the slow test runs
them all (a few minutes)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = 'pip install "torch==2.13.0" -e ".[test]" && python -m pytest && python -m pytest -m slow'

# Budget changes for python blocks: (text in the block, replacement). Nothing else is changed.
SHORTER = [
    ("max_steps=2000", "max_steps=20"),  # "Using a method in your own code": the demo's 2000 steps
]


def code_blocks(text: str = README) -> list[tuple[int, str, str]]:
    """(line number, language, body) of every fenced block; the language is ``run by <test file>`` for a block
    under a ``<!-- doc-test: <test file> runs this block -->`` line (a recipe that needs the user's own files, which
    that test builds)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if match:
            start, lang, body = i + 1, match.group(1), []
            runner = re.match(r"^<!-- doc-test: (\S+) runs this block -->$", lines[i - 1]) if i else None
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((start, f"run by {runner.group(1)}" if runner else lang, "\n".join(body)))
        i += 1
    return blocks


def inline_commands(text: str = README) -> list[str]:
    """Inline code spans in the prose that are runnable commands (no upper-case placeholders)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return [s for s in spans if s.startswith("python ") and not s.startswith("python -m pytest")
            and not re.search(r"\b(CKPT|OUT|OUT_DIR|DIR|PATH|CLASS|NAME|VALUE|FOLDER|N)\b", s)]


def quick_flags(config: str) -> list[str]:
    """The ``# Quick check: FLAGS`` of a config's header."""
    match = re.search(r"^#.*Quick check: (.+)$", (ROOT / config).read_text(), flags=re.M)
    if match is None:
        raise AssertionError(f"{config} has no '# Quick check: FLAGS' line in its header: add the flags that make "
                             "a run of it take seconds (the README doc-test and users use them)")
    return shlex.split(match.group(1))


def shortened(command: str) -> str:
    """A ``python train.py fit|validate --config C ...`` command with C's quick flags appended."""
    match = re.search(r"python train\.py (fit|validate) .*--config (\S+)", command)
    if match is None:
        return command
    flags = " ".join(shlex.quote(f) for f in quick_flags(match.group(2)))
    code, sep, comment = command.partition("  #")  # a trailing comment stays at the end
    return f"{code.rstrip()} {flags}"


def bash_script(body: str) -> str:
    """A README bash block as the doc-test runs it: continuations joined, comments dropped, pip installs skipped,
    train.py runs shortened."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        line = re.sub(r"^pip install [^&]*&&\s*", "", line)
        if line and not line.startswith("#"):
            out.append(shortened(line))
    return "\n".join(out)


def classify(lang: str, body: str) -> str:
    if lang == "bash":
        return "ci" if body.strip() == TEST_COMMAND else "bash"
    if lang == "python":
        return "python"
    if lang in ("", "text") and body.lstrip().startswith("litzoo/"):
        return "layout"
    if lang.startswith("run by "):
        test = ROOT / lang.removeprefix("run by ")
        assert test.is_file() and any(k in test.read_text() for k in ("README.md", "readme_blocks")), \
            f"{test} does not exist or does not read README.md"
        return "own test"
    raise AssertionError(f"README block ```{lang} is of no kind the doc-test runs:\n{body[:200]}")


def test_every_readme_block_is_run_by_the_doc_test_and_every_config_has_quick_flags():
    kinds = [classify(lang, body) for _, lang, body in code_blocks()]
    assert kinds.count("ci") == 1 and TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    for _, lang, body in code_blocks():
        if classify(lang, body) == "bash":
            bash_script(body)  # every config named has quick flags
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        quick_flags(f"configs/{config.name}")
    python = "\n".join(body for _, lang, body in code_blocks() if lang == "python")
    assert kinds.count("own test") >= 1
    for old, _ in SHORTER:
        assert python.count(old) == 1, f"SHORTER's {old!r} is no longer in one README python block: update it"
    commands = inline_commands()
    assert "python train.py --help" in commands and "python -m litzoo.export CKPT OUT" not in commands
    for command in commands:  # each must be a whole command: a bare program name only prints its usage
        assert len(command.split()) > 3 or command.endswith("--help"), f"README's `{command}` is not a whole command"


def test_the_layout_names_files_that_exist():
    (layout,) = [body for _, lang, body in code_blocks() if classify(lang, body) == "layout"]
    folder, missing = None, []
    for line in layout.splitlines()[1:]:
        match = re.match(r"^  (\w+)/\s", line)
        if match:
            folder = match.group(1)
        for name in re.findall(r"\b(\w+\.py)\b", line):
            if not any((ROOT / "litzoo" / sub / name).exists() for sub in (folder or "", "")) \
                    and not (ROOT / name).exists():
                missing.append(f"{folder}/{name}")
    assert not missing, f"README layout names files that do not exist: {missing}"


@pytest.mark.slow
def test_every_readme_command_and_code_block_runs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").symlink_to(ROOT / "train.py")
    (work / "configs").symlink_to(ROOT / "configs")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    blocks = code_blocks()

    def run(args: list[str], what: str, line: int) -> None:
        out = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"README line {line} ({what}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"

    # Commands first (in README order: the recipes' later commands use the earlier ones' outputs), then code.
    for line, lang, body in blocks:
        if classify(lang, body) == "bash":
            run(["bash", "-euo", "pipefail", "-c", bash_script(body)], "bash block", line)
    for command in inline_commands():
        run(["bash", "-euo", "pipefail", "-c", shortened(command)], command, 0)
    for line, lang, body in blocks:
        if classify(lang, body) == "python":
            for old, new in SHORTER:
                body = body.replace(old, new)
            run([sys.executable, "-c", body], "python block", line)
