"""Bytes the trainer writes per epoch into checkpoint.pt and best.pt, on real data: BreastMNIST at
28 px, resnet18, AdamW. Counts the size of every file `checkpoint.save` writes, so the same
script measures an older checkout too (run it with that checkout's python to compare):

    .venv/bin/python bench/checkpoint_bytes.py                  # this tree: default, and every epoch
    /work/main/.venv/bin/python bench/checkpoint_bytes.py       # another checkout's trainer
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from attnsweep.data import DatasetSpec, SplitSpec
from attnsweep.pipelines.trial import checkpoint
from attnsweep.pipelines.trial.trainer import TrialConfig, train

BREAST = next(p / "shared" / "data" / "medmnist" / "breastmnist.npz" for p in Path(__file__).resolve().parents
           if (p / "shared" / "data").is_dir())


def bytes_per_epoch(cfg: TrialConfig, folder: Path) -> float:
    written = [0]
    real = checkpoint.save

    def counting(path, state):
        real(path, state)
        written[0] += Path(path).stat().st_size

    checkpoint.save = counting
    try:
        train(cfg, folder)
    finally:
        checkpoint.save = real
    return written[0] / cfg.epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = dict(model="resnet18", dataset=DatasetSpec(format="medmnist", root=BREAST),
                splits=SplitSpec(search_splits=1, repeat_splits=0), image_size=28, epochs=args.epochs,
                lr=1e-3, weight_decay=1e-4, batch_size=64, optimizer="adamw", seed=0)
    runs = {"default settings": {}}
    if "checkpoint_every_epochs" in TrialConfig.model_fields:
        runs["checkpoint_every_epochs: 1"] = {"checkpoint_every_epochs": 1}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(runs.items()):
            per_epoch = bytes_per_epoch(TrialConfig(**base, **extra), Path(tmp, str(i)))
            print(f"{name}: {per_epoch / 1e6:.1f} MB written per epoch ({args.epochs} epochs, "
                  f"resnet18, AdamW, BreastMNIST 28 px; trainer {checkpoint.__file__})", flush=True)


if __name__ == "__main__":
    main()
