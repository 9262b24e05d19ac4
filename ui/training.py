"""Training jobs started from the UI: the library's ``train`` in a worker thread, its progress
dicts streamed back to a generator that the UI turns into a progress bar, loss plots and
previews; cancel goes through the library's ``should_stop``. No gradio import here.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import IMAGE_EXTS, UIConfig, slug
from .handlers import device_of, need

# How often the UI is refreshed at most (seconds); epoch ends, previews and the end always are.
REFRESH_S = 0.5


@dataclass
class TrainUpdate:
    """One refresh of a training tab."""

    status: str
    history: list[dict] = field(default_factory=list)  # rows {x, value, series} for the plots
    preview: Any = None  # PIL image or None
    model_name: str | None = None  # set once, when the finished model is registered


class Job:
    """One kind of training job (style or classifier); the UI queues them one at a time."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def cancel(self) -> str:
        self.stop.set()
        return "Cancelling: the run stops after the current step and keeps its last checkpoint."

    def run(self, train: Callable, cfg: Any) -> Iterator[tuple[str, Any]]:
        """Run ``train(cfg, progress=..., should_stop=...)`` in a thread; yield ("progress", dict)
        for each library callback and finally ("done", path). Library errors re-raise here. If the
        consumer goes away (browser closed, event cancelled) the run is told to stop."""
        self.stop.clear()
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                path = train(cfg, progress=lambda d: events.put(("progress", dict(d))),
                             should_stop=self.stop.is_set)
                events.put(("done", path))
            except BaseException as exc:  # handed to the consumer thread, which re-raises
                events.put(("error", exc))

        worker = threading.Thread(target=work, name="normlab-ui-train", daemon=True)
        worker.start()
        try:
            while True:
                try:
                    kind, value = events.get(timeout=0.25)
                except queue.Empty:
                    continue
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            self.stop.set()
            worker.join(timeout=60)


