"""Writes the golden study folder `tests/golden/study/` (results/, epochs/, study.yaml) from fixed
formulas, no randomness: two datasets with an OOD set each, six variants, a 2x2 lr x wd search on
two splits, five repeat splits, one diverged repeat run. Regenerate with
`python tests/golden/make_study.py`, then the expected tables with `--expected` (and review the
diff: the expected CSVs are what the golden test holds the report to)."""
from __future__ import annotations

import math
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq

from attnsweep.pipelines.store.results_schema import EPOCHS_SCHEMA, RESULTS_SCHEMA, to_table

HERE = Path(__file__).parent
STUDY = HERE / "study"
EXPECTED = HERE / "expected"

DATASETS = {"synthderm": "ood:shifted", "synthpath": "ood:hospital2"}
# variant -> (backbone, params, offset of the mean balanced accuracy vs its backbone)
VARIANTS = {
    "resnet18": ("resnet18", 11_178_051, 0.0),
    "resnet18+ga": ("resnet18", 11_219_651, -0.004),
    "resnet18+ela": ("resnet18", 14_978_563, -0.035),
    "efficientnet_b0": ("efficientnet_b0", 4_011_391, 0.0),
    "efficientnet_b0+ga": ("efficientnet_b0", 4_016_111, 0.012),
    "vit_tiny_patch16_224": ("vit_tiny_patch16_224", 5_490_435, 0.0),
}
BASE = {"resnet18": 0.74, "efficientnet_b0": 0.755, "vit_tiny_patch16_224": 0.66}
REPEAT_SPLITS, SEARCH_SPLITS, EPOCHS = 5, 2, 3
GRID = [(1e-3, 0.0), (1e-3, 1e-4), (1e-2, 0.0), (1e-2, 1e-4)]
BEST = {"resnet18": GRID[1], "efficientnet_b0": GRID[2], "vit_tiny_patch16_224": GRID[0]}
DIVERGED = ("resnet18+ga", "synthderm", 2)  # variant, dataset, repeat split
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def metric(vi: int, di: int, split: int, eval_set: str, variant: str, lr_wd=None) -> float:
    backbone, _, offset = VARIANTS[variant]
    # a split effect all variants share (splits differ in difficulty) + a small per-variant part
    value = (BASE[backbone] + 0.2 * di + offset + 0.012 * math.sin(1.9 * split + di)
             + 0.004 * math.sin(3.1 * split + 0.7 * vi))
    if eval_set.startswith("ood"):
        value -= 0.15 - 0.02 * math.cos(split + vi)
    if lr_wd is not None:  # search: the best grid point of the backbone scores highest
        value -= 0.03 * (GRID.index(lr_wd) + 1) * (lr_wd != BEST[backbone])
    return round(value, 6)


def result_row(**kw) -> dict:
    return {
        "study": "golden", "batch_size": 32, "epochs": EPOCHS, "world_size": 1,
        "code_version": "0.1.0+golden", "mlflow_run_id": f"run-{kw['trial_id']}",
        "config_hash": f"cfg-{kw['variant']}-{kw['lr']:g}-{kw['weight_decay']:g}",
    } | kw


