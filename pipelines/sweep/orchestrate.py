"""`attnsweep run`: the driver of a study. Prepares the data once, checks every variant's model in
a process of its own (torch stays out of the driver), runs the search and repeat phases of every
variant at once (`scheduler`), records every trial (`tracking`), and builds the report. It owns
the jobs it submits: on a normal exit, SIGINT or SIGTERM it cancels those still queued or running
(SIGKILL leaves them, and `--resume` re-attaches to them). A plain `scancel` of a driver job is
followed by SIGKILL after SLURM's `KillWait`: so on a signal the jobs are cancelled first, in the
handler, before anything unwinds."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from attnsweep.data.atomic import remove_temp_files, write_text
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.trial import executors
from attnsweep.pipelines.config.compare import RESOLVED, check_resume
from attnsweep.pipelines.sweep import budget, notify
from attnsweep.pipelines.sweep.failed_trials import check_complete, retry_infrastructure_failures
from attnsweep.pipelines.sweep.lock import describe, study_lock
from attnsweep.pipelines.sweep.stale_trials import set_aside_stale_trials
from attnsweep.pipelines.sweep.watcher import FOLDER_POLL_S
from attnsweep.pipelines.config.study import LogRange, Study
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

log = logging.getLogger(__name__)


class StudyExists(RuntimeError):
    pass


@dataclass(frozen=True)
class StudyOutputs:
    out: Path
    tracking_uri: str
    report: Path | None
    experiment_id: str | None = None


def write_study_file(study: Study, out: Path) -> Path:
    """`<out>/study.yaml`: the validated study as it ran, with each variant's merged settings and
    baseline (`resolved`, read by the report), temp + rename."""
    path = StudyPaths(out).study_file
    data = {**study.model_dump(mode="json"), RESOLVED: study.resolved()}
    write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def tune_trial_counts(study: Study) -> dict[tuple[str, str], int]:
    """(variant, phase) -> Tune trials: configurations in the search, splits in the repeat."""
    plan = {}
    for v in study.variant_ids:
        if study.splits.search_splits:
            plan[(v, "search")] = study.variant(v).search.n_configs()
        plan[(v, "repeat")] = study.splits.repeat_splits
    return plan


@contextlib.contextmanager
def as_interrupt(*signums: int, first: Callable[[], object] = lambda: None) -> Iterator[None]:
    """These signals run `first`, then unwind like Ctrl-C, so the jobs get cancelled: SIGTERM
    (scancel, a time limit, `kill`), and SIGINT set explicitly, because a driver started with `&`
    or `nohup` from a script inherits an ignored SIGINT (and would pass that on to the processes it
    starts). `first` runs once, to its end: a signal that comes while it runs is ignored (the
    interrupt follows when it is done); one that comes later interrupts the unwinding."""
    state = {"first": "not run"}

    def handler(signum, frame):
        if state["first"] == "running":
            return
        if state["first"] == "not run":
            state["first"] = "running"
            try:
                first()
            except Exception:  # noqa: BLE001 -- the interrupt must come; the caller's finally tries again
                log.exception("on signal %s", signum)
            finally:
                state["first"] = "done"
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def cancel_owned_jobs(out: Path, study: Study) -> list[str]:
    """Stop every job of this study's unfinished trials that is still queued or running, all at
    once -> their ids. A variant's trials are stopped through its own executor."""
    by_kind: dict[str, tuple] = {}
    for jobs in (t.jobs_file for t in StudyPaths(out).iter_trials() if t.jobs_file.exists()):
        trial_dir = jobs.parent
        if TrialFolder(trial_dir).final_result() is None:
            variant = trial_dir.parent.name  # trials/<phase>/<variant>/<trial_id>
            executor = study.variant(variant).executor if variant in study.variant_ids else study.executor
            by_kind.setdefault(executor.kind, (executor, []))[1].append(trial_dir)
    return [job for executor, dirs in by_kind.values() for job in executors.stop_jobs(dirs, executor)]


