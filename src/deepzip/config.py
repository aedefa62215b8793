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
import math
import re
from typing import Any, TypeVar

C = TypeVar("C")


def option(default: Any, help: str, choices: tuple | None = None, cli_default: Any = None) -> Any:
    """A dataclass field with its CLI help text, (optionally) its allowed values, and (optionally) another
    default for the CLI flag than for the library (e.g. ``--device auto``)."""
    metadata = {"help": help, "choices": choices}
    if cli_default is not None:
        metadata["cli_default"] = cli_default
    return dataclasses.field(default=default, metadata=metadata)


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


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


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
        kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=f.metadata.get("cli_default", f.default),
                                      help=f.metadata.get("help", "").replace("%", "%%"))  # argparse formats help
        if kind is bool:
            kwargs.update(type=_parse_bool, metavar="{true,false}")
        elif kind is float:  # inf / nan are never a meaningful rate or strength
            kwargs.update(type=_finite_float, metavar=f.name.upper())
        else:
            kwargs.update(type=kind)
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag, **kwargs)


def flag(name: str, prefix: str = "") -> str:
    """The ``--flag`` of field ``name`` under ``prefix`` (as `add_arguments` spells it)."""
    return "--" + (prefix + name).replace("_", "-")


def name_flags(message: str, cls: type, prefix: str = "") -> str:
    """Rewrite a config error's field names (``retrain_lr``, ``sparsity``) as the flags a user typed."""
    names = sorted((f.name for f in dataclasses.fields(cls)), key=len, reverse=True)
    for name in names:  # a message that starts with a field name: that is the option at fault
        if message.startswith(name + "="):  # check_choices: "model='x' is not allowed; choose from ..."
            return f"{flag(name, prefix)}: {message[len(name) + 1:]}"
        if re.match(rf"{re.escape(name)}\b(?![-.])", message):
            return flag(name, prefix) + message[len(name):]
        if f"unknown {name} " in message:
            return f"{flag(name, prefix)}: {message}"
    pattern = r"(?<![\w.-])(" + "|".join(re.escape(n) for n in names if "_" in n) + r")(?![\w-])"
    renamed = re.sub(pattern, lambda m: flag(m.group(1), prefix), message) if any("_" in n for n in names) else message
    if renamed != message:
        return renamed
    if "N:M" in message:
        return f"{flag('n', prefix)}/{flag('m', prefix)}: {message}"
    return f"{cls.__name__} options: {message}"


def from_args(cls: type[C], namespace: argparse.Namespace, prefix: str = "", **given: Any) -> C:
    """Build ``cls`` from the parsed flags that `add_arguments` declared (skipped fields from ``given``).

    A ValueError from the dataclass's validation comes back with the field names spelled as flags.
    """
    values = {f.name: getattr(namespace, prefix + f.name) for f in dataclasses.fields(cls) if f.name not in given}
    if isinstance(values.get("seed"), int) and values["seed"] < 0:  # torch and numpy seeds are unsigned
        raise ValueError(f"{flag('seed', prefix)} must be >= 0, got {values['seed']}")
    try:
        return cls(**values, **given)
    except ValueError as exc:
        message = str(exc)
        for name, value in values.items():  # an error quoting part of a string option: that option
            items = [i.strip() for i in value.split(",") if i.strip()] if isinstance(value, str) else []
            if any(repr(i) in message or repr(value) in message for i in items):
                raise ValueError(f"{flag(name, prefix)}: {message}") from None
        raise ValueError(name_flags(message, cls, prefix)) from None


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


def _identity(extra: dict[str, Any]) -> dict[str, Any]:
    # Only given (non-None) identities join the hash: a run without them keeps its old name.
    return {f"@{k}": v for k, v in sorted(extra.items()) if v is not None}


def hashname(cfg: Any, prefix: str, **identity: Any) -> str:
    """``<prefix>_<hash>``: a stable name from the fields that differ from their defaults.

    ``identity`` adds what else makes a run different (e.g. ``data="/path/to/data"``); None values
    are left out, so a run that had none keeps the name it always had.
    """
    payload = json.dumps({"type": type(cfg).__name__, **non_defaults(cfg), **_identity(identity)}, sort_keys=True)
    return f"{prefix}_{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def hash_configs(prefix: str, identity: dict[str, Any] | None = None, **configs: Any) -> str:
    """``<prefix>_<hash>`` over several configs' non-default fields (for multi-stage runs), plus ``identity``
    as in `hashname` (None values left out)."""
    payload = {k: {"type": type(v).__name__, **non_defaults(v)} for k, v in configs.items()}
    payload.update(_identity(identity or {}))
    return f"{prefix}_{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]}"


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
