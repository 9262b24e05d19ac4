"""``normlab norms ...``: list the registered norms and benchmark them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

if TYPE_CHECKING:
    from torch import nn


def make_app(step_model: Callable[[str], nn.Module] | None = None) -> typer.Typer:
    """The ``norms`` sub-app. ``step_model(norm)`` builds the network whose training step the
    benchmark times (main.py passes the CIFAR ResNet-20 from ``classify``; ``norms`` itself
    imports nothing of ours)."""
    app = typer.Typer(help="Normalization layers: list them, benchmark them.",
                      no_args_is_help=True)

    @app.command("list")
    def list_norms() -> None:
        """List the registered norm names with one line on each."""
        from norms import CATALOG

        for spec in CATALOG.values():
            typer.echo(f"{spec.name:6s} {spec.description}")

    @app.command("bench")
    def bench(
        ctx: typer.Context,
        device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the global --device)."),
        shape: str = typer.Option("16,64,64,64", help="Layer input N,C,H,W."),
        repeats: int = typer.Option(20, min=3, help="Timed repetitions per figure (median is reported)."),
        step: bool = typer.Option(True, help="Also time a ResNet-20 training step per norm."),
        step_batch: int = typer.Option(128, min=2, help="Batch size of the training step."),
        step_norms: str = typer.Option("bn,in,bn_in,bin,ibn", help="Norms for the training step."),
        threads: int = typer.Option(0, min=0, help="CPU threads (0: torch's default)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON here."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
    ) -> None:
        """Time every registered norm (forward, forward+backward) against BatchNorm2d and a naive
        eq.-(3) BIN, and a ResNet-20 training step per norm, as ratios to BN in the same run."""
        import torch
        from tqdm import tqdm

        from engine import bench as _bench
        from norms import NORM_NAMES, check_names
        from engine.devices import resolve_device
        from engine.io import check_output, write_text_atomic

        if json_out is not None:
            check_output(json_out, kind="json", overwrite=overwrite, what="--json")
        dev = resolve_device(device or (ctx.obj or {}).get("device", "auto"))
        if threads:
            torch.set_num_threads(threads)
        try:
            dims = tuple(int(v) for v in shape.split(","))
        except ValueError:
            raise ValueError(f"--shape must be four integers N,C,H,W, got {shape!r}") from None
        if len(dims) != 4 or min(dims) < 1:
            raise ValueError(f"--shape must be four positive integers N,C,H,W, got {shape!r}")
        names = check_names(n.strip() for n in step_norms.split(",") if n.strip())
        devices = [dev] if dev.type != "cuda" else [torch.device("cpu"), dev]
        layers, steps = [], []
        for d in devices:
            with tqdm(total=repeats * (len(NORM_NAMES) + 1), desc=f"layers on {d.type}",
                      leave=False) as bar:
                layers += _bench.bench_layers(d, dims, repeats=repeats,
                                              progress=lambda n: (bar.set_postfix_str(n), bar.update()))
            if step and step_model is not None:
                rounds = max(3, repeats // 3)
                with tqdm(total=rounds * (len(names) + ("bn" not in names)),
                          desc=f"resnet20 step on {d.type}", leave=False) as bar:
                    steps += _bench.bench_train_step(
                        step_model, d, tuple(names), batch=step_batch, repeats=rounds,
                        progress=lambda n: (bar.set_postfix_str(n), bar.update()))
        typer.echo(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        typer.echo(_bench.layer_table(layers))
        if steps:
            typer.echo("")
            typer.echo(_bench.step_table(steps))
        if json_out is not None:
            write_text_atomic(json_out, _bench.to_json(layers, steps))
            typer.echo(f"wrote {json_out}")

    return app
