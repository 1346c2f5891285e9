"""YAML values onto the typed configs: `merge` (nested overrides, unknown keys an error so a typo never
silently falls back to a default), `to_dict` (the plain form for YAML / JSON) and `load_model_config` (the
`model:` section of an experiment file). The defaults themselves live in the dataclasses
(`model_config`, `node_config`); files only override them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.config.node_config import NodeConfig, coerce_node_value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated dataclass field type."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_coerce(inner, v, where) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ValueError(f"{where}: expected int, got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys at '{where or cls.__name__}': {sorted(unknown)}")
    if cls is NodeConfig:  # node parameters: the same type rules as every other way of setting them
        return cls(**{k: _coerce_node_field(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()})
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce_node_field(tp: Any, value: Any, where: str) -> Any:
    try:
        return coerce_node_value(tp, value)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def merge(base: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of dataclass `base` with nested `overrides` applied (unknown keys rejected)."""
    current = dataclasses.asdict(base)

    def deep(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = deep(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    return _from_dict(type(base), deep(current, overrides))


def load_model_config(path: str) -> ModelConfig:
    """ModelConfig defaults <- the `model:` section of an experiment YAML file (local or gs://). The file's other
    sections (data, training) belong to the training package and are not read here."""
    from shapemask_ros.utils.io import read_text

    data = yaml.safe_load(read_text(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return merge(ModelConfig(), data.get("model") or {})


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form (tuples as lists) for writing YAML/JSON."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(dataclasses.asdict(cfg))
