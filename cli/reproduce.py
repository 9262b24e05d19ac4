"""``normlab reproduce ...``: the papers' findings from one command each (thin layer over
``experiments.reproduce``), and the grid runner they use."""
from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from engine.devices import AMP_HELP

app = typer.Typer(help="Reproduce the BIN and IBN-Net papers' findings (reports with tables, "
                  "plots, commands and wall time), and run training grids.",
                  no_args_is_help=True)

Budget = Enum("Budget", {b: b for b in ("smoke", "cpu", "full")}, type=str)


def _device(ctx: typer.Context, device: Optional[str]) -> str:
    return device or (ctx.obj or {}).get("device", "auto")


def _command() -> str:
    """The command line as the user typed it (for the report)."""
    prog = Path(sys.argv[0]).name
    prog = "normlab" if prog in ("normlab", "main.py", "__main__.py") else prog
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def _make(name: str, summary: str):
    def cmd(
        ctx: typer.Context,
        budget: Budget = typer.Option("smoke", help="smoke: seconds (tests); cpu: a few "
                                      "CPU-hours, fast one-cycle schedule; full: the papers' "
                                      "schedules (a GPU)."),
        out: Optional[Path] = typer.Option(None, help=f"Report folder (default reports/{name})."),
        data: Optional[str] = typer.Option(None, help="Data: cifar10:ROOT | folder:TRAIN,TEST "
                                           "(default ../shared/data/cifar10); pacs:ROOT for pacs; "
                                           "the content-photo folder for style-curves."),
        runs: Path = typer.Option(Path("runs/reproduce"), help="Training runs (resumable, shared "
                                  "between reproductions)."),
        jobs: int = typer.Option(1, min=1, help="Training runs at once (processes)."),
        ledger: Optional[Path] = typer.Option(None, help="bin-cifar, ibn-shift, divergence, pacs: "
                                              "also keep every finished run's result (and what "
                                              "the report measured on its model) in this JSON "
                                              "file, and count runs it records as finished "
                                              "(commit it to resume a long grid on a fresh "
                                              "checkout without runs/)."),
        seeds: Optional[str] = typer.Option(None, help="bin-cifar, ibn-shift, divergence, pacs: "
                                            "N (seeds 0..N-1 for every model) or MODEL=N,... "
                                            "(e.g. bn=5,bin=5: more seeds where the claim is "
                                            "the point; the rest keep the budget's)."),
        download: bool = typer.Option(False, help="cifar10:ROOT: download CIFAR-10 if missing."),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the classifiers "
                                     "(worth it for long GPU runs)."),
        style_model: Optional[str] = typer.Option(
            None, help="ibn-shift/divergence: the stylize model used as a style shift (default "
            "candy_bin); new-style, strokes: the base model (default four_styles_bin, which has "
            "seen several styles)."),
        style_image: Optional[str] = typer.Option(None, help="style-curves: style image "
                                                  "(default ../shared/data/styles/candy.jpg); "
                                                  "new-style: comma-separated unseen styles; "
                                                  "strokes: one style (default the_great_wave)."),
        vgg_weights: Optional[str] = typer.Option(None, help="style-curves/new-style: VGG weights (default "
                                                  "../shared/weights/vgg19_normalised_relu3_1.pth)."),
        device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
        status: bool = typer.Option(False, "--status", help="Show where this reproduction's "
                                    "training runs stand (finished / partial / new) and exit, "
                                    "training nothing."),
    ) -> None:
        from experiments.reproduce import Context, reproduce, run_status

        c = Context(budget=budget.value, out=out or Path("reports") / name, runs=runs, data=data,
                    jobs=jobs, ledger=ledger, seeds=seeds, device=_device(ctx, device), download=download,
                    compile=compile, command=_command(), style_model=style_model, style_image=style_image,
                    vgg_weights=vgg_weights)
        if status:
            typer.echo(run_status(name, c))
            return
        path = reproduce(name, c)
        typer.echo(f"wrote {path}")

    cmd.__doc__ = summary + "."
    return cmd


