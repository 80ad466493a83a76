"""Names: the backbones, the attention modules, which goes with which, and the registered variants.

A model name is `<backbone>` or `<backbone>+<attention>[+<attention>]` (lower case). The lists
below are ordered: their order is the row order of every table (DomainBed-style registries).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backbone:
    name: str
    family: str  # resnet | efficientnet | transformer | cnn: decides where attention modules go
    pretrained: dict[str, str] = field(default_factory=dict)  # source -> timm pretrained tag
    reference_image_size: int = 224  # the input size of the paper that reports its count


_RESNET_1K = {"imagenet-1k": "tv_in1k"}  # torchvision's weights, the ones the papers used
_VIT = {"imagenet-1k": "augreg_in21k_ft_in1k", "imagenet-21k": "augreg_in21k"}  # timm defaults
_FB_1K = {"imagenet-1k": "fb_in1k"}

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        *(Backbone(f"resnet{d}", "resnet", _RESNET_1K) for d in (18, 34, 50, 101, 152)),
        Backbone("efficientnet_b0", "efficientnet", {"imagenet-1k": "ra_in1k"}),
        *(Backbone(f"vit_{s}_patch16_224", "transformer", _VIT) for s in ("tiny", "small", "base", "large")),
        *(Backbone(f"deit_{s}_patch16_224", "transformer", _FB_1K) for s in ("tiny", "small", "base")),
        *(Backbone(f"convit_{s}", "transformer", _FB_1K) for s in ("tiny", "small", "base")),
        Backbone("cnn2", "cnn", reference_image_size=32),
        Backbone("cnn3", "cnn", reference_image_size=32),
    ]
}


@dataclass(frozen=True)
class Attention:
    name: str
    families: tuple[str, ...]  # the backbone families it has a placement for (models/placement.py)


# Canonical order inside a name (`resnet18+ga+ela`, `cnn2+ae_conv+eca`): a name lists its
# attentions in this order, so one model never has two names in a results table.
_CONV_NETS = ("resnet", "efficientnet")
_SITES = ("resnet", "cnn")  # a block's output (ResNet) or each conv's (CNN)
ATTENTIONS: dict[str, Attention] = {
    a.name: a
    for a in [
        Attention("ga", _CONV_NETS),  # non-local global self-attention (paper 002)
        Attention("la", _CONV_NETS),  # stand-alone local self-attention (paper 002)
        Attention("ela", _CONV_NETS),  # embedded local self-attention (paper 002)
        Attention("aa", ("resnet",)),  # attention-augmented convolution (paper 000)
        Attention("cbam_spatial", _SITES),  # CBAM's spatial gate alone (paper 004)
        Attention("ae_conv", _SITES),  # convolutional-autoencoder spatial attention (paper 004)
        Attention("ae_linear", _SITES),  # linear-autoencoder spatial attention (paper 004)
        Attention("se", _SITES),  # squeeze-and-excitation (papers 000, 001)
        Attention("cbam", _SITES),  # convolutional block attention module (papers 000, 001, 004)
        Attention("eca", _SITES),  # efficient channel attention (papers 000, 004)
        Attention("ta", _SITES),  # triplet attention (paper 000)
        Attention("gc", _SITES),  # global context block (seed 001)
    ]
}
CONV_REPLACING = ("la", "ela", "aa")  # they rewrite the same convolutions: at most one per model
MAX_ATTENTIONS = 2


def _rows(backbone: str, *attentions: str) -> list[str]:
    return [backbone] + [f"{backbone}+{a}" for a in attentions]


_P002 = ("ga", "la", "ga+la", "ela", "ga+ela")
_P000 = ("se", "cbam", "eca", "ta", "aa")

VARIANTS: list[str] = [
    # paper 002 (reference methodology), Table 1
    *_rows("resnet18", *_P002),
    *_rows("efficientnet_b0", *_P002),
    "vit_tiny_patch16_224",
    # paper 000, Table I (ResNets trained from scratch) and Table III (pre-trained baselines)
    *_rows("resnet34", *_P000),
    *_rows("resnet50", *_P000),
    *_rows("resnet101", *_P000),
    "resnet152",
    "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
    "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
    "convit_tiny", "convit_small", "convit_base",
    # seed 001: ResNet-18 with SE, CBAM, GC
    "resnet18+se", "resnet18+cbam", "resnet18+gc",
    # paper 004, Table 1 (CIFAR-10 CNNs)
    "cnn2", "cnn2+eca", "cnn2+cbam", "cnn3", "cnn2+ae_conv", "cnn2+ae_conv+eca",
    "cnn2+ae_linear", "cnn2+ae_linear+eca", "cnn2+cbam_spatial+eca",
]


def _valid_names() -> str:
    return f"backbones: {', '.join(BACKBONES)}; attentions: {', '.join(ATTENTIONS)}"


def parse_name(name: str) -> tuple[str, list[str]]:
    """`resnet18+ga+ela` -> ("resnet18", ["ga", "ela"]); ValueError naming the problem otherwise."""
    backbone, *attention = name.split("+")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown model {name!r}: backbone {backbone!r} is not registered ({_valid_names()})")
    for a in attention:
        if a not in ATTENTIONS:
            raise ValueError(f"unknown model {name!r}: attention {a!r} is not registered ({_valid_names()})")
        families = ATTENTIONS[a].families
        if BACKBONES[backbone].family not in families:
            fits = ", ".join(b for b, spec in BACKBONES.items() if spec.family in families)
            raise ValueError(f"model {name!r}: attention {a!r} is not defined for {backbone} (it fits: {fits})")
    if len(attention) > MAX_ATTENTIONS or len(set(attention)) != len(attention):
        raise ValueError(f"model {name!r}: at most {MAX_ATTENTIONS} different attentions per model")
    if sum(a in CONV_REPLACING for a in attention) > 1:
        raise ValueError(f"model {name!r}: {', '.join(CONV_REPLACING)} rewrite the same convolutions; use one")
    order = list(ATTENTIONS)
    canonical = sorted(attention, key=order.index)
    if attention != canonical:
        spelled = "+".join([backbone, *canonical])
        raise ValueError(f"model {name!r}: write it as {spelled!r} (attentions in registry order)")
    return backbone, attention
