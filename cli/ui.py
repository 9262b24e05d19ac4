"""``normlab ui``: start the web UI. gradio is imported only when the server starts, so the rest of
the command line works where gradio is not installed."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ui.config import UIConfig, default_allowed_dirs

app = typer.Typer(help="Start the Gradio web UI (stylize, classify, train both networks, norms "
                       "lab).", invoke_without_command=True, no_args_is_help=False)


def make_config(allowed_dirs: list[Path] | None, device: str, runs_dir: Path | None = None
                ) -> UIConfig:
    """The server settings from the command-line options; ``ValueError`` for a missing folder."""
    dirs = list(allowed_dirs) if allowed_dirs else default_allowed_dirs()
    for d in dirs:
        if not Path(d).expanduser().is_dir():
            raise ValueError(f"--allowed-dir {d} is not a folder")
    kw = {"runs_dir": runs_dir} if runs_dir else {}
    return UIConfig(allowed_dirs=dirs, device=device, **kw)


@app.callback(invoke_without_command=True)
def serve(ctx: typer.Context,
          host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the UI to "
                                   "your network."),
          port: Optional[int] = typer.Option(None, help="Port (default: gradio's, 7860 or the "
                                             "next free one)."),
          share: bool = typer.Option(False, help="Also open a temporary public gradio.live link."),
          allowed_dir: Optional[list[Path]] = typer.Option(
              None, "--allowed-dir", help="A server folder users may pick as style-training "
              "content or classifier dataset (repeatable). Default: the bundled samples and the "
              "../shared/data folders when present."),
          runs_dir: Optional[Path] = typer.Option(None, help="Where UI-trained models go "
                                                  "(default runs/ui)."),
          device: Optional[str] = typer.Option(None, help="auto, cpu, cuda[:N] or mps (default: "
                                               "the global --device).")) -> None:
    """Start the web UI on http://HOST:PORT (127.0.0.1 by default)."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.devices import resolve_device

    device = device or (ctx.obj or {}).get("device", "auto")
    resolve_device(device)  # fail early, with one line, for an unavailable device
    cfg = make_config(allowed_dir, device, runs_dir)
    import importlib.util

    if importlib.util.find_spec("gradio") is None:  # only ui/ imports gradio, and only now
        raise ValueError("the web UI needs gradio: pip install 'gradio>=6'")
    from PIL import Image

    from ui import launch

    # gradio decodes uploads with PIL: in the server process, refuse pixel bombs while decoding
    # (PIL raises above twice this); handlers refuse anything above max_pixels with a message
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels

    typer.echo(f"normlab ui: device {resolve_device(device)}; allowed folders: "
               + (", ".join(str(d) for d in cfg.allowed_dirs) or "none"))
    launch(cfg, host=host, port=port, share=share)
