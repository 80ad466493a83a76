"""The work of a study per variant and phase (its plan, `plan.py`, counted) and its simulated
schedule (`attnsweep run --dry-run`), without data, downloads or training.

Per-job time. Calibrated from what the project measured: finished trainings of the same model at
the same image size and executor, found in study folders (this study's own, its sibling folders
under the same parent, e.g. `runs/*`, and `estimate.measured`). A finished trial records its epochs'
seconds (`metrics.jsonl`), its training set and threads (`result.json`), when its job was submitted
(`jobs.json`) and when it ended (`result.json`'s `ended_at`; its mtime for older folders); so the
job's wall time splits into epochs (scaled by training images, and by cores for local jobs) and the rest (start-up, checkpoint
writes, the final test/OOD evaluation), taken as measured. Without a measurement a FLOP model
stands in (forward FLOPs by `torch.utils.flop_counter` on the meta device, a step = 3 forwards,
plus a per-image cost that dominates small images on a CPU); it is marked uncalibrated.

Schedule. The same rules as `scheduler` and `budget`: every variant's search starts at once, a
search configuration holds one job per search split (a variant runs at most
max_concurrent // search_splits of them at once), a variant's repeats become ready when its search
ends, waiting trials start in the budget's order (`budget.Budget`) as soon as their jobs fit. ASHA is not modelled
(every configuration runs all its epochs): an upper estimate for a study that uses it."""
from __future__ import annotations

import datetime
import heapq
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

# The FLOP model (used only without a measurement; a rough prior, marked uncalibrated). A CPU core
# sustains CPU_CORE_TFLOPS on these small models (the demo on 2 cores: 525 GFLOP per training in
# 3.4 s), and each image costs CPU_IMAGE_S per core on top (loading, augmentation, Python per batch:
# what made 28 px MedMNIST trainings take 12x the FLOP time).
GPU_TFLOPS = 8.0
CPU_CORE_TFLOPS = 0.075
CPU_IMAGE_S, GPU_IMAGE_S = 0.004, 0.0002
# Per training without a measurement: job start, imports, data loading, the final evaluation.
STARTUP_S = {"debug": 5.0, "local": 25.0, "slurm": 60.0}
# Per study without a measurement: driver start, data preparation, the model check; and the report at the end.
DRIVER_S, REPORT_S = 60.0, 45.0
# The driver's memory while it follows its jobs (the PSS of its process tree), as bench/driver_scale.py
# measured it with 16-256 SLURM jobs at once: a base (its libraries, MLflow, the study) and a little
# per job it follows at once. The report at the end loads torch for the explanations: about 1 GB more.
DRIVER_BASE_GB, DRIVER_PER_JOB_MB = 0.75, 2.0  # measured 0.65-0.72 GB and 0.7-9.7 MB (docs/benchmarks.md), rounded up


def driver_memory_gb(jobs_at_once: int) -> float:
    return DRIVER_BASE_GB + DRIVER_PER_JOB_MB * jobs_at_once / 1024


def driver_allocation_gb(env=None) -> float | None:
    """The memory of the SLURM job this process runs in (sbatch --mem, or --mem-per-cpu x CPUs), else None."""
    import os

    env = os.environ if env is None else env
    if "SLURM_MEM_PER_NODE" in env:
        return int(env["SLURM_MEM_PER_NODE"]) / 1024
    if "SLURM_MEM_PER_CPU" in env:
        return int(env["SLURM_MEM_PER_CPU"]) * int(env.get("SLURM_CPUS_ON_NODE", "1")) / 1024
    return None


def driver_memory_line(jobs_at_once: int, env=None) -> tuple[str, bool]:
    """What the driver needs for `jobs_at_once` jobs, and whether that exceeds its SLURM job's memory."""
    need, have = driver_memory_gb(jobs_at_once), driver_allocation_gb(env)
    line = f"driver: about {need:.1f} GB of memory and 1 CPU to follow {jobs_at_once} jobs at once"
    if have is None:
        return line, False
    if need > have:
        return (f"{line}, more than the {have:.1f} GB of its SLURM job: give it more "
                f"(sbatch --mem={math.ceil(need + 1)}G slurm/sweep.sbatch ...) or lower max_concurrent"), True
    return f"{line} (its SLURM job has {have:.1f} GB)", False
# Checkpoint write rate (checkpoint.pt: weights, optimizer state; every epoch).
CHECKPOINT_BYTES_PER_S = 150e6


@dataclass(frozen=True)
class PhaseWork:
    variant: str
    model: str
    phase: str
    configs: int
    splits: int
    epochs: int
    gflops_per_image: float

    @property
    def trainings(self) -> int:
        return self.configs * self.splits


