"""Command-line overrides of a study file: `attnsweep run STUDY train.epochs=1 search.trials=2`.

Each `KEY=VALUE` is a dotted path into the study and a YAML value, parsed by OmegaConf's dotlist
(`search.lr={low: 1e-4, high: 0.1}`, `search.weight_decay=[0,1e-4]`; a key holding a '.' goes in
brackets: `variants[resnet.v2].train.epochs=3`). A variant is addressed by its id,
`variants.resnet18+se.train.epochs=5`, whether the file lists it as a name or as a mapping; its
overrides are merged over the study's sections like the file's own per-variant ones. The merged
study is validated by `Study` like the file, so an error names the key the same way."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class OverrideError(ValueError):
    """An override that is not KEY=VALUE, or names a variant the study does not list (one line)."""


def parse(dotlist: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` items -> the nested mapping they set (later items win)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    for item in dotlist:
        key = item.split("=", 1)[0]
        if "=" not in item or not key.strip():
            raise OverrideError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(dotlist)), resolve=False)
    except (OmegaConfBaseException, YAMLError) as e:
        raise OverrideError(f"overrides {' '.join(dotlist)}: {str(e).splitlines()[0]}") from None


def merge(base: dict, override: dict) -> dict:
    """`override` over `base`, mappings merged key by key; any other value replaces."""
    return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in override.items()}}


def apply(data: dict, override: dict) -> dict:
    """The study file's `data` with `override` (from `parse`) merged in. `variants.<id>` merges
    into that variant: a listed name becomes `{model: name, ...}` (its id stays the name)."""
    per_variant = override.get("variants")
    if not isinstance(per_variant, dict):
        return merge(data, override)  # no per-variant keys (or `variants=[..]` replacing the list)
    items = data.get("variants")
    items = items if isinstance(items, list) else []
    ids = [str(i) if not isinstance(i, dict) else str(i.get("id") or i.get("model")) for i in items]
    unknown = [k for k in per_variant if k not in ids]
    if unknown:
        raise OverrideError(f"variants.{unknown[0]}: not a variant of the study (its variants: {', '.join(ids)})")
    bad = [k for k, v in per_variant.items() if not isinstance(v, dict)]
    if bad:
        raise OverrideError(f"variants.{bad[0]}: set a field of the variant, e.g. variants.{bad[0]}.train.epochs=5")
    merged = []
    for vid, item in zip(ids, items):
        if vid in per_variant:
            item = merge(item if isinstance(item, dict) else {"model": item}, per_variant[vid])
        merged.append(item)
    return merge(data, {**override, "variants": merged})