def rows():
    results, epochs, n = [], [], 0
    for di, (dataset, ood) in enumerate(DATASETS.items()):
        for vi, (variant, (backbone, params, _)) in enumerate(VARIANTS.items()):
            trials = [("search", f"s{g}", [f"search-{s}" for s in range(SEARCH_SPLITS)], lr_wd)
                      for g, lr_wd in enumerate(GRID)]
            trials += [("repeat", f"r{s}", [f"repeat-{s}"], BEST[backbone]) for s in range(REPEAT_SPLITS)]
            for phase, tag, splits, (lr, wd) in trials:
                trial_id = f"{dataset}-{variant}-{tag}"
                for split in splits:
                    k = int(split.split("-")[1])
                    diverged = (variant, dataset, k) == DIVERGED and phase == "repeat"
                    n += 1
                    common = dict(
                        phase=phase, variant=variant, backbone=backbone,
                        attention="+".join(variant.split("+")[1:]), dataset=dataset, split=split,
                        seed=1000 * (phase == "repeat") + k, lr=lr, weight_decay=wd,
                        best_epoch=None if diverged else EPOCHS - 1 - k % 2, diverged_epoch=2 if diverged else None,
                        status="diverged" if diverged else "ok", n_train=800 + 40 * di,
                        params=params, train_seconds=60.0 + vi + k, gpu_seconds=55.0 + vi + k,
                        trial_id=trial_id, finished_at=T0 + timedelta(minutes=n),
                    )
                    sets = ["val"] + (["test", ood] if phase == "repeat" else [])
                    for es in sets:
                        ba = None if diverged else metric(vi, di, k, es, variant,
                                                          (lr, wd) if phase == "search" else None)
                        results.append(result_row(
                            eval_set=es, balanced_accuracy=ba,
                            accuracy=None if diverged else round(ba + 0.03, 6),
                            auc_roc=None if diverged else round(min(ba + 0.12, 0.999), 6),
                            loss=None if diverged else round(1.5 - ba, 6),
                            n_samples=200 if es != ood else 300, **common))
                    for e in range(1 if diverged else EPOCHS):
                        va = metric(vi, di, k, "val", variant) - 0.05 * (EPOCHS - 1 - e)
                        epochs.append(dict(
                            study="golden", phase=phase, variant=variant, trial_id=trial_id,
                            split=split, epoch=e, lr=lr, weight_decay=wd,
                            train_loss=float("nan") if diverged else round(1.2 - 0.2 * e, 6),
                            val_balanced_accuracy=None if diverged else round(va, 6),
                            val_accuracy=None if diverged else round(va + 0.03, 6),
                            val_auc_roc=None if diverged else round(va + 0.1, 6),
                            val_loss=None if diverged else round(1.4 - va, 6), seconds=20.0, images_per_s=32.0))
    return results, epochs


STUDY_YAML = """\
# golden study: what `attnsweep run` copies to <out>/study.yaml (only the parts the report reads)
name: golden
variants: [resnet18, resnet18+ga, resnet18+ela, efficientnet_b0, efficientnet_b0+ga, vit_tiny_patch16_224]
image_size: 64
train: {epochs: 3, batch_size: 32, optimizer: sgd, momentum: 0.9, schedule: cosine, augmentation: flip_rot20,
        pretrained: null, precision: fp32, selection_metric: balanced_accuracy}
search: {algorithm: grid, lr: [0.001, 0.01], weight_decay: [0.0, 0.0001]}
splits: {search_splits: 2, repeat_splits: 5}
stats:
  metrics: [balanced_accuracy, auc_roc]
  significance: corrected
  alpha: 0.05
  explain_images: 4
"""


def write_study() -> None:
    shutil.rmtree(STUDY, ignore_errors=True)
    (STUDY / "results").mkdir(parents=True)
    (STUDY / "epochs").mkdir()
    (STUDY / "study.yaml").write_text(STUDY_YAML)
    results, epochs = rows()
    for folder, schema, data in (("results", RESULTS_SCHEMA, results), ("epochs", EPOCHS_SCHEMA, epochs)):
        # the tracker writes one file per trial; a few files keep the committed set small
        parts: dict[str, list] = {}
        for r in data:
            parts.setdefault(f"{r['trial_id'].split('-')[0]}-{r['phase']}", []).append(r)
        for part, part_rows in parts.items():
            pq.write_table(to_table(part_rows, schema), STUDY / folder / f"{part}.parquet")


def write_expected() -> None:
    from attnsweep.pipelines.report.study_folder import load
    from attnsweep.pipelines.report.tables import build_tables, write_tables

    shutil.rmtree(EXPECTED, ignore_errors=True)
    write_tables(build_tables(load(STUDY)), EXPECTED)
    for extra in EXPECTED.glob("*.parquet"):  # the test holds the report to the CSVs
        extra.unlink()


if __name__ == "__main__":
    write_expected() if "--expected" in sys.argv else write_study()
