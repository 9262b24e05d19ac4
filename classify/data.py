"""Datasets as in-memory uint8 tensors, with tensor-side augmentation.

Specs (``--data``):
- ``cifar10:ROOT``: torchvision's CIFAR10 python files under ROOT (downloaded only when
  ``download=True``).
- ``folder:TRAIN_DIR[,TEST_DIR]``: ImageFolder layout (``<dir>/<class>/*.jpg``).
- ``pacs:ROOT`` with ``train_domains`` / ``test_domains``: ``ROOT/<domain>/<class>/*.jpg``.

Decoding tens of thousands of JPEGs every epoch would dominate CPU training, so a folder is decoded
once (resized to ``image_size``) into a uint8 N×3×S×S tensor cached on disk, keyed by the folder
path, the image size and every file's name, size and mtime (``NORMLAB_CACHE``, default
``runs/cache``). Augmentation then works on whole batches with a seeded ``torch.Generator``, which
is what makes resumed training reproduce uninterrupted training exactly.

Validation (``--val-split N``, ``DataSplit.with_validation``): N training images, chosen by a
fixed seed, are held out as the set evaluated during training (``val``), so whatever is decided
from those numbers — epochs, restarts, stopping — never sees the test sets; those are moved to
``DataSplit.final`` and evaluated once, after training.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from engine.io import load_torch, save_torch

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
VAL = "val"  # the name of the hold-out set in DataSplit.tests and in metrics
VAL_SEED = 0  # one hold-out for every run of a dataset, whatever its training seed
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


@dataclass
class TensorDataset:
    """Images (uint8 N×3×S×S), labels (int64 N), class names, and a name for reports."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    name: str = ""

    def __len__(self) -> int:
        return int(self.y.numel())

    def subset(self, n: int | None, seed: int = 0) -> "TensorDataset":
        """A seeded random subset of ``n`` images (all when ``n`` is None or ≥ len)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset size must be positive, got {n}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return TensorDataset(self.x[idx], self.y[idx], self.classes, f"{self.name}[{n}]")

    def to(self, device: torch.device | str) -> "TensorDataset":
        """The same images and labels on ``device`` (GPU-resident data: decoded once, uint8,
        augmented there by ``augment``)."""
        return TensorDataset(self.x.to(device), self.y.to(device), self.classes, self.name)


@dataclass
class DataSplit:
    """Training set and one or more named test sets (domains), all with the same classes."""

    train: TensorDataset | None
    tests: dict[str, TensorDataset] = field(default_factory=dict)  # evaluated during training
    spec: str = ""
    # evaluated once, after training (the test sets when a validation set was held out)
    final: dict[str, TensorDataset] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        ds = self.train or next(iter(self.tests.values()))
        return ds.classes

    def to(self, device: torch.device | str) -> "DataSplit":
        """Every set moved to ``device`` (a CIFAR-10 split is ~180 MB as uint8)."""
        return DataSplit(self.train.to(device) if self.train is not None else None,
                         {k: v.to(device) for k, v in self.tests.items()}, self.spec,
                         {k: v.to(device) for k, v in self.final.items()})

    def with_validation(self, n: int, seed: int = VAL_SEED) -> "DataSplit":
        """``n`` training images held out as the validation set ``val`` (the only set evaluated
        during training); the test sets move to ``final``. The hold-out is a seeded random
        sample of the training set, stratified by class (each class gives its share, so a
        small ``n`` still sees every class), the same for every run of a dataset."""
        if self.train is None:
            raise ValueError("--val-split needs a training set")
        train, val = hold_out(self.train, n, seed)
        return DataSplit(train, {VAL: val}, self.spec, {**self.final, **self.tests})


def hold_out(ds: TensorDataset, n: int, seed: int = VAL_SEED) -> tuple[TensorDataset, TensorDataset]:
    """(the rest, ``n`` held-out images) of ``ds``: a seeded sample stratified by class
    (largest-remainder shares of ``n``), both in the original order."""
    if not 1 <= n <= len(ds) - 2:
        raise ValueError(f"--val-split must be from 1 to {len(ds) - 2} (the training set has "
                         f"{len(ds)} images), got {n}")
    g = torch.Generator().manual_seed(seed)
    counts = torch.bincount(ds.y, minlength=len(ds.classes)).tolist()
    exact = [n * c / len(ds) for c in counts]
    share = [int(e) for e in exact]
    for k in sorted(range(len(counts)), key=lambda k: share[k] - exact[k])[:n - sum(share)]:
        share[k] += 1  # largest remainders first
    pick = torch.zeros(len(ds), dtype=torch.bool)
    for k, m in enumerate(share):
        idx = (ds.y == k).nonzero().flatten()
        pick[idx[torch.randperm(len(idx), generator=g)[:m]]] = True
    val = TensorDataset(ds.x[pick], ds.y[pick], ds.classes, f"{ds.name}[val {n}]")
    rest = TensorDataset(ds.x[~pick], ds.y[~pick], ds.classes, f"{ds.name}[−val {n}]")
    return rest, val


def cache_dir() -> Path:
    return Path(os.environ.get("NORMLAB_CACHE", "runs/cache"))


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image file as RGB with the shared decoder (EXIF, 16-bit, CMYK, palette, alpha,
    bomb limit: ``engine.images.load_image``); one-line ``ValueError`` when it is not a readable
    image."""
    from engine.images import load_image

    return load_image(path).convert("RGB")


