"""Hostile and careless command lines (the hardening issue): every case ends with one `error:` line
and exit code 2 (or, where the work can go on, a clear per-file line and a non-zero exit), never
a traceback, and no file that existed before the command is changed or lost.

`python tests/test_hostile.py` writes docs/hostile-inputs.md (the hostile-inputs table) from these
cases.
"""
from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

# (what a user did, arguments with {t} = a scratch folder, exit code, text the error must contain)
CASES = [
    ("output is the input", "stylize run -m {m} -o {t}/a.jpg {t}/a.jpg", 2, "never overwritten"),
    ("output folder is the input folder", "stylize run -m {m} -o {t}/in {t}/in", 2, "input"),
    ("two inputs with the same name", "stylize run -m {m} -o {t}/out {t}/in/x.jpg {t}/in2/x.jpg", 2, "x.jpg"),
    ("one output file for two inputs", "stylize run -m {m} -o {t}/f4.jpg {t}/a.jpg {t}/b.jpg", 2, "folder"),
    ("unknown output extension", "stylize run -m {m} -o {t}/x.xyz {t}/a.jpg", 2, ".xyz"),
    ("a file where the output folder goes", "stylize run -m {m} -o {t}/notafolder {t}/a.jpg {t}/b.jpg", 2, "notafolder"),
    ("output exists, no --overwrite", "stylize run -m {m} -o {t}/b.jpg {t}/a.jpg", 2, "--overwrite"),
    ("missing model file", "stylize run -m {t}/candy.pth -o {t}/o.jpg {t}/a.jpg", 2, "not found"),
    ("junk .pth model", "stylize run -m {t}/junk.pth -o {t}/o.jpg {t}/a.jpg", 2, "not a PyTorch checkpoint"),
    ("classifier given as a style model", "stylize run -m {clf} -o {t}/o.jpg {t}/a.jpg", 2, "classifier (resnet20, bn), not a style model"),
    ("style model given as a classifier", "classify predict {m} {t}/a.jpg", 2, "style model (bin), not a classifier"),
    ("crafted config: 10⁹ residual blocks", "stylize run -m {t}/huge.safetensors -o {t}/o.jpg {t}/a.jpg", 2, "residual blocks"),
    ("a non-image among images", "classify predict {clf} {t}/in {t}/bad.jpg", 2, "1 of 5 files could not be read"),
    ("eval on a missing folder", "classify eval {clf} --data folder:{t}/nope", 2, "does not exist"),
    ("--epochs 0", "stylize train --style-image {t}/a.jpg --content {t}/in --epochs 0 --out {t}/r", 2, "epochs"),
    ("--lr nan", "stylize train --style-image {t}/a.jpg --content {t}/in --lr nan --out {t}/r", 2, "learning rate"),
    ("--style-size 1", "stylize train --style-image {t}/a.jpg --content {t}/in --style-size 1 --out {t}/r", 2, "style size"),
    ("--image-size 3", "classify train --data folder:{t}/in --image-size 3 --out {t}/r", 2, "image size"),
    ("IBN-a arch with another norm", "classify train --data folder:{t}/in --arch resnet18_ibn_a --norm in --out {t}/r", 2, "resnet18_ibn_a"),
    ("--resume with nothing to resume", "classify train --data folder:{t}/in --resume --out {t}/r", 2, "nothing to resume"),
    ("shift jpeg=1000", "classify predict {clf} {t}/a.jpg --shift jpeg=1000", 2, "jpeg shift strength"),
    ("shift hue=nan", "classify predict {clf} {t}/a.jpg --shift hue=nan", 2, "hue shift strength"),
    ("shift gamma=-1", "classify predict {clf} {t}/a.jpg --shift gamma=-1", 2, "gamma shift strength"),
    ("unknown device", "--device tpu norms list", 2, "'tpu' is not one of"),
]
USAGE = {"unknown device"}  # caught by the argument parser: its usage message, not `error:`


