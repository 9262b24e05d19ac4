"""IBN-Net (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018) Table 1: accuracy under appearance shifts of the test images — RGB+50, R+50,
contrast (std ×1.5) — plus a style shift (each image re-rendered by a ``stylize`` model), for BN,
IBN-a, IBN-b and BIN CIFAR-10 ResNets."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .bin_cifar import cifar_grid, sweep_command
from .budgets import CIFAR, cifar_data, precision_line, seeds_by_variant, seeds_line
from .report import (TESTS_NOTE, Report, gap_brief, gap_tests, grouped_bars, keyed,
                     mean_sd_table, noise_lines, ranking, verdict_line)
from .stats import summarize
from .sweep import Ledger, RunSpec, fill_measures, result_from_dict, run_sweep, runs_table

STYLE_MODEL = "candy_bin"  # the stylize model whose rendering is the style shift (--style-model)

# the report is built from the runs' numbers and their shift measure: a ledger keeps both
TAKES_LEDGER = True
TITLE = "IBN-Net Table 1 on CIFAR-10: accuracy under appearance and style shifts"
VARIANTS = ("bn", "ibn_a", "ibn_b", "bin")
SHIFTS = ("rgb_plus=50", "red_plus=50", "contrast=1.5")


def _style_model(data: dict) -> str:
    if "style_model" in data:
        return data["style_model"]
    styles = [k.split(" | ", 1)[1] for k in data.get("accuracy", {}) if " | style:" in k]
    return styles[0].split(":", 1)[1] if styles else "candy_bin"


def intro(data: dict) -> str:
    """The report's opening paragraph (the paper's claim)."""
    return ("IBN-Net (Table 1) shows that putting instance normalisation in the shallow layers "
            "(IBN-a; IBN-b adds IN after the residual sums) makes a network lose less accuracy "
            "when the test images' appearance changes — brightness (RGB+50), colour (R+50), "
            "contrast (std ×1.5) — while BN networks lose more. Here the same shifts, plus a "
            f"style shift (each test image re-rendered by the `{_style_model(data)}` "
            "style-transfer model), on CIFAR-10 ResNets with BN, IBN-a, IBN-b and BIN.")


def _tables(data: dict) -> tuple[list[str], dict, dict]:
    acc, drop = keyed(data["accuracy"]), keyed(data["drop"])
    return list(dict.fromkeys(c for _, c in acc)), acc, drop


def findings(data: dict) -> list[str]:
    """The headline lines, every number from ``data`` (results.json): the report's Findings and
    the READMEs' results sections."""
    conds, acc, drop = _tables(data)
    found = gap_tests("bn", list(VARIANTS), conds[1:], drop)
    n = sorted({summarize(v).n for v in drop.values()})
    out = []
    for c in conds[1:]:
        s = sorted(((v, summarize(drop.get((v, c), []))) for v in VARIANTS), key=lambda x: x[1].mean)
        out.append(f"- {c}: top-1 drop (clean − shifted, points; n = {'–'.join(map(str, n))} "
                   f"seeds, {data['probe_images']} test images), smallest first: "
                   + ", ".join(f"{v} {x.fmt(2)}" for v, x in s if x.n) + "; gap to BN "
                   f"(Welch; Holm over {len(found)} tests): "
                   + "; ".join(gap_brief(g) for cc, g in found if cc == c) + ".")
    runs = [result_from_dict(r) for r in data["runs"]]
    full = {(r.label, "test"): [] for r in runs}
    for r in runs:
        full[(r.label, "test")].append(next(iter(r.test_acc.values())))
    clean = gap_tests("bn", list(VARIANTS), ["test"], full)
    ibn = ("ibn_a", "ibn_b")
    why = ("Scale: CIFAR-10 ResNet-20 (the paper: ImageNet ResNet-50), shifts applied to "
           f"{data['probe_images']} test images.")
    out.insert(0, verdict_line(
        "IBN-a and IBN-b lose less top-1 than BN under appearance and style shifts (IBN-Net "
        "Table 1)", [(g, -1) for _, g in found if g.a in ibn], why))
    out.insert(1, verdict_line(
        "IBN-a and IBN-b at no cost in clean top-1 (IBN-Net Table 1)",
        [(g, 1) for _, g in clean if g.a in ibn], why))
    out.append("- Clean top-1 (%) on the full test set (each run's final top-1): "
               + ranking(VARIANTS, "test", full) + "; gap to BN (Welch; Holm over "
               f"{len(clean)} tests): " + "; ".join(gap_brief(g) for _, g in clean)
               + f". On the {data['probe_images']}-image probe the shifts use: "
               + ranking(VARIANTS, "clean", acc) + ".")
    return out


