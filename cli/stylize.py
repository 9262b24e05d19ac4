"""``normlab stylize ...``: train, run, compare, curves, bench — thin wrappers over the library."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional

import typer

from engine import config as C
from stylize.config import TrainConfig

from .config_options import GIVEN, Given, config_options

app = typer.Typer(help="Feed-forward style transfer (Johnson et al. 2016) with any norm: train, "
                       "run, compare, plot curves, benchmark.", no_args_is_help=True)


def _device(ctx: typer.Context, device: Optional[str]) -> str:
    return device or (ctx.obj or {}).get("device", "auto")


@app.command("train")
@config_options(TrainConfig, skip={"style_image", "device"},
                decls={"content_dir": ("--content",), "from_model": ("--from",),
                       "train_all": ("--train-all",), "channels_last": ("--channels-last",),
                       "overwrite": ("--overwrite",)})
def train_cmd(
    ctx: typer.Context,
    style_image: Optional[List[Path]] = typer.Option(
        None, "--style-image", show_default=False,
        help=C.help_text(C.field(TrainConfig, "style_image")) + " Required (here, in --config "
        "or --set)."),
    more_styles: Optional[List[Path]] = typer.Argument(None, help="More style images, e.g. "
                                                       "--style-image a.jpg b.jpg c.jpg.",
                                                       show_default=False),
    device: Optional[str] = typer.Option(None, help=C.help_text(C.field(TrainConfig, "device"))),
    override: Optional[str] = typer.Option(None, help="With --resume: comma-separated options that "
                                           "may differ from the checkpoint's recipe (e.g. lr)."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
    given: Given = GIVEN,
) -> None:
    """Train a style network with the VGG perceptual loss; writes <out>/model.safetensors.
    Under torchrun, trains data-parallel with synchronised batch statistics. Every option but
    --threads and --override is a field of stylize.config.TrainConfig."""
    import torch

    from cli import is_main_process, override_list
    from stylize.train import train

    if threads:
        torch.set_num_threads(threads)
    values = dict(given.values)
    images = [str(p) for p in list(style_image or []) + list(more_styles or [])]
    if images:  # given on the command line: wins over --config / --set
        given.explicit.add("style_image")
        values["style_image"] = images[0] if len(images) == 1 else images
    values["device"] = _device(ctx, given.pick("device", device))
    cfg = TrainConfig(**values)
    path = train(cfg, explicit=given.explicit, override=override_list(override))
    if is_main_process():
        typer.echo(str(path))


@app.command("list")
def list_cmd(
    runs: Path = typer.Option(Path("runs"), help="Also list the models of run folders under this folder."),
) -> None:
    """Shipped and local style models with their norm and styles (`run --style NAME` picks one;
    NAME:W,NAME:W blends them)."""
    from stylize.model import list_style_models

    found = list_style_models(runs)
    if not found:
        typer.echo(f"no style models (none shipped, none under {runs})")
        return
    for m in found:
        steps = f", {m.steps} steps" if m.steps else ""
        typer.echo(f"{m.name}  [{m.source}: {m.norm}{steps}]  styles: {', '.join(m.styles)}"
                   + (f"  ({m.path})" if m.source == "local" else ""))


@app.command("merge")
def merge_cmd(
    models: List[str] = typer.Argument(..., help="Two or more models fine-tuned from one base "
                                       "(`stylize train --from BASE`), or the base itself."),
    output: Path = typer.Option(..., "--output", "-o", help="The merged .safetensors file."),
    half: bool = typer.Option(False, "--half", help="Store floats as fp16 (half the size)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """One model with the styles of several norm-only fine-tunes of the same base (each new
    style adds only its rows of γ, β, ρ), e.g. styles trained separately or on other machines."""
    from stylize.model import merge_styles
    from stylize.train import save_model

    from cli import model_file
    from engine.io import check_output

    check_output(output, kind="safetensors", inputs=[model_file(m) for m in models],
                 overwrite=overwrite)
    net, names = merge_styles(models)
    save_model(output, net, {"style": names[0], "styles": names, "merged_from": list(models)},
               half=half)
    typer.echo(f"{output}: {len(names)} styles ({', '.join(names)})")


def _out_name(src: Path) -> str:
    """Output file name: same name, PNG for formats we do not write back."""
    return src.name if src.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif",
                                              ".tiff") else src.stem + ".png"


def _check_folder(folder: Path, what: str) -> None:
    from engine.io import check_folder_writable

    check_folder_writable(folder, what)


def plan_outputs(inputs: list[Path], output: Path, overwrite: bool = False,
                 others: "Iterable[str | Path | None]" = ()
                 ) -> tuple[list[tuple[Path, Path]], bool]:
    """(input, output) pairs for ``stylize run`` / ``stylize optimize`` and whether the output is
    one file, checked before any work: an image extension means a file (one input image only),
    anything else a folder (a name with an unknown extension is refused); no output may be an
    input or one of ``others`` (the model file, the style paintings), two inputs may not map to
    one output, existing outputs need ``overwrite``."""
    from engine.images import IMAGE_EXTENSIONS, list_images

    from engine.io import check_regular_file

    for src in inputs:
        if not src.is_dir():  # a FIFO or device would block the read forever
            check_regular_file(src, "input")
    suffix = output.suffix.lower()
    as_file = not output.is_dir() and suffix in IMAGE_EXTENSIONS
    if not output.is_dir() and suffix and not as_file:
        raise ValueError(f"output {output}: unknown image extension {output.suffix!r}; give an "
                         "image file name (.jpg, .png, ...) or a folder name without extension")
    jobs: list[tuple[Path, Path]] = []
    if as_file:
        if len(inputs) != 1 or inputs[0].is_dir():
            what = "a folder" if len(inputs) == 1 else f"{len(inputs)} inputs"
            raise ValueError(f"output {output} is an image file name, but {what} need an output "
                             "folder: give a folder name without extension")
        jobs.append((inputs[0], output))
        _check_folder(output.parent, "output folder")
        if output.is_dir():
            raise ValueError(f"output {output} is an existing folder")
    else:
        if output.exists() and not output.is_dir():
            raise ValueError(f"output folder {output} is an existing file")
        _check_folder(output, "output folder")
        for src in inputs:
            if src.is_dir():
                for f in list_images(src):
                    rel = f.relative_to(src)
                    base = output / src.name if len(inputs) > 1 else output
                    jobs.append((f, base / rel.parent / _out_name(f)))
            else:
                jobs.append((src, output / _out_name(src)))
    if not jobs:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    from engine.io import check_output, input_keys, is_input

    sources = input_keys([s for s, _ in jobs] + list(others))
    seen: dict[str, Path] = {}
    for src, dst in jobs:
        key = os.path.normcase(os.path.realpath(dst))
        if is_input(dst, sources):
            raise ValueError(f"output {dst} is one of the inputs; it is never overwritten: "
                             "choose another output")
        if as_file:  # the one rule of every command that writes a file (engine.io)
            check_output(dst, kind="image", keys=sources, overwrite=overwrite)
        if key in seen:
            raise ValueError(f"{seen[key]} and {src} would both be written to {dst}; rename one "
                             "or stylize them into different folders")
        seen[key] = src
        if dst.is_dir():
            raise ValueError(f"output {dst} is an existing folder")
    existing = [d for _, d in jobs if d.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ValueError(f"output {existing[0]} already exists{more}; use --overwrite to "
                         "replace it")
    return jobs, as_file


def _save(img, dst: Path) -> None:
    """``save_image`` with OS errors naming the user's path (not the temp file) and their cause,
    e.g. "no space left on device"."""
    from engine.images import save_image

    try:
        save_image(img, dst)
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc).split(":")[0]
        raise ValueError(f"cannot write {dst}: {why}") from None


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name, .safetensors or pytorch/examples .pth."),
    output: Path = typer.Option(..., "--output", "-o", help="Output image file (.jpg, .png, ...; one input image) or folder (several inputs or folders)."),
    style_image: Optional[str] = typer.Option(None, "--style-image", "-s", help="Any painting "
                                              "instead of a model (arbitrary style: encoder → "
                                              "WCT/AdaIN → decoders), or a blend "
                                              "a.jpg:0.7,b.jpg:0.3."),
    method: str = typer.Option("wct", help="With --style-image: wct (whitening and colouring, "
                               "Li et al. 2017) or adain (mean and std, Huang & Belongie 2017)."),
    alpha: float = typer.Option(1.0, help="With --style-image: 0 = the photo's features, 1 = fully transferred."),
    scales: str = typer.Option("1", help="With --style-image: coarse-to-fine factors, e.g. 2,1 "
                               "stylizes a half-size copy first (larger patterns; a region the "
                               "coarse pass blows out to flat white can come back as a flat "
                               "grey patch)."),
    style_size: Optional[int] = typer.Option(None, help="With --style-image: longest side the "
                                             "painting is encoded at (default: the photo's)."),
    vgg_weights: Optional[str] = typer.Option(None, help="With --style-image: the normalised "
                                              "VGG-19 encoder (default: searched in "
                                              "$NORMLAB_VGG_WEIGHTS, ~/.cache/normlab/weights)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files (inputs are never overwritten)."),
    max_size: Optional[int] = typer.Option(None, help="Process at most this longest side, scale back up."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Memory budget, e.g. 2G: larger images are processed in tiles with whole-image statistics (default: half the free RAM, or 80 % of free GPU memory)."),
    tile: Optional[int] = typer.Option(None, help="Force overlapping tiles of this size in px (default: automatic from --max-memory)."),
    preserve_color: bool = typer.Option(False, help="Keep the input's colours; transfer luminance only."),
    strength: float = typer.Option(1.0, help="0 = input, 1 = fully stylized."),
    gate: Optional[float] = typer.Option(None, help="BIN models: push every ρ toward IN (-1) or BN (+1)."),
    style: Optional[str] = typer.Option(None, help="Multi-style models: a style NAME (see `stylize "
                                        "list`) or a blend NAME:W,NAME:W (default: the first)."),
    fast: bool = typer.Option(False, help="torch.compile + bf16 autocast (--backend compiled) where the CPU has native bf16 (AVX-512 BF16 or AMX), fp16/bf16 autocast on a GPU; elsewhere what auto picks. Within 40 dB PSNR of fp32 (see `stylize bench`)."),
    backend: str = typer.Option("auto", help="auto (probes this machine: compiled bf16 for jobs that repay compiling on a native-bf16 CPU, else onnxruntime fp32; fp16/bf16 on a GPU), torch (fp32 eager), onnxruntime (CPU; exported once, cached, verified) or compiled."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
    momentum: Optional[float] = typer.Option(None, help="With --style-image on a video: weight of the past in the moving average of the frames' content statistics, in [0, 1) (default 0.9; 0 = each frame its own)."),
    refine: int = typer.Option(0, help="With --style-image on images: that many optimiser "
                               "(L-BFGS) iterations from the one-pass result, toward the "
                               "painting's Gram statistics and the photo's content: more of "
                               "the painting's marks, at the optimiser's cost per iteration "
                               "(a few seconds each at 384–512 px on 2 CPU cores; timings in "
                               "reports/style-quality)."),
) -> None:
    """Stylize images; the output has the input's size (and alpha). Folders map to folders.
    Outputs are checked before any work; existing files are kept unless --overwrite. A model
    whose ONNX export is cached runs without loading PyTorch (one-shot runs start fast).
    With --style-image, one video file in (.mp4, .mov, ...) gives a video out (frames at most
    512 px unless --max-size; fixed painting statistics; prints the flicker metric)."""
    from stylize.oneshot import BACKENDS
    from stylize.tiling import parse_memory

    budget = parse_memory(max_memory) if max_memory is not None else None
    if tile is not None and tile < 64:
        raise ValueError(f"--tile must be at least 64 px, got {tile}")
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if (model is None) == (style_image is None):
        raise ValueError("give either --model NAME or --style-image PAINTING")
    if style_image is not None and any(p.suffix.lower() in _VIDEO_SUFFIXES for p in inputs):
        if refine:
            raise ValueError("--refine applies to images, not a video (each frame would be "
                             "optimised on its own and flicker)")
        _run_painting_video(style_image, list(inputs), output, _device(ctx, device),
                            overwrite=overwrite, method=method, alpha=alpha, scales=scales,
                            style_size=style_size, vgg_weights=vgg_weights,
                            max_size=512 if max_size is None else (max_size or None),
                            momentum=0.9 if momentum is None else momentum,
                            preserve_color=preserve_color, strength=strength,
                            max_memory=budget, backend=backend)
        return
    if momentum is not None:
        raise ValueError("--momentum applies to a video with --style-image")
    if refine and style_image is None:
        raise ValueError("--refine applies with --style-image (a model's output is final)")
    if style_image is not None:
        from stylize.arbitrary import parse_paintings

        reads = list(parse_paintings(style_image))
    else:
        from cli import model_file

        reads = [model_file(model)]
    jobs, single = plan_outputs(list(inputs), output, overwrite, others=reads)
    total = len(jobs)
    dev = _device(ctx, device)
    failed: list[str] = []
    if style_image is not None:
        # the arbitrary path works at 1024 px unless told (--max-size 0: the photo's own size,
        # tiled beyond --max-memory / at --tile)
        _run_paintings(style_image, jobs, single, failed, dev, method=method, alpha=alpha,
                       scales=scales, style_size=style_size, vgg_weights=vgg_weights,
                       max_size=1024 if max_size is None else (max_size or None),
                       preserve_color=preserve_color, strength=strength, tile=tile,
                       max_memory=budget, backend=backend, refine=refine)
        jobs = []
    if jobs and backend in ("auto", "onnxruntime") and not fast and gate is None \
            and tile is None and style is None:
        from stylize.oneshot import run_jobs_cached

        jobs = run_jobs_cached(model, jobs, device=dev, backend=backend, max_size=max_size,
                               max_memory=budget, preserve_color=preserve_color,
                               strength=strength, save=_save, failed=failed, single=single)
    if jobs:
        _run_torch(model, jobs, single, failed, dev, budget, max_size=max_size, tile=tile,
                   preserve_color=preserve_color, strength=strength, gate=gate, fast=fast,
                   backend=backend, style=style)
    if failed:
        raise ValueError(f"{len(failed)} of {total} inputs could not be read (first: {failed[0]})")
    typer.echo(str(output))


def _run_paintings(spec: str, jobs: list, single: bool, failed: list[str], device: str, *,
                   method: str, alpha: float, scales: str, style_size: Optional[int],
                   vgg_weights: Optional[str], backend: str = "auto", **kw) -> None:
    """The ``stylize run --style-image`` jobs: painting statistics computed once for all."""
    from tqdm.auto import tqdm

    from engine.devices import resolve_device
    from engine.images import load_image
    from stylize.arbitrary import (METHODS, load_stylizer, parse_paintings, parse_scales,
                                   stylize_with_paintings, use_backend)
    from stylize.losses import find_encoder
    from stylize.tiling import max_image_pixels

    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {alpha}")
    factors = parse_scales(scales)
    paintings = parse_paintings(spec)
    dev = resolve_device(device)
    st = use_backend(load_stylizer(find_encoder(vgg_weights), device=dev), backend, dev)
    cache: dict = {}  # painting statistics per painting size: computed once per size
    refine = kw.pop("refine", 0)
    if refine:
        bar = tqdm(total=refine * len(jobs), desc="refine", unit="it", leave=False)
        done = [0]

        def tick(d: int, _t: int) -> None:
            bar.update(done[0] + d - bar.n)

        kw.update(refine=refine, refine_progress=tick)
    for src, dst in tqdm(jobs, desc=f"stylize {method}", unit="img", disable=len(jobs) == 1):
        try:
            img = load_image(src, max_pixels=max_image_pixels(kw.get("max_memory"), dev))
        except ValueError as exc:
            if single:
                raise
            failed.append(str(exc))
            continue
        _save(stylize_with_paintings(st, img, paintings, method=method, alpha=alpha,
                                     scales=factors, style_size=style_size,
                                     stats_cache=cache, **kw), dst)
        if refine:
            done[0] += refine
    if refine:
        bar.close()


_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")  # stylize.video's, torch-free


def _run_painting_video(spec: str, inputs: list[Path], output: Path, device: str, *,
                        overwrite: bool, method: str, alpha: float, scales: str,
                        style_size: Optional[int], vgg_weights: Optional[str],
                        max_size: Optional[int], momentum: float, backend: str,
                        **kw) -> None:
    """``stylize run --style-image P video.mp4 -o out.mp4``: one video, fixed painting
    statistics, content statistics averaged over frames (``momentum``)."""
    from engine.devices import resolve_device
    from engine.io import check_output, check_regular_file
    from stylize.arbitrary import (METHODS, load_stylizer, parse_paintings, parse_scales,
                                   use_backend)
    from stylize.losses import find_encoder
    from stylize.video import stylize_video_paintings, video_format

    if len(inputs) != 1:
        raise ValueError("a video is stylized on its own: give one video file per run")
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"--momentum must be in [0, 1), got {momentum}")
    video_format(output)
    check_regular_file(inputs[0], "input")
    paintings = parse_paintings(spec)
    check_output(output, kind="video", inputs=[inputs[0], *paintings], overwrite=overwrite)
    factors = parse_scales(scales)
    dev = resolve_device(device)
    st = use_backend(load_stylizer(find_encoder(vgg_weights), device=dev), backend, dev)
    try:
        report = stylize_video_paintings(st, inputs[0], output, paintings, method=method,
                                         alpha=alpha, scales=tuple(factors),
                                         style_size=style_size, max_size=max_size,
                                         smooth=momentum or None, **kw)
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc).split(":")[0]
        raise ValueError(f"cannot write {output}: {why}") from None
    typer.echo(report.summary())
    typer.echo(str(output))


def _run_torch(model: str, jobs: list, single: bool, failed: list[str], device: str,
               budget: Optional[int], **kw) -> None:
    """The ``stylize run`` jobs in torch (any backend, tiles, gates, styles); unreadable inputs
    go to ``failed`` (a single input raises)."""
    from tqdm.auto import tqdm

    from engine.devices import resolve_device
    from engine.images import load_image
    from stylize.infer import load_model, stylize_image
    from stylize.tiling import max_image_pixels

    from PIL import Image

    dev = resolve_device(device)  # "auto" is a real device before any size or budget uses it
    m = load_model(model, device=dev)
    sizes = []  # pixels per job from the headers: a long job may repay compiling (--backend auto)
    for src, _ in jobs:
        try:
            with Image.open(src) as im:
                w, h = im.size
            if kw.get("max_size") and max(w, h) > kw["max_size"]:
                w, h = w * kw["max_size"] / max(w, h), h * kw["max_size"] / max(w, h)
            sizes.append(w * h)
        except Exception:  # noqa: BLE001 - unreadable inputs are reported by load_image below
            sizes.append(0)
    left = float(sum(sizes))
    if kw.get("style") is not None:  # a bad name fails before any image is processed
        from stylize.model import style_names, use_style

        with use_style(m.net, kw["style"], style_names(m.meta, m.config.num_styles)):
            pass
    for (src, dst), px in tqdm(list(zip(jobs, sizes)), desc=f"stylize {m.name}", unit="img",
                               disable=len(jobs) == 1):
        try:
            # any size that the tiled path can hold within the budget, not a fixed pixel cap
            img = load_image(src, max_pixels=max_image_pixels(budget, dev))
        except ValueError as exc:
            if single:
                raise
            failed.append(str(exc))
            continue
        _save(stylize_image(m, img, device=dev, max_memory=budget, job_pixels=left, **kw), dst)
        left -= px


@app.command("video")
def video_cmd(
    ctx: typer.Context,
    input: Path = typer.Argument(..., help="Video file (anything FFmpeg reads: .mp4, .mov, .mkv, .webm, ...)."),
    model: str = typer.Option(..., "--model", "-m", help="Shipped model name, .safetensors or pytorch/examples .pth."),
    output: Path = typer.Option(..., "--output", "-o", help="Output video (.mp4, .mov, .mkv, .webm, .avi); fps and audio are kept."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    smooth: bool = typer.Option(False, "--smooth", help="Temporal stability: normalise with a moving average of the statistics over frames."),
    momentum: float = typer.Option(0.9, help="With --smooth: weight of the past in the moving average, in [0, 1)."),
    batch: int = typer.Option(4, help="Frames per forward pass."),
    max_size: Optional[int] = typer.Option(None, help="Process frames at most this longest side, scale back up."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Memory budget, e.g. 2G (limits the frame batch)."),
    gate: Optional[float] = typer.Option(None, help="BIN models: push every ρ toward IN (-1) or BN (+1)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
) -> None:
    """Stylize a video file frame by frame; prints the flicker metric (mean |Δ| between
    consecutive output frames over that of the input; lower is steadier)."""
    from stylize.infer import load_model
    from stylize.tiling import parse_memory
    from stylize.video import stylize_video, video_format

    from cli import model_file
    from engine.io import check_output, check_regular_file

    video_format(output)
    check_regular_file(input, "input")
    check_output(output, kind="video", inputs=[input, model_file(model)], overwrite=overwrite)
    budget = parse_memory(max_memory) if max_memory is not None else None
    dev = _device(ctx, device)
    m = load_model(model, device=dev)
    try:
        report = stylize_video(m, input, output, smooth=momentum if smooth else None, batch=batch,
                               max_size=max_size, gate=gate, device=dev, max_memory=budget)
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc).split(":")[0]
        raise ValueError(f"cannot write {output}: {why}") from None
    typer.echo(report.summary())
    typer.echo(str(output))


@app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    input: Path = typer.Argument(..., help="Content image."),
    models: str = typer.Option(..., "--models", help="Comma-separated model names or files; "
                               "NAME@G overrides a BIN model's gates by G in [-1, 1]."),
    output: Path = typer.Option(..., "--output", "-o", help="Grid image to write (.png/.jpg)."),
    max_size: int = typer.Option(512, help="Longest side of each cell."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated cell labels (default: name (norm))."),
    styles: Optional[str] = typer.Option(None, help="Semicolon-separated styles or blends of a "
                                         "multi-style model, one cell each (one model: every "
                                         "cell uses it), e.g. 'candy;mosaic;candy:0.5,mosaic:0.5'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file (inputs are never overwritten)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
) -> None:
    """One labelled grid of the same photo through several models (BIN paper, Fig. 4/5), or
    through the styles of one multi-style model."""
    from cli import model_file
    from engine.images import load_image, save_image
    from engine.io import check_output, check_regular_file
    from stylize.infer import compare_grid, load_model

    dev = _device(ctx, device)
    specs = [s.strip() for s in models.split(",") if s.strip()]
    check_regular_file(input, "input")
    check_output(output, kind="image", overwrite=overwrite,
                 inputs=[input] + [model_file(s.rpartition("@")[0] if "@" in s else s)
                                   for s in specs])
    cells = [s.strip() or None for s in styles.split(";")] if styles else None
    if cells is not None:
        if len(specs) == 1:
            specs = specs * len(cells)
        elif len(specs) != len(cells):
            raise ValueError(f"--styles has {len(cells)} entries for {len(specs)} models "
                             "(give one model, or one style per model)")
    names = [s.strip() for s in labels.split(",")] if labels else None
    if names is not None and len(names) != len(specs):
        raise ValueError(f"--labels has {len(names)} entries for {len(specs)} models")
    ms, gates = [], []
    for s in specs:  # "name@g": that cell with every BIN gate pushed by g (see `run --gate`)
        name, _, g = s.rpartition("@") if "@" in s else (s, "", "")
        try:
            gates.append(float(g) if g else None)
        except ValueError:
            raise ValueError(f"bad gate in {s!r}: use NAME@VALUE with VALUE in [-1, 1]") from None
        ms.append(load_model(name, device=dev))
    save_image(compare_grid(ms, load_image(input), max_size=max_size, labels=names, gates=gates,
                            styles=cells, device=dev), output)
    typer.echo(str(output))


@app.command("curves")
def curves_cmd(
    runs: List[Path] = typer.Argument(..., help="Run folders written by `stylize train`."),
    output: Path = typer.Option(..., "--output", "-o", help="Figure to write (.png)."),
    smooth: int = typer.Option(20, help="Moving-average window (steps)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Content and style loss per step for runs with different norms (BIN paper, Fig. 3), and the
    ρ histograms of BIN runs (Fig. 6)."""
    from engine.io import check_output
    from stylize.curves import plot_curves

    check_output(output, kind="figure", overwrite=overwrite,
                 inputs=[r / f for r in runs for f in ("metrics.jsonl", "model.safetensors")])
    plot_curves(runs, output, smooth=smooth)
    typer.echo(str(output))


