"""A study file is fixed once run: `--resume` compares the study with the `<out>/study.yaml` it
ran with. A trial is determined by its `TrialConfig` (its hash names the trial folder), built from
the study's `train`, `search`, `splits`, `dataset`, `ood`, `image_size` and `variants`, and its rows
carry `name` and `dataset_name`; changing any of those would mix two studies in one folder (a
search's lr reused for other epochs, repeat rows of two settings averaged). Only the fields below
feed no trial and no row: they may change on `--resume`, and the driver says which did."""
from __future__ import annotations

from typing import Any

RESOLVED = "resolved"  # the study copy's section of each variant's merged settings (`Study.resolved`)

# Where and how fast trials run, where the records go, what the report and --dry-run compute.
NO_TRIAL_FIELDS = ("description", "executor", "max_concurrent", "max_failures", "tracking_uri", "out_dir",
                   "stats", "estimate", "notify")


class StudyChanged(ValueError):
    """`--resume` with a study that changes trials; the message (one line) lists the fields."""


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flat(v, f"{prefix}{k}."))
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every field that differs."""
    a, b = _flat(old), _flat(new)
    missing = object()

    def unset(v: Any) -> bool:  # a mapping field added after a study ran (e.g. attentions) is unset there
        return v is missing or v == {}

    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing) and not (unset(a.get(k, missing)) and unset(b.get(k, missing)))]


def _show(v: Any) -> str:
    return "(unset)" if type(v) is object else repr(v)


def check_resume(stored: dict, new: dict, source: str) -> list[str]:
    """Refuse (`StudyChanged`) a difference that changes a trial; -> the fields that changed but
    change no trial. `stored` and `new` are `Study.model_dump(mode="json")`s."""
    stored = {k: v for k, v in stored.items() if k != RESOLVED}  # derived from the fields compared here
    diffs = differences(stored, new)
    changing = [d for d in diffs if d[0].split(".")[0] not in NO_TRIAL_FIELDS]
    if changing:
        listed = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, o, n in changing)
        raise StudyChanged(f"{source}: the study differs from the one this folder ran with, and trials depend on "
                           f"it ({listed}); restore those fields, or run it into another --out")
    return [k for k, _, _ in diffs]
