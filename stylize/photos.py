"""The one train / held-out split of a folder of content photos.

Style models train on ``train`` only; scores, reports and figures that say "held-out" use
``heldout`` (issue 34: photos a model saw in training are not held out). The split of a folder
is the ``content-split.json`` beside it (in its parent: ``../shared/data/content-split.json``
splits ``../shared/data/content``) when there is one, else the same fixed rule that wrote that
file: the photos' relative paths sorted, every 10th (index % 10 == 0) held out.
"""
from __future__ import annotations

import json
from pathlib import Path

from engine.images import list_images

SPLIT_FILE = "content-split.json"
HELDOUT_EVERY = 10  # index % HELDOUT_EVERY == 0 is held out
PARTS = ("train", "heldout")


def split_file(folder: str | Path) -> Path | None:
    """The ``content-split.json`` that splits ``folder`` (beside it, in its parent), or None."""
    p = Path(folder)
    if not p.is_dir():
        return None
    f = p.resolve().parent / SPLIT_FILE
    return f if f.is_file() else None


def _relative_names(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) of every image under ``folder``, sorted by that path."""
    return sorted(((f.relative_to(folder).as_posix(), f) for f in list_images(folder)),
                  key=lambda t: t[0])


def rule_split(names: list[str]) -> dict[str, list[str]]:
    """The fixed rule on ``names``: sorted, every ``HELDOUT_EVERY``-th (index 0, 10, ...) held out."""
    ordered = sorted(names)
    return {"train": [n for i, n in enumerate(ordered) if i % HELDOUT_EVERY],
            "heldout": [n for i, n in enumerate(ordered) if i % HELDOUT_EVERY == 0]}


def _read_split(path: Path) -> dict[str, set[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable split file ({exc})") from None
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) and all(isinstance(n, str) for n in data[k])
            for k in PARTS):
        raise ValueError(f"{path} must hold lists of file names under 'train' and 'heldout'")
    train, held = set(data["train"]), set(data["heldout"])
    both = sorted(train & held)
    if both:
        raise ValueError(f"{path} lists {both[0]!r} both as train and as heldout")
    return {"train": train, "heldout": held}


def content_split(folder: str | Path) -> dict[str, list[Path]]:
    """``{"train": [...], "heldout": [...]}``: the image files under ``folder``, sorted.

    With a ``content-split.json`` beside ``folder`` that names any of its photos, the file's
    ``heldout`` list is held out and every other photo is ``train`` (a photo added after the
    split is never a held-out one, so the held-out set stays fixed); names in the file that are
    not in the folder are ignored. Otherwise the fixed rule (``rule_split``) decides."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"content folder {root} does not exist or is not a folder")
    found = _relative_names(root)
    if not found:
        raise ValueError(f"no images found under {root}")
    path = split_file(root)
    listed = _read_split(path) if path is not None else None
    if listed is not None and any(n in listed["train"] or n in listed["heldout"]
                                  for n, _ in found):
        held = listed["heldout"]
    else:  # no split file, or one written for another folder
        held = set(rule_split([n for n, _ in found])["heldout"])
    return {"train": [f for n, f in found if n not in held],
            "heldout": [f for n, f in found if n in held]}


def training_photos(folder: str | Path, use: str = "train") -> tuple[list[Path], dict]:
    """The photos a style model trains on, and what to record about them.

    ``use="train"``: the ``train`` part when ``folder`` has a split file beside it (the held-out
    photos are excluded), else every photo (a user's own folder has no held-out part);
    ``use="all"``: every photo. A single image file trains on itself."""
    if use not in ("train", "all"):
        raise ValueError(f"content split must be 'train' or 'all', got {use!r}")
    root = Path(folder)
    path = split_file(root) if use == "train" else None
    if path is None:
        files = list_images(root)
        return files, {"photos": len(files), "heldout_excluded": 0, "split": None}
    parts = content_split(root)
    return parts["train"], {"photos": len(parts["train"]),
                            "heldout_excluded": len(parts["heldout"]), "split": str(path)}
