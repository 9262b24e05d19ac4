"""Bigger strokes with a shallow loss network: the multi-scale style loss (``--style-scales``)
against the usual single-scale loss, at the same CPU time, from the same base model.

The loss network stops at VGG-19 relu3_1 (receptive field ≈ 40 px), so the single-scale Gram
loss only sees textures smaller than that. Matching Gram matrices of 2× and 4× downsampled
copies of the output and the style image (``stylize.losses.PerceptualLoss``) lets the same
layers see 80 and 160 px. Each variant fine-tunes the whole shipped base network
(``stylize train --from BASE --train-all``) for one style and the same CPU time; held-out
photos are scored with every scale's Gram loss separately and with the wavelength of the
stylization (how large the strokes are, in pixels)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .budgets import shared_root, vgg_weights
from .new_style import split_photos, style_loss_fn, train_timed
from .report import Report, mean_sd_table, shown_path
from .style_curves import run_key

STYLE_MODEL = "four_styles_bin"  # the base every variant fine-tunes (--style-model)

TITLE = "Bigger strokes: multi-scale style loss vs single-scale, same CPU time"
DEFAULT_STYLE = "the_great_wave.jpg"


@dataclass(frozen=True)
class StrokesBudget:
    minutes: float  # CPU-minutes of one thread per variant (GPU: wall minutes)
    image_size: int
    batch_size: int
    heldout: int
    variants: tuple[tuple[int, ...], ...]  # the style scales of each run
    estimate: str = ""


BUDGETS: dict[str, StrokesBudget] = {
    "smoke": StrokesBudget(0.01, 32, 2, 4, ((1,), (1, 2)), "seconds"),
    "cpu": StrokesBudget(15, 192, 4, 16, ((1,), (1, 2), (1, 2, 4)),
                         "3 variants × 15 CPU-min = 45 CPU-min (about 25 min with --jobs 3 on 2 "
                         "free cores)"),
    "full": StrokesBudget(30, 256, 4, 32, ((1,), (1, 2), (1, 2, 4)), "on a GPU, minutes"),
}


def label(scales: tuple[int, ...]) -> str:
    return "scales " + ",".join(map(str, scales))


def _inputs(ctx) -> tuple[Path, str, str | None]:
    content = Path(ctx.data or shared_root() / "data" / "content")
    if not content.is_dir():
        raise ValueError(f"content photos not found at {content}; pass --data CONTENT_DIR")
    style = ctx.style_image or str(shared_root() / "data" / "styles" / DEFAULT_STYLE)
    if "," in style or not Path(style).is_file():
        raise ValueError(f"style image not found at {style}; pass --style-image FILE (one style)")
    return content, style, vgg_weights(ctx)


def style_net(path: Path, name: str):
    """The model at ``path`` in eval mode with style ``name`` selected."""
    import norms
    from stylize.model import load_style_net, style_names

    net, meta = load_style_net(path)
    net.eval()
    if net.config.conditional:
        names = [n.lower() for n in style_names(meta, net.config.num_styles)]
        norms.set_style(net, names.index(name.lower()))
    return net


def stroke_wavelength(y, x) -> float:
    """Power-weighted mean wavelength (px) of the stylization ``y − x`` (1×3×H×W, 0–255) in
    luminance: Σ P(f)/|f| / Σ P(f) over the 2-D spectrum without its DC term. Larger strokes put
    the power of what the network adds at lower frequencies, so the wavelength grows."""
    import torch

    d = (y - x)[0]
    lum = 0.299 * d[0] + 0.587 * d[1] + 0.114 * d[2]
    lum = lum - lum.mean()
    h, w = lum.shape
    win = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    p = torch.fft.rfft2(lum * win).abs() ** 2  # H × (W/2+1)
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    f = torch.sqrt(fy ** 2 + fx ** 2)
    keep = f > 0
    return float((p[keep] / f[keep]).sum() / p[keep].sum().clamp_min(1e-12))


def _paired_lines(rows: list[str], cols: list[str],
                  per: dict[tuple[str, str], list[float]]) -> tuple[list[str], list]:
    """Every variant against the first, every score, paired by photo (b − a: mean ± sd of the
    differences, paired t); the lines' tests form one Holm family."""
    from .report import p_brief
    from .stats import holm, paired, summarize

    ref = rows[0]
    keys = [(r, c) for r in rows[1:] for c in cols]
    gaps = holm([paired(per[(r, c)], per[(ref, c)], r, ref) for r, c in keys])
    lines = []
    for (r, c), g in zip(keys, gaps):
        d = summarize([x - y for x, y in zip(per[(r, c)], per[(ref, c)])])
        if g.test == "none":
            lines.append(f"- {c}, {r} − {ref}: {d.mean:+.3g} (n = {d.n}: n too small for a test)")
            continue
        verdict = "inside the noise" if g.in_noise else "larger than the noise"
        lines.append(f"- {c}, {r} − {ref}: {d.mean:+.3g} ± {d.sd:.2g} ({verdict}: paired t = "
                     f"{g.t:.2f}, df = {d.n - 1}, {p_brief(g)})")
    return lines, gaps