@dataclass(frozen=True)
class JobEstimate:
    """One training of a variant: seconds, and where the figure comes from."""

    seconds: float
    calibrated: bool
    basis: str  # e.g. "12 measured trainings (epoch time spread +-9%)"


@dataclass
class Schedule:
    makespan: float  # seconds from the first job's start to the last job's end
    job_seconds: float
    budget: int
    phase_end: dict[str, float] = field(default_factory=dict)  # phase -> when its last job ends
    variant_end: dict[str, float] = field(default_factory=dict)

    @property
    def lower_bound(self) -> float:
        return self.job_seconds / self.budget

    @property
    def occupancy(self) -> float:
        return self.job_seconds / (self.makespan * self.budget) if self.makespan else 0.0


def forward_gflops(model: str, image_size: int, num_classes: int, stem: str = "imagenet") -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attnsweep.models import create

    with torch.device("meta"):
        net = create(model, num_classes, pretrained=None, image_size=image_size, stem=stem)
        x = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(x)
    return counter.get_total_flops() / 1e9


def _num_classes(study: Study) -> int:
    if study.dataset.class_map:
        return len({v for v in study.dataset.class_map.values() if v is not None})
    return 3


def phase_work(study: Study) -> list[PhaseWork]:
    from attnsweep.models.factory import check_input_size

    rows = []
    n_classes = _num_classes(study)
    for vid in study.variant_ids:
        v = study.variant(vid)
        check_input_size(v.model, study.image_size, v.train.stem)  # one line before any job, as the run's preflight
        g = forward_gflops(v.model, study.image_size, n_classes, v.train.stem)
        if study.splits.search_splits:
            rows.append(PhaseWork(vid, v.model, "search", v.search.n_configs(), study.splits.search_splits,
                                  v.train.epochs, g))
        rows.append(PhaseWork(vid, v.model, "repeat", 1, study.splits.repeat_splits, v.train.epochs, g))
    return rows


def images(study: Study) -> tuple[int, int] | None:
    """(pool, fixed test set) images: from `estimate.train_images`, synthderm's `n`, or a MedMNIST
    file's arrays (whose official test set is fixed and not drawn from the pool)."""
    fmt = study.dataset.format
    if fmt == "medmnist" and study.dataset.root:
        import numpy as np

        from attnsweep.data.format_medmnist import npz_path

        try:
            with np.load(npz_path(study.dataset), allow_pickle=False) as z:
                pool, test = len(z["train_labels"]) + len(z["val_labels"]), len(z["test_labels"])
        except (OSError, KeyError, ValueError):
            return None
        return (pool, test) if study.dataset.opts().official_test else (pool + test, 0)
    if study.estimate.train_images:
        return study.estimate.train_images, 0
    if fmt == "synthderm":
        return study.dataset.opts().n, 0
    return None


def training_images(study: Study) -> int | None:
    """Images in a split's training set: the pool less validation, and less the drawn test set
    unless the dataset has a fixed one; MedMNIST's official training set with `official_split`."""
    if study.dataset.format == "medmnist" and study.dataset.root and study.dataset.opts().official_split:
        import numpy as np

        from attnsweep.data.format_medmnist import npz_path

        try:
            with np.load(npz_path(study.dataset), allow_pickle=False) as z:
                return len(z["train_labels"])
        except (OSError, KeyError, ValueError):
            return None
    found = images(study)
    if found is None:
        return None
    pool, fixed_test = found
    s = study.splits
    return round(pool * (1 - s.val_fraction - (0 if fixed_test else s.test_fraction)))


def study_jobs(study: Study) -> int:
    """The most training jobs the study can run at once, whatever the budget: a variant's search
    (every configuration on every search split) or its repeats (they start after its search)."""
    return sum(max(study.variant(v).search.n_configs() * study.splits.search_splits, study.splits.repeat_splits)
               for v in study.variant_ids)


def device_kind(executor) -> str:
    return "gpu" if executor.kind == "slurm" and executor.slurm.gpus_per_node > 0 else "cpu"


def _cores_per_job(study: Study, executor, threads: int | None = None, jobs_at_once: int | None = None) -> float:
    """CPU cores one job's ranks use: their threads, or their share of this machine when local jobs
    side by side ask for more than it has."""
    from attnsweep.pipelines.trial.job_env import machine_cpus
    from attnsweep.pipelines.trial.executors import local_cpu_threads

    if executor.kind == "slurm":
        return float(executor.slurm.cpus_per_task * executor.world_size)
    jobs = jobs_at_once or min(study.max_concurrent, study_jobs(study))  # slots beyond the jobs share no cores
    threads = threads or local_cpu_threads(executor, jobs) or machine_cpus()
    return min(float(threads * executor.world_size), machine_cpus() / jobs)