def render(rep: Report, data: dict) -> None:
    """The Results sections from ``data`` (results.json) alone; updates its derived gaps."""
    conds, acc, drop = _tables(data)
    rows = list(VARIANTS)
    depth = data["runs"][0]["depth"]
    rep.section("### Findings\n\n" + "\n".join(findings(data)))
    rep.section(f"### Top-1 (%) clean and shifted, ResNet-{depth}\n\nmean ± sd over seeds, "
                "n = seeds.\n\n" + mean_sd_table("model", rows, conds, acc))
    rep.section("### Drop (clean − shifted, points): the IBN-Net Table 1 quantity\n\n"
                + mean_sd_table("model", rows, conds[1:], drop))
    lines, gaps = noise_lines("bn", rows, conds[1:], drop)
    rep.section("Drop gaps to BN (negative = loses less than BN; Welch's t-test; "
                f"{TESTS_NOTE}):\n\n" + "\n".join(lines))
    rep.section("### Every run\n\nfinal top-1 of each training run on the full test set; "
                "training time summed over the sessions a resumed run took.\n\n"
                + runs_table([result_from_dict(r) for r in data["runs"]]))
    data["gaps"] = [g.to_dict() for g in gaps]


def drops_figure(rows: Sequence[str], conds: Sequence[str], drops: dict):
    """Bar chart: top-1 drop vs clean per shift, mean with ± sd error bars over seeds."""
    return grouped_bars(rows, conds, drops, ylabel="top-1 drop vs clean (points)", zero_line=True,
                        title="accuracy drop under appearance shifts (mean ± sd over seeds)")


def needs(ctx) -> list[str]:
    """The measure every run must hold (``sweep.run_sweep``): its shifted top-1."""
    return [shift_measure(ctx, CIFAR[ctx.budget].probe_images, shifts_of(ctx))[0]]


def shifts_of(ctx) -> list[str]:
    return list(SHIFTS) + [f"style:{ctx.style_model}"]


def grid(ctx) -> list[RunSpec]:
    """The training runs this reproduction needs at ``ctx.budget`` (shared with bin-cifar)."""
    return cifar_grid(ctx, VARIANTS, [CIFAR[ctx.budget].depths[0]])


def style_id(model: str) -> str:
    """``MODEL@sha`` (the first 10 hex digits of its file): a measure made with one style model
    is not mistaken for one made with a retrained model of the same name."""
    import weights

    return f"{model}@{weights.sha256(weights.resolve(model, 'stylize'))[:10]}"


def shift_measure(ctx, probe: int, shifts: Sequence[str]) -> tuple[str, object]:
    """(measure name, compute) of the clean and shifted top-1 of runs on a ``probe``-image
    test subset: the shifted images are made once for all the runs measured together."""
    from classify.analysis import eval_sets, shift_table
    from classify.checkpoint import load_classifier
    from engine.devices import resolve_device

    style = next((s.split(":", 1)[1] for s in shifts if s.startswith("style:")), None)
    name = (f"shift|{probe} images|" + ",".join(shifts)
            + (f"|{style_id(style)}" if style else ""))
    dev = str(resolve_device(ctx.device))

    def compute(runs):
        clfs = [load_classifier(str(r.model), dev) for r in runs]
        ds = next(iter(eval_sets(clfs[0], cifar_data(ctx.data), None, probe).values()))
        table = shift_table(clfs, ds, list(shifts), dev)
        return [{"images": len(ds), **table.acc[n]} for n in table.models]

    return name, compute


