"""Checkpoint files for every model built on ``norms``: atomic writes, safetensors with the
model config in the metadata, and weights-only loading of PyTorch files."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    import torch


TEMP_SUFFIX = ".tmp"
# what atomic_path's temp files are called: ".NAME." + 8 of mkstemp's [a-z0-9_] + ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def temp_target(candidate: str) -> str | None:
    """The file name an ``atomic_path`` temp file called ``candidate`` was written for, else
    None: how a cleanup tells its own temp files from a user's ``.notes.tmp``."""
    m = _TEMP_NAME.fullmatch(candidate)
    return m.group("name") if m else None


class DiskFullError(OSError):
    """A write that ran out of space; the file it would have replaced is untouched."""

    def __init__(self, path: Path, needed: int | None) -> None:
        where = _mount_point(path.parent)
        need = f" (needs {max(1, round(needed / 2**20))} MB)" if needed else ""
        super().__init__(errno.ENOSPC, f"no space left on {where}{need} to write {path}; "
                                       "the file it replaces was kept")

    def __str__(self) -> str:
        return str(self.strerror)


def _mount_point(folder: Path) -> str:
    """The device (mount point) holding ``folder``, for disk-full messages."""
    p = Path(os.path.abspath(folder))
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def fsync_path(path: str | Path) -> None:
    """Flush a file (or a folder's entries) to the disk; a no-op where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is flushed to the disk (fsync) and
    renamed onto ``path``, on error removed. Readers never see a half-written file, and a crash
    leaves the old file or the new one. Running out of space is a ``DiskFullError`` saying where
    and how much (``needed`` bytes, when the caller knows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            fsync_path(tmp)
        except OSError as exc:
            if exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
                raise DiskFullError(path, needed) from None
            raise
        # mkstemp (and some writers, e.g. safetensors) create 0600 files; give the result the
        # permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        fsync_path(path.parent)  # the rename itself survives a power cut
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: str | Path, wait_s: float = 2.0) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` for as long as the block runs, so that two
    processes never write one training run (a restarted sweep next to an orphaned worker, or
    the same ``--resume`` started twice). A POSIX ``flock``: the system drops it when the holder
    dies, so a killed run never leaves a stale lock. A lock still held after ``wait_s`` seconds
    (a brief ``folder_busy`` probe is not) is a one-line ``ValueError``. Where ``fcntl`` is
    missing (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    pid = f.read().strip()
                    raise ValueError(f"{folder} is being trained by another process"
                                     + (f" (pid {pid})" if pid else "")
                                     + "; wait for it to finish or stop it first") from None
                time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def folder_busy(folder: str | Path) -> bool:
    """Whether a process holds ``folder_lock(folder)`` now; a read-only probe that writes
    nothing (False where locks are unsupported)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        f = open(Path(folder) / ".lock")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


CHECKSUM_KEY = "sha256"


def _feed(h: Any, obj: Any) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:  # str, int, float, bool, None: repr round-trips exactly
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_digest(obj: Any) -> str:
    """sha256 of a nested structure of tensors and plain values, in its own order (dicts keep
    their order through torch.save/load): the checksum stored with what the engine writes."""
    import hashlib

    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _safetensors_digest(tensors: dict[str, torch.Tensor], raw_meta: dict[str, str]) -> str:
    return content_digest({"metadata": {k: raw_meta[k] for k in sorted(raw_meta)
                                        if k != CHECKSUM_KEY},
                           "tensors": {k: tensors[k] for k in sorted(tensors)}})


