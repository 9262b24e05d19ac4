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
from .budgets import CIFAR, cifar_data, seeds_by_variant, seeds_line
from .report import TESTS_NOTE, Report, gap_tests, keyed, mean_sd_table, p_brief, verdict_line
from .stats import summarize
from .sweep import Ledger, RunSpec, fill_measures, run_sweep

STYLE_MODEL = "candy_bin"  # the stylize model whose rendering is the appearance change (--style-model)

# the report is built from the runs' numbers and their divergence measure: a ledger keeps both
TAKES_LEDGER = True
TITLE = "IBN-Net Fig. 3 on CIFAR-10: feature divergence by depth (appearance vs content)"
VARIANTS = ("bn", "ibn_a", "ibn_b", "bin")
INTRO = (
    "IBN-Net (Fig. 3) measures how far apart two domains' features are at each depth. "
    "Appearance differences (same content, different look) cause a divergence that is "
    "large in shallow layers and falls with depth; content differences (different classes) "
    "cause one that grows with depth; instance normalisation in the shallow layers (IBN-a) "
    "lowers the appearance divergence. That is why IBN-Net puts IN only in the shallow "
    "layers. Every layer is tested here, each model against BN.")


def intro(data: dict) -> str:
    """The report's opening paragraph (the paper's claim)."""
    return INTRO


def layer_values(data: dict, key: str = "curves") -> dict[tuple[str, str], list[float]]:
    """{(model, "pair · layer"): one D(μ) per seed} from results.json's per-seed, per-layer
    curves (``key``: "curves" = mean over channels, "curves_median" = median)."""
    out: dict[tuple[str, str], list[float]] = {}
    for (pair, model), runs in keyed(data.get(key, {})).items():
        for i, layer in enumerate(data["layers"]):
            out[(model, f"{pair} · {layer}")] = [float(r[i]) for r in runs]
    return out


def _pairs(data: dict) -> list[str]:
    return list(dict.fromkeys(p for p, _ in keyed(data["curves"])))


def _tests(data: dict, key: str = "curves") -> dict[str, list]:
    """Per domain pair, every layer × model against BN: one Holm family per pair."""
    vals = layer_values(data, key)
    return {p: gap_tests("bn", list(VARIANTS), [f"{p} · {L}" for L in data["layers"]], vals)
            for p in _pairs(data)}


def _trend(data: dict, pair: str) -> str:
    parts = []
    for (p, m), runs in keyed(data["curves"]).items():
        if p == pair:
            a = np.array(runs)
            s0, s1 = summarize(a[:, 0]), summarize(a[:, -1])
            parts.append(f"{m} {s0.fmt(2)} → {s1.fmt(2)} "
                         f"({'falls' if s1.mean < s0.mean else 'rises'})")
    return ", ".join(parts)


def findings(data: dict) -> list[str]:
    """The headline lines, every number from ``data`` (results.json): the report's Findings and
    the READMEs' results sections."""
    vals = layer_values(data)
    tests = _tests(data)
    shallow = [L for L in data["layers"] if L == "bn1" or L.startswith("layer1.")]
    app = next((p for p in tests if p.startswith("appearance")), None)
    checks = [(g, -1) for c, g in tests.get(app, []) if g.a in ("ibn_a", "ibn_b")
              and c.split(" · ")[-1] in shallow]
    out = [verdict_line(
        "IBN-a and IBN-b lower the appearance divergence of the shallow layers (the stem and "
        "stage 1) below BN's (IBN-Net Fig. 3)", checks,
        "Scale: CIFAR-10 ResNet-20 with a stylization as the appearance change (the paper: "
        "ImageNet ResNet-50, real vs virtual and style domains).")]
    for pair, found in tests.items():
        n = sorted({len(v) for v in keyed(data["curves"]).values()})
        out.append(f"- {pair}: D(μ) stem → last block (n = {'–'.join(map(str, n))} seeds): "
                   f"{_trend(data, pair)}.")
        low = [(c, g) for c, g in found if g.test != "none" and g.p < 0.05]
        if low:
            out.append(f"- {pair}: layers where a model differs from BN at raw p < 0.05 (Welch; "
                       f"Holm over all {len(found)} layer × model tests of this pair): "
                       + "; ".join(f"{g.a} at {c.split(' · ')[-1]} "
                                   f"{summarize(vals[(g.a, c)]).fmt(2)} vs BN "
                                   f"{summarize(vals[('bn', c)]).fmt(2)} ({p_brief(g)})"
                                   for c, g in low) + ".")
        else:
            out.append(f"- {pair}: no layer where a model differs from BN at raw p < 0.05 "
                       f"({len(found)} tests).")
    if not data.get("curves_median"):
        out.append("- D(μ) as the median over channels: not measured on these runs (they "
                   "predate the measure and their models are gone); runs trained again record it.")
    return out


