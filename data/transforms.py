"""`make_dataset`: an ImageSet as a torch Dataset of (normalised float CHW, label), with the
augmentation presets of the papers, reproducible per seed.

- `none`: no augmentation.
- `flip_rot20` (paper 000): horizontal and vertical flip, rotation up to 20 degrees.
- `perez2018` (paper 002, Perez et al. 2018 scenario J, their `full-basic`): random resized crop
  (scale 0.4-1), affine (rotation 90, shear 20, scale 0.8-1.2, symmetric padding as their imgaug
  `mode="symmetric"`), both flips, colour jitter (brightness, contrast, saturation 0.3, hue 0.1).

Evaluation sets (`train=False`) are only normalised: the cache already holds the study's size.
Each sample's augmentation is drawn from its own generator seeded by (seed, epoch, index), so the
result does not depend on the number of workers or ranks; call `set_epoch` before each epoch
(with `persistent_workers=False`, the DataLoader default, workers see the new epoch)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

Preset = Literal["none", "flip_rot20", "perez2018"]
PRESETS = ("none", "flip_rot20", "perez2018")


def augmentation(preset: str, size: int) -> v2.Transform | None:
    """The preset's transform of a uint8 CHW tensor (None for `none`)."""
    if preset == "none":
        return None
    if preset == "flip_rot20":
        return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(20)])
    if preset == "perez2018":
        pad = size // 2
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True),
            v2.Pad(pad, padding_mode="symmetric"),
            v2.RandomAffine(degrees=90, shear=20, scale=(0.8, 1.2)),
            v2.CenterCrop(size),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1),
        ])
    raise ValueError(f"unknown augmentation preset {preset!r}; known: {', '.join(PRESETS)}")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread for the duration: on one small image, torch's parallel kernels only add
    synchronisation (rotation 10x, colour jitter 30x slower with 2 threads on a busy 2-core node).
    DataLoader workers already run with one thread; this covers loading in the main process."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class AugmentedImages(Dataset):
    """(float32 [3, H, W] normalised with mean/std, int label) for each image of an ImageSet."""

    def __init__(self, images, labels: np.ndarray, transform: v2.Transform | None,
                 mean: list[float], std: list[float], seed: int):
        self.images, self.labels, self.transform, self.seed = images, np.asarray(labels), transform, seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.require(self.images[i], requirements=["C", "W"])).permute(2, 0, 1)
        if self.transform is not None:
            state = np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1, np.uint64)[0]
            with torch.random.fork_rng(devices=[]), _one_thread():  # torchvision draws from the global RNG
                torch.manual_seed(int(state))
                img = self.transform(img)
        x = (img.to(torch.float32) / 255.0 - self.mean) / self.std
        return x, int(self.labels[i])


def make_dataset(image_set, preset: str, mean: list[float], std: list[float], train: bool,
                 seed: int) -> AugmentedImages:
    """A torch Dataset over `image_set` (an `ImageSet`): augmented with `preset` when `train`,
    normalised with the training split's `mean`/`std` (from `load_split`) always."""
    size = image_set.images.shape[1]
    transform = augmentation(preset, size) if train else None
    if not train:
        augmentation(preset, size)  # an unknown preset fails for evaluation sets too
    return AugmentedImages(image_set.images, image_set.labels, transform, mean, std, seed)
