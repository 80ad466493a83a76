"""Training throughput of `attnsweep.pipelines.trial.trainer.train` against a bare PyTorch loop: the same
model, batch, optimizer, threads and training images, the bare loop reading them from one tensor
in memory. All in this process, in rounds of (bare loop, trainer), so that each ratio compares
neighbours in time even when the machine's load drifts; the first epoch of each run is warm-up.
Prints images/s of both per round and the median ratio (trainer / bare).

    .venv/bin/python bench/trainer_throughput.py --model resnet18 --image-size 32 --n 600 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnsweep.data import DatasetSpec, SplitSpec, load_split, make_dataset, prepare
from attnsweep.models import create
from attnsweep.pipelines.trial.job_env import cpu_threads
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.trainer import train


def bare_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
              lr: float, device: torch.device) -> float:
    """Images/s of a minimal SGD loop over in-memory tensors (mean over epochs after the first)."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    rates = []
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        start = time.perf_counter()
        n = 0
        for i in range(0, len(x) - batch + 1, batch):  # drop_last, as the trainer
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    return statistics.mean(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--n", type=int, default=600, help="synthderm images (70 %% of them train)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first is warm-up)")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        spec = DatasetSpec(format="synthderm", options={"n": args.n})
        splits = SplitSpec(search_splits=1, repeat_splits=0)
        data_dir = prepare(spec, splits, args.image_size, out)
        cfg = TrialConfig(model=args.model, dataset=spec, splits=splits, split="search-0",
                          image_size=args.image_size, epochs=args.epochs, lr=0.01, batch_size=args.batch_size,
                          data_dir=data_dir)
        split = load_split(data_dir, cfg.split)
        ds = make_dataset(split.sets["train"], "none", split.mean, split.std, train=False, seed=0)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        y = torch.tensor(split.sets["train"].labels)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

        def bare() -> float:
            torch.manual_seed(0)
            model = create(args.model, len(split.class_names), image_size=args.image_size)
            return bare_loop(model, x, y, args.batch_size, args.epochs, cfg.lr, device)

        torch.set_num_threads(cpu_threads(1))  # what train() sets for one rank
        rounds = []
        for r in range(args.rounds):
            bare_rate = bare()
            trial_dir = out / f"trial-{r}"
            result = train(cfg, trial_dir)
            lines = TrialFolder(trial_dir).epochs()
            rounds.append((statistics.mean(line["images_per_s"] for line in lines[1:]), bare_rate))

    print(f"{args.model} {args.image_size}px batch {args.batch_size}, {result['n_train']} training images, "
          f"{torch.get_num_threads()} threads, {device}")
    for r, (trainer_rate, bare_rate) in enumerate(rounds):
        print(f"round {r}: trainer {trainer_rate:7.1f} images/s, bare loop {bare_rate:7.1f} images/s, "
              f"ratio {trainer_rate / bare_rate:.3f}")
    print(f"median ratio (trainer / bare): {statistics.median(t / b for t, b in rounds):.3f}")


if __name__ == "__main__":
    main()
