"""Any-size stylization: tile geometry, thumbnail statistics (URST) and the memory budget."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

import weights
from stylize import StyleConfig, load_model, stylize_image
from stylize import tiling
from stylize.bench import psnr
from stylize.infer import _run


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("n,tile", [(100, 64), (383, 128), (384, 128), (1000, 256), (4001, 1024),
                                    (130, 128)])
def test_tiles_cover_and_weights_sum_to_one(n, tile):
    margin, feather = tiling.tile_margins(tile)
    tiles = tiling.axis_tiles(n, tile, margin, feather)
    assert tiles[0].start == 0 and tiles[-1].end == n
    total = np.zeros(n)
    for t, w in zip(tiles, tiling.axis_weights(tiles, feather)):
        assert t.start % 4 == 0  # the whole image's stride-2 sampling grid
        assert t.end - t.start <= tile + 3
        assert t.start <= t.keep_start < t.keep_end <= t.end
        assert (w >= 0).all() and len(w) == t.keep_end - t.keep_start
        total[t.keep_start:t.keep_end] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    for a, b in zip(tiles, tiles[1:]):  # neighbours overlap by at least the blend width
        assert a.keep_end - b.keep_start >= feather


def _sample(side: int) -> np.ndarray:
    img = Image.open(weights.SAMPLES_DIR / "amber.jpg").convert("RGB")
    s = side / max(img.size)
    return np.asarray(img.resize((round(img.size[0] * s), round(img.size[1] * s)), Image.LANCZOS))


def _untiled(net, rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float()
    return _run(net, x, False)[0].clamp(0, 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32)))


@pytest.fixture(scope="module")
def candy():
    return load_model("candy_bin")


def test_one_tile_covering_the_image_equals_untiled(candy):
    rgb = _sample(150)  # 150×100, not a multiple of 4: the net pads, the tile path must agree
    net = candy.net
    out = tiling.stylize_tiled(net, rgb, lambda x: _run(net, x, False), tile=152, bar=False)
    assert np.array_equal(out, _untiled(net, rgb))


def test_thumbnail_statistics_keep_the_look_on_a_real_photo(candy, monkeypatch):
    rgb = _sample(384)
    net = candy.net
    ref = _untiled(net, rgb)
    calls = []
    out = tiling.stylize_tiled(net, rgb, lambda x: _run(net, x, False), tile=128, bar=False,
                               progress=lambda d, t: calls.append((d, t)))
    assert len(calls) >= 9 and calls[-1][0] == calls[-1][1]  # several tiles, all done
    tiled_db = _psnr(out, ref)
    assert tiled_db >= 30.0
    # the same tiles with each tile's own statistics (what `--tile` did before) lose the look
    monkeypatch.setattr(tiling, "thumbnail_statistics", lambda *a: contextlib.nullcontext())
    own = tiling.stylize_tiled(net, rgb, lambda x: _run(net, x, False), tile=128, bar=False)
    assert _psnr(own, ref) < tiled_db - 8


def test_memory_budget_chooses_tiles_and_stylize_image_uses_them(candy):
    cfg = StyleConfig("bin")
    big = tiling.plan_memory(4000, 4000, cfg, max_memory=10 * 2**40)
    assert big.tile is None and big.thumbnail_side == 4000  # fits: the untiled path
    small = tiling.plan_memory(4000, 4000, cfg, max_memory=tiling._process_rss() + 600 * 2**20)
    assert small.tile is not None and 128 <= small.tile <= 2048
    bpp = tiling.activation_bytes_per_pixel(cfg)
    assert small.tile ** 2 * bpp <= small.activation_budget
    t = small.thumbnail_side  # the largest thumbnail that fits the budget
    assert t ** 2 * bpp <= small.activation_budget < (t + 8) ** 2 * bpp
    forced = tiling.plan_memory(1000, 800, cfg, tile=256, max_memory=10 * 2**40)
    assert forced.tile == 256 and forced.thumbnail_side == 1000  # fits: exact statistics
    with pytest.raises(ValueError, match="memory"):
        tiling.plan_memory(4000, 4000, cfg, max_memory=tiling._process_rss() + 2**20)
    assert tiling.plan_memory(100, 80, cfg, tile=128).tile is None  # the tile covers the image
    assert tiling.parse_memory("1.5G") == int(1.5 * 2**30)
    assert tiling.parse_memory("512 MB") == 512 * 2**20
    for bad in ("lots", "-1G", "0", "2X"):
        with pytest.raises(ValueError, match="memory"):
            tiling.parse_memory(bad)
    # a budget that cannot hold the 256×192 activations (54 MB): streamed automatically, stage
    # by stage in strips with whole-image statistics, so the look is the untiled one
    img = Image.fromarray(_sample(256))
    steps = []
    ref = stylize_image(candy, img, bar=False)  # first: what it imports (onnxruntime) is resident
    budget = tiling._process_rss() + 30 * 2**20
    auto = stylize_image(candy, img, max_memory=budget, progress=lambda d, t: steps.append(t),
                         bar=False)
    assert steps and steps[0] > 1  # progress per strip
    assert _psnr(np.asarray(auto), np.asarray(ref)) >= 40.0


def _tiny(norm: str, **kw):
    from stylize import TransformerNet

    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig(norm, base_channels=8, num_residual=2, **kw))
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(30)  # outputs spread over 0–255
        for name, p in net.named_parameters():
            if name.endswith("gate"):
                p.uniform_(0, 1)
    net.train()
    with torch.no_grad():  # running statistics away from (0, 1)
        for _ in range(2):
            net(torch.rand(2, 3, 32, 32) * 255)
    return net.eval()


@pytest.mark.parametrize("norm", ["in", "bin", "ibn", "gn", "sn", "bn", "cbin"])
def test_streamed_equals_the_whole_image_pass_for_every_norm(norm, tmp_path):
    net = _tiny(norm, **({"num_styles": 2} if norm == "cbin" else {}))
    rgb = (np.random.default_rng(1).random((70, 53, 3)) * 255).astype(np.uint8)  # padded sizes
    ref = _untiled(net, rgb)
    assert ref.std() > 0.5
    for rows, disk in ((16, False), (23, True)):
        out = tiling.stylize_streamed(net, rgb, rows=rows, on_disk=disk, bar=False)
        assert out.shape == ref.shape
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1, (norm, rows)


def test_streamed_keeps_the_look_of_a_real_photo(candy):
    rgb = _sample(300)
    ref = _untiled(candy.net, rgb)
    calls = []
    out = tiling.stylize_streamed(candy.net, rgb, rows=40, bar=False,
                                  progress=lambda d, t: calls.append((d, t)))
    assert _psnr(out, ref) >= 40.0  # the thumbnail path gave ~22 dB at half the size
    assert calls[-1][0] == calls[-1][1] and len(calls) > 10


def test_allocation_failure_retries_in_smaller_tiles(candy, monkeypatch):
    from stylize import infer

    real = infer._stylize_planned
    seen = []

    def flaky(model, work, plan, *a, **k):
        seen.append(plan.tile)
        if plan.tile is None or plan.tile > 200:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 512000000 bytes")
        return real(model, work, plan, *a, **k)

    monkeypatch.setattr(infer, "_stylize_planned", flaky)
    img = Image.fromarray(_sample(300))
    out = stylize_image(candy, img, bar=False, backend="torch")
    assert seen[0] is None and seen[-1] is not None and seen[-1] <= 200  # retried smaller
    monkeypatch.setattr(infer, "_stylize_planned", real)
    ref = stylize_image(candy, img, bar=False, backend="torch")
    assert _psnr(np.asarray(out), np.asarray(ref)) >= 40.0

    def always(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(infer, "_stylize_planned", always)
    with pytest.raises(ValueError, match="not enough memory"):
        stylize_image(candy, img, bar=False)


def test_default_budget_respects_ulimit_and_cgroup(tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    from engine import devices

    root = Path(__file__).resolve().parent.parent
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30));"
            "from engine.devices import host_memory_available as h; b, why = h();"
            "print(b, why)")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    left, why = r.stdout.split(maxsplit=1)
    assert int(left) < 3 * 2**30 and "ulimit -v" in why
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(str(2 * 2**30))
    usage.write_text(str(2**30 + 2**29))
    monkeypatch.setattr(devices, "_cgroup_limits", lambda: [(str(limit), str(usage))])
    left, why = devices.host_memory_available()
    assert left == 2**29 and "cgroup" in why
    assert tiling.default_memory_budget("cpu") == 2**28  # half of what the cgroup leaves
    limit.write_text("max")  # no limit: the host's RAM decides
    assert "cgroup" not in devices.host_memory_available()[1]
