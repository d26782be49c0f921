"""TOML configuration parsed once into typed, immutable objects.

Each package declares its configuration as frozen dataclasses; `load_section`
walks a TOML table into them and refuses, with one message naming the file,
the key and the expectation, any unknown key, wrong type, missing field or
impossible value. A field's ``metadata`` may carry ``check`` (a predicate)
and ``expect`` (the phrase shown when it fails), and ``doc`` for docs.

`read_toml` is a bounded reader: a regular file (never a FIFO, device or
directory, which would hang or exhaust memory) of at most `MAX_CONFIG_BYTES`,
nested at most `MAX_NESTING` levels. Python's tomllib recurses on nested
arrays and inline tables (RecursionError) and its memory grows with the
square of a dotted key's length (10,000 levels took 400 MB here), so the
nesting is measured on the text before it is parsed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from humus.file_checks import FileProblem, read_regular

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20
"""A configuration file larger than 1 MiB is refused (a 50-probe gateway file is about 10 KB)."""
MAX_NESTING = 16
"""Tables, arrays and dotted keys nested deeper than this are refused (Humus files use 5)."""

# Every alternative matches whatever follows its opening character (an unterminated string runs to
# the end of its line or of the text) and nothing backtracks (possessive quantifiers, Python 3.11),
# so one pass over a 1 MiB file is linear: a search that could fail would retry at every quote.
_STRINGS_AND_COMMENTS = re.compile(r'"""[\s\S]*?(?:"""|\Z)|\'\'\'[\s\S]*?(?:\'\'\'|\Z)|"(?:[^"\\\n]|\\.)*+"?'
                                   r"|'[^'\n]*+'?|#[^\n]*+")
_BRACKETS = re.compile(r"[\[\]{}]")
_DEEP_DOTS = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]++(?:[ \t]*+\.[ \t]*+[A-Za-z0-9_-]++){%d,}" % MAX_NESTING)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ConfigError(ValueError):
    """A configuration that cannot be used; str() is the one line to show.

    ``got`` is the offending value (shown with repr); ``found`` a phrase saying
    what is there instead, when the problem is not a value ("a FIFO", "a
    content hash mismatch"...).
    """

    def __init__(self, file: str | Path, key: str, expected: str, got: Any = dataclasses.MISSING, *,
                 found: str | None = None) -> None:
        self.file, self.key, self.expected = str(file), key, expected
        detail = "" if got is dataclasses.MISSING else f", got {_show(got)}"
        if found:
            detail += f", found {found}"
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(one_line(f"{where}expected {expected}{detail}"))


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters shown as spaces (messages are one line)."""
    return _CONTROL.sub(" ", text)


def setting(default: Any = dataclasses.MISSING, *, check: Callable[[Any], bool] | None = None,
            expect: str | None = None, doc: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"check": check, "expect": expect, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML document in `path`; ConfigError (one line) for anything that is not a bounded TOML file."""
    p = Path(path)
    try:
        raw = read_regular(p, MAX_CONFIG_BYTES)
    except FileProblem as e:
        what = "an existing configuration file" if e.reason.startswith("not found") else "a configuration file"
        raise ConfigError(p, "", f"{what} (a regular file of at most {MAX_CONFIG_BYTES} bytes)",
                          found=e.found) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(p, "", "UTF-8 text", found=f"byte 0x{raw[e.start]:02x} on line {line}") from None
    depth = _text_nesting(text)
    if depth > MAX_NESTING:
        raise ConfigError(p, "", f"tables, arrays and dotted keys nested at most {MAX_NESTING} levels deep",
                          found=f"{depth} levels" if depth < 10**6 else "deeper nesting")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(p, "", "valid TOML", found=str(e)) from None
    except RecursionError:
        raise ConfigError(p, "", f"tables and arrays nested at most {MAX_NESTING} levels deep",
                          found="deeper nesting") from None
    if _value_depth(data, MAX_NESTING + 1) > MAX_NESTING:
        raise ConfigError(p, "", f"tables, arrays and dotted keys nested at most {MAX_NESTING} levels deep",
                          found="deeper nesting")
    return data


def _text_nesting(text: str) -> int:
    """A cheap upper bound of the nesting in a TOML text: brackets open at once, or dots in one key."""
    bare = _STRINGS_AND_COMMENTS.sub("S", text)
    depth = deepest = 0
    for m in _BRACKETS.finditer(bare):
        depth = depth + 1 if m.group() in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    if _DEEP_DOTS.search(bare):
        deepest = max(deepest, MAX_NESTING + 1)
    return deepest


def _value_depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed TOML, counted without recursion and no further than `limit`."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest >= limit:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def load_section(cls: type[T], data: Any, *, file: str | Path, key: str = "") -> T:
    """Build dataclass `cls` from a TOML table, validating every field."""
    where = key or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(file, where, "a table", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in fields:
            raise ConfigError(file, _join(key, k), f"one of the known keys ({', '.join(sorted(fields))})",
                              found="an unknown key")
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
        deeper = [e for e in errors if e.key != key]    # the value had the right shape; a part of it is wrong
        if deeper:
            raise deeper[0]
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
            if isinstance(value, int) and abs(value) > 2**53:
                raise ConfigError(file, key, "a number of at most 2**53", value)
            if not math.isfinite(value):
                raise ConfigError(file, key, "a finite number", value)
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
            if _CONTROL.search(value):
                raise ConfigError(file, key, "a string without line breaks or control characters", value)
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
