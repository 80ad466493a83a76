"""How full the study-wide schedule keeps its job budget.

1. A real study (real Ray Tune, real submitit local jobs, tiny trainings): 3 variants x (2 grid
   configurations x 2 search splits + 2 repeat splits), `max_concurrent: 4`, synthderm at 48 px,
   2 epochs. From the jobs' own times (submission: a local job starts at once; end: its
   `result.json`'s `ended_at`) it prints the makespan, the job-seconds, the mean number of jobs running and the
   occupancy = mean running / max_concurrent; and the dry-run's simulation of the same study, fed
   with the measured mean job time, beside it.
2. The dry-run's simulation of a paper-sized study (`studies/seed002_isic.yaml`: 14 variants, 12 grid
   points x 2 search splits, 10 repeats) at 32 and 256 GPUs, with equal job times: makespan,
   lower bound (job time / budget) and occupancy, next to variants run one after another (the
   schedule before the study-wide scheduler).

    .venv/bin/python bench/scheduler.py            # about 10 minutes on a loaded 2-core machine
    .venv/bin/python bench/scheduler.py --simulate-only
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def bench_study(folder: Path, max_concurrent: int) -> Path:
    study = {
        "name": "bench_scheduler",
        "dataset": {"format": "synthderm", "options": {"n": 96, "seed": 0}},
        "image_size": 48,
        "variants": ["resnet18", "resnet18+se", "resnet18+ga"],
        "train": {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "schedule": "cosine"},
        "search": {"algorithm": "grid", "lr": [0.01, 0.03], "weight_decay": [0.0]},
        "splits": {"val_fraction": 0.15, "test_fraction": 0.2, "search_splits": 2, "repeat_splits": 2},
        "executor": {"kind": "local", "workers": 1},
        "max_concurrent": max_concurrent,
    }
    path = folder / "bench_scheduler.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def job_intervals(out: Path) -> list[tuple[float, float]]:
    """(start, end) of every training job, from its trial folder."""
    spans = []
    for result in out.glob("trials/*/*/*/result.json"):
        jobs = json.loads((result.parent / "jobs.json").read_text())
        start = datetime.datetime.fromisoformat(jobs[0]["submitted_at"]).timestamp()
        ended = datetime.datetime.fromisoformat(json.loads(result.read_text())["ended_at"]).timestamp()
        spans.append((start, ended))
    return spans


def occupancy(spans: list[tuple[float, float]], budget: int) -> dict[str, float]:
    t0, t1 = min(s for s, _ in spans), max(e for _, e in spans)
    job_s = sum(e - s for s, e in spans)
    mean_running = job_s / (t1 - t0)
    return {"makespan_s": t1 - t0, "job_seconds": job_s, "jobs": len(spans), "mean_running": mean_running,
            "occupancy": mean_running / budget}


def simulated(study, budget: int, job_seconds: float):
    from attnsweep.pipelines.sweep import estimate

    rows = estimate.phase_work(study)
    return estimate.simulate(study, rows, dict.fromkeys(study.variant_ids, job_seconds), budget)


def one_after_another(study, budget: int, job_seconds: float) -> float:
    """The makespan when variants run one at a time (each its search, then its repeats)."""
    total = 0.0
    for v in study.variant_ids:
        alone = study.model_copy(update={"variants": [study.variants[study.variant_ids.index(v)]]})
        alone = type(study).model_validate(alone.model_dump())
        total += simulated(alone, budget, job_seconds).makespan
    return total


def run_real(max_concurrent: int, keep: Path | None) -> None:
    from attnsweep.pipelines.config.study import load_study

    if keep is not None:  # the study folder stays, to look at the timeline
        keep.mkdir(parents=True, exist_ok=False)
    with contextlib.nullcontext(keep) if keep is not None else tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        path = bench_study(Path(tmp), max_concurrent)
        out = Path(tmp) / "out"
        t0 = time.monotonic()
        done = subprocess.run([str(Path(sys.executable).with_name("attnsweep")), "run", str(path), "--out", str(out),
                               "--no-report"], capture_output=True, text=True, cwd=REPO)
        wall = time.monotonic() - t0
        if done.returncode != 0:
            sys.exit(f"the study failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        spans = job_intervals(out)
        real = occupancy(spans, max_concurrent)
        study = load_study(path)
        sim = simulated(study, max_concurrent, real["job_seconds"] / real["jobs"])
    print(f"real study: 3 variants x (2 configs x 2 search splits + 2 repeat splits), max_concurrent {max_concurrent}, "
          f"local, 48 px, 2 epochs; driver wall {wall:.0f} s")
    print(f"  jobs {real['jobs']}, makespan {real['makespan_s']:.0f} s, job-seconds {real['job_seconds']:.0f}, "
          f"mean running {real['mean_running']:.2f}, occupancy {real['occupancy']:.2f}")
    print(f"  simulated (mean job {real['job_seconds'] / real['jobs']:.0f} s): makespan {sim.makespan:.0f} s, "
          f"occupancy {sim.occupancy:.2f}")


def run_simulation() -> None:
    from attnsweep.pipelines.config.study import load_study

    study = load_study(REPO / "studies" / "seed002_isic.yaml")
    job = 3600.0  # equal job times: the schedule's shape, not the hardware
    print(f"simulated {study.name}: {len(study.variant_ids)} variants, {study.variant(study.variant_ids[0]).search.n_configs()} "
          f"configs x {study.splits.search_splits} search splits + {study.splits.repeat_splits} repeats, 1 h per job")
    for gpus in (32, 256):
        s = simulated(study, gpus, job)
        seq = one_after_another(study, gpus, job)
        print(f"  {gpus:>3} GPUs: makespan {s.makespan / job:.0f} h, lower bound {s.lower_bound / job:.1f} h, "
              f"occupancy {s.occupancy:.2f}; variants one after another: {seq / job:.0f} h "
              f"(occupancy {s.job_seconds / (seq * gpus):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--simulate-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="run the real study in this new folder and keep it")
    args = parser.parse_args()
    if not args.simulate_only:
        run_real(args.max_concurrent, args.keep)
    run_simulation()


if __name__ == "__main__":
    main()
