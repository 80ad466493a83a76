"""The model zoo: timm backbones, the attention modules of the seed papers and where they go.

    create("resnet18+ga+ela", num_classes=3, pretrained="imagenet-1k")
"""
from .factory import count_params, create, describe_variants
from .global_attention import capture_ga_maps
from .placement import gradcam_target_layer
from .registry import ATTENTIONS, BACKBONES, VARIANTS, parse_name

__all__ = [
    "ATTENTIONS", "BACKBONES", "VARIANTS", "capture_ga_maps", "count_params", "create",
    "describe_variants", "gradcam_target_layer", "parse_name",
]
