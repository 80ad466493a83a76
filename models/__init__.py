"""The model zoo: timm backbones, the attention modules of the seed papers and where they go.

    create("resnet18+ga+ela", num_classes=3, pretrained="imagenet-1k")

The names (`registry`) import no torch, so validating a study file does not pay for it; the rest
is imported on first use.
"""
from importlib import import_module
from typing import Any

from .registry import ATTENTIONS, BACKBONES, TIMM_PREFIX, VARIANTS, attentions, backbone_spec, parse_name, register

_LAZY = {"count_params": "factory", "create": "factory", "describe_variants": "factory",
         "register_attentions": "factory", "check_input_size": "factory",
         "capture_ga_maps": "global_attention", "gradcam_target_layer": "placement"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTENTIONS", "BACKBONES", "TIMM_PREFIX", "VARIANTS", "attentions", "backbone_spec", "capture_ga_maps",
    "check_input_size", "count_params", "create", "describe_variants", "gradcam_target_layer", "parse_name",
    "register", "register_attentions",
]
