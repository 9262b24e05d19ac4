"""A reproduction's self-contained Markdown report: ``README.md`` with setup, tables (mean ± sd
over seeds, n stated, a noise verdict for every gap), figures (PNG beside it), the exact commands
and the wall time, plus ``results.json`` with every number. All files are written atomically."""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.io import atomic_path, write_text_atomic

from .stats import Gap, fmt_p, holm, paired, summarize, welch


def _finite(v: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def shown_path(path: str | Path) -> str:
    """A path as a report shows it: relative to the working directory or the project when
    inside them (a committed report must not carry one machine's absolute paths)."""
    p = Path(path).resolve()
    for root in (Path.cwd().resolve(), Path(__file__).resolve().parents[2]):
        if p.is_relative_to(root):
            return p.relative_to(root).as_posix()
    return str(path)


def grouped_bars(rows: Sequence[str], cols: Sequence[str], vals: Mapping, *, ylabel: str,
                 title: str, zero_line: bool = False):
    """One bar per (row, column) — mean with ± sd error bars over seeds, n in the legend —
    grouped by column: the figure every table of this package gets."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(cols) + 2), 3.4))
    w = 0.8 / len(rows)
    xs = np.arange(len(cols))
    for i, r in enumerate(rows):
        s = [summarize(vals.get((r, c), [])) for c in cols]
        ax.bar(xs + (i - (len(rows) - 1) / 2) * w, [x.mean for x in s], w,
               yerr=[x.sd for x in s], capsize=2, label=f"{r} (n={s[0].n})")
    ax.set_xticks(xs, cols, fontsize=8)
    ax.set_ylabel(ylabel)
    if zero_line:
        ax.axhline(0, color="k", lw=0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def mean_sd_table(row_label: str, rows: Sequence[str], cols: Sequence[str],
                  values: Mapping[tuple[str, str], Sequence[float]], digits: int = 2) -> str:
    """Markdown table: one row per ``rows``, one column per ``cols``, cells ``mean ± sd`` over the
    values of (row, col); an ``n`` column gives the number of seeds (a range when it varies)."""
    head = f"| {row_label} | n | " + " | ".join(cols) + " |"
    out = [head, "|---|---:|" + "---:|" * len(cols)]
    for r in rows:
        ns = sorted({summarize(values.get((r, c), [])).n for c in cols})
        n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        cells = [summarize(values.get((r, c), [])).fmt(digits) for c in cols]
        out.append(f"| {r} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def gap_tests(baseline: str, rows: Sequence[str], cols: Sequence[str],
              values: Mapping[tuple[str, str], Sequence[float]],
              pair: bool = False) -> list[tuple[str, Gap]]:
    """(column, gap to ``baseline``) for every row ≠ ``baseline`` and column, the tests forming
    one family (Holm–Bonferroni). ``pair``: every row's values are listed in the same seed order
    and the runs share seed and batch order, so the test is paired by seed (else Welch's)."""
    found: list[tuple[str, Gap]] = []
    for c in cols:
        base = values.get((baseline, c), [])
        if not base:
            continue
        for r in rows:
            v = values.get((r, c), [])
            if r == baseline or not v:
                continue
            test = paired if pair and len(v) == len(base) else welch
            found.append((c, test(v, base, r, baseline)))
    return list(zip([c for c, _ in found], holm([g for _, g in found])))


def noise_lines(baseline: str, rows: Sequence[str], cols: Sequence[str],
                values: Mapping[tuple[str, str], Sequence[float]],
                unit: str = " points", pair: bool = False) -> tuple[list[str], list[Gap]]:
    """``gap_tests`` as report lines (raw and Holm-adjusted p in each) and the gaps."""
    found = gap_tests(baseline, rows, cols, values, pair)
    return [f"- {c}: {g.sentence(unit)}" for c, g in found], [g for _, g in found]


def keyed(table: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """results.json's ``{"row | column": v}`` back to ``{(row, column): v}``."""
    return {tuple(k.split(" | ", 1)): v for k, v in table.items()}  # type: ignore[misc]


def ranking(rows: Sequence[str], col: str, values: Mapping[tuple[str, str], Sequence[float]],
            digits: int = 2, names: Mapping[str, str] | None = None) -> str:
    """``IBN-a 84.22 ± 0.05, BIN 84.20 ± 0.22, ...``: the rows by mean of ``col``, highest
    first."""
    s = [(r, summarize(values.get((r, col), []))) for r in rows]
    s = [x for x in s if x[1].n]
    s.sort(key=lambda x: -x[1].mean)
    return ", ".join(f"{(names or {}).get(r, r)} {x.fmt(digits)}" for r, x in s)


def p_brief(g: Gap) -> str:
    """``p = 0.013, Holm 0.039`` (raw and family-adjusted p), or ``n too small for a test``."""
    if g.test == "none":
        return "n too small for a test"
    adj = "" if math.isnan(g.p_adj) else f", Holm {fmt_p(g.p_adj).replace('p = ', '').replace('p ', '')}"
    return f"{fmt_p(g.p)}{adj}"


def gap_brief(g: Gap, digits: int = 2) -> str:
    """``bin +0.72 (p = 0.013, Holm 0.039: larger than the noise)`` for findings lines."""
    d = f"{g.a} {g.diff:+.{digits}f}"
    if g.test == "none":
        return f"{d} (n too small for a test)"
    return f"{d} ({p_brief(g)}: {'inside the noise' if g.in_noise else 'larger than the noise'})"


def verdict_line(claim: str, checks: Sequence[tuple[Gap, int]], why: str,
                 comparable: str | None = None) -> str:
    """One findings line saying whether ``claim`` held here: ``checks`` are (gap, the sign the
    claim predicts for ``gap.diff``) from the report's own Holm families. reproduced = every
    check in the claim's direction and larger than the noise; partially = some support and
    nothing larger than the noise against it (or mixed); contradicted = something larger than
    the noise against it and nothing for it; in the claim's direction, inside the noise = no
    check larger than the noise but every one pointing its way; not reproduced = no check
    larger than the noise and some pointing the other way; not comparable = no test possible (n too small) or ``comparable`` (the reason
    the paper's setting differs in kind). ``why``: scale, architecture, data behind the
    difference to the paper."""
    tested = [(g, s) for g, s in checks if g.test != "none"]
    sup = sum(1 for g, s in tested if not g.in_noise and g.diff * s > 0)
    against = sum(1 for g, s in tested if not g.in_noise and g.diff * s < 0)
    direction = sum(1 for g, s in tested if g.in_noise and g.diff * s > 0)
    n = len(tested)
    if comparable:
        word = f"not comparable ({comparable})"
    elif not n:
        word = "not comparable (n too small for a test)"
    elif sup == n:
        word = "reproduced"
    elif sup and against:
        word = "partially reproduced, partly contradicted"
    elif sup:
        word = "partially reproduced"
    elif against:
        word = "contradicted"
    elif direction == n:
        word = "in the claim's direction, inside the noise"
    else:
        word = "not reproduced (inside the noise)"
    counts = (f"{sup} of {n} comparisons in the claim's direction and larger than the noise, "
              f"{direction} in its direction inside the noise, {against} against it larger "
              "than the noise")
    return f"- **Verdict: {word}.** {claim}: {counts}. {why}"


TESTS_NOTE = ("one family per list: inside the noise = Holm–Bonferroni-adjusted p ≥ 0.05 over "
              "the list's tests (raw p shown beside it); n too small for a test = fewer than two "
              "values on a side")


@dataclass
class Report:
    """Builder of ``out/README.md`` + PNGs + ``results.json``."""

    name: str
    title: str
    out: Path
    budget: str
    intro: str = ""
    setup: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None  # summed training time of the runs, reused ones included
    started: float = field(default_factory=time.time)
    # set when re-rendering from results.json: the report's own wall time, end and machine
    wall_s: float | None = None
    finished: str | None = None
    environment: str | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def section(self, markdown: str) -> None:
        """Append Markdown to the results section."""
        self.results.append(markdown.rstrip())

    def figure(self, fig, filename: str, caption: str) -> Path:
        """Save a matplotlib figure as ``out/filename`` (PNG) and list it under Figures."""
        import matplotlib.pyplot as plt

        path = self.out / filename
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        self.figures.append((filename, caption))
        return path

    def add_png(self, filename: str, caption: str) -> None:
        """List an already written PNG in ``out`` under Figures."""
        self.figures.append((filename, caption))

    def write(self) -> Path:
        """Write README.md and results.json; returns the README path. results.json carries the
        setup lines and figure captions too, so ``render.rerender`` rebuilds the README from it
        alone."""
        if self.wall_s is None:
            self.wall_s = round(time.time() - self.started, 1)
        self.environment = self.environment or _environment()
        self.finished = self.finished or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
        readme = self.out / "README.md"
        write_text_atomic(self.out / "results.json", json.dumps(self.payload(), indent=1) + "\n")
        write_text_atomic(readme, self.markdown())
        return readme

    def markdown(self) -> str:
        """The README text (``write`` or ``render.rerender`` set wall time, end and machine)."""
        wall = self.wall_s or 0.0
        runs = ("" if self.train_seconds is None else
                f" The training runs behind it took {self.train_seconds / 3600:.2f} h in all "
                f"({self.train_seconds:.0f} s, summed over runs, including runs trained by an "
                "earlier report or session and reused here).")
        md = [f"# {self.title}", ""]
        if self.intro:
            md += [self.intro.strip(), ""]
        md += ["## Setup", "", f"- **budget: `{self.budget}`**"] + [f"- {s}" for s in self.setup]
        md += ["", "## Results", ""]
        for block in self.results:
            md += [block, ""]
        md += ["## Figures", ""]
        for fn, cap in self.figures:
            md += [f"![{cap}]({fn})", "", f"*{cap}*", ""]
        if not self.figures:
            md += ["(none)", ""]
        md += ["## Reproduce", "", "```bash"] + self.commands + ["```", ""]
        md += ["## Wall time", "",
               f"{wall / 60:.1f} min ({wall:.0f} s) for this report, including any training it "
               f"ran (finished runs are reused, not retrained). Finished "
               f"{self.finished}; {self.environment}.{runs}", ""]
        return "\n".join(md)

    def payload(self) -> dict[str, Any]:
        """results.json: every number, plus the text ``render.rerender`` needs."""
        out = {"name": self.name, "budget": self.budget, "wall_s": self.wall_s,
               "commands": self.commands, "figures": [f for f, _ in self.figures],
               "environment": self.environment, "train_s": self.train_seconds}
        out.update({k: v for k, v in self.data.items() if k not in out and k != "report"})
        out["report"] = {"setup": self.setup, "captions": [c for _, c in self.figures],
                         "finished": self.finished}
        return _finite(out)


def _environment() -> str:
    import torch

    return (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"
            f", {platform.processor() or platform.machine()}")
