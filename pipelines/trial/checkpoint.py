"""Atomic files of a trial folder and the training state saved in `checkpoint.pt`.

Every file is written to a temporary name in the same folder and renamed, so a job killed at any
moment leaves either the old file or the new one, never half of one; the requeue signal waits
until a write is done (`uninterrupted`). Checkpoints hold only tensors,
numbers, strings and containers, so they load with `torch.load(..., weights_only=True)`."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from attnsweep.data.atomic import replacing


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
            handler = previous[num]
            if callable(handler):
                handler(num, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(num)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    with uninterrupted(), replacing(path) as tmp, tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())  # on a node crash, the rename must not overtake the data


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, allow_nan=False).encode()))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save(path: Path, state: dict[str, Any]) -> None:
    # Serialised in memory, then written by Python: a full disk is then an OSError "No space left
    # on device" (errno ENOSPC), where torch's zip writer on the file reports "file write failed".
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))


class UnreadableCheckpoint(RuntimeError):
    """A checkpoint file that torch cannot load (truncated, overwritten, of another format)."""


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnreadableCheckpoint(f"{path}: unreadable checkpoint ({first})") from e


def set_aside(path: Path) -> Path:
    """Rename a bad file to `<name>.corrupt-<n>` (kept for a post-mortem, never read again)."""
    n = 1
    while path.with_name(f"{path.name}.corrupt-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.corrupt-{n}")
    os.replace(path, aside)
    return aside


def rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU and CUDA, numpy, Python), in a weights_only-safe form."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