def render(rep: Report, data: dict) -> None:
    """The Results sections from ``data`` (results.json) alone; updates its derived gaps."""
    depth = data["runs"][0]["depth"]
    rows = list(VARIANTS)
    rep.section("### Findings\n\n" + "\n".join(findings(data)))
    gaps = []
    for key, what in (("curves", "mean over channels (IBN-Net's D(μ))"),
                      ("curves_median", "median over channels (robust to one outlier channel)")):
        if not data.get(key):
            continue
        vals = layer_values(data, key)
        for pair, found in _tests(data, key).items():
            cols = [f"{pair} · {L}" for L in data["layers"]]
            table = mean_sd_table("model", rows, data["layers"],
                                  {(m, c.split(" · ")[-1]): v for (m, c), v in vals.items()
                                   if c in cols}, digits=3)
            rep.section(f"### D(μ), {what}, every layer, ResNet-{depth}: {pair}\n\nmean ± sd "
                        "over seeds, n = seeds; layers shallow (stem) to deep.\n\n" + table)
            rep.section(f"Gaps to BN by layer (Welch's t-test; {TESTS_NOTE}):\n\n"
                        + "\n".join(f"- {c.split(' · ')[-1]}: {g.sentence('')}"
                                     for c, g in found))
            gaps += [dict(g.to_dict(), measure=key, layer=c.split(" · ")[-1], pair=pair)
                     for c, g in found]
    rep.section("Trend with depth, stem → last block (IBN-Net: appearance falls, content "
                "rises):\n\n" + "\n".join(f"- {p}: {_trend(data, p)}" for p in _pairs(data)))
    data["gaps"] = gaps


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


def needs(ctx) -> list[str]:
    """The measure every run must hold (``sweep.run_sweep``): its divergence by layer."""
    return [divergence_measure(ctx, CIFAR[ctx.budget].probe_images)[0]]


def grid(ctx) -> list[RunSpec]:
    """The training runs this reproduction needs at ``ctx.budget`` (shared with bin-cifar)."""
    return cifar_grid(ctx, VARIANTS, [CIFAR[ctx.budget].depths[0]])


def divergence_measure(ctx, probe: int) -> tuple[str, object]:
    """(measure name, compute) of every probed layer's divergence for the appearance and the
    content pair on a ``probe``-image test subset; the style-rendered images are made once for
    all the runs measured together."""
    import dataclasses

    from classify.analysis import eval_sets, feature_divergence, shifted
    from classify.checkpoint import load_classifier
    from engine.devices import resolve_device

    from .ibn_shift import style_id

    style = f"style:{ctx.style_model}"
    name = f"divergence|{probe} images|{style_id(ctx.style_model)}"
    dev = str(resolve_device(ctx.device))

    def compute(runs):
        clfs = [load_classifier(str(r.model), dev) for r in runs]
        test = next(iter(eval_sets(clfs[0], cifar_data(ctx.data), None, probe).values()))
        pairs = {f"appearance: clean vs {style}": (test, shifted(test, style, None, device=dev)),
                 "content: classes 0–4 vs 5–9" if len(test.classes) == 10 else
                 "content: first vs second half of the classes": class_halves(test)}
        out = []
        for clf in clfs:
            m = {"images": len(test)}
            for p, (a, bb) in pairs.items():
                m[p] = dataclasses.asdict(feature_divergence(clf, a, bb, ("A", "B"), dev))
            out.append(m)
        return out

    return name, compute


