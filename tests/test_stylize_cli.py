"""`normlab stylize run/compare/curves/bench` through main.app, image modes and bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import main
import norms
import weights
from stylize import StyleConfig, TransformerNet, list_models, load_model, stylize_image
from stylize.model import style_names
from stylize.train import save_model

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(main.app, ["--device", "cpu", "stylize", *map(str, args)])


def _one_error_line(r) -> str:
    # progress bars (tqdm, on stderr) aside, the error is exactly one line
    lines = [l for l in r.output.splitlines() if l.strip() and "img/s" not in l]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def _tiny(tmp_path: Path, norm: str) -> Path:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig(norm, base_channels=8, num_residual=1))
    with torch.no_grad():  # outputs around mid-grey with visible structure, not clamped to black
        net.deconv3.conv2d.weight.mul_(30)
        net.deconv3.conv2d.bias.fill_(128)
    if norm == "bin":  # learned-looking gates, so that overrides visibly change something
        with torch.no_grad():
            for _, g in norms.iter_gates(net):
                g.uniform_(0.2, 0.8)
    path = tmp_path / f"tiny_{norm}.safetensors"
    save_model(path, net.eval(), {"kind": "stylize", "config": net.config.to_dict(),
                                  "style": "tiny", "steps": 0})
    return path


@pytest.fixture
def bin_model(tmp_path):
    return _tiny(tmp_path, "bin")


@pytest.fixture
def in_model(tmp_path):
    return _tiny(tmp_path, "in")


def _photo(w=40, h=30) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xx * 6 % 256, yy * 8 % 256, (xx + yy) * 3 % 256],
                                    -1).astype(np.uint8))


def _mode_files(d: Path) -> dict[str, tuple[Path, tuple[int, int]]]:
    rgb = _photo()
    files = {}

    def add(name, img, ext="png", size=(40, 30), **kw):
        p = d / f"{name}.{ext}"
        img.save(p, **kw)
        files[name] = (p, size)

    add("rgb", rgb, "jpg")
    add("gray", rgb.convert("L"))
    add("bilevel", rgb.convert("1"))
    add("rgba", rgb.convert("RGBA"))
    add("la", rgb.convert("LA"))
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    add("palette", pal, transparency=0)
    add("cmyk", rgb.convert("CMYK"), "jpg")
    arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    add("gray16", Image.fromarray(arr16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: stored 40×30, shown 30×40
    add("exif", rgb, "jpg", size=(30, 40), exif=exif.tobytes())
    return files


def test_every_image_mode_keeps_size_and_alpha(tmp_path, in_model):
    files = _mode_files(tmp_path)
    for name, (path, size) in files.items():
        out = tmp_path / "out" / f"{name}.png"
        r = _invoke("run", "--model", in_model, "--output", out, path)
        assert r.exit_code == 0, (name, r.output)
        res = Image.open(out)
        assert res.size == size, name
        assert (res.mode == "RGBA") == (name in ("rgba", "la", "palette")), (name, res.mode)


def test_folder_in_folder_out(tmp_path, in_model):
    src = tmp_path / "src" / "deep"
    src.mkdir(parents=True)
    _photo().save(src / "a.png")
    _photo(33, 21).save(src / "b.jpg")
    r = _invoke("run", "-m", in_model, "-o", tmp_path / "dst", tmp_path / "src")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "dst" / "deep" / "b.jpg").size == (33, 21)
    assert (tmp_path / "dst" / "deep" / "a.png").is_file()


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.jpg"
    _photo(200, 150).save(good, quality=95)
    data = good.read_bytes()
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10000, 7000)).save(bomb)  # 70 Mpx, a few kB on disk
    return {"missing": tmp_path / "missing.jpg", "truncated": trunc, "text": text,
            "empty": empty, "bomb": bomb, "folder": tmp_path / "emptydir"}


def test_bad_inputs_one_line_exit_2(tmp_path, in_model, bin_model):
    bad = _bad_files(tmp_path)
    bad["folder"].mkdir()
    good = tmp_path / "good.jpg"
    out = tmp_path / "o.jpg"
    for name, path in bad.items():
        # the pixel limit follows the budget: 256 MB cannot hold a 70 Mpx image's buffers
        msg = _one_error_line(_invoke("run", "-m", in_model, "-o", out, "--max-memory", "256M",
                                      path))
        if name == "bomb":
            assert "decompression-bomb" in msg
        assert not out.exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04 nothing")
    not_st = tmp_path / "fake.safetensors"
    not_st.write_bytes(b"\x00" * 16)
    for args in (["-m", "no_such_model"], ["-m", garbage], ["-m", not_st],
                 ["-m", in_model, "--strength", "1.5"], ["-m", in_model, "--gate", "0.5"],
                 ["-m", bin_model, "--gate", "3"], ["-m", in_model, "--tile", "8"],
                 ["-m", in_model, "--max-size", "4"]):
        _one_error_line(_invoke("run", *args, "-o", out, good))
        assert not out.exists()
    # a folder with one unreadable file: the others are written, then one line and exit 2
    folder = tmp_path / "mixed"
    folder.mkdir()
    _photo().save(folder / "ok.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    msg = _one_error_line(_invoke("run", "-m", in_model, "-o", tmp_path / "mixed_out", folder))
    assert "1 of 2" in msg and (tmp_path / "mixed_out" / "ok.png").is_file()


def test_gate_override_changes_output_and_restores_gates(bin_model):
    m = load_model(bin_model)
    assert m.has_gates
    before = [g.clone() for _, g in norms.iter_gates(m.net)]
    img = _photo(48, 40)
    as_in = np.asarray(stylize_image(m, img, gate=-1.0), dtype=float)
    as_bn = np.asarray(stylize_image(m, img, gate=1.0), dtype=float)
    learned = np.asarray(stylize_image(m, img), dtype=float)
    assert np.abs(as_in - as_bn).mean() > 1.0
    assert np.array_equal(np.asarray(stylize_image(m, img, gate=0.0), dtype=float), learned)
    assert all(torch.equal(a, b) for a, (_, b) in zip(before, norms.iter_gates(m.net)))


def test_size_tile_color_strength(in_model):
    m = load_model(in_model)
    img = _photo(150, 110)
    full = stylize_image(m, img)
    assert full.size == img.size
    assert stylize_image(m, img, max_size=64).size == img.size
    tiled = stylize_image(m, img, tile=64)
    assert tiled.size == img.size
    assert np.array_equal(np.asarray(stylize_image(m, img, tile=256)), np.asarray(full))
    assert np.array_equal(np.asarray(stylize_image(m, img, strength=0.0)), np.asarray(img))
    kept = stylize_image(m, img, preserve_color=True).convert("YCbCr")
    src = img.convert("YCbCr")
    plain = full.convert("YCbCr")
    for ch in (1, 2):  # chroma comes from the input (up to YCbCr→RGB clipping)
        def dist(a):
            return np.abs(np.asarray(a.getchannel(ch), float) - np.asarray(src.getchannel(ch), float)).mean()
        assert dist(kept) < 0.3 * dist(plain)


def test_compare_curves_bench(tmp_path, in_model, bin_model):
    photo = tmp_path / "p.png"
    _photo(64, 48).save(photo)
    grid = tmp_path / "grid.png"
    r = _invoke("compare", "--models", f"{in_model},{bin_model}", "-o", grid, photo)
    assert r.exit_code == 0, r.output
    g = Image.open(grid)
    assert g.size[0] > 3 * 64 and g.size[1] > 48
    _one_error_line(_invoke("compare", "--models", f"{in_model},nope", "-o", grid, photo))
    _one_error_line(_invoke("compare", "--models", bin_model, "-o", grid, photo))  # exists
    r = _invoke("compare", "--models", f"{bin_model}@-1,{bin_model},{bin_model}@1", "-o", grid,
                "--overwrite", photo)
    assert r.exit_code == 0, r.output
    _one_error_line(_invoke("compare", "--models", f"{in_model}@-1", "-o", grid, photo))
    runs = []
    for norm, model in (("in", in_model), ("bin", bin_model)):
        run = tmp_path / f"run_{norm}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"norm": norm}))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "content_loss": 5 / s, "style_loss": 9 / s}) + "\n"
            for s in range(1, 41)))
        (run / "model.safetensors").write_bytes(model.read_bytes())
        runs.append(run)
    fig = tmp_path / "curves.png"
    r = _invoke("curves", *runs, "-o", fig)
    assert r.exit_code == 0, r.output
    assert Image.open(fig).size[0] > 600  # two loss panels plus one ρ histogram
    _one_error_line(_invoke("curves", tmp_path, "-o", fig))
    r = _invoke("bench", "--sizes", "32", "--repeats", "1", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [x["variant"] for x in rows][0] == "fp32 eager" and len(rows) == 3
    assert rows[1]["psnr_db"] > 60  # channels_last fp32 computes the same function


def test_shipped_model_stylizes_the_sample():
    shipped = list_models()
    if not shipped:
        pytest.skip("no stylize model shipped in weights/manifest.json yet")
    for name in shipped:
        entry = weights.manifest()[name]
        path = weights.path(name, "stylize")
        assert weights.sha256(path) == entry["sha256"]
        assert path.stat().st_size <= 8 * 1024 * 1024
        m = load_model(name)
        sample = weights.SAMPLES_DIR / "amber.jpg"
        img = Image.open(sample).convert("RGB").resize((128, 128))
        names = style_names(m.meta, m.config.num_styles)
        assert names == entry.get("styles", names), f"{name}: manifest and model styles differ"
        outs = []
        for style in names:
            out = stylize_image(m, img, style=style)
            assert out.size == img.size
            outs.append(np.asarray(out, float))
            assert np.abs(outs[-1] - np.asarray(img, float)).mean() > 5, (name, style)  # it does something
        for i in range(len(outs)):  # a shipped multi-style model renders each style differently
            for j in range(i):
                assert np.abs(outs[i] - outs[j]).mean() > 5, (name, names[i], names[j])


def test_export_half_keeps_config_and_output(tmp_path, bin_model):
    dst = tmp_path / "ship" / "m.safetensors"
    r = _invoke("export", bin_model, dst)
    assert r.exit_code == 0, r.output
    assert dst.stat().st_size < 0.6 * bin_model.stat().st_size
    a, b = load_model(bin_model), load_model(dst)
    assert b.config == a.config and b.meta["dtype"] == "float16"
    img = _photo(40, 32)
    diff = np.abs(np.asarray(stylize_image(a, img), float) - np.asarray(stylize_image(b, img), float))
    assert diff.mean() < 1.0
    _one_error_line(_invoke("export", tmp_path / "nope.safetensors", dst))
    shipped = tmp_path / "candy.safetensors"  # a shipped name, as the help says
    r = _invoke("export", "candy_bin", shipped)
    assert r.exit_code == 0, r.output
    assert load_model(shipped).config == load_model("candy_bin").config


def test_bench_train_times_the_training_loop(tmp_path):
    """`stylize bench --train`: one row per variant, wall and CPU-time ratios to the first
    variant of the same run; an unknown variant is one error line."""
    r = _invoke("bench", "--train", "--sizes", "32", "--steps", "2", "--batch-size", "2",
                "--variants", "fp32 eager,channels_last,checkpoint + preview every step",
                "--json", tmp_path / "t.json")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [x["variant"] for x in rows] == ["fp32 eager", "channels_last",
                                            "checkpoint + preview every step"]
    assert rows[0]["ratio"] == 1.0 and rows[0]["cpu_ratio"] == 1.0
    assert all(x["s_per_step"] > 0 and x["cpu_s_per_step"] > 0 for x in rows)
    assert "| variant | wall s/step |" in r.output
    _one_error_line(_invoke("bench", "--train", "--variants", "fp64 magic"))


def test_outputs_never_overwrite_the_painting_or_model_they_read(tmp_path):
    """The one output rule covers what `stylize run --style-image`, `stylize optimize` and
    `stylize score` read besides the photos: the painting (or blend) and the model file."""
    for name in ("photo.jpg", "paint.jpg", "other.jpg"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / name)
    before = (tmp_path / "paint.jpg").read_bytes()
    runs = [
        ["stylize", "run", "--style-image", f"{tmp_path}/other.jpg:0.5,{tmp_path}/paint.jpg:0.5",
         "-o", f"{tmp_path}/paint.jpg", "--overwrite", f"{tmp_path}/photo.jpg"],
        ["stylize", "optimize", f"{tmp_path}/photo.jpg", "--style-image", f"{tmp_path}/paint.jpg",
         "-o", f"{tmp_path}/paint.jpg", "--overwrite"],
        ["stylize", "run", "-m", f"{tmp_path}/paint.jpg", "-o", f"{tmp_path}/paint.jpg",
         "--overwrite", f"{tmp_path}/photo.jpg"],
    ]
    for argv in runs:
        res = CliRunner().invoke(main.app, ["--device", "cpu"] + argv)
        assert res.exit_code == 2 and "one of the inputs" in res.output, (argv, res.output)
    res = CliRunner().invoke(main.app, [
        "--device", "cpu", "stylize", "score", "--styles", f"{tmp_path}/paint.jpg",
        "--photos", str(tmp_path), "-o", f"{tmp_path}/s.json", "--sheet", f"{tmp_path}/paint.jpg",
        "--overwrite"])
    assert res.exit_code == 2 and "--sheet" in res.output and "one of the inputs" in res.output, res.output
    assert (tmp_path / "paint.jpg").read_bytes() == before
