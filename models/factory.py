"""Building a variant by name, and counting parameters without allocating them."""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import timm
import torch
from torch import nn

from attnsweep.plugins import PluginError

from . import cnn
from .placement import apply_attention, family_of
from .pretrained import load_pretrained
from .registry import TIMM_PREFIX, VARIANTS, ModelError, attentions, backbone_spec, parse_name, register
from .site_attention import PLUGIN_MARK, check_same_shape

_CNNS = {"cnn2": cnn.cnn2, "cnn3": cnn.cnn3}
STEMS = ("imagenet", "small")


def _small_stem(model: nn.Module) -> None:
    """The CIFAR/MedMNIST ResNet stem: a 3x3 stride-1 first conv and no max-pool, so a 28-32 px
    input leaves a 4x4 last stage (timm's ImageNet stem, 7x7 stride 2 + max-pool, leaves 1x1).
    timm has no such stem option for its ResNets, hence the swap."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def check_stem(name: str, stem: str) -> None:
    if stem not in STEMS:
        raise ValueError(f"stem: {stem!r} is not one of {list(STEMS)}")
    family = backbone_spec(parse_name(name)[0]).family
    if stem == "small" and family != "resnet":
        raise ValueError(f"stem: 'small' is for ResNets; {name} is of the {family} family")


def _build(name: str, num_classes: int, image_size: int, stem: str = "imagenet") -> nn.Module:
    if num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be at least 2, got {num_classes}")
    backbone_name, attention = parse_name(name)
    backbone = backbone_spec(backbone_name)
    if backbone.family == "cnn":
        model = _CNNS[backbone_name](num_classes)
    elif backbone_name.startswith(TIMM_PREFIX):
        timm_name = backbone_name.removeprefix(TIMM_PREFIX)
        if not timm.is_model(timm_name):
            raise ModelError(f"model {name!r}: {timm_name!r} is not a timm model (timm.list_models() lists them)")
        try:  # models with a fixed input grid (ViT, Swin) are built for the study's image size
            model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, img_size=image_size)
        except TypeError:  # the others take no img_size
            model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)  # random init, no download
    else:
        size = {"img_size": image_size} if backbone.family == "transformer" else {}  # fixed-size patch grids
        model = timm.create_model(backbone_name, pretrained=False, num_classes=num_classes, **size)
    check_stem(name, stem)
    if stem == "small":
        _small_stem(model)  # before the attention: its sizes follow the stem's maps
    apply_attention(model, family_of(model), attention, image_size, name)
    return model


def _signature(name: str) -> str:
    """What a model name stands for in this process: the registered plugins it uses (cache key)."""
    known = attentions()
    return "|".join(known[a].signature() for a in parse_name(name)[1] if not known[a].builtin)


def register_attentions(specs: Mapping[str, Any] | None) -> None:
    """Register a trial configuration's study attentions (name -> {factory, kwargs}) here."""
    for a, spec in (specs or {}).items():
        factory, kwargs = (spec, {}) if isinstance(spec, str) else (spec["factory"], spec.get("kwargs") or {})
        register(a, factory, kwargs, f"attentions.{a}")


def create(name: str, num_classes: int, pretrained: str | None = None, image_size: int = 224,
           stem: str = "imagenet", attentions: Mapping[str, Any] | None = None) -> nn.Module:
    """The variant `name` with a `num_classes` head, for `image_size` inputs (AA, ae_linear and the
    transformers are sized for it). `stem`: `small` gives a ResNet the small-image stem.
    `pretrained`: `imagenet-1k`, `imagenet-21k` or a weights file; the load report (new, unused and skipped tensors) is logged and kept as `model.pretrained_report`.
    `attentions`: a trial configuration's study attentions (its `attentions` field), registered first."""
    register_attentions(attentions)
    model = _build(name, num_classes, image_size, stem)
    if pretrained:
        model.pretrained_report = load_pretrained(model, name, backbone_spec(parse_name(name)[0]), pretrained)
    return model


def check_input_size(name: str, image_size: int, stem: str = "imagenet") -> None:
    """ValueError in one line when the variant cannot train on `image_size` px inputs (e.g. a
    feature map that shrinks to nothing): one training-mode forward of a batch of 2 on the meta device.
    A plugin that cannot be imported or built, or changes its input's shape: PluginError naming it."""
    _check_input_size(name, image_size, stem, _signature(name))


@cache
def _check_input_size(name: str, image_size: int, stem: str, _plugins: str) -> None:
    check_stem(name, stem)
    reason = _forward_error(name, image_size, stem)
    if reason is not None:
        hint = ""
        if stem != "small" and check_stem_ok(name, "small") and _forward_error(name, image_size, "small") is None:
            hint = "; its stem shrinks the input too far: set train.stem: small (no pretrained weights)"
        raise ValueError(f"model {name} cannot take {image_size} px images (stem {stem}): {reason}{hint}")


def check_stem_ok(name: str, stem: str) -> bool:
    try:
        check_stem(name, stem)
    except ValueError:
        return False
    return True


def _forward_error(name: str, image_size: int, stem: str) -> str | None:
    """The first line of the error a training forward at `image_size` raises, None when it runs."""
    try:
        with torch.device("meta"):
            model = _build(name, 2, image_size, stem)
            for module in model.modules():
                if hasattr(module, PLUGIN_MARK):
                    module.register_forward_hook(check_same_shape)
            model.train()(torch.empty(2, 3, image_size, image_size))
    except (PluginError, ModelError):
        raise
    except (RuntimeError, ValueError, AssertionError) as err:
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


def count_params(name: str, num_classes: int, image_size: int = 224, stem: str = "imagenet") -> int:
    """Trainable parameters, counted on a model built on the meta device (no memory, no download)."""
    return _count_params(name, num_classes, image_size, stem, _signature(name))


@cache
def _count_params(name: str, num_classes: int, image_size: int, stem: str, _plugins: str) -> int:
    with torch.device("meta"):
        model = _build(name, num_classes, image_size, stem)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe_variants(num_classes: int, image_size: int | None = None, names: list[str] | None = None) -> list[dict]:
    """One row per registered variant (or per model of `names`). Counts are for `image_size`, or by
    default for the input size of the paper that reports the variant (32 px for the CIFAR CNNs,
    224 px otherwise)."""
    rows = []
    for name in VARIANTS if names is None else names:
        backbone, attention = parse_name(name)
        size = image_size or backbone_spec(backbone).reference_image_size
        rows.append({"name": name, "backbone": backbone, "attention": attention,
                     "params": count_params(name, num_classes, size)})
    return rows
