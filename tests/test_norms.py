"""norms/: exactness against the BIN and IBN-Net papers, training support, bad input."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import norms
from norms.functional import batch_instance_norm_reference
from conftest import need_shared

C = 6


def _randomise(layer: nn.Module) -> nn.Module:
    """Non-trivial parameters so that a wrong formula cannot hide behind γ=1, β=0, ρ=1."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("gate"):
                p.uniform_(0, 1)
            else:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.5)
    return layer


def _x(shape=(4, C, 5, 7), fmt=torch.contiguous_format, dtype=torch.float32):
    # offset and scale: statistics far from (0, 1), as after a conv
    return (torch.randn(*shape, dtype=dtype) * 3 + 2).to(memory_format=fmt)


FORMATS = [torch.contiguous_format, torch.channels_last]


# --- registry -------------------------------------------------------------------------------

def test_registry_names_and_errors():
    assert set(norms.NORM_NAMES) >= {"bn", "in", "bn_in", "bin", "ibn", "gn", "ln", "sn"}
    with pytest.raises(ValueError, match="known norms: bn, in, bn_in, bin, ibn"):
        norms.get_norm_layer("batchy")
    assert norms.get_norm_layer("BIN") is norms.BatchInstanceNorm2d
    assert norms.get_norm_layer("bn+in") is norms.BNIN2d
    f = norms.get_norm_layer(nn.BatchNorm2d)
    assert f is nn.BatchNorm2d
    layer = norms.get_norm_layer("ibn", ratio=0.25)(16)
    assert layer.IN.num_features == 4 and layer.BN.num_features == 12
    assert isinstance(norms.create_norm("gn", 64), nn.GroupNorm)


@pytest.mark.parametrize("name", norms.NORM_NAMES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_norm_forward_backward(name, fmt):
    layer = _randomise(norms.create_norm(name, C))
    x = _x(fmt=fmt).requires_grad_()
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    layer.eval()
    with torch.no_grad():
        assert torch.isfinite(layer(x)).all()


@pytest.mark.parametrize("name", norms.NORM_NAMES)
def test_state_dict_round_trip(name):
    a = _randomise(norms.create_norm(name, C))
    for _ in range(3):
        a(_x())
    b = norms.create_norm(name, C)
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = _x()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", norms.NORM_NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_channels_last(name, dtype):
    layer = _randomise(norms.create_norm(name, C))
    x = _x(fmt=torch.channels_last)
    ref = layer(x)
    conv = nn.Conv2d(C, C, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(C).view(C, C, 1, 1))
    try:
        with torch.autocast("cpu", dtype=dtype):
            h = conv(x)  # low-precision activation, as inside a real network
            y = layer(h)
    except RuntimeError as exc:  # pragma: no cover - fp16 autocast missing on old CPU builds
        pytest.skip(f"CPU autocast {dtype} unsupported here: {exc}")
    assert y.shape == x.shape and torch.isfinite(y.float()).all()
    # statistics in float32: only the input/output rounding of the low-precision type remains
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert (y.float() - ref).abs().max().item() < tol * ref.abs().max().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(16, 8, 32, 32), (3, 5, 7, 9), (2, 4, 1, 1)])
def test_low_precision_plane_affine_is_float32_arithmetic_rounded_once(dtype, shape):
    """x·a + b for a bf16/fp16 x with float32 a, b (the mixed-precision kernel on CPU) equals
    the float32 computation rounded once — including where x is far from 0 and b ≈ −a·μ cancels,
    which coefficients rounded to the low precision first would get badly wrong."""
    from norms.functional import _affine_nc, _apply_planes

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3 + 50).to(dtype)  # μ ≈ 50, σ ≈ 3
    a = torch.rand(shape[:2], generator=g) + 0.5
    b = -a * 50 + torch.randn(shape[:2], generator=g)
    y = _apply_planes(x, a, b)
    ref = _affine_nc(x.float(), a, b)  # float32
    assert y.dtype == dtype and y.shape == x.shape
    ulp = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10  # one rounding of the result
    torch.testing.assert_close(y.float(), ref, rtol=ulp, atol=ulp)
    naive = x * a.to(dtype)[..., None, None] + b.to(dtype)[..., None, None]
    assert (naive.float() - ref).abs().max() > 10 * ulp  # what the float32 combination avoids


