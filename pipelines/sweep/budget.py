"""The study's job budget, shared by every variant's phases, and the order in which waiting trials
get it.

`max_concurrent` is the number of training jobs running at once across the study. A Tune trial
holds one unit per job it runs (a search configuration: one per search split; a repeat trial: one)
from its submission to its end. When jobs must wait, `Budget.priority` decides who goes next: (1)
the trials of baselines (every comparison needs them), (2) repeats, the variant with the most
repeats done first (its comparison completes soonest), (3) searches, in table order. The driver's
loop (`scheduler`) is the only user, from one thread."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ray.tune.search import Searcher

# Set when the driver is interrupted (Ctrl-C, SIGTERM): the loop ends and nothing more is recorded.
interrupted = threading.Event()


@dataclass
class Budget:
    size: int
    baselines: dict[str, str]  # variant -> its baseline
    order: list[str]  # variants in table order
    used: int = 0
    repeats_done: dict[str, int] = field(default_factory=dict)

    def priority(self, variant: str, phase: str) -> tuple:
        is_baseline = self.baselines.get(variant, variant) == variant
        return (not is_baseline, phase != "repeat", -self.repeats_done.get(variant, 0), self.order.index(variant))

    def fits(self, jobs: int) -> bool:
        return jobs <= self.size - self.used

    def take(self, jobs: int) -> None:
        self.used += jobs

    def give_back(self, jobs: int, variant: str, phase: str) -> None:
        """A trial ended."""
        self.used -= jobs
        if phase == "repeat":
            self.repeats_done[variant] = self.repeats_done.get(variant, 0) + 1


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
