"""Paper 002's GA: the non-local block of Wang et al. 2018 (embedded Gaussian, C/2 inner channels,
residual), and the hook that collects its attention maps for the explanation figures."""
from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from timm.layers import NonLocalAttn
from torch import nn


class GlobalSelfAttention(NonLocalAttn):
    """timm's NonLocalAttn with Wang et al.'s C/2 bottleneck. Its output is BN(W(y)) + x with the
    BN scale initialised to 0 (Wang et al. §4.1), so the block is the identity at initialisation.

    `forward` restates timm's only to pass the softmax map through `attn_map` (an Identity), where
    `capture_ga_maps` hooks it.
    """

    def __init__(self, channels: int):
        super().__init__(channels, rd_ratio=1 / 2, rd_divisor=1)
        self.attn_map = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = self.t(x).flatten(2).transpose(1, 2)  # (B, HW, C/2) queries
        p = self.p(x).flatten(2)  # (B, C/2, HW) keys
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, HW, C/2) values
        att = F.softmax(torch.bmm(t, p) * self.scale, dim=2)
        att = self.attn_map(att.view(b, h, w, h, w)).view(b, h * w, h * w)
        y = torch.bmm(att, g).transpose(1, 2).reshape(b, -1, h, w)
        return self.norm(self.z(y)) + x


@contextmanager
def capture_ga_maps(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward pass stores each GA module's attention, keyed by module name,
    as a (B, H, W, H, W) tensor: [b, i, j] is the map over all positions for query pixel (i, j).
    Paper 002's figures average it over the queries: `maps[name].mean(dim=(1, 2))`."""
    maps: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, GlobalSelfAttention):
            def store(_module, _inputs, output, name=name):
                maps[name] = output.detach()
            handles.append(module.attn_map.register_forward_hook(store))
    if not handles:
        raise ValueError(f"{type(model).__name__} has no GA module: only `+ga` variants have attention maps")
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