@app.command("bench")
def bench_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to time (default: an untrained IN TransformerNet)."),
    sizes: Optional[str] = typer.Option(None, help="Square sizes to time, comma-separated (default 512,1024; with --train 256)."),
    repeats: int = typer.Option(3, help="Timed repetitions (median)."),
    compile: bool = typer.Option(False, "--compile", help="Also time torch.compile (bf16 fast path and fp32)."),
    onnx: bool = typer.Option(False, "--onnx", help="Also time the onnxruntime backend (CPU)."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
    tiling: bool = typer.Option(False, "--tiling", help="Instead: the any-size path. Each size is a photo upscaled to size², stylized in a fresh process within --max-memory; reports time per megapixel, peak RSS and PSNR against untiled."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="With --tiling: the memory budget, e.g. 2G (default: half the free RAM)."),
    untiled_up_to: int = typer.Option(0, help="With --tiling: also run sizes up to this untiled, for time per megapixel and PSNR."),
    photo: Optional[Path] = typer.Option(None, help="With --tiling / --video: the photo to use (default: the amber sample)."),
    video: bool = typer.Option(False, "--video", help="Instead: flicker of a clip panning across --photo (first size = crop size), without and with --smooth; --flashes adds a flashing square."),
    flashes: bool = typer.Option(False, "--flashes", help="With --video: a square flashing black/white at random places."),
    train: bool = typer.Option(False, "--train", help="Instead: seconds per training step of `stylize train` at the first size, per variant (--variants), as ratios to the first."),
    variants: Optional[str] = typer.Option(None, help="With --train: comma-separated variants (default: fp32 eager, channels_last, torch.compile, channels_last + compile, the bf16 ones where the CPU/GPU has native bf16, and checkpoint + preview every step)."),
    batch_size: int = typer.Option(4, help="With --train: batch size."),
    steps: int = typer.Option(5, help="With --train: timed steps per variant (after 2 untimed)."),
    norm: str = typer.Option("bin", help="With --train: the network's norm."),
    vgg_weights: Optional[str] = typer.Option(None, help="With --train: real VGG weights (default: random weights of the relu3_1 encoder's shape, same cost)."),
    content: Optional[Path] = typer.Option(None, help="With --train: a content folder (default: generated images)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
    style_image: Optional[str] = typer.Option(None, "--style-image", help="Instead: the arbitrary-style path (encoder → WCT/AdaIN → decoders, torch and onnxruntime) with this painting next to the feed-forward --model, as ratios to its fp32 eager time in one run (--vgg-weights: the encoder)."),
) -> None:
    """Inference ms per image: float32 eager vs the fast path, as ratios in one run, with the
    fast path's PSNR against float32 (bf16 is used only where PSNR ≥ 40 dB). With --tiling:
    time, peak memory and fidelity of the any-size (tiled) path. With --train: seconds (wall
    and CPU) per `stylize train` step per speed variant, as ratios in one run."""
    import json

    import torch

    from engine.io import write_text_atomic

    from stylize.bench import bench, to_markdown

    if json_out is not None:
        from engine.io import check_output

        check_output(json_out, kind="json", overwrite=overwrite, what="--json")
    if threads:
        torch.set_num_threads(threads)
    if sizes is None:
        sizes = "256" if train else "512,1024"
    try:
        sz = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--sizes must be integers, got {sizes!r}") from None
    if not sz or min(sz) < 16 or repeats < 1:
        raise ValueError("--sizes must be ≥ 16 and --repeats ≥ 1")
    if train:
        from engine.devices import cpu_native_bf16, resolve_device

        from stylize.bench import TRAIN_VARIANTS, bench_train, train_markdown

        dev = resolve_device(_device(ctx, device))
        if variants:
            chosen = [v.strip() for v in variants.split(",") if v.strip()]
        else:
            bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_native_bf16()
            chosen = [v for v in TRAIN_VARIANTS if bf16 or "bf16" not in v]
            if not bf16:
                typer.echo("(no native bf16 here: the bf16 variants are left out; name them in "
                           "--variants to time them anyway)", err=True)
        if steps < 1 or batch_size < 1:
            raise ValueError("--steps and --batch-size must be ≥ 1")
        if content is not None and not content.is_dir():
            raise ValueError(f"--content {content} is not a folder")
        rows = bench_train(chosen, size=sz[0], batch_size=batch_size, steps=steps, norm=norm,
                           device=str(dev), content_dir=str(content) if content else None,
                           vgg_weights=vgg_weights,
                           on_row=lambda r: typer.echo(f"{r['variant']}: {r['s_per_step']:.2f} s/step", err=True))
        typer.echo(f"training step, {sz[0]} px, batch {batch_size}, norm {norm}, {dev}, "
                   f"{torch.get_num_threads()} threads, {steps} timed steps each:")
        typer.echo(train_markdown(rows))
    elif style_image is not None:
        from stylize.bench import bench_arbitrary, machine_header

        if not Path(style_image).is_file():
            raise ValueError(f"--style-image {style_image} does not exist")
        if video:
            from stylize.bench import bench_arbitrary_flicker

            rows = bench_arbitrary_flicker(style_image, photo=str(photo) if photo else None,
                                           size=sz[0], device=_device(ctx, device),
                                           vgg_weights=vgg_weights, flashes=flashes)
            typer.echo("| content statistics | flicker (out/in mean abs diff) | "
                       "motion-aligned output diff |")
            typer.echo("|---|---:|---:|")
            for r in rows:
                sm = "per frame" if r["smooth"] is None else f"moving average {r['smooth']:g}"
                typer.echo(f"| {sm} | {r['flicker']:.3f} | "
                           f"{r['motion_aligned_output_diff']:.2f} |")
            if json_out:
                write_text_atomic(json_out, json.dumps(rows, indent=2, default=str))
            return
        typer.echo(machine_header())
        rows = bench_arbitrary(style_image, sz, repeats=repeats, model=model,
                               device=_device(ctx, device), vgg_weights=vgg_weights,
                               photo=str(photo) if photo else None)
        typer.echo("ratios: to the feed-forward fp32 eager row of the same size; PSNR: "
                   "onnxruntime against torch fp32 of the same path")
        typer.echo(to_markdown(rows))
    elif video:
        from stylize.bench import bench_flicker

        rows = bench_flicker(model or "candy_bin", photo=str(photo) if photo else None,
                             size=sz[0], device=_device(ctx, device), flashes=flashes)
        typer.echo("| smoothing | flicker (out/in mean abs diff) | motion-aligned output diff |")
        typer.echo("|---|---:|---:|")
        for r in rows:
            sm = "off" if r["smooth"] is None else f"momentum {r['smooth']:g}"
            typer.echo(f"| {sm} | {r['flicker']:.3f} | {r['motion_aligned_output_diff']:.2f} |")
    elif tiling:
        from stylize.bench import bench_tiling, tiling_markdown
        from stylize.tiling import parse_memory

        budget = parse_memory(max_memory) if max_memory is not None else None
        if photo is not None and not photo.is_file():
            raise ValueError(f"--photo {photo} does not exist")
        rows = bench_tiling(model or "candy_bin", sz, budget, device=_device(ctx, device),
                            photo=str(photo) if photo else None, untiled_up_to=untiled_up_to)
        typer.echo(tiling_markdown(rows, budget))
    else:
        from stylize.bench import machine_header

        typer.echo(machine_header())
        rows = bench(model, sz, repeats=repeats, compile=compile, device=_device(ctx, device),
                     onnx=onnx)
        typer.echo(to_markdown(rows))
    if json_out:
        write_text_atomic(json_out, json.dumps(rows, indent=2, default=str))


@app.command("export")
def export_cmd(
    src: str = typer.Argument(..., help="A shipped model name, a model.safetensors written by `stylize train`, or a run folder (or its checkpoint.pt): the newest checkpoint's weights, to look at a run before it ends."),
    dst: Path = typer.Argument(..., help="Where to write the exported model (.safetensors or .onnx)."),
    format: str = typer.Option("safetensors", "--format", help="safetensors (for normlab, fp16 by default) or onnx (dynamic batch/height/width, for onnxruntime and other runtimes)."),
    half: bool = typer.Option(True, help="safetensors: store weights as float16 (half the size)."),
    style: Optional[str] = typer.Option(None, help="onnx, multi-style models: the style NAME or blend NAME:W,NAME:W the graph holds (an ONNX graph holds one; required for a multi-style model)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file (inputs are never overwritten)."),
) -> None:
    """Copy a trained model for shipping (fp16 safetensors, metadata kept) or export it to ONNX."""
    from cli import model_file
    from engine.io import check_output, clip

    fmt = format.lower()
    if fmt not in ("safetensors", "onnx"):
        raise ValueError(f"--format must be safetensors or onnx, got {clip(format)!r}")
    if style is not None and fmt != "onnx":
        raise ValueError("--style picks the one style of an ONNX graph; a safetensors export "
                         "keeps every style (leave --style out)")
    src_file = model_file(src)
    if src_file is not None and src_file.is_dir():  # a run folder: its newest checkpoint
        from engine.trainer import CHECKPOINT
        src_file = src_file / CHECKPOINT
    check_output(dst, kind=fmt, inputs=[src_file], overwrite=overwrite)
    if fmt == "onnx":
        import dataclasses

        from stylize.deploy import export_onnx
        from stylize.infer import load_model
        from stylize.model import style_names, use_style

        m = load_model(src, device="cpu")
        names = style_names(m.meta, m.config.num_styles)
        if style is None and m.config.num_styles > 1:
            raise ValueError(f"{clip(src)} has {len(names)} styles ({', '.join(names)}) and an ONNX "
                             "graph holds one: pick it with --style NAME (or a blend NAME:W,NAME:W)")
        with use_style(m.net, style, names):
            if style is not None:
                m = dataclasses.replace(m, meta={**m.meta, "style": style})
            typer.echo(str(export_onnx(m, dst)))
        return
    from engine.io import check_regular_file
    from stylize.train import export_model

    if src_file is None or not src_file.exists():
        raise ValueError(f"{clip(src_file or src)} does not exist (safetensors export copies a "
                         "model file or a run's checkpoint)")
    check_regular_file(src_file, "model")
    typer.echo(str(export_model(src_file, dst, half=half)))


# ------------------------------------------------------------------------------ stylize score

def _default_vgg_weights() -> Optional[str]:
    """The normalised VGG-19 encoder found on ``weights.encoder_search_path``, if any."""
    import weights

    found = weights.find_encoder_file()
    return str(found) if found else None


def _style_map(text: Optional[str]) -> dict:
    out = {}
    for item in (text or "").split(","):
        if item.strip():
            stem, sep, name = item.partition("=")
            if not sep or not stem.strip() or not name.strip():
                raise ValueError(f"--style-map takes STEM=STYLE pairs (e.g. wave=the_great_wave), "
                                 f"got {item!r}")
            out[stem.strip()] = name.strip()
    return out


@app.command("score")
def score_cmd(
    ctx: typer.Context,
    methods: str = typer.Option("model:four_styles_bin", "--methods", help="Comma-separated "
                                "methods: model:NAME (a shipped name or .safetensors file), "
                                "wct, adain (any painting; wct:refine=30;alpha=0.8 sets their "
                                "--refine / --alpha), optimize, photo (the unchanged photo: "
                                "S = C = 0), or one registered by another module."),
    styles: str = typer.Option(..., "--styles", help="Comma-separated style images; a model's "
                               "style is the one named like the file (see --style-map)."),
    photos: Path = typer.Option(..., "--photos", help="Folder of content photos, e.g. "
                                "../shared/data/content (split by the content-split.json beside it)."),
    split: str = typer.Option("heldout", "--split", help="Which photos: heldout (never trained "
                              "on), train or all."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N photos of the split."),
    size: int = typer.Option(384, "--size", help="Short side of every scored photo (px)."),
    style_size: int = typer.Option(384, "--style-size", help="Short side of the style image "
                                   "the Gram targets come from (px)."),
    style_map: Optional[str] = typer.Option(None, "--style-map", help="STEM=STYLE,...: the model "
                                            "style to use for a style image named STEM.jpg."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON file: every cell and the means "
                                "per (method, style) and per method."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Contact sheet to write (.jpg or "
                                         ".png): photos × (style, method), S, C, time under each."),
    sheet_photos: int = typer.Option(4, "--sheet-photos", help="Rows of the contact sheet (the "
                                     "first N photos)."),
    vgg_weights: Optional[str] = typer.Option(None, "--vgg-weights", help="Loss network (must "
                                              "reach relu3_1; default: ../shared/weights/"
                                              "vgg19_normalised_relu3_1.pth)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
) -> None:
    """Score methods on held-out photos: style strength S = 1 − L_style(out)/L_style(photo)
    (Gram losses at relu1_1, relu2_1, relu3_1), content drift C (relative relu3_1 change) and
    seconds per image, with a contact sheet."""
    import json

    from engine.io import write_text_atomic

    specs = [m.strip() for m in methods.split(",") if m.strip()]
    style_files = [s.strip() for s in styles.split(",") if s.strip()]
    if output.suffix.lower() != ".json":
        raise ValueError(f"--output must be a .json file, got {output.name}")
    if sheet is not None and sheet.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise ValueError(f"--sheet must be a .jpg or .png file, got {sheet.name}")
    if sheet_photos < 1:
        raise ValueError(f"--sheet-photos must be at least 1, got {sheet_photos}")
    from cli import model_file
    from engine.io import check_output, same_file

    reads = style_files + [model_file(m[len("model:"):]) for m in specs if m.startswith("model:")]
    check_output(output, kind="json", inputs=reads, overwrite=overwrite, what="--output")
    if sheet is not None:
        if same_file(sheet, output):
            raise ValueError(f"--sheet {sheet} is the --output file; give them different names")
        check_output(sheet, kind="image", inputs=reads, overwrite=overwrite, what="--sheet")
    if threads < 0:
        raise ValueError(f"--threads must be ≥ 0, got {threads}")
    import torch

    from stylize.score import contact_sheet, markdown, parse_method, score, select_photos

    if threads:
        torch.set_num_threads(threads)
    for spec in specs:
        parse_method(spec)
    files = select_photos(photos, split, limit)
    mapping = _style_map(style_map)
    opts = {s: {"style_map": mapping} for s in specs if s.startswith("model:")}
    result = score(specs, style_files, files, size=size, style_size=style_size,
                   vgg_weights=vgg_weights or _default_vgg_weights(), device=_device(ctx, device),
                   method_opts=opts, sheet_photos=sheet_photos if sheet else 0)
    result.settings.update({"photos_folder": str(photos), "split": split, "limit": limit})
    write_text_atomic(output, json.dumps(result.to_dict(), indent=2))
    if sheet is not None:
        _save(contact_sheet(result, style_files), sheet)
    typer.echo(markdown(result))
    typer.echo(str(output) + (f"\n{sheet}" if sheet else ""))


from .stylize_any import register as _register_any  # noqa: E402  (commands on this sub-app)

_register_any(app, _device)
