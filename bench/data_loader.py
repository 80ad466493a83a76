"""Images/s of a training epoch's loading: from the decoded uint8 cache versus decoding the JPEG
files every epoch, with the same transforms, workers and batch size, on the real HAM10000 images.

    .venv/bin/python bench/data_loader.py --size 128 --n 2000 --workers 2

Prints both rates and their ratio (and the one-off cost of building the cache)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from attnsweep.data import DatasetSpec, ImageSet, SplitSpec, load_split, make_dataset, prepare
from attnsweep.data.files import decode

HAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"


class JpegImages:
    """The same images as the cache view, decoded (and resized) from their files on every access."""

    def __init__(self, root: Path, refs: list[str], size: int):
        self.root, self.refs, self.size = root, refs, size
        self.shape = (len(refs), size, size, 3)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> np.ndarray:
        return decode(self.root / self.refs[i], self.size)


def images_per_s(dataset, batch: int, workers: int, epochs: int) -> float:
    """Best of `epochs` passes over `dataset`, the way a training loop reads it."""
    best = 0.0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(epoch))
        t0, n = time.perf_counter(), 0
        for x, _ in loader:
            n += len(x)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=HAM)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=2000, help="training images per epoch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--preset", default="flip_rot20")
    ap.add_argument("--epochs", type=int, default=2, help="passes per method; the best counts")
    ap.add_argument("--out", type=Path, default=None, help="study dir to prepare into (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per-sample transforms: intra-op threads only contend

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-data-"))
    t0 = time.perf_counter()
    data_dir = prepare(DatasetSpec(format="ham10000", root=args.root), SplitSpec(search_splits=1, repeat_splits=0),
                       args.size, out, workers=args.workers)
    prepare_s = time.perf_counter() - t0
    split = load_split(data_dir, "search-0")
    train = split.sets["train"]
    n = min(args.n, len(train))
    cached = ImageSet(train.images, train.labels)  # the view reads rows lazily; first n used below
    jpeg = ImageSet(JpegImages(args.root, list(train.meta["ref"]), args.size), train.labels)
    rates = {}
    for name, image_set in (("cache", cached), ("jpeg", jpeg)):
        ds = make_dataset(image_set, args.preset, split.mean, split.std, train=True, seed=0)
        subset = torch.utils.data.Subset(ds, range(n))
        subset.set_epoch = ds.set_epoch
        rates[name] = images_per_s(subset, args.batch, args.workers, args.epochs)
    print(f"HAM10000 {n} images at {args.size}px, preset {args.preset}, batch {args.batch}, "
          f"{args.workers} workers (prepare incl. cache build: {prepare_s:.1f} s)")
    print(f"  decoded cache : {rates['cache']:8.0f} images/s")
    print(f"  JPEG per epoch: {rates['jpeg']:8.0f} images/s")
    print(f"  ratio cache/JPEG: {rates['cache'] / rates['jpeg']:.1f}x")


if __name__ == "__main__":
    main()
