"""Image files in and out: EXIF orientation, every common mode, decompression-bomb limit, and
one-line ``ValueError`` for anything that is not a readable image."""
from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # torch loads only for tensors: a cached ONNX run never imports it
    import torch

# Pillow's default bomb threshold is ~89 Mpx (warning) / 179 Mpx (error); a feed-forward net at
# 0–255 float needs ~1.5 GB per 10 Mpx in activations without tiling, so cap earlier and clearly.
MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm", ".jfif"}


def _to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB, or RGBA when the image has transparency."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit / 32-bit grayscale: scale by the format's range, not Pillow's clipping convert
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max() > 255) else 255.0
        if mode == "F":
            top = max(float(arr.max()), 1.0) if arr.max() > 1.0 else 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P":
        return img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBa"):
        return img.convert("RGBA")
    if mode == "CMYK":
        return img.convert("RGB")
    return img.convert("RGB")  # L, 1, YCbCr, LAB, HSV


_PIL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb check (a warning at ``Image.MAX_IMAGE_PIXELS``) raised to ``max_pixels``
    while a larger limit is in force; the explicit check in ``load_image`` still applies."""
    before = Image.MAX_IMAGE_PIXELS
    if before is None or max_pixels <= before:
        yield
        return
    with _PIL_LIMIT_LOCK:  # only large-limit loads serialise; the usual path takes no lock
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max(max_pixels, before or 0)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as RGB (or RGBA if it has transparency), EXIF orientation applied.

    ``max_pixels`` guards against decompression bombs; callers that can process larger images
    in bounded memory (tiled stylization) pass a limit derived from their memory budget.
    Raises ``ValueError`` with one line for missing, truncated, non-image or too large files.
    """
    from engine.io import file_type

    path = Path(path)
    kind = file_type(path)
    if kind == "missing":
        raise ValueError(f"{path} does not exist")
    if kind != "file":  # a FIFO or a device would block the read forever
        raise ValueError(f"{path} is a {kind}, not an image")
    try:
        with warnings.catch_warnings(), _pillow_limit(max_pixels):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ValueError(f"{path} is {w}×{h} = {w * h / 1e6:.0f} Mpx, over the limit "
                                     f"of {max_pixels / 1e6:.0f} Mpx (decompression-bomb guard)")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb_or_rgba(img)
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path} is too large to open safely ({exc})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file Pillow can read") from None
    except (OSError, SyntaxError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is truncated or corrupt ({first})") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → 1×3×H×W float tensor in 0–255."""
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def to_image(t: torch.Tensor) -> Image.Image:
    """1×3×H×W or 3×H×W tensor in 0–255 → RGB PIL image (clamped, rounded)."""
    import torch

    if t.ndim == 4:
        t = t[0]
    arr = t.detach().float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursively, sorted) or ``[root]`` when it is a file."""
    from engine.io import check_regular_file

    root = Path(root)
    if root.is_dir():
        return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [check_regular_file(root)]


def save_image(img: Image.Image, path: str | Path, quality: int = 95) -> None:
    """Save atomically; formats without alpha get RGB."""
    from engine.io import atomic_path

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format from {path.name!r}; use .jpg or .png")
    if img.mode == "RGBA" and fmt in ("JPEG", "BMP", "PPM"):
        img = img.convert("RGB")
    kw = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **kw)