def _setup(t: Path) -> dict[str, str]:
    """Scratch files: photos, a folder of two, a junk model, a crafted model, a classifier."""
    import torch

    from engine.io import save_safetensors

    rng = np.random.default_rng(0)

    def photo(p: Path) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(p)

    for p in ("a.jpg", "b.jpg", "in/x.jpg", "in/y.jpg", "in2/x.jpg", "in/c1/z.jpg", "in/c2/w.jpg"):
        photo(t / p)
    (t / "bad.jpg").write_bytes(b"not an image at all")
    (t / "junk.pth").write_bytes(bytes(range(256)))
    (t / "notafolder").write_text("a file, not a folder")
    save_safetensors(t / "huge.safetensors", {"w": torch.zeros(1)},
                     {"kind": "style", "format": 1,
                      "config": {"norm": "in", "base_channels": 32, "num_residual": 10**9}})
    return {"m": "candy_bin", "clf": "cifar10_resnet20_bn"}


def _snapshot(t: Path) -> dict[str, str]:
    return {str(p.relative_to(t)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in t.rglob("*") if p.is_file()}


def run_case(t: Path, names: dict[str, str], args: str):
    import main

    argv = args.format(t=t, **names).split()
    if argv[0] != "--device":
        argv = ["--device", "cpu"] + argv
    before = _snapshot(t)
    res = CliRunner().invoke(main.app, argv)
    after = _snapshot(t)
    lost = [k for k, v in before.items() if after.get(k) != v]
    return res, lost


# ============================================================================================
# Round 3 (issue 33, branch h-harden): outputs never overwrite inputs or unasked files, ledgers,
# crafted classifier files, damaged checkpoints, special files, long echoes. Kept in one block
# (its own cases, its own scratch files) so that other helpers' cases merge beside it.
# ============================================================================================
_LONG = "x" * 10_000
ROUND3_CASES = [
    ("compare output is its input", "stylize compare --models {m} -o {t}/a.jpg --overwrite {t}/a.jpg", 2, "one of the inputs"),
    ("compare output exists", "stylize compare --models {m} -o {t}/b.jpg {t}/a.jpg", 2, "--overwrite"),
    ("curves output exists", "stylize curves {t}/in -o {t}/b.jpg", 2, "--overwrite"),
    ("export over the shipped model it reads", "stylize export {m} {w}/style_candy_bin.safetensors --overwrite", 2, "one of the inputs"),
    ("ONNX export to a .jpg name", "stylize export {m} {t}/x.jpg --format onnx", 2, "ONNX model"),
    ("ONNX export of a multi-style model", "stylize export four_styles_bin {t}/x.onnx --format onnx", 2, "--style"),
    ("merge A A -o A --overwrite", "stylize merge {t}/st.safetensors {t}/st.safetensors -o {t}/st.safetensors --overwrite", 2, "one of the inputs"),
    ("classify export over an unrelated .jpg", "classify export {t}/clf.safetensors {t}/b.jpg --overwrite", 2, "safetensors"),
    ("classify export over its own source", "classify export {t}/clf.safetensors {t}/clf.safetensors --overwrite", 2, "one of the inputs"),
    ("classify export, output exists", "classify export {t}/clf.safetensors {t}/st.safetensors", 2, "--overwrite"),
    ("classify gates --out exists", "classify gates {binclf} --out {t}/notes.md", 2, "--overwrite"),
    ("sweep --out exists", "reproduce sweep --data folder:{t}/in --out {t}/notes.md", 2, "--overwrite"),
    ("ledger entry is a string", "reproduce sweep --data folder:{t}/in --ledger {t}/ledger_str.json --status", 2, "not an object"),
    ("ledger accuracy 'high'", "reproduce sweep --data folder:{t}/in --ledger {t}/ledger_high.json --status", 2, "test_acc"),
    ("ledger nested 100k deep", "reproduce sweep --data folder:{t}/in --ledger {t}/ledger_deep.json --status", 2, "nested too deeply"),
    ("ledger not UTF-8", "reproduce sweep --data folder:{t}/in --ledger {t}/ledger_bin.json --status", 2, "not UTF-8"),
    ("a FIFO named pipe.jpg as input", "stylize run -m {m} -o {t}/o.jpg {t}/pipe.jpg", 2, "named pipe"),
    ("a FIFO as the model", "stylize run -m {t}/pipe.pth -o {t}/o.jpg {t}/a.jpg", 2, "named pipe"),
    ("classifier widths 4096", "classify predict {t}/c_wide.safetensors {t}/a.jpg", 2, "c_wide.safetensors: model config argument widths"),
    ("classifier image_size 60000", "classify predict {t}/c_big.safetensors {t}/a.jpg", 2, "c_big.safetensors: image size"),
    ("classifier image_size 0", "classify predict {t}/c_zero.safetensors {t}/a.jpg", 2, "image size"),
    ("classifier std 0", "classify predict {t}/c_std.safetensors {t}/a.jpg", 2, "std"),
    ("classifier mean a string", "classify predict {t}/c_mean.safetensors {t}/a.jpg", 2, "mean"),
    ("classifier 3 names for 10 classes", "classify predict {t}/c_names.safetensors {t}/a.jpg", 2, "3 class names for 10 classes"),
    ("classifier arch ../../etc/passwd", "classify predict {t}/c_arch.safetensors {t}/a.jpg", 2, "unknown architecture"),
    ("style model with wrong-shape tensors", "stylize run -m {t}/shape.safetensors -o {t}/o.jpg {t}/a.jpg", 2, "other shapes"),
    ("--resume: checkpoint step 'abc'", "classify train --data folder:{t}/in --resume --out {t}/ck_step", 2, "step is 'abc'"),
    ("--resume: checkpoint without model", "classify train --data folder:{t}/in --resume --out {t}/ck_model", 2, "no model weights"),
    ("10 kB --style echoed", "stylize run -m four_styles_bin --style " + _LONG + " -o {t}/o.jpg {t}/a.jpg", 2, "characters) in this model"),
]
CASES += ROUND3_CASES
_setup_before_round3 = _setup


def _setup(t: Path) -> dict[str, str]:  # noqa: F811 - the base setup plus this block's files
    import os
    import shutil

    import torch

    import weights
    from classify.checkpoint import save_classifier
    from classify.registry import create_model
    from engine.checkpoint import read_metadata, save_model
    from engine.io import save_torch

    names = _setup_before_round3(t)
    shutil.copy(weights.path("candy_bin"), t / "st.safetensors")
    shutil.copy(weights.path("cifar10_resnet20_bn"), t / "clf.safetensors")
    (t / "notes.md").write_text("my notes\n")
    run = {"label": "bn", "depth": 20, "seed": 0, "group": "", "folder": "f",
           "test_acc": {"test": "high"}}
    (t / "ledger_str.json").write_text(json.dumps({"runs": {"k": "oops"}}))
    (t / "ledger_high.json").write_text(json.dumps({"runs": {"k": run}}))
    (t / "ledger_deep.json").write_text('{"runs": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (t / "ledger_bin.json").write_bytes(b'{"runs": {"\xff\xfe": 1}}')
    for p in ("pipe.jpg", "pipe.pth"):
        if hasattr(os, "mkfifo") and not (t / p).exists():
            os.mkfifo(t / p)
    # crafted classifiers: a real resnet20's weights with hostile metadata
    sd = create_model("resnet20", num_classes=10, norm="bn").state_dict()
    meta = read_metadata(weights.path("cifar10_resnet20_bn"))
    good = {k: meta[k] for k in ("class_names", "mean", "std", "image_size")}
    crafted = {
        "c_wide": ({"arch": "resnet20", "num_classes": 10, "norm": "bn",
                    "kwargs": {"widths": [4096] * 3}}, {}),
        "c_big": (meta["config"], {"image_size": 60000}),
        "c_zero": (meta["config"], {"image_size": 0}),
        "c_std": (meta["config"], {"std": [0, 0, 0]}),
        "c_mean": (meta["config"], {"mean": "0.5"}),
        "c_names": (meta["config"], {"class_names": ["a", "b", "c"]}),
        "c_arch": ({**meta["config"], "arch": "../../etc/passwd"}, {}),
    }
    for name, (config, facts) in crafted.items():
        save_model(t / f"{name}.safetensors", sd, kind="classifier", config=config,
                   **{**good, **facts})
    from stylize.model import StyleConfig, TransformerNet

    net = TransformerNet(config=StyleConfig(norm="in", base_channels=8, num_residual=1))
    bad = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k.endswith("weight") and v.ndim == 4
               else v) for k, v in net.state_dict().items()}
    save_model(t / "shape.safetensors", bad, kind="style", config=net.config.to_dict())
    # training checkpoints damaged by hand: a step that is no number, no model weights
    state = {"format": 1, "step": "abc", "recipe": {}, "model": {}, "optimizer": {},
             "rng": torch.get_rng_state()}
    save_torch(t / "ck_step" / "checkpoint.pt", state)
    save_torch(t / "ck_model" / "checkpoint.pt",
               {k: v for k, v in dict(state, step=3).items() if k != "model"})
    return {**names, "w": str(weights.WEIGHTS_DIR), "binclf": "cifar10_resnet20_bin"}



