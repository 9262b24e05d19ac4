"""``normlab classify ...``: train, evaluate, probe and benchmark classifiers (thin layer over the
library functions of ``classify``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from classify.config import TrainConfig
from engine import config as C

from .config_options import GIVEN, Given, config_options

app = typer.Typer(help="Classification networks with BN, IN, BN+IN, BIN and IBN: train, eval, "
                  "shift robustness, gates, feature divergence, predict, bench.",
                  no_args_is_help=True)

def _device(ctx: typer.Context, device: str | None) -> str:
    return device or (ctx.obj or {}).get("device", "auto")


@app.command("list")
def list_cmd() -> None:
    """List the registered architectures and the shipped trained models."""
    from classify import list_models, list_shipped

    typer.echo("architectures: " + ", ".join(list_models()))
    typer.echo("shipped: " + (", ".join(list_shipped()) or "none"))


@app.command("train")
@config_options(TrainConfig, skip={"device"}, decls={"overwrite": ("--overwrite",)})
def train_cmd(
    ctx: typer.Context,
    device: Optional[str] = typer.Option(None, help=C.help_text(C.field(TrainConfig, "device"))),
    override: Optional[str] = typer.Option(None, help="With --resume: comma-separated options that "
                                           "may differ from the checkpoint's recipe (e.g. lr)."),
    given: Given = GIVEN,
) -> None:
    """Train a classifier (BIN paper CIFAR recipe by default); writes OUT/model.safetensors,
    OUT/checkpoint.pt and OUT/metrics.jsonl. Under torchrun, trains data-parallel with
    synchronised batch statistics. Every option is a field of classify.config.TrainConfig."""
    from classify.train import train
    from cli import is_main_process, override_list

    cfg = TrainConfig(**{**given.values, "device": _device(ctx, given.pick("device", device))})
    path = train(cfg, explicit=given.explicit, override=override_list(override))
    if is_main_process():
        typer.echo(f"wrote {path}")


def _check_outputs(models: List[str], overwrite: bool, markdown: Optional[Path] = None,
                   figure: Optional[Path] = None) -> None:
    """``engine.io.check_output`` for a command's ``--out`` table and ``--plot`` figure, before
    any work: never a model it reads, never an existing file without ``--overwrite``, never
    each other."""
    from cli import model_file
    from engine.io import check_output

    inputs = [model_file(m) for m in models]
    if markdown is not None:
        check_output(markdown, kind="markdown", inputs=inputs, overwrite=overwrite, what="--out")
    if figure is not None:
        check_output(figure, kind="figure", inputs=inputs + [markdown], overwrite=overwrite,
                     what="--plot")


def _save_fig(fig, path: Path) -> None:
    from engine.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    typer.echo(f"wrote {path}")


def _write(path: Optional[Path], text: str) -> None:
    if path is not None:
        from engine.io import write_text_atomic

        write_text_atomic(path, text + "\n")
        typer.echo(f"wrote {path}")


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Shipped name, .safetensors file, or ARCH:FILE.pth."),
    data: str = typer.Option(..., help="cifar10:ROOT | folder:[TRAIN,]TEST | pacs:ROOT"),
    test_domains: Optional[str] = typer.Option(None, help="pacs: domains to evaluate on."),
    limit: Optional[int] = typer.Option(None, min=1, help="Seeded subset of this many test images."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
) -> None:
    """Top-1 / top-5 accuracy on the test set (per domain for PACS)."""
    from engine.devices import resolve_device

    from classify.analysis import eval_sets
    from classify.checkpoint import load_classifier
    from classify.train import evaluate

    dev = resolve_device(_device(ctx, device))
    clf = load_classifier(model, str(dev))
    sets = eval_sets(clf, data, test_domains, limit)  # fails before any output on bad data
    typer.echo("| model | test set | images | top-1 % | top-5 % |\n|---|---|---:|---:|---:|")
    for name, ds in sets.items():
        t1, t5 = evaluate(clf.model, ds, clf.mean, clf.std, dev)
        typer.echo(f"| {clf.name} | {name} | {len(ds)} | {t1:.2f} | {t5:.2f} |")


@app.command("shift")
def shift_cmd(
    ctx: typer.Context,
    models: List[str] = typer.Argument(..., help="Shipped names or .safetensors files."),
    data: str = typer.Option(..., help="Test data: cifar10:ROOT | folder:[TRAIN,]TEST | pacs:ROOT"),
    shifts: str = typer.Option("rgb_plus,red_plus,contrast,brightness,gamma,hue,grayscale,blur,jpeg",
                               help="Comma-separated NAME[=STRENGTH] (style:MODEL too); see "
                                    "`classify shifts`."),
    test_domains: Optional[str] = typer.Option(None, help="pacs: the test domain."),
    limit: Optional[int] = typer.Option(None, min=1, help="Seeded subset of this many test images."),
    out: Optional[Path] = typer.Option(None, help="Write the Markdown table here."),
    plot: Optional[Path] = typer.Option(None, help="Write the bar chart (PNG) here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (inputs are never overwritten)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
) -> None:
    """Robustness table: accuracy of each model on the clean and shifted test set."""
    from tqdm import tqdm

    import experiments  # noqa: F401  (registers style:MODEL shifts)
    from classify.analysis import eval_sets, shift_table
    from classify.checkpoint import load_classifier
    from classify.shift import parse_shift

    _check_outputs(models, overwrite, markdown=out, figure=plot)
    dev = _device(ctx, device)
    from engine.devices import resolve_device

    dev = str(resolve_device(dev))
    conds = [s.strip() for s in shifts.split(",") if s.strip()]
    for c in conds:
        parse_shift(c)
    clfs = [load_classifier(m, dev) for m in models]
    if len({c.image_size for c in clfs}) > 1:
        raise ValueError("models with different input sizes cannot share one shifted test set")
    ds = next(iter(eval_sets(clfs[0], data, test_domains, limit).values()))
    with tqdm(total=len(conds) + 1, desc="shifts") as bar:
        table = shift_table(clfs, ds, conds, dev,
                            progress=lambda c: (bar.set_postfix_str(c), bar.update()))
    md = table.to_markdown()
    typer.echo(f"{len(ds)} test images; top-1 % (change vs clean)\n" + md)
    _write(out, md)
    if plot is not None:
        _save_fig(table.figure(), plot)


@app.command("shifts")
def shifts_cmd() -> None:
    """List the appearance shifts with their default strengths."""
    from classify.shift import SHIFTS

    for s in SHIFTS.values():
        typer.echo(f"{s.name:11s} default {s.default:g} (range {s.lo:g}..{s.hi:g}): {s.help}")
    typer.echo("style:MODEL  strength 0..1: the image re-rendered by a stylize model")


@app.command("gates")
def gates_cmd(
    model: str = typer.Argument(..., help="A BIN model: shipped name or .safetensors file."),
    plot: Optional[Path] = typer.Option(None, help="Write the ρ histograms by stage (PNG) here."),
    out: Optional[Path] = typer.Option(None, help="Write the Markdown table here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (inputs are never overwritten)."),
) -> None:
    """BIN gate ρ per layer (0 = IN, 1 = BN) and histograms by stage (BIN paper Fig. 2)."""
    from classify.analysis import gates_figure
    from classify.checkpoint import load_classifier

    _check_outputs([model], overwrite, markdown=out, figure=plot)
    rep, fig = gates_figure(load_classifier(model))
    md = rep.to_markdown()
    typer.echo(md)
    _write(out, md)
    if plot is not None:
        _save_fig(fig, plot)


@app.command("divergence")
def divergence_cmd(
    ctx: typer.Context,
    models: List[str] = typer.Argument(..., help="Shipped names or .safetensors files."),
    data: str = typer.Option(..., help="pacs:ROOT (domains by name) or a test set (then domains "
                                       "are `test` and `shift:NAME[=S]`)."),
    domains: str = typer.Option(..., help="Two domains, e.g. photo,sketch or test,shift:grayscale."),
    limit: Optional[int] = typer.Option(1000, min=2, help="Images per domain (seeded subset)."),
    plot: Optional[Path] = typer.Option(None, help="Write the plot by depth (PNG) here."),
    out: Optional[Path] = typer.Option(None, help="Write the Markdown tables here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (inputs are never overwritten)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
) -> None:
    """IBN-Net feature divergence per layer between two domains, split into the part instance
    normalisation removes (D on per-channel means μ and stds σ) and the part it keeps."""
    from engine.devices import resolve_device

    from classify.analysis import divergence_figure, domain_sets, feature_divergence
    from classify.checkpoint import load_classifier

    _check_outputs(models, overwrite, markdown=out, figure=plot)
    dev = str(resolve_device(_device(ctx, device)))
    doms = [d.strip() for d in domains.split(",") if d.strip()]
    divs, texts = [], []
    for m in models:
        clf = load_classifier(m, dev)
        sets = domain_sets(clf, data, doms, limit, dev)
        a, b = (sets[d] for d in doms)
        d = feature_divergence(clf, a, b, (doms[0], doms[1]), dev)
        divs.append(d)
        texts.append(f"### {clf.name}: {doms[0]} vs {doms[1]} ({len(a)}/{len(b)} images)\n\n"
                     + d.to_markdown())
    md = "\n\n".join(texts)
    typer.echo(md)
    _write(out, md)
    if plot is not None:
        _save_fig(divergence_figure(divs), plot)


@app.command("predict")
def predict_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Shipped name, .safetensors file, or ARCH:FILE.pth."),
    images: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    topk: int = typer.Option(5, min=1, help="How many classes to show per image."),
    shift: Optional[str] = typer.Option(None, help="Apply NAME[=STRENGTH] to each image first."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
) -> None:
    """Top-k classes with probabilities for each image. Unreadable files are skipped with one line
    each, and the command then exits non-zero."""
    from engine.devices import resolve_device
    from engine.images import list_images, load_image

    import experiments  # noqa: F401  (registers style:MODEL shifts)
    from classify.analysis import predict
    from classify.checkpoint import load_classifier
    from classify.shift import apply_shift, parse_shift

    files = [f for p in images for f in list_images(p)]
    if not files:
        raise ValueError("no image files in " + ", ".join(map(str, images)))
    name, strength = parse_shift(shift) if shift else (None, None)
    dev = str(resolve_device(_device(ctx, device)))
    clf = load_classifier(model, dev)
    bad = 0
    for path in files:
        try:
            im = load_image(path).convert("RGB")
        except ValueError as exc:
            bad += 1
            typer.echo(f"skipped: {exc}", err=True)
            continue
        if name:
            im = apply_shift(im, name, strength, device=dev)
        top = predict(clf, im, topk)
        typer.echo(f"{path}: " + ", ".join(f"{n} {p:.3f}" for n, p in top))
    if bad:
        raise ValueError(f"{bad} of {len(files)} files could not be read")


@app.command("bench")
def bench_cmd(
    ctx: typer.Context,
    norms_: str = typer.Option("bn,in,bn_in,bin,ibn", "--norms", help="Norms to time (ibn: IBN-a placement)."),
    repeats: int = typer.Option(6, min=2, help="Interleaved rounds (median reported)."),
    resnet50_size: int = typer.Option(64, min=32, help="ResNet-50 input size (224 is the real one)."),
    models: str = typer.Option("resnet20,resnet50", help="resnet20 (batch 128, 32 px) and/or resnet50 (batch 32)."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0: torch's default)."),
    precisions: str = typer.Option("fp32", help="Comma-separated: fp32, bf16, fp16 (autocast); "
                                   "every ratio is to float32 BN in the same run."),
    out: Optional[Path] = typer.Option(None, help="Write the Markdown table here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (inputs are never overwritten)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
) -> None:
    """Training-step time per norm as ratios to BN in the same run (norms interleaved round by
    round): CIFAR ResNet-20 at batch 128 and ImageNet ResNet-50 at batch 32."""
    import torch

    from classify.bench import bench_steps

    from engine.devices import resolve_device

    _check_outputs([], overwrite, markdown=out)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(_device(ctx, device))
    names = [n.strip() for n in norms_.split(",") if n.strip()]
    md = bench_steps(dev, names, [m.strip() for m in models.split(",") if m.strip()], repeats,
                     resnet50_size, tuple(p.strip() for p in precisions.split(",") if p.strip()))
    typer.echo(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n" + md)
    _write(out, md)


@app.command("average")
def average_cmd(
    ctx: typer.Context,
    models: List[str] = typer.Argument(..., help="Two or more classifiers of the same model "
                                       "(shipped names or .safetensors), e.g. the ends of "
                                       "successive short cyclic-lr runs (--init)."),
    data: str = typer.Option(..., help="Training images for the batch-statistics pass: "
                             "cifar10:ROOT | folder:TRAIN[,TEST] | pacs:ROOT."),
    out: Path = typer.Option(..., help="Output .safetensors."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (inputs are never overwritten)."),
    half: bool = typer.Option(False, help="Store floating tensors as fp16."),
    batch_size: int = typer.Option(256, min=2, help="Batch size of the statistics pass."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
) -> None:
    """Stochastic weight averaging (SWA, Izmailov et al. 2018): average the weights, then
    recompute every BN/BIN running statistic with one pass over the training images."""
    from tqdm import tqdm

    from classify.swa import average_classifiers
    from engine.devices import resolve_device

    from cli import model_file
    from engine.io import check_output

    check_output(out, kind="safetensors", inputs=[model_file(m) for m in models],
                 overwrite=overwrite)
    dev = str(resolve_device(_device(ctx, device)))
    with tqdm(desc="batch statistics", unit="img", leave=False) as bar:
        def prog(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        path = average_classifiers(models, data, out, half=half, batch_size=batch_size,
                                   device=dev, progress=prog)
    typer.echo(f"wrote {path}: the average of {len(models)} models, batch statistics "
               "recomputed on the training images")


@app.command("export")
def export_cmd(
    src: Path = typer.Argument(..., help="A trained model.safetensors."),
    dst: Path = typer.Argument(..., help="Output .safetensors."),
    half: bool = typer.Option(True, help="Store floating tensors as fp16 (half the size)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file (the input is never overwritten)."),
) -> None:
    """Copy a trained classifier with its metadata, as fp16 by default (for shipping)."""
    from classify.checkpoint import export_classifier
    from cli import model_file
    from engine.io import check_output, check_regular_file

    src = model_file(str(src))
    check_regular_file(src, "model")
    check_output(dst, kind="safetensors", inputs=[src], overwrite=overwrite)
    path = export_classifier(src, dst, half=half)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
