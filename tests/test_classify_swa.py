"""classify average (SWA): weight averaging, batch-statistics recalibration, the CLI."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import norms
from classify.swa import average_state, recalibrate_batch_stats
from classify.train import TrainConfig, train
from test_classify_train import _make_folder


def _net(norm: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norms.create_norm(norm, 4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), norms.create_norm(norm, 4))


def test_average_state_is_the_elementwise_mean_and_keeps_gates_in_range():
    a, b, c = (_net("bin", s) for s in range(3))
    for m, v in zip((a, b, c), (0.0, 1.0, 0.5)):
        m[1].gate.data.fill_(v)
    avg = average_state([a, b, c])
    w = torch.stack([m[0].weight.detach() for m in (a, b, c)]).mean(0)
    torch.testing.assert_close(avg["0.weight"], w)
    assert torch.allclose(avg["1.gate"], torch.full((4,), 0.5))
    assert avg["1.num_batches_tracked"].dtype == torch.long
    with pytest.raises(ValueError, match="same architecture"):
        average_state([a, _net("in", 0)])


@pytest.mark.parametrize("norm", ["bn", "bin", "bn_in"])
def test_recalibration_replaces_running_stats_with_the_data_average(norm):
    """After the pass the running statistics describe the data (not the garbage they held):
    with one batch they are exactly that batch's statistics; momentum is restored."""
    net = _net(norm, 0)
    first = net[1]
    with torch.no_grad():
        first.running_mean.fill_(50.0)
        first.running_var.fill_(1e3)
    x = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    n = recalibrate_batch_stats(net, x, mean, std, batch_size=24, seed=7)
    assert n == 2 and first.momentum == 0.1 and not net.training
    # the same augmented batch the pass drew (seeded), through the first conv
    from classify.data import augment, normalize

    g = torch.Generator().manual_seed(7)
    order = torch.randperm(24, generator=g)
    xb = normalize(augment(x[order], g, 1), mean, std)
    with torch.no_grad():
        h = net[0](xb)
    torch.testing.assert_close(first.running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, h.var((0, 2, 3), unbiased=True),
                               rtol=1e-4, atol=1e-5)


def test_average_cli_writes_a_loadable_model_and_refuses_mixed_models(tmp_path, monkeypatch):
    from main import app

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    data = _make_folder(tmp_path / "train", n_per_class=8)
    paths = []
    for i, norm in enumerate(["bin", "bin", "bn"]):
        cfg = TrainConfig(arch="resnet20", norm=norm, data=f"folder:{data}",
                          out=str(tmp_path / f"r{i}"), epochs=1, batch_size=8, lr=0.05, seed=i,
                          device="cpu", image_size=16, eval_every=0)
        paths.append(str(train(cfg, show_bar=False)))
    out = tmp_path / "swa.safetensors"
    res = CliRunner().invoke(app, ["--device", "cpu", "classify", "average", paths[0], paths[1],
                                   "--data", f"folder:{data}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from classify import load_classifier

    clf = load_classifier(str(out))
    assert clf.meta["averaged_from"] == paths[:2] and clf.meta["recalibrated_layers"] > 0
    a, b = (load_classifier(p).model.state_dict() for p in paths[:2])
    k = "conv1.weight" if "conv1.weight" in a else next(iter(a))
    torch.testing.assert_close(clf.model.state_dict()[k], (a[k] + b[k]) / 2)
    bad = CliRunner().invoke(app, ["--device", "cpu", "classify", "average", paths[0], paths[2],
                                   "--data", f"folder:{data}", "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 2 and "only the same model can be averaged" in bad.output
    assert not (tmp_path / "x.safetensors").exists()
