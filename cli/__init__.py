"""normlab's command line faces: one typer sub-app per package (``norms``, ``stylize``,
``classify``, ``reproduce``, ``ui``), joined by ``main.py``. Every command is a few lines over a
library function."""
from __future__ import annotations

import os


def override_list(value: str | None) -> list[str]:
    """``--override lr,epochs`` → ``["lr", "epochs"]`` (flag spellings accepted)."""
    return [v.strip().lstrip("-").replace("-", "_") for v in (value or "").split(",") if v.strip()]


def is_main_process() -> bool:
    """False on every torchrun process but rank 0 (which alone reports what was written)."""
    return int(os.environ.get("RANK", "0")) == 0


def model_file(spec: str | os.PathLike | None):
    """The file a ``--model`` / model argument reads: a shipped name's file under ``weights/``,
    the file of ``ARCH:FILE.pth``, or the path itself (for ``engine.io.check_output``'s inputs)."""
    from pathlib import Path

    if spec is None:
        return None
    s = str(spec)
    import weights

    if s in weights.manifest():
        try:
            return weights.path(s)
        except ValueError:
            return None
    if ":" in s and not Path(s).exists():
        return Path(s.split(":", 1)[1])
    return Path(s)
