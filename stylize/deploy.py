"""Deploying style models: ONNX export (dynamic batch, height and width, every norm) and an
onnxruntime backend for inference.

The exported graph is the network's eval forward for inputs whose height and width are multiples
of 4 and at least 16 (the norms export as plain ONNX operators, see ``norms``: no custom autograd
Function). ``TransformerNet.forward`` pads other sizes (reflection, bottom/right) and crops the
result; ``OnnxStyleRunner`` does the same padding outside the graph, so both give the same
output for any size.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.io import atomic_path

from .infer import StyleModel

ONNX_OPSET = 17


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


def export_onnx(model: StyleModel, dst: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as an ONNX file (input ``x``: N×3×H×W float32 in 0–255, output ``y``
    the same shape; N, H and W dynamic). The config and style go into the file's metadata."""
    import onnx

    dst = Path(dst)
    net = copy.deepcopy(model.net).float().cpu().eval()
    example = torch.rand(1, 3, 64, 64) * 255  # a multiple of 4: no padding traced into the graph
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer notices
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                        "y": {0: "n", 2: "h", 3: "w"}})
        proto = onnx.load(str(tmp))
        _restore_initializers(proto, net)
        meta = {"kind": "stylize", "config": json.dumps(model.config.to_dict()),
                "name": model.name, "style": str(model.meta.get("style", model.name)),
                "input": "N×3×H×W float32 RGB 0–255; H, W multiples of 4 and ≥ 16 (pad by "
                         "reflection, crop after)"}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    return dst


class OnnxStyleRunner:
    """An onnxruntime session for an exported style model; call it like the network
    (N×3×H×W float tensor in 0–255, any H and W ≥ 1)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"ONNX model {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types
            raise ValueError(f"{path} is not an ONNX model onnxruntime can load "
                             f"({str(exc).strip().splitlines()[0][:200]})") from None
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # N×3×H×W -> N×3×H×W
        h, w = x.shape[-2:]
        a = x.detach().float().cpu().numpy()
        # the same padding as TransformerNet.forward: multiple of 4, at least 16
        ph, pw = max(-h % 4, 16 - h), max(-w % 4, 16 - w)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"
            a = np.pad(a, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        y = self.session.run(None, {"x": np.ascontiguousarray(a)})[0]
        return torch.from_numpy(y[..., :h, :w])


def cache_dir() -> Path:
    """Where exported ONNX files are kept between runs (``NORMLAB_CACHE`` or
    ``$XDG_CACHE_HOME/normlab``, default ``~/.cache/normlab``)."""
    root = os.environ.get("NORMLAB_CACHE") or Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "normlab"
    return Path(root) / "onnx"


def _fingerprint(model: StyleModel) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    h.update(torch.__version__.encode())
    for k, v in model.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


_RUNNERS: dict[str, OnnxStyleRunner] = {}


def onnx_runner(model: StyleModel) -> OnnxStyleRunner:
    """The onnxruntime runner of ``model``, exported once into ``cache_dir()`` (keyed by the
    weights and torch version) and reused across runs."""
    key = _fingerprint(model)
    if key in _RUNNERS:
        return _RUNNERS[key]
    path = cache_dir() / f"{model.name}-{key}.onnx"
    if not path.is_file():
        export_onnx(model, path)
    _RUNNERS[key] = runner = OnnxStyleRunner(path)
    return runner


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata ``export_onnx`` wrote (config parsed)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "config" in meta:
        meta["config"] = json.loads(meta["config"])
    return meta