@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    t = tmp_path_factory.mktemp("hostile")
    return t, _setup(t)


@pytest.mark.parametrize("what,args,code,msg", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_clear_line_and_loses_nothing(scratch, what, args, code, msg, monkeypatch):
    t, names = scratch
    monkeypatch.setenv("NORMLAB_CACHE", str(t.parent / "cache"))
    res, lost = run_case(t, names, args)
    out = res.output
    assert "Traceback" not in out and not isinstance(res.exception, (AssertionError, TypeError)), out
    assert res.exit_code == code, out
    if what in USAGE:
        assert msg in " ".join(out.split()), out
    else:
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and msg in errors[0], out
    assert not lost, f"changed or removed: {lost}"


# ================================================================================================
# Run folders are never lost or trusted blindly (issue 33, items 1, 3, 4, 5; engine helper block)
# ================================================================================================

def _classify_argv(t: Path, out: Path, *more: str) -> list[str]:
    return ["--device", "cpu", "classify", "train", "--data", f"folder:{t}/data",
            "--image-size", "8", "--batch-size", "8", "--epochs", "2", "--out", str(out), *more]


@pytest.fixture
def run_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    for c in range(2):
        d = tmp_path / "data" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (200 * c, 80, 40 + i)).save(d / f"{i}.png")
    return tmp_path