def preflight_apart(study: Study, out: Path, data_dir: Path, n_train: int) -> None:
    """`preflight` in a process of its own: the model probe imports torch and timm (~0.7 GB), which
    the driver, following hundreds of jobs for hours, does not keep."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(preflight, study, out, data_dir, n_train).result()


def preflight(study: Study, out: Path, data_dir: Path, n_train: int) -> None:
    """Fail before any job with one line for what only the prepared data or the executor can tell:
    each variant's model at the study's image size, a trial configuration of each variant (e.g.
    milestones), the batch against the ranks and the smallest training set."""
    from pydantic import ValidationError

    from attnsweep.pipelines.sweep.plan import make_trial
    from attnsweep.pipelines.config.errors import one_line
    from attnsweep.pipelines.config.trial_config import TrialConfigError

    for variant in study.variant_ids:
        v = study.variant(variant)
        lr = v.search.lr.low if isinstance(v.search.lr, LogRange) else v.search.lr[0]
        wd = v.search.weight_decay.low if isinstance(v.search.weight_decay, LogRange) else v.search.weight_decay[0]
        try:
            trial = make_trial(study, out, "repeat", variant, "repeat-0", lr, wd, data_dir, probe_model=True)
        except ValidationError as err:
            raise TrialConfigError(one_line(err, f"study {study.name}, {variant}")) from None
        executors.validate(trial.cfg, v.executor)
        if v.train.batch_size > n_train:
            field = "train.batch_size" if v.train.batch_size == study.train.batch_size else \
                f"variants.{variant}.train.batch_size"
            raise TrialConfigError(f"{field}: {v.train.batch_size} is larger than the training set of a split "
                                   f"({n_train} images)")


def stall_defaults(study: Study, n_train: int, console: Console) -> dict[str, float | None]:
    """Each variant's calibrated epoch seconds (`estimate.epoch_seconds`, None without a measured
    training), which the stall watchdog's default limits follow; its limits in one line."""
    from attnsweep.pipelines.sweep import estimate, stall

    measured = estimate.measured_trainings(estimate.calibration_folders(study))
    epoch_s = {v: estimate.epoch_seconds(study, v, n_train, measured) for v in study.variant_ids}
    described = {}
    for v in study.variant_ids:
        described.setdefault(stall.limits(study.variant(v).executor.stall, epoch_s[v], "calibrated").describe(),
                             []).append(v)
    console.print("stall watchdog, a job without a new epoch line is " +
                  "; ".join(f"{how}: {', '.join(vs)}" if len(described) > 1 else how for how, vs in described.items()),
                  markup=False, highlight=False)
    return epoch_s


def check_output_folder(out: Path, resume: bool) -> None:
    if not resume and StudyPaths(out).has_trials():
        raise StudyExists(f"{out}: holds trials of an earlier run; pass --resume to finish it, or use another --out")


