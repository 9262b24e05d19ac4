"""A new style in minutes (Dumoulin et al., ICLR 2017, Sec. 4): train only the normalization
parameters (γ, β and BIN's ρ, one new row of a conditional norm) of an existing style network
for a style it has never seen, versus training a whole network from scratch, at equal CPU time.
Losses are measured on held-out photos after each time budget."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from engine.io import write_text_atomic

from .budgets import shared_root, vgg_weights
from .report import Report, mean_sd_table, shown_path
from .style_curves import run_key

# the base (--style-model): a network that has seen several styles, as Dumoulin et al.'s
STYLE_MODEL = "four_styles_bin"

TITLE = "A new style in minutes: norm-only fine-tuning vs training from scratch"
METHODS = ("norm-only", "scratch")
# none of them a style of the base or of the style-quality report's unseen paintings
DEFAULT_STYLES = ("starry_night.jpg", "udnie.jpg", "brushstrokes.jpg")


@dataclass(frozen=True)
class NewStyleBudget:
    minutes: tuple[float, ...]  # evaluation points, in CPU-minutes of one thread (GPU: wall)
    image_size: int
    batch_size: int
    heldout: int  # held-out photos the losses are measured on
    reference_minutes: float  # a long from-scratch run of the first style (0: none)
    estimate: str = ""


BUDGETS: dict[str, NewStyleBudget] = {
    "smoke": NewStyleBudget((0.01, 0.02), 32, 2, 4, 0.03, "seconds"),
    "cpu": NewStyleBudget((5, 10, 15), 192, 4, 16, 30,
                          "3 styles × 2 methods × 15 CPU-min, the first style's scratch run "
                          "continued to 30 min: 1.75 CPU-hours (about 55 min with --jobs 3 on "
                          "2 free cores)"),
    "full": NewStyleBudget((5, 10, 15), 256, 4, 32, 120, "on a GPU, minutes of wall time"),
}


def _inputs(ctx) -> tuple[Path, list[str], str | None]:
    content = Path(ctx.data or shared_root() / "data" / "content")
    if not content.is_dir():
        raise ValueError(f"content photos not found at {content}; pass --data CONTENT_DIR")
    if ctx.style_image:
        styles = [s.strip() for s in ctx.style_image.split(",") if s.strip()]
    else:
        styles = [str(shared_root() / "data" / "styles" / s) for s in DEFAULT_STYLES]
    for s in styles:
        if not Path(s).is_file():
            raise ValueError(f"style image not found at {s}; pass --style-image A.jpg,B.jpg,...")
    return content, styles, vgg_weights(ctx)


def split_photos(content: Path, folder: Path, heldout: int) -> tuple[Path, Path]:
    """(train folder, held-out folder) of links to ``content``'s photos under ``folder``, from
    the project's one content split (``stylize.photos.content_split``: ``content-split.json``
    beside ``content``, else its fixed rule): every ``train`` photo, and the first ``heldout``
    of the held-out part (sorted by path), so the losses are measured on photos that neither
    these runs nor any shipped style model trained on (fewer where the split holds fewer)."""
    from stylize.photos import content_split

    parts = content_split(content)
    if len(parts["train"]) < 2 or not parts["heldout"]:
        raise ValueError(f"{content} has {len(parts['train'])} training and "
                         f"{len(parts['heldout'])} held-out photos; need at least 2 and 1")
    chosen = {"train": parts["train"], "heldout": parts["heldout"][:heldout]}
    tr, he = folder / "train", folder / "heldout"
    if not (tr.is_dir() and he.is_dir()):
        tmp = folder / ".split.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for name, files in chosen.items():
            d = tmp / name
            d.mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(files):
                dst = d / f"{i:05d}_{f.stem[:40]}{f.suffix.lower()}"
                try:
                    os.symlink(f.resolve(), dst)
                except OSError:  # no symlinks here: copy
                    shutil.copyfile(f, dst)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "heldout"):
            shutil.rmtree(folder / name, ignore_errors=True)
            (tmp / name).rename(folder / name)
        shutil.rmtree(tmp, ignore_errors=True)
    return tr, he


class _CpuClock:
    """Seconds of this process's CPU time (all threads), or wall time on a GPU."""

    def __init__(self, device: str) -> None:
        self.wall = device.startswith("cuda")

    def __call__(self) -> float:
        return time.perf_counter() if self.wall else time.process_time()