# ---- measurements ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measured:
    """One finished training found in a study folder."""

    model: str
    image_size: int
    kind: str
    world_size: int
    n_train: int
    epochs: int
    epoch_seconds: float  # median over its epochs (training + validation)
    other_seconds: float  # wall time less the epochs: start-up, checkpoints, final evaluation
    cores: float
    checkpoint_bytes: int


def _iso(ts: str) -> float:
    return datetime.datetime.fromisoformat(ts).timestamp()


def measured_trainings(folders: list[Path]) -> list[Measured]:
    from attnsweep.pipelines.trial.job_env import machine_cpus

    found = []
    for folder in folders:
        study_file = StudyPaths(folder).study_file
        max_concurrent = None
        if study_file.exists():
            import yaml

            max_concurrent = (yaml.safe_load(study_file.read_text()) or {}).get("max_concurrent")
        for result_path in (t.result_file for t in StudyPaths(folder).iter_trials() if t.result_file.exists()):
            d = result_path.parent
            try:
                result = TrialFolder(d).result()
                config = TrialFolder(d).config()
                jobs = TrialFolder(d).jobs()
                lines = TrialFolder(d).epochs()
            except (OSError, ValueError):
                continue
            # one job from submission to result: a resumed or requeued one's wall time has a gap
            if result.get("status") != "ok" or len(jobs) != 1 or len(lines) != result.get("epochs_run"):
                continue
            ended = _iso(result["ended_at"]) if "ended_at" in result else result_path.stat().st_mtime
            wall = ended - _iso(jobs[0]["submitted_at"])
            seconds = [float(x["seconds"]) for x in lines]
            threads = result.get("cpu_threads") or 1
            kind = jobs[0]["kind"]
            ws = int(result.get("world_size") or 1)
            cores = threads * ws if kind == "slurm" or not max_concurrent else \
                min(threads * ws, machine_cpus() / max_concurrent)
            best = TrialFolder(d).best_file
            found.append(Measured(config["model"], int(config["image_size"]), kind, ws, int(result["n_train"]),
                                  len(lines), statistics.median(seconds), max(0.0, wall - sum(seconds)), cores,
                                  3 * best.stat().st_size if best.exists() else 0))
    return found


def calibration_folders(study: Study) -> list[Path]:
    out = study.output_dir()
    folders = [out, *(p for p in sorted(out.parent.glob("*")) if p.is_dir() and p != out),
               *study.estimate.measured]
    return [p for p in dict.fromkeys(folders) if StudyPaths(p).trials_dir.is_dir()]


def _same_kind(study: Study, variant: str, measured: list[Measured]) -> list[Measured]:
    """The measured trainings of `variant`'s model at the study's image size on its executor."""
    v = study.variant(variant)
    return [m for m in measured if m.model == v.model and m.image_size == study.image_size
            and m.kind == v.executor.kind and m.world_size == v.executor.world_size]


def _checkpoint_s(m: Measured) -> float:
    return m.checkpoint_bytes / CHECKPOINT_BYTES_PER_S


def _per_image_s(same: list[Measured]) -> list[float]:
    """Seconds per epoch and training image on one core (training time scales with both)."""
    return [m.epoch_seconds * m.cores / m.n_train for m in same]


def epoch_seconds(study: Study, variant: str, n_train: int, measured: list[Measured]) -> float | None:
    """One epoch of `variant` on a split of `n_train` training images (training, validation and
    its checkpoint write), calibrated on measured trainings; None without one."""
    same = _same_kind(study, variant, measured)
    if not same:
        return None
    cores = _cores_per_job(study, study.variant(variant).executor)
    return statistics.median(_per_image_s(same)) * n_train / cores + statistics.median(_checkpoint_s(m) for m in same)


def job_estimate(study: Study, p: PhaseWork, n_train: int, measured: list[Measured]) -> JobEstimate:
    v = study.variant(p.variant)
    ex = v.executor
    same = _same_kind(study, p.variant, measured)
    if same:
        per_image = _per_image_s(same)
        rate = statistics.median(per_image)
        other = statistics.median(m.other_seconds - m.epochs * _checkpoint_s(m) for m in same)
        seconds = max(0.0, other) + p.epochs * epoch_seconds(study, p.variant, n_train, measured)
        spread = (max(per_image) - min(per_image)) / (2 * rate) if len(same) > 1 else None
        how = f"{len(same)} measured training{'s' if len(same) > 1 else ''}" + \
              (f", epoch time spread +-{spread:.0%}" if spread is not None else ", one sample")
        return JobEstimate(seconds, True, how)
    gpu = device_kind(ex) == "gpu"
    tflops = study.estimate.tflops or (GPU_TFLOPS if gpu else CPU_CORE_TFLOPS * _cores_per_job(study, ex))
    if gpu:
        tflops *= ex.world_size
    s = study.splits
    n_val = n_train * s.val_fraction / max(1e-9, 1 - s.val_fraction - s.test_fraction)
    n_test = n_train * s.test_fraction / max(1e-9, 1 - s.val_fraction - s.test_fraction)
    per_image = GPU_IMAGE_S / ex.world_size if gpu else CPU_IMAGE_S * 2 / _cores_per_job(study, ex)
    gflop = p.epochs * (3 * n_train + n_val) * p.gflops_per_image + n_test * (1 + len(study.ood)) * p.gflops_per_image
    images_seen = p.epochs * (n_train + n_val) + n_test * (1 + len(study.ood))
    from attnsweep.models import count_params

    checkpoint_bytes = 3 * 4 * count_params(p.model, _num_classes(study), study.image_size)  # weights, momentum, best
    seconds = gflop / (tflops * 1e3) + images_seen * per_image + STARTUP_S[ex.kind] + \
        p.epochs * checkpoint_bytes / CHECKPOINT_BYTES_PER_S
    return JobEstimate(seconds, False, "FLOP model, uncalibrated (no measured training of this model and size)")


