"""The UI's any-painting path (WCT/AdaIN with the shipped decoders) and the optimiser button."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import need_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from ui.config import UIConfig

    vgg = need_shared("weights", "vgg19_normalised_relu3_1.pth")
    tmp = tmp_path_factory.mktemp("ui")
    return UIConfig(vgg_weights=vgg, output_dir=tmp / "out", allowed_dirs=[tmp, vgg.parent.parent])


def _img(path: Path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def test_painting_result_has_the_photo_size_and_takes_the_painting_colours(cfg, tmp_path):
    from ui import handlers as H

    photo = need_shared("data", "content", "adain_avril.jpg")
    painting = need_shared("data", "styles", "the_scream.jpg")
    out = H.stylize_painting(cfg, str(photo), str(painting), method="wct", max_size=256)
    src = Image.open(photo)
    assert out.size == src.size
    # the output moves away from the photo toward the painting's palette
    def mean(img):
        import numpy as np
        return list(np.asarray(img.convert("RGB").resize((32, 32)), dtype=float).reshape(-1, 3).mean(0))
    m_out, m_photo, m_paint = mean(out), mean(src), mean(Image.open(painting))
    d = lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5  # noqa: E731
    assert d(m_out, m_paint) < d(m_photo, m_paint)
    path = H.save_result(cfg, out, str(photo), str(painting), "wct")
    assert Path(path).name == "adain_avril-the_scream-wct.png"


def test_painting_errors_are_one_line(cfg, tmp_path):
    from ui import handlers as H

    photo = _img(tmp_path / "p.png", (64, 48), (200, 100, 50))
    with pytest.raises(ValueError, match="upload a painting"):
        H.stylize_painting(cfg, photo, None)
    with pytest.raises(ValueError, match="method"):
        H.stylize_painting(cfg, photo, photo, method="gatys")
    with pytest.raises(ValueError, match="iterations"):
        H.optimize_painting(cfg, photo, photo, iterations="ten")


def test_optimise_button_stops_when_asked(cfg, tmp_path):
    from ui import handlers as H

    photo = _img(tmp_path / "p.png", (64, 48), (200, 100, 50))
    paint = _img(tmp_path / "s.png", (64, 64), (20, 40, 220))
    calls = []
    out = H.optimize_painting(cfg, photo, paint, size=64, iterations="20,20,20",
                              should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert out.size == (64, 48)
    assert len(calls) == 3  # two 10-iteration chunks ran, the third check stopped it