def train_timed(job: dict[str, Any]) -> dict[str, Any]:
    """One run, stopped at each of ``job['minutes']`` of CPU time (resumed exactly between
    them); the model at each point is kept as ``model_<m>min.safetensors``. Reused when done."""
    import torch

    import stylize.train as st
    folder = Path(job["folder"])
    done = folder / "result.json"
    if done.is_file():
        res = json.loads(done.read_text())
        if set(job["minutes"]) <= set(res["minutes"]):
            return res
    threads = torch.get_num_threads()
    torch.set_num_threads(job.get("threads", 1))  # CPU-minutes of one thread, comparable runs
    try:
        clock = _CpuClock(job["device"])
        spent_file = folder / "cpu_seconds.json"
        spent = json.loads(spent_file.read_text())["seconds"] if spent_file.is_file() else 0.0
        cfg = st.TrainConfig(**job["config"])
        encoder = job.get("encoder")
        for m in job["minutes"]:
            snap = folder / f"model_{m:g}min.safetensors"
            if snap.is_file():
                continue
            t0 = clock()
            base = spent
            resume = (folder / st.CHECKPOINT).is_file()

            def should_stop(base=base, t0=t0, m=m) -> bool:
                # charged as it goes, so a run killed mid-way resumes with the time it used
                # (less the ≤ checkpoint_every steps it loses)
                used = base + clock() - t0
                write_text_atomic(spent_file, json.dumps({"seconds": used}))
                return used >= m * 60

            kw: dict[str, Any] = {"resume": resume, "show_bar": False, "should_stop": should_stop}
            if encoder is not None:
                kw["encoder"] = encoder
            cfg.overwrite = not resume  # a run killed before its first checkpoint starts over
            final = st.train(cfg, **kw)
            spent = base + clock() - t0
            write_text_atomic(spent_file, json.dumps({"seconds": spent}))
            shutil.copyfile(final, snap)
        from stylize.model import load_style_net

        steps = {f"{m:g}": int(load_style_net(folder / f"model_{m:g}min.safetensors")[1]["steps"])
                 for m in job["minutes"]}
        res = {"style": job["style"], "method": job["method"], "folder": str(folder),
               "minutes": list(job["minutes"]), "steps": steps, "cpu_seconds": round(spent, 1)}
        write_text_atomic(done, json.dumps(res, indent=1) + "\n")
        return res
    finally:
        torch.set_num_threads(threads)


def trained_style_net(path: Path):
    """A run's model in eval mode with the style that run trained selected (its last row)."""
    import norms
    from stylize.model import load_style_net

    net, _ = load_style_net(path)
    net.eval()
    if net.config.conditional:
        norms.set_style(net, net.config.num_styles - 1)
    return net


def style_loss_fn(style_image: str, cfg: dict[str, Any], encoder):
    """The training loss of the run config ``cfg`` (``stylize.train.training_loss``: the same
    taps, weights, relative/absolute form and style scales) for the one style ``style_image``."""
    from stylize.train import TrainConfig, training_loss

    one = TrainConfig.from_dict(cfg | {"style_image": style_image, "style_weights": None,
                                       "tv_weight": 0.0})
    return training_loss(one, encoder)[1]


def heldout_losses(model_path: Path, loss_fn, photos) -> dict[str, float]:
    """Mean weighted content and style loss of a run's model (its trained style) over the
    held-out ``photos`` (a ``ContentImages``), in eval mode."""
    import torch

    net = trained_style_net(model_path)
    sums = {"content_loss": 0.0, "style_loss": 0.0}
    with torch.no_grad():
        for i in range(len(photos)):
            x = photos.get(i).unsqueeze(0).float()
            out = loss_fn(net(x), x)
            for k in sums:
                sums[k] += float(out[k]) / len(photos)
    return sums


