"""BIN paper (Nam & Kim 2018) Fig. 3 and Fig. 6 in style transfer: content and style loss curves
of the Johnson et al. network with IN, BN, BN+IN and BIN trained at an equal budget (same data,
steps, seed), and the learned ρ of the BIN network (Fig. 6: ρ moves toward IN)."""
from __future__ import annotations

import hashlib
import inspect
import json
import time
from pathlib import Path

import numpy as np

from engine.io import write_text_atomic
from engine.metrics import read_metrics

from .budgets import STYLE, shared_root, vgg_weights
from .report import (TESTS_NOTE, Report, gap_brief, gap_tests, keyed, mean_sd_table, noise_lines,
                     verdict_line)
from .stats import summarize

TITLE = "BIN paper Fig. 3 / Fig. 6: style-transfer loss curves of IN, BN, BN+IN and BIN"
NORMS = ("in", "bn", "bn_in", "bin")
RESULT = "result.json"
COLS = ("content loss", "style loss", "total")
INTRO = (
    "The BIN paper (Fig. 3) trains Johnson et al.'s feed-forward style-transfer network "
    "with IN, BN, BN+IN and BIN and reports that BIN ends with a slightly lower content loss "
    "than IN and a marginally higher style loss, and (Fig. 6) that the learned ρ of BIN moves "
    "toward IN (ρ → 0) in style transfer — the opposite of classification. Every norm is trained with the same seeds, photos and "
    "batch order, so gaps are tested paired by seed.")


def intro(data: dict) -> str:
    """The report's opening paragraph (the paper's claim)."""
    return INTRO


def _values(runs: list[dict]) -> dict[tuple[str, str], list[float]]:
    # in run order: the norms' lists share the seed order, which the paired test relies on
    vals: dict[tuple[str, str], list[float]] = {}
    for r in sorted(runs, key=lambda r: (NORMS.index(r["norm"]), r["seed"])):
        vals.setdefault((r["norm"], "content loss"), []).append(r["content_loss"])
        vals.setdefault((r["norm"], "style loss"), []).append(r["style_loss"])
        vals.setdefault((r["norm"], "total"), []).append(r["content_loss"] + r["style_loss"])
    return vals


def _seeds_match(runs: list[dict]) -> bool:
    by = {n: sorted(r["seed"] for r in runs if r["norm"] == n) for n in NORMS}
    return len({tuple(v) for v in by.values() if v}) == 1


def findings(data: dict) -> list[str]:
    """The headline lines, every number from ``data`` (results.json): the report's Findings and
    the READMEs' results sections."""
    vals = _values(data["runs"])
    pair = _seeds_match(data["runs"])
    found = gap_tests("in", list(NORMS), list(COLS), vals, pair=pair)
    n = sorted({summarize(v).n for v in vals.values()})
    out = [verdict_line(
        "BN+IN and BN end with a higher style loss than IN, BN the highest (BIN paper Fig. 3)",
        [(g, 1) for c, g in found if c == "style loss" and g.a in ("bn", "bn_in")],
        f"Scale: the early phase of training only (n = {'–'.join(map(str, n))} seeds; the "
        "paper trains about 40k steps on MS-COCO).")]
    for c in COLS[:2]:
        s = sorted(((v, summarize(vals.get((v, c), []))) for v in NORMS), key=lambda x: x[1].mean)
        out.append(f"- Final {c} (n = {'–'.join(map(str, n))} seeds), lowest first: "
                   + ", ".join(f"{v} {x.fmt(3)}" for v, x in s if x.n) + f"; gap to IN "
                   f"({'paired by seed' if pair else 'Welch'}; Holm over {len(found)} tests): "
                   + "; ".join(gap_brief(g, 3) for cc, g in found if cc == c) + ".")
    g = keyed(data.get("gates", {}))
    if g:
        out.append("- Learned ρ of BIN (initialised at 1 = BN): "
                   + ", ".join(f"{c} {summarize(v).fmt(3)}" for (_, c), v in g.items()
                               if c.endswith("mean ρ")) + ".")
    return out


def render(rep: Report, data: dict) -> None:
    """The Results sections from ``data`` (results.json) alone; updates its derived gaps."""
    runs = data["runs"]
    vals = _values(runs)
    pair = _seeds_match(runs)
    tail = runs[0].get("tail_steps", "the last tenth of the")
    rep.section("### Findings\n\n" + "\n".join(findings(data)))
    rep.section(f"### Final losses (mean over each run's last {tail} steps)"
                f"\n\nmean ± sd over seeds, n = seeds.\n\n"
                + mean_sd_table("norm", list(NORMS), list(COLS), vals, digits=3))
    lines, gaps = noise_lines("in", list(NORMS), list(COLS), vals, unit="", pair=pair)
    test = ("paired t-test by seed (same seeds, photos and batch order for every norm)" if pair
            else "Welch's t-test")
    rep.section(f"Gaps to IN (negative = lower loss than IN; {test}; {TESTS_NOTE}):\n\n"
                + "\n".join(lines))
    gates = keyed(data.get("gates", {}))
    if gates:
        gcols = list(dict.fromkeys(k[1] for k in gates))
        rep.section("### Fig. 6 statistics: learned ρ of the BIN network (initialised at 1 = BN)"
                    "\n\nmean ± sd over seeds.\n\n"
                    + mean_sd_table("network", ["BIN"], gcols, gates, digits=3))
    data["gaps"] = [g.to_dict() for g in gaps]


