"""norms statistics sources: own (default), captured and frozen, streamed (issue 10)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import norms
from norms.statistics import InstanceStatsNorm

C = 8


def _has_instance_stats(name: str) -> bool:
    return any(isinstance(m, InstanceStatsNorm) for m in norms.create_norm(name, C).modules())


INSTANCE_NORMS = [n for n in norms.NORM_NAMES if _has_instance_stats(n)]


def test_every_per_instance_norm_has_a_statistics_source():
    assert set(INSTANCE_NORMS) == {"in", "bn_in", "bin", "ibn", "sn", "gn", "ln"}


def _randomise(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gate"):
                p.uniform_(0, 1)
            elif name.endswith(("mean_weight", "var_weight")):
                p.normal_(0.0, 1.0)
            else:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.5)
    return module


def _net(name: str) -> nn.Module:
    """conv-norm-ReLU-conv-norm with running statistics warmed up, in eval mode."""
    f = norms.get_norm_layer(name)
    torch.manual_seed(0)
    net = _randomise(nn.Sequential(nn.Conv2d(3, C, 3, padding=1), f(C), nn.ReLU(),
                                   nn.Conv2d(C, C, 3, padding=1), f(C)))
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(4, 3, 9, 9) * 2 + 1)
    return net.eval()


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 2 + 1


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_capture_then_use_equals_default(name):
    net = _net(name)
    x = _x(2, 3, 12, 10)
    with torch.no_grad():
        ref = net(x)
        with norms.capture_statistics(net) as bank:
            captured_pass = net(x)
        with norms.use_statistics(net, bank):
            used = net(x)
    assert torch.equal(captured_pass, ref)  # capturing does not change the pass
    assert bank.batch_size == 2 and len(bank) == 2  # both norm layers (ibn: their IN halves)
    torch.testing.assert_close(used, ref, rtol=1e-5, atol=1e-5)
    if name in ("bin", "bn_in", "sn"):  # same fused formula and kernel: bit for bit
        assert torch.equal(used, ref)


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_crop_with_full_statistics_equals_crop_of_full_output(name):
    """What tiled stylization relies on: a tile normalised with the whole image's statistics is
    the same tile of the whole image's output."""
    layer = _randomise(norms.create_norm(name, C))
    layer(_x(4, C, 6, 6))  # running statistics
    layer.eval()
    x = _x(1, C, 16, 20)
    crop = (..., slice(3, 11), slice(5, 17))
    with torch.no_grad():
        full = layer(x)
        with norms.capture_statistics(layer) as bank:
            layer(x)
        with norms.use_statistics(layer, bank):
            tile = layer(x[crop])
        own = layer(x[crop])
    torch.testing.assert_close(tile, full[crop], rtol=1e-5, atol=1e-5)
    assert (own - full[crop]).abs().max() > 1e-3  # the tile's own statistics differ


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_stream_momentum_zero_is_default_exactly(name):
    net = _net(name)
    x = _x(3, 3, 8, 8)
    with torch.no_grad():
        ref = [net(x), net(x[:1])]
        with norms.stream_statistics(net, momentum=0.0):
            out = [net(x), net(x[:1])]
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_stream_on_constant_sequence_equals_default(name):
    net = _net(name)
    frame = _x(1, 3, 8, 8)
    with torch.no_grad():
        ref = net(frame)
        with norms.stream_statistics(net, momentum=0.9):
            single = [net(frame) for _ in range(3)]
            batched = net(frame.expand(4, -1, -1, -1).contiguous())
    for y in single + list(batched.split(1)):
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_stream_batched_equals_frame_by_frame(name):
    net = _net(name)
    clip = _x(5, 3, 8, 8)
    with torch.no_grad():
        with norms.stream_statistics(net, momentum=0.7):
            batched = torch.cat([net(clip[:3]), net(clip[3:])])
        with norms.stream_statistics(net, momentum=0.7):
            frames = torch.cat([net(f[None]) for f in clip])
        default = net(clip)
    torch.testing.assert_close(batched, frames, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[0], default[0], rtol=1e-5, atol=1e-5)  # first frame: own
    assert (batched[1:] - default[1:]).abs().max() > 1e-3  # later frames: smoothed


def test_stream_is_the_exponential_moving_average():
    layer = _randomise(norms.InstanceNorm2d(C)).eval()
    x = _x(2, C, 6, 7)
    m = 0.8
    with torch.no_grad(), norms.stream_statistics(layer, momentum=m):
        y = layer(x)
    var, mean = torch.var_mean(x, dim=(2, 3), unbiased=False, keepdim=True)
    mean1 = m * mean[0] + (1 - m) * mean[1]
    var1 = m * var[0] + (1 - m) * var[1]
    want = (x[1] - mean1) / torch.sqrt(var1 + layer.eps)
    want = want * layer.weight.view(C, 1, 1) + layer.bias.view(C, 1, 1)
    torch.testing.assert_close(y[1], want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y[0], F.instance_norm(x[:1], weight=layer.weight, bias=layer.bias)[0],
                               rtol=1e-5, atol=1e-5)


