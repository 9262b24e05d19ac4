"""Inference speed: float32 eager vs the fast path (inference_mode, channels_last, bf16 autocast
where the output stays within PSNR ≥ 40 dB of float32, optionally torch.compile), as ratios to
the float32 eager time measured in the same run."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch import nn

from engine.devices import resolve_device

from .model import TransformerNet

PSNR_MIN = 40.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two 0–255 images after clamping, as they would be saved."""
    mse = (a.float().clamp(0, 255) - b.float().clamp(0, 255)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()


def _time(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def machine_header() -> str:
    """One line on what the timings depend on: CPU model and its vector/matrix flags, torch's
    CPU capability, whether bf16 is native, threads, torch and onnxruntime versions."""
    from engine.devices import cpu_flags, cpu_model_name, cpu_native_bf16

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx_vnni", "avx2")))
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "absent"
    import os

    load = "/".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"CPU: {cpu_model_name()}; flags: {' '.join(flags) or 'none'}; torch capability "
            f"{torch.backends.cpu.get_cpu_capability()}; native bf16: "
            f"{'yes' if cpu_native_bf16() else 'no'}; {torch.get_num_threads()} threads; torch "
            f"{torch.__version__}, onnxruntime {ort}; load average {load}")


def bench(model: str | None, sizes: list[int], repeats: int = 3, compile: bool = False,
          device: str = "auto", onnx: bool = False) -> list[dict[str, Any]]:
    """Rows {size, variant, ms, ratio, psnr_db, used, first_ms}; ``used`` says whether the
    variant's output is good enough to be chosen (PSNR against float32 ≥ 40 dB). Variants are
    timed interleaved, one call each per round, and ``ratio`` is the median over rounds of the
    time over the fp32 eager time of the same round (robust to other load on the machine);
    ``first_ms`` is the first call (compilation, export warm-up). ``compile`` adds what
    ``--backend compiled`` / ``--fast`` run (torch.compile per input size, bf16 autocast,
    channels_last, frozen weights), a plain ``torch.compile`` under bf16 autocast as written by
    hand (the reference the library's path must match or beat) and fp32 torch.compile; ``onnx``
    (CPU) the onnxruntime backend."""
    import copy

    dev = resolve_device(device)
    if model:
        from .infer import load_model

        sm = load_model(model, device=dev)
        net = sm.net
    else:
        from .infer import StyleModel

        torch.manual_seed(0)
        net = TransformerNet(norm="in").to(dev)
        sm = StyleModel(net=net, config=net.config, name="untrained")
    net.eval()
    rows: list[dict[str, Any]] = []
    runner = None
    if onnx and dev.type == "cpu":
        try:
            from .deploy import OnnxStyleRunner, export_onnx
        except ImportError:  # pragma: no cover - onnxruntime is a dependency
            OnnxStyleRunner = None
        if OnnxStyleRunner is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = export_onnx(sm, f"{tmp}/m.onnx")
                runner = OnnxStyleRunner(path)
    compiled_model = None
    if compile:
        compiled_model = copy.copy(sm)
        compiled_model.compiled = None
        compiled_model.compiled_shapes = set()
        compiled32 = torch.compile(copy.deepcopy(net), dynamic=False)
        hand = torch.compile(copy.deepcopy(net), dynamic=False)  # what a user writes by hand
    for s in sizes:
        g = torch.Generator().manual_seed(s)
        x = (torch.rand(1, 3, s, s, generator=g) * 255).to(dev)
        xc = x.contiguous(memory_format=torch.channels_last)

        def eager():
            with torch.no_grad():
                return net(x)

        def fast_fp32():
            with torch.inference_mode():
                return net(xc)

        def fast_bf16():
            from engine.devices import amp_dtype

            with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype(dev)):
                return net(xc).float()

        variants: list[tuple[str, Callable[[], torch.Tensor]]] = [
            ("fp32 eager", eager),
            ("fp32 inference_mode + channels_last", fast_fp32),
            ("bf16 autocast eager (--fast before)", fast_bf16)]
        if compile:
            from .infer import _run_compiled

            def compiled_bf16():
                return _run_compiled(compiled_model, x)

            def compiled_fp32():
                with torch.inference_mode():
                    return compiled32(x)

            def hand_bf16():
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
                    return hand(x).float()

            variants += [("compiled bf16 (--backend compiled, --fast, auto for long jobs on a "
                          "bf16 CPU)", compiled_bf16),
                         ("plain torch.compile + bf16 autocast (reference)", hand_bf16),
                         ("torch.compile fp32", compiled_fp32)]
        if runner is not None:
            variants.append(("onnxruntime fp32 (auto, one-shot)", lambda: runner(x)))
        outs, first = {}, {}
        for name, fn in variants:  # warm-up: compilation, allocator, onnxruntime arenas
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            outs[name] = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            first[name] = (time.perf_counter() - t) * 1000
        times: dict[str, list[float]] = {n: [] for n, _ in variants}
        for _ in range(repeats):
            for name, fn in variants:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t)
        ref_name = variants[0][0]
        ref = outs[ref_name]
        for name, _ in variants:
            ratios = [a / b for a, b in zip(times[name], times[ref_name])]
            q = float("inf") if name == ref_name else psnr(outs[name], ref)
            rows.append({"size": s, "variant": name,
                         "ms": statistics.median(times[name]) * 1000,
                         "ratio": statistics.median(ratios), "psnr_db": q,
                         "used": q >= PSNR_MIN, "first_ms": first[name]})
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| size | variant | ms/image | × fp32 eager (paired) | first call ms | "
             "PSNR vs fp32 (dB) | quality ok (≥ 40 dB) |", "|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        q = "—" if r["psnr_db"] == float("inf") else f"{r['psnr_db']:.1f}"
        first = f"{r['first_ms']:.0f}" if r.get("first_ms") is not None else "—"
        lines.append(f"| {r['size']}² | {r['variant']} | {r['ms']:.0f} | {r['ratio']:.2f} | "
                     f"{first} | {q} | {'yes' if r['used'] else 'no'} |")
    return "\n".join(lines)


