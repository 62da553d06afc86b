"""A user's local table of examples (problems, captions): a jsonl file, parquet files, or a ``datasets`` folder.

:func:`load_table` gives a ``datasets.Dataset`` (rows by index, ``column_names``) for

- a ``.jsonl`` file: one JSON object per line (read here, so a bad line is named by its number);
- a ``.parquet`` file or a folder of them: converted once by ``datasets`` into memory-mapped Arrow files in its
  cache (as ``load_dataset("parquet")`` in diffusers' training scripts does), so rows, images included, are read
  from disk when indexed, never all held in memory;
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``: memory-mapped as it is.

``datasets`` is the reader because ``save_to_disk`` is its own format and its ``Image`` feature decodes one row's
image when that row is read. No Lightning here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

TABLE_FORMATS = "a .jsonl file, a .parquet file or folder of them, or a folder written by datasets' save_to_disk"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a jsonl file, one per non-blank line; a line that is not an object is named."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not JSON ({err}); each line must be one JSON object.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {number} is a {type(row).__name__}, not a JSON object "
                                 '(e.g. {"prompt": "...", "answer": "..."}).')
            rows.append(row)
    return rows


def load_table(path: str | os.PathLike, split: str = "train", cache_dir: str | os.PathLike | None = None):
    """A ``datasets.Dataset`` of the table at ``path`` (see the module doc); ``split`` picks the split of a saved
    ``DatasetDict``; ``cache_dir`` is where parquet files are converted (``None``: the ``datasets`` cache)."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise ValueError(f"data path {str(path)!r} does not exist; give {TABLE_FORMATS}.")
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        rows = read_jsonl(path)
        if not rows:
            raise ValueError(f"{path} has no rows.")
        return datasets.Dataset.from_list(rows)
    parquet = [path] if path.is_file() and path.suffix == ".parquet" else sorted(path.glob("*.parquet")) if path.is_dir() else []
    if parquet:
        return datasets.Dataset.from_parquet([str(p) for p in parquet], cache_dir=None if cache_dir is None else str(cache_dir))
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        table = datasets.load_from_disk(str(path))
        if isinstance(table, datasets.DatasetDict):
            if split not in table:
                raise ValueError(f"{path} holds the splits {sorted(table)}, not split={split!r}; choose one of them.")
            table = table[split]
        return table
    raise ValueError(f"data path {str(path)!r} is not {TABLE_FORMATS}.")


def check_columns(table, columns: dict[str, str | None], where: str) -> None:
    """Raise naming the argument, the missing column and the table's columns when a named column is absent."""
    have: Sequence[str] = table.column_names
    for argument, column in columns.items():
        if column is not None and column not in have:
            raise ValueError(f"{argument}={column!r} is not a column of {where}; its columns are {list(have)}. "
                             f"Set {argument} to one of them.")