def fit_square(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop to size×size (no-op when it fits)."""
    if im.size == (size, size):
        return im
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def pil_to_uint8(im: Image.Image) -> torch.Tensor:
    """PIL RGB → uint8 3×H×W."""
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(
        im.size[1], im.size[0], 3).permute(2, 0, 1).contiguous()


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist or is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"data folder {root} has no class subfolders (expected {root}/<class>/*.jpg)")
    files = []
    for i, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                files.append((p, i))
    if not files:
        raise ValueError(f"data folder {root} has class folders but no images "
                         f"({', '.join(IMAGE_EXTS)})")
    return classes, files


def load_folder(root: str | Path, image_size: int,
                progress: Callable[[int, int], None] | None = None) -> TensorDataset:
    """Decode an ImageFolder tree into a ``TensorDataset`` (cached on disk, see module doc)."""
    root = Path(root).expanduser().resolve()
    classes, files = _scan(root)
    h = hashlib.sha256(f"{root}|{image_size}".encode())
    for p, _ in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = cache_dir() / f"{root.parent.name}_{root.name}-{image_size}-{h.hexdigest()[:16]}.pt"
    if cache.is_file():
        try:
            d = load_torch(cache)
            return TensorDataset(d["x"], d["y"], list(d["classes"]), root.name)
        except (ValueError, KeyError):
            pass  # unreadable cache: rebuild it
    from tqdm import tqdm

    x = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    y = torch.tensor([c for _, c in files], dtype=torch.long)
    ok = torch.ones(len(files), dtype=torch.bool)
    for i, (p, _) in enumerate(tqdm(files, desc=f"decoding {root.name}", leave=False,
                                    mininterval=1.0)):
        try:
            x[i] = pil_to_uint8(fit_square(open_rgb(p), image_size))
        except ValueError as exc:  # one bad file costs that file, not the run
            ok[i] = False
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
        if progress and i % 1000 == 0:
            progress(i, len(files))
    if not ok.any():
        raise ValueError(f"data folder {root}: none of its {len(files)} images could be read")
    if not ok.all():
        tqdm.write(f"{root}: skipped {int((~ok).sum())} unreadable of {len(files)} images",
                   file=sys.stderr)
        x, y = x[ok], y[ok]
    try:
        save_torch(cache, {"x": x, "y": y, "classes": classes})
    except OSError:
        pass  # a read-only cache location only costs speed
    return TensorDataset(x, y, classes, root.name)


def load_cifar10(root: str | Path, download: bool = False) -> tuple[TensorDataset, TensorDataset]:
    """torchvision CIFAR10 (python files) as tensors; downloads only when asked."""
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    out = []
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except RuntimeError as exc:
            raise ValueError(f"cifar10:{root}: {str(exc).splitlines()[0]} (pass --download to "
                             "fetch it, or use folder:TRAIN,TEST for an ImageFolder copy)") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out.append(TensorDataset(x, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes),
                                 "cifar10-" + ("train" if train else "test")))
    return out[0], out[1]


def _split_names(s: str | list[str] | None) -> list[str]:
    if s is None:
        return []
    if isinstance(s, str):
        s = s.split(",")
    return [v.strip() for v in s if v.strip()]


def load_data(spec: str, image_size: int = 32, train_domains: str | list[str] | None = None,
              test_domains: str | list[str] | None = None, download: bool = False,
              need_train: bool = True,
              progress: Callable[[str, int, int], None] | None = None) -> DataSplit:
    """Parse a ``--data`` spec (see module doc) and load it. ``progress(what, done, total)``
    while folders decode (what: "training", "test" or a domain); an exception it raises (a
    cancel) ends the load."""

    def tick(what: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda i, n: progress(what, i, n))

    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"--data must be cifar10:ROOT, folder:TRAIN[,TEST] or pacs:ROOT, got {spec!r}")
    kind = kind.strip().lower()
    if kind == "cifar10":
        tr, te = load_cifar10(rest, download)
        if image_size != 32:
            raise ValueError(f"cifar10 images are 32×32; got image size {image_size}")
        return DataSplit(tr if need_train else None, {"test": te}, spec)
    if kind == "folder":
        parts = [p for p in rest.split(",") if p.strip()]
        if len(parts) > 2:
            raise ValueError(f"folder: takes TRAIN_DIR[,TEST_DIR], got {len(parts)} paths")
        train = (load_folder(parts[0], image_size, tick("training"))
                 if (need_train or len(parts) == 1) else None)
        tests = {}
        if len(parts) == 2:
            tests["test"] = load_folder(parts[1], image_size, tick("test"))
            if train is not None and tests["test"].classes != train.classes:
                raise ValueError(f"class folders differ between {parts[0]} and {parts[1]}")
        elif not need_train:
            tests["test"], train = train, None
        return DataSplit(train, tests, spec)
    if kind == "pacs":
        root = Path(rest).expanduser()
        if not root.is_dir():
            raise ValueError(f"pacs root {root} does not exist")
        domains = sorted(d.name for d in root.iterdir() if d.is_dir())
        trd, ted = _split_names(train_domains), _split_names(test_domains)
        if not ted:
            raise ValueError(f"pacs needs --test-domains (domains: {', '.join(domains)})")
        if need_train and not trd:
            trd = [d for d in domains if d not in ted]
        for d in trd + ted:
            if d not in domains:
                raise ValueError(f"unknown PACS domain {d!r}; domains under {root}: "
                                 f"{', '.join(domains)}")
        train = None
        if need_train:
            parts = [load_folder(root / d, image_size, tick(d)) for d in trd]
            for p, d in zip(parts, trd):
                if p.classes != parts[0].classes:
                    raise ValueError(f"PACS domain {d} has different classes")
            train = TensorDataset(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]),
                                  parts[0].classes, "+".join(trd))
        tests = {d: load_folder(root / d, image_size, tick(d)) for d in ted}
        for d, t in tests.items():
            if train is not None and t.classes != train.classes:
                raise ValueError(f"PACS domain {d} has different classes from the training domains")
        return DataSplit(train, tests, spec)
    raise ValueError(f"unknown data kind {kind!r}; use cifar10:ROOT, folder:TRAIN[,TEST] or pacs:ROOT")


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0–1 scale) of a uint8 N×3×H×W tensor. The std is at least one
    grey level (1/255), so a channel that is constant over the data does not divide by zero."""
    xf = x.float().div_(255)
    return xf.mean((0, 2, 3)).tolist(), xf.std((0, 2, 3)).clamp_min(1 / 255).tolist()


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 N×3×H×W → float, (x/255 − mean)/std."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


def crop_pad(image_size: int) -> int:
    """Padding of the random-crop augmentation: 4 px at CIFAR's 32 px (He et al. 2016), scaled
    with the input size."""
    return max(1, image_size // 8)


def augment(x: torch.Tensor, g: torch.Generator, pad: int) -> torch.Tensor:
    """Standard CIFAR augmentation on a uint8 batch: zero-pad by ``pad``, random crop back,
    random horizontal flip (He et al. 2016). Random numbers come from ``g`` only (a CPU
    generator, drawn in the same order whatever the device, so a run resumes exactly).

    One gather for the whole batch on ``x``'s device (airbench-style: the data can live on the
    GPU and never leave it), instead of a Python loop of per-image slices."""
    n, c, h, w = x.shape
    flips = torch.rand(n, generator=g) < 0.5
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dev = x.device
    flips, ox, oy = flips.to(dev), ox.to(dev), oy.to(dev)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # N×C×(H+2p)×(W+2p)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h  # N×H: source row of each output row
    cols = ox[:, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # N×W, mirrored if flip
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w)
    out = xp.reshape(n, c, -1).gather(2, flat.expand(n, c, h * w))  # N×C×HW
    return out.view(n, c, h, w)