def run_study(study: Study, resume: bool = False, console: Console | None = None, poll_s: float = FOLDER_POLL_S,
              report: bool = True, allow_failed: bool = False) -> StudyOutputs:
    """The study under its folder's lock (`lock.study_lock`: one driver per study). Failed trials
    end it with `StudyIncomplete` (after the report) unless `allow_failed`."""
    console = console or Console()
    out = study.output_dir()
    if out.exists() and not out.is_dir():
        raise StudyExists(f"{out}: --out names a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    took_over = lambda gone: console.print(f"taking over the lock of a driver that is gone ({describe(gone)})")  # noqa: E731
    # SIGINT before Ray and the jobs start: they inherit its disposition
    with study_lock(out, resume, took_over), as_interrupt(signal.SIGINT):
        try:
            outputs = _run_locked(study, out, resume, console, poll_s, report, allow_failed)
        except BaseException as e:
            notify.study_ended_early(study, out, e)
            raise
        notify.study_finished(study, out)
        return outputs


def _run_locked(study: Study, out: Path, resume: bool, console: Console, poll_s: float, report: bool,
                       allow_failed: bool) -> StudyOutputs:
    from attnsweep.data import load_split, prepare
    from attnsweep.pipelines.store.mlflow_store import MlflowStore, default_tracking_uri
    from attnsweep.pipelines.sweep.progress import Progress
    from attnsweep.pipelines.sweep.scheduler import run_variants
    from attnsweep.pipelines.sweep.tracking import Recorder

    check_output_folder(out, resume)
    from attnsweep.pipelines.sweep.estimate import driver_memory_line

    driver, short = driver_memory_line(study.max_concurrent)
    if short:
        console.print(f"[yellow]warning: {driver}[/]")
    for skipped in parquet_store.check(out):  # a damaged results file: one line now, not a traceback mid-study
        console.print(f"not a result file of this study, left out: {skipped}")
    paths = StudyPaths(out)
    for folder, recursive in ((out, False), (paths.data_dir, True), (paths.results_dir, False),
                              (paths.epochs_dir, False)):  # not trials/: jobs may be running there
        remove_temp_files(folder, recursive)  # of a driver or a preparation that was killed
    stored = paths.study_file
    if resume and stored.exists():
        changed = check_resume(yaml.safe_load(stored.read_text()), study.model_dump(mode="json"), str(stored))
        if changed:
            console.print(f"changed since the study last ran, no trial depends on them: {', '.join(changed)}")
    write_study_file(study, out)
    console.print(f"[bold]{study.name}[/]: preparing {study.dataset_label} at {study.image_size}px in {StudyPaths(out).data_dir}")
    data_dir = prepare(study.dataset, study.splits, study.image_size, out, ood=study.ood)
    first = load_split(data_dir, study.splits.names()[0])
    n_train = min(len(load_split(data_dir, s).sets["train"]) for s in study.splits.names())
    preflight_apart(study, out, data_dir, n_train)
    eval_sets = [name for name in first.sets if name != "train"]
    tracking_uri = study.tracking_uri or default_tracking_uri(out)
    store = MlflowStore(tracking_uri, study.name, out, study.dataset_label, study.stats.metrics[0])
    recorder = Recorder(study, out, store, eval_sets, first.class_names, warn=console.print)
    for line in (store.note, set_aside_stale_trials(out, data_dir, store)):
        if line:
            console.print(line)
    recorder.resync()
    if resume:
        retried = retry_infrastructure_failures(out, recorder.store)
        if retried:
            console.print(f"retrying {len(retried)} trial(s) that failed for infrastructure reasons: {', '.join(retried)}")

    epoch_s = stall_defaults(study, n_train, console)

    def cancel_jobs() -> None:
        t0 = time.monotonic()
        cancelled = cancel_owned_jobs(out, study)
        if cancelled:  # said at once: a driver job's scancel kills the driver soon after
            console.print(f"cancelled {len(cancelled)} job(s) of unfinished trials in {time.monotonic() - t0:.1f} s: "
                          f"{', '.join(cancelled)}")

    def on_signal() -> None:
        """Before anything unwinds (see the module's doc): nothing is recorded from now on (a
        cancelled job is no failed trial), then every job goes."""
        budget.interrupted.set()
        cancel_jobs()

    try:
        with as_interrupt(signal.SIGTERM, signal.SIGINT, first=on_signal):
            with Progress(study.name, tune_trial_counts(study), console, study.train.selection_metric) as progress:
                run_variants(study, out, data_dir, recorder, progress, poll_s, epoch_s)
    finally:
        cancel_jobs()

    if study.features:  # before the report, so that it shows Table 3
        from attnsweep.pipelines.report.features import analyse_study, log_features_to_mlflow

        analyse_study(out, study.features, log=console.print)
        recorder.mlflow(lambda: log_features_to_mlflow(out, tracking_uri, recorder.store.study_run()))

    report_path = None
    if report:
        from attnsweep.pipelines.report.build import build_report, log_report_to_mlflow

        report_path = build_report(out)
        if recorder.flush() and recorder.mlflow(lambda: log_report_to_mlflow(out, tracking_uri, recorder.store.study_run())):
            recorder.mlflow(lambda: recorder.store.client.set_terminated(recorder.store.study_run(), "FINISHED"))
    if not recorder.flush():
        console.print(f"[yellow]MLflow at {tracking_uri} is still down: {len(recorder.pending)} trial(s) are in "
                      f"Parquet but not in MLflow; run with --resume when it is back to replay them[/]")
    failed = check_complete(out, allow_failed)
    if len(failed):
        console.print(f"[yellow]{len(failed)} trial(s) failed, accepted with --allow-failed (see the report)[/]")
    return StudyOutputs(out, tracking_uri, report_path, recorder.store.experiment_id)
