"""Reports and README results sections rendered from ``results.json`` alone (no training, no
models): ``rerender(folder)`` rebuilds a report's README.md; ``results_block(name, data)`` is the
one function behind every number README.md and reports/README.md quote from a report, placed
between ``<!-- results:NAME -->`` and ``<!-- /results -->``; ``update_markers`` refills them.

``python -m experiments.reproduce.render`` re-renders ``reports/*/README.md`` and both READMEs'
results sections; ``--check`` writes nothing and exits 1 when committed text and results disagree.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from engine.io import write_text_atomic

from . import bin_cifar, divergence, ibn_shift, new_style, pacs, strokes, style_curves
from .report import Report

ROOT = Path(__file__).resolve().parents[2]
# report name (results.json "name") -> its writer module: TITLE, intro(data), render(rep, data),
# findings(data)
WRITERS = {"bin-cifar": bin_cifar, "ibn-shift": ibn_shift, "pacs": pacs, "divergence": divergence,
           "style-curves": style_curves, "new-style": new_style, "strokes": strokes}
# ``<!-- results:NAME -->`` all findings lines, ``<!-- results:NAME:K -->`` the first K
MARKER = re.compile(r"(<!-- results:([\w-]+)(?::(\d+))? -->\n)(.*?)(<!-- /results -->)", re.S)
# the files whose results sections are rendered (relative to the project root)
RESULT_TEXTS = ("README.md", "reports/README.md", "docs/*.md")


def load(folder: str | Path) -> dict:
    """A report folder's results.json."""
    p = Path(folder) / "results.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p} not found: is {folder} a report folder?") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON ({exc})") from None


def writer(name: str):
    """The report writer module of report ``name``."""
    if name not in WRITERS:
        raise ValueError(f"no report writer for {name!r}; known: {', '.join(WRITERS)}")
    return WRITERS[name]


def render_report(data: dict, out: Path) -> tuple[str, dict]:
    """(README text, updated results) of a report from its results ``data``; writes nothing.
    Derived entries (gaps, summaries) are recomputed, measured ones are kept as recorded."""
    data = json.loads(json.dumps(data))  # a copy the writer may update
    mod = writer(str(data.get("name")))
    meta = data.get("report")
    if not meta:
        raise ValueError(f"{data['name']}: results.json has no 'report' entry (setup lines, "
                         "figure captions): written before reports could be re-rendered")
    rep = Report(data["name"], mod.TITLE, Path(out), data["budget"], intro=mod.intro(data),
                 setup=list(meta["setup"]), figures=list(zip(data["figures"], meta["captions"])),
                 commands=list(data["commands"]), data=data, train_seconds=data.get("train_s"),
                 wall_s=data["wall_s"], finished=meta["finished"],
                 environment=data["environment"])
    mod.render(rep, data)
    return rep.markdown(), rep.payload()


def rerender(folder: str | Path) -> Path:
    """Rewrite ``folder``'s README.md (and results.json's derived entries) from results.json."""
    folder = Path(folder)
    text, payload = render_report(load(folder), folder)
    write_text_atomic(folder / "results.json", json.dumps(payload, indent=1) + "\n")
    write_text_atomic(folder / "README.md", text)
    return folder / "README.md"


def results_block(name: str, data: dict, lines: int | None = None) -> str:
    """The Markdown a README shows for report ``name``: its findings lines from ``data`` (the
    first ``lines`` of them when given; a line's indented continuation lines come with it)."""
    found = writer(name).findings(data)
    if lines is not None:
        starts = [i for i, ln in enumerate(found) if not ln.startswith(" ")]
        found = found[:starts[lines]] if lines < len(starts) else found
    return "\n".join(found) + "\n"


def update_markers(text: str, reports: Path) -> str:
    """``text`` with every ``<!-- results:NAME -->…<!-- /results -->`` block refilled from
    ``reports/NAME/results.json``."""
    cache: dict[str, dict] = {}

    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in cache:
            cache[name] = load(reports / name)
        k = int(m.group(3)) if m.group(3) else None
        return m.group(1) + results_block(name, cache[name], k) + m.group(5)

    return MARKER.sub(fill, text)


def result_texts(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose ``<!-- results:… -->`` sections ``update_markers`` fills."""
    return [p for pattern in RESULT_TEXTS for p in sorted(root.glob(pattern))]


def main(argv: list[str] | None = None) -> int:
    """Re-render every committed report and README results section; ``--check``: only compare."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale = []
    for folder in sorted((ROOT / "reports").glob("*/results.json")):
        folder = folder.parent
        text, payload = render_report(load(folder), folder)
        if (folder / "README.md").read_text(encoding="utf-8") != text:
            stale.append(folder / "README.md")
            if not check:
                write_text_atomic(folder / "results.json", json.dumps(payload, indent=1) + "\n")
                write_text_atomic(folder / "README.md", text)
    for readme in result_texts():
        old = readme.read_text(encoding="utf-8")
        new = update_markers(old, ROOT / "reports")
        if new != old:
            stale.append(readme)
            if not check:
                write_text_atomic(readme, new)
    for p in stale:
        print(f"{'out of date' if check else 'rewrote'}: {p.relative_to(ROOT)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
