"""IBN-Net (Pan et al. 2018) Fig. 3: feature divergence by depth. Appearance: the same images
clean vs re-rendered by a style model (IBN-Net: Cityscapes vs GTA5). Content: two disjoint halves
of the classes (IBN-Net: two halves of the ImageNet classes). The paper's finding: appearance
divergence is large in shallow layers and falls with depth, content divergence grows with depth,
and IN layers (IBN-a) lower the appearance divergence."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .bin_cifar import cifar_grid, sweep_command
from .budgets import CIFAR, cifar_data
from .report import Report, mean_sd_table, noise_lines
from .stats import summarize
from .sweep import RunSpec, run_sweep

TITLE = "IBN-Net Fig. 3 on CIFAR-10: feature divergence by depth (appearance vs content)"
VARIANTS = ("bn", "ibn_a", "ibn_b", "bin")


def class_halves(ds):
    """The images of the first half of the classes and of the second half (content domains)."""
    from classify.data import TensorDataset

    k = len(ds.classes) // 2
    lo, hi = ds.y < k, ds.y >= k
    return (TensorDataset(ds.x[lo], ds.y[lo], ds.classes, f"{ds.name}[classes<{k}]"),
            TensorDataset(ds.x[hi], ds.y[hi], ds.classes, f"{ds.name}[classes≥{k}]"))


def depth_figure(layers: Sequence[str], curves: dict, title: str):
    """D(μ) by depth per model, mean over seeds with the seeds' range as a band; one panel
    per domain pair."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(p for p, _ in curves))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 3.4), squeeze=False)
    for ax, p in zip(axes[0], pairs):
        for (pp, m), runs in curves.items():
            if pp != p:
                continue
            a = np.array(runs)  # seeds × layers
            mu = a.mean(0)
            xs = np.arange(len(mu))
            ax.plot(xs, mu, "o-", ms=3, lw=1.2, label=f"{m} (n={len(a)})")
            # the band is the range over seeds: mean − sd is often ≤ 0 on this log scale
            ax.fill_between(xs, a.min(0), a.max(0), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("feature divergence D(μ) (sym. KL)", fontsize=8)
        ax.set_title(p, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def grid(ctx) -> list[RunSpec]:
    """The training runs this reproduction needs at ``ctx.budget`` (shared with bin-cifar)."""
    return cifar_grid(ctx, VARIANTS, [CIFAR[ctx.budget].depths[0]])


def run(ctx) -> Path:
    import experiments  # noqa: F401  (registers the style:MODEL shift renderer)
    from classify.analysis import (divergence_figure, eval_sets, feature_divergence, shifted)
    from classify.checkpoint import load_classifier
    from engine.devices import resolve_device

    b = CIFAR[ctx.budget]
    depth = b.depths[0]
    results = run_sweep(grid(ctx), ctx.jobs)
    dev = str(resolve_device(ctx.device))
    rep = Report("divergence", TITLE, ctx.out, ctx.budget, intro=(
        "IBN-Net (Fig. 3) measures how far apart two domains' features are at each depth. "
        "Appearance differences (same content, different look) cause a divergence that is "
        "large in shallow layers and falls with depth; content differences (different classes) "
        "cause one that grows with depth; instance normalisation in the shallow layers (IBN-a) "
        "lowers the appearance divergence. That is why IBN-Net puts IN only in the shallow "
        "layers."))
    clf0 = load_classifier(str(results[0].model), dev)
    test = next(iter(eval_sets(clf0, cifar_data(ctx.data), None, b.probe_images).values()))
    style = f"style:{ctx.style_model}"
    pairs = {f"appearance: clean vs {style}": (test, shifted(test, style, None, device=dev)),
             "content: classes 0–4 vs 5–9" if len(test.classes) == 10 else
             "content: first vs second half of the classes": class_halves(test)}
    curves: dict[tuple[str, str], list[list[float]]] = {}
    last: dict[tuple[str, str], list[float]] = {}
    stem: dict[tuple[str, str], list[float]] = {}
    layers: list[str] = []
    detail = []
    for r in results:
        clf = load_classifier(str(r.model), dev)
        for p, (a, bb) in pairs.items():
            d = feature_divergence(clf, a, bb, ("A", "B"), dev)
            layers = d.layers
            curves.setdefault((p, r.label), []).append(d.total)
            stem.setdefault((r.label, p), []).append(d.total[0])
            last.setdefault((r.label, p), []).append(d.total[-1])
            if r.seed == b.seeds[0] and p.startswith("appearance"):
                d.model = r.label
                detail.append(d)
    rows = list(VARIANTS)
    cols = list(pairs)
    rep.setup += [
        f"What ran: CIFAR ResNet-{depth} × {', '.join(VARIANTS)} trained with {b.describe()} "
        f"(shared with `bin-cifar` / `ibn-shift`). Expected cost: {b.estimate}.",
        f"Probe: {len(test)} test images. Appearance pair: the images vs the same images "
        f"rendered by `{ctx.style_model}`; content pair: test images of the first half of the "
        "classes vs the second half.",
        "Measure (IBN-Net Sec. 3.1): per layer output and channel, a Gaussian fitted to the "
        "per-image spatial means in each domain; symmetric KL between the domains, averaged "
        "over channels (`classify.analysis.feature_divergence`, D(μ)). Layers: the stem norm "
        "and every residual block's output, shallow to deep.",
        "The paper: ImageNet ResNet-50 vs IBN-a, Cityscapes vs GTA5 (appearance) and two halves "
        "of the ImageNet classes (content). Here a CIFAR ResNet and CIFAR-10 images at the "
        "budget's schedule: the shape of the curves is compared, not their values.",
    ]
    rep.section(f"### D(μ) at the stem (shallowest layer), ResNet-{depth}\n\nmean ± sd over "
                "seeds, n = seeds.\n\n" + mean_sd_table("model", rows, cols, stem, digits=3))
    rep.section("### D(μ) at the last block (deepest layer)\n\n"
                + mean_sd_table("model", rows, cols, last, digits=3))
    lines, gaps = noise_lines("bn", rows, cols, stem, unit="")
    lines2, gaps2 = noise_lines("bn", rows, cols, last, unit="")
    rep.section("Gaps to BN, stem (inside the noise = Welch's t-test p ≥ 0.05):\n\n"
                + "\n".join(lines) + "\n\nGaps to BN, last block:\n\n" + "\n".join(lines2))
    trend = []
    for (p, m), runs in curves.items():
        a = np.array(runs)
        trend.append(f"- {m}, {p}: D(μ) stem {summarize(a[:, 0]).fmt(3)} → last "
                     f"{summarize(a[:, -1]).fmt(3)} "
                     f"({'falls' if a[:, -1].mean() < a[:, 0].mean() else 'rises'} with depth)")
    rep.section("Trend with depth (IBN-Net: appearance falls, content rises):\n\n"
                + "\n".join(trend))
    rep.figure(depth_figure(layers, curves, f"feature divergence by depth, ResNet-{depth}"),
               "divergence_by_depth.png", "D(μ) by depth, mean over seeds (band: range over "
               "seeds): appearance (left) and content (right)")
    if detail:
        rep.figure(divergence_figure(detail), "divergence_detail.png",
                   f"appearance pair, seed {b.seeds[0]}: D(μ), D(σ) and what survives IN, per model")
    rep.commands += [ctx.command or f"normlab reproduce divergence --budget {ctx.budget}",
                     "# the training runs alone:", sweep_command(ctx, VARIANTS, [depth]),
                     "# one model, appearance pair:",
                     f"normlab classify divergence {results[0].model} --data "
                     f"{cifar_data(ctx.data)} --domains test,shift:{style} --limit "
                     f"{b.probe_images}"]
    rep.data.update(runs=[r.to_dict() for r in results], layers=layers, probe_images=len(test),
                    curves={f"{p} | {m}": v for (p, m), v in curves.items()},
                    gaps=[g.to_dict() for g in gaps + gaps2])
    rep.train_seconds = sum(r.seconds for r in results)
    return rep.write()
