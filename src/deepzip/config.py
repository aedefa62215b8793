"""Hyperparameters as frozen dataclasses: rendered to CLI flags, validated, hashed into run names.

Each field carries its help text (and, for strings, its allowed values) in its metadata:

    lr: float = option(1.2e-3, "learning rate")

`add_arguments` turns the fields into ``--flags`` whose help shows the default; `from_args` builds the
dataclass back. `hashname` hashes only the fields that differ from their defaults, so adding a field
with a default later keeps every existing run name (OpenLTH's ``desc.hashname``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from typing import Any, TypeVar

C = TypeVar("C")


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with its CLI help text and (optionally) its allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def check_choices(cfg: Any) -> None:
    """Raise ValueError for any field whose value is not among its declared choices."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value not in choices:
            raise ValueError(f"{f.name}={value!r} is not allowed; choose from {', '.join(map(str, choices))}")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_type(f: dataclasses.Field) -> type:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[
        str(f.type).split("|")[0].strip()
    ]
    return kind


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per field of ``cls`` but ``skip`` (ArgumentDefaultsHelpFormatter shows defaults)."""
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = _field_type(f)
        flag = "--" + (prefix + f.name).replace("_", "-")
        kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=f.default,
                                      help=f.metadata.get("help", "").replace("%", "%%"))  # argparse formats help
        if kind is bool:
            kwargs.update(type=_parse_bool, metavar="{true,false}")
        else:
            kwargs.update(type=kind)
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag, **kwargs)


def from_args(cls: type[C], namespace: argparse.Namespace, prefix: str = "", **given: Any) -> C:
    """Build ``cls`` from the parsed flags that `add_arguments` declared (skipped fields from ``given``)."""
    values = {f.name: getattr(namespace, prefix + f.name) for f in dataclasses.fields(cls) if f.name not in given}
    return cls(**values, **given)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, rejecting unknown keys (missing keys take their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(names))}")
    return cls(**data)


def non_defaults(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default}


def hashname(cfg: Any, prefix: str) -> str:
    """``<prefix>_<hash>``: a stable name from the fields that differ from their defaults."""
    payload = json.dumps({"type": type(cfg).__name__, **non_defaults(cfg)}, sort_keys=True)
    return f"{prefix}_{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def hash_configs(prefix: str, **configs: Any) -> str:
    """``<prefix>_<hash>`` over several configs' non-default fields (for multi-stage runs)."""
    payload = json.dumps({k: {"type": type(v).__name__, **non_defaults(v)} for k, v in configs.items()}, sort_keys=True)
    return f"{prefix}_{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def parse_spec(text: str) -> float | dict[str, float] | None:
    """A per-layer CLI value: '0.9' -> 0.9; 'fc=0.92,conv=0.66' -> {'fc': 0.92, 'conv': 0.66}; '' -> None."""
    text = text.strip()
    if not text:
        return None
    if "=" not in text:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"bad layer spec {text!r}; expected a number or name=number,... "
                             f"e.g. fc=0.92,conv=0.66") from None
    spec = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            spec[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad layer spec item {item!r}; expected name=number, e.g. fc=0.92,conv=0.66") from None
    return spec
