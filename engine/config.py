"""Config dataclasses as the one owner of every training option: its name, type and default (the
field) and its help text (``field(..., metadata={"help": ...})``). The faces derive from them:
the CLI generates its options (``cli.config_options``), the UI reads its defaults, and a run can
be described by a file (``--config FILE``, as in timm) and ``key=value`` pairs (``--set``, as in
nanoGPT), with the precedence defaults < config file < options given explicitly.

Torch-free (the CLI builds its ``--help`` from these without loading torch). Each function raises
a one-line ``ValueError`` naming the key and what it accepts.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

HELP = "help"  # field metadata key: the option's help text
CHOICES = "choices"  # field metadata key: the values a str option accepts (shown as a choice)

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"none", "null", ""}


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its help text: ``lr: float = option(1e-3, "Adam learning rate.")``
    (a list or dict default gets a fresh copy per instance)."""
    meta = {HELP: help, **metadata}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of config dataclass ``cls`` that are options (every ``init`` field)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def field_types(cls: type) -> dict[str, Any]:
    """Field name → its resolved type (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in option_fields(cls)}


def field(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of config dataclass ``cls``."""
    return next(f for f in option_fields(cls) if f.name == name)


def default(f: dataclasses.Field) -> Any:
    """The default value of field ``f`` (a fresh one for a ``default_factory``)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"option {f.name!r} has no default")


def defaults(cls: type) -> dict[str, Any]:
    """Field name → default value of every option of ``cls``."""
    return {f.name: default(f) for f in option_fields(cls)}


def help_text(f: dataclasses.Field) -> str:
    """The help text of field ``f`` (empty when it has none)."""
    return str(f.metadata.get(HELP, ""))


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def describe(tp: Any) -> str:
    """A type as a person reads it: ``whole number``, ``number``, ``list of whole numbers``…"""
    if _is_union(tp):
        parts = [describe(a) for a in _args(tp) if a is not type(None)]
        text = " or ".join(parts)
        return text + (" or none" if type(None) in _args(tp) else "")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = _args(tp)[0] if _args(tp) else str
        return f"comma-separated list of {describe(inner)}s"
    if origin is dict or tp is dict:
        return "JSON object"
    return {bool: "true/false", int: "whole number", float: "number", str: "text"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` (a string from the command line, or a JSON/TOML value) as type ``tp``; raises
    ``ValueError`` (with no message) when it does not fit."""
    if tp is Any:
        return value
    if _is_union(tp):
        members = _args(tp)
        if type(None) in members and (value is None or
                                      (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        # a parsed (JSON/TOML) value that already has one of the member types is kept as it is;
        # text is tried against the members in order (bool | str: "true" is True, "auto" text)
        for m in members:
            if m not in (type(None), str) and typing.get_origin(m) is None and type(value) is m:
                return value
        if isinstance(value, str) and value.strip().startswith("["):  # JSON list text
            members = sorted(members, key=lambda m: typing.get_origin(m) not in (list, tuple))
        for m in members:
            if m is type(None):
                continue
            try:
                return _coerce(m, value)
            except ValueError:
                continue
        raise ValueError
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = _args(tp)[0] if _args(tp) else str
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError from None
            else:
                items = [v.strip() for v in text.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValueError
        out = [_coerce(inner, v) for v in items]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError from None
        if not isinstance(value, dict):
            raise ValueError
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip().replace("_", ""))
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, Path):
            return str(value)
        raise ValueError
    return value


def coerce(cls: type, key: str, value: Any, source: str = "--set") -> Any:
    """``value`` as the type of option ``key`` of ``cls``; one-line ``ValueError`` naming the
    key, the value and what the option accepts (and its choices, when it has some)."""
    f = _field(cls, key, source)
    tp = field_types(cls)[f.name]
    try:
        out = _coerce(tp, value)
    except (ValueError, TypeError):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + "…"
        raise ValueError(f"{source}: {key}={shown} is not a {describe(tp)}") from None
    choices = f.metadata.get(CHOICES)
    if choices and out is not None and out not in choices:
        shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise ValueError(f"{source}: {key}={out!r} is not one of {shown}")
    return out


def _field(cls: type, key: str, source: str) -> dataclasses.Field:
    by_name = {f.name: f for f in option_fields(cls)}
    name = key.strip().lstrip("-").replace("-", "_")
    if name not in by_name:
        raise ValueError(f"{source}: unknown option {key!r}; known: {', '.join(by_name)}")
    return by_name[name]


def parse_set(items: Iterable[str]) -> dict[str, str]:
    """``["lr=0.01", "amp=auto"]`` → ``{"lr": "0.01", "amp": "auto"}`` (dashes in keys read as
    underscores, so ``batch-size=8`` works too); ``ValueError`` for an item without ``=``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """The options in a ``.json``, ``.toml`` or (when PyYAML is installed) ``.yaml``/``.yml``
    file: one table of ``key = value``; a saved run's ``config.json`` works as it is."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {p}: cannot read it ({exc.__class__.__name__})") from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"--config {p}: reading YAML needs PyYAML (pip install pyyaml); "
                                 "or use .json / .toml") from None
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"--config {p}: unknown format {suffix or '(no suffix)'}; use .json, "
                             ".toml or .yaml")
    except ValueError as exc:
        if str(exc).startswith("--config"):
            raise
        raise ValueError(f"--config {p}: not valid {suffix.lstrip('.').upper()} "
                         f"({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a table of key = value, got "
                         f"{type(data).__name__}")
    return data


def typed(cls: type, values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``values`` with every key checked against ``cls``'s options and every value coerced."""
    return {_field(cls, k, source).name: coerce(cls, k, v, source) for k, v in values.items()}


def layered(cls: type, *layers: tuple[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge ``(source, values)`` layers, later ones winning, each checked and coerced (the
    source names the layer in errors): e.g. ``("--config a.toml", file), ("--set", pairs)``."""
    out: dict[str, Any] = {}
    for source, values in layers:
        out.update(typed(cls, values, source))
    return out
