"""Paper 004's autoencoder-inspired spatial attention, conv and linear versions: x * gate(x) where
the gate is an encoder-decoder ending in a sigmoid. Layer sizes follow the authors' code
(github.com/MNetanel/dl_project_cnn_attention), which reproduces the paper's parameter counts."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvAutoencoderAttention(nn.Module):
    """Three stride-2 convs down (12, 24, 48 channels), three stride-2 transposed convs up.

    The authors tuned the last transposed conv per layer so the map comes back at the exact input
    size for 32 px CIFAR images; here one fixed decoder is used at every site and its map is
    resized bilinearly where the strides do not divide the input size.
    """

    def __init__(self, channels: int, hidden: tuple[int, int, int] = (12, 24, 48)):
        super().__init__()
        c1, c2, c3 = hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, c1, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c2, c3, 4, 2, 1), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c1, channels, 3, 2, 1, output_padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.decoder(self.encoder(x))
        if gate.shape[-2:] != x.shape[-2:]:
            gate = F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * gate


class LinearAutoencoderAttention(nn.Module):
    """Fully connected encoder-decoder (width -> 128 -> 64 -> 12 -> 64 -> 128 -> width) applied along
    the feature map's width, as in the authors' code; scaled by 2 so the gate is ~1 on average."""

    def __init__(self, channels: int, width: int, hidden: tuple[int, int, int] = (128, 64, 12)):
        super().__init__()  # the gate acts per row, so its size depends on the width, not on channels
        h1, h2, h3 = hidden
        self.encoder = nn.Sequential(nn.Linear(width, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, h3))
        self.decoder = nn.Sequential(
            nn.Linear(h3, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, width), nn.Sigmoid(),
        )
        for layer in [*self.encoder, *self.decoder]:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 * self.decoder(self.encoder(x))
