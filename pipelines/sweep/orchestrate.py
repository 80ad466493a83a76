"""`attnsweep run`: the driver of a study. Prepares the data once, starts a private Ray runtime,
runs the search and repeat phases of every variant (`phases`), records every trial (`tracking`),
and builds the report. It owns the jobs it submits: on a normal exit, SIGINT or SIGTERM it cancels
those still queued or running (SIGKILL leaves them, and `--resume` re-attaches to them)."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from attnsweep.data.atomic import write_text
from attnsweep.pipelines.trial import executors
from attnsweep.pipelines.sweep.plan import phase_splits
from attnsweep.pipelines.config.study import LogRange, Study
from attnsweep.pipelines.trial.folder import JOBS, TrialFolder

log = logging.getLogger(__name__)


class StudyExists(RuntimeError):
    pass


@dataclass(frozen=True)
class StudyOutputs:
    out: Path
    tracking_uri: str
    report: Path | None


def write_study_file(study: Study, out: Path) -> Path:
    """`<out>/study.yaml`: the validated study as it ran (read by the report), temp + rename."""
    path = out / "study.yaml"
    write_text(path, yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    return path


def tune_trial_counts(study: Study) -> dict[tuple[str, str], int]:
    """(variant, phase) -> Tune trials: configurations in the search, splits in the repeat."""
    plan = {}
    for v in study.variants:
        if study.splits.search_splits:
            plan[(v, "search")] = study.search.n_configs()
        plan[(v, "repeat")] = study.splits.repeat_splits
    return plan


@contextlib.contextmanager
def ray_runtime(study: Study, out: Path) -> Iterator[None]:
    """A private Ray runtime: explicit CPUs (one slot per concurrent trial), no dashboard, a short
    temp dir of its own (Unix socket paths are limited to 107 bytes), Ray's console output off."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard copies
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C reaches the driver, which cancels its jobs
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    key = hashlib.sha1(str(out).encode()).hexdigest()[:8]
    temp_dir = Path(tempfile.gettempdir()) / f"as-ray-{key}-{os.getpid()}"
    ray.init(num_cpus=study.max_concurrent, include_dashboard=False, _temp_dir=str(temp_dir),
             log_to_driver=False, object_store_memory=100 * 1024**2, configure_logging=True,
             logging_level=logging.ERROR)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (scancel, a time limit, `kill`) unwinds like Ctrl-C, so the jobs get cancelled."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cancel_owned_jobs(out: Path, executor) -> list[str]:
    """Cancel every job of this study's unfinished trials that is still queued or running -> their ids."""
    cancelled = []
    for jobs_file in (out / "trials").glob(f"*/*/*/{JOBS}"):
        trial_dir = jobs_file.parent
        if TrialFolder(trial_dir).final_result() is None:
            job = executors.attach(trial_dir, executor)  # a local job is stopped by attach itself
            if job is not None:
                job.cancel(check=False)
                cancelled.append(job.job_id)
    return cancelled


def preflight(study: Study, out: Path, data_dir: Path, n_train: int) -> None:
    """Fail before any job with one line for what only the prepared data or the executor can tell:
    a trial configuration of each variant (e.g. milestones), the batch against the ranks and the
    smallest training set."""
    from pydantic import ValidationError

    from attnsweep.pipelines.sweep.plan import make_trial
    from attnsweep.pipelines.config.errors import one_line
    from attnsweep.pipelines.config.trial_config import TrialConfigError

    s = study.search
    lr = s.lr.low if isinstance(s.lr, LogRange) else s.lr[0]
    wd = s.weight_decay.low if isinstance(s.weight_decay, LogRange) else s.weight_decay[0]
    for variant in study.variants:
        try:
            trial = make_trial(study, out, "repeat", variant, "repeat-0", lr, wd, data_dir)
        except ValidationError as err:
            raise TrialConfigError(one_line(err, f"study {study.name}, {variant}")) from None
        executors.validate(trial.cfg, study.executor)
    if study.train.batch_size > n_train:
        raise TrialConfigError(f"train.batch_size: {study.train.batch_size} is larger than the training set "
                               f"of a split ({n_train} images)")


def check_output_folder(out: Path, resume: bool) -> None:
    if not resume and (out / "trials").exists() and any((out / "trials").iterdir()):
        raise StudyExists(f"{out}: holds trials of an earlier run; pass --resume to finish it, or use another --out")


def run_study(study: Study, resume: bool = False, console: Console | None = None, poll_s: float = 1.0,
              report: bool = True) -> StudyOutputs:
    from attnsweep.data import load_split, prepare
    from attnsweep.pipelines.store.mlflow_store import MlflowStore, default_tracking_uri
    from attnsweep.pipelines.sweep.phases import run_repeat, run_search
    from attnsweep.pipelines.sweep.progress import Progress
    from attnsweep.pipelines.sweep.tracking import Recorder

    console = console or Console()
    out = study.output_dir()
    check_output_folder(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    write_study_file(study, out)
    console.print(f"[bold]{study.name}[/]: preparing {study.dataset_label} at {study.image_size}px in {out / 'data'}")
    data_dir = prepare(study.dataset, study.splits, study.image_size, out, ood=study.ood)
    first = load_split(data_dir, study.splits.names()[0])
    preflight(study, out, data_dir, min(len(load_split(data_dir, s).sets["train"]) for s in study.splits.names()))
    eval_sets = [name for name in first.sets if name != "train"]
    tracking_uri = study.tracking_uri or default_tracking_uri(out)
    recorder = Recorder(study, out, MlflowStore(tracking_uri, study.name, out), eval_sets, first.class_names)

    # Ray installs its own SIGTERM handler in ray.init: ours goes on top of it, inside.
    with ray_runtime(study, out), sigterm_as_interrupt():
        try:
            with Progress(study.name, tune_trial_counts(study), console) as progress:
                for variant in study.variants:
                    if phase_splits(study, "search"):
                        best = run_search(study, out, variant, data_dir, recorder, progress, poll_s)
                    else:
                        best = study.search.fixed()
                    run_repeat(study, out, variant, data_dir, recorder, progress, best, poll_s)
        finally:
            cancelled = cancel_owned_jobs(out, study.executor)
            if cancelled:
                console.print(f"cancelled the jobs of unfinished trials: {', '.join(cancelled)}")

    report_path = None
    if report:
        from attnsweep.pipelines.report.build import build_report, log_report_to_mlflow

        report_path = build_report(out)
        log_report_to_mlflow(out, tracking_uri, recorder.store.study_run())
        recorder.store.client.set_terminated(recorder.store.study_run(), "FINISHED")
    return StudyOutputs(out, tracking_uri, report_path)
