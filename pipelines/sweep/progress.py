"""The driver's live view of a study (rich): per variant and phase, how many Tune trials are done,
running, failed or stopped, the best score (validation selection metric) so far, and the elapsed
time. Ray's own tables are off. Without a terminal (a log file, a SLURM job) the table is printed
at the end only; meanwhile each finished epoch of a Tune trial and each ended trial is one line,
and a summary line (trials done/running, best, elapsed, estimated remaining) follows whenever
`summary_every_s` passed without a line, so the log moves at least once a minute."""
from __future__ import annotations

import math
import threading
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
    stalled: int = 0  # running jobs without a new epoch line for longer than the watchdog's limit
    best: float = -math.inf
    started: float | None = None
    ended: float | None = None


class Progress:
    def __init__(self, title: str, tune_trial_counts: dict[tuple[str, str], int], console: Console | None = None,
                 metric: str = "balanced_accuracy", summary_every_s: float = 60.0):
        """`tune_trial_counts`: (variant, phase) -> the number of Tune trials. `metric`: the
        validation metric the scores are of (the study's selection metric)."""
        self.title, self.metric, self.summary_every_s = title, metric, summary_every_s
        self.rows = {key: Row(total) for key, total in tune_trial_counts.items()}
        self.console = console or Console()
        self.t0 = self._last_line = time.monotonic()
        self._lock = threading.RLock()  # every variant's Tuner reports from its own driver thread; the summary thread prints
        self._stop = threading.Event()
        self._live = Live(self._table(), console=self.console, refresh_per_second=2, transient=False,
                          auto_refresh=self.console.is_terminal)

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live.__enter__()
        else:  # a log: lines while it runs (a redirected Live would print nothing until the end)
            threading.Thread(target=self._summaries, name="progress-summary", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        with self._lock:  # the driver's jobs end with it (finished, or cancelled): none runs now
            for row in self.rows.values():
                row.running = row.stalled = 0
        if self.console.is_terminal:
            self._live.update(self._table())
            self._live.__exit__(*exc)
        else:
            with self._lock:
                self.console.print(self._table())

    def _summaries(self) -> None:
        while not self._stop.wait(min(5.0, self.summary_every_s)):
            with self._lock:
                if time.monotonic() - self._last_line >= self.summary_every_s:
                    self._print(self.summary_line())

    def _print(self, line: str) -> None:
        with self._lock:
            self.console.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False, highlight=False)
            self._last_line = time.monotonic()

    def summary_line(self) -> str:
        """`trials 4/21 ended, 2 running, best val <metric> 0.7120 (resnet18+se search), elapsed
        0:05:12, ~0:20:48 left` (remaining: elapsed scaled by the trials not yet ended)."""
        with self._lock:
            total = sum(r.total for r in self.rows.values())
            ended = sum(r.done + r.failed + r.stopped for r in self.rows.values())
            running = sum(r.running for r in self.rows.values())
            stalled = sum(r.stalled for r in self.rows.values())
            elapsed = time.monotonic() - self.t0
            best_key = max(self.rows, key=lambda k: self.rows[k].best)
            best = self.rows[best_key].best
        text = f"trials {ended}/{total} ended, {running} running" + (f" ({stalled} stalled)" if stalled else "")
        if best != -math.inf:
            text += f", best val {self.metric} {best:.4f} ({' '.join(best_key)})"
        text += f", elapsed {clock(elapsed)}"
        if 0 < ended < total:
            text += f", ~{clock(elapsed * (total - ended) / ended)} left"
        return text

    def _row(self, variant: str, phase: str) -> Row:
        row = self.rows[(variant, phase)]
        if row.started is None:
            row.started = time.monotonic()
        return row

    def already_done(self, variant: str, phase: str, n: int, best: float | None) -> None:
        """Trials recorded by an earlier driver of a resumed study."""
        with self._lock:
            self._already_done(variant, phase, n, best)

    def _already_done(self, variant: str, phase: str, n: int, best: float | None) -> None:
        row = self._row(variant, phase)
        row.done += n
        if best is not None and best > row.best:
            row.best = best
        self._refresh()

    def started(self, variant: str, phase: str) -> None:
        with self._lock:
            self._row(variant, phase).running += 1
            self._refresh()

    def result(self, variant: str, phase: str, score: float | None, epoch: int | None = None,
               label: str = "") -> None:
        """A Tune trial finished an epoch (on all its splits); `label` names it (lr, wd, split)."""
        if not self.console.is_terminal and epoch is not None:
            with self._lock:
                row = self.rows[(variant, phase)]
                shown = f", val {self.metric} {score:.4f}" if score is not None and not math.isnan(score) else ""
                self._print(f"{variant} {phase} {label}: epoch {epoch}{shown} | "
                            f"{row.done + row.failed + row.stopped}/{row.total} ended | {self.summary_line()}")
        self._refresh()

    def ended(self, variant: str, phase: str, status: str, score: float | None) -> None:
        with self._lock:
            self._ended(variant, phase, status, score)

    def _ended(self, variant: str, phase: str, status: str, score: float | None) -> None:
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
            row.running = 0  # a Tune trial restarted after a failure was counted as started twice
        if not self.console.is_terminal:
            shown = f" (val {self.metric} {score:.4f})" if score is not None and not math.isnan(score) else ""
            self._print(f"{variant} {phase}: a trial ended {status}{shown}; "
                        f"{row.done + row.failed + row.stopped}/{row.total} ended")
        self._refresh()

    def stalled(self, variant: str, phase: str, line: str, jobs: int = 0) -> None:
        """The stall watchdog's `line` (`sweep.stall`), printed above the live table or to the log;
        `jobs`: how many more jobs of the row are stalled now."""
        with self._lock:
            self.rows[(variant, phase)].stalled += jobs
            self._print(line)
            self._refresh()

    def unstalled(self, variant: str, phase: str) -> None:
        """A stalled job advanced again or ended."""
        with self._lock:
            row = self.rows[(variant, phase)]
            row.stalled = max(0, row.stalled - 1)
            self._refresh()

    def _refresh(self) -> None:
        with self._lock:
            if self.console.is_terminal:
                self._live.update(self._table())

    def _table(self) -> Table:
        table = Table(title=f"{self.title} ({clock(time.monotonic() - self.t0)})")
        for col in ("variant", "phase", "done", "running", "stalled", "failed", "stopped", f"best val {self.metric}",
                    "elapsed"):
            table.add_column(col, justify="left" if col in ("variant", "phase") else "right")
        now = time.monotonic()
        for (variant, phase), r in self.rows.items():
            elapsed = "" if r.started is None else clock((r.ended or now) - r.started)
            table.add_row(variant, phase, f"{r.done}/{r.total}", str(r.running), str(r.stalled), str(r.failed),
                          str(r.stopped),
                          "" if r.best == -math.inf else f"{r.best:.4f}", elapsed)
        return table


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"
