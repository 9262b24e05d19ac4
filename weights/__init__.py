"""Shipped model weights and sample images, described by ``manifest.json``.

Each manifest entry names a file in this folder with its kind (``stylize`` or ``classify``),
sha256, and how it was made (command, data, steps or epochs, seed, final figures).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = WEIGHTS_DIR / "manifest.json"
SAMPLES_DIR = WEIGHTS_DIR / "samples"


def manifest() -> dict[str, dict]:
    """All manifest entries by model name (empty when nothing is shipped)."""
    if not MANIFEST_PATH.exists():
        return {}
    return json.loads(MANIFEST_PATH.read_text())["models"]


def names(kind: str | None = None) -> list[str]:
    """Shipped model names, optionally only those of one kind (``stylize``/``classify``)."""
    return sorted(n for n, e in manifest().items() if kind is None or e.get("kind") == kind)


def path(name: str, kind: str | None = None) -> Path:
    """Path of a shipped model's file; ``ValueError`` listing the known names otherwise."""
    entries = manifest()
    entry = entries.get(name)
    if entry is None or (kind is not None and entry.get("kind") != kind):
        known = ", ".join(names(kind)) or "none"
        raise ValueError(f"no shipped {kind + ' ' if kind else ''}model named {name!r}; "
                         f"shipped: {known}")
    return WEIGHTS_DIR / entry["file"]


def sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
