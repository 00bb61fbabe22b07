"""Reading configuration mappings into typed dataclasses: the checks every key gets.

Generic over dataclasses (nothing here knows deepatlas' sections, :mod:`deepatlas.config` does):
unknown keys are refused with the valid ones, every value is checked against its field's
annotation with the conversions YAML makes necessary, and ``section.key=value`` overrides are
applied to a raw mapping before it is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any

import yaml


def build_dataclass(kind, spec: dict[str, Any], where: str):
    """An instance of the dataclass ``kind`` from a mapping, nested sections built alike; unknown keys
    and values of the wrong type refused with their dotted key (``where`` + name)."""
    if not isinstance(spec, dict):
        raise ValueError(f"config section {where or 'root'!r} must be a mapping, got {spec!r}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(spec) - set(fields))
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1, cutoff=0.6)
        hint = f"; did you mean {where}{close[0]}?" if close else ""
        raise ValueError(
            f"unknown config key(s) {[f'{where}{k}' for k in unknown]}{hint}; valid keys here: {sorted(fields)}"
        )
    hints = typing.get_type_hints(kind)
    kwargs = {}
    for name, value in spec.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    return kind(**kwargs)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the field's annotation (``int``, ``float | None``, ``list[str]``,
    ``dict[str, float]`` ...), with the conversions YAML makes necessary; a mismatch is refused
    with the key, so a wrong value never reaches training, whatever the field's default."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"config {key}: expected a list, got {value!r}")
        return [_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config {key}: expected a mapping, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(value, hint, key)


def _coerce_scalar(value: Any, hint: type, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config {key}: expected true/false, got {value!r}")
        return value
    if hint is str and isinstance(value, bool):  # YAML reads a bare on/off as a bool
        return "on" if value else "off"
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        quoted = hint is str and isinstance(value, (int, float))
        hint_text = " (quote it: YAML reads 001 as the number 1)" if quoted else ""
        raise ValueError(f"config {key}: expected {_type_name(hint)}, got {value!r}{hint_text}")
    return value


def apply_overrides(spec: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw config mapping."""
    spec = json.loads(json.dumps(spec or {}))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = spec
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return spec
