"""The compiled bf16 path (issue 36): the style network traces into one graph under
torch.compile (no graph breaks), what runs only while compiling equals the eager code, frozen
weights never answer a gate override, and videos / long jobs reach the compiled path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import norms
from stylize import StyleConfig, TransformerNet
from stylize.infer import StyleModel

dynamo = pytest.importorskip("torch._dynamo")
if not hasattr(torch, "compile"):  # pragma: no cover - torch < 2
    pytest.skip("needs torch.compile", allow_module_level=True)


def _tiny(norm: str = "bin", num_styles: int = 1) -> StyleModel:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig(norm, base_channels=4, num_residual=1,
                                            num_styles=num_styles))
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(30)  # outputs spread over 0–255, not a flat grey
        net.deconv3.conv2d.bias.fill_(128)
        for name, p in net.named_parameters():
            if name.endswith("gate"):
                p.uniform_(0.2, 0.8)
    return StyleModel(net=net.eval(), config=net.config, name=f"tiny_{norm}")


@pytest.mark.parametrize("norm,styles", [(n, 1) for n in norms.NORM_NAMES] + [("bin", 2)])
def test_style_network_compiles_without_graph_breaks(norm, styles):
    """Before: 23 graph breaks in the shipped candy_bin (the one-pass statistics' data-dependent
    cancellation check, one per norm layer). ``explain`` traces only: no inductor, fast."""
    net = _tiny(norm, styles).net
    x = (torch.rand(1, 3, 32, 40) * 255).contiguous(memory_format=torch.channels_last)
    dynamo.reset()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        info = dynamo.explain(net)(x)
    assert info.graph_break_count == 0, [r.reason.splitlines()[0] for r in info.break_reasons]
    assert info.graph_count == 1


def test_statistics_while_compiling_are_exact_where_one_pass_cancels():
    """Under torch.compile the statistics are var_mean (no branch on the data); they stay exact
    on planes whose mean dwarfs their spread, where E[x²] − μ² would cancel. The eager
    one-pass path keeps its own repair (``test_plane_stats_exact_when_mean_dominates``)."""
    from norms.functional import plane_stats

    g = torch.Generator().manual_seed(0)
    x = 1000.0 + 0.01 * torch.randn(2, 3, 16, 16, generator=g)
    want = x.double().var(dim=(2, 3), unbiased=False)
    var, mean = torch.compile(plane_stats, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(var.double(), want, rtol=1e-3, atol=1e-9)
    torch.testing.assert_close(mean.double(), x.double().mean((2, 3)), rtol=1e-6, atol=0)


def test_compiled_trace_of_the_network_equals_eager():
    """Everything the network does only while dynamo traces (plain norm ops, the broadcast
    nearest upsampling) gives the eager result; ``backend="eager"`` runs the traced graph
    without inductor."""
    for norm in ("bin", "in", "gn"):
        net = _tiny(norm).net
        x = torch.rand(2, 3, 24, 36) * 255
        with torch.inference_mode():
            want = net(x)
            dynamo.reset()
            got = torch.compile(net, backend="eager", fullgraph=True)(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def test_video_batches_for_the_compiled_forward_are_full():
    """The last, short batch of a video is padded to the batch size for a compiled forward (no
    second shape to compile) and only its own frames come back, equal to the eager pass."""
    from stylize.infer import _run
    from stylize.video import _forward

    net = _tiny("bin").net
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(5)]
    shapes = []

    def run(x):
        shapes.append(tuple(x.shape))
        return _run(net, x, False)

    got = _forward(net, frames, 4, torch.device("cpu"), False, run)
    want = _forward(net, frames, 4, torch.device("cpu"), False)
    assert shapes == [(4, 3, 20, 28), (4, 3, 20, 28)]
    assert len(got) == 5
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_video_tells_the_planner_its_size(monkeypatch):
    from stylize import infer, video

    m = _tiny("bin")
    seen = {}

    def fake(backend, dev, fast=False, job_pixels=0.0, model=None, shape=None):
        seen.update(backend=backend, job_pixels=job_pixels, shape=shape)
        return "compiled"

    monkeypatch.setattr(infer, "resolve_backend", fake)
    cpu = torch.device("cpu")
    run = video._frame_runner(m, "auto", cpu, False, None, (48, 32), 100, None)
    assert callable(run)
    assert seen == {"backend": "auto", "job_pixels": 100 * 48 * 32, "shape": (32, 48)}
    video._frame_runner(m, "auto", cpu, False, None, (48, 32), None, None)
    assert seen["job_pixels"] == float("inf")  # unknown length: a long job
    # stream statistics keep their state in Python between frames: eager torch
    assert video._frame_runner(m, "auto", cpu, False, 0.9, (48, 32), 100, None) is None
    with pytest.raises(ValueError, match="smooth"):
        video._frame_runner(m, "compiled", cpu, False, 0.9, (48, 32), 100, None)
    with pytest.raises(ValueError, match="torch"):
        video._frame_runner(m, "onnxruntime", cpu, False, None, (48, 32), 100, None)


def test_prepare_long_job_plans_and_warms_the_processing_size(monkeypatch):
    from PIL import Image  # noqa: F401 - stylize_image's input type

    from stylize import infer

    m = _tiny("bin")
    calls = []

    def fake_compiled(model, x, frozen=True):
        calls.append((tuple(x.shape), frozen))
        with torch.inference_mode():
            return model.net(x)

    monkeypatch.setattr(infer, "_run_compiled", fake_compiled)
    monkeypatch.setattr(infer, "resolve_backend", lambda *a, **k: "compiled")
    got = infer.prepare_long_job(m, (400, 200), device="cpu", max_size=100)
    assert got == "compiled"
    assert calls == [((1, 3, 50, 100), True)]  # the size the network will run at
    monkeypatch.setattr(infer, "resolve_backend", lambda *a, **k: "onnxruntime")
    assert infer.prepare_long_job(m, (400, 200), device="cpu") == "onnxruntime"
    assert len(calls) == 1  # nothing to warm


@pytest.mark.slow  # two inductor compilations of a tiny network (~1 min on a loaded 2-core VM)
def test_frozen_weights_never_answer_a_gate_override():
    """The frozen graph holds the learned weights as constants; a gate override runs the live
    graph, which reads the overridden ρ. Both within 40 dB of fp32 eager."""
    from engine.devices import cpu_native_bf16
    from stylize.bench import psnr
    from stylize.infer import PSNR_MIN, _run_compiled, gate_override

    if not cpu_native_bf16():
        pytest.skip("the compiled path runs bf16: needs a CPU with native bf16")
    m = _tiny("bin")
    net = m.net
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        learned = net(x)
    assert psnr(_run_compiled(m, x), learned) >= PSNR_MIN
    with gate_override(net, -1.0):
        with torch.no_grad():
            pure_in = net(x)
        got = _run_compiled(m, x, frozen=False)
    assert psnr(pure_in, learned) < 30  # the override changes the picture…
    assert psnr(got, pure_in) >= PSNR_MIN  # …and the live graph shows it
    assert set(m.compiled) == {"frozen", "live"}


def test_warm_in_background_compiles_a_copy_and_swaps_it_in_without_blocking(monkeypatch):
    """The webcam's warm-up: the model stays usable (its lock free, its network untouched)
    while the copy compiles; then the copy and its compiled size are swapped in at once, and
    nothing is started twice or where it is switched off."""
    import threading

    from stylize import infer

    m = _tiny("bin")
    before = m.net
    go = threading.Event()
    seen = {}

    def fake_prepare(shadow, size, *, device, frames, warm):
        seen.update(size=size, frames=frames, shadow=shadow)
        assert shadow.net is not before  # a copy: the live network is never traced
        assert go.wait(10)
        shadow.compiled = {"frozen": "graph"}
        shadow.compiled_shapes = {(size[1], size[0])}
        return "compiled"

    monkeypatch.setenv(infer.BACKGROUND_COMPILE_ENV, "1")
    monkeypatch.setattr(infer, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(infer, "prepare_long_job", fake_prepare)
    t = infer.warm_in_background(m, (640, 480), device="cpu", max_size=320)
    assert t is not None
    assert infer.warm_in_background(m, (640, 480), device="cpu", max_size=320) is None  # busy
    assert m.lock.acquire(timeout=5)  # frames keep running meanwhile
    m.lock.release()
    assert m.net is before and not m.compiled_shapes
    go.set()
    t.join(10)
    assert seen["size"] == (320, 240) and seen["frames"] is None
    assert m.net is seen["shadow"].net and m.compiled == {"frozen": "graph"}
    assert m.compiled_shapes == {(240, 320)}
    for k, v in before.state_dict().items():  # the same weights as loaded
        assert torch.equal(m.net.state_dict()[k], v)
    assert infer.warm_in_background(m, (640, 480), device="cpu", max_size=320) is None  # done
    monkeypatch.setenv(infer.BACKGROUND_COMPILE_ENV, "0")
    assert infer.warm_in_background(m, (100, 100), device="cpu") is None
    monkeypatch.setenv(infer.BACKGROUND_COMPILE_ENV, "1")
    monkeypatch.setattr(infer, "cpu_native_bf16", lambda: False)
    assert infer.warm_in_background(m, (100, 100), device="cpu") is None


def test_a_failed_warm_up_leaves_the_model_as_it_was(monkeypatch, capsys):
    from stylize import infer

    m = _tiny("bin")
    before = m.net

    def boom(*a, **k):
        raise RuntimeError("inductor says no")

    monkeypatch.setenv(infer.BACKGROUND_COMPILE_ENV, "1")
    monkeypatch.setattr(infer, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(infer, "prepare_long_job", boom)
    infer.warm_in_background(m, (64, 64), device="cpu").join(10)
    assert m.net is before and not m.compiled_shapes
    assert "background compile for 64×64 failed (inductor says no)" in capsys.readouterr().err
    monkeypatch.setattr(infer, "prepare_long_job", lambda *a, **k: "onnxruntime")
    infer.warm_in_background(m, (64, 64), device="cpu").join(10)  # the probe said no: no swap
    assert m.net is before and not m.compiled_shapes


@pytest.mark.slow  # one real probe and compilation of a tiny network
def test_after_the_background_warm_up_auto_runs_the_compiled_size(monkeypatch, tmp_path):
    from PIL import Image

    from engine.devices import cpu_native_bf16
    from stylize import infer
    from stylize.bench import psnr

    if not cpu_native_bf16():
        pytest.skip("the compiled path runs bf16: needs a CPU with native bf16")
    monkeypatch.setenv(infer.BACKGROUND_COMPILE_ENV, "1")
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    m = _tiny("bin")
    g = torch.Generator().manual_seed(3)
    img = Image.fromarray((torch.rand(48, 64, 3, generator=g) * 255).byte().numpy())
    ref = infer.stylize_image(m, img, backend="torch", bar=False)
    # the probe decides whether to compile; say "faster" whatever this tiny net would measure
    # (on a loaded machine its compiled pass can be the slower one), so the real compile runs
    monkeypatch.setattr(infer, "probe_compiled", lambda model, dev: {
        "side": 256, "best_other_s": 1.0, "compiled_s": 0.1, "compile_s": 1.0,
        "use_compiled": True})
    infer.warm_in_background(m, img.size, device="cpu").join(300)
    assert (48, 64) in m.compiled_shapes
    used = []
    real_run = infer._run_compiled
    monkeypatch.setattr(infer, "_run_compiled",
                        lambda model, x, frozen=True: used.append(1) or real_run(model, x, frozen))
    out = infer.stylize_image(m, img, bar=False)  # auto, a single frame's pixels
    assert used, "auto did not take the compiled size"
    a = torch.from_numpy(np.array(out)).float()
    b = torch.from_numpy(np.array(ref)).float()
    assert psnr(a, b) >= 35  # bf16 against fp32, after 8-bit rounding of both
