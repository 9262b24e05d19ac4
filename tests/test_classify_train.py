"""classify training: generated data, loss goes down, exact resume, one-line data errors."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import classify
from classify.train import TrainConfig, lr_at, train


def _make_folder(root, n_per_class=24, size=16, seed=0):
    """Two easy classes: reddish and bluish noise images, as JPEG files."""
    g = torch.Generator().manual_seed(seed)
    for c, (r, b) in enumerate([(200, 40), (40, 200)]):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n_per_class):
            noise = torch.randint(-40, 40, (size, size, 3), generator=g)
            base = torch.tensor([r, 110, b])
            arr = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(d / f"{i:03d}.jpg", quality=95)
    return root


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    return _make_folder(tmp_path / "train")


def _cfg(data_dir, out, **kw):
    base = dict(arch="resnet20", norm="bin", data=f"folder:{data_dir}", out=str(out), epochs=3,
                batch_size=16, lr=0.05, seed=3, device="cpu", image_size=16)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_is_the_bin_recipe():
    cfg = TrainConfig(epochs=160)
    assert [lr_at(cfg, e) for e in (0, 79, 80, 119, 120, 159)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_training_lowers_loss_and_writes_outputs(data_dir, tmp_path):
    seen = []
    path = train(_cfg(data_dir, tmp_path / "run", epochs=4), progress=seen.append)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["loss"] < rows[0]["loss"]
    first = seen[0]  # an engine.hooks.ProgressEvent
    assert (first.step, first.epoch, first.epochs, first.step_in_epoch) == (1, 1, 4, 1)
    assert {"loss", "train_acc"} <= set(first.metrics) and first.steps_per_epoch == 3
    assert [p.epoch for p in seen if p.step_in_epoch == p.steps_per_epoch] == [1, 2, 3, 4]
    assert not any(p.evaluation for p in seen)  # this folder has no test split
    clf = classify.load_classifier(path)
    assert clf.class_names == ["class0", "class1"] and clf.image_size == 16
    assert len(clf.mean) == 3 and all(s > 0 for s in clf.std)
    gates = [g for _, g in __import__("norms").iter_gates(clf.model)]
    assert gates and all(((g >= 0) & (g <= 1)).all() for g in gates)  # clipped every step


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    full = train(_cfg(data_dir, tmp_path / "full"))
    calls = {"n": 0}

    def stop_in_epoch_2():
        calls["n"] += 1
        return calls["n"] > 3  # 48 images / batch 16 = 3 steps per epoch

    train(_cfg(data_dir, tmp_path / "part"), should_stop=stop_in_epoch_2)
    assert len((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = train(_cfg(data_dir, tmp_path / "part", resume=True))
    a = classify.load_classifier(full).model.state_dict()
    b = classify.load_classifier(resumed).model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_different_run(data_dir, tmp_path):
    train(_cfg(data_dir, tmp_path / "r", epochs=1))
    with pytest.raises(ValueError, match="--norm 'bn' conflicts with the checkpoint's 'bin'"):
        train(_cfg(data_dir, tmp_path / "r", epochs=1, norm="bn", resume=True))


def test_nan_lr_is_refused_before_any_work(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"learning rate \(lr\) must be a number"):
        train(_cfg(data_dir, tmp_path / "nan", lr=float("nan"), epochs=1, norm="bn"))
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize("bad_step,kept", [(5, "holds the last finite weights \\(step 3\\)"),
                                           (4, "no checkpoint was written")])
def test_divergence_names_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch, bad_step, kept):
    """3 steps per epoch, a checkpoint at each epoch end: a non-finite loss right after a
    checkpoint step means that checkpoint's weights diverged, so it is never written."""
    from classify.train import ClassifyTask

    real, calls = ClassifyTask.loss, {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, m = real(self, model, batch)
        return (loss * float("nan"), m) if calls["n"] >= bad_step else (loss, m)

    monkeypatch.setattr(ClassifyTask, "loss", poisoned)
    out = tmp_path / "div"
    with pytest.raises(ValueError, match=f"loss became nan at step {bad_step}.*{kept}"):
        train(_cfg(data_dir, out, epochs=3, norm="bn"))
    ckpt = out / "checkpoint.pt"
    if bad_step == 5:
        import engine.io

        state = engine.io.load_torch(ckpt)
        assert state["step"] == 3
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    else:
        assert not ckpt.exists()


def _cli(args):
    import main

    res = CliRunner().invoke(main.app, args)
    err = getattr(res, "stderr", None) or res.output
    return res.exit_code, err


@pytest.mark.parametrize("spec,msg", [
    ("folder:{tmp}/missing", "does not exist"),
    ("folder:{tmp}/empty", "has no class subfolders"),
    ("folder:{tmp}/noimg", "no images"),
    ("folder:{tmp}/noreadable", "none of its 2 images could be read"),
    ("nonsense", "--data must be"),
    ("cifar10:{tmp}/nocifar", "pass --download"),
    ("pacs:{tmp}/corrupt", "pacs needs --test-domains"),
])
def test_bad_data_gives_one_line_error(tmp_path, monkeypatch, spec, msg):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("x")
    _make_folder(tmp_path / "corrupt", n_per_class=2)
    (tmp_path / "corrupt" / "class0" / "000.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    for c in ("a", "b"):
        (tmp_path / "noreadable" / c).mkdir(parents=True)
        (tmp_path / "noreadable" / c / "x.jpg").write_bytes(b"not an image")
    code, err = _cli(["classify", "train", "--data", spec.format(tmp=tmp_path), "--epochs", "1",
                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and msg in lines[0], err
    assert "Traceback" not in err


def test_pacs_domains(tmp_path, monkeypatch):
    from classify.data import load_data

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    for dom, seed in (("photo", 0), ("sketch", 1), ("cartoon", 2)):
        _make_folder(tmp_path / "pacs" / dom, n_per_class=3, seed=seed)
    split = load_data(f"pacs:{tmp_path / 'pacs'}", 16, test_domains="sketch")
    assert split.train.name == "cartoon+photo" and len(split.train) == 12
    assert list(split.tests) == ["sketch"] and len(split.tests["sketch"]) == 6
    with pytest.raises(ValueError, match="unknown PACS domain 'art'.*cartoon, photo, sketch"):
        load_data(f"pacs:{tmp_path / 'pacs'}", 16, train_domains="art", test_domains="sketch")


def test_one_bad_image_in_a_data_folder_is_skipped_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    _make_folder(tmp_path / "d", n_per_class=4)
    (tmp_path / "d" / "class0" / "000.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    code, err = _cli(["classify", "train", "--data", f"folder:{tmp_path / 'd'}", "--epochs", "1",
                      "--image-size", "16", "--batch-size", "4", "--out", str(tmp_path / "out"),
                      "--device", "cpu"])
    assert code == 0, err
    assert "skipped" in err and "000.jpg" in err and (tmp_path / "out" / "model.safetensors").is_file()


def test_predict_accepts_folders_and_skips_bad_files(tmp_path):
    import numpy as np

    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(d / "a.png")
    (d / "bad.jpg").write_bytes(b"junk")
    # a 16-bit grayscale PNG of mid grey must not decode as white
    Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16)).save(d / "g16.png")
    import main

    res = CliRunner().invoke(main.app, ["--device", "cpu", "classify", "predict",
                                        "cifar10_resnet20_bn", str(d)])
    err, out = res.stderr, res.stdout
    assert res.exit_code == 2 and "skipped:" in err and "bad.jpg" in err, err
    assert "1 of 3 files could not be read" in err and "a.png:" in out and "g16.png:" in out
    from classify.data import open_rgb

    assert 120 < np.asarray(open_rgb(d / "g16.png")).mean() < 136


def test_init_starts_from_another_runs_weights(data_dir, tmp_path):
    from classify.registry import create_model
    from classify.train import init_from

    first = train(_cfg(data_dir, tmp_path / "a", epochs=1))
    model = create_model("resnet20", num_classes=2, norm="bin")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_from(model, str(first))
    src = classify.load_classifier(str(first)).model.state_dict()
    assert all(torch.equal(model.state_dict()[k], src[k]) for k in src)
    assert any(not torch.equal(before[k], src[k]) for k in src)
    # a warm restart from it runs and records where it started
    second = train(_cfg(data_dir, tmp_path / "b", epochs=1, init=str(first)))
    assert second.exists()
    with pytest.raises(ValueError, match="resnet20/bin .*this run trains resnet20/bn"):
        init_from(create_model("resnet20", num_classes=2, norm="bn"), str(first))
