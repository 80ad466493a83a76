"""Pre-trained weights without downloads: `imagenet-1k`/`imagenet-21k` come from the local Hugging
Face cache (timm's hub repositories), anything else is a file path. Attention variants load the
backbone's weights non-strictly; the report says which tensors were new and which went unused."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import constants, try_to_load_from_cache
from torch import nn

from .registry import Backbone

log = logging.getLogger(__name__)

SOURCES = ("imagenet-1k", "imagenet-21k")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's hub layouts, preferred first


@dataclass
class LoadReport:
    source: str
    loaded: int  # tensors of the file the model took
    new: list[str]  # model tensors the weights lack: the attention modules, initialised here
    unused: list[str]  # weight tensors the model has no place for: convolutions an attention replaced
    skipped_head: list[str]  # classifier tensors trained for another number of classes


def weights_path(backbone: Backbone, pretrained: str) -> Path:
    if pretrained not in SOURCES:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained weights file {path} does not exist (pretrained is {' or '.join(SOURCES)} or a file path)")
        return path
    tag = backbone.pretrained.get(pretrained)
    if tag is None:
        known = ", ".join(backbone.pretrained) or "none"
        raise ValueError(
            f"no {pretrained} weights are defined for {backbone.name} (defined: {known}); pass a file path")
    repo_id = timm.models.get_pretrained_cfg(f"{backbone.name}.{tag}").hf_hub_id
    for filename in _HUB_FILES:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    raise FileNotFoundError(
        f"{pretrained} weights for {backbone.name} ({repo_id}) are not in the Hugging Face cache "
        f"{constants.HF_HUB_CACHE}: fetch them where there is internet (`hf download {repo_id}`), copy that "
        f"cache here (HF_HUB_CACHE/HF_HOME point to it, HF_HUB_OFFLINE=1), or pass pretrained=<weights file>")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure becomes one line naming the file
        raise ValueError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved names


def load_pretrained(model: nn.Module, name: str, backbone: Backbone, pretrained: str) -> LoadReport:
    path = weights_path(backbone, pretrained)
    state = read_state_dict(path)
    # timm's own conversion where the architecture has one (ViT/DeiT: position-embedding resize)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    expected = model.state_dict()
    head = next(n for n, m in model.named_modules() if m is model.get_classifier()) + "."
    skipped_head = []
    for key, value in list(state.items()):
        if key in expected and value.shape != expected[key].shape:
            if not key.startswith(head):
                raise ValueError(f"{path}: tensor {key} has shape {tuple(value.shape)}, {name} expects "
                                 f"{tuple(expected[key].shape)} (weights of another architecture?)")
            del state[key]
            skipped_head.append(key)
    result = model.load_state_dict(state, strict=False)
    loaded = len(state) - len(result.unexpected_keys)
    # an attention replaces a few convolutions; a file most of whose tensors have no place is another model's
    if loaded <= len(result.unexpected_keys):
        raise ValueError(
            f"{path}: only {loaded} of its {len(state)} tensors fit {name} (weights of another architecture?)")
    new = [k for k in result.missing_keys if k not in skipped_head]
    report = LoadReport(str(path), loaded, new, list(result.unexpected_keys), skipped_head)
    log.info("%s: %d tensors from %s; new: %s; unused: %s; head not loaded: %s", name, loaded, path,
             _owners(report.new), _owners(report.unused), _owners(report.skipped_head))
    return report


def _owners(keys: list[str], shown: int = 8) -> str:
    """A short list of the modules the keys belong to, for the log line."""
    owners: list[str] = []
    for key in keys:
        owner = key.rsplit(".", 2)[0]
        if not any(owner == o or owner.startswith(o + ".") for o in owners):
            owners.append(owner)
    more = f" and {len(owners) - shown} more" if len(owners) > shown else ""
    return (", ".join(owners[:shown]) + more) or "none"