def _cli(argv: list[str]):
    import main

    return CliRunner().invoke(main.app, argv)


def _one_error(res) -> str:
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


@pytest.mark.parametrize("held", ["metrics.jsonl", "checkpoint.pt", "model.safetensors",
                                  "config.json"])
def test_train_into_a_run_folder_needs_resume_or_overwrite(run_data, held):
    """A new run never silently replaces the run in its folder (classify and stylize alike)."""
    t = run_data
    out = t / "r"
    out.mkdir()
    (out / held).write_text("an earlier run's file")
    before = _snapshot(out)
    err = _one_error(_cli(_classify_argv(t, out)))
    assert held in err and "--resume" in err and "--overwrite" in err
    err = _one_error(_cli(["--device", "cpu", "stylize", "train", "--style-image",
                           f"{t}/data/c0/0.png", "--content", f"{t}/data", "--out", str(out)]))
    assert "already holds a run" in err
    assert _snapshot(out) == before
    res = _cli(_classify_argv(t, out, "--overwrite"))
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file()
    assert not (out / held).exists() or (out / held).read_bytes() != b"an earlier run's file"


def test_resume_cleans_only_the_engines_own_temp_files(run_data):
    t = run_data
    out = t / "r"
    assert _cli(_classify_argv(t, out, "--epochs", "1")).exit_code == 0
    mine = [out / ".my-notes.tmp", out / ".checkpoint.pt.notes.tmp", out / "x.tmp"]
    for p in mine:
        p.write_text("the user's")
    stale = out / ".checkpoint.pt.a1b2c3d4.tmp"  # what a killed checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    res = _cli(_classify_argv(t, out, "--resume", "--epochs", "2", "--override", "epochs"))
    assert res.exit_code == 0, res.output
    assert all(p.read_text() == "the user's" for p in mine) and not stale.exists()


