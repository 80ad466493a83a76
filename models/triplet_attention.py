"""Triplet attention (Misra et al. 2021): three spatial gates over the (C,W), (H,C) and (H,W) views
of the tensor, averaged. Each gate is CBAM's spatial gate (Z-pool of mean and max, 7x7 conv, BN,
sigmoid), which timm has; the rotations, which timm lacks, are written here."""
from __future__ import annotations

import torch
from timm.layers.cbam import SpatialAttn
from torch import nn


class TripletAttention(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()  # `channels` only for the attention-layer convention: TA's size does not depend on it
        self.channel_width = SpatialAttn(kernel_size)
        self.height_channel = SpatialAttn(kernel_size)
        self.height_width = SpatialAttn(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # permute(0, 2, 1, 3) and permute(0, 3, 2, 1) are their own inverses
        cw = self.channel_width(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        hc = self.height_channel(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        return (cw + hc + self.height_width(x)) / 3
