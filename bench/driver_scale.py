"""What the driver costs per job it follows, at the job counts a cluster gives it.

The real driver (`attnsweep run`: the search, the study's budget, the recorder, MLflow, Parquet)
follows real submitit jobs on the local SLURM test cluster (slurm/testcluster, its node declared
with enough CPUs for N jobs at once); the jobs run the stand-in trainer
(`attnsweep.pipelines.trial.standin`: epoch lines at a set pace, then a result, through
`TrialFolder`, no torch), so everything downstream of a job is real. For each N it runs a study
with N jobs at once (4 variants; a grid of N/8 configurations x 2 search splits, then N/4 repeat
splits each: 2N jobs in all, `max_concurrent: N`, `--no-report`) and prints one line:

    jobs N: driver X GB peak, Y MB per job, cpu Z s per job, sacct A/min, squeue B/min, sbatch C/min,
            fs D ops/s: trial folders E per job per 5 s (polls P), MLflow store M/s, occupancy F,
            end->next start G s (median)

- driver: the PSS of the driver's process tree (the driver and everything it started), summed, its
  peak over the run (sampled every second); MB per job: that peak above the smallest N's, divided
  by the extra jobs at once.
- cpu: the tree's CPU seconds (user + system) divided by the jobs of the study.
- sacct/squeue/sbatch: calls per minute of the run, counted by wrappers first on the driver's PATH.
- fs: path system calls (open, stat, rename, ...) on the study folder by the driver's processes,
  counted with strace (`--seccomp-bpf`, so other system calls are not slowed), in all; those on
  trial folders per job per 5 s, and among them the polls (a `stat` of the trial folder itself,
  what the driver does per job whether or not anything happened; the rest are reads and writes
  when something did: a submission, an epoch, a result); and those of the MLflow sqlite store in
  the study folder (its journal, per recording).
- occupancy: job-seconds (from each job's submission to its `ended_at`) / (N x the span from the
  first submission to the last end). end->next start: for each job's end, the time to the next
  submission after it (median).
- bare loop: the same 2N jobs (the same trial configurations, `executors.submit`, 8 submitting
  threads as the driver has) followed by a loop with no search, recorder or MLflow, that submits a
  variant's repeats the moment its last search job's `result.json` appears: what this machine and
  its SLURM allow (job starts, the controller) with a driver of no cost. Its occupancy beside the
  driver's, and their ratio, say how much of the loss is the driver's.

    .venv/bin/python bench/driver_scale.py                   # N = 16, 64, 128
    .venv/bin/python bench/driver_scale.py --jobs 16 256 --epoch-s 40

Needs root and the SLURM packages (as `make test`), and strace for the fs count (without it: n/a).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from attnsweep.pipelines.trial import standin

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm" / "testcluster"
COUNTED = ("sacct", "squeue", "sbatch", "scancel")
VARIANTS = ["resnet18", "resnet18+se", "resnet18+eca", "resnet18+cbam"]


def study_file(folder: Path, n: int, epochs: int) -> Path:
    """2n jobs, n at once: per variant n/8 grid configurations x 2 search splits, then n/4 repeats."""
    configs = max(1, n // 8)
    lrs = [float(f"{10 ** (-3 + 2 * i / max(1, configs - 1)):.4g}") for i in range(configs)]
    study = {
        "name": f"driver_scale_{n}",
        "dataset": {"format": "synthderm", "options": {"n": 64, "seed": 0}},
        "image_size": 32,
        "variants": VARIANTS,
        "train": {"epochs": epochs, "batch_size": 8},
        "search": {"algorithm": "grid", "lr": lrs, "weight_decay": [0.0]},
        "splits": {"val_fraction": 0.2, "test_fraction": 0.2, "search_splits": 2, "repeat_splits": max(1, n // 4)},
        "executor": {"kind": "slurm", "slurm": {"cpus_per_task": 1, "mem_gb": 0.05, "timeout_min": 120}},
        "max_concurrent": n,
        "max_failures": 2,  # the test cluster's one slurmd, launching 100+ steps on 2 cores, loses some
    }
    path = folder / f"driver_scale_{n}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def counting_wrappers(folder: Path, log: Path) -> Path:
    """A bin folder whose sacct/squeue/sbatch/scancel log a line, then run the real program."""
    folder.mkdir(parents=True)
    for name in COUNTED:
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name}: not installed (apt-get install slurm-client)")
        (folder / name).write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec {real} "$@"\n')
        (folder / name).chmod(0o755)
    return folder


def start_cluster(folder: Path, cpus: int) -> dict[str, str]:
    proc = subprocess.run([str(SCRIPTS / "start.sh"), str(folder), "--cpus", str(cpus)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the SLURM test cluster did not start: {proc.stderr.strip()}")
    words = (folder / "env.sh").read_text().split()
    return dict(w.split("=", 1) for w in words if "=" in w)


class TreeSampler(threading.Thread):
    """Every second: the summed PSS of `root`'s process tree (peak kept) and each process's CPU time."""

    def __init__(self, root: psutil.Process, skip: int | None = None):
        super().__init__(daemon=True)
        self.root, self.skip = root, skip
        self.peak_pss, self.cpu, self.processes = 0, {}, 0
        self.peak_parts: list[tuple[str, int]] = []  # (process name, PSS) at the peak, largest first
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            parts = []
            for p in tree:
                if p.pid == self.skip:
                    continue
                try:
                    parts.append((" ".join(p.cmdline()[:3])[-60:], p.memory_full_info().pss))
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            pss = sum(size for _, size in parts)
            if pss > self.peak_pss:
                self.peak_pss, self.peak_parts = pss, sorted(parts, key=lambda part: -part[1])
            self.processes = max(self.processes, len(tree))


def job_spans(out: Path) -> list[tuple[str, str, float, float]]:
    """(phase, variant, submitted, ended) of every finished job, from the trial folders."""
    spans = []
    for result in out.glob("trials/*/*/*/result.json"):
        jobs = json.loads((result.parent / "jobs.json").read_text())
        start = datetime.datetime.fromisoformat(jobs[-1]["submitted_at"]).timestamp()
        end = datetime.datetime.fromisoformat(json.loads(result.read_text())["ended_at"]).timestamp()
        spans.append((result.parent.parent.parent.name, result.parent.parent.name, start, end))
    return spans


def losses(spans: list[tuple[str, str, float, float]]) -> dict[str, float]:
    """Where occupancy goes: the first wave's submission ramp (first to last search submission:
    sbatch and the controller), the spread of the search jobs' ends (the jobs), and each variant's
    turn from its last search job's end to its first repeat submission (the driver; median)."""
    search = [s for s in spans if s[0] == "search"]
    turns = []
    for variant in {s[1] for s in spans}:
        ends = [e for p, v, _, e in spans if v == variant and p == "search"]
        repeats = [s for p, v, s, _ in spans if v == variant and p == "repeat"]
        if ends and repeats:
            turns.append(min(repeats) - max(ends))
    return {"ramp_s": max(s for *_, s, _ in search) - min(s for *_, s, _ in search),
            "end_spread_s": max(e for *_, e in search) - min(e for *_, e in search),
            "turn_s": statistics.median(turns) if turns else float("nan")}


