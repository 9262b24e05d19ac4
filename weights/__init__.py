"""Shipped model weights and sample images, described by ``manifest.json``.

Each manifest entry names a file in this folder with its kind (``stylize`` or ``classify``),
sha256, and how it was made (command, data, steps or epochs, seed, final figures).
"""
from __future__ import annotations

import builtins
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


KIND_WORDS = {"stylize": "style model", "classify": "classifier", "decoder": "style decoder"}


def list(kind: str) -> "builtins.list[str]":  # noqa: A001 - weights.list(kind), as in torch.hub
    """Names of the shipped models of one kind (``stylize`` / ``classify``), sorted."""
    if kind not in KIND_WORDS:
        raise ValueError(f"unknown model kind {kind!r}; kinds: {', '.join(KIND_WORDS)}")
    return names(kind)


def resolve(spec: str | Path, kind: str) -> Path:
    """The file behind a model spec of ``kind``: a shipped name (``weights/manifest.json``) or an
    existing file. One-line ``ValueError`` otherwise: a shipped model of the other kind is named
    as such, a folder is not a model file, and an unknown name lists the shipped ones."""
    shipped = list(kind)  # also checks ``kind``
    s = str(spec)
    if s in shipped:
        return path(s, kind)
    p = Path(s).expanduser()
    if p.is_file():
        return p
    what, known = KIND_WORDS[kind], ", ".join(shipped) or "none"
    other = next((k for k in KIND_WORDS if k != kind and s in names(k)), None)
    if other is not None:
        raise ValueError(f"{s} is a shipped {KIND_WORDS[other]}, not a {what} "
                         f"(shipped {what}s: {known})")
    if p.is_dir():
        raise ValueError(f"{s} is a folder, not a model file")
    raise ValueError(f"no {what} {s!r}: give a shipped name ({known}) or a model file")


def sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


ENCODER_FILE = "vgg19_normalised_relu3_1.pth"


def encoder_search_path() -> "builtins.list[Path]":
    """Where the normalised VGG-19 encoder (the loss network and the arbitrary-style encoder; not
    shipped) is looked for when no path is given: ``$NORMLAB_VGG_WEIGHTS``,
    ``~/.cache/normlab/weights/``, ``$NORMLAB_SHARED/weights/`` and ``../shared/weights/`` beside
    a source checkout (the layout this project develops in)."""
    import os

    paths = []
    if os.environ.get("NORMLAB_VGG_WEIGHTS"):
        paths.append(Path(os.environ["NORMLAB_VGG_WEIGHTS"]).expanduser())
    paths.append(Path.home() / ".cache" / "normlab" / "weights" / ENCODER_FILE)
    if os.environ.get("NORMLAB_SHARED"):
        paths.append(Path(os.environ["NORMLAB_SHARED"]) / "weights" / ENCODER_FILE)
    paths.append(WEIGHTS_DIR.parent.parent / "shared" / "weights" / ENCODER_FILE)
    return paths


def find_encoder_file() -> Path | None:
    """The first existing file of ``encoder_search_path``, or None."""
    return next((p for p in encoder_search_path() if p.is_file()), None)