def _flip_middle(path: Path, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 - n // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def test_damaged_checkpoint_is_refused_and_resume_falls_back(run_data):
    """4 kB flipped in checkpoint.pt: resume names the file and continues from the previous
    checkpoint, ending bit-identical to an uninterrupted run; without one it refuses."""
    import torch

    from engine.io import load_safetensors

    t = run_data
    full, part = t / "full", t / "part"
    assert _cli(_classify_argv(t, full, "--epochs", "3")).exit_code == 0
    assert _cli(_classify_argv(t, part, "--epochs", "2")).exit_code == 0
    assert (part / "checkpoint.prev.pt").is_file()  # epoch 1, kept when epoch 2 was written
    _flip_middle(part / "checkpoint.pt")
    res = _cli(_classify_argv(t, part, "--resume", "--epochs", "3", "--override", "epochs"))
    assert res.exit_code == 0, res.output
    assert "checkpoint.pt" in res.output and "previous checkpoint" in res.output, res.output
    a, _ = load_safetensors(full / "model.safetensors")
    b, _ = load_safetensors(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line)["epoch"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]  # cut back to the previous checkpoint's epoch, then trained on
    (part / "checkpoint.prev.pt").unlink()
    _flip_middle(part / "checkpoint.pt")
    err = _one_error(_cli(_classify_argv(t, part, "--resume", "--epochs", "4", "--override",
                                         "epochs")))
    assert str(part / "checkpoint.pt") in err and ("damaged" in err or "corrupt" in err)


def test_damaged_model_file_is_refused_naming_it(run_data):
    t = run_data
    out = t / "r"
    assert _cli(_classify_argv(t, out, "--epochs", "1")).exit_code == 0
    model = out / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight
    model.write_bytes(bytes(data))
    err = _one_error(_cli(["--device", "cpu", "classify", "predict", str(model),
                           f"{t}/data/c0/0.png"]))
    assert str(model) in err and "checksum" in err


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(run_data, monkeypatch):
    import errno

    import torch

    from engine.io import load_torch

    t = run_data
    out = t / "r"
    real_save, calls = torch.save, {"n": 0}

    def full_disk(obj, f, *a, **kw):
        calls["n"] += Path(f).name.startswith(".checkpoint.pt.")  # not the dataset cache
        if calls["n"] == 2 and Path(f).name.startswith(".checkpoint.pt."):  # the epoch-2 checkpoint: half written, then the disk is full
            Path(f).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    err = _one_error(_cli(_classify_argv(t, out, "--epochs", "3")))
    assert "no space left on /" in err and " MB)" in err and "needs" in err, err
    assert str(out / "checkpoint.pt") in err
    assert load_torch(out / "checkpoint.pt")["step"] == 2  # epoch 1 (2 steps of 8), intact
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / "model.safetensors").exists()


def test_round3_ledger_keeps_unknown_top_level_keys(tmp_path):
    """Item 6: recording a run rewrites the ledger with the keys it did not know, unchanged."""
    import experiments.reproduce.sweep as sw

    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"note": "grid for the paper", "owner": {"name": "ada"}, "runs": {}}))
    spec = sw.plan({"data": "x", "epochs": 1}, ["bn"], [0], [20], tmp_path / "runs")[0]
    book = sw.Ledger(path)
    book.add(spec, sw.RunResult("bn", 20, 0, "", "f", {"test": 91.5}))
    d = json.loads(path.read_text())
    assert d["note"] == "grid for the paper" and d["owner"] == {"name": "ada"}
    assert d["runs"][spec.key]["test_acc"] == {"test": 91.5}
    assert sw.Ledger(path).get(spec).test_acc == {"test": 91.5}


