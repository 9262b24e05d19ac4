"""``normlab ui``: start the web UI. Neither gradio nor torch is imported until the server starts,
so ``normlab --help`` stays fast and the rest of the command line works without gradio."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Start the Gradio web UI (stylize, classify, train both networks, norms "
                       "lab).", invoke_without_command=True, no_args_is_help=False,
                  subcommand_metavar="")


def make_config(allowed_dirs: list[Path] | None, device: str, runs_dir: Path | None = None,
                memory_budget_mb: int | None = None, reports_dir: Path | None = None):
    """The server settings (``ui.config.UIConfig``) from the command-line options; ``ValueError``
    for a missing folder or a budget below 64 MB."""
    from ui.config import UIConfig, default_allowed_dirs

    dirs = list(allowed_dirs) if allowed_dirs else default_allowed_dirs()
    for d in dirs:
        if not Path(d).expanduser().is_dir():
            raise ValueError(f"--allowed-dir {d} is not a folder")
    kw: dict = {"runs_dir": runs_dir} if runs_dir else {}
    if reports_dir is not None:
        if not Path(reports_dir).expanduser().is_dir():
            raise ValueError(f"--reports-dir {reports_dir} is not a folder")
        kw["reports_dir"] = reports_dir
    if memory_budget_mb is not None:
        if memory_budget_mb < 64:
            raise ValueError(f"--memory-budget must be at least 64 (MB), got {memory_budget_mb}")
        kw["memory_budget_mb"] = memory_budget_mb
    return UIConfig(allowed_dirs=dirs, device=device, **kw)


@app.callback(invoke_without_command=True)
def serve(ctx: typer.Context,
          host: str = typer.Option("127.0.0.1", metavar="HOST", help="Interface to bind; 0.0.0.0 "
                                   "exposes the UI to your network."),
          port: Optional[int] = typer.Option(None, metavar="PORT", help="Port (default: "
                                             "gradio's, 7860 or the next free one)."),
          share: bool = typer.Option(False, "--share", help="Also open a temporary public "
                                     "gradio.live link."),
          allowed_dir: Optional[list[Path]] = typer.Option(
              None, "--allowed-dir", metavar="DIR", help="A server folder whose image folders "
              "and datasets (found at any depth) users may pick for style or classifier "
              "training (repeatable). Default: the bundled samples and the ../shared/data "
              "folders when present."),
          runs_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Where UI-trained "
                                                  "models go (default runs/ui)."),
          reports_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="The "
                                                     "Reports tab's folder (`normlab reproduce "
                                                     "--out`'s parent; default: the repository's "
                                                     "reports/)."),
          memory_budget: Optional[int] = typer.Option(
              None, "--memory-budget", metavar="MB", help="Memory one stylize request may use "
              "(default 2048); larger images are processed in tiles or refused with a message."),
          device: Optional[str] = typer.Option(None, metavar="DEVICE", help="auto, cpu, cuda[:N] "
                                               "or mps (default: the global --device)."),
          auth: Optional[str] = typer.Option(None, "--auth", metavar="USER:PASSWORD",
                                             envvar="NORMLAB_UI_AUTH", help="Require this sign-in "
                                             "(or set NORMLAB_UI_AUTH, kept out of the process "
                                             "list); a signed-in operator may cancel any "
                                             "training, an anonymous visitor only its own.")) -> None:
    """Start the web UI on http://HOST:PORT (127.0.0.1 by default)."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.devices import resolve_device

    login = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth must be USER:PASSWORD with both parts non-empty")
        login = (user, password)
    device = device or (ctx.obj or {}).get("device", "auto")
    resolve_device(device)  # fail early, with one line, for an unavailable device
    cfg = make_config(allowed_dir, device, runs_dir, memory_budget, reports_dir)
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
    launch(cfg, host=host, port=port, share=share, **({"auth": login} if login else {}))
