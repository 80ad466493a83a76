"""Format name -> adapter module. Adding a format is its own `format_*.py` plus one line here.

An adapter module provides:
- `Options`: pydantic model of its `DatasetSpec.options` (extra keys forbidden);
- `read(spec) -> (records, class_names)`: the records table of `attnsweep.data.records`, validated
  (every bad input is a `DataError` naming file, row and value);
- `images(spec, records, size, workers) -> Iterator[uint8 [k, size, size, 3]]` in records order;
- `fingerprint(spec, records) -> str`: changes whenever the source does (no image is decoded)."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

MODULES = {
    "synthderm": "format_synthderm",
    "ham10000": "format_ham10000",
    "isic": "format_isic",
    "pad_ufes_20": "format_pad_ufes_20",
    "camelyon17": "format_camelyon17",
    "medmnist": "format_medmnist",
    "cifar10": "format_cifar10",
    "imagefolder": "format_imagefolder",
}


def adapter(fmt: str) -> ModuleType:
    if fmt not in MODULES:
        raise ValueError(f"unknown dataset format {fmt!r}; known: {', '.join(MODULES)}")
    return import_module(f"attnsweep.data.{MODULES[fmt]}")
