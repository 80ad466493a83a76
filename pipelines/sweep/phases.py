"""The two phases of a variant, each one Ray Tune `Tuner`:

- `search`: one Tune trial per configuration (`lr`, `weight_decay`), trained on every search split
  in lockstep; OptunaSearch (TPE, seeded) or the grid proposes configurations, ASHA (optional)
  stops weak ones after an epoch.
- `repeat`: the best configuration on each repeat split, one Tune trial per split.

Resume. The recorded rows (`<out>/results/`) say what is done, not Tune's experiment snapshot:
a finished configuration is replayed to Optuna with its score (`add_evaluated_point`) instead of
being trained again, a configuration that was in flight is proposed first (`points_to_evaluate`)
so its trainable re-attaches to its jobs or resumes them from their checkpoints, and the search
asks only for the configurations still missing. This survives a driver killed at any moment, and
TPE's next proposals still depend on every result so far."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
from ray import tune

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.sweep.plan import make_trial, phase_splits
from attnsweep.pipelines.config.study import LogRange, SearchSettings, Study
from attnsweep.pipelines.sweep import budget
from attnsweep.pipelines.sweep.tracking import Recorder
from attnsweep.pipelines.sweep.tune_callback import TrackerCallback, finish
from attnsweep.pipelines.sweep.tune_trainable import VAL_SCORE, SplitsTrainable
from attnsweep.pipelines.trial.folder import CONFIG, TrialFolder

SCORE = "score"  # the configuration's search score in a Tune result (config.selection)


class NoEligibleConfig(RuntimeError):
    """Every search configuration of a variant diverged, failed or was stopped."""


def _val_rows(out: Path, phase: str, variant: str) -> pd.DataFrame:
    rows = parquet_store.read(out).to_pandas()
    return rows[(rows["phase"] == phase) & (rows["variant"] == variant) & (rows["eval_set"] == "val")]


def config_scores(out: Path, variant: str, n_splits: int, metric: str = selection.DEFAULT) -> pd.DataFrame:
    """One row per fully recorded search configuration: lr, weight_decay, its score for the
    search (`selection.search_score` of `metric`; None when a split failed), and whether it may
    be chosen (every split `ok`)."""
    val = _val_rows(out, "search", variant)
    rows = []
    for _, g in val.groupby("config_hash"):
        if g["split"].nunique() < n_splits:
            continue  # still in flight
        statuses = set(g["status"])
        if "failed" in statuses:
            score = None
        else:
            score = selection.search_score([None if pd.isna(v) else float(v) for v in g[metric]], metric,
                                           diverged="diverged" in statuses)
        rows.append({"lr": float(g["lr"].iloc[0]), "weight_decay": float(g["weight_decay"].iloc[0]),
                     "score": score, "eligible": statuses == {"ok"}})
    return pd.DataFrame(rows, columns=["lr", "weight_decay", "score", "eligible"])


def best_config(out: Path, variant: str, n_splits: int, metric: str = selection.DEFAULT) -> dict[str, float]:
    """The highest search score (mean validation `metric` at each split's selected epoch) among
    the configurations whose every split finished `ok`; diverged, failed and stopped ones never
    win. A tie goes to the smaller lr, then the smaller weight decay (deterministic across resumes)."""
    scores = config_scores(out, variant, n_splits, metric)
    ok = scores[scores["eligible"]]
    if ok.empty:
        raise NoEligibleConfig(f"{variant}: no search configuration finished ok on every split (see "
                               f"{out / 'results'}); nothing to repeat")
    best = ok.sort_values(["score", "lr", "weight_decay"], ascending=[False, True, True]).iloc[0]
    return {"lr": float(best["lr"]), "weight_decay": float(best["weight_decay"])}


def _started_configs(study: Study, out: Path, variant: str, data_dir: Path) -> list[dict[str, float]]:
    """Configurations of this study with a trial folder (from its `config.json`), in start order."""
    found = []
    for cfg_path in sorted((out / "trials" / "search" / variant).glob(f"*/{CONFIG}"), key=lambda p: p.stat().st_mtime):
        c = TrialFolder(cfg_path.parent).config()
        params = {"lr": float(c["lr"]), "weight_decay": float(c["weight_decay"])}
        trial = make_trial(study, out, "search", variant, c["split"], params["lr"], params["weight_decay"], data_dir)
        if trial.ref.dir == cfg_path.parent and params not in found:  # not a folder of an older study version
            found.append(params)
    return found


def _search_alg(s: SearchSettings, finished: pd.DataFrame, in_flight: list[dict]) -> tuple[object, dict]:
    """(search algorithm, Tune param space) proposing the configurations still missing."""
    if s.algorithm == "grid":
        done = {(r.lr, r.weight_decay) for r in finished.itertuples()}
        todo = [{"lr": lr, "weight_decay": wd} for lr, wd in itertools.product(s.lr, s.weight_decay)
                if (lr, wd) not in done]
        todo.sort(key=lambda p: p not in in_flight)  # stable: the in-flight ones first
        return budget.PointsSearcher(todo), {}
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
    return searcher, {}


def _fit(study: Study, out: Path, phase: str, variant: str, data_dir: Path, recorder: Recorder, progress,
         param_space: dict, num_samples: int, search_alg, scheduler=None, poll_s: float = 1.0,
         gate: budget.Gate | None = None) -> None:
    # A trial holds one unit of the study's job budget per job it runs; the study's gate admits it
    # (see budget).
    jobs = len(phase_splits(study, phase)) if phase == "search" else 1
    grants = str(gate.grants) if gate is not None and gate.grants is not None else None
    trainable = budget.registered_trainable(
        f"{phase}-{variant}", SplitsTrainable, study=study, phase=phase, variant=variant, out=str(out),
        data_dir=str(data_dir), executor=study.variant(variant).executor, poll_s=poll_s, grants=grants)
    # As many trials as the budget runs, and one more that starts its actor before its jobs fit.
    live = max(1, study.max_concurrent // jobs) + (1 if gate is not None and gate.lookahead else 0)
    gated = budget.GatedSearcher(search_alg, gate, variant, phase, jobs, live)
    tracker = TrackerCallback(recorder, phase, variant, data_dir, progress)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples, search_alg=gated, scheduler=scheduler,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{phase}-{variant}", storage_path=str(out / "tune"), verbose=0,
            stop=budget.StopWhenInterrupted(),
            callbacks=[tracker],
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=1),
        ),
    )
    try:
        tuner.fit()
    finally:
        if gate is not None:
            gate.withdraw(variant, phase)
    tracker.wait()  # the phase's rows are read next (best configuration, parent aggregates)
    if budget.interrupted.is_set():  # the Tuner ended because the driver was interrupted: nothing is done
        raise KeyboardInterrupt("interrupted")


def run_search(study: Study, out: Path, variant: str, data_dir: Path, recorder: Recorder, progress,
               poll_s: float = 1.0, gate: budget.Gate | None = None) -> dict[str, float]:
    """The search phase of one variant (resuming what was done) -> its best configuration."""
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
    remaining = search.n_configs() - len(finished)
    if progress:
        progress.already_done(variant, "search", len(finished),
                              finished["score"].dropna().max() if len(finished) else None)
    if remaining > 0:
        scheduler = None
        if search.asha:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="training_iteration", metric=VAL_SCORE, mode="max",
                                      max_t=study.variant(variant).train.epochs, grace_period=search.asha.grace_period,
                                      reduction_factor=search.asha.reduction_factor)
        search_alg, space = _search_alg(search, finished, in_flight[:remaining])
        _fit(study, out, "search", variant, data_dir, recorder, progress, space, remaining, search_alg,
             scheduler, poll_s, gate)
    best = best_config(out, variant, len(splits), selection_metric)
    recorder.finish_parent(variant, "search", best)
    return best


def run_repeat(study: Study, out: Path, variant: str, data_dir: Path, recorder: Recorder, progress,
               params: dict[str, float], poll_s: float = 1.0, gate: budget.Gate | None = None) -> None:
    """The repeat phase of one variant: `params` on every repeat split not yet recorded."""
    todo = []
    for split in phase_splits(study, "repeat"):
        trial = make_trial(study, out, "repeat", variant, split, params["lr"], params["weight_decay"], data_dir)
        if not (recorder.is_recorded(trial) or finish(recorder, trial)):
            todo.append(split)
    if progress:
        progress.already_done(variant, "repeat", study.splits.repeat_splits - len(todo), None)
    if todo:
        points = [{**params, "split": split} for split in todo]
        _fit(study, out, "repeat", variant, data_dir, recorder, progress, {}, len(todo),
             budget.PointsSearcher(points), poll_s=poll_s, gate=gate)
    recorder.finish_parent(variant, "repeat")
