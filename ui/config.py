"""Server-side settings of the web UI and the registry of models trained in it.

Nothing here imports gradio, nor torch at import time: the command line builds a ``UIConfig``
before gradio is loaded, and ``normlab --help`` stays fast.
"""
from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
KINDS = ("stylize", "classify")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def default_allowed_dirs() -> list[Path]:
    """The bundled sample photos and, when present, the ../shared/data folders."""
    from weights import SAMPLES_DIR

    dirs = [SAMPLES_DIR]
    data = SHARED / "data"
    if data.is_dir():
        dirs += sorted(p for p in data.iterdir() if p.is_dir())
    return [d.resolve() for d in dirs if d.is_dir()]


# Input and output images held while a large image is stylized in tiles (uint8 arrays and their
# PIL copies), as stylize.tiling budgets them; ui.config must not import torch, hence the copy.
IMAGE_BYTES_PER_PIXEL = 16


def pixels_for_budget(memory_budget_mb: int) -> int:
    """The largest image a request may upload: its buffers in at most half the per-request memory
    budget, the other half for the tiles (2048 MB → 67 MP)."""
    return int(memory_budget_mb * 2**20 / 2 / IMAGE_BYTES_PER_PIXEL)


def default_vgg_weights() -> Path | None:
    """The normalised VGG-19 encoder found on ``weights.encoder_search_path`` (../shared in a
    source checkout), if any: style training and any-painting stylizing need it."""
    import weights

    return weights.find_encoder_file()


@dataclass
class UIConfig:
    """What the operator decides when starting ``normlab ui``."""

    allowed_dirs: list[Path] = field(default_factory=default_allowed_dirs)
    runs_dir: Path = ROOT / "runs" / "ui"
    reports_dir: Path = ROOT / "reports"  # what `normlab reproduce NAME` wrote (Reports tab)
    device: str = "auto"
    vgg_weights: Path | None = field(default_factory=default_vgg_weights)
    # per uploaded image or video frame; None: what the memory budget can stylize (tiles with
    # thumbnail statistics), i.e. the input and output buffers in half of it
    max_pixels: int | None = None
    memory_budget_mb: int = 2048  # per inference request (the library tiles to stay within it)
    max_file_size: str = "200mb"  # per upload, enforced by gradio (videos need room)
    # all files of one upload request together (several files per request are possible)
    upload_budget: str = "250mb"
    # gradio's cache of uploads and outputs: every 10 minutes, files older than an hour go
    # (uploads that no event ever used would otherwise stay in /tmp)
    delete_cache: tuple[int, int] = (600, 3600)
    concurrency: int = 2  # inference requests run at once (one GPU, or a few CPU cores)
    max_queue: int = 64
    max_video_frames: int = 900  # per uploaded video (30 s at 30 fps); longer ones are refused
    max_video_seconds: float = 60.0
    # stylized videos are written here (inside the system temp folder, which gradio serves from;
    # gradio copies each result into its own cache, and files older than an hour are removed)
    output_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "normlab-ui")

    def __post_init__(self) -> None:
        self.allowed_dirs = [Path(d).expanduser().resolve() for d in self.allowed_dirs]
        self.runs_dir = Path(self.runs_dir).expanduser().resolve()
        self.reports_dir = Path(self.reports_dir).expanduser().resolve()
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        if self.max_pixels is None:
            self.max_pixels = pixels_for_budget(self.memory_budget_mb)
        self.registry = ModelRegistry(self.runs_dir / "registry.json")

    def check_allowed(self, path: str | Path) -> Path:
        """``path`` resolved, if it lies inside an operator-allowed folder; ``ValueError`` else."""
        p = Path(path).expanduser().resolve()
        if not any(p == d or d in p.parents for d in self.allowed_dirs):
            raise ValueError("that folder is not inside a folder the operator allowed "
                             "(start the UI with --allowed-dir to add one)")
        if not p.is_dir():
            raise ValueError("that path is not a folder")
        return p


def slug(text: str, default: str = "model") -> str:
    """A file-name-safe model name."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-.")
    return s[:60] or default


class ModelRegistry:
    """Models trained in this UI: a JSON list under the (git-ignored) runs folder, so they survive
    a restart and show up in the model lists at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        try:
            return list(json.loads(self.path.read_text()).get("models", []))
        except (OSError, ValueError):
            return []

    def entries(self, kind: str) -> list[dict]:
        """Registered models of ``kind`` whose file still exists, oldest first."""
        return [e for e in self._read() if e.get("kind") == kind and Path(e["path"]).is_file()]

    def names(self, kind: str) -> list[str]:
        return [e["name"] for e in self.entries(kind)]

    def path_of(self, kind: str, name: str) -> Path | None:
        for e in self.entries(kind):
            if e["name"] == name:
                return Path(e["path"])
        return None

    def unique_name(self, kind: str, base: str) -> str:
        taken = set(self.names(kind))
        name, i = base, 2
        while name in taken:
            name, i = f"{base}-{i}", i + 1
        return name

    def add(self, kind: str, name: str, path: str | Path, **info) -> str:
        """Register a trained model file; returns the name it got (made unique)."""
        from engine.io import write_text_atomic  # (imports torch: only when a model is added)

        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}")
        with self._lock:
            models = self._read()
            name = self.unique_name(kind, name)
            models.append({"kind": kind, "name": name, "path": str(Path(path).resolve()),
                           "created": time.strftime("%Y-%m-%d %H:%M:%S"), **info})
            write_text_atomic(self.path, json.dumps({"models": models}, indent=1))
        return name
