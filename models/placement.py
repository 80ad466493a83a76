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
from .registry import TIMM_FAMILY, ModelError, attentions
from .site_attention import make_site_attention

GA_STAGES = {"resnet": (0, 1), "efficientnet": (1, 2)}  # paper 002: after ResNet stages 1, 2; EfficientNet blocks 2, 3


def family_of(model: nn.Module) -> str:
    """A built timm model's family: where attnsweep knows its sites, else `timm` (feature_info)."""
    if isinstance(model, ResNet):
        return "resnet"
    if isinstance(model, EfficientNet):
        return "efficientnet"
    if isinstance(model, SmallCNN):
        return "cnn"
    return TIMM_FAMILY


def apply_attention(model: nn.Module, family: str, attention: list[str], image_size: int, name: str = "") -> None:
    known = attentions()
    for a in attention:
        if family not in known[a].families:
            raise ModelError(f"model {name!r}: attention {a!r} cannot be placed in a {family} model "
                             f"(it has a placement for: {', '.join(known[a].families)})")
    # GA's width is the stage's before any site module (which may hold BatchNorms of its own) goes in.
    ga_stages = [(s, _out_channels(s)) for s in (_stages(model)[i] for i in GA_STAGES[family])] if "ga" in attention else []
    site = [known[a] for a in attention if known[a].factory is not None]
    if site:
        _place_at_sites(model, family, site, image_size, name)
    if "aa" in attention:
        _augment_3x3_convs(model, image_size)
    for stage, channels in ga_stages:
        stage.append(GlobalSelfAttention(channels))
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
    return [tuple(s[-2:]) for s in _output_shapes(model, modules, image_size)]


def _output_shapes(model: nn.Module, modules: list[nn.Module], image_size: int) -> list[tuple[int, ...]]:
    """Output shape of each module for an image_size input, from a forward pass on the meta device."""
    names = {id(m): n for n, m in model.named_modules()}
    probe = model if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    probe_modules = dict(probe.named_modules())
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        probe_modules[names[id(m)]].register_forward_hook(
            lambda _m, _i, out, name=names[id(m)]: sizes.__setitem__(name, tuple(out.shape)))
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


def _place_at_sites(model: nn.Module, family: str, site: list, image_size: int, name: str) -> None:
    """ResNet: the block's `se` slot, after the last conv+BN and before the residual add (papers
    000, 001). CNN: after each convolution (paper 004). EfficientNet: after each MBConv block.
    Any other timm model: after each stage output its `feature_info` lists."""
    if family == "resnet":
        blocks = _resnet_blocks(model)
        last_bns = [b.bn3 if isinstance(b, Bottleneck) else b.bn2 for b in blocks]
        for block, bn, (_, width) in zip(blocks, last_bns, _output_sizes(model, last_bns, image_size)):
            block.se = make_site_attention(site, bn.num_features, width)
    elif family == "cnn":
        units = [m for m in model.modules() if isinstance(m, ConvUnit)]
        for unit, (_, width) in zip(units, _output_sizes(model, [u.conv for u in units], image_size)):
            unit.attn = make_site_attention(site, unit.conv.out_channels, width)
    elif family == "efficientnet":
        slots = [(stage, i, block) for stage in _stages(model) for i, block in enumerate(stage)]
        for (stage, i, block), shape in zip(slots, _output_shapes(model, [b for _, _, b in slots], image_size)):
            stage[i] = nn.Sequential(block, make_site_attention(site, shape[1], shape[-1]))
    else:
        for module_name, channels, width in _feature_stages(model, image_size, name):
            model.set_submodule(module_name, nn.Sequential(
                model.get_submodule(module_name), make_site_attention(site, channels, width)))


def _feature_stages(model: nn.Module, image_size: int, name: str) -> list[tuple[str, int, int]]:
    """(module name, channels, width) of each stage output timm's `feature_info` lists; ValueError
    when there is none or a stage's output is no NCHW feature map (e.g. a ViT's tokens)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ModelError(f"model {name!r}: cannot place the attention: {type(model).__name__} lists no stage "
                         "outputs (timm feature_info)")
    stages = [(f["module"], f["num_chs"]) for f in info]
    modules = [model.get_submodule(m) for m, _ in stages]
    shapes = _output_shapes(model, modules, image_size)
    for (module_name, channels), shape in zip(stages, shapes):
        if len(shape) != 4 or shape[1] != channels:
            raise ModelError(f"model {name!r}: cannot place the attention: stage {module_name} of "
                             f"{type(model).__name__} outputs {tuple(shape)}, not an NCHW map of {channels} channels")
    return [(m, c, shape[-1]) for (m, c), shape in zip(stages, shapes)]


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
    info = getattr(model, "feature_info", None)
    if info:  # any other timm model: its last listed stage output
        return model.get_submodule(info[-1]["module"])
    raise TypeError(f"no Grad-CAM target layer known for {type(model).__name__}")
