"""Coordinate Attention (Hou, Zhou, Feng: "Coordinate Attention for Efficient Mobile Network
Design", CVPR 2021, Fig. 2(c)), following the authors' reference code: the map is pooled along
each spatial direction, the two 1-D descriptors share a 1x1 conv + BN + h-swish bottleneck, and
two 1x1 convs turn them into per-row and per-column sigmoid gates."""
from __future__ import annotations

import torch
from torch import nn


class CoordAttention(nn.Module):
    """attnsweep's contract (timm's `create_attn`): `CoordAttention(channels, **kwargs)`, NCHW in,
    the same shape out. `reduction`: the bottleneck ratio (the paper's 32, at least `min_channels`)."""

    def __init__(self, channels: int, reduction: int = 32, min_channels: int = 8):
        super().__init__()
        mid = max(min_channels, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mid, channels, 1)
        self.conv_w = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x_h = x.mean(dim=3, keepdim=True)  # N, C, H, 1
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # N, C, W, 1
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(y_h).sigmoid()  # N, C, H, 1
        a_w = self.conv_w(y_w.transpose(2, 3)).sigmoid()  # N, C, 1, W
        return x * a_h * a_w


class Flatten(nn.Module):
    """A bad plugin for the tests: its output is not its input's shape."""

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def not_a_module(channels: int) -> str:
    """A bad plugin for the tests: returns no nn.Module."""
    return f"{channels} channels"
