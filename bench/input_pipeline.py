"""The training input pipeline at paper scale, per augmentation preset, against the training step.

    .venv/bin/python bench/input_pipeline.py            # 224 px, real HAM10000 images, < 5 min here

For each preset one line, `<preset>: <X> ms/image ...`, with:
- loader: the CPU milliseconds per image of what DataLoader workers do (read the uint8 cache rows,
  collate), and the images/s 4 and 8 such workers feed;
- before: the same for the per-image CPU path this replaced (torchvision v2 per sample, then
  normalisation, in the workers), measured in this run;
- device aug: images/s of `DeviceTransform` on whole batches on the device (the CPU here);
- train: images/s of one training step (forward, backward, AdamW) of resnet18 and efficientnet_b0
  at the same size on the same device, and the share of a step's time the augmentation adds.
CPU figures are per CPU-second of this process (time.process_time, one intra-op thread), so a
loaded machine inflates them less than wall time; on CUDA the device figures are wall time."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from attnsweep.data.device_augment import PRESETS, DeviceTransform, Uint8Images, batch_seed
from attnsweep.data.files import decode

HAM = next(p / "shared" / "data" / "ham10000" / "images_200x150" for p in Path(__file__).resolve().parents
           if (p / "shared" / "data").is_dir())
MEAN, STD = [0.76, 0.55, 0.57], [0.14, 0.15, 0.17]


def before_transform(preset: str, size: int) -> v2.Transform | None:
    """The per-image presets as they were before the device path (torchvision v2, uint8 CHW)."""
    if preset == "flip_rot20":
        return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(20)])
    if preset == "perez2018":
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True), v2.Pad(size // 2, padding_mode="symmetric"),
            v2.RandomAffine(degrees=90, shear=20, scale=(0.8, 1.2)), v2.CenterCrop(size),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)])
    return None


def cpu_ms_per_image(fn, n_images: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000 / n_images


def loader_ms(images: np.ndarray, batch: int) -> float:
    """What the workers do for the device path: fetch uint8 rows and collate (in this process)."""
    loader = DataLoader(Uint8Images(images, np.zeros(len(images), np.int64)), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    return cpu_ms_per_image(lambda: [None for _ in loader], len(images))


def before_ms(images: np.ndarray, preset: str, size: int) -> float:
    """The replaced worker path: per image, torchvision's transform and normalisation."""
    transform = before_transform(preset, size)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def run():
        for i in range(len(images)):
            torch.manual_seed(i)
            img = torch.from_numpy(np.array(images[i])).permute(2, 0, 1)
            img = transform(img) if transform is not None else img
            (img.float() / 255 - mean) / std

    return cpu_ms_per_image(run, len(images))


def seconds(fn, device: torch.device, reps: int) -> float:
    """Per call: CPU time of this process on the CPU, wall time (synchronised) on CUDA."""
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps


def train_images_per_s(model_name: str, size: int, batch: int, device: torch.device, reps: int) -> float:
    from attnsweep.models import create

    model = create(model_name, 7, image_size=size).to(device)
    fmt = torch.channels_last if device.type == "cuda" else torch.preserve_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 7, (batch,), device=device)
    cuda = device.type == "cuda"
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if cuda else dict(device_type="cpu", enabled=False)

    def step():
        with torch.autocast(**amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / seconds(step, device, reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=192, help="HAM10000 images decoded for the loader figures")
    ap.add_argument("--before-n", type=int, default=48, help="images through the per-image path")
    ap.add_argument("--batch", type=int, default=64, help="loader and augmentation batch")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-reps", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_b0"])
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # CPU figures per CPU-second; DataLoader workers run one thread too

    refs = sorted(HAM.glob("*.jpg"))[: args.n]
    with tempfile.TemporaryDirectory() as tmp:  # a memory-mapped uint8 cache, as trials read it
        cache = np.lib.format.open_memmap(Path(tmp, "cache.npy"), mode="w+", dtype=np.uint8,
                                          shape=(len(refs), args.size, args.size, 3))
        for i, ref in enumerate(refs):
            cache[i] = decode(ref, args.size)
        cache.flush()
        images = np.load(Path(tmp, "cache.npy"), mmap_mode="r")
        train = {m: train_images_per_s(m, args.size, args.train_batch, device, args.train_reps) for m in args.models}
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU, 1 thread"
        print(f"{args.size} px, {len(refs)} HAM10000 images, batch {args.batch}, device {name}")
        for preset in PRESETS:
            loader = loader_ms(images, args.batch)
            before = before_ms(images[: args.before_n], preset, args.size)
            transform = DeviceTransform(preset, args.size, MEAN, STD).to(device)
            batch = torch.from_numpy(np.array(images[: args.batch])).to(device)
            calls = iter(range(10**6))
            aug_s = seconds(lambda: transform(batch, seed=batch_seed(0, 1, 0, next(calls))), device, 2) / args.batch  # noqa: B023 (called in this iteration)
            trains = ", ".join(f"{m} {ips:.1f} images/s (augmentation adds {aug_s * ips:.0%})"
                               for m, ips in train.items())
            print(f"{preset}: loader {loader:.3f} ms/image (feeds {4000 / loader:,.0f} images/s with 4 workers, "
                  f"{8000 / loader:,.0f} with 8; before {before:.1f} ms/image, {before / loader:,.0f}x); "
                  f"device aug {1 / aug_s:.0f} images/s ({aug_s * 1000:.1f} ms/image, before/device "
                  f"{before / (aug_s * 1000 + loader):.2f}x); train: {trains}", flush=True)


if __name__ == "__main__":
    main()
