"""normlab command line: ``normlab <norms|stylize|classify|ui> ...`` (or ``python main.py ...``).

A thin layer: every command calls the same library functions the web UI calls.
"""
from __future__ import annotations

import os
import sys
from enum import Enum

import typer
import typer.core

try:  # typer ≥ 0.2x vendors click; older releases use the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

import cli.classify
import cli.norms
import cli.reproduce
import cli.stylize
import cli.ui
from engine.devices import DEVICE_CHOICES


class _Group(typer.core.TyperGroup):
    """Root command group: a user error becomes one line on stderr and exit code 2, never a
    traceback (``NORMLAB_DEBUG=1`` shows it)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 - the whole point: no traceback for users
            if os.environ.get("NORMLAB_DEBUG"):
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if len(msg) > 600:  # a user's 10 kB value is never echoed whole
                msg = msg[:600] + f"… ({len(msg)} characters)"
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2)


# typer 0.29's rich help prints a "<bool>" type for on/off flags (--amp/--no-amp <bool>); a flag
# takes no value, so show none.
_display_type_rich = getattr(typer.core.TyperOption, "display_type_rich", None)
if _display_type_rich is not None:
    def _flag_type(self, ctx):
        return None if getattr(self, "is_flag", False) else _display_type_rich(self, ctx)

    typer.core.TyperOption.display_type_rich = _flag_type


Device = Enum("Device", {d: d for d in DEVICE_CHOICES}, type=str)

app = typer.Typer(
    cls=_Group,
    help="normlab: train, run and compare normalization layers (BN, IN, BN+IN, BIN, IBN) in "
         "style-transfer and classification CNNs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context,
          device: Device = typer.Option("auto", help="Default device for every command: auto "
                                        "picks cuda, then mps, then cpu.")) -> None:
    ctx.obj = {"device": device.value}


def _resnet20(norm: str):
    import classify

    return classify.create_model("resnet20", num_classes=10, norm=norm)


app.add_typer(cli.norms.make_app(step_model=_resnet20), name="norms")
app.add_typer(cli.stylize.app, name="stylize")
app.add_typer(cli.classify.app, name="classify")
app.add_typer(cli.reproduce.app, name="reproduce")
app.add_typer(cli.ui.app, name="ui")

if __name__ == "__main__":
    sys.exit(app())