# ---- the schedule ------------------------------------------------------------------------------

def simulate(study: Study, rows: list[PhaseWork], job_seconds: dict[str, float], budget: int) -> Schedule:
    """Event simulation of the study's trials under a budget of `budget` jobs (see the module doc)."""
    from attnsweep.pipelines.sweep.budget import Budget
    from attnsweep.pipelines.sweep.scheduler import start_order

    by_variant = {v: {p.phase: p for p in rows if p.variant == v} for v in study.variant_ids}
    s_splits = study.splits.search_splits
    search_cap = max(1, budget // s_splits) if s_splits else 0
    ready: list[tuple[float, int, str, str, int]] = []  # (ready at, seq, variant, phase, jobs)
    seq = 0

    def push(t: float, variant: str, phase: str, n: int, jobs: int) -> None:
        nonlocal seq
        for _ in range(n):
            ready.append((t, seq, variant, phase, jobs))
            seq += 1

    left_search, running_search = {}, dict.fromkeys(study.variant_ids, 0)
    for v in start_order(study):
        if "search" in by_variant[v]:
            left_search[v] = by_variant[v]["search"].configs
            push(0.0, v, "search", left_search[v], s_splits)
        else:
            push(0.0, v, "repeat", by_variant[v]["repeat"].splits, 1)
    free, t, events, job_s = budget, 0.0, [], 0.0
    sched = Schedule(0.0, 0.0, budget)
    order = Budget(budget, study.baselines(), study.variant_ids)  # only its order: who goes first
    while ready or events:
        for item in sorted(ready, key=lambda r: (order.priority(r[2], r[3]), r[1])):  # the budget's order, first fit
            _, _, v, phase, jobs = item
            if jobs > free or (phase == "search" and running_search[v] >= search_cap):
                continue
            ready.remove(item)
            free -= jobs
            running_search[v] += phase == "search"
            d = job_seconds[v]
            job_s += d * jobs
            heapq.heappush(events, (t + d, v, phase, jobs))
        t, v, phase, jobs = heapq.heappop(events)
        free += jobs
        sched.phase_end[phase] = max(sched.phase_end.get(phase, 0.0), t)
        sched.variant_end[v] = max(sched.variant_end.get(v, 0.0), t)
        if phase == "repeat":
            order.repeats_done[v] = order.repeats_done.get(v, 0) + 1
        if phase == "search":
            running_search[v] -= 1
            left_search[v] -= 1
            if left_search[v] == 0:
                push(t, v, "repeat", by_variant[v]["repeat"].splits, 1)
    sched.makespan, sched.job_seconds = t, job_s
    return sched


def driver_seconds(folders: list[Path]) -> tuple[float, float, bool]:
    """(start-up before the first job, report after the last) of earlier runs, else the defaults."""
    starts, reports = [], []
    for folder in folders:
        submitted = [_iso(r["submitted_at"]) for t in StudyPaths(folder).iter_trials() for r in t.jobs()[:1]]
        results = [t.result_file.stat().st_mtime for t in StudyPaths(folder).iter_trials() if t.result_file.exists()]
        written = [f.stat().st_mtime for f in StudyPaths(folder).data_dir.rglob("*") if f.is_file()]
        if submitted and written:
            starts.append(min(submitted) - min(written))  # data preparation, Ray, the first submission
        report = StudyPaths(folder).report_dir / "index.html"
        if report.exists() and results:
            reports.append(report.stat().st_mtime - max(results))
    starts, reports = [x for x in starts if 0 < x < 3600], [x for x in reports if 0 < x < 3600]
    if starts and reports:
        return statistics.median(starts), statistics.median(reports), True
    return DRIVER_S, REPORT_S, False
