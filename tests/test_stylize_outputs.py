"""`stylize run` output paths (issue 9, items 4–8): checked before any work, never an input
overwritten, clear one-line errors naming the user's path."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import engine.images
import main
from stylize import StyleConfig, TransformerNet
from stylize.train import save_model

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(main.app, ["--device", "cpu", "stylize", *map(str, args)])


def _error(r) -> str:
    lines = [l for l in r.output.splitlines() if l.strip() and "img/s" not in l]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and ".tmp" not in r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.fixture
def model(tmp_path) -> Path:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig("in", base_channels=8, num_residual=1))
    with torch.no_grad():
        net.deconv3.conv2d.bias.fill_(128)
    path = tmp_path / "tiny.safetensors"
    save_model(path, net.eval(), {"kind": "stylize", "config": net.config.to_dict(),
                                  "style": "tiny", "steps": 0})
    return path


def _img(path: Path, seed: int = 0, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_never_overwrites_an_input(tmp_path, model):
    a = _img(tmp_path / "in" / "a.png")
    _img(tmp_path / "in" / "b.png", 1)
    before = _snapshot(tmp_path / "in")
    msg = _error(_invoke("run", "-m", model, "-o", a, a))
    assert "input" in msg and str(a) in msg
    # folder onto itself: every output would be an input; --overwrite does not change that
    _error(_invoke("run", "-m", model, "-o", tmp_path / "in", tmp_path / "in", "--overwrite"))
    assert _snapshot(tmp_path / "in") == before


def test_existing_output_needs_overwrite(tmp_path, model):
    a = _img(tmp_path / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    msg = _error(_invoke("run", "-m", model, "-o", out, a))
    assert "already exists" in msg and "--overwrite" in msg and str(out) in msg
    assert out.read_bytes() == b"keep me"
    r = _invoke("run", "-m", model, "-o", out, "--overwrite", a)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (40, 30)


def test_same_file_name_into_one_folder_is_refused_before_any_work(tmp_path, model):
    a = _img(tmp_path / "x" / "photo.png")
    b = _img(tmp_path / "y" / "photo.png", 1)
    c = _img(tmp_path / "z" / "photo.gif", 2)  # written as photo.png too
    dst = tmp_path / "dst"
    msg = _error(_invoke("run", "-m", model, "-o", dst, a, b))
    assert str(a) in msg and str(b) in msg
    _error(_invoke("run", "-m", model, "-o", dst, a, c))
    assert not dst.exists()  # nothing written
    r = _invoke("run", "-m", model, "-o", dst, tmp_path / "x", tmp_path / "y")  # folders keep names
    assert r.exit_code == 0, r.output
    assert (dst / "x" / "photo.png").is_file() and (dst / "y" / "photo.png").is_file()


def test_file_or_folder_output_by_extension(tmp_path, model):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.jpg", 1)
    msg = _error(_invoke("run", "-m", model, "-o", tmp_path / "out" / "f4.jpg", a, b))
    assert "folder" in msg
    assert not (tmp_path / "out" / "f4.jpg").exists()
    msg = _error(_invoke("run", "-m", model, "-o", tmp_path / "x.xyz", a))
    assert ".xyz" in msg and not (tmp_path / "x.xyz").exists()
    _error(_invoke("run", "-m", model, "-o", tmp_path / "one.png", tmp_path))  # a folder input
    r = _invoke("run", "-m", model, "-o", tmp_path / "o" / "single.webp", a)  # file, parents made
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "o" / "single.webp").format == "WEBP"
    r = _invoke("run", "-m", model, "-o", tmp_path / "many", a, b)  # no extension: a folder
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a.png", "b.jpg"]


def test_outputs_checked_before_any_work(tmp_path, model, monkeypatch):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png", 1)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    calls = []
    monkeypatch.setattr("stylize.infer.stylize_image", lambda *a, **k: calls.append(1))
    msg = _error(_invoke("run", "-m", model, "-o", blocker, a, b))
    assert str(blocker) in msg and "file" in msg
    msg = _error(_invoke("run", "-m", model, "-o", blocker / "sub" / "o.png", a))
    assert str(blocker) in msg
    assert not calls  # refused before the first image


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes to read-only folders")
def test_unwritable_folder_named_before_any_work(tmp_path, model):
    a = _img(tmp_path / "a.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        msg = _error(_invoke("run", "-m", model, "-o", ro / "o.png", a))
        assert str(ro) in msg and "not writable" in msg
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EACCES, "permission denied")])
def test_write_errors_name_the_users_path(tmp_path, model, monkeypatch, code, words):
    a = _img(tmp_path / "a.png")
    out = tmp_path / "o.png"

    def failing_save(img, path, quality=95):  # what atomic_path's temp file write raises
        raise OSError(code, os.strerror(code), str(Path(path).parent / ".o.png.x1y2.tmp"))

    monkeypatch.setattr(engine.images, "save_image", failing_save)
    msg = _error(_invoke("run", "-m", model, "-o", out, a))
    assert words in msg and str(out) in msg
    assert not out.exists()


def test_max_memory_works_with_the_default_device_and_tiny_budgets_stream(tmp_path, model,
                                                                          monkeypatch):
    """`--max-memory 2G` without `--device` resolved "auto" before using it (it failed with
    torch's "Expected one of cpu, cuda, ... device type at start of device string: auto");
    a budget too small for the whole image streams it with whole-image statistics."""
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    src = _img(tmp_path / "in" / "a.png", size=(400, 300))
    r = runner.invoke(main.app, ["stylize", "run", "-m", str(model), str(src), "-o",
                                 str(tmp_path / "o.png"), "--max-memory", "2G"])
    assert r.exit_code == 0, r.output
    from stylize import tiling

    calls = []
    real = tiling.stylize_streamed
    monkeypatch.setattr(tiling, "stylize_streamed", lambda *a, **k: calls.append(1) or real(*a, **k))
    tight = str(tiling._process_rss() + 8 * 2**20)  # room for strips, not for the whole image
    r = runner.invoke(main.app, ["stylize", "run", "-m", str(model), str(src), "-o",
                                 str(tmp_path / "t.png"), "--max-memory", tight])
    assert r.exit_code == 0, r.output
    assert calls  # streamed
    a = np.asarray(Image.open(tmp_path / "o.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "t.png"), dtype=int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