def occupancy(spans: list[tuple[str, str, float, float]], n: int) -> float:
    first, last = min(s for *_, s, _ in spans), max(e for *_, e in spans)
    return sum(e - s for *_, s, e in spans) / (n * (last - first))


def run_bare(n: int, work: Path, env: dict[str, str], epochs: int, epoch_s: float) -> dict:
    """The machine's ceiling: the driver's jobs, submitted and followed by a loop of no cost."""
    from concurrent.futures import ThreadPoolExecutor

    from attnsweep.pipelines.config.study import load_study
    from attnsweep.pipelines.sweep.plan import make_trial, phase_splits
    from attnsweep.pipelines.trial import executors

    folder = work / f"bare{n}"
    folder.mkdir()
    os.environ.update({**env, **standin.env(epoch_s)})  # jobs inherit the submitter's environment
    study = load_study(study_file(folder, n, epochs))
    out = folder / "out"

    def trials(phase: str, variant: str, lrs: list[float]) -> list:
        return [make_trial(study, out, phase, variant, split, lr, 0.0, None)
                for lr in lrs for split in phase_splits(study, phase)]

    def submit(trial) -> None:
        name = executors.job_name(study.name, trial.ref.variant, trial.ref.phase, trial.ref.split)
        executors.submit(trial.cfg, trial.ref.dir, study.executor, name=name)

    search = {v: trials("search", v, list(study.search.lr)) for v in VARIANTS}
    repeats = {v: trials("repeat", v, [study.search.lr[0]]) for v in VARIANTS}
    waiting = dict(search)
    with ThreadPoolExecutor(8) as pool:
        submitted = [pool.submit(submit, t) for ts in search.values() for t in ts]
        while waiting:
            for v, ts in list(waiting.items()):
                if all((t.ref.dir / "result.json").exists() for t in ts):
                    del waiting[v]
                    submitted += [pool.submit(submit, t) for t in repeats[v]]
            time.sleep(0.2)
        for f in submitted:
            f.result()
    every = [t for ts in repeats.values() for t in ts]
    while not all((t.ref.dir / "result.json").exists() for t in every):
        time.sleep(0.5)
    return {"occupancy": occupancy(job_spans(out), n)}


