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

from classify.config import TrainConfig as ClassifyConfig
from engine.config import defaults
from stylize.config import TrainConfig as StyleConfig

from .config import IMAGE_EXTS, UIConfig, slug
from .handlers import device_of, public_message

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


CANCELLING = "cancelling… (the run stops after the current step and keeps its last checkpoint)"


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
        self.form: list | None = None  # the form values the current/last run was started with
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
        return CANCELLING

    # ------------------------------------------------------------------ server-side thread
    def start(self, updates: Iterator[TrainUpdate], others: tuple["Job", ...] = (),
              form: list | None = None, owner: "Visitor | None" = None) -> None:
        """Run ``updates`` in a server thread. ``ValueError`` if this job or one of ``others``
        (one accelerator: one training at a time) is running. ``form``: the values the run was
        started with, so a reloaded page shows them (not the defaults); ``owner``: who may
        cancel it."""
        with self._cond:
            busy = [j for j in (self, *others) if j.running]
            if busy:  # (the running job keeps its owner)
                raise ValueError(f"a {busy[0].kind} is already running: wait for it or cancel it "
                                 "(its progress shows in its tab)")
            self.owner = owner
            self.stop.clear()
            self.error, self.started, self._rate_from = None, time.monotonic(), None
            self.update = TrainUpdate("starting…")
            self.form = list(form) if form is not None else None
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
        if self.running and self.stop.is_set():
            parts.insert(0, CANCELLING)
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
    counts: dict[Path, int] = field(default_factory=dict)  # image files directly in a folder

    def images_under(self, folder: Path) -> int:
        """Image files in ``folder`` and below (as far as the scan went)."""
        return sum(n for d, n in self.counts.items() if d == folder or folder in d.parents)


def _walk(root: Path, depth: int, budget: list[int], images: dict[Path, int]) -> None:
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
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
                    images[root] = images.get(root, 0) + 1
    except OSError:
        return
    for d in sorted(subdirs):
        _walk(d, depth - 1, budget, images)


@functools.lru_cache(maxsize=8)
def _scan_cached(roots: tuple[Path, ...], stamp: int) -> FolderScan:
    images: dict[Path, int] = {}
    budget = [SCAN_ENTRIES]
    for r in roots:
        _walk(r, SCAN_DEPTH, budget, images)
    trees: dict[Path, list[str]] = {}
    for d in images:
        trees.setdefault(d.parent, []).append(d.name)
    return FolderScan(sorted(images), {k: sorted(v) for k, v in sorted(trees.items())}, images)