def build_config(config_cls: type, **values: Any):
    """The library's TrainConfig from the values the UI has; fails loudly if the library renamed a
    field the UI sets (better than training with a silently dropped setting)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{config_cls.__module__}.{config_cls.__name__} has no field(s) "
                         f"{', '.join(unknown)}: the UI and the library disagree")
    return config_cls(**values)


def _folder_has_images(p: Path, limit: int = 2000) -> bool:
    for i, f in enumerate(p.rglob("*")):
        if f.suffix.lower() in IMAGE_EXTS:
            return True
        if i >= limit:
            return False
    return False


def content_dirs(cfg: UIConfig) -> list[str]:
    """Operator-allowed folders with images, for the style training content set."""
    return [str(d) for d in cfg.allowed_dirs if d.is_dir() and _folder_has_images(d)]


def dataset_dirs(cfg: UIConfig) -> list[tuple[str, str]]:
    """(label, data spec) for classifier datasets found in the allowed folders: a folder with
    ``train/`` and ``test/`` class folders (CIFAR-10 as ImageFolder) or a PACS domain tree."""
    out = []
    for d in cfg.allowed_dirs:
        for cand in [d, *sorted(p for p in d.iterdir() if p.is_dir())] if d.is_dir() else []:
            if (cand / "train").is_dir() and (cand / "test").is_dir():
                out.append((f"{cand} (train/test folders)",
                            f"folder:{cand / 'train'},{cand / 'test'}"))
            elif (cand / "photo").is_dir() and (cand / "sketch").is_dir():
                out.append((f"{cand} (PACS)", f"pacs:{cand}"))
    return list(dict.fromkeys(out))


def _check_data_spec(cfg: UIConfig, spec: str) -> str:
    """A data spec is only accepted when it is one the server offered (API clients can send
    anything)."""
    if spec not in {v for _, v in dataset_dirs(cfg)}:
        raise ValueError(f"dataset {spec!r} is not one of the operator-allowed datasets")
    return spec


def _run_dir(cfg: UIConfig, kind: str, name: str) -> Path:
    return cfg.runs_dir / kind / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def _finish(cfg: UIConfig, job: Job, kind: str, base: str, out: Path, path: Path,
            history: list[dict], preview: Any, **info: Any) -> TrainUpdate:
    """The last update of a run: register the model, unless the run was cancelled."""
    if job.stop.is_set():
        return TrainUpdate(f"Cancelled; the partial run is in {out} (not added to the model "
                           "list).", history, preview)
    name = cfg.registry.add(kind, base, path, **info)
    tab = "Stylize tab's model list" if kind == "stylize" else "Classify tab's model lists"
    return TrainUpdate(f"Finished: `ui:{name}` is now in the {tab} ({path}).", history, preview,
                       name)


def train_style(cfg: UIConfig, job: Job, style_image: str | None, content_dir: str | None,
                norm: str, image_size: int, steps: int, name: str = "",
                batch_size: int = 4, preview_every: int = 0,
                on_progress: Callable[[float, str], None] | None = None) -> Iterator[TrainUpdate]:
    """Train a style network with ``stylize.train`` and register it as ``ui:<name>``."""
    train = need("stylize", "train")
    config_cls = need("stylize", "TrainConfig")
    if not style_image:
        raise ValueError("upload a style image first")
    if not content_dir:
        raise ValueError("pick a content folder")
    content = cfg.check_allowed(content_dir)
    steps, image_size = int(steps), int(image_size)
    if steps < 1 or image_size < 32:
        raise ValueError("steps must be ≥ 1 and image size ≥ 32")
    base = slug(name or f"{Path(style_image).stem}-{norm}")
    out = _run_dir(cfg, "style", base)
    tcfg = build_config(
        config_cls, style_image=str(style_image), content_dir=str(content), norm=norm,
        out=str(out), image_size=image_size, batch_size=int(batch_size), steps=steps,
        device=device_of(cfg), preview_every=int(preview_every or max(1, steps // 5)),
        vgg_weights=str(cfg.vgg_weights) if cfg.vgg_weights else None)
    history: list[dict] = []
    preview, last = None, 0.0
    for kind, value in job.run(train, tcfg):
        if kind == "done":
            yield _finish(cfg, job, "stylize", base, out, value, history, preview, norm=norm,
                          style=Path(style_image).name, steps=steps)
            return
        step, total = int(value.get("step", 0)), int(value.get("total", steps) or steps)
        for series in ("content_loss", "style_loss"):
            if value.get(series) is not None:
                history.append({"x": step, "value": float(value[series]),
                                "series": series.replace("_loss", "")})
        fresh_preview = value.get("preview") is not None
        if fresh_preview:
            preview = value["preview"]
        status = (f"step {step}/{total} · content {value.get('content_loss', float('nan')):.4g}"
                  f" · style {value.get('style_loss', float('nan')):.4g}")
        if on_progress:
            on_progress(step / max(total, 1), status)
        now = time.monotonic()
        if fresh_preview or now - last >= REFRESH_S or step >= total:
            last = now
            yield TrainUpdate(status, history, preview)


def train_classifier(cfg: UIConfig, job: Job, arch: str, norm: str, data: str | None,
                     epochs: int, name: str = "", batch_size: int = 128, lr: float = 0.1,
                     train_subset: int = 0, train_domains: str = "", test_domains: str = "",
                     on_progress: Callable[[float, str], None] | None = None
                     ) -> Iterator[TrainUpdate]:
    """Train a classifier with ``classify.train`` and register it as ``ui:<name>``."""
    train = need("classify", "train")
    config_cls = need("classify", "TrainConfig")
    if not data:
        raise ValueError("pick a dataset folder")
    data = _check_data_spec(cfg, data)
    epochs = int(epochs)
    if epochs < 1:
        raise ValueError("epochs must be ≥ 1")
    extra: dict[str, Any] = {}
    if int(train_subset or 0) > 0:
        extra["train_subset"] = int(train_subset)
    if data.startswith("pacs:"):
        if not (test_domains or "").strip():
            raise ValueError("PACS needs test domains (e.g. sketch)")
        extra.update(train_domains=(train_domains or "").strip() or None,
                     test_domains=test_domains.strip())
    base = slug(name or f"{arch}-{norm}")
    out = _run_dir(cfg, "classify", base)
    tcfg = build_config(config_cls, arch=arch, norm=norm, data=data, epochs=epochs,
                        batch_size=int(batch_size), lr=float(lr), device=device_of(cfg),
                        out=str(out), **extra)
    history: list[dict] = []
    last = 0.0
    for kind, value in job.run(train, tcfg):
        if kind == "done":
            yield _finish(cfg, job, "classify", base, out, value, history, None, arch=arch,
                          norm=norm, epochs=epochs)
            return
        # the library counts epochs from 1 and reports accuracy in percent
        ep, eps = int(value.get("epoch", 1)), int(value.get("epochs", epochs) or epochs)
        step, total = int(value.get("step", 0)), max(1, int(value.get("total", 1) or 1))
        x = round(ep - 1 + step / total, 4)
        for key, series in (("loss", "train loss"), ("acc", "train acc"), ("test_acc", "test acc")):
            if value.get(key) is not None:
                history.append({"x": x, "value": float(value[key]), "series": series})
        frac = x / max(eps, 1)
        status = f"epoch {ep}/{eps} · step {step}/{total}"
        if value.get("loss") is not None:
            status += f" · loss {value['loss']:.4g}"
        if value.get("acc") is not None:
            status += f" · train acc {value['acc']:.1f}%"
        if value.get("test_acc") is not None:
            status += f" · test acc {value['test_acc']:.1f}%"
        if on_progress:
            on_progress(min(frac, 1.0), status)
        now = time.monotonic()
        if value.get("test_acc") is not None or now - last >= REFRESH_S:
            last = now
            yield TrainUpdate(status, history)
