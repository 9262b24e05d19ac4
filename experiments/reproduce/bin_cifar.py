"""BIN paper (Nam & Kim, "Batch-Instance Normalization for Adaptively Style-Invariant Neural
Networks", NeurIPS 2018) on CIFAR-10: Table 1 (top-1 of BN, IN, BN+IN, BIN; IBN-a added) on CIFAR
ResNets, Fig. 1 (test accuracy during training) and Fig. 2 (ρ histograms by stage)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .budgets import (CIFAR, cifar_data, precision_line, seeds_by_variant, seeds_line, sweep_amp,
                      sweep_line)
from .report import (TESTS_NOTE, Report, gap_brief, gap_tests, keyed, mean_sd_table, verdict_line,
                     noise_lines, ranking)
from .stats import summarize
from .sweep import (Ledger, RunResult, RunSpec, fill_measures, plan, result_from_dict, run_sweep,
                    runs_table, values_by)

# the report is built from the runs' numbers and their gates measure: a ledger keeps both
TAKES_LEDGER = True
TITLE = "BIN on CIFAR-10: BN vs IN vs BN+IN vs BIN vs IBN-a (BIN paper Table 1, Fig. 1, Fig. 2)"
VARIANTS = ("bn", "in", "bn_in", "bin", "ibn_a")
INTRO = (
    "The BIN paper reports that Batch-Instance Normalization, which learns per channel how "
    "much of instance normalisation to mix into batch normalisation (ρ ∈ [0, 1], 1 = BN), "
    "improves CIFAR classification over BN, while IN alone and a fixed BN+IN mix are worse, "
    "and that the learned ρ stays close to 1 (BN) in most channels with a tail toward IN "
    "(Fig. 2). IBN-a (IBN-Net) is added as the other BN/IN hybrid.")


def cifar_grid(ctx, variants: Sequence[str], depths: Sequence[int] | None = None) -> list[RunSpec]:
    """The CIFAR-10 runs of ``ctx.budget`` (shared by bin-cifar, ibn-shift and divergence)."""
    from engine.devices import resolve_device

    b = CIFAR[ctx.budget]
    dev = resolve_device(ctx.device)
    # autocast where it pays (see sweep_amp); channels_last is the trainer's on CUDA
    base = b.recipe(cifar_data(ctx.data), str(dev), ctx.download,
                    amp=sweep_amp(dev, ctx.budget), compile=ctx.compile)
    seeds = seeds_by_variant(ctx.seeds, variants, b.seeds)
    specs = []
    for d in depths or b.depths:
        for v in variants:
            specs += plan(base, [v], seeds[v], [d], ctx.runs)
    return specs


def sweep_command(ctx, variants: Sequence[str], depths: Sequence[int]) -> str:
    """The ``normlab reproduce sweep`` line that trains (or reuses) the same runs, as they ran
    (with ``--seeds``, the one for the largest n: smaller n are subsets of its seeds)."""
    b = CIFAR[ctx.budget]
    seeds = max(seeds_by_variant(ctx.seeds, variants, b.seeds).values(), key=len)
    return sweep_line(ctx, b, f"--data {cifar_data(ctx.data)} --variants {','.join(variants)} "
                      f"--seeds {','.join(map(str, seeds))} --depths {','.join(map(str, depths))} "
                      f"--epochs {b.epochs} --batch-size {b.batch_size} --lr {b.lr:g} --weight-decay "
                      f"{b.weight_decay:g} --schedule {b.schedule} --label-smoothing "
                      f"{b.label_smoothing:g}")


def curves_figure(results: Sequence[RunResult], test: str, title: str):
    """Test top-1 by epoch, mean ± sd band over seeds, one panel per depth (BIN Fig. 1)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    depths = sorted({r.depth for r in results})
    fig, axes = plt.subplots(1, len(depths), figsize=(4.4 * len(depths), 3.3), squeeze=False)
    for ax, d in zip(axes[0], depths):
        for label in dict.fromkeys(r.label for r in results):
            runs = [r for r in results if r.depth == d and r.label == label and r.curve]
            if not runs:
                continue
            n = min(len(r.curve) for r in runs)
            ep = np.array([runs[0].curve[i]["epoch"] for i in range(n)])
            acc = np.array([[r.curve[i].get(test, np.nan) for i in range(n)] for r in runs])
            m, s = acc.mean(0), acc.std(0, ddof=1) if len(runs) > 1 else np.zeros(n)
            ax.plot(ep, m, marker="o" if n < 4 else None, ms=3, lw=1.3,
                    label=f"{label} (n={len(runs)})")
            ax.fill_between(ep, m - s, m + s, alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"ResNet-{d}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _stage(layer: str) -> str:
    return layer.split(".")[0] if layer.startswith("layer") else "stem"


GATES = "gates"  # the measure (sweep.fill_measures) kept with every BIN run


def measure_gates(runs: Sequence[RunResult]) -> list[dict]:
    """Per run, its learned ρ by stage: mean, fraction of channels below 0.5 and a 20-bin
    histogram over [0, 1] (BIN paper Fig. 2), measured once from the model file."""
    import norms
    from classify.checkpoint import load_classifier
    from norms.gates import HIST_BINS

    out = []
    for r in runs:
        by: dict[str, list[float]] = {}
        for L in norms.gate_report(load_classifier(str(r.model)).model).layers:
            by.setdefault(_stage(L.name), []).extend(L.values.float().tolist())
        out.append({st: {"mean": float(np.mean(v)), "below_half": float(np.mean(np.array(v) < 0.5)),
                         "hist": np.histogram(v, HIST_BINS, (0.0, 1.0))[0].tolist()}
                    for st, v in by.items()})
    return out


def gate_stats(results: Sequence[RunResult]) -> dict[str, list[float]]:
    """{"ResNet-D | stage mean ρ" / "… ρ<0.5": one value per BIN run} from the runs' gates
    measures."""
    vals: dict[str, list[float]] = {}
    for r in results:
        if r.label != "bin":
            continue
        for st, m in r.measures[GATES].items():
            vals.setdefault(f"ResNet-{r.depth} | {st} mean ρ", []).append(m["mean"])
            vals.setdefault(f"ResNet-{r.depth} | {st} ρ<0.5", []).append(m["below_half"])
    return vals


def gates_figure(gates: dict, title: str):
    """ρ histograms by stage from a run's gates measure (BIN paper Fig. 2)."""
    from norms.gates import histogram_figure

    return histogram_figure({st: m["hist"] for st, m in gates.items()}, title)


def needs(ctx):
    """The measures each run must hold (``sweep.run_sweep``): the gates of the BIN runs."""
    return lambda spec: [GATES] if spec.label == "bin" else []


def grid(ctx) -> list[RunSpec]:
    """The training runs this reproduction needs at ``ctx.budget``."""
    return cifar_grid(ctx, VARIANTS)


def intro(data: dict) -> str:
    """The report's opening paragraph (the paper's claim)."""
    return INTRO


def _table(data: dict) -> tuple[list[str], dict]:
    vals = keyed(data["table"])
    return list(dict.fromkeys(c for _, c in vals)), vals


def verdict(data: dict) -> str:
    """Whether the BIN paper's Table 1 ranking held here, in one line (``verdict_line``)."""
    cols, vals = _table(data)
    want = {"bin": 1, "in": -1, "bn_in": -1}
    checks = [(g, want[g.a]) for _, g in gap_tests("bn", list(VARIANTS), cols, vals)
              if g.a in want]
    n = sorted({summarize(v).n for v in vals.values()} - {0})
    epochs = max((p.get("epoch", 0) for r in data["runs"] for p in r.get("curve") or []),
                 default=0)
    scale = f"{'/'.join(cols)}, {epochs:g} epochs"
    return verdict_line(
        "BIN above BN, IN and BN+IN below it (BIN paper Table 1)", checks,
        f"Scale: CIFAR-10 {scale}, n = {'–'.join(map(str, n))} seeds (the paper: ResNet-20/56/"
        "110, 160 epochs), so accuracies are lower and only the ranking compares.")


def findings(data: dict) -> list[str]:
    """The headline lines, every number from ``data`` (results.json): the report's Findings and
    the READMEs' results sections (``render.results_block``)."""
    cols, vals = _table(data)
    found = gap_tests("bn", list(VARIANTS), cols, vals)
    out = [verdict(data)]
    for c in cols:
        n = sorted({summarize(vals.get((v, c), [])).n for v in VARIANTS} - {0})
        out.append(f"- CIFAR-10 {c}, n = {'–'.join(map(str, n))} seeds, test top-1 (%): "
                   + ranking(VARIANTS, c, vals) + ".")
        out.append(f"- {c}, gap to BN in points (Welch; Holm over {len(found)} tests): "
                   + "; ".join(gap_brief(g) for cc, g in found if cc == c) + ".")
    return out


def render(rep: Report, data: dict) -> None:
    """The Results sections from ``data`` (results.json) alone; updates its derived gaps."""
    cols, vals = _table(data)
    lines, gaps = noise_lines("bn", list(VARIANTS), cols, vals)
    rep.section("### Findings\n\n" + "\n".join(findings(data)))
    rep.section("### Table 1: CIFAR-10 test top-1 (%)\n\nmean ± sd over seeds; n = seeds per "
                "cell; top-1 error = 100 − top-1.\n\n"
                + mean_sd_table("norm", list(VARIANTS), cols, vals))
    rep.section(f"Gaps to BN (Welch's t-test; {TESTS_NOTE}):\n\n" + "\n".join(lines))
    results = [result_from_dict(r) for r in data["runs"]]
    ips = values_by([r for r in results if r.images_per_s], lambda r: r.label,
                    lambda r: [(f"ResNet-{r.depth}", r.images_per_s)])
    if ips:
        rep.section("### Training throughput (images/s, last logged epoch of each run)\n\n"
                    "As each run trained: a run that shared the machine with another (`--jobs`) "
                    "or resumed on other hardware counts its own speed there, so a large sd means "
                    "mixed conditions, not a slower norm (the Every run table says what each run "
                    "was measured on); `normlab classify bench` compares norms side by side.\n\n"
                    + mean_sd_table("norm", list(VARIANTS), cols, ips, digits=0))
    graw = keyed(data.get("gates", {}))
    grows = list(dict.fromkeys(k[0] for k in graw))
    gcols = list(dict.fromkeys(k[1] for k in graw))
    gmd = mean_sd_table("BIN model", grows, gcols, graw, digits=3) if graw else "(no BIN runs)"
    rep.section("### Fig. 2 statistics: learned ρ by stage (BIN runs)\n\nmean ± sd over seeds of "
                "each run's mean ρ per stage, and of the fraction of channels with ρ < 0.5 "
                "(closer to IN).\n\n" + gmd)
    rep.section("### Every run\n\nfinal top-1 of each training run; training time summed "
                "over the sessions a resumed run took.\n\n" + runs_table(results))
    data["summary"] = {f"{k[0]} | {k[1]}": summarize(v).to_dict() for k, v in vals.items()}
    data["gaps"] = [g.to_dict() for g in gaps]


def run(ctx) -> Path:
    b = CIFAR[ctx.budget]
    specs = grid(ctx)
    ledger = Ledger(ctx.ledger) if ctx.ledger else None
    rep = Report("bin-cifar", TITLE, ctx.out, ctx.budget, intro=INTRO)
    results = run_sweep(specs, ctx.jobs, ledger=ledger, needs=needs(ctx))
    gated = [i for i, r in enumerate(results) if r.label == "bin"]
    fill_measures([specs[i] for i in gated], [results[i] for i in gated], GATES, measure_gates,
                  ledger)
    seeds = seeds_by_variant(ctx.seeds, VARIANTS, b.seeds)
    rep.setup += [
        f"What ran: CIFAR-10, CIFAR ResNet-{'/'.join(map(str, b.depths))} (option-A shortcuts) × "
        f"{', '.join(VARIANTS)}; {b.describe()}. Expected cost: {b.estimate}.",
        *filter(None, [seeds_line(seeds, b.seeds)]),
        "The paper: ResNet-20/56/110 (and others), SGD lr 0.1 ÷10 at 50 %/75 % of training, "
        "batch 128, weight decay 1e-4, full CIFAR-10; normlab's `full` budget uses that "
        "schedule (160 epochs)." + ("" if ctx.budget == "full" else
                                    f" This `{ctx.budget}` budget differs: see the line above "
                                    "(fewer epochs" + (", the fast one-cycle + label-smoothing "
                                                       "schedule" if b.schedule != "step" else "")
                                    + ("" if b.depths == CIFAR["full"].depths else
                                       ", fewer depths") + ", fewer seeds). Accuracies are lower "
                                    "than the paper's and only the ranking is comparable."),
        f"Data: `{cifar_data(ctx.data)}`. Runs (resumable, reused across reports): `{ctx.runs}`."
        + (f" Finished runs, with their learned ρ, are recorded in `{ledger.path}`: the report "
           "re-renders from it without the run folders." if ledger else ""),
        "BIN gates: 10× lr, no weight decay, clipped to [0, 1] after every step (paper Sec. 3.2).",
        precision_line(specs[0].recipe, [r.precision for r in results]),
    ]
    test = next(iter(results[0].test_acc))
    vals = values_by(results, lambda r: r.label, lambda r: [(f"ResNet-{r.depth}", r.test_acc[test])])
    rep.data.update(runs=[r.to_dict() for r in results],
                    table={f"{k[0]} | {k[1]}": v for k, v in vals.items()},
                    gates=gate_stats(results))
    render(rep, rep.data)
    rep.figure(curves_figure(results, test, "CIFAR-10 test top-1 during training (mean ± sd)"),
               "fig1_curves.png", "Fig. 1: test top-1 by epoch, mean ± sd band over seeds")
    for d in b.depths:
        # the lowest seed whose histogram was kept (runs recorded before it was are summaries)
        r = min((results[i] for i in gated if results[i].depth == d
                 and all("hist" in m for m in results[i].measures[GATES].values())),
                key=lambda r: r.seed, default=None)
        if r is not None:
            rep.figure(gates_figure(r.measures[GATES],
                                    f"BIN ρ by stage, ResNet-{d}, seed {r.seed}"),
                       f"fig2_gates_resnet{d}.png",
                       f"Fig. 2: ρ histograms by stage, ResNet-{d} BIN, seed {r.seed}")
    rep.commands += [ctx.command or f"normlab reproduce bin-cifar --budget {ctx.budget}",
                     "# the same runs, without the report:",
                     sweep_command(ctx, VARIANTS, b.depths)]
    rep.train_seconds = sum(r.seconds for r in results)
    return rep.write()
