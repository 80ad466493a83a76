"""`attnsweep status OUT`: where a study stands, read from its folder alone (and `squeue` where
SLURM is there), while its driver runs elsewhere or after it ended. No Ray, no torch.

Per variant and phase, in trainings (one trial folder: a configuration on a split, one job):
done (`ok`/`diverged`), failed, running (a job submitted, no result; SLURM: running in `squeue`),
queued (planned and not started, or pending in `squeue`); the current best configuration (the
driver's rule, `store.search_scores.best_config`); job-hours (each job's submission to its result,
or to now); an ETA (the trainings left times this study's measured time per training,
as `estimate.measured_trainings` measures it, over its job budget). The state comes from the study's lock
(`lock.py`): a recorded driver that is alive means running; else the trials say finished, failed
(a trial failed, or no configuration could be chosen), or stopped (work left, no driver)."""
from __future__ import annotations

import datetime
import json
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import yaml

from attnsweep.pipelines.config.compare import RESOLVED
from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.search_scores import NoEligibleConfig, best_config
from attnsweep.pipelines.sweep.lock import holder_alive
from attnsweep.pipelines.trial.folder import FINAL_STATUSES, TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

# exit status of `attnsweep status` per state (2 is a bad study folder, as every user error)
EXIT_CODES = {"finished": 0, "failed": 1, "running": 3, "stopped": 4}


class NotAStudy(ValueError):
    """The folder is no study folder (one line)."""


@dataclass
class PhaseStatus:
    variant: str
    phase: str
    planned: int
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0
    job_hours: float = 0.0
    best: dict | None = None  # the search's current choice (search rows only)


