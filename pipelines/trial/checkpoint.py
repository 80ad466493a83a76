"""The training state saved in `checkpoint.pt` and `best.pt`, written atomically like every file of
a trial folder (`folder.write_atomically`). Checkpoints hold only tensors, numbers, strings and
containers, so they load with `torch.load(..., weights_only=True)`."""
from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnsweep.pipelines.trial.folder import write_atomically


def save(path: Path, state: dict[str, Any]) -> None:
    # Serialised in memory, then written by Python: a full disk is then an OSError "No space left
    # on device" (errno ENOSPC), where torch's zip writer on the file reports "file write failed".
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, lambda f: f.write(buffer.getbuffer()))


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


def cpu_copy(state: Any) -> Any:
    """`state` with every tensor copied to the CPU (containers rebuilt): a snapshot that later
    training steps do not change."""
    return torch.utils._pytree.tree_map(
        lambda v: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v, state)


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