def test_stream_state_resets_between_blocks():
    layer = norms.InstanceNorm2d(C).eval()
    a, b = _x(1, C, 5, 5), _x(1, C, 5, 5)
    with torch.no_grad():
        with norms.stream_statistics(layer):
            layer(a)
        with norms.stream_statistics(layer):
            first = layer(b)
    torch.testing.assert_close(first, layer(b))


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_stream_state_carries_the_stream_across_blocks(name):
    net = _net(name)
    clip = _x(6, 3, 8, 8)
    with torch.no_grad():
        with norms.stream_statistics(net, momentum=0.8) as inner:
            one_block = [net(f[None]) for f in clip]
        state = norms.StreamState()
        per_call = []
        for f in clip:  # one block per frame, as a web UI's per-frame handler does
            with norms.stream_statistics(net, momentum=0.8, state=state) as used:
                assert used is state
                per_call.append(net(f[None]))
        default = [net(f[None]) for f in clip]
    assert isinstance(inner, norms.StreamState) and len(inner) == len(state) > 0
    for a, b in zip(one_block, per_call):
        assert torch.equal(a, b)  # exactly the same stream
    assert state.frames == 6
    assert (per_call[-1] - default[-1]).abs().max() > 1e-3  # it did smooth
    state.reset()
    assert len(state) == 0 and state.frames == 0
    with torch.no_grad():
        with norms.stream_statistics(net, momentum=0.8, state=state):
            again = net(clip[3:4])
        with norms.stream_statistics(net, momentum=0.8):
            fresh = net(clip[3:4])
    assert torch.equal(again, fresh)  # after reset: a first frame, as in a new block
    torch.testing.assert_close(again, default[3], rtol=1e-5, atol=1e-5)  # its own statistics
    assert all(getattr(m, "stats_source", None) is None for m in net.modules())


def test_stream_state_batched_equals_per_call_and_restarts_on_a_new_size():
    net = _net("gn")
    clip = _x(5, 3, 8, 8)
    state = norms.StreamState()
    with torch.no_grad():
        with norms.stream_statistics(net, momentum=0.6, state=state):
            first = net(clip[:2])
        with norms.stream_statistics(net, momentum=0.6, state=state):
            rest = net(clip[2:])
        with norms.stream_statistics(net, momentum=0.6):
            whole = net(clip)
    torch.testing.assert_close(torch.cat([first, rest]), whole, rtol=1e-6, atol=1e-6)
    assert state.frames == 5
    other = _net("ln")  # same module names, statistics of another size: a new stream
    with torch.no_grad(), norms.stream_statistics(other, momentum=0.6, state=state):
        y = other(clip[:1])
    torch.testing.assert_close(y, other(clip[:1]), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="StreamState"):
        with norms.stream_statistics(net, state={}):
            pass


@pytest.mark.parametrize("name", INSTANCE_NORMS)
def test_training_mode_is_refused(name):
    net = _net(name).train()
    for ctx in (norms.capture_statistics(net), norms.stream_statistics(net),
                norms.use_statistics(net, {})):
        with pytest.raises(ValueError, match="inference only.*model.eval"):
            with ctx:
                pass
    net.eval()
    with norms.stream_statistics(net):
        net.train()
        with pytest.raises(ValueError, match="inference only"):
            net(_x(2, 3, 6, 6))


def test_bank_batch_size_rules():
    net = _net("bin")
    x = _x(3, 3, 8, 8)
    with torch.no_grad():
        with norms.capture_statistics(net) as two:
            net(x[:2])
        with norms.use_statistics(net, two), pytest.raises(ValueError,
                                                           match="captured on 2 images.*has 3"):
            net(x)
        with norms.capture_statistics(net) as one:
            net(x[1:2])
        with norms.use_statistics(net, one):
            broadcast = net(x)  # one image's statistics on every image of the batch
            alone = net(x[2:3])
    torch.testing.assert_close(broadcast[2:3], alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(broadcast[1:2], net(x[1:2]), rtol=1e-5, atol=1e-5)


def test_bank_errors_and_no_nesting():
    net = _net("in")
    with pytest.raises(ValueError, match="has nothing for layer"):
        with norms.use_statistics(net, norms.StatisticsBank()):
            pass
    with norms.capture_statistics(net) as bank:
        net(_x(1, 3, 6, 6))
    assert set(bank) == {"1", "4"} and bank["1"].mean.shape == (1, C)
    with norms.stream_statistics(net), pytest.raises(ValueError, match="cannot be nested"):
        with norms.use_statistics(net, bank):
            pass
    with pytest.raises(ValueError, match="momentum"):
        with norms.stream_statistics(net, momentum=1.0):
            pass
    gn = _net("gn")
    with torch.no_grad(), norms.capture_statistics(gn) as gn_bank:
        gn(_x(1, 3, 6, 6))
    assert gn_bank["1"].mean.shape == (1, gn[1].num_groups)
    ln = _net("ln")  # same module names, one group instead of eight
    with norms.use_statistics(ln, gn_bank), pytest.raises(ValueError, match="different model"):
        ln(_x(1, 3, 6, 6))


def test_default_path_untouched_outside_blocks():
    net = _net("bin")
    assert all(getattr(m, "stats_source", None) is None for m in net.modules())
    with norms.capture_statistics(net):
        assert net[1].stats_source is not None
    assert all(getattr(m, "stats_source", None) is None for m in net.modules())
    assert "stats_source" not in net[1].__dict__
