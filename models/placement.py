"""Where each attention goes in each backbone family. Modules are patched into a built timm model
(after timm's `init_weights`, which would otherwise overwrite their own initialisation, e.g. the
zero-initialised GA/ELA outputs)."""
from __future__ import annotations

import copy

import torch
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .augmented_conv import AttentionAugmentedConv
from .cnn import ConvUnit, SmallCNN
from .global_attention import GlobalSelfAttention
from .local_attention import EmbeddedLocalAttention, LocalSelfAttention
from .site_attention import SITE_ATTENTIONS, make_site_attention

GA_STAGES = {"resnet": (0, 1), "efficientnet": (1, 2)}  # paper 002: after ResNet stages 1, 2; EfficientNet blocks 2, 3


def apply_attention(model: nn.Module, family: str, attention: list[str], image_size: int) -> None:
    site = [a for a in attention if a in SITE_ATTENTIONS]
    if site:
        _place_at_sites(model, family, site, image_size)
    if "aa" in attention:
        _augment_3x3_convs(model, image_size)
    if "ga" in attention:
        for stage in (_stages(model)[i] for i in GA_STAGES[family]):
            stage.append(GlobalSelfAttention(_out_channels(stage)))
    if "la" in attention or "ela" in attention:
        _replace_last_stage(model, family, embedded="ela" in attention)


def _stages(model: nn.Module) -> list[nn.Sequential]:
    if isinstance(model, ResNet):
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    if isinstance(model, EfficientNet):
        return list(model.blocks)
    raise TypeError(f"no stages known for {type(model).__name__}")


def _resnet_blocks(model: nn.Module) -> list[nn.Module]:
    return [b for stage in _stages(model) for b in stage if isinstance(b, (BasicBlock, Bottleneck))]


def _convs_3x3(block: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in block.named_children() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


def _out_channels(module: nn.Module) -> int:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def _output_sizes(model: nn.Module, modules: list[nn.Module], image_size: int) -> list[tuple[int, int]]:
    """Output (H, W) of each module for an image_size input, from a forward pass on the meta device."""
    names = {id(m): n for n, m in model.named_modules()}
    probe = model if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    probe_modules = dict(probe.named_modules())
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        probe_modules[names[id(m)]].register_forward_hook(
            lambda _m, _i, out, name=names[id(m)]: sizes.__setitem__(name, tuple(out.shape[-2:])))
        for m in modules
    ]
    try:
        with torch.no_grad():
            # a batch of 2: a training-mode BatchNorm refuses one value per channel (a 1x1 map at <= 32 px)
            probe(torch.empty(2, 3, image_size, image_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return [sizes[names[id(m)]] for m in modules]


def _place_at_sites(model: nn.Module, family: str, names: list[str], image_size: int) -> None:
    """ResNet: the block's `se` slot, after the last conv+BN and before the residual add (papers
    000, 001). CNN: after each convolution (paper 004)."""
    if family == "resnet":
        blocks = _resnet_blocks(model)
        last_bns = [b.bn3 if isinstance(b, Bottleneck) else b.bn2 for b in blocks]
        for block, bn, (_, width) in zip(blocks, last_bns, _output_sizes(model, last_bns, image_size)):
            block.se = make_site_attention(names, bn.num_features, width)
    else:
        units = [m for m in model.modules() if isinstance(m, ConvUnit)]
        for unit, (_, width) in zip(units, _output_sizes(model, [u.conv for u in units], image_size)):
            unit.attn = make_site_attention(names, unit.conv.out_channels, width)


def _augment_3x3_convs(model: nn.Module, image_size: int) -> None:
    targets = [(block, name, conv) for block in _resnet_blocks(model) for name, conv in _convs_3x3(block)]
    sizes = _output_sizes(model, [conv for _, _, conv in targets], image_size)
    for (block, name, conv), size in zip(targets, sizes):
        setattr(block, name, AttentionAugmentedConv(
            conv.in_channels, conv.out_channels, size, kernel_size=3, stride=conv.stride[0]))


def _replace_last_stage(model: nn.Module, family: str, embedded: bool) -> None:
    """LA replaces, ELA wraps: every 3x3 conv of ResNet's last stage (the 1x1 projection shortcut
    stays: paper 002's counts show it kept), and each whole MBConv block of EfficientNet's last
    stage (paper 002 §2.3.2: replacing only the depthwise conv would add parameters)."""
    if family == "resnet":
        targets = [(block, name, conv) for block in _stages(model)[-1] for name, conv in _convs_3x3(block)]
        for block, name, conv in targets:
            setattr(block, name, _local(conv.in_channels, conv.out_channels, conv.stride[0], conv, embedded))
        return
    stage = _stages(model)[-1]
    for i, block in enumerate(stage):
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        stride = max(c.stride[0] for c in convs)
        stage[i] = _local(convs[0].in_channels, _out_channels(block), stride, block, embedded)


def _local(in_channels: int, out_channels: int, stride: int, original: nn.Module, embedded: bool) -> nn.Module:
    if embedded:
        return EmbeddedLocalAttention(in_channels, out_channels, original, stride=stride)
    return LocalSelfAttention(in_channels, out_channels, stride=stride)


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the last convolutional stage's feature map (ResNet `layer4`,
    EfficientNet's last block stage, the CNNs' last conv unit). Transformers have no conv stage:
    their last block's `norm1` is returned, which Grad-CAM needs a token-to-grid reshape for."""
    if isinstance(model, (ResNet, EfficientNet)):
        return _stages(model)[-1]
    if isinstance(model, SmallCNN):
        return [m for m in model.modules() if isinstance(m, ConvUnit)][-1]
    blocks = getattr(model, "blocks", None)
    if blocks is not None and hasattr(blocks[-1], "norm1"):
        return blocks[-1].norm1
    raise TypeError(f"no Grad-CAM target layer known for {type(model).__name__}")
