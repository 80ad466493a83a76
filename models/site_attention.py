"""The attention modules that sit at a block's output (papers 000, 001, 004): timm's where timm has
the paper's module, configured as the papers' counts show, and ours otherwise."""
from __future__ import annotations

from functools import partial

from timm.layers import EcaModule, GlobalContext, SEModule
from timm.layers.cbam import CbamModule, SpatialAttn
from torch import nn

from .autoencoder_attention import ConvAutoencoderAttention, LinearAutoencoderAttention
from .triplet_attention import TripletAttention


class CbamSpatialAttention(SpatialAttn):
    """CBAM's spatial gate on its own (paper 004's hybrids), with the channels-first signature."""

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__(kernel_size)


# Hu et al.'s r = 16 on every stage: timm's default rounds the bottleneck up to a multiple of 8.
_SE = partial(SEModule, rd_ratio=1 / 16, rd_divisor=1)
# The official CBAM's shared MLP has biases (timm's default has none); r = 16 as in the paper.
_CBAM = partial(CbamModule, rd_ratio=1 / 16, mlp_bias=True)
# GCNet's block: attention pooling, channel-add fusion, bottleneck ratio 1/16 with LayerNorm.
_GC = partial(GlobalContext, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16)

_BY_CHANNELS = {
    "se": _SE,
    "eca": EcaModule,  # kernel size from the channel count, psi(C) of the ECA paper
    "gc": _GC,
    "cbam": _CBAM,
    "ta": TripletAttention,
    "cbam_spatial": CbamSpatialAttention,
    "ae_conv": ConvAutoencoderAttention,
}
SITE_ATTENTIONS = (*_BY_CHANNELS, "ae_linear")
# Applied in this order where a model has two (paper 004: channel attention before spatial).
APPLY_ORDER = ("se", "eca", "gc", "cbam", "ta", "cbam_spatial", "ae_conv", "ae_linear")


def make_site_attention(names: list[str], channels: int, width: int) -> nn.Module:
    """The module for one site, `width` being the feature map width there (ae_linear needs it)."""
    modules = [
        LinearAutoencoderAttention(channels, width) if name == "ae_linear" else _BY_CHANNELS[name](channels)
        for name in sorted(names, key=APPLY_ORDER.index)
    ]
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)
