"""normlab.ui — the Gradio playground (``normlab ui``): stylize, classify, train both networks and
look inside the norm layers, in the browser.

Importing this package does not import gradio; ``build_app`` / ``launch`` do.
"""
from __future__ import annotations

from .config import UIConfig

__all__ = ["UIConfig", "build_app", "launch"]


def build_app(cfg: UIConfig | None = None):
    """The ``gr.Blocks`` app (see ``ui.app.build_app``)."""
    from .app import build_app as _build

    return _build(cfg)


def launch(cfg: UIConfig | None = None, **kwargs):
    """Build and serve the app (see ``ui.app.launch``)."""
    from .app import launch as _launch

    return _launch(cfg, **kwargs)
