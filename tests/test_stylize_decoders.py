"""The shipped decoders of the arbitrary-style path: they load, invert the real encoder as well
as their manifest says, and stylize a held-out photo with a painting no model trained on."""
from __future__ import annotations

import pytest
import torch

import weights
from stylize.arbitrary import LEVELS, load_decoder, shipped_decoder_path
from tests.conftest import need_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("level", LEVELS)
def test_shipped_decoder_matches_its_manifest_entry(level):
    entry = weights.manifest()[f"decoder_{level}"]
    assert entry["kind"] == "decoder" and entry["level"] == level
    assert weights.path(f"decoder_{level}") == shipped_decoder_path(level)
    dec, meta = load_decoder(shipped_decoder_path(level))
    assert dec.level == level
    assert abs(meta["final_losses"]["heldout_psnr"] - entry["heldout_psnr"]) < 0.05


@pytest.fixture(scope="module")
def encoder():
    from stylize.losses import load_vgg_encoder

    return load_vgg_encoder(need_shared("weights", "vgg19_normalised_relu3_1.pth"))


@pytest.mark.parametrize("level", LEVELS)
def test_shipped_decoder_reconstructs_held_out_photos(encoder, level):
    from stylize.decoder import Photos, psnr
    from stylize.photos import content_split

    held = content_split(need_shared("data", "content"))["heldout"][:4]
    dec, _ = load_decoder(shipped_decoder_path(level))
    vals = []
    with torch.no_grad():
        for img in Photos(held, 256, 16).images:
            h, w = (d // 4 * 4 for d in img.shape[-2:])
            x = img[:, :h, :w].unsqueeze(0).float()
            vals.append(psnr(dec(encoder(x, [level])[level]), x))
    floor = weights.manifest()[f"decoder_{level}"]["heldout_psnr"] - 3.0  # 4 photos, not 56
    assert sum(vals) / len(vals) > max(floor, 18.0), vals


@pytest.mark.parametrize("method", ["wct", "adain"])
def test_unseen_painting_moves_the_photo_toward_its_style(encoder, method):
    """S = 1 − L_style(out)/L_style(photo) well above a colour grade's on a held-out photo."""
    from stylize import score as sc

    photo = need_shared("data", "content", "adain_sailboat.jpg")
    painting = need_shared("data", "styles", "the_scream.jpg")
    res = sc.score([method], [painting], [photo], size=256, style_size=256, encoder=encoder,
                   bar=False)
    cell = res.cells[0]
    assert cell["S"] > 0.6 and cell["C"] < 3.0, (cell["S"], cell["C"])
