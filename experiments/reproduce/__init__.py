"""``normlab reproduce NAME``: the papers' findings, one command each, at a chosen budget.

- ``bin-cifar``: BIN paper (Nam & Kim 2018) Table 1 / Fig. 1 / Fig. 2 on CIFAR-10.
- ``ibn-shift``: IBN-Net (Pan et al. 2018) Table 1 appearance shifts, plus a style shift.
- ``pacs``: leave-one-domain-out on PACS, all four held-out domains.
- ``divergence``: IBN-Net Fig. 3, feature divergence by depth (appearance vs content).
- ``style-curves``: BIN paper Fig. 3 (loss curves) and Fig. 6 (gate histogram) in style transfer.
- ``new-style``: Dumoulin et al. 2017, a new style by norm-only fine-tuning vs from scratch.
- ``strokes``: the multi-scale style loss against the single-scale one (stroke size).

Each writes ``README.md`` + PNGs + ``results.json`` into its report folder; training runs live in
``runs`` (default ``runs/reproduce``) and are reused across reproductions and re-runs; the
classifier reproductions also take a ``ledger`` file that keeps finished runs' results (and what
the reports measured on their models) where ``runs`` does not survive, and ``seeds`` for more
seeds where a claim needs the power.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import bin_cifar, divergence, ibn_shift, new_style, pacs, strokes, style_curves
from .budgets import BUDGETS, check_budget

# name -> (module with TITLE and run(ctx) -> Path, one-line summary); cli/reproduce.py repeats
# the summaries so that its help does not import this package (and torch).
REPRODUCTIONS = {
    "bin-cifar": (bin_cifar, "BIN paper Table 1 / Fig. 1 / Fig. 2 on CIFAR-10 ResNets (bn, in, "
                             "bn_in, bin, ibn_a)"),
    "ibn-shift": (ibn_shift, "IBN-Net Table 1 appearance shifts (RGB+50, R+50, contrast ×1.5) "
                             "+ a style shift"),
    "pacs": (pacs, "PACS leave-one-domain-out, all four held-out domains, bn, ibn_a, ibn_b, bin"),
    "divergence": (divergence, "IBN-Net feature divergence by depth (appearance vs content)"),
    "style-curves": (style_curves, "BIN paper Fig. 3 loss curves (in, bn, bn_in, bin) and "
                                   "Fig. 6 gates"),
    "new-style": (new_style, "new style by norm-only fine-tuning vs from scratch, at 5, 10 and "
                             "15 CPU-minutes"),
    "strokes": (strokes, "bigger strokes: multi-scale style loss vs single-scale at the same "
                         "CPU time"),
}


@dataclass
class Context:
    """Everything a reproduction needs from the caller."""

    budget: str
    out: Path
    runs: Path = Path("runs/reproduce")
    data: str | None = None
    jobs: int = 1
    # a JSON file recording every finished run's result and what the reports measured on its
    # model (see sweep.Ledger): commit it, and a grid longer than one session resumes on a
    # fresh checkout without runs/
    ledger: Path | None = None
    # --seeds: N, or VARIANT=N,... (budgets.seeds_by_variant); None = the budget's seeds
    seeds: str | None = None
    device: str = "auto"
    download: bool = False
    compile: bool = False  # torch.compile the classifiers (pays off for long GPU runs)
    command: str = ""
    # the stylize model a reproduction uses (ibn-shift / divergence: as a shift; new-style /
    # strokes: as the base); None: the reproduction's own STYLE_MODEL
    style_model: str | None = None
    style_image: str | None = None  # style-curves, strokes (new-style: comma-separated)
    vgg_weights: str | None = None  # style-curves
    encoder: Any = None  # style-curves test hook: a loss network instead of VGG weights


def list_reproductions() -> dict[str, str]:
    """{name: one-line summary}."""
    return {n: summary for n, (_, summary) in REPRODUCTIONS.items()}


def reproduce(name: str, ctx: Context) -> Path:
    """Run reproduction ``name`` at ``ctx.budget``; returns the report's README.md path."""
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(REPRODUCTIONS)}")
    check_budget(ctx.budget)
    ctx.out, ctx.runs = Path(ctx.out), Path(ctx.runs)
    if ctx.jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {ctx.jobs}")
    mod = REPRODUCTIONS[name][0]
    _check_ledger(name, mod, ctx)
    _default_style_model(mod, ctx)
    if ctx.seeds is not None and not hasattr(mod, "grid"):
        with_grid = [n for n, (m, _) in REPRODUCTIONS.items() if hasattr(m, "grid")]
        raise ValueError(f"{name} has no grid of training runs to add seeds to; --seeds works "
                         f"for {', '.join(with_grid)}")
    return mod.run(ctx)


def _default_style_model(mod: ModuleType, ctx: Context) -> None:
    if ctx.style_model is None:
        ctx.style_model = getattr(mod, "STYLE_MODEL", None)


def _check_ledger(name: str, mod: ModuleType, ctx: Context) -> None:
    if ctx.ledger is None:
        return
    ctx.ledger = Path(ctx.ledger)
    if not getattr(mod, "TAKES_LEDGER", False):
        takes = [n for n, (m, _) in REPRODUCTIONS.items() if getattr(m, "TAKES_LEDGER", False)]
        raise ValueError(f"{name} trains its style networks inside the report, so there are no "
                         f"runs to record; --ledger works for {', '.join(takes)}")


def run_status(name: str, ctx: Context) -> str:
    """Where the training runs of reproduction ``name`` stand at ``ctx.budget`` (Markdown);
    trains nothing. Only the classifier reproductions have a grid of resumable runs."""
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(REPRODUCTIONS)}")
    check_budget(ctx.budget)
    ctx.runs = Path(ctx.runs)
    mod = REPRODUCTIONS[name][0]
    if not hasattr(mod, "grid"):
        with_grid = [n for n, (m, _) in REPRODUCTIONS.items() if hasattr(m, "grid")]
        raise ValueError(f"{name} trains its style networks inside the report, so it has no run "
                         f"grid to show; --status works for {', '.join(with_grid)}")
    from .sweep import Ledger, status_table

    _check_ledger(name, mod, ctx)
    _default_style_model(mod, ctx)
    needs = mod.needs(ctx) if hasattr(mod, "needs") else ()
    return status_table(mod.grid(ctx), Ledger(ctx.ledger) if ctx.ledger else None, needs)


__all__ = ["BUDGETS", "Context", "REPRODUCTIONS", "list_reproductions", "reproduce", "run_status"]
