"""Paper 004's small CIFAR-10 CNNs, `cnn2` and `cnn3`, as in the authors' code: each stage is two
[conv -> (attention) -> ReLU -> BN] units (the first padded, the second not), max-pool, dropout;
then a 512-unit hidden layer and the classifier."""
from __future__ import annotations

import torch
from torch import nn


class ConvUnit(nn.Module):
    """conv -> attn -> ReLU -> BN; `attn` is the site paper 004 puts its attention modules in."""

    def __init__(self, in_channels: int, out_channels: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=padding)
        self.attn = nn.Identity()
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.act(self.attn(self.conv(x))))


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        ConvUnit(in_channels, out_channels, padding=1), ConvUnit(out_channels, out_channels, padding=0),
        nn.MaxPool2d(2), nn.Dropout2d(0.25),
    )


class SmallCNN(nn.Module):
    """The head average-pools the last map to `head_grid` first, so the hidden layer (and the
    parameter count) is the paper's at any input size; at 32 px cnn2's map is already 6x6."""

    def __init__(self, widths: tuple[int, ...], head_grid: tuple[int, int], num_classes: int,
                 hidden: int = 512, in_chans: int = 3):
        super().__init__()
        channels = (in_chans, *widths)
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in zip(channels, channels[1:])))
        self.pool = nn.AdaptiveAvgPool2d(head_grid)
        self.fc1 = nn.Linear(widths[-1] * head_grid[0] * head_grid[1], hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(hidden, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(x)).flatten(1)
        return self.fc(self.drop(self.act(self.fc1(x))))


def cnn2(num_classes: int) -> SmallCNN:
    return SmallCNN((64, 128), (6, 6), num_classes)


def cnn3(num_classes: int) -> SmallCNN:
    # The authors' 3-stage CNN sized its hidden layer for 256 * 6 * 3 inputs (its forward skipped
    # the third stage); pooling the third stage's map to 6x3 keeps that layer and the paper's 3.51 M.
    return SmallCNN((64, 128, 256), (6, 3), num_classes)