def _inputs(ctx) -> tuple[str, str, str | None]:
    content = ctx.data or str(shared_root() / "data" / "content")
    style = ctx.style_image or str(shared_root() / "data" / "styles" / "candy.jpg")
    if not Path(content).is_dir():
        raise ValueError(f"content photos not found at {content}; pass --data CONTENT_DIR")
    if not Path(style).is_file():
        raise ValueError(f"style image not found at {style}; pass --style-image FILE")
    return content, style, vgg_weights(ctx)


def _tail_mean(rows: list[dict], key: str, k: int) -> float:
    v = [r[key] for r in rows if key in r][-k:]
    return float(np.mean(v)) if v else float("nan")


def run_key(cfg, vgg: str | None) -> str:
    """10 hex digits naming a style-training run by what it learns (not where or how often it
    saves), so reports share and resume runs."""
    ident = {k: v for k, v in sorted(cfg.to_dict().items())
             if k not in ("out", "device", "checkpoint_every", "preview_every", "vgg_weights",
                          "overwrite")}
    ident["loss_network"] = Path(vgg).name if vgg else "test-encoder"
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]


def train_run(ctx, norm: str, seed: int, content: str, style: str, vgg: str | None) -> dict:
    """One style network (resumed when a checkpoint exists, read back when finished)."""
    from engine.devices import resolve_device

    import stylize.train as st
    b = STYLE[ctx.budget]
    # the residual head these reports were recorded with (run keys and results stay valid)
    cfg = st.TrainConfig(style_image=style, content_dir=content, norm=norm, image_size=b.image_size,
                         batch_size=b.batch_size, steps=b.steps, seed=seed,
                         device=str(resolve_device(ctx.device)), vgg_weights=vgg,
                         checkpoint_every=max(1, b.steps // 10), output="residual")
    folder = Path(ctx.runs) / f"stylize-{norm}-s{seed}-{run_key(cfg, vgg)}"
    cfg.out = str(folder)
    done = folder / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    params = inspect.signature(st.train).parameters
    kw = {"resume": (folder / st.CHECKPOINT).is_file()}
    cfg.overwrite = not kw["resume"]  # a run killed before its first checkpoint starts over
    if ctx.encoder is not None:
        kw["encoder"] = ctx.encoder
    kw = {k: v for k, v in kw.items() if k in params}
    t0 = time.perf_counter()
    st.train(cfg, **kw)
    rows = read_metrics(folder)
    k = max(1, b.steps // 10)
    res = {"norm": norm, "seed": seed, "folder": str(folder), "steps": len(rows),
           "content_loss": _tail_mean(rows, "content_loss", k),
           "style_loss": _tail_mean(rows, "style_loss", k), "tail_steps": k,
           "seconds": round(time.perf_counter() - t0, 1)}
    write_text_atomic(done, json.dumps(res, indent=1) + "\n")
    return res


def mean_curves_figure(runs: list[dict], smooth: int):
    """Content and style loss by step, moving average, mean over seeds per norm with the
    seeds' range as a band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for ax, key in zip(axes, ("content_loss", "style_loss")):
        positive = True
        for norm in NORMS:
            curves = []
            for r in runs:
                if r["norm"] == norm:
                    v = np.array([x[key] for x in read_metrics(Path(r["folder"])) if key in x])
                    if smooth > 1 and len(v) >= smooth:
                        v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
                    curves.append(v)
            if not curves:
                continue
            n = min(len(c) for c in curves)
            a = np.array([c[:n] for c in curves])  # seeds × steps
            xs = np.arange(n) + (smooth if smooth > 1 and n else 1)
            ax.plot(xs, a.mean(0), lw=1.2, label=f"{norm} (n={len(a)})")
            ax.fill_between(xs, a.min(0), a.max(0), alpha=0.2)  # range over seeds
            positive = positive and bool((a > 0).all())
        if positive:  # a residual-output network starts at content loss 0: no log scale then
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key.replace("_", " ") + (f" (moving avg {smooth})" if smooth > 1 else ""),
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("BIN Fig. 3: training losses, mean over seeds (band: range)", fontsize=10)
    fig.tight_layout()
    return fig


def sample_photos(k: int = 3) -> list[Path]:
    """The photos of the norm grid: the sample photos that ship in ``weights/samples``."""
    folder = Path(__file__).resolve().parents[2] / "weights" / "samples"
    return sorted(folder.glob("*.jpg"))[:k]


def norm_grid_figure(runs: list[dict], photos: list[Path], size: int):
    """BIN paper Fig. 4/5: each photo (shorter side ``size``) through the first seed's network
    of every norm."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    import stylize
    from engine.images import load_image, to_tensor

    first = {}
    for r in runs:
        first.setdefault(r["norm"], r)
    cols = [n for n in NORMS if n in first]
    nets = {n: stylize.load_model(Path(first[n]["folder"]) / "model.safetensors").net.eval()
            for n in cols}
    fig, axes = plt.subplots(len(photos), len(cols) + 1,
                             figsize=(2.4 * (len(cols) + 1), 1.9 * len(photos)), squeeze=False)
    for i, ph in enumerate(photos):
        img = load_image(ph).convert("RGB")
        s = size / min(img.size)
        img = img.resize((max(16, round(img.width * s)), max(16, round(img.height * s))))
        x = to_tensor(img)  # 1×3×H×W, 0–255
        axes[i][0].imshow(img)
        for j, n in enumerate(cols, start=1):
            with torch.no_grad():
                y = nets[n](x)[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
            axes[i][j].imshow(y)
            if i == 0:
                axes[i][j].set_title(n.upper().replace("_", "+"), fontsize=9)
        if i == 0:
            axes[i][0].set_title("photo", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _group(name: str) -> str:
    # stylize's TransformerNet: in1–in3 encoder, res* residual blocks, in4–in5 decoder
    return "residual" if name.startswith("res") else ("decoder" if name.split(".")[0] in
                                                       ("in4", "in5") else "encoder")


def run(ctx) -> Path:
    import norms
    import stylize
    from stylize.curves import plot_curves

    b = STYLE[ctx.budget]
    content, style, vgg = _inputs(ctx)
    rep = Report("style-curves", TITLE, ctx.out, ctx.budget, intro=INTRO)
    from tqdm.auto import tqdm

    runs = []
    for norm in tqdm(NORMS, desc="style-curves", leave=False):
        for seed in b.seeds:
            runs.append(train_run(ctx, norm, seed, content, style, vgg))
    rep.setup += [
        f"What ran: TransformerNet (Johnson et al. 2016; 32 base channels, 5 residual blocks) × "
        f"{', '.join(NORMS)}, {b.describe()}. Same content photos, style image, steps and seeds "
        f"for every norm. Expected cost: {b.estimate}.",
        f"Content photos: `{content}`; style image: `{style}`; loss network: "
        f"{'`' + vgg + '`' if vgg else 'a test encoder (not VGG: numbers are meaningless)'}"
        ". Weighted content/style losses as logged by `stylize train`.",
        "The paper (Sec. 4.3) follows Johnson et al.: 256 px, batch 4, 2 epochs of MS-COCO "
        "(80k images, ≈ 40k steps), VGG-16 loss network. `full` uses 40k steps at 256 px on "
        "normlab's 557 content photos"
        + ("." if ctx.budget == "full" else
           f"; this `{ctx.budget}` budget runs far fewer steps at a smaller size, so the "
           "curves show the early phase of training only."),
    ]
    gates: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r["norm"] != "bin":
            continue
        m = stylize.load_model(Path(r["folder"]) / "model.safetensors")
        by: dict[str, list[float]] = {}
        for L in norms.gate_report(m.net).layers:
            by.setdefault(_group(L.name), []).extend(L.values.float().tolist())
        for g, v in by.items():
            gates.setdefault(("BIN", f"{g} mean ρ"), []).append(float(np.mean(v)))
            gates.setdefault(("BIN", f"{g} ρ<0.5 (%)"), []).append(
                100.0 * float(np.mean(np.array(v) < 0.5)))
    rep.data.update(runs=runs, table={f"{k[0]} | {k[1]}": v for k, v in _values(runs).items()},
                    gates={f"{k[0]} | {k[1]}": v for k, v in gates.items()})
    render(rep, rep.data)
    smooth = max(1, min(20, b.steps // 10))
    rep.figure(mean_curves_figure(runs, smooth), "fig3_losses.png",
               "Fig. 3: content and style loss by step, mean over seeds (band: range over seeds)")
    photos = sample_photos()
    if photos:
        rep.figure(norm_grid_figure(runs, photos, b.image_size), "fig4_norms.png",
                   f"Fig. 4/5: photos through the seed-{b.seeds[0]} network of each norm (trained "
                   f"at {b.image_size} px, shown at that size)")
    first = [Path(r["folder"]) for r in runs if r["seed"] == b.seeds[0]]
    plot_curves(first, ctx.out / "fig3_fig6_seed.png", smooth=smooth)
    rep.add_png("fig3_fig6_seed.png", f"seed {b.seeds[0]}: loss curves per norm and the BIN "
                "network's ρ histograms by depth group (Fig. 6)")
    rep.commands += [ctx.command or f"normlab reproduce style-curves --budget {ctx.budget}",
                     "# one of the runs alone:",
                     f"normlab stylize train --style-image {style} --content {content} --norm bin "
                     f"--image-size {b.image_size} --batch-size {b.batch_size} --steps {b.steps} "
                     f"--seed {b.seeds[0]}" + (f" --vgg-weights {vgg}" if vgg else "")
                     + f" --out {first[-1]}",
                     f"normlab stylize curves {' '.join(map(str, first))} -o curves.png"]
    rep.train_seconds = sum(r["seconds"] for r in runs)
    return rep.write()

