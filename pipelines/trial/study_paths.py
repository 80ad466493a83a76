"""The study folder `<out>/`: the one place that knows where its parts lie (a trial folder's own
files are `TrialFolder`'s).

    study.yaml      the validated study as it ran, with each variant's resolved settings
    data/           the prepared data (`attnsweep.data.prepare`)
    trials/<phase>/<variant id>/<trial_id>/   one trial folder per configuration and split
    results/, epochs/   Parquet, one file per recorded trial (`store.parquet_store`)
    selection/<variant id>.json   the driver's choice of each variant's configuration
    tune/           Ray Tune's own state
    features/       the feature-usage analysis
    report/         the report
    mlflow.db, mlartifacts/   the default MLflow store
    driver.lock, driver.json  the running driver's lock and its record

No torch here: the driver, the report and the CLI read study folders."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from attnsweep.pipelines.trial.folder import CONFIG, TrialFolder


@dataclass(frozen=True)
class StudyPaths:
    out: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    study_file = property(lambda self: self.out / "study.yaml")
    data_dir = property(lambda self: self.out / "data")
    trials_dir = property(lambda self: self.out / "trials")
    results_dir = property(lambda self: self.out / "results")
    epochs_dir = property(lambda self: self.out / "epochs")
    selection_dir = property(lambda self: self.out / "selection")
    features_dir = property(lambda self: self.out / "features")
    report_dir = property(lambda self: self.out / "report")
    mlflow_db = property(lambda self: self.out / "mlflow.db")
    mlartifacts_dir = property(lambda self: self.out / "mlartifacts")
    splits_file = property(lambda self: self.out / "splits.sha256")  # the splits the trials were trained on
    study_id_file = property(lambda self: self.out / "study_id")  # the folder's id, tagged on its MLflow experiment
    lock_file = property(lambda self: self.out / "driver.lock")
    driver_file = property(lambda self: self.out / "driver.json")

    def trial_dir(self, phase: str, variant: str, trial_id: str) -> Path:
        return self.trials_dir / phase / variant / trial_id

    def trial(self, phase: str, variant: str, trial_id: str) -> TrialFolder:
        return TrialFolder(self.trial_dir(phase, variant, trial_id))

    def iter_trials(self, phase: str = "*", variant: str = "*") -> Iterator[TrialFolder]:
        """The claimed trial folders (those with a config), of one phase and variant or all."""
        for config in sorted(self.trials_dir.glob(f"{phase}/{variant}/*/{CONFIG}")):
            yield TrialFolder(config.parent)

    @staticmethod
    def variant_of(trial: TrialFolder) -> str:
        return trial.path.parent.name

    def has_trials(self) -> bool:
        return self.trials_dir.is_dir() and any(self.trials_dir.iterdir())

    def results_file(self, trial_id: str) -> Path:
        return self.results_dir / f"{trial_id}.parquet"

    def epochs_file(self, trial_id: str) -> Path:
        return self.epochs_dir / f"{trial_id}.parquet"

    def selection_file(self, variant: str) -> Path:
        return self.selection_dir / f"{variant}.json"
