"""IBN-Net (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018) Table 1: accuracy under appearance shifts of the test images — RGB+50, R+50,
contrast (std ×1.5) — plus a style shift (each image re-rendered by a ``stylize`` model), for BN,
IBN-a, IBN-b and BIN CIFAR-10 ResNets."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .bin_cifar import cifar_grid, sweep_command
from .budgets import CIFAR, cifar_data, precision_line
from .report import Report, grouped_bars, mean_sd_table, noise_lines
from .sweep import RunSpec, run_sweep, runs_table

TITLE = "IBN-Net Table 1 on CIFAR-10: accuracy under appearance and style shifts"
VARIANTS = ("bn", "ibn_a", "ibn_b", "bin")
SHIFTS = ("rgb_plus=50", "red_plus=50", "contrast=1.5")


def drops_figure(rows: Sequence[str], conds: Sequence[str], drops: dict):
    """Bar chart: top-1 drop vs clean per shift, mean with ± sd error bars over seeds."""
    return grouped_bars(rows, conds, drops, ylabel="top-1 drop vs clean (points)", zero_line=True,
                        title="accuracy drop under appearance shifts (mean ± sd over seeds)")


def grid(ctx) -> list[RunSpec]:
    """The training runs this reproduction needs at ``ctx.budget`` (shared with bin-cifar)."""
    return cifar_grid(ctx, VARIANTS, [CIFAR[ctx.budget].depths[0]])


def run(ctx) -> Path:
    import experiments  # noqa: F401  (registers the style:MODEL shift renderer)
    from classify.analysis import eval_sets, shift_table
    from classify.checkpoint import load_classifier
    from engine.devices import resolve_device

    b = CIFAR[ctx.budget]
    depth = b.depths[0]
    specs = grid(ctx)
    rep = Report("ibn-shift", TITLE, ctx.out, ctx.budget, intro=(
        "IBN-Net (Table 1) shows that putting instance normalisation in the shallow layers "
        "(IBN-a; IBN-b adds IN after the residual sums) makes a network lose less accuracy when "
        "the test images' appearance changes — brightness (RGB+50), colour (R+50), contrast "
        "(std ×1.5) — while BN networks lose more. Here the same shifts, plus a style shift "
        f"(each test image re-rendered by the `{ctx.style_model}` style-transfer model), on "
        "CIFAR-10 ResNets with BN, IBN-a, IBN-b and BIN."))
    results = run_sweep(specs, ctx.jobs)
    dev = str(resolve_device(ctx.device))
    clfs = [load_classifier(str(r.model), dev) for r in results]
    ds = next(iter(eval_sets(clfs[0], cifar_data(ctx.data), None, b.probe_images).values()))
    shifts = list(SHIFTS) + [f"style:{ctx.style_model}"]
    table = shift_table(clfs, ds, shifts, dev)  # shifted images made once, shared by all models
    acc: dict[tuple[str, str], list[float]] = {}
    drop: dict[tuple[str, str], list[float]] = {}
    for r, name in zip(results, table.models):
        a = table.acc[name]
        for c in table.conditions:
            acc.setdefault((r.label, c), []).append(a[c])
            if c != "clean":
                drop.setdefault((r.label, c), []).append(a["clean"] - a[c])
    rep.setup += [
        f"What ran: CIFAR-10, CIFAR ResNet-{depth} × {', '.join(VARIANTS)} trained with "
        f"{b.describe()} (the same runs as `bin-cifar` where they coincide). Expected cost: "
        f"{b.estimate}.",
        f"Probe: {len(ds)} test images (seeded subset), each shifted once and shared by all "
        "models. Shifts: RGB+50 and R+50 add to 0–255 pixel values, contrast scales deviations "
        f"from each image's channel mean by 1.5 (IBN-Net Table 1); style:{ctx.style_model} "
        "renders the image with normlab's style model at 128 px and resizes it back.",
        "The paper: ImageNet ResNet-50 vs IBN-a/IBN-b, 224 px, official ImageNet training "
        "(top-1 drop under each shift). Here CIFAR-10 at 32 px and the budget's schedule: the "
        "claim compared is the *ordering of the drops*, not their size.",
        precision_line(specs[0].recipe, [r.precision for r in results]),
    ]
    conds = table.conditions
    rows = list(VARIANTS)
    rep.section(f"### Top-1 (%) clean and shifted, ResNet-{depth}\n\nmean ± sd over seeds, "
                "n = seeds.\n\n" + mean_sd_table("model", rows, conds, acc))
    rep.section("### Drop (clean − shifted, points): the IBN-Net Table 1 quantity\n\n"
                + mean_sd_table("model", rows, conds[1:], drop))
    lines, gaps = noise_lines("bn", rows, conds[1:], drop)
    rep.section("Drop gaps to BN (negative = loses less than BN; inside the noise = Welch's "
                "t-test p ≥ 0.05):\n\n" + "\n".join(lines))
    rep.section("### Every run\n\nfinal top-1 of each training run; training time summed "
                "over the sessions a resumed run took.\n\n" + runs_table(results))
    rep.figure(drops_figure(rows, conds[1:], drop), "shift_drops.png",
               "top-1 drop under each shift, mean ± sd over seeds")
    rep.commands += [ctx.command or f"normlab reproduce ibn-shift --budget {ctx.budget}",
                     "# the training runs alone:", sweep_command(ctx, VARIANTS, [depth]),
                     "# one seed's table from the trained files:",
                     f"normlab classify shift {' '.join(str(r.model) for r in results if r.seed == b.seeds[0])} "
                     f"--data {cifar_data(ctx.data)} --limit {b.probe_images} --shifts "
                     f"{','.join(shifts)}"]
    rep.data.update(runs=[r.to_dict() for r in results], probe_images=len(ds),
                    accuracy={f"{k[0]} | {k[1]}": v for k, v in acc.items()},
                    drop={f"{k[0]} | {k[1]}": v for k, v in drop.items()},
                    gaps=[g.to_dict() for g in gaps])
    rep.train_seconds = sum(r.seconds for r in results)
    return rep.write()
