"""``normlab classify ...``: train, evaluate, probe and benchmark classifiers (thin layer over the
library functions of ``classify``)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from norms.registry import NORM_NAMES

app = typer.Typer(help="Classification networks with BN, IN, BN+IN, BIN and IBN: train, eval, "
                  "shift robustness, gates, feature divergence, predict, bench.",
                  no_args_is_help=True)

Norm = Enum("Norm", {n: n for n in NORM_NAMES}, type=str)


def _device(ctx: typer.Context, device: str | None) -> str:
    return device or (ctx.obj or {}).get("device", "auto")


@app.command("list")
def list_cmd() -> None:
    """List the registered architectures and the shipped trained models."""
    from . import list_models, list_shipped

    typer.echo("architectures: " + ", ".join(list_models()))
    typer.echo("shipped: " + (", ".join(list_shipped()) or "none"))


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: str = typer.Option(..., help="cifar10:ROOT | folder:TRAIN[,TEST] | pacs:ROOT"),
    arch: str = typer.Option("resnet20", help="Architecture (see `classify list`)."),
    norm: Norm = typer.Option("bn", help="Normalization layer everywhere (ibn: IBN-a placement)."),
    out: Path = typer.Option(Path("runs/classify/run"), help="Output folder."),
    epochs: int = typer.Option(160, min=1, help="Epochs (lr ÷10 at 50% and 75%)."),
    batch_size: int = typer.Option(128, min=2),
    lr: float = typer.Option(0.1),
    weight_decay: float = typer.Option(1e-4),
    seed: int = typer.Option(0),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: global --device)."),
    amp: bool = typer.Option(False, help="Mixed precision (fp16 on CUDA, bf16 on CPU)."),
    image_size: Optional[int] = typer.Option(None, help="Input size (default: the arch's, 32 for CIFAR nets)."),
    train_subset: Optional[int] = typer.Option(None, min=2, help="Train on a seeded random subset of this many images."),
    test_subset: Optional[int] = typer.Option(None, min=1, help="Evaluate on a seeded subset."),
    train_domains: Optional[str] = typer.Option(None, help="pacs: comma-separated training domains."),
    test_domains: Optional[str] = typer.Option(None, help="pacs: comma-separated test domains."),
    download: bool = typer.Option(False, help="cifar10: download the dataset if missing."),
    resume: bool = typer.Option(False, help="Continue from OUT/last.pt exactly."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0: torch's default)."),
    eval_every: int = typer.Option(1, min=0, help="Epochs between test evaluations (0: only at the end)."),
) -> None:
    """Train a classifier (BIN paper CIFAR recipe by default); writes OUT/model.safetensors,
    OUT/last.pt and OUT/metrics.jsonl."""
    from .train import TrainConfig, train

    cfg = TrainConfig(arch=arch, norm=norm.value, data=data, out=str(out), epochs=epochs,
                      batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                      device=_device(ctx, device), amp=amp, image_size=image_size,
                      train_subset=train_subset, test_subset=test_subset,
                      train_domains=train_domains, test_domains=test_domains,
                      download=download, resume=resume, threads=threads,
                      eval_every=eval_every)
    path = train(cfg)
    typer.echo(f"wrote {path}")
