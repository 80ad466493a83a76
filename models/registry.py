"""Names: the backbones, the attention modules, which goes with which, and the registered variants.

A model name is `<backbone>` or `<backbone>+<attention>[+<attention>]` (lower case). A backbone is
one of BACKBONES or `timm:<timm model name>`. An attention is a built-in one, one an installed
package declares (entry-point group `attnsweep.attentions`), or one a study names by import path
(`register`). The lists below are ordered: their order is the row order of every table
(DomainBed-style registries). Nothing here imports torch or a plugin's code.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from collections.abc import Mapping

from attnsweep.plugins import ATTENTIONS_GROUP, PluginError, check_path, entry_points


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


class ModelError(ValueError):
    """A model name that cannot be built (an attention with no place in it, an unknown timm model)."""


TIMM_PREFIX = "timm:"  # `timm:densenet121`: any timm model, built by timm.create_model
_TIMM_NAME = re.compile(r"[a-z0-9_]+")
# A timm model's family is known once it is built (models/placement.family_of): resnet and
# efficientnet when it is one of those classes, else `timm` (the stage outputs of `feature_info`).
TIMM_FAMILY = "timm"


def backbone_spec(name: str) -> Backbone:
    """The registered backbone, or a `timm:` one (no pretrained sources: pass a weights file)."""
    if name.startswith(TIMM_PREFIX):
        return Backbone(name, TIMM_FAMILY)
    return BACKBONES[name]


@dataclass(frozen=True)
class Attention:
    """`factory`: for the modules placed at the block/conv sites, the import path of a callable
    `factory(channels, **kwargs) -> nn.Module` (timm's `create_attn` contract: NCHW in, the same
    shape out); None for the modules placement.py places itself (ga, la, ela, aa). `declared`:
    where it comes from, the prefix of its error messages (`attentions.coord` for a study's)."""

    name: str
    families: tuple[str, ...]  # the backbone families it has a placement for (models/placement.py)
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    declared: str = "attnsweep"
    site_width: bool = False  # the factory also takes `width`, the feature map width at the site

    @property
    def builtin(self) -> bool:
        return self.declared == "attnsweep"

    def signature(self) -> str:
        """What the built module depends on: factory and kwargs (a cache key)."""
        return json.dumps([self.name, self.factory, dict(self.kwargs)], sort_keys=True, default=str)


# Canonical order inside a name (`resnet18+ga+ela`, `cnn2+ae_conv+eca`): a name lists its
# attentions in this order, so one model never has two names in a results table.
_CONV_NETS = ("resnet", "efficientnet")
_SITES = ("resnet", "cnn")  # a block's output (ResNet) or each conv's (CNN)
# A plugin goes wherever there are sites: ResNet blocks, each MBConv, each CNN conv, and a timm
# model's stage outputs.
PLUGIN_FAMILIES = ("resnet", "efficientnet", "cnn", TIMM_FAMILY)
_SITE = "attnsweep.models.site_attention:"
ATTENTIONS: dict[str, Attention] = {
    a.name: a
    for a in [
        Attention("ga", _CONV_NETS),  # non-local global self-attention (paper 002)
        Attention("la", _CONV_NETS),  # stand-alone local self-attention (paper 002)
        Attention("ela", _CONV_NETS),  # embedded local self-attention (paper 002)
        Attention("aa", ("resnet",)),  # attention-augmented convolution (paper 000)
        Attention("cbam_spatial", _SITES, _SITE + "CbamSpatialAttention"),  # CBAM's spatial gate alone (paper 004)
        Attention("ae_conv", _SITES, _SITE + "ConvAutoencoderAttention"),  # conv-autoencoder spatial attention (paper 004)
        Attention("ae_linear", _SITES, _SITE + "LinearAutoencoderAttention", site_width=True),  # linear-autoencoder (paper 004)
        Attention("se", _SITES, _SITE + "SE"),  # squeeze-and-excitation (papers 000, 001)
        Attention("cbam", _SITES, _SITE + "CBAM"),  # convolutional block attention module (papers 000, 001, 004)
        Attention("eca", _SITES, _SITE + "EcaModule"),  # efficient channel attention (papers 000, 004)
        Attention("ta", _SITES, _SITE + "TripletAttention"),  # triplet attention (paper 000)
        Attention("gc", _SITES, _SITE + "GC"),  # global context block (seed 001)
    ]
}
# The attentions a study names by import path in this process (`register`), by name.
_REGISTERED: dict[str, Attention] = {}
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


def _entry_point_attentions() -> dict[str, Attention]:
    out = {}
    for name, (path, where) in entry_points(ATTENTIONS_GROUP).items():
        if name in ATTENTIONS:
            raise PluginError(f"{where}: the name {name!r} is a built-in attention; rename it")
        out[name] = Attention(name, PLUGIN_FAMILIES, path, declared=where)
    return out


def attentions() -> Mapping[str, Attention]:
    """Every attention a name may use here, in canonical order: the built-in ones in registry
    order, then the plugins by name."""
    plugins = {**_entry_point_attentions(), **_REGISTERED}
    return MappingProxyType({**ATTENTIONS, **dict(sorted(plugins.items()))})


def check_attention_name(name: str, field: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise PluginError(f"{field}: use lower-case letters, digits and '_' (it is part of model names), got {name!r}")
    if name in ATTENTIONS:
        raise PluginError(f"{field}: {name!r} is a built-in attention; pick another name")
    declared = _entry_point_attentions().get(name)
    if declared is not None:
        raise PluginError(f"{field}: {name!r} is already declared by {declared.declared}; pick another name")


def register(name: str, factory: str, kwargs: Mapping[str, Any], field: str) -> Attention:
    """Make a study's attention `name` usable in model names in this process (the study and its
    jobs' trial configurations call it; nothing is imported here). The latest registration of a
    name wins: one process runs one study."""
    check_attention_name(name, field)
    check_path(factory, f"{field}.factory")
    spec = Attention(name, PLUGIN_FAMILIES, factory, MappingProxyType(dict(kwargs)), declared=field)
    _REGISTERED[name] = spec
    return spec


def _valid_names() -> str:
    return (f"backbones: {', '.join(BACKBONES)}, {TIMM_PREFIX}<timm model>; "
            f"attentions: {', '.join(attentions())}")


def parse_name(name: str) -> tuple[str, list[str]]:
    """`resnet18+ga+ela` -> ("resnet18", ["ga", "ela"]); ValueError naming the problem otherwise.
    A `timm:` backbone's family is known only once built: its attentions are checked then."""
    backbone, *attention = name.split("+")
    if backbone.startswith(TIMM_PREFIX):
        if not _TIMM_NAME.fullmatch(backbone.removeprefix(TIMM_PREFIX)):
            raise ValueError(f"model {name!r}: {backbone!r} is not a timm model name (lower case, digits, '_')")
    elif backbone not in BACKBONES:
        raise ValueError(f"unknown model {name!r}: backbone {backbone!r} is not registered ({_valid_names()})")
    known = attentions()
    for a in attention:
        if a not in known:
            raise ValueError(f"unknown model {name!r}: attention {a!r} is not registered ({_valid_names()})")
        families = known[a].families
        family = backbone_spec(backbone).family
        if family != TIMM_FAMILY and family not in families:
            fits = ", ".join(b for b, spec in BACKBONES.items() if spec.family in families)
            raise ValueError(f"model {name!r}: attention {a!r} is not defined for {backbone} (it fits: {fits})")
    if len(attention) > MAX_ATTENTIONS or len(set(attention)) != len(attention):
        raise ValueError(f"model {name!r}: at most {MAX_ATTENTIONS} different attentions per model")
    if sum(a in CONV_REPLACING for a in attention) > 1:
        raise ValueError(f"model {name!r}: {', '.join(CONV_REPLACING)} rewrite the same convolutions; use one")
    order = list(known)
    canonical = sorted(attention, key=order.index)
    if attention != canonical:
        spelled = "+".join([backbone, *canonical])
        raise ValueError(f"model {name!r}: write it as {spelled!r} (attentions in registry order)")
    return backbone, attention