def _tiling_child(args_json: str) -> None:
    """Run in a fresh process by ``bench_tiling``: what ``stylize run`` does for one image
    (load, stylize within the budget, save); prints a JSON line with the timings."""
    import json
    import resource

    from engine.images import load_image, save_image

    from .infer import load_model, stylize_image
    from .tiling import plan_memory

    a = json.loads(args_json)
    m = load_model(a["model"], device=a["device"])
    t0 = time.perf_counter()
    img = load_image(a["photo"], max_pixels=10**9)
    plan = plan_memory(img.size[0], img.size[1], m.config, device=resolve_device(a["device"]),
                       max_memory=a["max_memory"], tile=a.get("tile"))
    t1 = time.perf_counter()
    c1 = time.process_time()
    out = stylize_image(m, img, device=a["device"], max_memory=a["max_memory"], tile=a.get("tile"),
                        bar=False)
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    save_image(out, a["out"])
    print(json.dumps({"tile": plan.tile, "thumbnail": plan.thumbnail_side, "load_s": t1 - t0,
                      "stylize_s": t2 - t1, "cpu_s": cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_tiling(model: str, sizes: list[int], max_memory: int | None, device: str = "cpu",
                 photo: str | None = None, untiled_up_to: int = 0) -> list[dict[str, Any]]:
    """Any-size path: for each size, a photo upscaled to size×size is stylized in a fresh process
    (as ``stylize run`` would) within ``max_memory`` bytes, measuring wall time and peak RSS
    (``ru_maxrss``, the whole process: Python, torch, images, activations); sizes up to
    ``untiled_up_to`` are also run untiled, and tiled with the same tiles but statistics of the
    whole image (the thumbnail is the image: what ``tile`` does when the image fits), to compare
    time per megapixel and PSNR. CPU seconds are reported too: on a shared machine they vary
    less than wall time."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image

    import weights

    src = Image.open(photo or weights.SAMPLES_DIR / "amber.jpg").convert("RGB")
    rows: list[dict[str, Any]] = []
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        for s in sizes:
            inp = Path(tmp) / f"photo_{s}.png"
            src.resize((s, s), Image.BICUBIC).save(inp)
            outs: dict[str, Path] = {}
            modes: list[tuple[str, int | None, int | None]] = [("tiled", max_memory, None)]
            for mode, budget, tile in modes:
                out = Path(tmp) / f"out_{s}_{mode}.png"
                args = json.dumps({"model": model, "device": device, "photo": str(inp),
                                   "max_memory": budget, "out": str(out), "tile": tile})
                proc = subprocess.Popen(
                    [sys.executable, "-c", f"from stylize.bench import _tiling_child; "
                                           f"_tiling_child({args!r})"],
                    cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                t = time.perf_counter()
                stdout, stderr = proc.communicate()
                wall = time.perf_counter() - t
                if proc.returncode != 0:
                    last = (stderr.strip().splitlines() or ["?"])[-1]
                    raise RuntimeError(f"{mode} run at {s}² failed: {last}")
                r = json.loads(stdout.strip().splitlines()[-1])
                outs[mode] = out
                rows.append({"size": s, "mode": mode, "tile": r["tile"],
                             "thumbnail": r["thumbnail"], "stylize_s": r["stylize_s"],
                             "cpu_s": r["cpu_s"], "s_per_mp": r["stylize_s"] / (s * s / 1e6),
                             "wall_s": wall, "peak_rss_mb": r["peak_rss_mb"], "psnr_db": None})
                if mode == "tiled" and s <= untiled_up_to and r["tile"]:
                    modes += [("tiled, whole-image statistics", 2**50, r["tile"]),
                              ("untiled", 2**50, None)]
            if "untiled" in outs:
                ref = torch.from_numpy(np.asarray(Image.open(outs["untiled"]), dtype=np.float32))
                for row in rows[-len(outs):]:
                    if row["mode"] != "untiled":
                        a = np.asarray(Image.open(outs[row["mode"]]), dtype=np.float32)
                        row["psnr_db"] = psnr(torch.from_numpy(a), ref)
            os.remove(inp)
    return rows


def tiling_markdown(rows: list[dict[str, Any]], max_memory: int | None) -> str:
    """The ``bench_tiling`` rows as a Markdown table."""
    budget = "default" if max_memory is None else f"{max_memory / 2**30:.2g} GiB"
    lines = [f"| size | mode (budget {budget}) | tile | thumbnail | s | CPU s | CPU s/MP | "
             "peak RSS MB | PSNR vs untiled (dB) |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        q = "—" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
        lines.append(f"| {r['size']}² | {r['mode']} | {r['tile'] or '—'} | {r['thumbnail']} | "
                     f"{r['stylize_s']:.1f} | {r['cpu_s']:.1f} | {r['cpu_s'] / (r['size'] ** 2 / 1e6):.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {q} |")
    return "\n".join(lines)


def bench_flicker(model: str, photo: str | None = None, frames: int = 24, size: int = 256,
                  momenta: tuple[float, ...] = (0.5, 0.9), device: str = "cpu",
                  flashes: bool = False) -> list[dict[str, Any]]:
    """Flicker (output mean |Δ| / input mean |Δ| between consecutive frames) of a clip made from
    a real photo — a ``size``-px square crop panning across it (4 px per frame), encoded as
    H.264 — stylized without and with stream-statistics smoothing. ``flashes`` adds a square
    flashing black/white at random places (what per-frame statistics react to). Also reports
    the motion-aligned output difference (consecutive frames shifted by the known pan), which
    measures instability without the motion."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from .infer import load_model
    from .video import read_clip, stylize_video, write_clip

    clip = _pan_clip(photo, frames, size, flashes)
    m = load_model(model, device=device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = write_clip(clip, Path(tmp) / "pan.mp4", fps=24)
        for mom in (None, *momenta):
            r = stylize_video(m, src, Path(tmp) / "out.mp4", smooth=mom, device=device,
                              bar=False)
            # the pan is known (2 px down, 4 px right per frame): aligned consecutive frames
            # differ only by what is not motion — the temporal instability itself
            out = [f.astype(np.float32) for f in read_clip(Path(tmp) / "out.mp4")[0]]
            aligned = float(np.mean([np.abs(b[:-2, :-4] - a[2:, 4:]).mean()
                                     for a, b in zip(out, out[1:])]))
            rows.append({"smooth": mom, "flicker": r.flicker, "input_mean_abs_diff":
                         r.flicker_input, "output_mean_abs_diff": r.flicker_output,
                         "motion_aligned_output_diff": aligned, "seconds": r.seconds})
    return rows


# ---- training speed -------------------------------------------------------------------------

TRAIN_VARIANTS = {
    "fp32 eager": {},
    "channels_last": {"channels_last": True},
    "torch.compile": {"compile": True},
    "channels_last + compile": {"channels_last": True, "compile": True},
    "bf16 autocast": {"amp": True},
    "bf16 + channels_last + compile": {"amp": True, "channels_last": True, "compile": True},
    "checkpoint + preview every step": {"checkpoint_every": 1, "preview_every": 1},
}


def _random_vgg19_relu3_1() -> nn.Module:
    """The normalised VGG-19 encoder's architecture up to relu3_1 with seeded random weights:
    the same FLOPs as the real loss network, for timing only (never for training a model)."""
    from .losses import encoder_from_state_dict

    g = torch.Generator().manual_seed(0)
    shapes = [(3, 3, 1), (64, 3, 3), (64, 64, 3), (128, 64, 3), (128, 128, 3), (256, 128, 3)]
    sd = {}
    for i, (o, c, k) in zip((0, 2, 5, 9, 12, 16), shapes):
        sd[f"{i}.weight"] = torch.randn(o, c, k, k, generator=g) * (2.0 / (c * k * k)) ** 0.5
        sd[f"{i}.bias"] = torch.zeros(o)
    return encoder_from_state_dict(sd, "random normalised VGG-19 (timing only)")


def _synthetic_images(folder, n: int, size: int, seed: int) -> None:
    """``n`` smooth random colour images: timing does not depend on what the photos show."""
    import torch.nn.functional as F
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        x = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bicubic",
                          align_corners=False)[0].clamp(0, 1)
        arr = (x.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:03d}.jpg", quality=90)


def bench_train(variants: list[str], size: int = 256, batch_size: int = 4, steps: int = 5,
                warmup: int = 2, norm: str = "bin", device: str = "cpu",
                content_dir: str | None = None, style_image: str | None = None,
                vgg_weights: str | None = None,
                on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Seconds per training step of ``stylize train`` (the real loop: data, loss network,
    backward, Adam) for each variant of ``TRAIN_VARIANTS``, as ratios to the first variant in
    the same run: wall time, and this process's CPU time (all threads), which other load on the
    machine does not inflate. The first ``warmup`` steps (compilation, allocator warm-up) are not timed.
    Without ``vgg_weights`` the loss network has random weights of the real architecture
    (normalised VGG-19 to relu3_1): the same cost, fine for timing."""
    import tempfile
    from pathlib import Path

    from .losses import load_vgg_encoder
    from .train import TrainConfig, train

    unknown = [v for v in variants if v not in TRAIN_VARIANTS]
    if unknown:
        raise ValueError(f"unknown training variant(s) {unknown}; known: {', '.join(TRAIN_VARIANTS)}")
    dev = resolve_device(device)
    encoder = load_vgg_encoder(vgg_weights) if vgg_weights else _random_vgg19_relu3_1()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if content_dir is None:
            content_dir = str(root / "content")
            _synthetic_images(Path(content_dir), max(8, batch_size * 2), size, seed=1)
        if style_image is None:
            _synthetic_images(root / "style", 1, 256, seed=2)
            style_image = str(root / "style" / "000.jpg")
        for name in variants:
            opts = dict(TRAIN_VARIANTS[name])
            cfg = TrainConfig(style_image=style_image, content_dir=content_dir, norm=norm,
                              out=str(root / f"run{len(rows)}"), image_size=size,
                              batch_size=batch_size, steps=warmup + steps, device=str(dev),
                              checkpoint_every=opts.pop("checkpoint_every", 0),
                              preview_every=opts.pop("preview_every", 0),
                              # float32 unless the variant says (not the config's auto)
                              amp=opts.pop("amp", False), **opts)
            marks: list[float] = []
            cpu: list[float] = []

            def tick(info: dict, marks=marks, cpu=cpu) -> None:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())
                cpu.append(time.process_time())

            torch.manual_seed(0)
            train(cfg, progress=tick, encoder=encoder.to(dev), show_bar=False)
            first = max(0, warmup - 1)
            n = len(marks) - 1 - first
            s_per_step = (marks[-1] - marks[first]) / n
            cpu_per_step = (cpu[-1] - cpu[first]) / n
            row = {"variant": name, "size": size, "batch_size": batch_size,
                   "s_per_step": s_per_step, "images_per_s": batch_size / s_per_step,
                   "cpu_s_per_step": cpu_per_step, "threads": torch.get_num_threads()}
            row["ratio"] = s_per_step / rows[0]["s_per_step"] if rows else 1.0
            row["cpu_ratio"] = cpu_per_step / rows[0]["cpu_s_per_step"] if rows else 1.0
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def train_markdown(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["variant"] if rows else ""
    lines = [f"| variant | wall s/step | images/s | × {base} (wall) | CPU s/step | "
             f"× {base} (CPU) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['s_per_step']:.2f} | {r['images_per_s']:.2f} | "
                     f"{r['ratio']:.2f} | {r['cpu_s_per_step']:.2f} | {r['cpu_ratio']:.2f} |")
    return "\n".join(lines)


# ---- the arbitrary-style path (encoder → WCT/AdaIN → decoders) ------------------------------

def _arbitrary_stylizer(vgg_weights: str | None, device: torch.device):
    from .arbitrary import load_stylizer
    from .losses import find_encoder

    return load_stylizer(find_encoder(vgg_weights), device=device)


def _pan_clip(photo: str | None, frames: int, size: int, flashes: bool = False) -> list:
    """A ``size``-px square crop panning diagonally across ``photo`` (2 px down, 4 px right per
    frame); ``flashes`` adds a square flashing black/white at random places."""
    import numpy as np
    from PIL import Image

    import weights

    img = Image.open(photo or weights.SAMPLES_DIR / "amber.jpg").convert("RGB")
    s = (size + 4 * frames) / min(img.size)
    img = img.resize((round(img.size[0] * s) + 1, round(img.size[1] * s) + 1), Image.LANCZOS)
    a = np.asarray(img)
    rng = np.random.default_rng(0)
    clip = []
    for t in range(frames):
        f = a[2 * t:2 * t + size, 4 * t:4 * t + size].copy()
        if flashes:
            y0, x0 = rng.integers(0, size - size // 4, 2)
            f[y0:y0 + size // 4, x0:x0 + size // 4] = 255 if t % 2 else 0
        clip.append(f)
    return clip


def bench_arbitrary_flicker(painting: str, photo: str | None = None, frames: int = 24,
                            size: int = 256, momenta: tuple[float, ...] = (0.5, 0.9),
                            method: str = "wct", device: str = "cpu",
                            vgg_weights: str | None = None, flashes: bool = False,
                            backend: str = "auto") -> list[dict[str, Any]]:
    """Flicker of the arbitrary path on a panning clip (see ``bench_flicker``): per-frame
    content statistics vs their moving average (``ContentSmoother``) at each momentum, the style
    statistics fixed. Rows as ``bench_flicker``'s."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from .arbitrary import use_backend
    from .video import read_clip, stylize_video_paintings, write_clip

    dev = resolve_device(device)
    st = use_backend(_arbitrary_stylizer(vgg_weights, dev), backend, dev)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = write_clip(_pan_clip(photo, frames, size, flashes), Path(tmp) / "pan.mp4", fps=24)
        for mom in (None, *momenta):
            r = stylize_video_paintings(st, src, Path(tmp) / "out.mp4", {painting: 1.0},
                                        method=method, max_size=None, smooth=mom, bar=False)
            out = [f.astype(np.float32) for f in read_clip(Path(tmp) / "out.mp4")[0]]
            aligned = float(np.mean([np.abs(b[:-2, :-4] - a[2:, 4:]).mean()
                                     for a, b in zip(out, out[1:])]))
            rows.append({"smooth": mom, "flicker": r.flicker, "input_mean_abs_diff":
                         r.flicker_input, "output_mean_abs_diff": r.flicker_output,
                         "motion_aligned_output_diff": aligned, "seconds": r.seconds})
    return rows


def bench_arbitrary(painting: str, sizes: list[int], repeats: int = 3, model: str | None = None,
                    device: str = "cpu", vgg_weights: str | None = None,
                    photo: str | None = None, onnx: bool = True) -> list[dict[str, Any]]:
    """The arbitrary path next to the feed-forward one, as ratios to the feed-forward fp32 eager
    time in the same round (interleaved, median over rounds; ``bench``'s rows). Per size: a
    photo (``photo``, default the amber sample) resized to size² through the feed-forward model
    (``model``, default an untrained IN TransformerNet of the shipped size) in fp32 eager and
    onnxruntime, and through the arbitrary chain (relu3_1 → relu2_1 → relu1_1, painting
    statistics computed once beforehand, as for a folder) with WCT and AdaIN in torch and
    onnxruntime; the painting statistics themselves get their own row. PSNR: each
    onnxruntime row against its torch fp32 row."""
    from PIL import Image

    import weights
    from engine.images import to_tensor

    from .arbitrary import load_paintings, onnx_runtime

    dev = resolve_device(device)
    ff_rows = {}
    if model:
        from .infer import load_model

        net = load_model(model, device=dev).net.eval()
    else:
        torch.manual_seed(0)
        net = TransformerNet(norm="in").to(dev).eval()
    runner = None
    if onnx and dev.type == "cpu":
        import tempfile

        from .deploy import OnnxStyleRunner, export_onnx
        from .infer import StyleModel

        with tempfile.TemporaryDirectory() as tmp:
            runner = OnnxStyleRunner(export_onnx(StyleModel(net=net, config=net.config,
                                                            name="bench"), f"{tmp}/m.onnx"))
    st = _arbitrary_stylizer(vgg_weights, dev)
    rt = onnx_runtime(st) if runner is not None else None
    img = Image.open(photo or weights.SAMPLES_DIR / "amber.jpg").convert("RGB")
    rows: list[dict[str, Any]] = []
    for s in sizes:
        x = to_tensor(img.resize((s, s), Image.LANCZOS)).to(dev)
        styles, w = load_paintings({painting: 1.0}, s)
        styles = [t.to(dev) for t in styles]
        stats = {m: st.style_statistics(styles, w, m) for m in ("wct", "adain")}

        def arb(method: str, runtime: Any) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                st.runtime = runtime
                try:
                    return st(x, stats[method])
                finally:
                    st.runtime = None
            return run

        def style_stats() -> torch.Tensor:
            return st.style_statistics(styles, w, "wct").per_level["relu3_1"][0].cov

        def eager() -> torch.Tensor:
            with torch.no_grad():
                return net(x)

        variants: list[tuple[str, Callable[[], torch.Tensor], str | None]] = [
            ("feed-forward fp32 eager (reference)", eager, None)]
        if runner is not None:
            variants.append(("feed-forward onnxruntime fp32", lambda: runner(x),
                             variants[0][0]))
        for m in ("wct", "adain"):
            variants.append((f"arbitrary {m} torch fp32", arb(m, None), None))
            if rt is not None:
                variants.append((f"arbitrary {m} onnxruntime fp32", arb(m, rt),
                                 f"arbitrary {m} torch fp32"))
        variants.append(("painting statistics, WCT (once per painting and size)", style_stats,
                         None))
        outs, first, times = {}, {}, {n: [] for n, _, _ in variants}
        for name, fn, _ in variants:  # warm-up (onnxruntime arenas, allocator)
            t = time.perf_counter()
            outs[name] = fn()
            first[name] = (time.perf_counter() - t) * 1000
        for _ in range(repeats):
            for name, fn, _ in variants:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        ref = variants[0][0]
        for name, _, against in variants:
            ratios = [a / b for a, b in zip(times[name], times[ref])]
            q = psnr(outs[name], outs[against]) if against else float("inf")
            rows.append({"size": s, "variant": name, "ms": statistics.median(times[name]) * 1000,
                         "ratio": statistics.median(ratios), "psnr_db": q,
                         "used": against is None or q >= PSNR_MIN, "first_ms": first[name]})
    return rows
