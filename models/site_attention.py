"""The attention modules that sit at a block's output (papers 000, 001, 004): timm's where timm has
the paper's module, configured as the papers' counts show, and ours otherwise. The registry names
each by import path (`registry.ATTENTIONS`), the way a plugin is named; `make_site_attention`
builds any of them, plugins included, for one site."""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import EcaModule, GlobalContext, SEModule
from timm.layers.cbam import CbamModule, SpatialAttn
from torch import nn

from attnsweep.plugins import PluginError, load

from .autoencoder_attention import ConvAutoencoderAttention, LinearAutoencoderAttention
from .registry import Attention
from .triplet_attention import TripletAttention

__all__ = ["CBAM", "GC", "SE", "CbamSpatialAttention", "ConvAutoencoderAttention", "EcaModule",
           "LinearAutoencoderAttention", "TripletAttention", "make_site_attention"]


class CbamSpatialAttention(SpatialAttn):
    """CBAM's spatial gate on its own (paper 004's hybrids), with the channels-first signature."""

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__(kernel_size)


# Hu et al.'s r = 16 on every stage: timm's default rounds the bottleneck up to a multiple of 8.
SE = partial(SEModule, rd_ratio=1 / 16, rd_divisor=1)
# The official CBAM's shared MLP has biases (timm's default has none); r = 16 as in the paper.
CBAM = partial(CbamModule, rd_ratio=1 / 16, mlp_bias=True)
# GCNet's block: attention pooling, channel-add fusion, bottleneck ratio 1/16 with LayerNorm.
GC = partial(GlobalContext, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16)

# Built-in modules applied in this order where a model has two (paper 004: channel attention
# before spatial); plugins after them, by name.
APPLY_ORDER = ("se", "eca", "gc", "cbam", "ta", "cbam_spatial", "ae_conv", "ae_linear")
PLUGIN_MARK = "_attnsweep_plugin"  # set on a plugin's module: where its errors come from


def _order(a: Attention) -> tuple[int, str]:
    return (APPLY_ORDER.index(a.name) if a.name in APPLY_ORDER else len(APPLY_ORDER), a.name)


def build_one(attention: Attention, channels: int, width: int | None = None) -> nn.Module:
    """`factory(channels, **kwargs)`; a plugin's failures are one line naming where it was declared."""
    factory = load(attention.factory, attention.declared)
    if isinstance(factory, type) and not issubclass(factory, nn.Module):
        raise PluginError(f"{attention.declared}: {attention.factory} is a class but not a torch.nn.Module")
    if not callable(factory):
        raise PluginError(f"{attention.declared}: {attention.factory} is not callable")
    kwargs = {**attention.kwargs, **({"width": width} if attention.site_width else {})}
    if attention.builtin:
        return factory(channels, **kwargs)
    try:
        module = factory(channels, **kwargs)
    except Exception as exc:  # a plugin's constructor failing at any site: one line
        raise PluginError(f"{attention.declared}: {attention.factory}({channels}, **{dict(attention.kwargs)}) "
                          f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from None
    if not isinstance(module, nn.Module):
        raise PluginError(f"{attention.declared}: {attention.factory}({channels}) returned "
                          f"{type(module).__name__}, not a torch.nn.Module")
    setattr(module, PLUGIN_MARK, f"{attention.declared}: {attention.factory}")
    return module


def check_same_shape(module: nn.Module, args: tuple, out: object) -> None:
    """Forward hook for the probe (factory.check_input_size): a plugin returns its input's shape."""
    x = args[0] if args else None
    if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"{getattr(module, PLUGIN_MARK)} must return its input's shape "
                          f"(NCHW {tuple(x.shape) if isinstance(x, torch.Tensor) else '?'}), returned {got}")


def make_site_attention(attentions: list[Attention], channels: int, width: int) -> nn.Module:
    """The module for one site, `width` being the feature map width there (ae_linear needs it)."""
    modules = [build_one(a, channels, width) for a in sorted(attentions, key=_order)]
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)
