"""Conditional norms (one γ, β, ρ per style; Dumoulin et al. ICLR 2017) — issue 11."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import norms

C, S = 6, 3


def _cond(name: str) -> norms.ConditionalNorm:
    """A conditional layer whose rows all differ (so a wrong row cannot pass)."""
    torch.manual_seed(1)
    layer = norms.get_norm_layer(name, num_styles=S)(C)
    with torch.no_grad():
        for pname, p in layer.named_parameters():
            if pname == "gate":
                p.uniform_(0, 1)
            elif pname in ("weight", "bias"):
                p.normal_(1.0 if pname == "weight" else 0.0, 0.5)
            else:
                p.normal_(0.0, 1.0)  # SN's mixture weights (shared)
    return layer


def _plain_with(name: str, cond: norms.ConditionalNorm, rows: dict[str, torch.Tensor]) -> nn.Module:
    """The plain layer with ``rows`` (C-wide γ, β, ρ) and the conditional layer's shared state."""
    plain = norms.create_norm(name, C)
    shared = {k.removeprefix("norm."): v for k, v in cond.state_dict().items()
              if k.startswith("norm.")}
    with torch.no_grad():
        if name == "ibn":
            for k in ("weight", "bias"):
                getattr(plain.IN, k).copy_(rows[k][:plain.half])
                getattr(plain.BN, k).copy_(rows[k][plain.half:])
        else:
            for k, v in rows.items():
                getattr(plain, k).copy_(v)
    missing, unexpected = plain.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.split(".")[-1] in ("weight", "bias", "gate") for k in missing)
    return plain


def _rows(cond, s):
    return {k: getattr(cond, k)[s].detach().clone() for k in cond.affine_names}


def _x(n=4):
    return torch.randn(n, C, 5, 6) * 2 + 1


