"""AdaIN and WCT (norms.transfer) against their papers' equations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import norms
from norms import transfer


def _feats(n=2, c=8, h=20, w=24, seed=0, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g)  # correlated channels
    x = torch.randn(n, c, h * w, generator=g)
    return ((mix @ x) * scale + shift).reshape(n, c, h, w)


def test_adain_output_carries_the_style_mean_and_std():
    content, style = _feats(seed=1), _feats(n=1, seed=2, scale=3.0, shift=5.0)
    out = norms.adain(content, style, eps=0.0)
    s = transfer.mean_std(style, eps=0.0)
    o = transfer.mean_std(out, eps=0.0)
    torch.testing.assert_close(o.mean, s.mean.expand_as(o.mean), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(o.std, s.std.expand_as(o.std), atol=1e-4, rtol=1e-4)


def test_adain_is_eq_8_of_huang_and_belongie():
    content, style = _feats(seed=3), _feats(n=2, seed=4, scale=2.0)
    eps = 1e-5
    mc, vc = content.mean((2, 3), keepdim=True), content.var((2, 3), keepdim=True, unbiased=False)
    ms, vs = style.mean((2, 3), keepdim=True), style.var((2, 3), keepdim=True, unbiased=False)
    ref = (vs + eps).sqrt() * (content - mc) / (vc + eps).sqrt() + ms
    torch.testing.assert_close(norms.adain(content, style, eps), ref, atol=1e-5, rtol=1e-5)


def test_adain_with_fixed_content_statistics_uses_them():
    content, style = _feats(seed=5), _feats(n=1, seed=6)
    thumb = transfer.mean_std(content[:, :, ::2, ::2])
    a = norms.adain(content, style, content_stats=thumb)
    b = norms.adain(content, style)
    assert not torch.allclose(a, b)
    ref = (content - thumb.mean) / thumb.std * transfer.mean_std(style).std + transfer.mean_std(style).mean
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)


def test_wct_output_carries_the_style_covariance_and_mean():
    content, style = _feats(seed=7), _feats(n=1, seed=8, scale=2.0, shift=1.0)
    out = norms.wct(content.double(), style.double(), eps=1e-10)
    s, o = transfer.mean_cov(style), transfer.mean_cov(out)
    for i in range(out.shape[0]):
        torch.testing.assert_close(o.cov[i], s.cov[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(o.mean[i], s.mean[0], atol=1e-8, rtol=1e-8)


def test_wct_matches_eq_1_to_3_of_li_et_al_in_numpy():
    content, style = _feats(n=1, c=6, seed=9), _feats(n=1, c=6, seed=10, scale=1.5)
    eps = 1e-5
    fc = content[0].reshape(6, -1).double().numpy()
    fs = style[0].reshape(6, -1).double().numpy()
    mc, ms = fc.mean(1, keepdims=True), fs.mean(1, keepdims=True)
    cc = (fc - mc) @ (fc - mc).T / (fc.shape[1] - 1) + eps * np.eye(6)
    cs = (fs - ms) @ (fs - ms).T / (fs.shape[1] - 1) + eps * np.eye(6)
    dc, ec = np.linalg.eigh(cc)
    ds, es = np.linalg.eigh(cs)
    white = ec @ np.diag(dc ** -0.5) @ ec.T @ (fc - mc)  # eq. 1
    ref = es @ np.diag(ds ** 0.5) @ es.T @ white + ms  # eq. 2 and the mean
    out = norms.wct(content, style, eps=eps)[0].reshape(6, -1).double().numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_whitened_features_have_identity_covariance():
    content = _feats(seed=11)
    white = transfer.whiten(content.double(), eps=1e-12)  # N×C×HW
    n = white.shape[-1]
    cov = white @ white.transpose(1, 2) / (n - 1)
    torch.testing.assert_close(cov, torch.eye(8, dtype=cov.dtype).expand_as(cov), atol=1e-6, rtol=1e-6)


def test_wct_computes_in_float64_and_returns_the_input_dtype():
    content, style = _feats(seed=12).bfloat16(), _feats(n=1, seed=13)
    assert transfer.mean_cov(style).cov.dtype == torch.float64
    assert norms.wct(content, style).dtype == torch.bfloat16
    assert norms.adain(content, style).dtype == torch.bfloat16


@pytest.mark.parametrize("fn", [norms.adain, norms.wct])
def test_channel_mismatch_and_bad_shapes_are_one_line_errors(fn):
    with pytest.raises(ValueError, match="channels"):
        fn(_feats(c=8), _feats(c=4))
    with pytest.raises(ValueError, match="N×C×H×W"):
        fn(torch.zeros(8, 10), _feats())


def test_blend_normalises_weights_and_rejects_bad_ones():
    a, b = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    torch.testing.assert_close(transfer.blend([a, b], [1, 3]), torch.full_like(a, 0.75))
    with pytest.raises(ValueError):
        transfer.blend([a, b], [0, 0])
    with pytest.raises(ValueError):
        transfer.blend([a, b], [1])
