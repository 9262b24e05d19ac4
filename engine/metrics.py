"""The one reader of a run's ``metrics.jsonl`` (written by ``engine.hooks.MetricsWriter``): the
trainer trims it on resume, and the sweeps, curves and reports read it back through here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


def read_metrics(path: str | Path, upto: int | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, or of the one in a run folder (with ``step`` ≤
    ``upto`` when given). The first line that is not a whole JSON object (cut by a crash,
    damaged, not UTF-8) ends the list; a missing file is an empty list."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        return []
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            break
        if not isinstance(rec, dict):
            break
        step = rec.get("step", 0)
        if upto is not None and not (isinstance(step, (int, float)) and step <= upto):
            continue
        out.append(rec)
    return out
