"""A warm-started search (`search.warm_start`): configurations it evaluates first, before the
search algorithm proposes its own (OptunaSearch's `points_to_evaluate`; the grid's order).

From an earlier study's folder, a variant's points are the configuration that study selected for
it: the lr and weight decay its repeat phase trained (the driver's choice, `search_scores.best_config`,
as recorded in its rows). A variant the earlier study did not repeat gets none. Points outside
this study's search space are left out. What each variant was started from is recorded in
`<out>/warm_start/<variant>.json` for the report."""
from __future__ import annotations

import json
from pathlib import Path

from attnsweep.pipelines.config.study import LogRange, SearchSettings
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.trial.folder import write_json

RECORDS = "warm_start"  # <out>/warm_start/<variant>.json


def earlier_selection(earlier: Path, variant: str) -> list[dict[str, float]]:
    """The configuration the study in `earlier` repeated `variant` with ([] if it did not)."""
    rows = parquet_store.read(earlier).to_pandas()
    rep = rows[(rows["phase"] == "repeat") & (rows["variant"] == variant)]
    pairs = rep[["lr", "weight_decay"]].drop_duplicates().sort_values(["lr", "weight_decay"])
    return [{"lr": float(r.lr), "weight_decay": float(r.weight_decay)} for r in pairs.itertuples()]


def _in_space(search: SearchSettings, p: dict[str, float]) -> bool:
    def inside(space, x: float) -> bool:
        return space.low <= x <= space.high if isinstance(space, LogRange) else x in space

    return inside(search.lr, p["lr"]) and inside(search.weight_decay, p["weight_decay"])


def points(search: SearchSettings, variant: str, out: Path) -> list[dict[str, float]]:
    """`variant`'s warm-start points in this search space, recorded under `out` ([] without a warm start)."""
    if search.warm_start is None:
        return []
    if isinstance(search.warm_start, Path):
        source, found = str(search.warm_start), earlier_selection(search.warm_start, variant)
    else:
        source, found = "the study's list", [p.model_dump() for p in search.warm_start]
    used = [p for p in found if _in_space(search, p)]
    record = {"source": source, "points": used, "outside_space": [p for p in found if p not in used]}
    (out / RECORDS).mkdir(exist_ok=True)
    write_json(out / RECORDS / f"{variant}.json", record)
    return used


def first(in_flight: list[dict], warm: list[dict], finished_pairs: set[tuple[float, float]]) -> list[dict]:
    """The points a search proposes before its own: those in flight, then the warm-start points
    not yet evaluated."""
    return in_flight + [p for p in warm if p not in in_flight and (p["lr"], p["weight_decay"]) not in finished_pairs]


def described(out: Path) -> str:
    """The report's line: per variant, what its search was warm-started with ('none')."""
    parts = []
    for path in sorted((out / RECORDS).glob("*.json")):
        record = json.loads(path.read_text())
        show = lambda ps: ", ".join(f"lr {p['lr']:.4g} wd {p['weight_decay']:.4g}" for p in ps)  # noqa: E731
        left_out = f"; outside the search space: {show(record['outside_space'])}" if record["outside_space"] else ""
        parts.append(f"{path.stem}: {show(record['points']) or 'no point'} (from {record['source']}, evaluated "
                     f"first{left_out})")
    return "; ".join(parts) or "none"