def _loss_figure(rows: list[dict], unit: str):
    """Held-out style loss against time, one panel per style: norm-only vs scratch (and the
    long reference run as a dashed line where it ran)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    styles = list(dict.fromkeys(r["style"] for r in rows))
    fig, axes = plt.subplots(1, len(styles), figsize=(3.2 * len(styles), 2.8), squeeze=False)
    for ax, s in zip(axes[0], styles):
        for m, style in (("norm-only", "o-"), ("scratch", "s-")):
            pts = sorted((r["at_minutes"], r["style_loss"]) for r in rows
                         if r["style"] == s and r["method"] == m)
            if pts:
                ax.plot(*zip(*pts), style, label=m)
        for r in rows:
            if r["style"] == s and r["method"] == "scratch-reference":
                ax.axhline(r["style_loss"], ls="--", color="gray",
                           label=f"scratch, {r['at_minutes']:g} min")
                ax.axhline(1.5 * r["style_loss"], ls=":", color="gray", label="1.5× that")
        ax.set_title(Path(s).stem, fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.set_ylabel("held-out style loss", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _sample_figure(rows: list[dict], heldout: Path, size: int, minutes: tuple[float, ...]):
    """One held-out photo through every style × method at the first and last time point."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    from stylize.train import ContentImages

    photo = ContentImages(heldout, size).get(0).unsqueeze(0).float()
    styles = list(dict.fromkeys(r["style"] for r in rows))
    cols = [(m, t) for m in METHODS for t in (minutes[0], minutes[-1])]
    fig, axes = plt.subplots(len(styles), len(cols) + 1,
                             figsize=(1.9 * (len(cols) + 1), 1.9 * len(styles)), squeeze=False)
    for i, s in enumerate(styles):
        axes[i][0].imshow(photo[0].permute(1, 2, 0).clamp(0, 255).byte().numpy())
        axes[i][0].set_ylabel(Path(s).stem, fontsize=8)
        axes[i][0].set_title("photo" if i == 0 else "", fontsize=8)
        for j, (m, t) in enumerate(cols, start=1):
            r = next(x for x in rows if x["style"] == s and x["method"] == m)
            net = trained_style_net(Path(r["folder"]) / f"model_{t:g}min.safetensors")
            with torch.no_grad():
                y = net(photo)[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
            axes[i][j].imshow(y)
            if i == 0:
                axes[i][j].set_title(f"{m}, {t:g} min", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def ratio_gaps(ratio: dict[tuple[str, str], list[float]], cols: list[str]) -> list:
    """Per time point, the log of the per-style ratio norm-only ÷ scratch tested against 0 (a
    test paired by style); the time points form one Holm family."""
    import math

    from .stats import holm, paired

    gaps = []
    for c in cols:
        logs = [math.log(r) for r in ratio.get(("norm-only ÷ scratch", c), []) if r > 0]
        if logs:
            gaps.append(paired(logs, [0.0] * len(logs), "log(norm-only ÷ scratch)", "0"))
    return holm(gaps)


def ratio_line(label: str, g) -> str:
    """``- label: norm-only's style loss is 0.52× from-scratch's …`` from a ``ratio_gaps`` gap."""
    import math

    from .report import p_brief

    n = g.n_a
    verdict = ("n too small for a test" if g.test == "none" else
               "inside the noise" if g.in_noise else "larger than the noise")
    why = "" if g.test == "none" else f" (paired t = {g.t:.2f}, df = {n - 1}, {p_brief(g)})"
    return (f"- {label}: norm-only's style loss is {math.exp(g.diff):.2f}× from-scratch's "
            f"(geometric mean over n = {n} styles): {verdict}{why}")


INTRO = (
    "Dumoulin et al. (ICLR 2017, Sec. 4) show that a network trained on many styles learns a "
    "new one when only its normalization parameters are trained. Here the base is the "
    "shipped `{model}` network; for each style it has never seen, one new row of "
    "its (conditional) BIN parameters γ, β, ρ is trained, every other weight frozen "
    "(`stylize train --from`), against a whole BIN network trained from scratch "
    "(`stylize train`), on the same photos, for the same CPU time.")


def intro(data: dict) -> str:
    """The report's opening paragraph (the paper's claim)."""
    return INTRO.format(model=data.get("style_model", "candy_bin"))


def _unit(data: dict) -> str:
    if "unit" in data:
        return data["unit"]
    return "CPU-minutes of one thread" if "no GPU" in data.get("environment", "") else \
        "GPU wall minutes"


def _ratios(rows: list[dict]) -> dict[tuple[str, str], list[float]]:
    ratio: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["method"] == "norm-only":
            other = next(x for x in rows if x["method"] == "scratch" and x["style"] == r["style"]
                         and x["at_minutes"] == r["at_minutes"])
            ratio.setdefault(("norm-only ÷ scratch", f"{r['at_minutes']:g} min"), []).append(
                r["style_loss"] / other["style_loss"])
    return ratio


def _minutes(rows: list[dict]) -> list[float]:
    return sorted({r["at_minutes"] for r in rows if r["method"] in METHODS})


def findings(data: dict) -> list[str]:
    """The headline lines, every number from ``data`` (results.json): the report's Findings and
    the READMEs' results sections."""
    rows = data["rows"]
    cols = [f"{m:g} min" for m in _minutes(rows)]
    gaps = ratio_gaps(_ratios(rows), cols)
    return [f"- Held-out style loss, norm-only fine-tuning ÷ from scratch at equal "
            f"{_unit(data)}, tests over the {len(gaps)} time points Holm-adjusted:"] + [
        "  " + ratio_line(c, g) for c, g in zip(cols, gaps)]


def render(rep: Report, data: dict) -> None:
    """The Results sections from ``data`` (results.json) alone."""
    rows = data["rows"]
    minutes = _minutes(rows)
    unit = _unit(data)
    styles = list(dict.fromkeys(r["style"] for r in rows))
    rep.section("### Findings\n\n" + "\n".join(findings(data)))
    for key, label in (("style_loss", "style loss"), ("content_loss", "content loss")):
        cols = [f"{m:g} min" for m in minutes]
        vals = {}
        for r in rows:
            if r["method"] in METHODS:
                vals[(f"{Path(r['style']).stem} · {r['method']}", f"{r['at_minutes']:g} min")] = [r[key]]
        rnames = [f"{Path(s).stem} · {m}" for s in styles for m in METHODS]
        rep.section(f"### Held-out {label} by CPU time\n\n" + mean_sd_table(
            "style · method", rnames, cols, vals, digits=2))
    summary: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["method"] in METHODS:
            summary.setdefault((r["method"], f"style {r['at_minutes']:g} min"), []).append(r["style_loss"])
            summary.setdefault((r["method"], f"content {r['at_minutes']:g} min"), []).append(r["content_loss"])
    ratio = _ratios(rows)
    scols = [f"style {m:g} min" for m in minutes] + [f"content {m:g} min" for m in minutes]
    rep.section("### Summary over the styles\n\nmean ± sd over the styles (n = styles; the "
                "styles' loss scales differ, so the sd is mostly between styles).\n\n"
                + mean_sd_table("method", list(METHODS), scols, summary, digits=2)
                + "\n\nStyle loss of norm-only fine-tuning relative to from scratch at the same "
                "CPU time (per style, then mean ± sd over styles; < 1: fine-tuning is ahead):\n\n"
                + mean_sd_table("ratio", ["norm-only ÷ scratch"], [f"{m:g} min" for m in minutes],
                                ratio, digits=2))
    cols = [f"{m:g} min" for m in minutes]
    gaps = ratio_gaps(ratio, cols)
    rep.section("Paired test per time point (log of the per-style ratio, one-sample t-test "
                "against 0; Holm–Bonferroni over the time points, raw p beside it):\n\n"
                + "\n".join(ratio_line(c, g) for c, g in zip(cols, gaps)))
    data["summary"] = {f"{k[0]} | {k[1]}": v for k, v in {**summary, **ratio}.items()}
    data["gaps"] = [g.to_dict() for g in gaps]
    ref = [r for r in rows if r["method"] == "scratch-reference"]
    if ref:
        rr = ref[0]
        lines = [f"Reference: `{Path(rr['style']).stem}` trained from scratch for "
                 f"{rr['at_minutes']:g} {unit} ({rr['steps_at']} steps): held-out style loss "
                 f"{rr['style_loss']:.2f}, content loss {rr['content_loss']:.2f}."]
        for r in rows:
            if r["style"] == rr["style"] and r["method"] in METHODS:
                lines.append(f"- {r['method']} at {r['at_minutes']:g} min ({r['steps_at']} steps):"
                             f" style loss {r['style_loss'] / rr['style_loss']:.2f}× the reference")
        rep.section("### Against a long from-scratch run\n\n" + "\n".join(lines))


def plan(ctx) -> dict[str, Any]:
    """The runs of a new-style report (one spec per run, for ``train_timed``) and what the
    report needs besides: budget, styles, photo split, loss network and weights."""
    from engine.devices import resolve_device

    import stylize.train as st
    from stylize.losses import load_vgg_encoder
    from stylize.model import resolve_model_file

    b = BUDGETS[ctx.budget]
    content, styles, vgg = _inputs(ctx)
    device = str(resolve_device(ctx.device))
    base = str(resolve_model_file(ctx.style_model))
    split = Path(ctx.runs) / f"content-split-h{b.heldout}"
    train_dir, heldout = split_photos(content, split, b.heldout)
    encoder = ctx.encoder if ctx.encoder is not None else load_vgg_encoder(vgg)
    jobs = []
    for s in styles:
        for method in METHODS:
            # the residual head these reports were recorded with (run keys and results stay valid)
            cfg = st.TrainConfig(style_image=s, content_dir=str(train_dir), norm="bin",
                                 image_size=b.image_size, batch_size=b.batch_size,
                                 steps=10**7, seed=0, device=device, vgg_weights=vgg,
                                 style_size=384, checkpoint_every=10, output="residual",
                                 from_model=base if method == "norm-only" else None)
            jobs.append((s, method, cfg, b.minutes))
    if b.reference_minutes:
        # the long reference is the first style's scratch run, continued; it goes first so
        # parallel jobs finish together
        s, method, cfg, minutes = jobs.pop(1)
        jobs.insert(0, (s, method, cfg, minutes + (b.reference_minutes,)))
    specs = []
    for s, method, cfg, minutes in jobs:
        # the time points are not part of a run's identity: a run is continued to a later one
        folder = Path(ctx.runs) / f"new-style-{Path(s).stem}-{method}-{run_key(cfg, vgg)}"
        cfg.out = str(folder)
        specs.append({"style": s, "method": method, "folder": str(folder), "device": device,
                      "config": cfg.to_dict(), "minutes": list(minutes), "threads": 1,
                      "encoder": ctx.encoder})
    return {"budget": b, "styles": styles, "vgg": vgg, "device": device, "base": base,
            "train_dir": train_dir, "heldout": heldout, "encoder": encoder,
            "specs": specs}


def run(ctx) -> Path:
    p = plan(ctx)
    b, styles, vgg, device, base = p["budget"], p["styles"], p["vgg"], p["device"], p["base"]
    train_dir, heldout, encoder = p["train_dir"], p["heldout"], p["encoder"]
    specs = p["specs"]
    from tqdm.auto import tqdm

    if ctx.jobs > 1 and ctx.encoder is None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(ctx.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(tqdm(pool.map(train_timed, specs), total=len(specs), desc="new-style"))
    else:
        results = [train_timed(j) for j in tqdm(specs, desc="new-style", leave=False)]

    cfg0 = specs[0]["config"]
    from stylize.train import ContentImages

    photos = ContentImages(heldout, cfg0["image_size"])  # decoded once for every model
    loss_fns = {s: style_loss_fn(s, cfg0, encoder) for s in styles}  # Gram targets once per style
    rows = []
    for r in results:
        for m in r["minutes"]:
            loss = heldout_losses(Path(r["folder"]) / f"model_{m:g}min.safetensors",
                                  loss_fns[r["style"]], photos)
            method = r["method"] if m in b.minutes else "scratch-reference"
            rows.append({**r, "method": method, "at_minutes": m, **loss,
                         "steps_at": r["steps"].get(f"{m:g}")})
    rep = Report("new-style", TITLE, ctx.out, ctx.budget,
                 intro=intro({"style_model": ctx.style_model}))
    unit = "GPU wall minutes" if device.startswith("cuda") else "CPU-minutes of one thread"
    rep.setup += [
        f"Styles: {', '.join(f'`{Path(s).name}`' for s in styles)}; base model `{shown_path(base)}`.",
        f"Training: {b.image_size} px, batch {b.batch_size}, Adam lr 1e-3, seed 0, style image "
        f"at 384 px, multi-scale style loss (scales 1, 2); {len(list(train_dir.iterdir()))} "
        f"training photos. Each run stops at {', '.join(f'{m:g}' for m in b.minutes)} {unit} "
        "(process CPU time, so other load on the machine does not count) and resumes exactly "
        "between them. Expected cost: " + b.estimate + ".",
        f"Losses: the training loss's weighted content and style terms (same VGG layers, weights "
        f"and scales), averaged over {len(list(heldout.iterdir()))} held-out photos (the first "
        "of the project's content split, `stylize.photos`) that no run here trained on (what "
        "the base model itself saw: its entry in weights/manifest.json), at "
        f"{b.image_size} px, eval mode.",
        "One seed per (style, method): each cell is one run; the spread across styles is in the "
        "per-style table.",
    ]
    rep.data.update(runs=results, rows=rows, unit=unit, style_model=ctx.style_model)
    render(rep, rep.data)
    rep.figure(_loss_figure(rows, unit), "style_loss.png",
               "held-out style loss by CPU time, norm-only fine-tuning vs from scratch")
    rep.figure(_sample_figure([r for r in results if r["method"] in METHODS], heldout,
                              b.image_size, b.minutes), "samples.png",
               "a held-out photo: each new style after the first and the last time budget, "
               "norm-only fine-tuning vs from scratch")
    s0 = Path(styles[0])
    rep.commands += [
        ctx.command or f"normlab reproduce new-style --budget {ctx.budget}",
        "# one norm-only run alone (stop it when you like; --resume continues):",
        f"normlab stylize train --from {ctx.style_model} --style-image {s0} --content PHOTOS "
        f"--image-size {b.image_size} --style-size 384" + (f" --vgg-weights {vgg}" if vgg else "")
        + " --out runs/new-style"]
    rep.train_seconds = sum(r["cpu_seconds"] for r in results)
    return rep.write()