def check_safetensors_digest(path: str | Path, tensors: dict[str, torch.Tensor],
                             raw_meta: dict[str, str]) -> None:
    """One-line ``ValueError`` naming ``path`` when its stored checksum does not match what was
    read (files without a checksum, e.g. written before it existed, pass)."""
    stored = raw_meta.get(CHECKSUM_KEY)
    if stored is None:
        return
    try:
        stored = json.loads(stored)
    except json.JSONDecodeError:
        pass
    if stored != _safetensors_digest(tensors, raw_meta):
        raise ValueError(f"{path} is damaged: its sha256 checksum does not match its contents "
                         "(refusing to use it; restore it from a copy)")


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, Any] | None = None) -> None:
    """Save tensors atomically; every metadata value is stored as JSON text (safetensors allows
    only string metadata), so configs round-trip with ``load_safetensors``. A sha256 of the
    tensors and the metadata is stored as metadata ``sha256`` and checked on load."""
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) for k, v in (metadata or {}).items() if k != CHECKSUM_KEY}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta[CHECKSUM_KEY] = json.dumps(_safetensors_digest(tensors, meta))
    with atomic_path(path, needed=tensor_bytes(tensors)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path: str | Path, device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a file written by ``save_safetensors``; ``ValueError`` with one line
    when the file is missing or not a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several internal error types
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    check_safetensors_digest(path, tensors, raw)
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically (tensors, dicts, lists and plain numbers only, so that
    ``load_torch``'s weights-only unpickler reads it back)."""
    import torch

    with atomic_path(path, needed=tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested dict/list (what a file of it needs, near enough)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(..., weights_only=True)``: never unpickles arbitrary objects. One-line
    ``ValueError`` for a missing, truncated or foreign file."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    kind = file_type(path)
    if kind == "missing":
        raise ValueError(f"file {path} not found")
    if kind != "file":
        raise ValueError(f"{path} is a {kind}, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (or, before PyTorch 1.6, a pickle stream: 0x80 + protocol)
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is a truncated or corrupt PyTorch checkpoint")
    if not zipfile.is_zipfile(path) and not (len(head) >= 2 and head[0] == 0x80 and head[1] <= 5):
        raise ValueError(f"{path} is not a PyTorch checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} holds Python objects other than tensors and plain data; normlab "
                         "reads checkpoints weights-only and will not execute them") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is a truncated or corrupt PyTorch checkpoint ({first})") from None


# ------------------------------------------------------------------ what a command may read/write

def clip(text: object, limit: int = 80) -> str:
    """``repr``-like echo of a user's value for an error line, cut to ``limit`` characters (a
    10 kB ``--style`` string is not printed whole)."""
    s = str(text)
    return s if len(s) <= limit else s[:limit] + f"… ({len(s)} characters)"


def file_type(path: str | Path) -> str:
    """What a path that exists but is not a regular file is: "folder", "named pipe (FIFO)", ..."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe (FIFO)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISREG, "file")):
        if test(mode):
            return name
    return "special file"


def check_regular_file(path: str | Path, what: str = "") -> Path:
    """``path`` if it is a regular file (symlinks followed), else a one-line ``ValueError``:
    missing, a folder, or a FIFO / device / socket (which would block or never end when read)."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    kind = file_type(path)
    if kind == "missing":
        raise ValueError(f"{label} does not exist")
    if kind != "file":
        raise ValueError(f"{label} is a {kind}, not a regular file")
    return path


def input_keys(paths: "Iterable[str | Path | None]") -> set[tuple]:
    """Identities of the files a command reads, for ``is_input``: each resolved path (symlinks,
    ``..``), and for files that exist their (device, inode), so that a case-insensitive
    filesystem (``o.JPG`` vs ``o.jpg``) or a hard link is recognised on the filesystem's terms."""
    keys: set[tuple] = set()
    for p in paths:
        if p is None:
            continue
        keys.add(("path", os.path.normcase(os.path.realpath(p))))
        try:
            st = os.stat(p)
            keys.add(("inode", st.st_dev, st.st_ino))
        except OSError:
            pass
    return keys


def is_input(path: str | Path, keys: set[tuple]) -> bool:
    """Whether ``path`` names one of the files whose ``input_keys`` are ``keys``."""
    if ("path", os.path.normcase(os.path.realpath(path))) in keys:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return ("inode", st.st_dev, st.st_ino) in keys


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (see ``input_keys``)."""
    return is_input(a, input_keys([b]))


def check_folder_writable(folder: str | Path, what: str = "output folder") -> None:
    """``folder`` can be created or written: no existing file on its path, writable ancestor."""
    folder = Path(folder)
    p = folder
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise ValueError(f"{what} {folder} cannot be created: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder} is not writable (permission denied on {p})")


# output kinds: (the file name endings each may have, what to call it in an error)
OUTPUT_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "image": ((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm",
               ".pbm", ".jfif"), "an image"),
    "figure": ((".png", ".jpg", ".jpeg", ".pdf", ".svg"), "a figure"),
    "safetensors": ((".safetensors",), "a safetensors model"),
    "onnx": ((".onnx",), "an ONNX model"),
    "json": ((".json",), "a JSON file"),
    "markdown": ((".md", ".markdown", ".txt"), "a Markdown table"),
    "video": ((".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"), "a video"),
}


def check_output(path: str | Path, *, kind: str, inputs: "Iterable[str | Path | None]" = (),
                 overwrite: bool = False, what: str = "output",
                 keys: set[tuple] | None = None) -> Path:
    """The one rule for every file a command writes, checked before any work:

    - never one of ``inputs`` (resolved paths; case-insensitively where the filesystem is; a
      model given by shipped name counts as its file under ``weights/``);
    - never an existing file without ``overwrite``, never an existing folder or special file;
    - never a file of another kind: the name must end like ``kind`` (``OUTPUT_KINDS``), so an
      ONNX export is not written to ``x.jpg``;
    - its folder can be created and written.

    ``keys``: ``input_keys`` of many inputs computed once (a folder of images). Returns
    ``path``; the write itself should go through ``atomic_path``."""
    path = Path(path)
    suffixes, label = OUTPUT_KINDS[kind]
    if path.suffix.lower() not in suffixes:
        got = f"ends in {path.suffix!r}" if path.suffix else "has no extension"
        raise ValueError(f"{what} {clip(path, 200)} {got}, but it will be {label}: give a name "
                         f"ending in {', '.join(suffixes)}")
    for src in inputs:
        if src is not None and same_file(path, src):
            raise ValueError(f"{what} {path} is one of the inputs ({src}); it is never "
                             "overwritten: choose another output")
    if keys is not None and is_input(path, keys):
        raise ValueError(f"{what} {path} is one of the inputs; it is never overwritten: "
                         "choose another output")
    if os.path.lexists(path):
        kind_now = file_type(path)
        if kind_now not in ("file", "missing"):
            raise ValueError(f"{what} {path} is an existing {kind_now}, not a file")
        if not overwrite:
            raise ValueError(f"{what} {path} already exists; use --overwrite to replace it")
    check_folder_writable(path.parent)
    return path
