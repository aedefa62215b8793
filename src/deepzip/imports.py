"""A user's own code named on the command line: ``package.module:function`` (``--model``, ``--dataset``).

Resolved from the current directory and ``PYTHONPATH``, as ``python -m`` would; only names a user typed
are resolved, never names read from a file (a .dz or checkpoint description names registry models only).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, Callable

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_import_path(name: str) -> bool:
    return isinstance(name, str) and bool(_IMPORT_PATH.match(name))


def resolve(path: str, what: str) -> Callable[..., Any]:
    """The function ``path`` names; a ValueError says what is wrong (bad form, no module, no function)."""
    if not is_import_path(path):
        raise ValueError(f"{what} {path!r} is neither a registry name nor an import path package.module:function")
    module_name, _, function = path.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the `deepzip` script does not add it by itself
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {path!r}: cannot import {module_name!r} ({exc}); it is looked up in the current "
                         f"directory and PYTHONPATH") from None
    target = getattr(module, function, None)
    if not callable(target):
        raise ValueError(f"{what} {path!r}: {module_name} has no function {function!r}")
    return target


def call(path: str, what: str, *args: Any) -> Any:
    """``resolve(path)(*args)``, its failure reported as one line naming the path."""
    function = resolve(path, what)
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001  (the user's code: report it in one line, not a traceback)
        raise ValueError(f"{what} {path!r}: calling it failed: {type(exc).__name__}: {exc}") from None
