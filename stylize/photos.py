"""The one content split: style models train on ``train``, scores and reports use ``heldout``.

``../shared/data/content-split.json`` fixes the split of ``data/content/`` (sorted file names,
every 10th — index % 10 == 0 — held out). Any other folder gets the same rule.
"""
from __future__ import annotations

import json
from pathlib import Path

from engine.images import list_images

SPLIT_FILE = "content-split.json"


def content_split(folder: str | Path) -> dict[str, list[Path]]:
    """{"train": [...], "heldout": [...]} image paths of ``folder`` under the fixed split."""
    folder = Path(folder)
    files = list_images(folder)
    spec = folder.parent / SPLIT_FILE
    if folder.is_dir() and spec.is_file():
        try:
            held = set(json.loads(spec.read_text())["heldout"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{spec} is not a valid content split (needs a 'heldout' list)") from None
        return {"train": [f for f in files if f.name not in held],
                "heldout": [f for f in files if f.name in held]}
    names = sorted(files, key=lambda p: p.name)
    held_set = {p for i, p in enumerate(names) if i % 10 == 0} if len(files) >= 10 else set()
    return {"train": [f for f in files if f not in held_set],
            "heldout": [f for f in files if f in held_set]}
