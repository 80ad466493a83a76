"""The dataset formats: format name -> adapter module, the one list `DatasetSpec`, `prepare` and
`attnsweep data check` read. A built-in format is its own `format_*.py` plus one line in
BUILTIN_FORMATS; a format from outside is an installed package's entry point (group
`attnsweep.formats`, value: its module) or a study's `format:` naming its module by import path
(`my_lab.tiny_format`). Either follows the built-ins' contract:

An adapter module provides:
- `Options`: pydantic model of its `DatasetSpec.options` (extra keys forbidden);
- `read(spec) -> (records, class_names)`: the records table of `attnsweep.data.records`, validated
  (every bad input is a `DataError` naming file, row and value; `records.finish` checks the table);
- `images(spec, records, size, workers) -> Iterator[uint8 [k, size, size, 3]]` in records order;
- `fingerprint(spec, records) -> str`: changes whenever the source does (no image is decoded);
- optionally `NEEDS_ROOT = False` when it needs no dataset folder (a generated set)."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

from pydantic import BaseModel

from attnsweep.plugins import FORMATS_GROUP, PluginError, entry_points, load

BUILTIN_FORMATS = {
    "synthderm": "attnsweep.data.format_synthderm",
    "ham10000": "attnsweep.data.format_ham10000",
    "isic": "attnsweep.data.format_isic",
    "pad_ufes_20": "attnsweep.data.format_pad_ufes_20",
    "camelyon17": "attnsweep.data.format_camelyon17",
    "medmnist": "attnsweep.data.format_medmnist",
    "cifar10": "attnsweep.data.format_cifar10",
    "imagefolder": "attnsweep.data.format_imagefolder",
}
_CONTRACT = ("read", "images", "fingerprint")


def formats() -> dict[str, tuple[str, str]]:
    """name -> (module import path, where it is declared): the built-ins, then the installed ones."""
    out = {name: (path, "attnsweep") for name, path in BUILTIN_FORMATS.items()}
    for name, (path, where) in entry_points(FORMATS_GROUP).items():
        if name in out:
            raise PluginError(f"{where}: the name {name!r} is a built-in dataset format; rename it")
        out[name] = (path, where)
    return out


def _is_import_path(fmt: str) -> bool:
    return "." in fmt


def check_format(fmt: str) -> None:
    """ValueError in one line for a name that is neither a known format nor an import path
    (nothing is imported)."""
    if fmt not in formats() and not _is_import_path(fmt):
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(formats())}, "
                         "or a module's import path (my_lab.my_format)")


def adapter(fmt: str) -> ModuleType:
    check_format(fmt)
    path, where = formats().get(fmt) or (fmt, f"format {fmt}")
    if where == "attnsweep":
        return import_module(path)
    module = load(path, where)
    missing = [name for name in _CONTRACT if not callable(getattr(module, name, None))]
    options = getattr(module, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        missing.insert(0, "Options (a pydantic model)")
    if missing:
        raise PluginError(f"{where}: {path} is not a dataset adapter: it lacks {', '.join(missing)} "
                          "(docs/extending.md)")
    return module


def needs_root(fmt: str) -> bool:
    return getattr(adapter(fmt), "NEEDS_ROOT", True)
