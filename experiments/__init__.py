"""normlab.experiments: what composes both pipelines — style-shift robustness of classifiers
(a stylize model as an appearance shift for classify) and the papers' reproductions.

Importing this package registers the ``style:MODEL`` shift with ``classify.shift``.
"""
from .style_shift import render_style_shift

__all__ = ["render_style_shift"]
