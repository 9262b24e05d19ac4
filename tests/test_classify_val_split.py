"""``classify train --val-split N``: a seeded, class-stratified hold-out of the training set is
what training evaluates; the test set is evaluated once, after training, and recorded as such."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from classify.data import VAL, DataSplit, TensorDataset, hold_out
from classify.train import TrainConfig, train
from engine.checkpoint import read_metadata


def _ds(n_per_class=(30, 10, 20), size=16, seed=0, name="train") -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_class)])
    x = torch.randint(0, 256, (len(y), 3, size, size), generator=g, dtype=torch.uint8)
    x[:, 0] = (y * 100).to(torch.uint8)[:, None, None]  # a learnable class colour
    return TensorDataset(x, y, [f"c{k}" for k in range(len(n_per_class))], name)


def test_hold_out_is_stratified_disjoint_and_seeded():
    ds = _ds()
    rest, val = hold_out(ds, 12)
    assert len(val) == 12 and len(rest) == len(ds) - 12
    assert torch.bincount(val.y).tolist() == [6, 2, 4]  # 12 × 30/60, 10/60, 20/60
    key = lambda t: {r.numpy().tobytes() for r in t.x}  # noqa: E731
    assert not key(rest) & key(val) and key(rest) | key(val) == key(ds)
    again = hold_out(ds, 12)[1]
    assert torch.equal(again.x, val.x)  # the same hold-out every time (fixed seed)
    assert not torch.equal(hold_out(ds, 12, seed=1)[1].x, val.x)
    r7 = hold_out(ds, 7)[1]
    assert len(r7) == 7 and torch.bincount(r7.y, minlength=3).min() >= 1  # remainders go round
    for bad in (0, len(ds) - 1):
        with pytest.raises(ValueError, match="--val-split must be from 1 to 58"):
            hold_out(ds, bad)


def test_with_validation_moves_the_tests_to_final():
    split = DataSplit(_ds(), {"test": _ds(seed=1, name="test")}, "x")
    v = split.with_validation(6)
    assert list(v.tests) == [VAL] and list(v.final) == ["test"] and len(v.train) == 54
    assert v.final["test"] is split.tests["test"]
    with pytest.raises(ValueError, match="needs a training set"):
        DataSplit(None, {"test": _ds()}).with_validation(3)


def test_training_sees_only_validation_and_tests_once(tmp_path):
    data = DataSplit(_ds(), {"test": _ds(seed=1, name="test")}, "given")
    cfg = TrainConfig(arch="resnet20", norm="bn", data="given", out=str(tmp_path / "run"),
                      epochs=2, batch_size=16, lr=0.05, seed=0, device="cpu", image_size=16,
                      val_split=12)
    path = train(cfg, data=data, show_bar=False)
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = {k for r in rows for k in r if k.startswith("test_acc/")}
    assert evaluated == {f"test_acc/{VAL}"}  # the test set never appears during training
    meta = read_metadata(path)
    assert set(meta["val_acc"]) == {VAL} and set(meta["test_acc"]) == {"test"}
    assert meta["test_evaluated"].startswith("once, after training")
    assert meta["recipe"]["val_split"] == 12 and meta["train_images"] == 48


def test_cli_rejects_a_hold_out_larger_than_the_training_set(tmp_path, monkeypatch):
    from PIL import Image

    from main import app

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    for c in range(2):
        (tmp_path / "d" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (100 * c, 0, 0)).save(tmp_path / "d" / f"c{c}" / f"{i}.png")
    res = CliRunner().invoke(app, ["--device", "cpu", "classify", "train", "--data",
                                   f"folder:{tmp_path / 'd'}", "--image-size", "16", "--epochs",
                                   "1", "--val-split", "100", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "--val-split must be from 1 to 6" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "run" / "model.safetensors").exists()
