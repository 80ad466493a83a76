"""The study's job budget, shared by the Tuners of every variant and phase.

`max_concurrent` is the number of training jobs running at once across the study. A Tune trial
holds one unit per job it runs (a search configuration: one per search split; a repeat trial: one).
The `Gate` in the driver is the budget: every Tuner's searcher asks it before proposing a trial
(`GatedSearcher`), and Tune reports every trial's end to the searcher, so the gate counts the jobs
of live trials exactly. When jobs must wait, the gate also decides who goes next (`Gate.priority`),
and it admits trials a little ahead of the budget so that their actors start while the jobs before
them run (`Gate`: admitted, then granted).
Not Ray resources: a Tuner that reuses its actors keeps one idle actor with its resources between
trials (Tune's actor cache keeps one), which would hold budget that no job uses; and Ray starts
waiting trials in an order of its own.

Several Tuners run at once, each in a driver thread (`scheduler`). Tune supports a Tuner in a thread
(it installs no signal handler there), but its registry of trainables is process-global and not
thread-safe, and it registers every trainable under its class name: two variants' trainables would
overwrite each other. So each Tuner's trainable is registered here, under the lock, with a name of
its own, and the Tuner gets that name."""
from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

_registry_lock = threading.Lock()
# Set when the driver is interrupted: every Tuner ends (its trials' jobs are cancelled by cleanup).
interrupted = threading.Event()


def registered_trainable(name: str, trainable, **parameters) -> str:
    """Register `trainable` (with its parameters) as `name`. Its actor only follows its jobs: a
    hundredth of a CPU (the budget is the gate's)."""
    with _registry_lock:
        wrapped = tune.with_resources(tune.with_parameters(trainable, **parameters), {"cpu": 0.01})
        tune.register_trainable(name, wrapped)
    return name


class StopWhenInterrupted(tune.Stopper):
    """Ends a Tuner's experiment once the driver is interrupted (Ctrl-C, SIGTERM)."""

    def __call__(self, trial_id, result) -> bool:
        return interrupted.is_set()

    def stop_all(self) -> bool:
        return interrupted.is_set()