def run(ctx) -> Path:
    import experiments  # noqa: F401  (registers the style:MODEL shift renderer)
    from classify.analysis import Divergence, divergence_figure

    b = CIFAR[ctx.budget]
    depth = b.depths[0]
    specs = grid(ctx)
    ledger = Ledger(ctx.ledger) if ctx.ledger else None
    name, compute = divergence_measure(ctx, b.probe_images)
    results = run_sweep(specs, ctx.jobs, ledger=ledger, needs=[name])
    fill_measures(specs, results, name, compute, ledger)
    rep = Report("divergence", TITLE, ctx.out, ctx.budget, intro=INTRO)
    curves: dict[tuple[str, str], list[list[float]]] = {}
    medians: dict[tuple[str, str], list[list[float]]] = {}
    layers: list[str] = []
    detail = []
    first = min(r.seed for r in results)
    for r in results:
        for p, d in r.measures[name].items():
            if p == "images":
                continue
            layers = d["layers"]
            curves.setdefault((p, r.label), []).append(d["total"])
            if d.get("total_median") is not None:  # runs recorded before it was kept lack it
                medians.setdefault((p, r.label), []).append(d["total_median"])
            if r.seed == first and p.startswith("appearance") and d.get("kept") is not None:
                detail.append(Divergence(**dict(d, domains=tuple(d["domains"]), model=r.label)))
    probe = results[0].measures[name]["images"]
    rep.setup += [
        f"What ran: CIFAR ResNet-{depth} × {', '.join(VARIANTS)} trained with {b.describe()} "
        f"(shared with `bin-cifar` / `ibn-shift`). Expected cost: {b.estimate}.",
        *filter(None, [seeds_line(seeds_by_variant(ctx.seeds, VARIANTS, b.seeds), b.seeds)]),
        f"Probe: {probe} test images. Appearance pair: the images vs the same images "
        f"rendered by `{ctx.style_model}`; content pair: test images of the first half of the "
        "classes vs the second half.",
        "Measure (IBN-Net Sec. 3.1): per layer output and channel, a Gaussian fitted to the "
        "per-image spatial means in each domain; symmetric KL between the domains, averaged "
        "over channels (`classify.analysis.feature_divergence`, D(μ)). Layers: the stem norm "
        "and every residual block's output, shallow to deep; D(μ) is also given as the median "
        "over channels, which one outlier channel cannot carry.",
        "The paper: ImageNet ResNet-50 vs IBN-a, Cityscapes vs GTA5 (appearance) and two halves "
        "of the ImageNet classes (content). Here a CIFAR ResNet and CIFAR-10 images at the "
        "budget's schedule: the shape of the curves is compared, not their values.",
    ]
    if ledger:
        rep.setup.append(f"Finished runs and their divergences are recorded in `{ledger.path}` "
                         f"(measure `{name}`): the report re-renders from it without the models.")
    rep.data.update(runs=[r.to_dict() for r in results], layers=layers, probe_images=probe,
                    curves={f"{p} | {m}": v for (p, m), v in curves.items()},
                    curves_median={f"{p} | {m}": v for (p, m), v in medians.items()})
    render(rep, rep.data)
    rep.figure(depth_figure(layers, curves, f"feature divergence by depth, ResNet-{depth}"),
               "divergence_by_depth.png", "D(μ) by depth, mean over seeds (band: range over "
               "seeds): appearance (left) and content (right)")
    if detail:
        rep.figure(divergence_figure(detail), "divergence_detail.png",
                   f"appearance pair, seed {first}: D(μ), D(σ) and what survives IN, per model")
    style = f"style:{ctx.style_model}"
    rep.commands += [ctx.command or f"normlab reproduce divergence --budget {ctx.budget}",
                     "# the training runs alone:", sweep_command(ctx, VARIANTS, [depth]),
                     "# one model, appearance pair:",
                     f"normlab classify divergence {results[0].model} --data "
                     f"{cifar_data(ctx.data)} --domains test,shift:{style} --limit {probe}"]
    rep.train_seconds = sum(r.seconds for r in results)
    return rep.write()
