"""One schedule for the whole study: every variant's phase chain (its search Tuner, then its repeat
Tuner) runs in a driver thread of its own, all at once, on the one Ray runtime of the study. No
variant waits for another: a variant's repeat phase starts as soon as its own search has chosen.
The only cap is the study's job budget (`budget.Gate`): a waiting trial of any variant starts as
soon as its jobs fit.

Why threads of one driver rather than Tuners as Ray tasks: the Tune callbacks stay in the driver,
which remains the single writer of MLflow and the Parquet rows (the MLflow client is serialised,
each Parquet file belongs to one trial), and the live view sees every variant. Each variant keeps
its own seeded TPE (replayed on resume), ASHA and experiment folder (`<out>/tune/<phase>-<id>`).

Order: when jobs must wait, the study's `budget.Gate` admits first the trials that complete whole
comparisons early (baselines, then the repeats of the variants with most repeats done)."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.sweep import budget
from attnsweep.pipelines.sweep.plan import phase_splits
from attnsweep.pipelines.trial.study_paths import StudyPaths


def start_order(study: Study) -> list[str]:
    """Variant ids, each baseline before the variants compared with it (table order otherwise)."""
    baselines = study.baselines()
    heads = [v for v in study.variant_ids if baselines[v] == v]
    return heads + [v for v in study.variant_ids if v not in heads]


def lookahead(study: Study) -> int:
    """Jobs the gate admits beyond the budget, whose actors start while the jobs before them run:
    one trial of the largest kind, or a quarter of the budget."""
    return max(len(phase_splits(study, "search")), 1, study.max_concurrent // 4)


def run_variant(study: Study, out: Path, variant: str, data_dir: Path, recorder, progress, poll_s: float,
                gate: budget.Gate | None = None) -> None:
    """The phase chain of one variant: its search (or its fixed configuration), then its repeats."""
    from attnsweep.pipelines.sweep.phases import run_repeat, run_search

    if phase_splits(study, "search"):
        best = run_search(study, out, variant, data_dir, recorder, progress, poll_s, gate)
    else:
        best = study.variant(variant).search.fixed()
    if budget.interrupted.is_set():
        return
    run_repeat(study, out, variant, data_dir, recorder, progress, best, poll_s, gate)


def run_variants(study: Study, out: Path, data_dir: Path, recorder, progress, poll_s: float = 1.0) -> None:
    """Run every variant's phases at once; returns when all have ended. A variant that fails (e.g.
    no eligible configuration) does not stop the others: its error is raised once they are done.
    An interrupt of the driver (Ctrl-C, SIGTERM) sets `budget.interrupted` before it propagates:
    from then on nothing is recorded and every Tuner ends."""
    budget.interrupted.clear()
    grants = StudyPaths(out).tune_dir / "grants"
    shutil.rmtree(grants, ignore_errors=True)  # an earlier driver's (the study's lock says it is gone)
    grants.mkdir(parents=True)
    gate = budget.Gate(study.max_concurrent, study.baselines(), study.variant_ids, grants, lookahead(study))
    errors: dict[str, BaseException] = {}

    def chain(variant: str) -> None:
        try:
            run_variant(study, out, variant, data_dir, recorder, progress, poll_s, gate)
        except BaseException as err:  # noqa: BLE001 -- re-raised in the driver's thread below
            errors[variant] = err

    threads = [threading.Thread(target=chain, args=(v,), name=f"variant-{v}", daemon=True) for v in start_order(study)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)  # a bare join() would not let the driver see Ctrl-C / SIGTERM
    except BaseException:
        budget.interrupted.set()
        raise
    shutil.rmtree(grants, ignore_errors=True)
    if budget.interrupted.is_set():
        raise KeyboardInterrupt("interrupted")
    for variant in study.variant_ids:  # the first failure in table order, after every variant ended
        if variant in errors:
            raise errors[variant]