def run_one(n: int, work: Path, env: dict[str, str], epochs: int, epoch_s: float, use_strace: bool) -> dict:
    folder = work / f"n{n}"
    folder.mkdir()
    calls = folder / "calls.log"
    calls.touch()
    bin_dir = counting_wrappers(folder / "bin", calls)
    out = folder / "out"
    driver_env = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", **standin.env(epoch_s)}
    cmd = [str(Path(sys.executable).with_name("attnsweep")), "run", str(study_file(folder, n, epochs)),
           "--out", str(out), "--no-report"]
    trace = folder / "strace.log"
    if use_strace:
        cmd = ["strace", "--seccomp-bpf", "-f", "-qq", "-e", "trace=%file", "-e", "signal=none", "-o", str(trace), *cmd]
    t0 = time.monotonic()
    log = (folder / "driver.log").open("w")
    proc = subprocess.Popen(cmd, env=driver_env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    root = psutil.Process(proc.pid)
    sampler = TreeSampler(root, skip=proc.pid if use_strace else None)
    sampler.start()
    rc = proc.wait()
    sampler.stop.set()
    sampler.join()
    wall = time.monotonic() - t0
    if rc != 0:
        sys.exit(f"jobs {n}: the driver failed (exit {rc}); see {folder / 'driver.log'}:\n"
                 + (folder / "driver.log").read_text()[-3000:])
    phases = job_spans(out)
    spans = [(s, e) for _, _, s, e in phases]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    minutes = (last - first) / 60
    counts = {name: 0 for name in COUNTED}
    for line in calls.read_text().split():
        counts[line] += 1
    fs = fs_ops(trace, out) if use_strace else None
    starts = sorted(s for s, _ in spans)
    gaps = []
    for _, end in spans:
        later = [s for s in starts if s >= end]
        if later:
            gaps.append(later[0] - end)
    return {"n": n, "jobs": len(spans), "peak_pss": sampler.peak_pss, "peak_parts": sampler.peak_parts, "cpu_s": sum(sampler.cpu.values()),
            "processes": sampler.processes, "wall_s": wall, "span_s": last - first,
            "per_min": {k: v / minutes for k, v in counts.items()},
            "fs": None if fs is None else {k: v / (last - first) for k, v in fs.items()},
            "occupancy": occupancy(phases, n), "gap_s": statistics.median(gaps) if gaps else float("nan"),
            **losses(phases)}


def line(r: dict, base: dict) -> str:
    extra = r["n"] - base["n"]
    per_job = (r["peak_pss"] - base["peak_pss"]) / extra / 2**20 if extra else float("nan")
    f = r["fs"]
    fs = "fs n/a" if f is None else \
        (f"fs {f['all']:.0f} ops/s: trial folders {(f['polls'] + f['trial_events']) / r['n'] * 5:.2f} per job per 5 s "
         f"(polls {f['polls'] / r['n'] * 5:.2f}), MLflow store {f['mlflow']:.0f}/s")
    m = r["per_min"]
    bare = (f" (bare loop {r['bare_occupancy']:.2f}: driver/bare {r['occupancy'] / r['bare_occupancy']:.2f})"
            if "bare_occupancy" in r else "")
    return (f"jobs {r['n']}: driver {r['peak_pss'] / 2**30:.2f} GB peak, {per_job:.1f} MB per job, "
            f"cpu {r['cpu_s'] / r['jobs']:.2f} s per job, sacct {m['sacct']:.1f}/min, squeue {m['squeue']:.1f}/min, "
            f"sbatch {m['sbatch']:.1f}/min, {fs}, occupancy {r['occupancy']:.2f}{bare}, "
            f"end->next start {r['gap_s']:.1f} s (median; submission ramp {r['ramp_s']:.1f} s, search ends over "
            f"{r['end_spread_s']:.1f} s, search->repeat turn {r['turn_s']:.1f} s); {r['jobs']} jobs in {r['span_s']:.0f} s, "
            f"{r['processes']} processes at most; at the peak: "
            + ", ".join(f"{name} {size / 2**20:.0f} MB" for name, size in r["peak_parts"][:3]))


def fs_ops(trace: Path, out: Path) -> dict[str, int]:
    """The strace lines on the study folder: polls of trial folders, other trial-folder calls, the
    MLflow store (mlflow.db*, mlartifacts), the rest."""
    prefix = str(out.resolve())
    trials = re.compile(re.escape(prefix) + r'/trials/[^/"]+/[^/"]+/[0-9a-f]+(/?)([^"]*)"')
    counts = {"all": 0, "polls": 0, "trial_events": 0, "mlflow": 0}
    for line in trace.open(errors="replace"):
        if prefix not in line:
            continue
        counts["all"] += 1
        m = trials.search(line)
        if m:
            poll = not m.group(2) and ("stat" in line.split("(")[0])
            counts["polls" if poll else "trial_events"] += 1
        elif f"{prefix}/mlflow.db" in line or f"{prefix}/mlartifacts" in line:
            counts["mlflow"] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[16, 64, 128], help="jobs at once, smallest first")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--epoch-s", type=float, default=30.0, help="seconds per stand-in epoch")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare loop's run beside each N")
    ap.add_argument("--keep", type=Path, help="keep the study folders and logs here")
    args = ap.parse_args()
    if any(n % 8 for n in args.jobs):  # 4 variants x n/8 configurations x 2 splits: n jobs in each wave
        ap.error(f"--jobs: each a multiple of 8, got {' '.join(map(str, args.jobs))}")
    if os.geteuid() != 0:
        sys.exit("the SLURM test cluster needs root")
    use_strace = shutil.which("strace") is not None
    work = Path(tempfile.mkdtemp(prefix="dscale-", dir="/tmp")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    cluster = work / "cluster"
    env = start_cluster(cluster, cpus=max(args.jobs) + 4)
    try:
        results = []
        for n in sorted(args.jobs):
            results.append(run_one(n, work, env, args.epochs, args.epoch_s, use_strace))
            if not args.no_bare:
                results[-1]["bare_occupancy"] = run_bare(n, work, env, args.epochs, args.epoch_s)["occupancy"]
            print(line(results[-1], results[0]), flush=True)
    finally:
        subprocess.run([str(SCRIPTS / "stop.sh"), str(cluster)], capture_output=True)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
