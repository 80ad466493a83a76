"""The training state saved in `checkpoint.pt` and `best.pt`, written atomically like every file of
a trial folder (`folder.write_atomically`). Checkpoints hold only tensors, numbers, strings and
containers, so they load with `torch.load(..., weights_only=True)`."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnsweep.pipelines.trial.folder import write_atomically


def save(path: Path, state: dict[str, Any]) -> None:
    write_atomically(path, lambda f: torch.save(state, f))


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


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
