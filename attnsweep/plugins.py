"""Code from outside attnsweep: objects named by import path (`my_lab.attn:CoordAttention`) and the
installed packages' entry points (groups `attnsweep.attentions`, `attnsweep.formats`).

Listing entry points reads package metadata only; nothing is imported until an object is used, so
validating a study stays cheap (no torch) wherever it runs."""
from __future__ import annotations

import re
from functools import cache
from importlib import import_module, metadata

ATTENTIONS_GROUP = "attnsweep.attentions"
FORMATS_GROUP = "attnsweep.formats"

# `package.module` or `package.module:attribute.path` (importlib.metadata's entry-point value syntax)
IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)?")


class PluginError(ValueError):
    """A plugin that cannot be used; the message is one line naming where it was declared."""


def check_path(path: str, field: str) -> str:
    if not IMPORT_PATH.fullmatch(path):
        raise PluginError(f"{field}: {path!r} is not an import path (package.module:Name)")
    return path


def load(path: str, field: str) -> object:
    """The object at `path` (`module` or `module:attr.attr`); PluginError naming `field` otherwise.
    The module is found on sys.path: PYTHONPATH or an installed package."""
    module_name, _, attr = check_path(path, field).partition(":")
    try:
        obj = import_module(module_name)
    except Exception as exc:  # an import failure of any kind is the plugin's, reported in one line
        raise PluginError(f"{field}: cannot import {module_name} ({_first_line(exc)}); "
                          "it must be importable from PYTHONPATH or an installed package") from None
    for part in filter(None, attr.split(".")):
        if not hasattr(obj, part):
            raise PluginError(f"{field}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


@cache
def entry_points(group: str) -> dict[str, tuple[str, str]]:
    """name -> (import path, `entry point NAME (package DIST)`: where it is declared, for messages)."""
    found: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group=group):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown package"
        where = f"entry point {ep.name} ({group}, package {dist})"
        if ep.name in found and found[ep.name][0] != ep.value:
            raise PluginError(f"{where}: the name is also declared by {found[ep.name][1]}")
        found[ep.name] = (ep.value, where)
    return found


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
