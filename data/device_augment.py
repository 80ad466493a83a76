"""The training input on the device, a whole batch at a time: uint8 images in, normalised float out,
with the preset's random transforms drawn per sample (kornia.augmentation). DataLoader workers only
copy uint8 rows out of the cache (`Uint8Images`), so a worker costs a few microseconds per image,
and the same code runs on the CPU (tests, the demo) and on CUDA.

Presets (the parameter ranges of the earlier per-image torchvision presets):
- `none`: no augmentation.
- `flip_rot20` (paper 000): horizontal and vertical flip (p 0.5 each), rotation up to 20 degrees.
- `perez2018` (paper 002, Perez et al. 2018 scenario J, their `full-basic`): random resized crop
  (scale 0.4-1, aspect 3/4-4/3), affine (rotation +-90, x-shear +-20 degrees, isotropic scale
  0.8-1.2, mirrored borders as their imgaug `mode="symmetric"`), both flips, colour jitter
  (brightness, contrast, saturation 0.3, hue 0.1; torchvision's formulas).

Reproducible: each batch's draws come from torch's generators seeded by (seed, epoch, rank, batch
index) inside `torch.random.fork_rng`, so the model's own random stream (dropout) is untouched.
The same seed and world size give the same augmentations; another world size shards the epoch
differently (DistributedSampler), so its batches and their draws differ. The draws on CUDA differ
from those on the CPU (another generator)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_homography
from torch import nn
from torch.utils.data import Dataset

PRESETS = ("none", "flip_rot20", "perez2018")


class BatchAugment(nn.Module):
    """A preset's random transforms of a float [B, 3, S, S] batch in [0, 1], per-sample parameters.

    kornia draws each transform's parameters (`forward_parameters`) and gives its 3x3 matrix
    (`compute_transformation`); the geometric ones are composed into one matrix per sample and the
    batch is resampled once (`grid_sample`). Applying kornia's modules one after another
    resamples four times, and on the CPU cost 2-3x more than the per-image torchvision path it
    replaces; one warp is also one interpolation instead of four. `params` holds the last draws
    by transform name (for tests and inspection)."""

    def __init__(self, geometric: dict[str, nn.Module], mode: str, padding_mode: str,
                 colour: nn.Module | None = None):
        super().__init__()
        self.geometric = nn.ModuleDict(geometric)
        self.colour = colour
        self.mode, self.padding_mode = mode, padding_mode
        self.params: dict[str, dict[str, torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eye = torch.eye(3, device=x.device, dtype=x.dtype).expand(b, 3, 3)
        matrix = eye
        for name, aug in self.geometric.items():
            params = self.params[name] = aug.forward_parameters(x.shape)
            m = aug.compute_transformation(x, params, aug.flags).expand(b, 3, 3)
            applied = params["batch_prob"].to(x.device).view(b, 1, 1) > 0.5  # a flip's coin
            matrix = torch.where(applied, m, eye) @ matrix
        # The matrix maps input pixels to output pixels; grid_sample wants output -> input, normalised.
        theta = torch.linalg.inv(normalize_homography(matrix, (h, w), (h, w)))[:, :2]
        grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode, align_corners=False)
        if self.colour is not None:
            self.params["colour"] = params = self.colour.forward_parameters(x.shape)
            x = colour_jitter(x, params)
        return x


_GRAY = (0.2989, 0.587, 0.114)  # torchvision's (ITU-R 601) luma weights


def colour_jitter(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision's ColorJitter formulas on a batch, with per-sample factors and kornia's drawn
    step order. By hand because kornia's ColorJitter module (its HSV conversion, torch.where guards)
    took most of the batch's time, more than the per-image torchvision path on the CPU; the hue step uses
    torchvision's own RGB<->HSV kernels (private helpers, batch-capable)."""
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    b = x.shape[0]
    factor = {k: params[f"{k}_factor"].to(x.device, x.dtype).view(b, 1, 1, 1)
              for k in ("brightness", "contrast", "saturation", "hue")}
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    for step in params["order"].tolist():
        if step == 0:
            x = (x * factor["brightness"]).clamp_(0, 1)
        elif step in (1, 2):
            gray = (x * weights).sum(1, keepdim=True)
            other = gray.mean((2, 3), keepdim=True) if step == 1 else gray
            f = factor["contrast" if step == 1 else "saturation"]
            x = (x * f + (1 - f) * other).clamp_(0, 1)
        else:
            h, s, v = _rgb_to_hsv(x).unbind(1)
            x = _hsv_to_rgb(torch.stack(((h + factor["hue"].view(b, 1, 1)).remainder_(1.0), s, v), 1))
    return x


def augmentation(preset: str, size: int) -> BatchAugment | None:
    """The preset's batch augmentation (None for `none`). p=1 where torchvision always applied the
    transform (kornia's default is 0.5 for some)."""
    if preset == "none":
        return None
    if preset == "flip_rot20":
        return BatchAugment({"hflip": K.RandomHorizontalFlip(), "vflip": K.RandomVerticalFlip(),
                             "rotation": K.RandomRotation(20.0, p=1.0)},
                            mode="nearest", padding_mode="zeros")  # torchvision's RandomRotation defaults
    if preset == "perez2018":
        # grid_sample's "reflection" with align_corners=False mirrors about the pixel edges: numpy's
        # and imgaug's "symmetric" (the edge pixel repeated).
        return BatchAugment(
            {"crop": K.RandomResizedCrop((size, size), scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3), p=1.0),
             "affine": K.RandomAffine(degrees=90.0, shear=20.0, scale=(0.8, 1.2), p=1.0),
             "hflip": K.RandomHorizontalFlip(), "vflip": K.RandomVerticalFlip()},
            mode="bilinear", padding_mode="reflection",
            colour=K.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1, p=1.0))
    raise ValueError(f"unknown augmentation preset {preset!r}; known: {', '.join(PRESETS)}")


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, batch]).generate_state(1, np.uint64)[0] >> 1)


class DeviceTransform(nn.Module):
    """uint8 [B, H, W, 3] (as the DataLoader collates `Uint8Images`) -> normalised float [B, 3, H, W]
    on `x`'s device, augmented with `preset` when `seed` is given (training), else only normalised."""

    def __init__(self, preset: str, size: int, mean: list[float], std: list[float]):
        super().__init__()
        self.augment = augmentation(preset, size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, seed: int | None = None,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        with _one_cpu_thread(x.device):
            x = x.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
            if seed is not None and self.augment is not None:
                devices = [x.device] if x.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices, device_type=x.device.type):
                    torch.manual_seed(seed)
                    x = self.augment(x)
            return ((x - self.mean) / self.std).contiguous(memory_format=memory_format)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread for the CPU path: these element-wise kernels gain little from a second
    thread, and on a busy 2-core node torch's threads spin against each other (a 16-image batch at
    32 px: 100 ms with 2 threads, 0.25 ms with 1, measured under load 11)."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Uint8Images(Dataset):
    """(uint8 [H, W, 3] tensor, int label) per image: a copy of the cache row, nothing computed."""

    def __init__(self, images, labels: np.ndarray):
        self.images, self.labels = images, np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.require(self.images[i], requirements=["C", "W"])), int(self.labels[i])
