"""The driver's live view of a study (rich): per variant and phase, how many Tune trials are done,
running, failed or stopped, the best score so far, and the elapsed time. Ray's own tables are off.
Without a terminal (a SLURM log) each ended trial is also printed as one line."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class Row:
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    stopped: int = 0
    best: float = -math.inf
    started: float | None = None
    ended: float | None = None


class Progress:
    def __init__(self, title: str, tune_trial_counts: dict[tuple[str, str], int], console: Console | None = None):
        """`tune_trial_counts`: (variant, phase) -> the number of Tune trials."""
        self.title = title
        self.rows = {key: Row(total) for key, total in tune_trial_counts.items()}
        self.console = console or Console()
        self.t0 = time.monotonic()
        self._live = Live(self._table(), console=self.console, refresh_per_second=2, transient=False,
                          auto_refresh=self.console.is_terminal)

    def __enter__(self) -> Progress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.update(self._table())
        self._live.__exit__(*exc)
        if not self.console.is_terminal:
            self.console.line()  # the last render ends without one

    def _row(self, variant: str, phase: str) -> Row:
        row = self.rows[(variant, phase)]
        if row.started is None:
            row.started = time.monotonic()
        return row

    def already_done(self, variant: str, phase: str, n: int, best: float | None) -> None:
        """Trials recorded by an earlier driver of a resumed study."""
        row = self._row(variant, phase)
        row.done += n
        if best is not None and best > row.best:
            row.best = best
        self._refresh()

    def started(self, variant: str, phase: str) -> None:
        self._row(variant, phase).running += 1
        self._refresh()

    def result(self, variant: str, phase: str, score: float | None) -> None:
        self._refresh()

    def ended(self, variant: str, phase: str, status: str, score: float | None) -> None:
        row = self._row(variant, phase)
        row.running = max(0, row.running - 1)
        if status == "failed":
            row.failed += 1
        elif status == "stopped":
            row.stopped += 1
        else:
            row.done += 1
        if score is not None and not math.isnan(score) and status not in ("failed", "diverged") and score > row.best:
            row.best = score
        if row.done + row.failed + row.stopped >= row.total:
            row.ended = time.monotonic()
        if not self.console.is_terminal:
            self.console.print(f"{variant} {phase}: a trial ended {status}"
                               + (f" (score {score:.4f})" if score is not None and not math.isnan(score) else "")
                               + f"; {row.done + row.failed + row.stopped}/{row.total} ended")
        self._refresh()

    def _refresh(self) -> None:
        self._live.update(self._table(), refresh=self.console.is_terminal)

    def _table(self) -> Table:
        table = Table(title=f"{self.title} ({_clock(time.monotonic() - self.t0)})")
        for col in ("variant", "phase", "done", "running", "failed", "stopped", "best val BA", "elapsed"):
            table.add_column(col, justify="left" if col in ("variant", "phase") else "right")
        now = time.monotonic()
        for (variant, phase), r in self.rows.items():
            elapsed = "" if r.started is None else _clock((r.ended or now) - r.started)
            table.add_row(variant, phase, f"{r.done}/{r.total}", str(r.running), str(r.failed), str(r.stopped),
                          "" if r.best == -math.inf else f"{r.best:.4f}", elapsed)
        return table


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"
