"""A study folder for the feature-usage tests, written by the real layers without a sweep: the data
layer prepares the dataset, the real trainer trains each variant on the repeat splits (keeping
`best.pt`), the tracking layer's row builders and Parquet writer record the trials, and the MLflow
store opens the study's run (as `attnsweep run` does)."""
from __future__ import annotations

from pathlib import Path

import yaml

from attnsweep.data import DatasetSpec, SplitSpec, prepare
from attnsweep.models import parse_name
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.store.mlflow_store import MlflowStore, default_tracking_uri
from attnsweep.pipelines.store.parquet_store import write_trial
from attnsweep.pipelines.store.result_rows import TrialRef, epoch_rows, result_rows
from attnsweep.pipelines.trial.trainer import train


def trained_study(out: Path, spec: DatasetSpec, variants: list[str], features: dict, size: int = 32,
                  repeat_splits: int = 1, test_fraction: float = 0.4, **train_settings) -> Path:
    name = out.name
    splits = SplitSpec(val_fraction=0.2, test_fraction=test_fraction, search_splits=0,
                       repeat_splits=repeat_splits, seed=0)
    data_dir = prepare(spec, splits, size, out)
    settings = {"epochs": 3, "lr": 0.003, "batch_size": 32, "optimizer": "adamw", **train_settings}
    for variant in variants:
        backbone, attention = parse_name(variant)
        for split in splits.names():
            cfg = TrialConfig(model=variant, dataset=spec, splits=splits, split=split, image_size=size,
                              data_dir=data_dir, **settings)
            trial_id = f"{variant}-{split}"
            folder = out / "trials" / "repeat" / variant / trial_id
            result = train(cfg, folder)
            ref = TrialRef(name, "repeat", variant, backbone, tuple(attention), spec.format, split,
                           trial_id, cfg.hash(), folder)
            config = ref.folder.config()
            write_trial(out, trial_id, result_rows(ref, config, result, ["val", "test"], None, "test"),
                        epoch_rows(ref, config, ref.folder.epochs()))
    (out / "study.yaml").write_text(yaml.safe_dump({"name": name, "variants": variants, "features": features}))
    MlflowStore(default_tracking_uri(out), name, out).study_run()
    return out


# ../shared/data/ham10000 of the checkout (a worktree sits one level deeper than the main one)
HAM = next((p / "shared" / "data" / "ham10000" for p in Path(__file__).resolve().parents
            if (p / "shared" / "data" / "ham10000").is_dir()), Path("shared/data/ham10000"))


def ham_subset(dest: Path, per_class: int, seed: int = 0) -> Path:
    """A HAM10000 root with up to `per_class` images of each diagnosis, drawn at random,
    plus `per_class` images whose age, sex or site is missing (the real metadata's gaps: 57 ages, 57 sexes `unknown`, 234 sites `unknown`); images are copied (the
    data layer refuses a link out of the dataset root)."""
    import shutil

    import pandas as pd

    meta = pd.read_csv(HAM / "HAM10000_metadata.csv")
    gaps = meta["age"].isna() | meta["sex"].eq("unknown") | meta["localization"].eq("unknown")
    picked = meta[~gaps].sample(frac=1, random_state=seed).groupby("dx").head(per_class)
    with_gaps = meta[gaps].sample(min(int(gaps.sum()), per_class), random_state=seed)
    subset = pd.concat([picked, with_gaps]).sort_index()
    (dest / "images").mkdir(parents=True)
    for image_id in subset["image_id"]:
        shutil.copyfile(HAM / "images_200x150" / f"{image_id}.jpg", dest / "images" / f"{image_id}.jpg")
    subset.to_csv(dest / "HAM10000_metadata.csv", index=False)
    return dest