@pytest.mark.parametrize("name", norms.NORM_NAMES)
@pytest.mark.parametrize("select", ["int", "indices"])
def test_one_style_equals_plain_layer_train_and_eval(name, select):
    cond = _cond(name)
    plain = _plain_with(name, cond, _rows(cond, 1))
    norms.set_style(cond, 1 if select == "int" else [1, 1, 1, 1])
    for step in range(2):  # training: outputs, input gradients, running statistics
        x = _x().requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y2 = cond(x), plain(x2)
        torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y)
        torch.testing.assert_close(torch.autograd.grad(y, x, g)[0],
                                   torch.autograd.grad(y2, x2, g)[0], rtol=1e-4, atol=1e-4)
    plain_sd = plain.state_dict()
    for k, v in cond.norm.state_dict().items():  # running statistics and shared parameters
        torch.testing.assert_close(v, plain_sd[k], rtol=1e-6, atol=1e-6, msg=k)
    cond.eval(), plain.eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(cond(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["in", "bin", "sn", "ibn", "bn"])
def test_parameter_gradients_match_plain_and_reach_only_selected_rows(name):
    cond = _cond(name)
    plain = _plain_with(name, cond, _rows(cond, 2))
    norms.set_style(cond, 2)
    x = _x()
    g = torch.randn_like(x)
    (cond(x) * g).sum().backward()
    (plain(x) * g).sum().backward()
    for k in cond.affine_names:
        grad = getattr(cond, k).grad
        assert grad[2].abs().sum() > 0
        assert torch.all(grad[:2] == 0), k  # other styles untouched
        if name != "ibn":
            torch.testing.assert_close(grad[2], getattr(plain, k).grad, rtol=1e-4, atol=1e-4)
    cond.zero_grad()
    norms.set_style(cond, torch.tensor([0, 2, 0, 2]))
    cond(x).square().sum().backward()
    assert torch.all(cond.weight.grad[1] == 0) and cond.weight.grad[0].abs().sum() > 0


@pytest.mark.parametrize("name", ["in", "bin", "gn"])
def test_blend_one_zero_is_the_pure_style(name):
    cond = _cond(name).eval()
    x = _x()
    with torch.no_grad():
        norms.set_style(cond, 2)
        pure = cond(x)
        norms.set_style(cond, [0.0, 0.0, 1.0])
        blended = cond(x)
        norms.set_style(cond, torch.tensor([[0.0, 0.0, 1.0]] * 4))
        per_sample = cond(x)
    torch.testing.assert_close(blended, pure, rtol=0, atol=1e-6)
    torch.testing.assert_close(per_sample, pure, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", norms.NORM_NAMES)
def test_blend_is_the_layer_with_convex_combined_parameters(name):
    cond = _cond(name)
    with norms.style(cond, 0):
        cond(_x())  # running statistics away from their initial values
    cond.eval()
    w = torch.tensor([0.3, 0.7, 0.0])
    mixed = {k: (w[:, None] * getattr(cond, k)).sum(0).detach() for k in cond.affine_names}
    plain = _plain_with(name, cond, mixed).eval()
    x = _x()
    with torch.no_grad(), norms.style(cond, w):
        torch.testing.assert_close(cond(x), plain(x), rtol=1e-5, atol=1e-5)
    # per image: image n blended with its own weights == image n alone with those weights
    ws = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [0.3, 0.7, 0.0]])
    with torch.no_grad():
        with norms.style(cond, ws):
            y = cond(x)
        for i in range(4):
            with norms.style(cond, ws[i]):
                torch.testing.assert_close(y[i:i + 1], cond(x[i:i + 1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", norms.NORM_NAMES)
def test_state_dict_round_trip(name):
    a = _cond(name)
    norms.set_style(a, 0)
    for _ in range(2):
        a(_x())
    sd = a.state_dict()
    assert sd["weight"].shape == (S, C) and sd["bias"].shape == (S, C)
    assert ("gate" in sd) == (name == "bin") and (name != "bin" or sd["gate"].shape == (S, C))
    b = norms.get_norm_layer(name, num_styles=S)(C)
    b.load_state_dict(sd, strict=True)
    a.eval(), b.eval()
    x = _x()
    with torch.no_grad():
        for s in range(S):
            norms.set_style(a, s), norms.set_style(b, s)
            assert torch.equal(a(x), b(x))


def _net(norm: str) -> nn.Module:
    f = norms.get_norm_layer(norm, num_styles=S)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), f(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), f(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_cbin_gates_are_clipped_and_grouped():
    model = _net("bin")
    assert [n for n, _ in norms.iter_gates(model)] == ["1.gate", "4.gate"]
    groups = {g["name"]: g for g in norms.param_groups(model, lr=1e3, weight_decay=1e-4)}
    assert {id(p) for p in groups["gates"]["params"]} == {id(model[1].gate), id(model[4].gate)}
    assert {id(p) for p in groups["decay"]["params"]} == {id(model[0].weight),
                                                         id(model[3].weight), id(model[8].weight)}
    opt = torch.optim.SGD(norms.param_groups(model, lr=1e3, weight_decay=0.0), lr=1e3)
    norms.attach_gate_clipping(opt, model)
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 4, (8,))
    for s in range(S):
        norms.set_style(model, s)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    gates = torch.cat([g.flatten() for _, g in norms.iter_gates(model)])
    assert gates.min() >= 0.0 and gates.max() <= 1.0 and (gates < 1.0).any()
    with torch.no_grad():
        model[1].gate.fill_(3.0)
    assert norms.clip_gates_(model) == 2 and model[1].gate.max().item() == 1.0


def test_gate_report_pools_every_style_row_of_conditional_bin():
    """A multi-style BIN network's ρ (styles × C per layer) reports, plots and averages like
    plain BIN's (the UI's model info and `gates` figures read it)."""
    model = _net("bin")
    with torch.no_grad():
        model[1].gate.copy_(torch.linspace(0, 1, model[1].gate.numel()).view_as(model[1].gate))
    rep = norms.gate_report(model)
    assert [L.values.shape for L in rep.layers] == [(g.numel(),) for _, g in norms.iter_gates(model)]
    assert rep.layers[0].mean == pytest.approx(0.5) and rep.layers[0].frac_in == pytest.approx(0.5, abs=0.1)
    assert torch.cat([L.values for L in rep.layers]).numel() == sum(
        g.numel() for _, g in norms.iter_gates(model))
    assert "| 0 |" in rep.to_markdown()
    rep.figure()


def test_norm_only_finetuning_changes_only_norm_parameters():
    model = _net("in")
    names = [n for n, _ in norms.named_norm_parameters(model)]
    assert names == ["1.weight", "1.bias", "4.weight", "4.bias"]
    plain_names = [n for n, _ in norms.named_norm_parameters(nn.Sequential(norms.create_norm(
        "sn", 4), norms.create_norm("ibn", 4)))]
    assert plain_names == ["0.weight", "0.bias", "0.mean_weight", "0.var_weight", "1.IN.weight",
                           "1.IN.bias", "1.BN.weight", "1.BN.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(norms.norm_parameters(model), lr=0.1)
    norms.set_style(model, 1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3, 6, 6)).square().mean().backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"1.weight", "1.bias", "4.weight", "4.bias"}
    assert torch.equal(before["1.weight"][0], after["1.weight"][0])  # only style 1's rows


def test_add_styles_initialises_with_the_mean_and_keeps_old_styles():
    model = _net("bin").eval()
    with torch.no_grad():
        for p in norms.norm_parameters(model):
            p.uniform_(0.1, 0.9)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        old = []
        for s in range(S):
            norms.set_style(model, s)
            old.append(model(x))
    assert norms.add_styles(model, 2) == S + 2 == norms.num_styles(model)
    assert model[1].gate.shape == (S + 2, 8)
    torch.testing.assert_close(model[1].weight[S], model[1].weight[:S].mean(0))
    torch.testing.assert_close(model[4].gate[S + 1], model[4].gate[:S].mean(0))
    with torch.no_grad():
        for s in range(S):
            norms.set_style(model, s)
            assert torch.equal(model(x), old[s])
    norms.add_styles(model, 1, init=0)
    assert torch.equal(model[1].bias[S + 2], model[1].bias[0])


def test_style_selection_errors_and_context():
    model = _net("in")
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match="no style selected.*set_style"):
        model(x)
    for bad, msg in [(3, "style 3 does not exist"), ([0, 5], "out of range"),
                     ([0.5, 0.5], "2 blend weights"), ([0.5, 0.6, 0.0], "sum to 1"),
                     ([-0.5, 1.5, 0.0], "≥ 0"), (True, "not a bool"), ("a", "must be an int")]:
        with pytest.raises(ValueError, match=msg):
            norms.set_style(model, bad)
    norms.set_style(model, [0, 1, 2])
    with pytest.raises(ValueError, match="3 entries .* batch has 2"):
        model(x)
    norms.set_style(model, 2)
    with norms.style(model, 0):
        assert model[1]._style == 0
    assert model[1]._style == 2
    with pytest.raises(ValueError, match="no conditional norm layers"):
        norms.set_style(nn.Sequential(norms.create_norm("in", 4)), 0)
    with pytest.raises(ValueError, match="unknown norm 'cxx'.*conditional.*cin"):
        norms.get_norm_layer("cxx")
    single = norms.get_norm_layer("cin")(4)  # one style needs no selection
    assert single.num_styles == 1 and single(torch.randn(1, 4, 3, 3)).shape == (1, 4, 3, 3)


def test_make_conditional_keeps_the_plain_network():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), norms.create_norm("bin", 8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), norms.create_norm("ibn", 8))
    plain(torch.randn(4, 3, 8, 8))
    plain.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = plain(x)
        norms.make_conditional(plain, 3)
        assert norms.num_styles(plain) == 3 and isinstance(plain[4], norms.ConditionalNorm)
        for s in range(3):
            norms.set_style(plain, s)
            torch.testing.assert_close(plain(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["in", "bin", "ibn"])
def test_statistics_sources_work_through_conditional_layers(name):
    model = _net(name)
    norms.set_style(model, 0)
    model(torch.randn(4, 3, 6, 6))  # running statistics
    model.eval()
    norms.set_style(model, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        ref = model[:5](x)
        with norms.capture_statistics(model) as bank:
            model[:5](x)
        with norms.use_statistics(model, bank):
            torch.testing.assert_close(model[:5](x), ref, rtol=1e-5, atol=1e-5)
    assert len(bank) == 2
