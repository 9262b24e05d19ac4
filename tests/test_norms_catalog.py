"""norms.catalog: one entry per norm, and each entry's claims hold for the layer it builds."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import norms

C, S = 6, 3
SPECS = list(norms.CATALOG.values())
IDS = [s.name for s in SPECS]


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, C, 5, 7) * 3 + 2


def _randomise(layer: nn.Module) -> nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.rand_like(p) if name.endswith("gate") else torch.randn_like(p) * 0.5 + 1)
    return layer


def test_catalog_is_keyed_by_name_and_lists_in_order():
    assert list(norms.CATALOG) == list(norms.NORM_NAMES) == [s.name for s in SPECS]
    assert set(norms.NORM_NAMES) == {"bn", "in", "bn_in", "bin", "ibn", "gn", "ln", "sn"}
    assert norms.CONDITIONAL_NORM_NAMES == tuple(s.conditional_name for s in SPECS
                                                 if s.conditional is not None)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_entry_builds_its_layer(spec):
    assert spec.description and re.search(r"arXiv:\d{4}\.\d{4,5}", spec.paper), spec.name
    layer = norms.create_norm(spec.name, C)
    assert type(layer) is spec.layer
    assert norms.get_norm_layer(spec.name) is spec.layer
    y = layer(_x())
    assert y.shape == (4, C, 5, 7) and torch.isfinite(y).all()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_conditional_variant_exists_where_declared(spec):
    if spec.conditional is None:
        with pytest.raises(ValueError, match="no conditional"):
            norms.get_norm_layer(spec.name, num_styles=S)
        return
    layer = norms.get_norm_layer(spec.name, num_styles=S)(C)
    assert type(layer) is spec.conditional and isinstance(layer, norms.ConditionalNorm)
    assert layer.num_styles == S and isinstance(layer.norm, spec.layer)
    # the name model files store ("cbin") means the same class, one style unless told
    cname = norms.conditional_name(spec.name)
    assert cname == spec.conditional_name and norms.conditional_name(cname) == cname
    assert norms.is_conditional(cname) and not norms.is_conditional(spec.name)
    assert norms.plain_name(cname) == norms.plain_name(spec.name) == spec.name
    assert norms.norm_spec(cname) is spec
    one = norms.get_norm_layer(cname)(C)
    assert type(one) is spec.conditional and one.num_styles == 1
    assert norms.get_norm_layer(cname, num_styles=S)(C).num_styles == S
    norms.set_style(layer, 1)
    assert layer(_x()).shape == (4, C, 5, 7)


def _depends_on_other_items(layer: nn.Module) -> bool:
    """Does item 0's output change when the other items of the batch change (train mode)?"""
    layer.train()
    torch.manual_seed(0)
    x = _x()
    x2 = x.clone()
    x2[1:] = x2[1:] * 4 - 7
    with torch.no_grad():
        return not torch.allclose(layer(x)[0], layer(x2)[0], atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_batch_statistics_flag_matches_behaviour(spec):
    assert _depends_on_other_items(_randomise(norms.create_norm(spec.name, C))) == spec.batch_stats
    assert norms.uses_batch_stats(spec.name) == spec.batch_stats
    if spec.conditional is not None:
        cond = _randomise(norms.get_norm_layer(spec.name, num_styles=S)(C))
        norms.set_style(cond, 2)
        assert _depends_on_other_items(cond) == spec.batch_stats
        assert norms.uses_batch_stats(spec.conditional_name) == spec.batch_stats


def _has_rho(layer: nn.Module) -> bool:
    return any(n.split(".")[-1] == "gate" for n, _ in layer.named_parameters())


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gated_iff_it_has_rho(spec):
    layer = norms.create_norm(spec.name, C)
    assert _has_rho(layer) == spec.gated
    assert bool(list(norms.iter_gates(nn.Sequential(layer)))) == spec.gated
    if spec.conditional is not None:
        cond = norms.get_norm_layer(spec.name, num_styles=S)(C)
        assert _has_rho(cond) == spec.gated
        gates = list(norms.iter_gates(nn.Sequential(cond)))
        assert bool(gates) == spec.gated and all(g.shape == (S, C) for _, g in gates)


@pytest.mark.parametrize("bad", ["batchy", "cxx", "c", "", "ibn_a", "cibn_b"])
def test_unknown_names_fail_listing_the_known_names(bad):
    for call in (lambda: norms.get_norm_layer(bad), lambda: norms.norm_spec(bad),
                 lambda: norms.create_norm(bad, C, num_styles=2)):
        with pytest.raises(ValueError, match="unknown norm") as err:
            call()
        msg = str(err.value)
        assert all(n in msg for n in norms.NORM_NAMES + norms.CONDITIONAL_NORM_NAMES), msg


def test_check_names_names_every_unknown_one():
    assert norms.check_names(["bin", "BN+IN"]) == ["bin", "BN+IN"]
    with pytest.raises(ValueError, match=r"unknown norm\(s\) zz, cbin; known: bn, in"):
        norms.check_names(["zz", "bin", "cbin"])
    assert norms.check_names(["cbin"], conditional=True) == ["cbin"]


def test_spelling_variants_resolve():
    assert norms.get_norm_layer("BIN") is norms.BatchInstanceNorm2d
    assert norms.get_norm_layer("bn+in") is norms.BNIN2d and norms.plain_name("CBN-IN") == "bn_in"


def test_num_styles_wraps_a_callable():
    f = norms.get_norm_layer(nn.BatchNorm2d, num_styles=S, momentum=0.5)
    layer = f(C)
    assert isinstance(layer, norms.ConditionalNorm) and layer.num_styles == S
    assert layer.norm.momentum == 0.5 and layer.weight.shape == (S, C)


def test_ln_is_group_norm_with_one_group_not_a_per_position_layer_norm():
    """"ln" normalises each image over C×H×W (timm's GroupNorm1), not over C at each position
    (timm's LayerNorm2d)."""
    layer = norms.create_norm("ln", C)
    assert isinstance(layer, norms.GroupNorm1) and layer.num_groups == 1
    x = _x()
    with torch.no_grad():
        y = layer(x)
        over_chw = F.layer_norm(x, x.shape[1:], eps=layer.eps)
        per_position = F.layer_norm(x.permute(0, 2, 3, 1), (C,), eps=layer.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, over_chw, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(y, per_position, atol=1e-2)
    assert not hasattr(norms, "LayerNorm2d")  # the misleading name is gone, not aliased
