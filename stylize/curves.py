"""Loss curves of runs with different norms (BIN paper, Fig. 3) and ρ histograms (Fig. 6)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from engine.io import atomic_path
from engine.metrics import read_metrics


def read_run(run: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(label, {"step", "content_loss", "style_loss"}) of a run folder from ``stylize train``."""
    run = Path(run)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise ValueError(f"{run} is not a stylize run folder (no metrics.jsonl)")
    rows = read_metrics(metrics)
    if not rows:
        raise ValueError(f"{metrics} has no steps yet")
    label = run.name
    cfg = run / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        label = f"{c.get('norm', '?')} ({run.name})"
    cols = {k: np.array([r[k] for r in rows], dtype=float) for k in ("step", "content_loss", "style_loss")}
    return label, cols


def _smooth(v: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(v) < k:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def plot_curves(runs: list[str | Path], output: str | Path, smooth: int = 20):
    """Write one figure: content loss, style loss (log scale, moving average) per step, plus the
    ρ histograms by depth group of every BIN run whose model.safetensors exists."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .infer import load_model

    if not runs:
        raise ValueError("curves needs at least one run folder")
    data = [read_run(r) for r in runs]
    gated = []
    for r in runs:
        f = Path(r) / "model.safetensors"
        if f.is_file():
            m = load_model(f)
            if m.has_gates:
                gated.append((Path(r).name, m))
    ncols = 2 + len(gated)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.4), squeeze=False)
    for key, ax in zip(("content_loss", "style_loss"), axes[0]):
        for label, cols in data:
            ax.plot(cols["step"], _smooth(cols[key], smooth), label=label, lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key.replace("_", " ") + (f" (moving avg {smooth})" if smooth > 1 else ""),
                     fontsize=9)
        ax.legend(fontsize=7)
    for ax, (name, m) in zip(axes[0][2:], gated):
        import norms

        groups = {"encoder": [], "residual": [], "decoder": []}
        for layer in norms.gate_report(m.net).layers:
            g = "residual" if layer.name.startswith("res") else (
                "decoder" if layer.name in ("in4", "in5") else "encoder")
            groups[g].append(layer.values.numpy())
        for g, vals in groups.items():
            if vals:
                ax.hist(np.concatenate(vals), bins=20, range=(0, 1), alpha=0.55, label=g)
        ax.set_xlabel("ρ  (0 = IN, 1 = BN)")
        ax.set_title(f"BIN gates: {name}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    output = Path(output)
    buf = io.BytesIO()
    fig.savefig(buf, format=output.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    with atomic_path(output) as tmp:
        tmp.write_bytes(buf.getvalue())
    return output