# --- BIN: eq. (3) exactly -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_bin_equals_equation_3_train_and_eval(fmt, momentum):
    layer = _randomise(norms.BatchInstanceNorm2d(C, momentum=momentum))
    rm, rv = torch.zeros(C), torch.ones(C)
    w, b, r = layer.weight, layer.bias, layer.gate
    for step in range(4):
        x = _x(fmt=fmt).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y = layer(x)
        m = momentum if momentum is not None else 1.0 / (step + 1)
        y_ref = batch_instance_norm_reference(x2, w, b, r, rm, rv, True, m, layer.eps)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y)
        got = torch.autograd.grad(y, (x, w, b, r), g)
        want = torch.autograd.grad(y_ref, (x2, w, b, r), g)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer.running_mean, rm, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.running_var, rv, rtol=1e-6, atol=1e-6)
    assert layer.num_batches_tracked.item() == 4

    layer.eval()
    x = _x(fmt=fmt).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = layer(x)
    y_ref = batch_instance_norm_reference(x2, w, b, r, rm, rv, False, 0.0, layer.eps)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (x, w, b, r), g),
                    torch.autograd.grad(y_ref, (x2, w, b, r), g)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)
    # eval must not touch the running statistics
    torch.testing.assert_close(layer.running_mean, rm)


def test_bin_eval_in_branch_is_per_instance():
    """In eval the IN branch still normalises each instance: with ρ = 0 the output of a sample
    does not depend on the rest of the batch or on the running statistics."""
    layer = norms.BatchInstanceNorm2d(C).eval()
    with torch.no_grad():
        layer.gate.zero_()
        layer.running_mean.fill_(100.0)
    x = _x()
    torch.testing.assert_close(layer(x)[:1], layer(x[:1]))
    torch.testing.assert_close(layer(x), F.instance_norm(x, eps=layer.eps), rtol=1e-5, atol=1e-5)


def test_bin_gradcheck_float64():
    w, b, r = (torch.rand(3, dtype=torch.double, requires_grad=True) + 0.5 for _ in range(3))
    with torch.no_grad():
        r.uniform_(0, 1)
    x = torch.randn(3, 3, 3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b, r: norms.batch_instance_norm(x, w, b, r, None, None, True), (x, w, b, r))
    rm = torch.randn(3, dtype=torch.double)
    rv = torch.rand(3, dtype=torch.double) + 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b, r: norms.batch_instance_norm(x, w, b, r, rm, rv, False), (x, w, b, r))


def test_switchable_norm_gradcheck_float64():
    sn = _randomise(norms.SwitchableNorm2d(3)).double()
    x = torch.randn(3, 3, 3, 4, dtype=torch.double, requires_grad=True)
    params = (sn.weight, sn.bias, sn.mean_weight, sn.var_weight)
    assert torch.autograd.gradcheck(lambda x, *p: sn(x), (x, *params))


def test_bin_gate_gradient_is_equation_5():
    """∂L/∂ρ_c = Σ_{n,h,w} ∂L/∂y · γ_c · (x̂_BN − x̂_IN)  (BIN paper, eq. 5)."""
    layer = _randomise(norms.BatchInstanceNorm2d(C))
    x = _x()
    y = layer(x)
    g = torch.randn_like(y)
    (grad_rho,) = torch.autograd.grad(y, layer.gate, g)
    x_bn = F.batch_norm(x, None, None, training=True, eps=layer.eps)
    x_in = F.instance_norm(x, eps=layer.eps)
    expected = (g * layer.weight.view(1, -1, 1, 1) * (x_bn - x_in)).sum((0, 2, 3))
    torch.testing.assert_close(grad_rho, expected.detach(), rtol=1e-4, atol=1e-4)


def test_bin_running_stats_equal_batchnorm():
    bin_, bn = norms.BatchInstanceNorm2d(C, momentum=0.3), nn.BatchNorm2d(C, momentum=0.3)
    for _ in range(5):
        x = _x(shape=(3, C, 4, 4))
        bin_(x), bn(x)
    torch.testing.assert_close(bin_.running_mean, bn.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bin_.running_var, bn.running_var, rtol=1e-6, atol=1e-6)
    assert bin_.num_batches_tracked == bn.num_batches_tracked
    assert set(bin_.state_dict()) == {"weight", "bias", "gate", "running_mean", "running_var",
                                       "num_batches_tracked"}


def test_bin_with_gate_one_is_bn_and_zero_is_in():
    layer = _randomise(norms.BatchInstanceNorm2d(C))
    x = _x()
    with torch.no_grad():
        layer.gate.fill_(1.0)
        bn = F.batch_norm(x, None, None, layer.weight, layer.bias, True, eps=layer.eps)
        torch.testing.assert_close(layer(x), bn, rtol=1e-5, atol=1e-5)
        layer.gate.fill_(0.0)
        inn = F.instance_norm(x, weight=layer.weight, bias=layer.bias, eps=layer.eps)
        torch.testing.assert_close(layer(x), inn, rtol=1e-5, atol=1e-5)


