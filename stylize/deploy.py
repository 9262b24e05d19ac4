"""Deploying style models: ONNX export (dynamic batch, height and width, every norm) and an
onnxruntime backend for inference.

The exported graph is the network's eval forward for inputs whose height and width are multiples
of 4 and at least 16 (the norms export as plain ONNX operators, see ``norms``: no custom autograd
Function). ``TransformerNet.forward`` pads other sizes (reflection, bottom/right) and crops the
result; ``OnnxStyleRunner`` does the same padding outside the graph, so both give the same
output for any size.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.io import atomic_path

if TYPE_CHECKING:  # torch loads only to export: running a cached export is torch-free
    import torch

    from .infer import StyleModel

ONNX_OPSET = 17
# Bumped whenever the exported graph changes for the same weights (cache entries of other
# versions are rebuilt). 2: gates are graph inputs with their learned values as defaults.
EXPORT_FORMAT = 2
# Largest safetensors header (tensor table + metadata) and JSON nesting read from a model file:
# a real style model's header is ~10 kB and 3 levels deep; a crafted 96 MB value of `{}` items
# parsed into 32 M objects (+2.3 GB), a deeply nested one hit the recursion limit.
MAX_HEADER_BYTES = 4 << 20
MAX_JSON_DEPTH = 32
# Bound of the ONNX cache folder (bytes, least recently used entries go first); an entry is
# ~7 MB for the shipped 32-channel models. ``NORMLAB_ONNX_CACHE_MB`` overrides it.
DEFAULT_CACHE_BYTES = 256 << 20


class CacheUnavailable(RuntimeError):
    """The ONNX cache cannot be written (read-only, missing or full folder): run in torch."""


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text`` (strings skipped), computed without
    parsing it, so a hostile document is refused before ``json.loads`` recurses into it."""
    import re

    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    steps = np.frombuffer(bare.encode("latin-1", "replace"), dtype=np.uint8)
    d = np.zeros(len(steps), dtype=np.int64)
    d[(steps == ord("[")) | (steps == ord("{"))] = 1
    d[(steps == ord("]")) | (steps == ord("}"))] = -1
    return int(np.cumsum(d).max()) if len(d) else 0


def checked_json(text: str, what: str, max_bytes: int = MAX_HEADER_BYTES,
                 max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)`` after bounding its size and nesting depth (one-line ``ValueError``
    naming ``what`` otherwise)."""
    if len(text) > max_bytes:
        raise ValueError(f"{what} is {len(text) / 2**20:.1f} MB of JSON, over the limit of "
                         f"{max_bytes / 2**20:.0f} MB")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"{what} is JSON nested {depth} levels deep, over the limit of "
                         f"{max_depth}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({str(exc)[:80]})") from None


def read_header_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a safetensors model file, torch-free, with the header's size and every
    value's JSON size and depth bounded before parsing (values JSON-decoded where they are
    JSON). One-line ``ValueError`` for a file that is not a safetensors model within bounds."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n <= 1 or n > path.stat().st_size - 8:
                raise ValueError(f"{path} is not a safetensors model file")
            if n > MAX_HEADER_BYTES:
                raise ValueError(f"{path}: its header is {n / 2**20:.1f} MB, over the limit of "
                                 f"{MAX_HEADER_BYTES / 2**20:.0f} MB for a model file")
            raw = f.read(n).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a safetensors model file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    header = checked_json(raw, f"{path}: the header")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a safetensors model file")
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, str) and v[:1] in "[{":
            out[k] = checked_json(v, f"{path}: metadata {str(k)[:40]!r}")
        else:
            try:
                out[k] = json.loads(v) if isinstance(v, str) else v
            except (json.JSONDecodeError, RecursionError):
                out[k] = v
    return out


def _restore_initializers(proto, net: torch.nn.Module) -> None:
    """Make every parameter the graph uses a plain initializer. The TorchScript exporter's
    initializer de-duplication keeps one of several identical tensors (e.g. the all-ones γ of
    Switchable Norm layers) and feeds the others through ``Identity`` nodes, which onnxruntime
    rejects ("… is not a graph input, initializer, or output of a previous node"); it can also
    drop one outright. Identity-of-initializer nodes become initializers, lost ones come back
    from the state dict."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            proto.graph.initializer.append(t)
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    have = {i.name for i in proto.graph.initializer} | {i.name for i in proto.graph.input}
    made = {o for n in proto.graph.node for o in n.output}
    state = net.state_dict()
    for name in sorted({i for n in proto.graph.node for i in n.input} - have - made - {""}):
        if name in state:
            proto.graph.initializer.append(
                numpy_helper.from_array(state[name].detach().float().cpu().numpy(), name))


def gate_names(path_or_proto: Any) -> list[str]:
    """Names of the BIN gate initializers that an export exposes as graph inputs."""
    meta = onnx_metadata(path_or_proto)
    return list(meta.get("gates", []))


