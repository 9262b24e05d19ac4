"""The one reader of a run's ``metrics.jsonl`` (written by ``engine.hooks.MetricsWriter``): the
trainer trims it on resume, and the sweeps, curves and reports read it back through here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


def read_metrics(path: str | Path, upto: int | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, or of the one in a run folder (with ``step`` ≤
    ``upto`` when given); a missing file is an empty list. A last line cut by a crash ends the
    list; a damaged line before others (not UTF-8, not JSON, not a record, a step that is not a
    number) is a one-line ``ValueError`` naming the file and line, never dropped silently (a
    resume would otherwise rewrite the file without it)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        return []
    out = []
    lines = path.read_bytes().splitlines()
    for i, raw in enumerate(lines, 1):
        try:
            rec = json.loads(raw.decode("utf-8"))
            why = None if isinstance(rec, dict) else f"a JSON {type(rec).__name__}, not a record"
            step = rec.get("step", 0) if why is None else 0
            if why is None and (isinstance(step, bool) or not isinstance(step, (int, float))):
                why = f"its step is {str(step)[:40]!r}, not a number"
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            if i == len(lines):
                break  # the last line, cut by a crash
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        if why is not None:
            raise ValueError(f"{path} line {i} is damaged ({why}); repair or delete that line "
                             "to go on")
        if upto is None or step <= upto:
            out.append(rec)
    return out