@dataclass
class Gate:
    """The study's job budget in the driver: which variant's trial may start next, and when its
    jobs may run.

    A trial is first admitted (its Tuner proposes it, and Tune starts an actor for it), then granted
    its jobs (the trainable submits them). Admission may run `lookahead` jobs ahead of the budget:
    a new Tune actor takes seconds to start (a Ray worker importing Ray Tune: 3-5 s beside four busy
    jobs on two cores, bench/scheduler.py), and an admitted trial spends them while the jobs before
    it still run, so that a grant starts its jobs at once. A grant is the file
    `<grants>/<Tune trial id>`, which the trainable waits for (`SplitsTrainable`); without `grants`
    the lookahead must be 0 and admitted means granted.

    priority: (1) the trials of baselines (every comparison needs them), (2) repeats, the variant with
    the most repeats done first (its comparison completes soonest), (3) searches, in table order."""

    budget: int
    baselines: dict[str, str]  # variant -> its baseline
    order: list[str]  # variants in table order
    grants: Path | None = None
    lookahead: int = 0
    repeats_done: dict[str, int] = field(default_factory=dict)
    waiting: dict[tuple[str, str], int] = field(default_factory=dict)  # (variant, phase) -> jobs asked
    admitted: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # trial id -> (variant, phase, jobs), no grant yet
    granted: dict[str, int] = field(default_factory=dict)  # trial id -> jobs
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.lookahead and self.grants is None:
            raise ValueError("a lookahead needs a grants folder: the trainables wait for their grant there")

    @property
    def used(self) -> int:
        """Jobs granted to trials that have not ended."""
        return sum(self.granted.values())

    def priority(self, variant: str, phase: str) -> tuple:
        is_baseline = self.baselines.get(variant, variant) == variant
        return (not is_baseline, phase != "repeat", -self.repeats_done.get(variant, 0), self.order.index(variant))

    def try_acquire(self, variant: str, phase: str, jobs: int, trial_id: str) -> bool:
        """Admit Tune trial `trial_id` of `variant` now if its jobs fit (the budget and the lookahead)
        and no waiting trial before it fits too; it is granted its jobs at once if the budget has room."""
        with self._lock:
            key = (variant, phase)
            self.waiting[key] = jobs
            free = self.budget + self.lookahead - self.used - sum(j for _, _, j in self.admitted.values())
            for other in sorted(self.waiting, key=lambda k: self.priority(*k)):
                if self.waiting[other] <= free:
                    if other != key:
                        return False  # a trial that comes first fits: it goes first
                    del self.waiting[key]
                    self.admitted[trial_id] = (variant, phase, jobs)
                    self._grant()
                    return True
            return False

    def _grant(self) -> None:
        """Grant admitted trials their jobs while the budget has room, in priority order."""
        for trial_id in sorted(self.admitted, key=lambda t: self.priority(*self.admitted[t][:2])):
            jobs = self.admitted[trial_id][2]
            if jobs <= self.budget - self.used:
                del self.admitted[trial_id]
                self.granted[trial_id] = jobs
                if self.grants is not None:
                    (self.grants / trial_id).touch()

    def withdraw(self, variant: str, phase: str) -> None:
        """The Tuner of this variant and phase ended: it waits for nothing any more."""
        with self._lock:
            self.waiting.pop((variant, phase), None)

    def give_back(self, trial_id: str) -> None:
        """An admitted trial that was not started (its searcher had nothing to propose)."""
        with self._lock:
            self._free(trial_id)

    def release(self, variant: str, phase: str, trial_id: str) -> None:
        """A trial ended (also one stopped before its grant)."""
        with self._lock:
            self._free(trial_id)
            if phase == "repeat":
                self.repeats_done[variant] = self.repeats_done.get(variant, 0) + 1

    def _free(self, trial_id: str) -> None:
        self.admitted.pop(trial_id, None)
        self.granted.pop(trial_id, None)
        self._grant()


class GatedSearcher(ConcurrencyLimiter):
    """A Tuner's searcher that proposes a trial only when the study's `Gate` admits it."""

    def __init__(self, searcher: Searcher, gate: Gate | None, variant: str, phase: str, jobs: int, max_concurrent: int):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.gate, self.variant, self.phase, self.jobs = gate, variant, phase, jobs

    def suggest(self, trial_id: str):
        if len(self.live_trials) >= self.max_concurrent:
            return None
        if self.gate is not None and not self.gate.try_acquire(self.variant, self.phase, self.jobs, trial_id):
            return None
        suggestion = super().suggest(trial_id)
        if suggestion in (None, Searcher.FINISHED) and self.gate is not None:
            self.gate.give_back(trial_id)  # admitted, but nothing to propose
        return suggestion

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        if trial_id in self.live_trials and self.gate is not None:
            self.gate.release(self.variant, self.phase, trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str):
        raise NotImplementedError  # a study resumes from its recorded rows, never from Tune's snapshot

    # Tune copies its searcher's state into the experiment folder (for Tuner.restore, never used):
    # the gate is the live study's, shared by threads, so a copy goes without it.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "gate": None}

    def get_state(self) -> dict:
        gate, self.gate = self.gate, None  # only this Tuner's thread uses this searcher
        try:
            return super().get_state()
        finally:
            self.gate = gate

    def set_state(self, state: dict) -> None:
        gate = self.gate
        super().set_state(state)
        self.gate = gate


class PointsSearcher(Searcher):
    """Proposes the given configurations in order, then is finished (the grid's points, the repeat
    phase's splits)."""

    def __init__(self, points: list[dict], metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.points = list(points)

    def suggest(self, trial_id: str):
        return self.points.pop(0) if self.points else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.points, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.points = pickle.load(f)