def scan_folders(cfg: UIConfig) -> FolderScan:
    """Image folders and ImageFolder trees at any depth (up to ``SCAN_DEPTH`` levels, at most
    ``SCAN_ENTRIES`` entries) under the operator-allowed folders; cached for ``SCAN_TTL_S``."""
    roots = tuple(d for d in cfg.allowed_dirs if d.is_dir())
    return _scan_cached(roots, int(time.monotonic() // SCAN_TTL_S))


def _name(cfg: UIConfig, folder: Path) -> str:
    """A folder's name as a person reads it: relative to the allowed folder above it."""
    for root in cfg.allowed_dirs:
        if folder == root or root in folder.parents:
            rel = folder.relative_to(root.parent)
            return rel.as_posix()
    return folder.name


def content_dirs(cfg: UIConfig) -> list[tuple[str, str]]:
    """(label, folder) for the style training's content photos: folders of photos by name with
    their image count ("content (557 images)"); the class folders of a dataset are left out
    (a classifier's data, not photos to learn a style on)."""
    scan = scan_folders(cfg)
    classes = {root / c for root, names in scan.class_trees.items() for c in names
               if root.parent in _dataset_roots(scan)}
    keep = [d for d in scan.image_dirs if d not in classes]
    folders: set[Path] = set()
    for d in keep:  # a folder of photo folders is offered too (all of them together)
        folders.add(d)
        for p in d.parents:
            if any(p == r or r in p.parents for r in cfg.allowed_dirs) and not any(
                    p == c or c in p.parents for c in classes):
                folders.add(p)
    out = []
    for f in sorted(folders):
        n = sum(scan.counts.get(d, 0) for d in keep if d == f or f in d.parents)
        if n:
            out.append((f"{_name(cfg, f)} ({n:,} images)", str(f)))
    return out[:500]


def _dataset_roots(scan: FolderScan) -> set[Path]:
    """Folders whose sub-folders are class trees of one dataset (train/test, or domains)."""
    by_parent: dict[Path, list[Path]] = {}
    for t in scan.class_trees:
        by_parent.setdefault(t.parent, []).append(t)
    return {p for p, kids in by_parent.items()
            if len(kids) >= 2 and len({tuple(scan.class_trees[k]) for k in kids}) == 1}


def dataset_dirs(cfg: UIConfig) -> list[tuple[str, str]]:
    """(label, data spec) for classifier datasets at any depth under the allowed folders: a folder
    with ``train/`` and ``test/`` ImageFolder trees with the same classes (e.g. CIFAR-10), or a
    folder of domains that are ImageFolder trees with the same classes (PACS layout). Labels
    name the dataset with its classes and image counts."""
    return [(label, spec) for label, spec, _ in _datasets(cfg)]


def dataset_sizes(cfg: UIConfig) -> dict[str, tuple[int, int]]:
    """(training, test) image counts per offered data spec (PACS: all domains, as training)."""
    return {spec: sizes for _, spec, sizes in _datasets(cfg)}


def _datasets(cfg: UIConfig) -> list[tuple[str, str, tuple[int, int]]]:
    scan = scan_folders(cfg)
    trees = scan.class_trees
    out: list[tuple[str, str, tuple[int, int]]] = []
    by_parent: dict[Path, list[Path]] = {}
    for t in trees:
        by_parent.setdefault(t.parent, []).append(t)
    for parent, kids in sorted(by_parent.items()):
        names = {k.name: k for k in kids}
        if "train" in names and "test" in names and trees[names["train"]] == trees[names["test"]]:
            n = len(trees[names["train"]])
            tr, te = scan.images_under(names["train"]), scan.images_under(names["test"])
            out.append((f"{_name(cfg, parent)} — {n} classes, {tr:,} training + {te:,} test "
                        "images", f"folder:{names['train']},{names['test']}", (tr, te)))
        elif len(kids) >= 2 and len({tuple(trees[k]) for k in kids}) == 1:
            doms = ", ".join(f"{k} {scan.images_under(v):,}" for k, v in sorted(names.items()))
            out.append((f"{_name(cfg, parent)} — domains ({doms} images), "
                        f"{len(trees[kids[0]])} classes", f"pacs:{parent}",
                        (scan.images_under(parent), 0)))
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
                batch_size: int | None = None, preview_every: int | None = None,
                on_progress: Callable[[float, str], None] | None = None) -> Iterator[TrainUpdate]:
    """Train a style network with ``stylize.train.train`` and register it as ``ui:<name>``. The inputs
    are checked at once (``ValueError`` before any work); the returned iterator runs the job.
    ``batch_size`` and ``preview_every`` default to the form's (``STYLE_DEFAULTS``; a preview
    every fifth of the run when that is 0)."""
    from stylize.train import train
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
    batch_size = STYLE_DEFAULTS["batch_size"] if batch_size is None else batch_size
    preview_every = STYLE_DEFAULTS["preview_every"] if preview_every is None else preview_every
    tcfg = build_config(
        StyleConfig, style_image=str(style_image), content_dir=str(content), norm=norm,
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
    from classify import list_models
    from classify.registry import validate_arch_norm

    if arch not in list_models():
        raise ValueError("unknown architecture; pick one from the list")
    validate_arch_norm(arch, norm)


def _decode(job: Job, tcfg: Any, image_size: int, emit: Callable[[str], None]):
    """The run's dataset, loaded by ``classify.data.load_data`` (which parses the spec) with its
    progress shown and Cancel honoured while it decodes."""
    from classify.data import load_data

    def tick(what: str, i: int, n: int) -> None:
        if job.stop.is_set():
            raise Cancelled()
        emit(f"decoding the {what} images: {i:,}/{n:,}")

    emit("reading the dataset…")
    return load_data(tcfg.data, image_size, train_domains=getattr(tcfg, "train_domains", None),
                     test_domains=getattr(tcfg, "test_domains", None), progress=tick)


def train_classifier(cfg: UIConfig, job: Job, arch: str, norm: str, data: str | None,
                     epochs: int, name: str = "", batch_size: int | None = None,
                     lr: float | None = None, train_subset: int = 0, train_domains: str = "",
                     test_domains: str = "",
                     on_progress: Callable[[float, str], None] | None = None
                     ) -> Iterator[TrainUpdate]:
    """Train a classifier with ``classify.train`` and register it as ``ui:<name>``. The inputs
    (dataset, architecture/norm combination, numbers) are checked at once; the returned iterator
    runs the job. ``batch_size`` and ``lr`` default to the form's (``CLASSIFY_DEFAULTS``)."""
    from classify.train import train
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
    batch_size = CLASSIFY_DEFAULTS["batch_size"] if batch_size is None else batch_size
    lr = CLASSIFY_DEFAULTS["lr"] if lr is None else lr
    # autocast where it makes training faster (CPU_SIZED above says why not the config's auto)
    tcfg = build_config(ClassifyConfig, arch=arch, norm=norm, data=data, epochs=epochs,
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
    split = _decode(job, tcfg, size, lambda msg: job.publish(TrainUpdate(msg, history)))
    train = functools.partial(train, data=split)
    if job.stop.is_set():
        raise Cancelled()
    epochs = int(tcfg.epochs)
    test_acc = None
    from engine.devices import resolve_amp, resolve_device

    amp = resolve_amp(getattr(tcfg, "amp", False), resolve_device(tcfg.device))
    yield TrainUpdate("building the model…" + (" (mixed precision)" if amp else ""), history)
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


# --------------------------------------------------------------------------- time estimates
# Rates measured on this project's 2-core CPU VM, shared with other jobs. Style: four_styles_bin
# trained 2000 steps at 192 px, batch 4, in 101.7 min (weights/manifest.json: 3.05 s per step;
# the cost grows with pixels × batch). Classifier: `normlab --device cpu classify train --data
# folder:cifar10/train,cifar10/test --arch resnet20 --norm bin --epochs 3 --batch-size 128
# --train-subset 5000 --threads 2` (fp32) took 269 s: ~1.15 s per 128-image step (9 ms per
# image), ~33 s to evaluate the 10,000 test images after each epoch, 20 s to decode the
# 60,000 images once; it ended at 36.4 % test accuracy (chance: 10 %). A GPU is much faster.
STYLE_S_PER_STEP_192PX_BATCH4 = 3.05
CLASSIFY_S_PER_IMAGE_EPOCH = 0.009
CLASSIFY_S_PER_TEST_IMAGE = 0.0033
USEFUL_STYLE_STEPS = 1000  # candy_bin needed 1100 steps at 192 px to look like candy


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 90 else f"{max(5, round(seconds))} s"


def style_estimate(image_size: float | None, steps: float | None, batch: float | None) -> str:
    """What Start will cost on CPU, said before Start: "≈ 3 min on CPU …", plus how long a run
    that clearly shows the style takes at this size."""
    try:
        size, steps, batch = int(image_size), int(steps), int(batch)
    except (TypeError, ValueError):
        return ""
    per_step = STYLE_S_PER_STEP_192PX_BATCH4 * (size / 192) ** 2 * (batch / 4)
    useful = per_step * USEFUL_STYLE_STEPS
    return (f"Estimate: about {_minutes(per_step * max(steps, 1))} on this server's CPU "
            f"({per_step:.1f} s per step). A style that clearly shows needs about "
            f"{USEFUL_STYLE_STEPS} steps (≈ {_minutes(useful)} at {size} px); a GPU is far faster.")


def classifier_estimate(cfg: UIConfig, data: str | None, epochs: float | None,
                        subset: float | None) -> str:
    """What Start will cost on CPU for a CIFAR-sized ResNet, said before Start."""
    sizes = dataset_sizes(cfg).get(data or "")
    try:
        epochs, subset = int(epochs), int(subset or 0)
    except (TypeError, ValueError):
        return ""
    if sizes is None:
        return ""
    train_n, test_n = sizes
    n = min(subset, train_n) if subset > 0 else train_n
    seconds = (CLASSIFY_S_PER_IMAGE_EPOCH * n + CLASSIFY_S_PER_TEST_IMAGE * test_n) * max(epochs, 1)
    return (f"Estimate: about {_minutes(seconds)} on this server's CPU for a ResNet-20 "
            f"({n:,} training "
            f"images × {epochs} epoch{'s' if epochs != 1 else ''}; the first run also decodes the "
            "dataset once). Bigger architectures take longer.")


# The training forms' defaults are the configs' (stylize.config.TrainConfig,
# classify.config.TrainConfig), except these, which the UI sizes for this server's CPU on purpose:
# a run that finishes in a few minutes on 2 cores (see the estimates above); the form says how
# long a useful run takes. Mixed precision: the configs' "auto" is float32 on a CPU; the
# classifier form autocasts where it pays (engine.devices.autocast_pays: a CPU with native bf16,
# a CUDA GPU), since a form run is about minutes, not bit-reproducibility across machines.
# Style: 500 steps, since the linear head (the default) spends its first ~200 steps near black
# before it draws the painting (reports/style-quality, "The output head").
CPU_SIZED = {"style": {"image_size": 128, "steps": 500, "batch_size": 2},
             "classify": {"epochs": 3, "train_subset": 5000}}


def form_defaults(config_cls: type, keys: tuple[str, ...], cpu_sized: dict[str, Any]) -> dict:
    """``keys``' defaults for a form: the config's, overridden by the UI's CPU-sized ones."""
    base = defaults(config_cls)
    return {k: cpu_sized.get(k, base[k]) for k in keys}


STYLE_DEFAULTS = form_defaults(StyleConfig, ("image_size", "steps", "batch_size", "preview_every"),
                               CPU_SIZED["style"])
CLASSIFY_DEFAULTS = form_defaults(ClassifyConfig, ("epochs", "batch_size", "lr", "train_subset"),
                                  CPU_SIZED["classify"])
