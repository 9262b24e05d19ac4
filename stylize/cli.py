"""``normlab stylize ...``: train, run, compare, curves, bench — thin wrappers over the library."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from norms import NORM_NAMES

app = typer.Typer(help="Feed-forward style transfer (Johnson et al. 2016) with any norm: train, "
                       "run, compare, plot curves, benchmark.", no_args_is_help=True)

Norm = Enum("Norm", {n: n for n in NORM_NAMES}, type=str)


def _device(ctx: typer.Context, device: Optional[str]) -> str:
    return device or (ctx.obj or {}).get("device", "auto")


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    style_image: Path = typer.Option(..., "--style-image", help="The style image."),
    content: Path = typer.Option(..., "--content", help="Folder of content photos (searched recursively)."),
    norm: Norm = typer.Option("in", help="Normalization layer after every conv."),
    out: Path = typer.Option(Path("runs/stylize"), help="Run folder (checkpoint, metrics, previews, model)."),
    image_size: int = typer.Option(256, help="Training crop size (px)."),
    batch_size: int = typer.Option(4, help="Batch size."),
    steps: int = typer.Option(2000, help="Optimizer steps (ignored with --epochs)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the content folder instead of --steps."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (BIN gates get 10×)."),
    content_weight: Optional[float] = typer.Option(None, help="Content loss weight (default: per loss network)."),
    style_weight: Optional[float] = typer.Option(None, help="Style loss weight (default: per loss network)."),
    tv_weight: float = typer.Option(0.0, help="Total-variation weight."),
    style_size: Optional[int] = typer.Option(None, help="Resize the style image's shorter side to this."),
    seed: int = typer.Option(42, help="Random seed (init and data order)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
    amp: bool = typer.Option(False, help="bf16 autocast (CUDA only)."),
    checkpoint_every: int = typer.Option(200, help="Steps between checkpoints."),
    preview_every: int = typer.Option(0, help="Steps between preview images (0: none)."),
    resume: bool = typer.Option(False, help="Continue the run in --out exactly where it stopped."),
    vgg_weights: Optional[str] = typer.Option(
        None, help="VGG weights for the loss: a torchvision VGG-16/19 state dict or a normalised "
                   "VGG-19 encoder; 'torchvision' downloads VGG-16 once. Default: torchvision's cache."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """Train a style network with the VGG perceptual loss; writes <out>/model.safetensors."""
    import torch

    from .train import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(style_image=str(style_image), content_dir=str(content), norm=norm.value,
                      out=str(out), image_size=image_size, batch_size=batch_size, steps=steps,
                      epochs=epochs, lr=lr, content_weight=content_weight,
                      style_weight=style_weight, tv_weight=tv_weight, style_size=style_size,
                      seed=seed, device=_device(ctx, device), amp=amp,
                      checkpoint_every=checkpoint_every, preview_every=preview_every,
                      vgg_weights=vgg_weights)
    path = train(cfg, resume=resume)
    typer.echo(str(path))