@dataclass
class StudyStatus:
    out: str
    name: str
    state: str
    driver: dict | None
    phases: list[PhaseStatus]
    jobs: list[dict] = field(default_factory=list)  # the SLURM jobs of unfinished trials: id, state
    job_hours: float = 0.0
    eta_s: float | None = None
    eta_basis: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def as_json(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


def _iso(ts: str) -> float:
    return datetime.datetime.fromisoformat(ts).timestamp()


def _trial(t: TrialFolder) -> dict:
    """A trial folder's state from its files: status (its result's, else None) and its jobs; a file
    being written or damaged counts as not there yet."""
    def read(what):
        try:
            return what()
        except (OSError, ValueError):
            return None
    result, jobs = read(t.result) or {}, read(t.jobs) or []
    return {"status": result.get("status"), "ended_at": result.get("ended_at"), "jobs": jobs}


def _squeue(job_ids: list[str]) -> dict[str, str] | None:
    """job id -> SLURM state for the jobs `squeue` still lists; None without SLURM here."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        return None
    return dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())


def saved_study(out: Path) -> Study:
    """`<out>/study.yaml`, the study as it ran."""
    path = StudyPaths(out).study_file
    if not path.exists():
        raise NotAStudy(f"{out}: no study.yaml (not a study folder, or its driver has not started)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise NotAStudy(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise NotAStudy(f"{path}: expected a mapping of study settings")
    (data.get("search") or {}).pop("warm_start", None)  # the earlier study need not be there any more
    data.pop(RESOLVED, None)  # derived from the rest, for the report
    return Study.model_validate(data)


def status(out: Path, now: float | None = None) -> StudyStatus:
    out = Path(out).resolve()
    study = saved_study(out)
    now = time.time() if now is None else now
    splits = {"search": study.splits.search_splits, "repeat": study.splits.repeat_splits}
    trials = {}
    for phase in ("search", "repeat"):
        for v in study.variant_ids:
            trials[(v, phase)] = [_trial(t) for t in StudyPaths(out).iter_trials(phase, v)]
    open_jobs = [j for ts in trials.values() for t in ts if t["status"] not in FINAL_STATUSES
                 and t["status"] != "failed" for j in t["jobs"][-1:]]
    slurm_ids = [str(j["job_id"]) for j in open_jobs if j.get("kind") == "slurm"]
    queue = _squeue(slurm_ids)

    metrics = sorted({study.variant(v).train.selection_metric for v in study.variant_ids})
    rows = parquet_store.read(out, columns=["phase", "variant", "eval_set", "split", "status", "lr", "weight_decay",
                                            "config_hash", *metrics], where=pc.field("eval_set") == "val").to_pandas()
    phases = []
    for v in study.variant_ids:
        for phase in ("search", "repeat"):
            if not splits[phase]:
                continue
            planned = splits[phase] * (study.variant(v).search.n_configs() if phase == "search" else 1)
            p = PhaseStatus(v, phase, planned)
            for t in trials[(v, phase)]:
                if t["status"] in FINAL_STATUSES:
                    p.done += 1
                elif t["status"] == "failed":
                    p.failed += 1
                elif t["jobs"]:  # a SLURM job pending or no longer listed is not running
                    job = t["jobs"][-1]
                    asked = queue is not None and job.get("kind") == "slurm"
                    p.running += not asked or queue.get(str(job["job_id"])) not in (None, "PENDING")
                if t["jobs"]:
                    end = _iso(t["ended_at"]) if t["ended_at"] else now
                    p.job_hours += max(0.0, end - _iso(t["jobs"][0]["submitted_at"])) / 3600
            p.queued = max(0, planned - p.done - p.failed - p.running)
            if phase == "search":
                try:
                    p.best = best_config(out, v, splits["search"], study.variant(v).train.selection_metric, rows)
                except NoEligibleConfig:
                    p.best = None
            elif p.done:  # the repeats train the configuration the search chose
                rep = rows[(rows["phase"] == "repeat") & (rows["variant"] == v)]
                p.best = {"lr": float(rep["lr"].iloc[0]), "weight_decay": float(rep["weight_decay"].iloc[0])} \
                    if len(rep) else None
            phases.append(p)

    eta_s, basis = _eta(study, trials, phases)
    driver = _driver(out)
    return StudyStatus(str(out), study.name, _state(driver, phases), driver, phases,
                       [{"job_id": i, "state": (queue or {}).get(i, "unknown" if queue is None else "gone")}
                        for i in slurm_ids], sum(p.job_hours for p in phases), eta_s, basis)


def _driver(out: Path) -> dict | None:
    """The driver's record (`StudyPaths.driver_file`) with `alive`; None when no driver holds the folder."""
    try:
        record = json.loads(StudyPaths(out).driver_file.read_text())
    except (OSError, ValueError):
        return None
    return {**record, "alive": holder_alive(record)} if isinstance(record, dict) else None


def _state(driver: dict | None, phases: list[PhaseStatus]) -> str:
    if driver and driver["alive"]:
        return "running"
    if any(p.failed for p in phases) or any(p.phase == "search" and p.done + p.failed == p.planned and p.best is None
                                            for p in phases):
        return "failed"
    if all(p.done == p.planned for p in phases):
        return "finished"
    return "stopped"


def _eta(study: Study, trials: dict, phases: list[PhaseStatus]) -> tuple[float | None, str]:
    """Seconds until the trainings left are done: the trainings left of each variant times the
    median wall time (submission to result) of its finished one-job trainings in this study, the
    measurement `estimate.measured_trainings` calibrates on, spread over the job budget."""
    left = [p for p in phases if p.queued + p.running]
    if not left:
        return 0.0, "nothing left"
    walls: dict[str, list[float]] = {}
    for (v, _), ts in trials.items():
        walls.setdefault(v, []).extend(_iso(t["ended_at"]) - _iso(t["jobs"][0]["submitted_at"]) for t in ts
                                       if t["status"] == "ok" and t["ended_at"] and len(t["jobs"]) == 1)
    unknown = [f"{p.variant} {p.phase}" for p in left if not walls.get(p.variant)]
    if unknown:
        return None, f"no finished training measured yet for {', '.join(unknown)}"
    seconds = sum((p.queued + p.running) * statistics.median(walls[p.variant]) for p in left)
    n = sum(len(w) for w in walls.values())
    return seconds / study.max_concurrent, f"{n} measured trainings, {study.max_concurrent} jobs at once"
