"""`make_dataset`: an ImageSet as a torch Dataset of (normalised float CHW, label), one image at a
time, for evaluation and inspection (explanations, tests). The trainer does not use it: it reads
uint8 batches (`Uint8Images`) and converts and augments them on the device (`device_augment`).

With `train=True` an image is augmented with the preset as a batch of one, drawn from
(seed, epoch, index): the same transforms and ranges as training, not the same draws."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from attnsweep.data.device_augment import DeviceTransform, Uint8Images, batch_seed


class NormalisedImages(Dataset):
    def __init__(self, images: Uint8Images, transform: DeviceTransform, train: bool, seed: int):
        self.images, self.transform, self.train, self.seed = images, transform, train, seed
        self.labels = images.labels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.images[i]
        seed = batch_seed(self.seed, self.epoch, 0, int(i)) if self.train else None
        return self.transform(x[None], seed)[0], y


def make_dataset(image_set, preset: str, mean: list[float], std: list[float], train: bool,
                 seed: int) -> NormalisedImages:
    """A torch Dataset over `image_set` (an `ImageSet`): augmented with `preset` when `train`,
    normalised with the training split's `mean`/`std` (from `load_split`) always. An unknown
    preset is a ValueError for evaluation sets too."""
    transform = DeviceTransform(preset, image_set.images.shape[1], mean, std)
    return NormalisedImages(Uint8Images(image_set.images, np.asarray(image_set.labels)), transform, train, seed)
