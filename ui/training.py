"""Training jobs started from the UI. A job belongs to the server, not to a browser tab: it runs
the library's ``train`` in a server thread and keeps its latest state (status, curves, preview),
so a page that is reloaded or closed leaves it running and a new page re-attaches to it (its
progress, curves and Cancel). Cancel goes through the library's ``should_stop``. Also: discovery
of content folders and datasets under the operator-allowed folders. No gradio import here.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import IMAGE_EXTS, UIConfig, slug
from .handlers import device_of, need, public_message

# How often the UI is refreshed at most (seconds); epoch ends, previews and the end always are.
REFRESH_S = 0.5
# While nothing new arrives (model building, dataset decoding) the elapsed time still ticks.
TICK_S = 1.0


@dataclass
class TrainUpdate:
    """One refresh of a training tab."""

    status: str
    history: list[dict] = field(default_factory=list)  # rows {x, value, series} for the plots
    preview: Any = None  # PIL image or None
    model_name: str | None = None  # set once, when the finished model is registered
    fraction: float | None = None  # 0–1 of the run done; None while preparing


class Cancelled(Exception):
    """Raised inside a job's thread when Cancel arrives before the library's loop runs."""


@dataclass(frozen=True)
class Visitor:
    """Who sent a UI request: gradio's session (one page load), the browser behind it (address
    and user agent, so that a reloaded page is still its owner's) and the signed-in user name
    when the server runs with ``--auth``."""

    session: str = ""
    browser: str = ""
    user: str | None = None

    def may_cancel(self, owner: "Visitor | None") -> bool:
        """An operator signed in (``--auth``) may cancel anything; an anonymous visitor only
        what its page or its browser started."""
        if self.user:
            return True
        if owner is None:
            return False
        return (bool(self.session) and self.session == owner.session) or \
            (bool(self.browser) and self.browser == owner.browser)


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_bar(fraction: float, width: int = 20) -> str:
    """A text progress bar: ``▰▰▰▱▱▱ 50 %``."""
    n = round(max(0.0, min(1.0, fraction)) * width)
    return "▰" * n + "▱" * (width - n) + f" {fraction:.0%}"


class Job:
    """One kind of training job (style or classifier), owned by the server.

    ``start(updates)`` runs an iterator of ``TrainUpdate`` in a server thread and keeps the latest
    one; ``follow()`` streams the state to any number of pages, and a page that goes away does not
    stop the job; ``cancel()`` asks the run to stop (the library's ``should_stop``)."""

    def __init__(self, kind: str = "training") -> None:
        self.kind = kind
        self.stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._done = True
        self.update: TrainUpdate | None = None
        self.version = 0
        self.error: str | None = None
        self.started: float | None = None
        self._rate_from: tuple[float, float] | None = None  # (time, fraction) of first progress
        self.owner: Visitor | None = None  # who started it (None: the server)

    @property
    def running(self) -> bool:
        return not self._done

    def cancel(self, by: "Visitor | None" = None) -> str:
        """Ask the run to stop; it stops at the next step (or before training starts). ``by``:
        the UI visitor asking (None: the server itself, e.g. on shutdown); a visitor may stop
        only a run it started (``Visitor.may_cancel``)."""
        if by is not None and self.running and not by.may_cancel(self.owner):
            return ("This training was started by another visitor; only that browser (or an "
                    "operator signed in to a server started with `normlab ui --auth`) can "
                    "cancel it.")
        self.stop.set()
        if not self.running:
            return "Nothing is training."
        return "Cancelling: the run stops after the current step and keeps its last checkpoint."

    # ------------------------------------------------------------------ server-side thread
    def start(self, updates: Iterator[TrainUpdate], others: tuple["Job", ...] = (),
              owner: "Visitor | None" = None) -> None:
        """Run ``updates`` in a server thread. ``ValueError`` if this job or one of ``others``
        (one accelerator: one training at a time) is running. ``owner``: who may cancel it."""
        with self._cond:
            self.owner = owner
            busy = [j for j in (self, *others) if j.running]
            if busy:
                raise ValueError(f"a {busy[0].kind} is already running: wait for it or cancel it "
                                 "(its progress shows in its tab)")
            self.stop.clear()
            self.error, self.started, self._rate_from = None, time.monotonic(), None
            self.update = TrainUpdate("starting…")
            self._done = False
            self.version += 1
            self._thread = threading.Thread(target=self._drive, args=(updates,), daemon=True,
                                            name=f"normlab-ui-{self.kind}")
            self._thread.start()

    def publish(self, u: TrainUpdate) -> None:
        """Make ``u`` the job's current state (called from the job's own thread)."""
        with self._cond:
            if u.fraction is not None and u.fraction > 0 and self._rate_from is None:
                self._rate_from = (time.monotonic(), u.fraction)
            self.update = u
            self.version += 1
            self._cond.notify_all()

    def _drive(self, updates: Iterator[TrainUpdate]) -> None:
        last = self.update
        try:
            for u in updates:
                last = u
                self.publish(u)
        except Cancelled:
            self.publish(TrainUpdate("Cancelled before training started.",
                                      last.history if last else []))
        except BaseException as exc:  # noqa: BLE001 - shown in the tab, not a traceback
            self.error = public_message(exc) if str(exc).strip() else type(exc).__name__
            self.publish(TrainUpdate(f"Failed: {self.error}", last.history if last else [],
                                      last.preview if last else None))
        finally:
            with self._cond:
                self._done = True
                self.version += 1
                self._cond.notify_all()

    def timing(self, u: TrainUpdate) -> str:
        """``elapsed 0:12 · about 0:40 left`` for a running job (empty when idle)."""
        if self.started is None or not self.running:
            return ""
        now = time.monotonic()
        text = f"elapsed {_clock(now - self.started)}"
        if u.fraction is not None and self._rate_from is not None:
            t0, f0 = self._rate_from
            if u.fraction - f0 > 0.005 and now > t0:
                left = (now - t0) / (u.fraction - f0) * (1 - u.fraction)
                text += f" · about {_clock(left)} left"
        return text

    def view(self) -> TrainUpdate | None:
        """The latest update with a progress bar and the elapsed/remaining time in its status."""
        with self._cond:
            u = self.update
        if u is None:
            return None
        parts = [u.status]
        if self.running and u.fraction is not None:
            parts.insert(0, progress_bar(u.fraction))
        t = self.timing(u)
        if t:
            parts.append(t)
        return dataclasses.replace(u, status=" · ".join(parts))

    def follow(self, raise_errors: bool = False) -> Iterator[TrainUpdate]:
        """The current state, then each change (and a clock tick every ``TICK_S``) until the job
        ends. The job does not depend on the follower: closing the page leaves it running.
        ``raise_errors``: a failed run ends with ``ValueError`` (a toast) after its last state."""
        seen, last_yield = -1, 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self.version != seen, timeout=TICK_S)
                changed, seen = self.version != seen, self.version
                alive = self.running
            now = time.monotonic()
            u = self.view()
            if u is not None and (not alive or now - last_yield >= REFRESH_S or
                                  (changed and u.model_name)):
                last_yield = now
                yield u
            if not alive:
                if raise_errors and self.error:
                    raise ValueError(self.error)
                return

    # ------------------------------------------------------------------ the library's loop
    def run(self, train: Callable, cfg: Any) -> Iterator[tuple[str, Any]]:
        """Run ``train(cfg, progress=..., should_stop=...)`` in a thread; yield ("progress", event)
        for each library callback (an ``engine.hooks.ProgressEvent``) and finally ("done", path). Library errors re-raise here. If the
        consumer goes away, the run is told to stop."""
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                path = train(cfg, progress=lambda e: events.put(("progress", e)),
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
            if worker.is_alive():
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


# --------------------------------------------------------------------------- server folders

SCAN_DEPTH = 6  # folder levels below an allowed folder
SCAN_ENTRIES = 400_000  # directory entries read per scan, at most
SCAN_TTL_S = 30.0


@dataclass
class FolderScan:
    """What a bounded walk of the allowed folders found."""

    image_dirs: list[Path]  # folders holding image files directly
    class_trees: dict[Path, list[str]]  # ImageFolder roots: class sub-folders holding images


def _walk(root: Path, depth: int, budget: list[int], images: set[Path]) -> None:
    if depth < 0 or budget[0] <= 0:
        return
    subdirs = []
    try:
        with os.scandir(root) as it:
            for e in it:
                budget[0] -= 1
                if budget[0] <= 0:
                    break
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(Path(e.path))
                elif root not in images and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
                    images.add(root)
    except OSError:
        return
    for d in sorted(subdirs):
        _walk(d, depth - 1, budget, images)


@functools.lru_cache(maxsize=8)
def _scan_cached(roots: tuple[Path, ...], stamp: int) -> FolderScan:
    images: set[Path] = set()
    budget = [SCAN_ENTRIES]
    for r in roots:
        _walk(r, SCAN_DEPTH, budget, images)
    trees: dict[Path, list[str]] = {}
    for d in images:
        trees.setdefault(d.parent, []).append(d.name)
    return FolderScan(sorted(images), {k: sorted(v) for k, v in sorted(trees.items())})


def scan_folders(cfg: UIConfig) -> FolderScan:
    """Image folders and ImageFolder trees at any depth (up to ``SCAN_DEPTH`` levels, at most
    ``SCAN_ENTRIES`` entries) under the operator-allowed folders; cached for ``SCAN_TTL_S``."""
    roots = tuple(d for d in cfg.allowed_dirs if d.is_dir())
    return _scan_cached(roots, int(time.monotonic() // SCAN_TTL_S))


def content_dirs(cfg: UIConfig) -> list[str]:
    """Folders with images for the style training content set: each allowed folder holding images
    at any depth, then every folder below it holding images (or image folders) of its own."""
    scan = scan_folders(cfg)
    out: list[str] = []
    for root in cfg.allowed_dirs:
        inside = [d for d in scan.image_dirs if d == root or root in d.parents]
        if not inside:
            continue
        parents = {p for d in inside for p in d.parents if p == root or root in p.parents}
        out += [str(d) for d in sorted(parents | set(inside))]
    return list(dict.fromkeys(out))[:500]


def dataset_dirs(cfg: UIConfig) -> list[tuple[str, str]]:
    """(label, data spec) for classifier datasets at any depth under the allowed folders: a folder
    with ``train/`` and ``test/`` ImageFolder trees with the same classes (e.g. CIFAR-10), or a
    folder of domains that are ImageFolder trees with the same classes (PACS layout)."""
    trees = scan_folders(cfg).class_trees
    out: list[tuple[str, str]] = []
    by_parent: dict[Path, list[Path]] = {}
    for t in trees:
        by_parent.setdefault(t.parent, []).append(t)
    for parent, kids in sorted(by_parent.items()):
        names = {k.name: k for k in kids}
        if "train" in names and "test" in names and trees[names["train"]] == trees[names["test"]]:
            n = len(trees[names["train"]])
            out.append((f"{parent} (train/test, {n} classes)",
                        f"folder:{names['train']},{names['test']}"))
        elif len(kids) >= 2 and len({tuple(trees[k]) for k in kids}) == 1:
            out.append((f"{parent} (domains: {', '.join(sorted(names))})", f"pacs:{parent}"))
    return out


def _check_data_spec(cfg: UIConfig, spec: str) -> str:
    """A data spec is only accepted when it is one the server offered (API clients can send
    anything)."""
    if spec not in {v for _, v in dataset_dirs(cfg)}:
        raise ValueError("that dataset is not one of the operator-allowed datasets")
    return spec


def _run_dir(cfg: UIConfig, kind: str, name: str) -> Path:
    return cfg.runs_dir / kind / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def _finish(cfg: UIConfig, job: Job, kind: str, base: str, out: Path, path: Path,
            history: list[dict], preview: Any, result: str = "", **info: Any) -> TrainUpdate:
    """The last update of a run: register the model, unless the run was cancelled."""
    if job.stop.is_set():
        return TrainUpdate("Cancelled; the partial run was kept on the server (not added to the "
                           "model list).", history, preview)
    name = cfg.registry.add(kind, base, path, **info)
    tab = "Stylize tab's model list" if kind == "stylize" else "Classify tab's model lists"
    return TrainUpdate(f"Finished{result}: `ui:{name}` is now in the {tab}.", history, preview,
                       name, 1.0)


# --------------------------------------------------------------------------- style training

def train_style(cfg: UIConfig, job: Job, style_image: str | None, content_dir: str | None,
                norm: str, image_size: int, steps: int, name: str = "",
                batch_size: int = 4, preview_every: int = 0,
                on_progress: Callable[[float, str], None] | None = None) -> Iterator[TrainUpdate]:
    """Train a style network with ``stylize.train`` and register it as ``ui:<name>``. The inputs
    are checked at once (``ValueError`` before any work); the returned iterator runs the job."""
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
    import norms

    norms.check_names([norm])
    base = slug(name or f"{Path(style_image).stem}-{norm}")
    out = _run_dir(cfg, "style", base)
    tcfg = build_config(
        config_cls, style_image=str(style_image), content_dir=str(content), norm=norm,
        out=str(out), image_size=image_size, batch_size=int(batch_size), steps=steps,
        device=device_of(cfg), preview_every=int(preview_every or max(1, steps // 5)),
        vgg_weights=str(cfg.vgg_weights) if cfg.vgg_weights else None)
    return _style_updates(cfg, job, train, tcfg, base, out, Path(style_image).name, on_progress)


def _style_updates(cfg: UIConfig, job: Job, train: Callable, tcfg: Any, base: str, out: Path,
                   style_name: str, on_progress: Callable[[float, str], None] | None
                   ) -> Iterator[TrainUpdate]:
    steps = int(tcfg.steps)
    history: list[dict] = []
    preview, last_losses = None, {}
    yield TrainUpdate("loading the loss network and the content images…", history)
    for kind, value in job.run(train, tcfg):
        if kind == "done":
            result = "".join(f" · {k} loss {v:.4g}" for k, v in last_losses.items())
            yield _finish(cfg, job, "stylize", base, out, value, history, preview, result,
                          norm=tcfg.norm, style=style_name, steps=steps)
            return
        step, total, losses = value.step, value.total or steps, value.metrics
        for series in ("content_loss", "style_loss"):
            if losses.get(series) is not None:
                last_losses[series.replace("_loss", "")] = float(losses[series])
                history.append({"x": step, "value": float(losses[series]),
                                "series": series.replace("_loss", "")})
        if value.preview is not None:
            preview = value.preview
        status = (f"step {step}/{total} · content {losses.get('content_loss', float('nan')):.4g}"
                  f" · style {losses.get('style_loss', float('nan')):.4g}")
        frac = step / max(total, 1)
        if on_progress:
            on_progress(frac, status)
        yield TrainUpdate(status, history, preview, fraction=frac)


# --------------------------------------------------------------------------- classifier training

def check_arch_norm(arch: str, norm: str) -> None:
    """``ValueError`` at once for an unknown architecture or a norm it cannot take (the library's
    check; without it, the model is built on the meta device, which allocates nothing)."""
    if arch not in need("classify", "list_models")():
        raise ValueError("unknown architecture; pick one from the list")
    try:
        need("classify.registry", "validate_arch_norm")(arch, norm)
        return
    except ValueError as exc:
        if "not available" not in str(exc):
            raise
    import torch

    with torch.device("meta"):
        need("classify", "create_model")(arch, num_classes=2, norm=norm)


def _decode(job: Job, spec: str, image_size: int, emit: Callable[[str], None]):
    """The dataset of a ``folder:TRAIN,TEST`` spec decoded with ``classify.data.load_folder``,
    reporting progress (and honouring Cancel) while it decodes; other specs load as a whole."""
    from classify.data import DataSplit, load_data, load_folder

    if not spec.startswith("folder:"):
        emit("decoding the dataset…")
        return None  # the library loads it (PACS: per domain)
    parts = spec[len("folder:"):].split(",")

    def load(path: str, what: str):
        def tick(i: int, n: int) -> None:
            if job.stop.is_set():
                raise Cancelled()
            emit(f"decoding the {what} images: {i}/{n}")
        emit(f"decoding the {what} images…")
        return load_folder(path, image_size, progress=tick)

    train = load(parts[0], "training")
    tests = {"test": load(parts[1], "test")} if len(parts) > 1 else {}
    if tests and tests["test"].classes != train.classes:
        return load_data(spec, image_size)  # the library's own error message
    return DataSplit(train, tests, spec)


def train_classifier(cfg: UIConfig, job: Job, arch: str, norm: str, data: str | None,
                     epochs: int, name: str = "", batch_size: int = 128, lr: float = 0.1,
                     train_subset: int = 0, train_domains: str = "", test_domains: str = "",
                     on_progress: Callable[[float, str], None] | None = None
                     ) -> Iterator[TrainUpdate]:
    """Train a classifier with ``classify.train`` and register it as ``ui:<name>``. The inputs
    (dataset, architecture/norm combination, numbers) are checked at once; the returned iterator
    runs the job."""
    train = need("classify", "train")
    config_cls = need("classify", "TrainConfig")
    if not data:
        raise ValueError("pick a dataset folder")
    data = _check_data_spec(cfg, data)
    check_arch_norm(arch, norm)
    epochs = int(epochs)
    if epochs < 1:
        raise ValueError("epochs must be ≥ 1")
    extra: dict[str, Any] = {}
    if int(train_subset or 0) > 0:
        extra["train_subset"] = int(train_subset)
    if data.startswith("pacs:"):
        if not (test_domains or "").strip():
            raise ValueError("a domain dataset needs test domains (e.g. sketch)")
        extra.update(train_domains=(train_domains or "").strip() or None,
                     test_domains=test_domains.strip())
    base = slug(name or f"{arch}-{norm}")
    out = _run_dir(cfg, "classify", base)
    from engine.devices import autocast_pays, resolve_device

    device = device_of(cfg)
    # bf16/fp16 autocast where it makes training faster (CUDA, a CPU with native bf16)
    tcfg = build_config(config_cls, arch=arch, norm=norm, data=data, epochs=epochs,
                        batch_size=int(batch_size), lr=float(lr), device=device,
                        amp=autocast_pays(resolve_device(device)), out=str(out), **extra)
    return _classifier_updates(cfg, job, train, tcfg, base, out, on_progress)


def _classifier_updates(cfg: UIConfig, job: Job, train: Callable, tcfg: Any, base: str, out: Path,
                        on_progress: Callable[[float, str], None] | None
                        ) -> Iterator[TrainUpdate]:
    history: list[dict] = []
    yield TrainUpdate("preparing…", history)
    from classify import default_input_size

    size = int(getattr(tcfg, "image_size", None) or default_input_size(tcfg.arch))
    # decoding can take a while: its progress goes straight to the job's state
    split = _decode(job, tcfg.data, size, lambda msg: job.publish(TrainUpdate(msg, history)))
    if split is not None:
        train = functools.partial(train, data=split)
    if job.stop.is_set():
        raise Cancelled()
    epochs = int(tcfg.epochs)
    test_acc = None
    yield TrainUpdate("building the model…" + (" (mixed precision)" if getattr(tcfg, "amp", False)
                                               else ""), history)
    for kind, value in job.run(train, tcfg):
        if kind == "done":
            result = f" · test accuracy {test_acc:.1f} %" if test_acc is not None else ""
            yield _finish(cfg, job, "classify", base, out, value, history, None, result,
                          arch=tcfg.arch, norm=tcfg.norm, epochs=epochs, test_acc=test_acc)
            return
        # epochs count from 1; accuracies are in percent; test accuracy comes with evaluations
        ep, eps = value.epoch, value.epochs
        step, total = value.step_in_epoch, max(1, value.steps_per_epoch)
        x = round(ep - 1 + step / total, 4)
        shown = {"loss": value.metrics.get("loss"), "acc": value.metrics.get("train_acc"),
                 "test_acc": next((v for k, v in value.evaluation.items()
                                   if k.startswith("test_acc/")), None)}
        for key, series in (("loss", "train loss"), ("acc", "train acc"), ("test_acc", "test acc")):
            if shown[key] is not None:
                history.append({"x": x, "value": float(shown[key]), "series": series})
        if shown["test_acc"] is not None:
            test_acc = float(shown["test_acc"])
        frac = min(x / max(eps, 1), 1.0)
        status = f"epoch {ep}/{eps} · step {step}/{total}"
        if shown["loss"] is not None:
            status += f" · loss {shown['loss']:.4g}"
        if shown["acc"] is not None:
            status += f" · train acc {shown['acc']:.1f}%"
        if shown["test_acc"] is not None:
            status += f" · test acc {shown['test_acc']:.1f}%"
        if on_progress:
            on_progress(frac, status)
        yield TrainUpdate(status, history, fraction=frac)