# The names and one-line summaries of experiments.reproduce.REPRODUCTIONS, written out here
# because importing that package pulls in torch, and `normlab --help` must stay light
# (tests/test_project.py checks that the two lists agree).
_SUMMARIES = {
    "bin-cifar": "BIN paper Table 1 / Fig. 1 / Fig. 2 on CIFAR-10 ResNets (bn, in, bn_in, bin, ibn_a)",
    "ibn-shift": "IBN-Net Table 1 appearance shifts (RGB+50, R+50, contrast ×1.5) + a style shift",
    "pacs": "PACS leave-one-domain-out, all four held-out domains, bn, ibn_a, ibn_b, bin",
    "divergence": "IBN-Net feature divergence by depth (appearance vs content)",
    "style-curves": "BIN paper Fig. 3 loss curves (in, bn, bn_in, bin) and Fig. 6 gates",
    "new-style": "new style by norm-only fine-tuning vs from scratch, at 5, 10 and 15 CPU-minutes",
    "strokes": "bigger strokes: multi-scale style loss vs single-scale at the same CPU time",
}
for _name, _summary in _SUMMARIES.items():
    app.command(_name)(_make(_name, _summary))


@app.command("sweep")
def sweep_cmd(
    ctx: typer.Context,
    data: str = typer.Option(..., help="cifar10:ROOT | folder:TRAIN,TEST | pacs:ROOT"),
    variants: str = typer.Option("bn,bin", help="Comma-separated: bn, in, bn_in, bin, ibn_a, "
                                 "ibn_b, gn, sn."),
    seeds: str = typer.Option("0", help="Comma-separated seeds."),
    depths: str = typer.Option("20", help="Comma-separated depths (CIFAR ResNet 6n+2, or 18/34/50)."),
    epochs: int = typer.Option(160, min=1, help="Epochs per run."),
    batch_size: int = typer.Option(128, min=2, help="Batch size per run."),
    lr: float = typer.Option(0.1, help="Peak SGD learning rate."),
    weight_decay: float = typer.Option(1e-4, help="Weight decay (not on norm parameters)."),
    schedule: str = typer.Option("step", help="step (paper: ÷10 at 50%/75%) or onecycle."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the cross-entropy."),
    image_size: Optional[int] = typer.Option(None, help="Input size (default: the arch's)."),
    train_subset: Optional[int] = typer.Option(None, min=2, help="Seeded subset of the training images."),
    test_subset: Optional[int] = typer.Option(None, min=2, help="Seeded subset of the test images."),
    train_domains: Optional[str] = typer.Option(None, help="pacs: training domains."),
    test_domains: Optional[str] = typer.Option(None, help="pacs: test domains."),
    runs: Path = typer.Option(Path("runs/reproduce"), help="Folder of the runs."),
    jobs: int = typer.Option(1, min=1, help="Runs at once (processes)."),
    ledger: Optional[Path] = typer.Option(None, help="Also keep every finished run's result in "
                                          "this JSON file; runs it records count as finished."),
    out: Optional[Path] = typer.Option(None, help="Write the summary table (Markdown) here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    amp: Optional[bool] = typer.Option(None, show_default=False, help=AMP_HELP + " How a run "
                                       "trains, not what it is: it does not change a run's "
                                       "folder. (default: auto)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
    status: bool = typer.Option(False, "--status", help="Show where the grid's runs stand "
                                "(finished / partial / new) and exit, training nothing."),
) -> None:
    """Train a grid variants × depths × seeds (finished runs skipped, unfinished ones resumed);
    print the summary table (mean ± sd over seeds, n, noise verdicts)."""
    from classify.train import TrainConfig
    from engine.io import check_output, write_text_atomic
    from experiments.reproduce.sweep import Ledger, plan, run_sweep, status_table, summary_table

    def ints(s: str, what: str) -> list[int]:
        try:
            return [int(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{what} must be comma-separated integers, got {s!r}") from None

    base = TrainConfig(data=data, epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, schedule=schedule,
                       label_smoothing=label_smoothing, image_size=image_size,
                       train_subset=train_subset, test_subset=test_subset,
                       train_domains=train_domains, test_domains=test_domains,
                       device=_device(ctx, device), **({} if amp is None else {"amp": amp}))
    base.validate()
    if out is not None and not status:  # checked before hours of training, not after
        check_output(out, kind="markdown", inputs=[ledger], overwrite=overwrite, what="--out")
    vs = [v.strip() for v in variants.split(",") if v.strip()]
    specs = plan(base.recipe(), vs, ints(seeds, "seeds"), ints(depths, "depths"), runs,
                 group=test_domains or "")
    book = Ledger(ledger) if ledger is not None else None
    if status:
        typer.echo(status_table(specs, book))
        return
    results = run_sweep(specs, jobs, ledger=book)
    md = summary_table(results, baseline=vs[0])
    typer.echo(md)
    if out is not None:
        write_text_atomic(out, md + "\n")
        typer.echo(f"wrote {out}")


@app.command("list")
def list_cmd() -> None:
    """List the reproductions."""
    for n, s in _SUMMARIES.items():
        typer.echo(f"{n:13s} {s}")