def run(ctx) -> Path:
    import experiments  # noqa: F401  (registers the style:MODEL shift renderer)

    b = CIFAR[ctx.budget]
    depth = b.depths[0]
    specs = grid(ctx)
    ledger = Ledger(ctx.ledger) if ctx.ledger else None
    rep = Report("ibn-shift", TITLE, ctx.out, ctx.budget,
                 intro=intro({"style_model": ctx.style_model}))
    shifts = shifts_of(ctx)
    name, compute = shift_measure(ctx, b.probe_images, shifts)
    results = run_sweep(specs, ctx.jobs, ledger=ledger, needs=[name])
    fill_measures(specs, results, name, compute, ledger)
    conds = ["clean"] + shifts
    probe = results[0].measures[name]["images"]
    acc: dict[tuple[str, str], list[float]] = {}
    drop: dict[tuple[str, str], list[float]] = {}
    for r in results:
        a = r.measures[name]
        for c in conds:
            acc.setdefault((r.label, c), []).append(a[c])
            if c != "clean":
                drop.setdefault((r.label, c), []).append(a["clean"] - a[c])
    rep.setup += [
        f"What ran: CIFAR-10, CIFAR ResNet-{depth} × {', '.join(VARIANTS)} trained with "
        f"{b.describe()} (the same runs as `bin-cifar` where they coincide). Expected cost: "
        f"{b.estimate}.",
        *filter(None, [seeds_line(seeds_by_variant(ctx.seeds, VARIANTS, b.seeds), b.seeds)]),
        f"Probe: {probe} test images" + (" (the whole test set)" if probe >= 10000 else
                                          " (seeded subset)")
        + ", each shifted once and shared by all models. Shifts: RGB+50 and R+50 add to 0–255 "
        "pixel values, contrast scales deviations from each image's channel mean by 1.5 "
        f"(IBN-Net Table 1); style:{ctx.style_model} renders the image with normlab's style "
        "model at 128 px and resizes it back.",
        "The paper: ImageNet ResNet-50 vs IBN-a/IBN-b, 224 px, official ImageNet training "
        "(top-1 drop under each shift). Here CIFAR-10 at 32 px and the budget's schedule: the "
        "claim compared is the *ordering of the drops*, not their size.",
        precision_line(specs[0].recipe, [r.precision for r in results]),
    ]
    if ledger:
        rep.setup.append(f"Finished runs and their shifted top-1 are recorded in `{ledger.path}` "
                         f"(measure `{name}`): the report re-renders from it without the models.")
    rows = list(VARIANTS)
    rep.data.update(runs=[r.to_dict() for r in results], probe_images=probe,
                    style_model=ctx.style_model,
                    accuracy={f"{k[0]} | {k[1]}": v for k, v in acc.items()},
                    drop={f"{k[0]} | {k[1]}": v for k, v in drop.items()})
    render(rep, rep.data)
    rep.figure(drops_figure(rows, conds[1:], drop), "shift_drops.png",
               "top-1 drop under each shift, mean ± sd over seeds")
    rep.commands += [ctx.command or f"normlab reproduce ibn-shift --budget {ctx.budget}",
                     "# the training runs alone:", sweep_command(ctx, VARIANTS, [depth]),
                     "# one seed's table from the trained files:",
                     f"normlab classify shift {' '.join(str(r.model) for r in results if r.seed == b.seeds[0])} "
                     f"--data {cifar_data(ctx.data)} --limit {probe} --shifts "
                     f"{','.join(shifts)}"]
    rep.train_seconds = sum(r.seconds for r in results)
    return rep.write()