def export_onnx(model: "StyleModel", dst: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as an ONNX file (input ``x``: N×3×H×W float32 in 0–255, output ``y``
    the same shape; N, H and W dynamic). The config and style go into the file's metadata.
    BIN gates (ρ) stay named initializers that are also optional graph inputs (their learned
    values the defaults), so a gate override is a feed, not a new export."""
    import copy

    import onnx
    import torch
    from onnx import helper

    import norms

    dst = Path(dst)
    net = copy.deepcopy(model.net).float().cpu().eval()
    example = torch.rand(1, 3, 64, 64) * 255  # a multiple of 4: no padding traced into the graph
    gates = [n for n, _ in norms.iter_gates(net)]
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer notices
        # without the exporter's constant folding the gates stay initializers of their own name
        # (onnxruntime folds everything else when it loads the graph)
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], do_constant_folding=not gates,
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                        "y": {0: "n", 2: "h", 3: "w"}})
        proto = onnx.load(str(tmp))
        _restore_initializers(proto, net)
        inits = {i.name: i for i in proto.graph.initializer}
        exposed = [g for g in gates if g in inits]
        for g in exposed:
            t = inits[g]
            proto.graph.input.append(helper.make_tensor_value_info(g, t.data_type, list(t.dims)))
        meta = {"kind": "stylize", "config": json.dumps(model.config.to_dict()),
                "name": model.name, "style": str(model.meta.get("style", model.name)),
                "gates": json.dumps(exposed),
                "input": "N×3×H×W float32 RGB 0–255; H, W multiples of 4 and ≥ 16 (pad by "
                         "reflection, crop after)"}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    return dst


def _threads() -> int:
    """Threads for onnxruntime, as torch would pick them (OMP_NUM_THREADS, else usable cores)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


class OnnxStyleRunner:
    """An onnxruntime session for an exported style model; call it like the network
    (N×3×H×W float tensor or array in 0–255, any H and W ≥ 1; the result has the same type).
    ``feeds`` gives optional graph inputs (BIN gates, see ``export_onnx``)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"ONNX model {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or _threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # "initializer is also a graph input" is by design (gates)
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types
            raise ValueError(f"{path} is not an ONNX model onnxruntime can load "
                             f"({str(exc).strip().splitlines()[0][:200]})") from None
        self.path = path
        # gates are initializers that are also graph inputs: "overridable", not in get_inputs()
        self.inputs = {i.name for i in self.session.get_inputs()} | \
            {i.name for i in self.session.get_overridable_initializers()}

    def run_array(self, a: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """N×3×H×W float32 array → N×3×H×W float32 array."""
        h, w = a.shape[-2:]
        # the same padding as TransformerNet.forward: multiple of 4, at least 16
        ph, pw = max(-h % 4, 16 - h), max(-w % 4, 16 - w)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"
            a = np.pad(a, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        extra = {k: np.asarray(v, dtype=np.float32) for k, v in (feeds or {}).items()}
        unknown = set(extra) - self.inputs
        if unknown:
            raise ValueError(f"{self.path} has no input(s) {sorted(unknown)[:3]}")
        y = self.session.run(None, {"x": np.ascontiguousarray(a, dtype=np.float32), **extra})[0]
        return y[..., :h, :w]

    def __call__(self, x: Any, feeds: dict[str, np.ndarray] | None = None) -> Any:
        if isinstance(x, np.ndarray):
            return self.run_array(x, feeds)
        import torch

        y = self.run_array(x.detach().float().cpu().numpy(), feeds)
        return torch.from_numpy(np.ascontiguousarray(y))


# ---- the export cache ----------------------------------------------------------------------

def cache_dir() -> Path:
    """Where exported ONNX files are kept between runs (``NORMLAB_CACHE`` or
    ``$XDG_CACHE_HOME/normlab``, default ``~/.cache/normlab``)."""
    root = os.environ.get("NORMLAB_CACHE") or Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "normlab"
    return Path(root) / "onnx"


def cache_limit() -> int:
    """Bytes the ONNX cache may hold (``NORMLAB_ONNX_CACHE_MB``, default 256 MB)."""
    v = os.environ.get("NORMLAB_ONNX_CACHE_MB", "").strip()
    try:
        return max(0, int(float(v) * 2**20)) if v else DEFAULT_CACHE_BYTES
    except ValueError:
        return DEFAULT_CACHE_BYTES


def export_settings() -> dict[str, Any]:
    """What, besides the weights, decides the exported graph (part of every cache key). The
    torch version comes from the installed package's metadata: no torch import."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tv = version("torch")
    except PackageNotFoundError:  # pragma: no cover - torch is a dependency
        tv = "?"
    return {"opset": ONNX_OPSET, "format": EXPORT_FORMAT, "torch": tv}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(weights_sha: str) -> str:
    """The cache key of a model: its weights' hash and the export settings."""
    s = json.dumps({"weights": weights_sha, **export_settings()}, sort_keys=True)
    return hashlib.sha256(s.encode()).hexdigest()[:32]


def weights_sha(model: "StyleModel") -> str:
    """The hash of a model's weights: its file's (recorded by ``load_model``, so no tensor is
    hashed) or, for a model built in memory, of its config and state dict. Gate overrides are
    applied with ``gate_override`` only while running: the key is taken from the file or from
    the learned gates (``StyleModel.weights_sha`` is computed at load)."""
    known = getattr(model, "weights_sha", None)
    if known:
        return known
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in model.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return "state:" + h.hexdigest()


def _entry(key: str) -> tuple[Path, Path]:
    d = cache_dir()
    return d / f"{key}.onnx", d / f"{key}.json"


def lookup(key: str) -> Path | None:
    """The cached export for ``key`` if it is there and verified: its sidecar names this key
    and the file's size and sha256 match. A bad entry (truncated, replaced by another model's
    file, sidecar missing) is deleted so it is rebuilt. Touches the entry (LRU)."""
    onnx_path, side = _entry(key)
    if not onnx_path.is_file():
        return None
    try:
        info = checked_json(side.read_text(), f"{side}", max_bytes=1 << 16)
        ok = (isinstance(info, dict) and info.get("key") == key
              and info.get("bytes") == onnx_path.stat().st_size
              and info.get("sha256") == file_sha256(onnx_path))
    except (OSError, ValueError):
        ok = False
    if not ok:
        for p in (onnx_path, side):
            try:
                p.unlink()
            except OSError:
                pass
        return None
    try:
        os.utime(onnx_path)
    except OSError:  # a read-only cache is still usable
        pass
    return onnx_path


def prune(limit: int | None = None, keep: str | None = None) -> int:
    """Delete the least recently used cache entries until the folder holds at most ``limit``
    bytes (default ``cache_limit()``); never the entry ``keep``. Returns the bytes freed."""
    limit = cache_limit() if limit is None else limit
    d = cache_dir()
    try:
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in d.glob("*.onnx")]
    except OSError:
        return 0
    total = sum(s for _, s, _ in files)
    freed = 0
    for _, size, p in sorted(files):
        if total <= limit:
            break
        if p.stem == keep:
            continue
        for q in (p, p.with_suffix(".json")):
            try:
                q.unlink()
            except OSError:
                pass
        total -= size
        freed += size
    return freed


