"""Typer options generated from a config dataclass (``engine.config``): the dataclass owns each
option's name, type, default and help; a command declares only what the command line spells
differently (flag names) and the few options it parses itself.

    @app.command("train")
    @config_options(TrainConfig, skip={"device"}, decls={"overwrite": ("--overwrite",)})
    def train_cmd(ctx: typer.Context, device: Optional[str] = typer.Option(None),
                  given: Given = GIVEN) -> None:
        cfg = TrainConfig(**{**given.values, "device": given.pick("device", device) or "auto"})

adds ``--FIELD`` for every other field, ``--config FILE`` (JSON, TOML, YAML with PyYAML) and
repeatable ``--set KEY=VALUE``. Precedence: the dataclass defaults < the config file < ``--set``
< options given explicitly on the command line. A bad key or value is one ``ValueError`` line
(``main`` prints it and exits 2).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional

import typer

from engine import config as C

CONFIG_HELP = ("Read options from this file (.json, .toml, or .yaml with PyYAML): a table of "
               "option = value, e.g. a run's config.json; options given here override it.")
SET_HELP = ("Set any option as KEY=VALUE (repeatable; dashes or underscores), e.g. --set lr=0.01 "
            "--set amp=auto; lists comma-separated, none for no value. Overrides --config; an "
            "explicit --OPTION overrides --set.")

_CONFIG_PARAM, _SET_PARAM = "config_file", "set_values"


class Given:
    """What the user asked for: ``values`` (field → value, from --config, --set and the
    generated options given explicitly, merged by precedence) and ``explicit`` (those fields,
    plus the command's own options that map to fields and were given: what ``--resume`` checks
    against the checkpoint)."""

    def __init__(self, ctx: typer.Context, values: dict[str, Any]) -> None:
        self.ctx, self.values, self.explicit = ctx, dict(values), set(values)

    def pick(self, field: str, value: Any, param: str | None = None) -> Any:
        """A field the command declares itself (``param``, default the field's name): ``value``
        when it was given on the command line, else the --config/--set value, else None."""
        if given_on_command_line(self.ctx, param or field):
            self.explicit.add(field)
            return value
        return self.values.get(field)


GIVEN: Any = Given  # the default that marks a command's ``Given`` parameter


def given_on_command_line(ctx: typer.Context, param: str) -> bool:
    """Whether the user gave ``param`` (on the command line or through its environment variable)
    rather than leaving its default."""
    src = ctx.get_parameter_source(param)  # typer may vendor click: compare by name
    return getattr(src, "name", "") in ("COMMANDLINE", "ENVIRONMENT")


def _plain(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of a field type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), \
            type(None) in typing.get_args(tp)
    return tp, False


def _param(f: dataclasses.Field, tp: Any, decls: tuple[str, ...]) -> inspect.Parameter | None:
    """The typer parameter for field ``f`` of type ``tp`` (None: reachable by --set/--config
    only, e.g. a JSON object)."""
    default = C.default(f)
    help_text = C.help_text(f)
    base, optional = _plain(tp)
    origin = typing.get_origin(base)
    if set(typing.get_args(base)) == {bool, str}:  # amp: --amp/--no-amp; auto when not given
        ann, opt = Optional[bool], typer.Option(None, *decls, show_default=False,
                                                help=f"{help_text} (default: {default})")
    elif origin in (list, tuple):  # comma-separated on the command line
        shown = ",".join(map(str, default)) if default else "none"
        ann, opt = Optional[str], typer.Option(None, *decls, show_default=False,
                                               help=f"{help_text} (default: {shown})",
                                               metavar="A,B,...")
    elif base in (bool, int, float, str):
        choices = f.metadata.get(C.CHOICES)
        if choices and base is str:
            enum = Enum(f.name.title().replace("_", ""), {c: c for c in choices}, type=str)
            ann = Optional[enum] if optional else enum
        else:
            ann = Optional[base] if optional else base
        opt = typer.Option(default, *decls, help=help_text,
                           show_default=default not in ("", None))
    else:
        return None
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)


def config_options(config_cls: type, *, skip: Iterable[str] = (),
                   decls: dict[str, tuple[str, ...]] | None = None) -> Callable:
    """Decorator (below ``@app.command``): adds an option for every field of ``config_cls``
    except ``skip`` (those the command declares itself), ``--config FILE`` and ``--set
    KEY=VALUE``; the command's parameter whose default is ``GIVEN`` receives a ``Given``."""
    skip, decls = set(skip), decls or {}

    def wrap(fn: Callable) -> Callable:
        own = inspect.signature(fn, eval_str=True).parameters
        given_name = next((n for n, p in own.items() if p.default is GIVEN), None)
        ctx_name = next(iter(own), None)
        if given_name is None or ctx_name is None or own[ctx_name].annotation is not typer.Context:
            raise TypeError(f"{fn.__name__}: needs a first parameter `ctx: typer.Context` and a "
                            "`given: Given = GIVEN` parameter")
        types_ = C.field_types(config_cls)
        generated: dict[str, inspect.Parameter] = {}
        for f in C.option_fields(config_cls):
            if f.name in skip or f.name in own:
                continue
            p = _param(f, types_[f.name], decls.get(f.name, ()))
            if p is not None:
                generated[f.name] = p
        extra = [
            inspect.Parameter(_CONFIG_PARAM, inspect.Parameter.KEYWORD_ONLY,
                              annotation=Optional[Path],
                              default=typer.Option(None, "--config", help=CONFIG_HELP,
                                                   metavar="FILE")),
            inspect.Parameter(_SET_PARAM, inspect.Parameter.KEYWORD_ONLY,
                              annotation=Optional[List[str]],
                              default=typer.Option(None, "--set", help=SET_HELP,
                                                   metavar="KEY=VALUE")),
        ]
        mine = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.items()
                if n != given_name]
        params = mine[:1] + list(generated.values()) + mine[1:] + extra  # ctx first

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            ctx = kw[ctx_name]
            layers: list[tuple[str, dict[str, Any]]] = []
            path = kw.pop(_CONFIG_PARAM)
            if path is not None:
                layers.append((f"--config {path}", C.load_file(path)))
            sets = kw.pop(_SET_PARAM)
            if sets:
                layers.append(("--set", C.parse_set(sets)))
            flags = {}
            for name in generated:
                value = kw.pop(name)
                if given_on_command_line(ctx, name):
                    flags[name] = value.value if isinstance(value, Enum) else value
            layers.append(("command line", flags))
            kw[given_name] = Given(ctx, C.layered(config_cls, *layers))
            return fn(**kw)

        command.__signature__ = inspect.Signature(params)  # what typer reads
        command.__annotations__ = {}  # the signature's types are resolved already
        return command

    return wrap