INTRO = (
    "normlab's loss network stops at VGG-19 relu3_1 (no deeper weights ship), whose "
    "receptive field is about 40 px, so a single-scale Gram loss cannot ask for strokes "
    "larger than that. The multi-scale style loss also matches the Gram matrices of 2× and "
    "4× downsampled copies of the output and the style image. Here each variant fine-tunes "
    "the whole shipped `{model}` network for `{style}` for the same "
    "CPU time; only the style scales of the training loss differ.")


def intro(data: dict) -> str:
    """The report's opening paragraph (what is measured and why)."""
    return INTRO.format(model=data.get("style_model", "candy_bin"),
                        style=Path(data["runs"][0]["style"]).name)


def _table(data: dict) -> tuple[list[str], list[str], dict]:
    per = {k: v for k, v in ((tuple(k.split(" | ", 1)), v) for k, v in data["scores"].items())}
    rows = [r["method"] for r in data["runs"]]
    cols = list(dict.fromkeys(c for _, c in per))
    return rows, cols, per


def findings(data: dict) -> list[str]:
    """The headline lines, every number from ``data`` (results.json): the report's Findings and
    the READMEs' results sections."""
    rows, cols, per = _table(data)
    lines, gaps = _paired_lines(rows, cols, per)
    n = len(per[(rows[0], cols[0])])
    keep = [c for c in cols if c.startswith("wavelength") or c == cols[-2]]  # strokes, coarsest
    return [f"- {len(rows)} variants, one run each, scored on n = {n} photos; differences to "
            f"`{rows[0]}` paired by photo, Holm over {len(gaps)} tests:"] + [
        "  " + ln for ln in lines if any(ln.startswith(f"- {c},") for c in keep)]


def render(rep: Report, data: dict) -> None:
    """The Results sections from ``data`` (results.json) alone."""
    rows, cols, per = _table(data)
    mins = data["runs"][0]["minutes"][-1]
    steps = {r["method"]: r["steps"][f"{mins:g}"] for r in data["runs"]}
    rep.section("### Findings\n\n" + "\n".join(findings(data)))
    rep.section("### Held-out scores\n\n" + mean_sd_table("variant", rows, cols, per, digits=3)
                + "\n\nSteps reached in the budget: "
                + ", ".join(f"{k}: {v}" for k, v in steps.items()) + ".")
    lines, gaps = _paired_lines(rows, cols, per)
    rep.section(f"Paired differences to `{rows[0]}` over the held-out photos (Holm–Bonferroni "
                f"over the {len(gaps)} tests, raw p beside it):\n\n" + "\n".join(lines))
    data["gaps"] = [g.to_dict() for g in gaps]


def _samples_figure(models: list[tuple[str, Path]], name: str, photos, style: str, size: int):
    """The style image, then three held-out photos through each variant."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    k = min(3, len(photos))
    fig, axes = plt.subplots(k, len(models) + 2, figsize=(2.6 * (len(models) + 2), 2.6 * k),
                             squeeze=False)
    st = Image.open(style).convert("RGB")
    nets = [(lab, style_net(p, name)) for lab, p in models]
    for i in range(k):
        x = photos.get(i).unsqueeze(0).float()
        axes[i][0].imshow(st)
        axes[i][1].imshow(x[0].permute(1, 2, 0).clamp(0, 255).byte().numpy())
        for j, (lab, net) in enumerate(nets, start=2):
            with torch.no_grad():
                axes[i][j].imshow(net(x)[0].permute(1, 2, 0).clamp(0, 255).byte().numpy())
            if i == 0:
                axes[i][j].set_title(lab, fontsize=9)
        if i == 0:
            axes[i][0].set_title("style", fontsize=9)
            axes[i][1].set_title(f"held-out photo ({size} px)", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plan(ctx) -> dict[str, Any]:
    """The runs (one spec per variant, for ``new_style.train_timed``) and the report's inputs."""
    from engine.devices import resolve_device
    from stylize.losses import load_vgg_encoder
    from stylize.model import resolve_model_file

    import stylize.train as st
    b = BUDGETS[ctx.budget]
    content, style, vgg = _inputs(ctx)
    device = str(resolve_device(ctx.device))
    base = str(resolve_model_file(ctx.style_model))
    # the same held-out photos as new-style (same split folder), never trained on
    train_dir, heldout = split_photos(content, Path(ctx.runs) / f"content-split-h{b.heldout}",
                                      b.heldout)
    encoder = ctx.encoder if ctx.encoder is not None else load_vgg_encoder(vgg)
    specs = []
    for scales in b.variants:
        # the residual head these reports were recorded with (run keys and results stay valid)
        cfg = st.TrainConfig(style_image=style, content_dir=str(train_dir), norm="bin",
                             image_size=b.image_size, batch_size=b.batch_size, steps=10**7, seed=0,
                             device=device, vgg_weights=vgg,
                             style_size=384, checkpoint_every=10, from_model=base, train_all=True,
                             style_scales=list(scales), output="residual")
        folder = Path(ctx.runs) / f"strokes-{Path(style).stem}-s{''.join(map(str, scales))}-" \
                                  f"{run_key(cfg, vgg)}"
        cfg.out = str(folder)
        specs.append({"style": style, "method": label(scales), "scales": list(scales),
                      "folder": str(folder), "device": device, "config": cfg.to_dict(),
                      "minutes": [b.minutes], "threads": 1, "encoder": ctx.encoder})
    return {"budget": b, "style": style, "vgg": vgg, "device": device, "base": base,
            "train_dir": train_dir, "heldout": heldout, "encoder": encoder,
            "specs": specs}