def test_round3_damaged_run_folder_on_resume_is_one_line_and_kept(tmp_path, monkeypatch):
    """A damaged metrics.jsonl line before others, and a checkpoint whose tensors have other
    shapes: `--resume` stops with one line naming the file, and changes nothing."""
    import main
    from engine.checkpoint import save_state
    from engine.io import load_torch, save_torch

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(4):
            p = tmp_path / "data" / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(p)
    run = tmp_path / "r"
    base = ["--device", "cpu", "classify", "train", "--data", f"folder:{tmp_path / 'data'}",
            "--image-size", "8", "--batch-size", "8", "--epochs", "1", "--out", str(run)]
    assert CliRunner().invoke(main.app, base).exit_code == 0
    resume = base + ["--resume", "--epochs", "2", "--override", "epochs"]
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b"\xff\xfe not text\n" + good)
    before = _snapshot(run)
    r = CliRunner().invoke(main.app, resume)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"{metrics} line 2 is damaged (not UTF-8 text)" in r.output, r.output
    assert _snapshot(run) == before
    metrics.write_bytes(good + b"5\n" + good)
    r = CliRunner().invoke(main.app, resume)
    assert r.exit_code == 2 and "line 2 is damaged (a JSON int, not a record)" in r.output, r.output
    metrics.write_bytes(good)
    state = load_torch(run / "checkpoint.pt")
    state["model"]["fc.weight"] = state["model"]["fc.weight"][:1]
    save_torch(run / "checkpoint.pt", state)  # edited by hand: its sha256 no longer matches
    r = CliRunner().invoke(main.app, resume)
    assert r.exit_code == 2 and "checksum does not match" in r.output, r.output
    save_state(run / "checkpoint.pt", state, keep_previous=False)  # intact, another network's
    r = CliRunner().invoke(main.app, resume)
    assert r.exit_code == 2 and "does not fit this run's network" in r.output
    assert "fc.weight (1, 64)≠(2, 64)" in r.output, r.output


def test_round3_onnx_export_of_one_style_of_a_multi_style_model(tmp_path):
    """`stylize export four_styles_bin x.onnx --format onnx --style mosaic` holds mosaic (not
    silently the first style); the refusal without --style names the styles."""
    pytest.importorskip("onnxruntime")
    import torch

    import main
    from stylize.deploy import OnnxStyleRunner
    from stylize.infer import load_model
    from stylize.model import style_names, use_style

    dst = tmp_path / "mosaic.onnx"
    r = CliRunner().invoke(main.app, ["stylize", "export", "four_styles_bin", str(dst),
                                      "--format", "onnx", "--style", "mosaic"])
    assert r.exit_code == 0, r.output
    m = load_model("four_styles_bin")
    names = style_names(m.meta, m.config.num_styles)
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        with use_style(m.net, "mosaic", names):
            want = m.net(x)
        with use_style(m.net, "candy", names):
            other = m.net(x)
    got = OnnxStyleRunner(dst)(x)
    assert float((got - want).abs().max()) < 1e-2 < float((got - other).abs().max())


def test_round3_video_whose_frame_size_changes_is_one_line(tmp_path):
    """Item 11: two MPEG-TS segments of different frame sizes, back to back."""
    av = pytest.importorskip("av")
    import main

    def segment(w: int, h: int) -> bytes:
        p = tmp_path / f"{w}x{h}.ts"
        with av.open(str(p), "w", format="mpegts") as out:
            v = out.add_stream("mpeg2video", rate=25)
            v.width, v.height, v.pix_fmt = w, h, "yuv420p"
            for i in range(3):
                f = av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), format="rgb24")
                f.pts = i
                for pkt in v.encode(f):
                    out.mux(pkt)
            for pkt in v.encode():
                out.mux(pkt)
        return p.read_bytes()

    src = tmp_path / "sizes.ts"
    src.write_bytes(segment(64, 48) + segment(32, 32))
    r = CliRunner().invoke(main.app, ["--device", "cpu", "stylize", "video", "-m", "candy_bin",
                                      "-o", str(tmp_path / "o.mp4"), str(src)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "is 32×32 but the video started at 64×48" in r.output
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".o.mp4*"))


def test_round3_a_visitor_cancels_only_its_own_training():
    """Item 13: the job remembers who started it; another anonymous visitor's cancel is refused
    (the run goes on), the same browser after a reload and a signed-in operator may cancel."""
    pytest.importorskip("gradio")
    import threading

    from ui.training import Job, TrainUpdate, Visitor

    owner = Visitor(session="s1", browser="b1")
    gate = threading.Event()

    def updates():
        yield TrainUpdate("training…")
        gate.wait(5)

    job = Job("style training")
    job.start(updates(), owner=owner)
    try:
        msg = job.cancel(by=Visitor(session="s2", browser="b2"))
        assert "another visitor" in msg and not job.stop.is_set()
        assert "cancelling" in job.cancel(by=Visitor(session="s3", browser="b1")).lower()  # reloaded
        job.stop.clear()
        assert "cancelling" in job.cancel(by=Visitor(session="s9", browser="b9", user="admin")).lower()
        assert "cancelling" in job.cancel().lower()  # the server itself (shutdown)
    finally:
        gate.set()


