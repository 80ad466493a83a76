"""Reads a study folder for the report: `results/` and `epochs/` (Parquet, checked against the
schemas), `study.yaml` (only what the report needs; each variant's baseline and settings from its
`resolved` section, as the driver resolved them) and the driver's choices (`selection/`). Every
problem is a one-line `StudyFolderError` naming the file and the field."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import yaml
from pydantic import ValidationError

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.config.compare import RESOLVED
from attnsweep.pipelines.store import parquet_store, selection_record
from attnsweep.pipelines.store.results_schema import EPOCHS_SCHEMA, RESULTS_SCHEMA
from attnsweep.pipelines.config.errors import one_line
from attnsweep.pipelines.config.stats_settings import StatsSettings
from attnsweep.pipelines.trial.study_paths import StudyPaths


class StudyFolderError(ValueError):
    """The study folder cannot be reported on; the message names the file and the field."""


@dataclass
class StudyFolder:
    out: Path
    results: pd.DataFrame
    epochs: pd.DataFrame
    study: dict = field(default_factory=dict)
    settings: StatsSettings = field(default_factory=StatsSettings)
    selection: dict[str, dict] = field(default_factory=dict)  # variant -> the driver's record

    @property
    def resolved(self) -> dict[str, dict]:
        """variant -> model, baseline, train, search, executor as the driver resolved them."""
        return self.study.get(RESOLVED) or {}

    @property
    def baselines(self) -> dict[str, str]:
        """variant -> its baseline: as the study resolved it; a folder without that record (written
        by hand, or by an older driver) has `stats.baselines`, else the variant's backbone."""
        backbone = self.results.groupby("variant")["backbone"].first()
        return {v: (self.resolved.get(v) or {}).get("baseline") or self.settings.baselines.get(v, backbone.get(v, v))
                for v in self.variant_order}

    @property
    def name(self) -> str:
        names = self.results["study"].dropna().unique()
        return str(self.study.get("name") or (names[0] if len(names) else self.out.name))

    @property
    def selection_metric(self) -> str:
        """The validation metric that chose each run's epoch and each variant's configuration
        (`train.selection_metric`)."""
        return str((self.study.get("train") or {}).get("selection_metric") or selection.DEFAULT)

    @property
    def variant_order(self) -> list[str]:
        """Table row order: the study's model list, then the model registry's order, then by name."""
        listed = list(self.resolved) or _study_variants(self.study)
        present = self.results["variant"].unique()
        registry: list[str] = []
        if not set(present) <= set(listed):  # the registry imports torch: only when needed
            from attnsweep.models import VARIANTS as registry
        known = [v for v in [*listed, *registry] if v in present]
        return list(dict.fromkeys([*known, *sorted(present)]))


def _study_variants(study: dict) -> list[str]:
    items = study.get("variants")  # the study schema's list, in table order: names or {id, model, ...}
    if not isinstance(items, list):
        return []
    return [str(i.get("id") or i.get("model")) if isinstance(i, dict) else str(i) for i in items]


def _read_parquet_dir(out: Path, which: str, schema: pa.Schema, required: bool, name: str | None) -> pd.DataFrame:
    """This study's rows (`parquet_store.study_tables`: an export or another study's file is left out)."""
    try:
        tables, _ = parquet_store.study_tables(out, which, name)
    except parquet_store.BadResultsFile as e:
        raise StudyFolderError(str(e)) from None
    if not tables:
        if required:
            raise StudyFolderError(f"{StudyPaths(out).results_dir}: no result files of this study (has the study run?)")
        return schema.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def _read_study(path: Path) -> tuple[dict, StatsSettings]:
    """The study copy, read for the report only: `name`, `variants` and the `stats` section
    (validated with the same model the study schema embeds). The rest is not re-validated: the
    dataset paths it names need not exist where the report is built."""
    if not path.exists():
        return {}, StatsSettings()
    try:
        study = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise StudyFolderError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(study, dict):
        raise StudyFolderError(f"{path}: expected a mapping at the top level")
    try:
        settings = StatsSettings.model_validate(study.get("stats") or {})
    except ValidationError as e:
        raise StudyFolderError(one_line(e, str(path), under=("stats",))) from None
    return study, settings


def load(out: Path | str) -> StudyFolder:
    out = Path(out)
    if not out.is_dir():
        raise StudyFolderError(f"{out}: no such study folder")
    paths = StudyPaths(out)
    study, settings = _read_study(paths.study_file)
    name = study.get("name")
    results = _read_parquet_dir(out, "results", RESULTS_SCHEMA, required=True, name=name)
    epochs = _read_parquet_dir(out, "epochs", EPOCHS_SCHEMA, required=False, name=name)
    bad = sorted(set(results["phase"].dropna()) - {"search", "repeat"})
    if bad:
        raise StudyFolderError(f"{paths.results_dir}: phase: unknown values {bad}")
    try:
        chosen = selection_record.read_all(out)
    except ValueError as e:
        raise StudyFolderError(str(e)) from None
    return StudyFolder(out, results, epochs, study, settings, chosen)
