"""ONNX export of style models (every norm, dynamic N/H/W) against PyTorch with onnxruntime, the
onnxruntime backend of `stylize run`, and `stylize export --format onnx`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import main
import norms
import weights
from stylize import StyleConfig, TransformerNet, load_model, stylize_image
from stylize.infer import StyleModel
from stylize.train import save_model

ort = pytest.importorskip("onnxruntime")
from stylize.deploy import OnnxStyleRunner, export_onnx, onnx_metadata  # noqa: E402

runner = CliRunner()


def _model(norm: str) -> StyleModel:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig(norm, base_channels=8, num_residual=1))
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(30)  # outputs spread over 0–255, not a flat grey
        net.deconv3.conv2d.bias.fill_(128)
        for name, p in net.named_parameters():
            if name.endswith("gate"):
                p.uniform_(0, 1)
    net.train()
    with torch.no_grad():  # running statistics away from (0, 1)
        for _ in range(2):
            net(torch.rand(2, 3, 32, 32) * 255)
    return StyleModel(net=net.eval(), config=net.config, name=f"tiny_{norm}")


@pytest.mark.parametrize("norm", norms.NORM_NAMES)
def test_onnx_matches_pytorch_for_every_norm(norm, tmp_path):
    m = _model(norm)
    path = export_onnx(m, tmp_path / f"{norm}.onnx")
    assert onnx_metadata(path)["config"]["norm"] == norm
    run = OnnxStyleRunner(path, threads=1)
    for shape in [(1, 3, 40, 36), (2, 3, 23, 17)]:  # dynamic batch and size, odd sizes padded
        x = torch.rand(*shape) * 255
        with torch.no_grad():
            want = m.net(x)
        got = run(x)
        assert got.shape == want.shape
        assert want.std() > 0.3  # not a constant
        assert float((got - want).abs().max()) <= 1e-3, norm


def test_onnxruntime_backend_and_export_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    m = _model("bin")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8))
    a = np.asarray(stylize_image(m, img, backend="torch"), dtype=int)
    b = np.asarray(stylize_image(m, img, backend="onnxruntime"), dtype=int)
    assert np.abs(a - b).max() <= 1
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 1  # exported once, cached
    stylize_image(m, img, backend="onnxruntime")
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 1
    with pytest.raises(ValueError, match="backend"):
        stylize_image(m, img, backend="tensorrt")
    src = tmp_path / "m.safetensors"
    save_model(src, m.net, {"kind": "stylize", "config": m.config.to_dict(), "style": "t",
                            "steps": 0})
    dst = tmp_path / "m.onnx"
    r = runner.invoke(main.app, ["stylize", "export", str(src), str(dst), "--format", "onnx"])
    assert r.exit_code == 0, r.output
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.no_grad():
        want = load_model(src).net(x)
    assert float((OnnxStyleRunner(dst)(x) - want).abs().max()) <= 1e-3
    r = runner.invoke(main.app, ["stylize", "export", str(src), str(dst), "--format", "onnx"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(main.app, ["stylize", "export", str(src), str(tmp_path / "x.onnx"),
                                 "--format", "tflite"])
    assert r.exit_code == 2 and "--format" in r.output


# ---- the export cache: keyed by weights, verified, bounded; torch when it cannot be written ----

from stylize import deploy  # noqa: E402
from stylize.infer import resolve_backend  # noqa: E402


def _img(h: int = 30, w: int = 45) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_cache_entry_is_verified_and_a_bad_one_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    a, b = _model("bin"), _model("in")
    img = _img()
    want = np.asarray(stylize_image(a, img, backend="torch"), dtype=int)
    stylize_image(a, img, backend="onnxruntime")
    key = deploy.cache_key(deploy.weights_sha(a))
    path = deploy.lookup(key)
    assert path is not None and path.stem == key
    # another model's export under this key: refused (sha mismatch) and rebuilt, never used
    other = deploy.export_onnx(b, tmp_path / "other.onnx")
    path.write_bytes(other.read_bytes())
    deploy._RUNNERS.clear()
    got = np.asarray(stylize_image(a, img, backend="onnxruntime"), dtype=int)
    assert np.abs(got - want).max() <= 1
    assert deploy.lookup(key) is not None
    # a truncated entry: rebuilt as well
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    deploy._RUNNERS.clear()
    got = np.asarray(stylize_image(a, img, backend="onnxruntime"), dtype=int)
    assert np.abs(got - want).max() <= 1 and path.stat().st_size == len(data)


def test_gate_overrides_need_no_new_export(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    m = _model("bin")
    img = _img()
    for g in (-1.0, -0.4, 0.5):
        want = np.asarray(stylize_image(m, img, backend="torch", gate=g), dtype=int)
        got = np.asarray(stylize_image(m, img, backend="onnxruntime", gate=g), dtype=int)
        assert np.abs(got - want).max() <= 1, g
    learned = np.asarray(stylize_image(m, img, backend="torch"), dtype=int)
    assert np.abs(learned - want).max() > 5  # the override changed the image
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 1  # one export for every gate


def test_cache_is_bounded_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    models = [_model(n) for n in ("bin", "in", "bn")]
    img = _img()
    stylize_image(models[0], img, backend="onnxruntime")
    one = next((tmp_path / "cache").rglob("*.onnx")).stat().st_size
    monkeypatch.setenv("NORMLAB_ONNX_CACHE_MB", str(2.5 * one / 2**20))  # room for two
    for m in models[1:]:
        stylize_image(m, img, backend="onnxruntime")
    left = {p.stem for p in (tmp_path / "cache").rglob("*.onnx")}
    keys = [deploy.cache_key(deploy.weights_sha(m)) for m in models]
    assert left == set(keys[1:])  # the least recently used went
    assert not (tmp_path / "cache" / "onnx" / f"{keys[0]}.json").exists()


@pytest.mark.parametrize("failure", ["read-only", "no space"])
def test_unwritable_cache_falls_back_to_torch(tmp_path, monkeypatch, failure):
    m = _model("bin")
    img = _img()
    want = np.asarray(stylize_image(m, img, backend="torch"), dtype=int)
    if failure == "read-only":
        monkeypatch.setenv("NORMLAB_CACHE", "/proc/normlab-no-such-folder")  # cannot be created
    else:
        import errno

        monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(deploy, "export_onnx", full)
    deploy._RUNNERS.clear()
    for backend in ("auto", "onnxruntime"):
        got = np.asarray(stylize_image(m, img, backend=backend), dtype=int)
        assert np.abs(got - want).max() <= 1
    if failure == "no space":
        assert not list((tmp_path / "cache").rglob("*"))  or \
            not list((tmp_path / "cache").rglob("*.onnx"))  # nothing half-written left


def test_crafted_metadata_is_bounded_before_parsing(tmp_path):
    import json
    import struct

    def write(path, meta):
        header = json.dumps({"__metadata__": meta}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header)
        return path

    deep = write(tmp_path / "deep.safetensors", {"config": "[" * 5000 + "]" * 5000})
    with pytest.raises(ValueError, match="nested 5000 levels"):
        deploy.read_header_metadata(deep)
    with pytest.raises(ValueError, match="nested"):
        load_model(deep)
    big = write(tmp_path / "big.safetensors", {"x": "{" + '"a":{},' * 900_000 + '"b":1}'})
    with pytest.raises(ValueError, match="over the limit"):
        load_model(big)
    assert deploy.json_depth('{"a": "[[[[", "b": [[1]]}') == 3  # brackets inside strings skipped


def test_model_cache_is_an_lru_bounded_by_bytes(tmp_path, monkeypatch):
    from stylize import infer

    files = []
    for i, n in enumerate(("bin", "in", "bn")):
        m = _model(n)
        f = tmp_path / f"m{i}.safetensors"
        save_model(f, m.net, {"kind": "stylize", "config": m.config.to_dict(), "style": "t",
                              "steps": 0})
        files.append(f)
    monkeypatch.setattr(infer, "_CACHE", type(infer._CACHE)())
    size = load_model(files[0]).nbytes
    monkeypatch.setenv("NORMLAB_MODEL_CACHE_MB", str(2.5 * size / 2**20))
    load_model(files[1])
    load_model(files[0])  # used again: now the most recent
    load_model(files[2])
    cached = {k[0] for k in infer._CACHE}
    assert cached == {str(files[0].resolve()), str(files[2].resolve())}


# ---- backend choice -------------------------------------------------------------------------

@pytest.mark.slow  # compiles candy_bin once (~30 s on 2 cores) where the CPU has native bf16
def test_every_path_auto_may_pick_stays_within_40_db():
    """fp32 torch, onnxruntime fp32 and, on a CPU with native bf16, the compiled bf16 path:
    each ≥ 40 dB PSNR against fp32 eager on the shipped candy_bin."""
    from engine.devices import cpu_native_bf16
    from stylize.bench import psnr
    from stylize.infer import PSNR_MIN, _run_compiled

    m = load_model("candy_bin")
    img = Image.open(weights.SAMPLES_DIR / "amber.jpg").convert("RGB").resize((96, 96))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        ref = m.net(x)
    r = deploy.OnnxStyleRunner(deploy.export_onnx(m, _tmp() / "c.onnx"), threads=1)
    assert psnr(r(x), ref) >= PSNR_MIN
    if cpu_native_bf16():
        import copy

        c = copy.copy(m)
        c.compiled = None
        assert psnr(_run_compiled(c, x), ref) >= PSNR_MIN
    dev = torch.device("cpu")
    assert resolve_backend("auto", dev) == "onnxruntime"  # a one-shot job never compiles
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("tensorrt", dev)


@pytest.mark.gpu
def test_cuda_auto_half_precision_stays_within_40_db():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from stylize.bench import psnr

    m = load_model("candy_bin", device="cuda")
    img = Image.open(weights.SAMPLES_DIR / "amber.jpg").convert("RGB")
    ref = np.asarray(stylize_image(m, img, device="cuda", backend="torch"), dtype=np.float32)
    for kw in ({"backend": "auto"}, {"fast": True}):
        got = np.asarray(stylize_image(m, img, device="cuda", **kw), dtype=np.float32)
        assert psnr(torch.from_numpy(got), torch.from_numpy(ref)) >= 40.0, kw


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_auto_compiles_only_where_the_probe_says_it_pays(monkeypatch):
    from stylize import infer

    m = _model("bin")
    dev = torch.device("cpu")
    monkeypatch.setattr(infer, "cpu_native_bf16", lambda: True)
    probe = {"side": 256, "compiled_s": 0.1, "best_other_s": 0.3, "compile_s": 30.0,
             "use_compiled": True}
    monkeypatch.setattr(infer, "probe_compiled", lambda model, d: probe)
    monkeypatch.setattr(infer, "probe_known", lambda model, d: True)
    # saves 0.2 s per 256² = 3 µs/px: 30 s of compiling pays from 10 Mpx on
    assert resolve_backend("auto", dev, job_pixels=512 * 512, model=m) == "onnxruntime"
    assert resolve_backend("auto", dev, job_pixels=40e6, model=m) == "compiled"
    assert resolve_backend("auto", dev, job_pixels=float("inf"), model=m) == "compiled"
    probe["use_compiled"] = False  # slower or under 40 dB on this machine: never
    assert resolve_backend("auto", dev, job_pixels=float("inf"), model=m) == "onnxruntime"
    assert resolve_backend("auto", dev, fast=True, model=m) == "compiled"  # --fast = compiled
    monkeypatch.setattr(infer, "cpu_native_bf16", lambda: False)
    assert resolve_backend("auto", dev, job_pixels=float("inf"), model=m) == "onnxruntime"
    assert resolve_backend("auto", dev, fast=True, model=m) == "onnxruntime"  # emulated bf16
    with pytest.raises(ValueError, match="native bf16"):
        resolve_backend("compiled", dev)


# ---- one-shot runs without torch ------------------------------------------------------------

def test_one_shot_run_does_not_import_torch_when_the_export_is_cached(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "p.png"
    Image.open(weights.SAMPLES_DIR / "amber.jpg").convert("RGB").resize((64, 48)).save(src)
    env = {**os.environ, "NORMLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(root)}
    code = ("import sys, main\n"
            "try:\n"
            "    main.app(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n"
            "    print('torch' in sys.modules)\n")
    outs = []
    for i in range(2):
        dst = tmp_path / f"o{i}.png"
        r = subprocess.run([sys.executable, "-c", code, "--device", "cpu", "stylize", "run",
                            "-m", "candy_bin", str(src), "-o", str(dst)], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append((r.stdout.strip().splitlines()[-1], np.asarray(Image.open(dst), dtype=int)))
    assert outs[0][0] == "True"  # the first run exports (torch) and caches
    assert outs[1][0] == "False"  # the second runs from the cache without torch
    assert np.abs(outs[0][1] - outs[1][1]).max() <= 1
