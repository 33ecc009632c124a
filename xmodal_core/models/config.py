"""Run configs as JSON: dataclass <-> plain data with type checks, `--set key=value` overrides,
config files. Every run kind's config class (`AlignConfig`, `VGSConfig`) round-trips through these."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from xmodal_core.errors import InputError

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn JSON data into the field's declared type (tuples, optionals, floats from ints)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except InputError:
                continue
        raise InputError(f"{where} = {value!r} does not fit {annotation}")
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where} must be one of {', '.join(map(repr, args))}, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, not {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise InputError(f"{where} must have {len(args)} entries, not {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise InputError(f"{where} must be an object {{key: value}}, not {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") if args else v for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number, not {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InputError(f"{where} must be a whole number, not {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, not {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string, not {value!r}")
        return value
    return value


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build config dataclass `cls` from JSON data; unknown keys and wrong types raise InputError.
    The dataclass's `__post_init__` checks the values."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], k) for k, v in data.items()}
    return cls(**kwargs)


class JsonConfig:
    """Base of the run config dataclasses: `to_dict()` / `from_dict()` through `config_to_dict` / `config_from_dict`."""

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        return config_from_dict(cls, data)


# -- value checks the config classes' `__post_init__` share

def require_at_least_one(cfg: Any, names: Sequence[str]) -> None:
    """InputError naming the first of `cfg`'s fields `names` that is below 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise InputError(f"{name} must be at least 1")


def check_schedule(schedule: str) -> None:
    if schedule not in ("cosine", "constant"):
        raise InputError(f"schedule must be 'cosine' or 'constant'; got {schedule!r}")


def check_unit_interval(name: str, value: float, what: str = "") -> None:
    """`value` must lie in [0, 1); `what` (e.g. "(a standard deviation)") goes into the message."""
    if not 0 <= value < 1:
        raise InputError(f"{name} must be in [0, 1){' ' + what if what else ''}; got {value}")


def require_encoders(encoders: Mapping[str, str], towers: Sequence[str]) -> None:
    """Every tower in `towers` must have an encoder named in `encoders`."""
    for m in towers:
        if m not in encoders:
            raise InputError(f"no encoder named for the {m} tower; set encoders.{m}")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`["lr=3e-4", "towers=[\"speech\",\"text\"]", "dataset=fsdd"]` -> dict. Values are read as
    JSON when they parse, else taken as strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes key=value, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON config file as a dict."""
    from xmodal_core.validate import check_path_text, read_text_file

    path = check_path_text(path, "config file")
    if not path.exists():
        raise InputError(f"config file {path} does not exist")
    try:
        data = json.loads(read_text_file(path, "config file"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"config file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a JSON object {{...}}")
    return data
