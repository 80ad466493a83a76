"""The two phases of a variant, each a Ray Tune searcher (and trial scheduler) that the driver's
loop (`scheduler`) runs:

- `search`: one Tune trial per configuration (`lr`, `weight_decay`), trained on every search split
  in lockstep; OptunaSearch (TPE, seeded) or the grid proposes configurations, ASHA (optional)
  stops weak ones after an epoch.
- `repeat`: the best configuration on each repeat split, one Tune trial per split.

Resume. The recorded rows (`<out>/results/`) say what is done: a finished configuration is
replayed to Optuna with its score (`add_evaluated_point`) instead of being trained again, a
configuration that was in flight is proposed first (`points_to_evaluate`) so its Tune trial
re-attaches to its jobs or resumes them from their checkpoints, and the search
asks only for the configurations still missing. This survives a driver killed at any moment, and
TPE's next proposals still depend on every result so far."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from attnsweep.pipelines.store import parquet_store, selection_record, warm_start
# the search's selection rule, read by `attnsweep status` too (without Ray)
from attnsweep.pipelines.store.search_scores import NoEligibleConfig, best_config, config_scores  # noqa: F401
from attnsweep.pipelines.sweep.plan import make_trial, phase_splits
from attnsweep.pipelines.config.study import LogRange, SearchSettings, Study
from attnsweep.pipelines.sweep import budget, notify
from attnsweep.pipelines.sweep.tracking import Recorder
from attnsweep.pipelines.sweep.recording import finish
from attnsweep.pipelines.sweep.tune_trial import SCORE, TIME_ATTR, VAL_SCORE
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

def _started_configs(study: Study, out: Path, variant: str, data_dir: Path) -> list[dict[str, float]]:
    """Configurations of this study with a trial folder (from its `config.json`), in start order."""
    found = []
    for cfg_path in sorted((t.config_file for t in StudyPaths(out).iter_trials("search", variant)), key=lambda p: p.stat().st_mtime):
        c = TrialFolder(cfg_path.parent).config()
        params = {"lr": float(c["lr"]), "weight_decay": float(c["weight_decay"])}
        trial = make_trial(study, out, "search", variant, c["split"], params["lr"], params["weight_decay"], data_dir)
        if trial.ref.dir == cfg_path.parent and params not in found:  # not a folder of an older study version
            found.append(params)
    return found


def _search_alg(s: SearchSettings, finished: pd.DataFrame, in_flight: list[dict], warm: list[dict] = ()) -> Searcher:
    """The searcher proposing the configurations still missing; those in flight first, then the
    warm-start points (`warm_start`)."""
    in_flight = warm_start.first(in_flight, list(warm), {(r.lr, r.weight_decay) for r in finished.itertuples()})
    if s.algorithm == "grid":
        done = {(r.lr, r.weight_decay) for r in finished.itertuples()}
        todo = [{"lr": lr, "weight_decay": wd} for lr, wd in itertools.product(s.lr, s.weight_decay)
                if (lr, wd) not in done]
        todo.sort(key=lambda p: p not in in_flight)  # stable: the in-flight ones first
        return budget.PointsSearcher(todo)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def dist(space):
        if isinstance(space, LogRange):
            return optuna.distributions.FloatDistribution(space.low, space.high, log=True)
        return optuna.distributions.CategoricalDistribution(space)

    # A resumed search must not draw the configurations it already has again: a sampler seeded as
    # before would repeat its first draws (seen when a driver was killed before the second proposal),
    # so the seed moves on by the number of configurations already drawn.
    drawn = len(finished) + len(in_flight)
    searcher = OptunaSearch(space={"lr": dist(s.lr), "weight_decay": dist(s.weight_decay)}, metric=SCORE,
                            mode="max", seed=s.seed + drawn, points_to_evaluate=in_flight or None)
    for r in finished.itertuples():
        searcher.add_evaluated_point({"lr": r.lr, "weight_decay": r.weight_decay},
                                     math.nan if r.score is None else r.score, error=r.score is None)
    return searcher


@dataclass
class Phase:
    """One phase of one variant as the driver's loop runs it: Ray Tune's searcher proposes its Tune
    trials (`num_samples` more at most), its trial scheduler (ASHA, or none) may stop them early."""

    variant: str
    phase: str
    searcher: Searcher
    num_samples: int
    jobs: int  # jobs per Tune trial (budget units)
    max_live: int  # Tune trials at once (a search: what the budget runs; TPE learns from the ended ones)
    scheduler: TrialScheduler | None = None
    live: dict = field(default_factory=dict)  # Tune trial id -> TuneTrial
    proposed: int = 0
    finished: bool = False  # the searcher has nothing more to propose

    def wants_more(self) -> bool:
        return not self.finished and self.proposed < self.num_samples and len(self.live) < self.max_live

    def ended(self) -> bool:
        return not self.live and (self.finished or self.proposed >= self.num_samples)


def search_phase(study: Study, out: Path, variant: str, data_dir: Path, recorder: Recorder, progress) -> Phase:
    """The search phase of one variant, resuming what was done: finished configurations are
    recorded and replayed to the searcher, configurations in flight are proposed first."""
    splits, search = phase_splits(study, "search"), study.variant(variant).search
    started = _started_configs(study, out, variant, data_dir)
    for params in started:  # trials that finished while no driver was recording
        for split in splits:
            finish(recorder, make_trial(study, out, "search", variant, split, params["lr"],
                                        params["weight_decay"], data_dir))
    selection_metric = study.variant(variant).train.selection_metric
    finished = config_scores(out, variant, len(splits), selection_metric)
    done = {(r.lr, r.weight_decay) for r in finished.itertuples()}
    in_flight = [p for p in started if (p["lr"], p["weight_decay"]) not in done]
    remaining = max(0, search.n_configs() - len(finished))
    if progress:
        progress.already_done(variant, "search", len(finished),
                              finished["score"].dropna().max() if len(finished) else None)
    scheduler = None
    if search.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr=TIME_ATTR, metric=VAL_SCORE, mode="max",
                                  max_t=study.variant(variant).train.epochs, grace_period=search.asha.grace_period,
                                  reduction_factor=search.asha.reduction_factor)
    jobs = len(splits)
    warm = warm_start.points(search, variant, out)
    return Phase(variant, "search", _search_alg(search, finished, in_flight[:remaining], warm), remaining, jobs,
                 max(1, study.max_concurrent // jobs), scheduler)


def end_search(study: Study, out: Path, variant: str, recorder: Recorder) -> dict[str, float]:
    """The search is over: its best configuration (also recorded on the search's parent run)."""
    metric = study.variant(variant).train.selection_metric
    splits = len(phase_splits(study, "search"))
    rows = parquet_store.read(out).to_pandas()
    try:
        best = best_config(out, variant, splits, metric, rows)
    except NoEligibleConfig:
        recorder.fail_parent(variant, "search")
        raise
    # the parent's aggregate is queued first: once the choice is on disk, a stop (which writes what
    # is queued) also puts it on the MLflow parent run
    recorder.finish_parent(variant, "search", best)
    selection_record.write(out, variant, metric, splits, config_scores(out, variant, splits, metric, rows), best)
    return best


def repeat_phase(study: Study, out: Path, variant: str, data_dir: Path, recorder: Recorder, progress,
                 params: dict[str, float]) -> Phase:
    """The repeat phase of one variant: `params` on every repeat split not yet recorded."""
    todo = []
    for split in phase_splits(study, "repeat"):
        trial = make_trial(study, out, "repeat", variant, split, params["lr"], params["weight_decay"], data_dir)
        if not (recorder.is_recorded(trial) or finish(recorder, trial)):
            todo.append(split)
    if progress:
        progress.already_done(variant, "repeat", study.splits.repeat_splits - len(todo), None)
    points = [{**params, "split": split} for split in todo]
    return Phase(variant, "repeat", budget.PointsSearcher(points), len(todo), 1, study.max_concurrent)


def end_repeat(study: Study, out: Path, variant: str, recorder: Recorder) -> None:
    """The variant's repeats are over: their aggregate on the repeat's parent run, and a notification."""
    recorder.finish_parent(variant, "repeat")
    notify.variant_finished(study, out, variant)
