"""The trial folder: everything one configuration trained on one split leaves on disk, and the one
place that knows its file names, how each is read and written, and when the trial is done.

    config.json     the TrialConfig (written when the folder is claimed; another config is refused)
    metrics.jsonl   one line per finished epoch (a last line without its newline is being written)
    checkpoint.pt   the resume state after a finished epoch, written when due (`checkpoint.save`)
    best.pt         the weights selected on validation (staged as best-epoch<N>.pt until the
                    checkpoint naming epoch N is written)
    result.json     last: `ok` or `diverged` is final, `failed` (written by the job) is retried
    jobs.json       every submitted job: id, executor kind, submitit folder, tasks, time
    submitit/       the submitit logs and pickles of a job of this trial alone
    data/           the prepared data, when the config names no data_dir (`data.prepare(.., path)`)

Every file is written to a temporary name and renamed (`data.atomic.replacing`), so a job killed
at any moment leaves the old file or the new one, never half of one; the requeue signal waits
until a write is done (`uninterrupted`). No torch here: the driver and the report read folders."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from attnsweep.data.atomic import replacing
from attnsweep.pipelines.config.trial_config import TrialConfig, TrialConfigError

CONFIG, METRICS, CHECKPOINT, BEST, RESULT, JOBS, SUBMITIT = (
    "config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "result.json", "jobs.json", "submitit")
FINAL_STATUSES = ("ok", "diverged")  # a folder with one of these is done; `failed` is retried

# submitit's handler of the time-out/preemption signal (USR2) checkpoints, requeues and calls
# sys.exit wherever the signal lands. Inside torch.save the zip writer's cleanup turns that
# SystemExit into a RuntimeError: the job ends as failed although it was requeued. SIGTERM and
# SIGINT (a local job's cancel) are held too, so an epoch's files are written together or not at all.
HELD_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold HELD_SIGNALS' Python handlers until the block ends, then run them (nests). Only the
    main thread can set handlers; elsewhere (a debug job in a worker thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = {s: signal.signal(s, lambda num, frame: received.append((num, frame))) for s in HELD_SIGNALS}
    try:
        yield
    finally:
        for num, handler in previous.items():
            signal.signal(num, handler)
        for num, frame in received:
            deliver(previous[num], num, frame)


def deliver(handler: Any, num: int, frame: Any) -> None:
    """Do with signal `num` what `handler` (a Python handler, SIG_DFL or SIG_IGN) would have done."""
    if callable(handler):
        handler(num, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(num, signal.SIG_DFL)
        signal.raise_signal(num)


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write(f)` to a temp file, fsync, rename; the requeue signal waits until it is done."""
    with uninterrupted(), replacing(path) as tmp, tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())  # on a node crash, the rename must not overtake the data


def read_json(path: Path) -> Any:
    """A JSON file; a corrupt one is a one-line ValueError naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_json(path: Path, obj: Any) -> None:
    write_atomically(path, lambda f: f.write(json.dumps(obj, indent=1, allow_nan=False).encode()))


@dataclass(frozen=True)
class TrialFolder:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    config_file = property(lambda self: self.path / CONFIG)
    metrics_file = property(lambda self: self.path / METRICS)
    checkpoint_file = property(lambda self: self.path / CHECKPOINT)
    best_file = property(lambda self: self.path / BEST)
    result_file = property(lambda self: self.path / RESULT)
    jobs_file = property(lambda self: self.path / JOBS)
    submitit_dir = property(lambda self: self.path / SUBMITIT)
    data_dir = property(lambda self: self.path / "data")

    # config.json
    def claim(self, cfg: TrialConfig, write: bool = True) -> None:
        """Write config.json, or check that the folder's config.json is this config."""
        config = cfg.model_dump(mode="json")
        if self.config_file.exists():
            if read_json(self.config_file) != config:
                raise TrialConfigError(f"{self.config_file}: the trial folder holds another configuration; "
                                       f"use a new folder")
        elif write:
            self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_file, config)

    def config(self) -> dict[str, Any]:
        return read_json(self.config_file)

    # metrics.jsonl
    def epochs(self) -> list[dict[str, Any]]:
        """The finished epochs. A last line without its newline is an epoch the trainer is still
        writing: it is left for the next read."""
        if not self.metrics_file.exists():
            return []
        text = self.metrics_file.read_text()
        complete = text[: text.rfind("\n") + 1]
        epochs = []
        for n, line in enumerate(complete.splitlines(), 1):
            if line.strip():
                try:
                    epochs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.metrics_file}:{n}: not valid JSON ({e.msg})") from None
        return epochs

    def append_epoch(self, line: dict[str, Any]) -> None:
        """Rewritten and renamed, like every file here: the driver sees a folder change by its
        directory's mtime alone (`sweep.watcher`), which an append would not change."""
        text = self.metrics_file.read_text() if self.metrics_file.exists() else ""
        text = text[: text.rfind("\n") + 1] + json.dumps(line, allow_nan=False) + "\n"
        write_atomically(self.metrics_file, lambda f: f.write(text.encode()))

    def truncate_epochs(self, epoch: int, line: dict[str, Any]) -> None:
        """metrics.jsonl with exactly the epochs up to a checkpoint's `epoch`: its `line` added if
        a kill left it out, later epochs' lines (they re-run) and a torn last line removed; replaced
        atomically, so a reader sees the old file or the new one."""
        kept = [e for e in self.epochs() if e["epoch"] <= epoch]
        if not kept or kept[-1]["epoch"] < epoch:
            kept.append(line)
        text = "".join(json.dumps(e, allow_nan=False) + "\n" for e in kept)
        if not self.metrics_file.exists() or self.metrics_file.read_text() != text:
            write_atomically(self.metrics_file, lambda f: f.write(text.encode()))

    def staged_best_file(self, epoch: int | str) -> Path:
        return self.path / f"best-epoch{epoch}.pt"

    # result.json
    def result(self) -> dict[str, Any] | None:
        """result.json as written (also `failed`), None before the job wrote one."""
        return read_json(self.result_file) if self.result_file.exists() else None

    def final_result(self) -> dict[str, Any] | None:
        """result.json when the trial is done (ok or diverged); a failed one is retried."""
        result = self.result()
        return result if result is not None and result.get("status") in FINAL_STATUSES else None

    def write_result(self, result: dict[str, Any]) -> None:
        write_json(self.result_file, result)

    def drop_checkpoint(self) -> None:
        """A finished trial is never resumed: its resume state (twice the size of the weights)
        goes; best.pt stays for the explanations."""
        self.checkpoint_file.unlink(missing_ok=True)

    # jobs.json
    def jobs(self) -> list[dict[str, Any]]:
        return read_json(self.jobs_file) if self.jobs_file.exists() else []

    def job_ids(self) -> list[str]:
        return [r["job_id"] for r in self.jobs()]

    def record_job(self, job_id: str, kind: str, submitit_folder: Path, tasks: int) -> None:
        records = self.jobs()
        records.append({"job_id": job_id, "kind": kind, "folder": str(submitit_folder), "tasks": tasks,
                        "submitted_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})
        write_json(self.jobs_file, records)