def ensure_export(model: "StyleModel") -> Path:
    """The verified cached export of ``model``, exported now when missing or bad. Raises
    ``CacheUnavailable`` when the cache cannot be written (read-only or missing HOME, disk full),
    so callers run in torch instead."""
    key = cache_key(weights_sha(model))
    found = lookup(key)
    if found is not None:
        return found
    onnx_path, side = _entry(key)
    try:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, onnx_path)
        info = {"key": key, "bytes": onnx_path.stat().st_size, "sha256": file_sha256(onnx_path),
                "name": model.name, "weights": weights_sha(model), **export_settings()}
        with atomic_path(side) as tmp:
            Path(tmp).write_text(json.dumps(info))
    except OSError as exc:
        for p in (onnx_path, side):
            try:
                p.unlink()
            except OSError:
                pass
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise CacheUnavailable(f"the ONNX cache {onnx_path.parent} cannot be written "
                               f"({why})") from None
    prune(keep=key)
    return onnx_path


_RUNNERS: "OrderedDict[str, OnnxStyleRunner]" = OrderedDict()
MAX_SESSIONS = 4  # onnxruntime sessions kept (~1.5× the model's bytes each)


def runner_for(path: Path) -> OnnxStyleRunner:
    """A session for a cached export, reused (LRU of ``MAX_SESSIONS``)."""
    key = str(path)
    if key in _RUNNERS:
        _RUNNERS.move_to_end(key)
        return _RUNNERS[key]
    r = OnnxStyleRunner(path)
    _RUNNERS[key] = r
    while len(_RUNNERS) > MAX_SESSIONS:
        _RUNNERS.popitem(last=False)
    return r


def onnx_runner(model: "StyleModel") -> OnnxStyleRunner:
    """The onnxruntime runner of ``model``, exported once into ``cache_dir()`` (keyed by the
    weights' hash and the export settings, verified on every load) and reused across runs.
    ``CacheUnavailable`` when the cache cannot be written."""
    return runner_for(ensure_export(model))


def gate_feeds(model: "StyleModel", runner: OnnxStyleRunner) -> dict[str, np.ndarray]:
    """The current ρ of ``model``'s gates (e.g. inside ``gate_override``) as runner inputs."""
    import norms

    return {n: p.detach().float().cpu().numpy() for n, p in norms.iter_gates(model.net)
            if n in runner.inputs}


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata ``export_onnx`` wrote (config and gate names parsed)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    for k in ("config", "gates"):
        if k in meta:
            meta[k] = json.loads(meta[k])
    return meta