def run(ctx) -> Path:
    import torch
    from tqdm.auto import tqdm

    from stylize.train import ContentImages

    p = plan(ctx)
    b, style, vgg, specs = p["budget"], p["style"], p["vgg"], p["specs"]
    if ctx.jobs > 1 and ctx.encoder is None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(ctx.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(tqdm(pool.map(train_timed, specs), total=len(specs), desc="strokes"))
    else:
        results = [train_timed(j) for j in tqdm(specs, desc="strokes", leave=False)]
    for r, s in zip(results, specs):
        r["scales"] = s["scales"]

    name = Path(style).stem
    photos = ContentImages(p["heldout"], b.image_size)
    all_scales = sorted({f for v in b.variants for f in v})
    # one loss per scale (the runs' training loss, stylize.train.training_loss, at that scale
    # alone), so each variant is scored on every scale alike
    losses = {f: style_loss_fn(style, specs[0]["config"] | {"style_scales": [f]}, p["encoder"])
              for f in all_scales}
    cols = ["content"] + [f"style ×{f}" for f in all_scales] + ["wavelength (px)"]
    per: dict[tuple[str, str], list[float]] = {}
    for r in tqdm(results, desc="strokes: scoring", leave=False):
        net = style_net(Path(r["folder"]) / f"model_{b.minutes:g}min.safetensors", name)
        with torch.no_grad():
            for i in range(len(photos)):
                x = photos.get(i).unsqueeze(0).float()
                y = net(x)
                for f, fn in losses.items():
                    out = fn(y, x)
                    if f == all_scales[0]:
                        per.setdefault((r["method"], "content"), []).append(float(out["content_loss"]))
                    per.setdefault((r["method"], f"style ×{f}"), []).append(float(out["style_loss"]))
                per.setdefault((r["method"], "wavelength (px)"), []).append(stroke_wavelength(y, x))
    unit = "GPU wall minutes" if p["device"].startswith("cuda") else "CPU-minutes of one thread"
    rep = Report("strokes", TITLE, ctx.out, ctx.budget,
                 intro=intro({"style_model": ctx.style_model, "runs": results}))
    rep.setup += [
        "Variants: " + ", ".join("`--style-scales " + ",".join(map(str, v)) + "`"
                                 for v in b.variants) + "; "
        f"base `{shown_path(p['base'])}` (`stylize train --from … --train-all`), {b.image_size} px, batch "
        f"{b.batch_size}, Adam lr 1e-3, seed 0, style image at 384 px; "
        f"{len(list(Path(p['train_dir']).iterdir()))} training photos. Each run stops after "
        f"{b.minutes:g} {unit} (process CPU time). Expected cost: {b.estimate}.",
        f"Scores on {len(photos)} held-out photos (mean ± sd over photos, n = {len(photos)}): the "
        "weighted content loss, the style loss at each scale alone (`style ×f`: Gram loss of the "
        "f× downsampled output against the f× downsampled style image; lower is closer), and "
        "the power-weighted mean wavelength of the stylization (output − photo, luminance "
        "spectrum; larger = bigger strokes). One training run per variant (seed 0): the sd is "
        "over photos, not over training seeds.",
    ]
    rep.data.update(runs=results, style_model=ctx.style_model,
                    scores={f"{k[0]} | {k[1]}": v for k, v in per.items()})
    render(rep, rep.data)
    models = [(r["method"], Path(r["folder"]) / f"model_{b.minutes:g}min.safetensors")
              for r in results]
    rep.figure(_samples_figure(models, name, photos, style, b.image_size), "strokes.png",
               f"{name}: held-out photos after {b.minutes:g} {unit} of fine-tuning with each "
               "variant's style loss")
    s = ",".join(map(str, b.variants[-1]))
    rep.commands += [
        ctx.command or f"normlab reproduce strokes --budget {ctx.budget}",
        "# one variant alone:",
        f"normlab stylize train --from {ctx.style_model} --train-all --style-image {style} "
        f"--content PHOTOS --image-size {b.image_size} --style-size 384 --style-scales {s}"
        + (f" --vgg-weights {vgg}" if vgg else "") + " --out runs/strokes"]
    rep.train_seconds = sum(r["cpu_seconds"] for r in results)
    return rep.write()
