"""Building a variant by name, and counting parameters without allocating them."""
from __future__ import annotations

from functools import lru_cache

import timm
import torch
from torch import nn

from . import cnn
from .placement import apply_attention
from .pretrained import load_pretrained
from .registry import BACKBONES, VARIANTS, parse_name

_CNNS = {"cnn2": cnn.cnn2, "cnn3": cnn.cnn3}


def _build(name: str, num_classes: int, image_size: int) -> nn.Module:
    if num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be at least 2, got {num_classes}")
    backbone_name, attention = parse_name(name)
    backbone = BACKBONES[backbone_name]
    if backbone.family == "cnn":
        model = _CNNS[backbone_name](num_classes)
    else:
        size = {"img_size": image_size} if backbone.family == "transformer" else {}  # fixed-size patch grids
        model = timm.create_model(backbone_name, pretrained=False, num_classes=num_classes, **size)
    apply_attention(model, backbone.family, attention, image_size)
    return model


def create(name: str, num_classes: int, pretrained: str | None = None, image_size: int = 224) -> nn.Module:
    """The variant `name` with a `num_classes` head, for `image_size` inputs (AA, ae_linear and the
    transformers are sized for it). `pretrained`: `imagenet-1k`, `imagenet-21k` or a weights file;
    the load report (new, unused and skipped tensors) is logged and kept as `model.pretrained_report`."""
    model = _build(name, num_classes, image_size)
    if pretrained:
        model.pretrained_report = load_pretrained(model, name, BACKBONES[parse_name(name)[0]], pretrained)
    return model


@lru_cache(maxsize=None)
def count_params(name: str, num_classes: int, image_size: int = 224) -> int:
    """Trainable parameters, counted on a model built on the meta device (no memory, no download)."""
    with torch.device("meta"):
        model = _build(name, num_classes, image_size)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe_variants(num_classes: int, image_size: int | None = None) -> list[dict]:
    """One row per registered variant. Counts are for `image_size`, or by default for the input
    size of the paper that reports the variant (32 px for the CIFAR CNNs, 224 px otherwise)."""
    rows = []
    for name in VARIANTS:
        backbone, attention = parse_name(name)
        size = image_size or BACKBONES[backbone].reference_image_size
        rows.append({"name": name, "backbone": backbone, "attention": attention,
                     "params": count_params(name, num_classes, size)})
    return rows
