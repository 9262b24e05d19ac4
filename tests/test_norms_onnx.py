"""Every registered norm's eval forward exports to ONNX with dynamic N, H, W and matches PyTorch.

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``). On torch 2.14 it
exports all eight norms in well under a second each; the torch.export-based one (``dynamo=True``)
also exports them but takes several seconds per model and specialises the batch size of IBN to
the example's. Under export, ``plane_affine`` writes BIN/BN+IN/SN with plain ops, so the graph
holds standard ONNX operators only (no custom autograd Function).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import norms

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

C = 8


def _net(name: str) -> nn.Module:
    torch.manual_seed(0)
    f = norms.get_norm_layer(name)
    net = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), f(C), nn.ReLU(),
                        nn.Conv2d(C, C, 3, padding=1), f(C), nn.ReLU())
    with torch.no_grad():
        for pname, p in net.named_parameters():
            if pname.endswith("gate"):
                p.uniform_(0, 1)
            elif pname.startswith(("1.", "4.")):
                p.uniform_(0.5, 1.5) if pname.endswith("weight") else p.normal_(0, 0.5)
        for _ in range(2):  # running statistics away from (0, 1)
            net(torch.randn(4, 3, 10, 10) * 2 + 1)
    return net.eval()


def export_onnx(net: nn.Module, path, example: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation/tracer notices
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                        "y": {0: "n", 2: "h", 3: "w"}})


@pytest.mark.parametrize("name", norms.NORM_NAMES)
def test_eval_norm_exports_to_onnx_with_dynamic_size(name, tmp_path):
    net = _net(name)
    path = tmp_path / f"{name}.onnx"
    export_onnx(net, path, torch.randn(1, 3, 16, 16))
    graph = onnx.load(str(path)).graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)  # standard ops only
    assert not any("PlaneAffine" in node.op_type or "PythonOp" in node.op_type
                   for node in graph.node)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 16, 20), (2, 3, 27, 13)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = net(x).numpy()
        got = sess.run(None, {"x": x.numpy()})[0]
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-4, name


def test_training_path_still_uses_the_fused_function():
    """Outside export the fused autograd Function (one-pass backward) is what runs."""
    layer = norms.BatchInstanceNorm2d(C)
    y = layer(torch.randn(2, C, 5, 5, requires_grad=True))
    assert type(y.grad_fn).__name__ == "PlaneAffineBackward"
