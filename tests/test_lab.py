"""experiments.lab: the norms-lab and shift-explorer analyses as library functions (the UI and the
command line call these)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

import classify
import stylize
from experiments import lab


def _image(w: int = 40, h: int = 32, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
    return Image.fromarray(x.numpy(), "RGB")


def _classifier(norm: str) -> classify.Classifier:
    model = classify.create_model("resnet20", num_classes=3, norm=norm).eval()
    return classify.Classifier(model, model.config, ["a", "b", "c"], [0.5] * 3, [0.25] * 3, 32,
                               name=f"r20-{norm}")


def _style(norm: str) -> stylize.StyleModel:
    net = stylize.TransformerNet(config=stylize.StyleConfig(norm, base_channels=8,
                                                            num_residual=1)).eval()
    return stylize.StyleModel(net=net, config=net.config, name=f"tiny-{norm}")


def _brighter(im: Image.Image) -> Image.Image:
    return Image.eval(im, lambda v: min(255, v + 60))


def test_norm_layers_lists_top_level_norms_in_order():
    layers = lab.norm_layers(_classifier("ibn").model)
    names = [n for n, _ in layers]
    assert names and names == sorted(names, key=names.index)
    assert not any(n.endswith(".IN") or n.endswith(".BN") for n in names)  # IBN's halves are inside
    assert len(lab.norm_layers(_style("in").net)) == 3 + 2 * 1 + 2  # convs, residual block, ups


def test_network_input_matches_each_library():
    im = _image(300, 200)
    x = lab.network_input(_style("in"), im)
    assert x.shape == (1, 3, 171, 256) and x.max() > 1  # RGB 0–255, at most 256 px
    c = lab.network_input(_classifier("bn"), im)
    assert c.shape == (1, 3, 32, 32) and c.min() < 0  # normalised with the model's mean/std
    with pytest.raises(ValueError, match="style model or a classifier"):
        lab.network_input(object(), im)


def test_channel_stats_in_removes_a_brightness_shift_bn_does_not():
    im = _image()
    stats = {n: lab.channel_stats(_classifier(n), [im, _brighter(im)], depth=0.0, name=n)
             for n in ("in", "bn")}
    assert stats["in"].mean_abs_delta() < 1e-3 < stats["bn"].mean_abs_delta()
    assert len(stats["bn"].mean) == 2 and len(stats["bn"].std[0]) == 16
    with pytest.raises(ValueError, match="between 0 and 1"):
        lab.channel_stats(_classifier("bn"), [im], depth=2)


def test_channel_stats_of_a_style_model_leave_the_shared_net_untouched():
    m = _style("bin")
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    s = lab.channel_stats(m, [_image(), _brighter(_image())], depth=1.0)
    assert s.model == "tiny-bin" and len(s.mean[0]) == 8  # the last norm: base channels
    assert all(torch.equal(before[k], v) for k, v in m.net.state_dict().items())
    assert not m.net._forward_hooks and all(not mod._forward_hooks for mod in m.net.modules())


def test_feature_figure_labels_its_axes():
    im = _image()
    s = [lab.channel_stats(_classifier("bn"), [im, _brighter(im)], 0.5, name="bn")]
    fig = lab.feature_figure(s, "brightness")
    assert len(fig.axes) == 2
    assert all(ax.get_xlabel() == "channel index" and ax.get_ylabel() for ax in fig.axes)
    assert "mean |Δ|" in fig.axes[0].get_title()


def test_shift_rows_and_markdown():
    im = _image()
    clfs = {"bn": _classifier("bn"), "in": _classifier("in")}
    rows = lab.shift_rows(clfs, im, _brighter(im))
    assert [r.model for r in rows] == ["bn", "in"] and [r.norm for r in rows] == ["bn", "in"]
    for r in rows:
        assert r.top1 in "abc" and 0 <= r.p_kept <= 1 and 0 < r.p_top1 <= 1
        assert r.changed == (r.top1 != r.shifted_top1)
    same = lab.shift_rows(clfs, im, im)
    assert all(not r.changed and r.p_kept == pytest.approx(r.p_top1) for r in same)
    md = lab.shift_rows_markdown(rows)
    assert md.count("\n") == 3 and md.startswith("| model |")
    assert lab.shift_rows_markdown([]) == ""


def test_classifier_view_is_the_input_enlarged_nearest():
    v = lab.classifier_view(_classifier("bn"), _image(100, 60), display=160)
    assert v.size == (160, 160)
    arr = torch.from_numpy(__import__("numpy").asarray(v).copy())
    assert torch.equal(arr[0:5, 0:5], arr[0:1, 0:1].expand(5, 5, 3))  # 5×5 blocks: nearest
