"""TOML configuration parsed once into typed, immutable objects.

Each package declares its configuration as frozen dataclasses; `load_section`
walks a TOML table into them and refuses, with one message naming the file,
the key and the expectation, any unknown key, wrong type, missing field or
impossible value. A field's ``metadata`` may carry ``check`` (a predicate)
and ``expect`` (the phrase shown when it fails), and ``doc`` for docs.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration that cannot be used; str() is the one line to show."""

    def __init__(self, file: str | Path, key: str, expected: str, got: Any = dataclasses.MISSING) -> None:
        self.file, self.key, self.expected = str(file), key, expected
        detail = "" if got is dataclasses.MISSING else f", got {_show(got)}"
        super().__init__(f"{self.file}: {key}: expected {expected}{detail}" if key else f"{self.file}: {expected}{detail}")


def setting(default: Any = dataclasses.MISSING, *, check: Callable[[Any], bool] | None = None,
            expect: str | None = None, doc: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"check": check, "expect": expect, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(p, "", "an existing configuration file (not found)") from None
    except IsADirectoryError:
        raise ConfigError(p, "", "a file, not a directory") from None
    except PermissionError:
        raise ConfigError(p, "", "a readable file (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(p, "", "UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(p, "", f"valid TOML ({e})") from None


def load_section(cls: type[T], data: Any, *, file: str | Path, key: str = "") -> T:
    """Build dataclass `cls` from a TOML table, validating every field."""
    where = key or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(file, where, "a table", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in fields:
            raise ConfigError(file, _join(key, k), f"one of the known keys ({', '.join(sorted(fields))}); unknown key")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        full = _join(key, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(file, full, f"a value ({_describe(hints[name])}); this key is required")
            continue
        value = _convert(hints[name], data[name], file=file, key=full)
        check = f.metadata.get("check")
        if check is not None and not check(value):
            raise ConfigError(file, full, f.metadata.get("expect") or "a valid value", data[name])
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(file, where, str(e)) from None


def _convert(tp: Any, value: Any, *, file: str | Path, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        errors = []
        for a in options:
            try:
                return _convert(a, value, file=file, key=key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(file, key, _describe(tp), value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(file, key, "one of " + ", ".join(repr(a) for a in args), value)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(file, key, _describe(tp), value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, file=file, key=f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(file, key, _describe(tp), value)
        return tuple(_convert(a, v, file=file, key=f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, _describe(tp), value)
        return types.MappingProxyType({k: _convert(args[1], v, file=file, key=_join(key, k)) for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        return load_section(tp, value, file=file, key=key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(file, key, "a number", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(file, key, "a whole number", value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(file, key, "true or false", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(file, key, "a string", value)
    if tp is Any:
        return value
    raise TypeError(f"configuration type {tp!r} not supported")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _show(v: Any) -> str:
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "a list" if len(repr(v)) > 60 else repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