def test_round3_ui_uploads_have_a_budget_and_the_cache_is_cleaned(tmp_path):
    """Item 9: gradio's cache is cleaned (delete_cache), and an upload request over the
    per-request budget is answered 413 before any byte is stored."""
    pytest.importorskip("gradio")
    import asyncio

    from ui.app import UploadBudget, build_app, launch_kwargs
    from ui.config import UIConfig

    cfg = UIConfig(allowed_dirs=[], runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    assert build_app(cfg).delete_cache == cfg.delete_cache
    assert "middleware" in launch_kwargs(cfg)["app_kwargs"]
    reached = []

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def call(path: str, chunks: list[bytes], length: int | None) -> int:
        sent, status = list(chunks), []
        headers = [(b"content-length", str(length).encode())] if length is not None else []

        async def receive():
            body = sent.pop(0) if sent else b""
            return {"type": "http.request", "body": body, "more_body": bool(sent)}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        asyncio.run(UploadBudget(app, budget=1000)(scope, receive, send))
        return status[0]

    assert call("/gradio_api/upload", [b"x" * 500], 500) == 200
    assert call("/gradio_api/upload", [b"x" * 500], 5000) == 413  # declared too big
    assert call("/gradio_api/upload", [b"x" * 600] * 3, None) == 413  # chunked, counted
    assert call("/gradio_api/queue/join", [b"x" * 5000], 5000) == 200  # not an upload
    assert reached == ["/gradio_api/upload", "/gradio_api/queue/join"]


DOC = ROOT / "docs" / "hostile-inputs.md"
DOC_HEAD = """# Hostile inputs

Every case below is a test (`tests/test_hostile.py`, which also checks that no file that existed
before the command was changed or removed); `python tests/test_hostile.py` writes this file (and
prints the table). Web-UI cases (crafted uploads, typed paths in choice boxes, non-image uploads,
oversized images, reloads during training, cancelling another visitor's training, upload budgets)
are tested in `tests/test_ui_handlers.py`, `tests/test_ui_app.py` (through `gradio_client` and
Chromium) and the round-3 tests of `tests/test_hostile.py`. Paths: `…` is the test's scratch
folder, others are relative to the repository root. Run on this commit: {n} cases, tracebacks
seen {tb}, files lost {lost}.
"""


def _shorten(text: str, scratch: Path) -> str:
    """A message as the table shows it: the scratch folder as ``…``, the repository root left
    out (``weights/x.safetensors``, not this machine's absolute path)."""
    return text.replace(str(scratch), "…").replace(str(ROOT) + "/", "").replace(str(ROOT), ".")


if __name__ == "__main__":  # docs/hostile-inputs.md
    import tempfile

    sys.path.insert(0, str(ROOT))
    from engine.io import write_text_atomic

    rows = ["| case | exit | message (first line) | traceback | files lost |",
            "|---|---:|---|---:|---:|"]
    tracebacks = lost_files = 0
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        names = _setup(t)
        for what, args, _, _ in CASES:
            res, lost = run_case(t, names, args)
            usage = " ".join(res.output.split("Error")[-1].replace("│", " ").split())
            err = next((l for l in res.output.splitlines() if l.startswith("error:")),
                       usage.strip("─╮╯╰ ") + " (usage error)")
            err = _shorten(err, t).replace("|", "\\|")
            tb = int("Traceback" in res.output)
            tracebacks, lost_files = tracebacks + tb, lost_files + len(lost)
            rows.append(f"| {what} | {res.exit_code} | `{err[:110]}` | {tb} | {len(lost)} |")
    table = "\n".join(rows) + "\n"
    print(table, end="")
    write_text_atomic(DOC, DOC_HEAD.format(n=len(CASES), tb=tracebacks, lost=lost_files)
                      + "\n" + table)
    print(f"wrote {DOC.relative_to(ROOT)}")
