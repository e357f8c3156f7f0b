"""Typed, frozen configuration: dataclasses loaded from YAML and validated at load.

Each module owns the frozen dataclass of its own settings (for example the blender's or
the tracker's); this module turns nested plain data (YAML, CLI overrides) into those
dataclasses, rejecting unknown keys and wrong types with a :class:`ConfigError` that
names the key, and dumps them back for the resolved config written next to outputs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from reenact.errors import ConfigError

T = TypeVar("T")

Mode = Literal["reenact", "deidentify"]
"""The two products: put a photo's identity on a video, or give everyone a synthetic one. The
one definition of the mode names; what a mode decides is resolved once, in
:func:`reenact.pipeline.plan.plan_run`."""

MODES: tuple[str, ...] = typing.get_args(Mode)


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _check_value(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is none of {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [_check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_type = args[0] if args else Any
            items = [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from plain data, strictly.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key
    (``where`` prefixes the dotted path). Missing keys take the dataclass defaults.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}"
        )
    required = sorted(name for name, f in fields.items() if name not in data
                      and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if required:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(required)}; add them")
    kwargs = {name: _check_value(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def replace(obj: T, overrides: dict[str, Any], where: str = "config") -> T:
    """Return ``obj`` with dotted-key overrides applied (``{"blend.erosion": 3}``), validated."""
    data = to_dict(obj)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{where}: unknown key {key}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"{where}: unknown key {key}")
        node[parts[-1]] = value
    return from_dict(type(obj), data, where)


def to_dict(obj: Any) -> Any:
    """Plain, YAML-safe data for a (nested) dataclass: tuples become lists, paths strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


#: libyaml's safe loader when PyYAML was built with it (8x faster than the pure-Python one on
#: the pack files, 0.5 against 4 ms each; the same constructors, so the same data), else PyYAML's
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, through libyaml where PyYAML has it (:data:`_SAFE_LOADER`)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Load ``cls`` from a YAML file; errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return from_dict(cls, data or {}, where=str(path))


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write the resolved config ``obj`` as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def parse_override(item: str, where: str = "--set") -> tuple[str, Any]:
    """``"blend.feather=0.1"`` -> ``("blend.feather", 0.1)``: one ``KEY=VALUE`` setting, the
    value parsed as YAML. ``where`` names the source in the error (``--set``, a file line)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{where}: {item!r} is not KEY=VALUE (e.g. blend.feather=0.1)")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} {key.strip()}: {value.strip()!r} is not a valid YAML value") from exc