def test_bn_in_is_bin_at_one_half():
    bnin = _randomise(norms.BNIN2d(C))
    assert "gate" not in dict(bnin.named_parameters()) and "gate" in bnin.state_dict()
    bin_ = norms.BatchInstanceNorm2d(C)
    bin_.load_state_dict(bnin.state_dict())
    with torch.no_grad():
        assert torch.all(bin_.gate == 0.5)
    x = _x()
    torch.testing.assert_close(bnin(x), bin_(x), rtol=0, atol=0)
    bnin.eval(), bin_.eval()
    torch.testing.assert_close(bnin(x), bin_(x), rtol=0, atol=0)


# --- gates: optimizer groups, clipping, reports ---------------------------------------------

def _net(norm="bin"):
    f = norms.get_norm_layer(norm)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), f(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), f(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("norm", norms.NORM_NAMES)
def test_param_groups_partition(norm):
    model = _net(norm)
    groups = norms.param_groups(model, lr=0.1, weight_decay=1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by = {g["name"]: g for g in groups}
    assert by["decay"]["weight_decay"] == 1e-4
    assert {id(p) for p in by["decay"]["params"]} == {id(model[0].weight), id(model[3].weight),
                                                      id(model[8].weight)}
    if norm == "bin":
        assert by["gates"]["lr"] == pytest.approx(1.0) and by["gates"]["weight_decay"] == 0.0
        assert {id(p) for p in by["gates"]["params"]} == {id(model[1].gate), id(model[4].gate)}
    else:
        assert "gates" not in by


def test_gate_clipping_hook_keeps_rho_in_unit_interval():
    model = _net("bin")
    opt = torch.optim.SGD(norms.param_groups(model, lr=1e3, weight_decay=0.0), lr=1e3)
    handle = norms.attach_gate_clipping(opt, model)
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 4, (8,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        gates = torch.cat([g for _, g in norms.iter_gates(model)])
        assert gates.min() >= 0.0 and gates.max() <= 1.0
    assert (gates < 1.0).any()  # the huge step did move them: the hook clipped, not a no-op
    handle.remove()
    with torch.no_grad():
        model[1].gate.fill_(3.0)
    assert norms.clip_gates_(model) == 2 and model[1].gate.max().item() == 1.0


def test_gate_report_and_overrides():
    model = _net("bin")
    with torch.no_grad():
        model[1].gate.copy_(torch.linspace(0, 1, 8))
    rep = norms.gate_report(model)
    assert [L.name for L in rep.layers] == ["1", "4"]
    assert rep.layers[0].mean == pytest.approx(0.5) and rep.layers[0].frac_in == 0.5
    assert "| 0 | 1 | 8 |" in rep.to_markdown()
    fig = rep.figure()
    assert len(fig.axes) == 2
    assert norms.set_gates_(model, shift=-2.0) == 2
    assert all(g.max() == 0.0 for _, g in norms.iter_gates(model))
    norms.set_gates_(model, value=0.7)
    assert all(torch.all(g == 0.7) for _, g in norms.iter_gates(model))
    assert not norms.gate_report(_net("bn"))
    with pytest.raises(ValueError, match="no gated"):
        norms.gate_report(_net("bn")).figure()


# --- IBN: official layout ---------------------------------------------------------------------

def test_ibn_split_and_keys():
    ibn = _randomise(norms.IBN(64))
    assert set(ibn.state_dict()) == {"IN.weight", "IN.bias", "BN.weight", "BN.bias",
                                     "BN.running_mean", "BN.running_var", "BN.num_batches_tracked"}
    assert ibn.IN.num_features == 32 and ibn.BN.num_features == 32
    x = _x(shape=(4, 64, 5, 5))
    y = ibn(x)
    torch.testing.assert_close(y[:, :32], F.instance_norm(x[:, :32], weight=ibn.IN.weight,
                                                          bias=ibn.IN.bias))
    bn_ref = F.batch_norm(x[:, 32:], None, None, ibn.BN.weight, ibn.BN.bias, training=True)
    torch.testing.assert_close(y[:, 32:], bn_ref)
    dense = norms.IBN(64, ratio=0.4, bn_first=True)
    assert dense.BN.num_features == 38 and dense.IN.num_features == 26


def test_ibn_matches_official_spec():
    spec = json.loads(need_shared("specs", "ibnnet_state_dict_keys.json").read_text())
    for model, prefix, channels, kw in [("resnet50_ibn_a", "layer1.0.bn1.", 64, {}),
                                        ("resnet18_ibn_a", "layer3.1.bn1.", 256, {}),
                                        ("densenet121_ibn_a",
                                         "features.denseblock1.denselayer1.norm1.", 64,
                                         {"ratio": 0.4, "bn_first": True})]:
        want = {k[len(prefix):]: v for k, v in spec[model].items() if k.startswith(prefix)}
        got = {k: list(v.shape) for k, v in norms.IBN(channels, **kw).state_dict().items()}
        assert got == want, model


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", norms.NORM_NAMES)
def test_bad_input_messages(name):
    layer = norms.create_norm(name, C)
    label = type(layer).__name__
    for bad in (torch.randn(2, C, 4), torch.randn(2, C, 4, 4, 4)):
        with pytest.raises(ValueError, match=rf"{label}\({C}\): expected a 4-D"):
            layer(bad)
    with pytest.raises(ValueError, match=rf"{label}\({C}\): input has {C + 1} channels"):
        layer(torch.randn(2, C + 1, 4, 4))
    if name in ("gn", "ln"):
        return  # per-sample statistics: a 1×1 batch of one is fine for them...
    with pytest.raises(ValueError, match=r"\(1, 6, 1, 1\)"):
        layer.train()(torch.randn(1, C, 1, 1))


def test_eval_batchnorm_accepts_single_pixel():
    bn = norms.create_norm("bn", C).eval()
    assert bn(torch.randn(1, C, 1, 1)).shape == (1, C, 1, 1)


def test_resolve_device():
    from engine.devices import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_bin_cuda_matches_reference():
    layer = _randomise(norms.BatchInstanceNorm2d(C)).cuda()
    x = _x().cuda().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = layer(x)
    y_ref = batch_instance_norm_reference(x2, layer.weight, layer.bias, layer.gate)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0],
                               torch.autograd.grad(y_ref, x2, g)[0], rtol=1e-4, atol=1e-4)


def test_plane_stats_exact_when_mean_dominates():
    """One-pass E[x²] − μ² would lose the variance of planes sitting far from zero; those planes
    are recomputed, so the statistics stay exact."""
    from norms.functional import plane_stats

    x = torch.randn(2, 3, 16, 16) * 1e-2 + torch.tensor([0.0, 1e3, -5e2]).view(1, 3, 1, 1)
    for t in (x, x.to(memory_format=torch.channels_last)):
        var, mean = plane_stats(t)
        v_ref, m_ref = torch.var_mean(x.double(), dim=(2, 3), unbiased=False)
        torch.testing.assert_close(mean.double(), m_ref, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(var.double(), v_ref, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name", norms.NORM_NAMES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_inplace_relu_after_every_norm(name, fmt):
    """Networks follow norms with nn.ReLU(inplace=True) (torchvision, official IBN-Net)."""
    layer = _randomise(norms.create_norm(name, C))
    x = _x(fmt=fmt).requires_grad_()
    y = torch.relu_(layer(x))
    y.sum().backward()
    ref = torch.relu(layer(x.detach()))
    torch.testing.assert_close(y.detach(), ref)


def test_bench_cli_writes_table_and_json(tmp_path):
    from typer.testing import CliRunner

    from main import app

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["--device", "cpu", "norms", "bench", "--shape", "2,4,6,6",
                                   "--repeats", "3", "--step-batch", "4", "--step-norms", "bn,bin",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [r["norm"] for r in data["layers"]] == list(norms.NORM_NAMES) + ["bin_naive"]
    assert data["layers"][0]["fwd_bwd_ratio"] == 1.0
    assert all(r["fwd_bwd_ms"] > 0 for r in data["layers"])
    assert [(r["norm"], r["model"]) for r in data["steps"]] == [("bn", "resnet20"),
                                                                 ("bin", "resnet20")]
    assert "| cpu | bin_naive |" in res.output
    bad = CliRunner().invoke(app, ["norms", "bench", "--step-norms", "bn,zz"])
    assert bad.exit_code == 2 and "unknown norm(s) zz" in bad.output


def test_atomic_write_leaves_no_temp_and_normal_permissions(tmp_path):
    import os

    from engine.io import atomic_path, load_safetensors, save_safetensors, write_text_atomic

    target = tmp_path / "m.safetensors"
    save_safetensors(target, {"w": torch.ones(2)}, {"config": {"norm": "bin"}})
    tensors, meta = load_safetensors(target)
    assert meta["config"] == {"norm": "bin"} and torch.equal(tensors["w"], torch.ones(2))
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
    write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m.safetensors"]
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_safetensors(tmp_path / "a.txt")
