"""Explanation maps on the selected weights of one repeat split per variant (paper 002 §3.4,
Table 4): Grad-CAM at the last convolutional stage of each CNN variant, the GA attention maps of
each `+ga` variant, the CLS attention of a ViT's last block. Each for one test image per class and
as the mean over the first N test images; every map is normalised to 0..255 as the paper does.

Reads the study folder only: the result rows pick the trial, its `config.json` names the model,
split and prepared data, `best.pt` holds the selected weights."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnsweep.pipelines.report.study_folder import StudyFolder, StudyFolderError
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

BATCH = 16
METHODS = ["Grad-CAM", "GA map", "ViT attention"]


def normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max each map (last two axes) to uint8 0..255; a constant map becomes 0."""
    maps = np.asarray(maps, dtype=np.float64)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - lo
    scaled = np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)
    return np.round(255 * scaled).astype(np.uint8)


def _batches(x: torch.Tensor):
    for i in range(0, len(x), BATCH):
        yield x[i:i + BATCH]


def gradcam_maps(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM for the predicted class (as paper 002) at `gradcam_target_layer(model)`:
    (N, H, W) floats in 0..1 at the input's size (pytorch-grad-cam scales each map)."""
    from pytorch_grad_cam import GradCAM

    from attnsweep.models import gradcam_target_layer

    model.eval()
    with GradCAM(model=model, target_layers=[gradcam_target_layer(model)]) as cam:
        return np.concatenate([cam(input_tensor=b, targets=None) for b in _batches(x)])


def ga_maps(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The GA map of Wang et al. as paper 002 shows it: each position's attention over all
    positions, averaged over the positions; from the deepest GA block, upsampled to the input."""
    from attnsweep.models import capture_ga_maps

    model.eval()
    out = []
    with torch.no_grad(), capture_ga_maps(model) as maps:
        for b in _batches(x):
            model(b)
            deepest = list(maps)[-1]  # filled in forward order
            out.append(maps[deepest].mean(dim=(1, 2)))  # (B, H', W')
    m = torch.cat(out)[:, None].float()
    return F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()


def vit_attention_maps(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """CLS-token attention of the last block, averaged over heads, over the patch grid,
    upsampled to the input (timm's AttentionExtract hooks the softmax output)."""
    from timm.utils import AttentionExtract

    last = len(model.blocks) - 1
    model.blocks[last].attn.fused_attn = False  # the fused kernel never materialises the softmax
    extract = AttentionExtract(model, names=[f"blocks.{last}.attn.attn_drop"], method="hook")
    grid = model.patch_embed.grid_size
    out = []
    with torch.no_grad():
        for b in _batches(x):
            attn = next(iter(extract(b).values()))  # (B, heads, tokens, tokens)
            cls = attn.mean(1)[:, 0, model.num_prefix_tokens:]
            out.append(cls.reshape(len(b), 1, *grid))
    return F.interpolate(torch.cat(out).float(), size=x.shape[-2:], mode="bilinear",
                         align_corners=False)[:, 0].numpy()


def methods_for(model: nn.Module, attention: list[str]) -> dict[str, Callable]:
    """Which maps a variant gets: a transformer (ViT, DeiT, ConViT: patch tokens in `blocks`) its
    CLS attention; a CNN Grad-CAM, plus the GA maps with `ga`."""
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):
        return {"ViT attention": vit_attention_maps}
    methods = {"Grad-CAM": gradcam_maps}
    if "ga" in attention:
        methods["GA map"] = ga_maps
    return methods


@dataclass
class Explained:
    variant: str
    method: str
    per_class: np.ndarray  # (C, H, W) uint8, one test image per class
    mean: np.ndarray  # (H, W) uint8, mean map over n images
    n: int


def _trial_dirs(folder: StudyFolder) -> dict[str, dict[str, Path]]:
    """variant -> split -> trial folder with kept selected weights (repeat phase, status ok)."""
    r = folder.results
    ok = r[(r["phase"] == "repeat") & (r["status"] == "ok")].drop_duplicates(["variant", "split"])
    out: dict[str, dict[str, Path]] = {}
    for row in ok.itertuples():
        trial = StudyPaths(folder.out).trial("repeat", row.variant, row.trial_id)
        if trial.best_file.exists() and trial.config_file.exists():
            out.setdefault(row.variant, {})[row.split] = trial.path
    return out


def _split_index(split: str) -> int:
    return int(split.rsplit("-", 1)[-1])


def _pick_split(dirs: dict[str, dict[str, Path]]) -> str | None:
    """The same split for every variant where possible, so each column shows the same images."""
    common = set.intersection(*(set(s) for s in dirs.values())) if dirs else set()
    return min(common, key=_split_index) if common else None


def _load_images(folder: StudyFolder, trial: Path, cfg: dict, n: int):
    from attnsweep.data import load_split, make_dataset

    data_dir = Path(cfg["data_dir"]) if cfg.get("data_dir") else TrialFolder(trial).data_dir
    if not data_dir.exists():  # the study folder moved: its prepared data sits beside the trials
        data_dir = StudyPaths(folder.out).data_dir
    split = load_split(data_dir, cfg["split"])
    test = split.sets["test"]
    labels = np.asarray(test.labels)
    per_class = [int(np.flatnonzero(labels == c)[0]) for c in range(len(split.class_names))
                 if (labels == c).any()]
    picked = per_class + list(range(min(n, len(labels))))
    ds = make_dataset(test, "none", split.mean, split.std, train=False, seed=0)
    x = torch.stack([ds[i][0] for i in picked])
    raw = np.stack([np.asarray(test.images[i]) for i in per_class])
    names = [split.class_names[int(labels[i])] for i in per_class]
    return x, len(per_class), raw, names, len(split.class_names)


def explain_variant(folder: StudyFolder, trial: Path, n: int) -> tuple[list[Explained], np.ndarray, list[str]]:
    """All maps of one variant from its trial folder; also the per-class input images and names."""
    from attnsweep.models import create, parse_name
    from attnsweep.pipelines.trial.checkpoint import load as load_weights

    cfg = TrialFolder(trial).config()
    x, n_classes, raw, names, num_classes = _load_images(folder, trial, cfg, n)  # a test set may lack a class
    model = create(cfg["model"], num_classes=num_classes, image_size=cfg["image_size"],
                   stem=cfg.get("stem", "imagenet"), attentions=cfg.get("attentions"))
    model.load_state_dict(load_weights(TrialFolder(trial).best_file))  # torch.load(weights_only=True)
    out = []
    for method, fn in methods_for(model, parse_name(cfg["model"])[1]).items():
        maps = fn(model, x)
        out.append(Explained(cfg["model"], method, normalise(maps[:n_classes]),
                             normalise(maps[n_classes:].mean(axis=0)), len(maps) - n_classes))
    return out, raw, names


def explain_study(folder: StudyFolder, into: Path) -> tuple[list[str], str]:
    """Explanation grid(s) into `into`; returns the PNG names and a note for the report."""
    dirs = _trial_dirs(folder)
    if not dirs:
        return [], (f"No kept repeat checkpoints (trials/repeat/<variant>/<trial_id>/best.pt) in "
                    f"{folder.out}: no explanations.")
    split = _pick_split(dirs)
    n = folder.settings.explain_images
    rows, raw, names = [], None, None
    for v in folder.variant_order:
        if v not in dirs:
            continue
        trial = dirs[v][split] if split else dirs[v][min(dirs[v], key=_split_index)]
        try:
            explained, raw_v, names_v = explain_variant(folder, trial, n)
        except Exception as e:  # noqa: BLE001 - any failure: name the trial, keep the message one line
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise StudyFolderError(f"{trial}: explanations failed ({msg}); `--no-explain` skips them") from e
        rows += explained
        raw, names = (raw, names) if raw is not None else (raw_v, names_v)
    from attnsweep.pipelines.report.plots import explanation_grid

    rows.sort(key=lambda e: METHODS.index(e.method))  # Table 4: Grad-CAM rows, then attention maps
    name = "explanations.png"
    explanation_grid(rows, raw, names, into / name)
    where = f"split {split}" if split else "the first kept repeat split of each variant"
    missing = [v for v in folder.variant_order if v not in dirs]
    note = (f"Selected weights of {where}; one test image per class and the mean map over the first "
            f"{rows[0].n} test images; maps normalised to 0..255. Grad-CAM for the predicted class at "
            f"the last convolutional stage; GA: each position's attention over all others, averaged "
            f"(deepest GA block); ViT: CLS attention of the last block, averaged over heads.")
    if missing:
        note += f" No kept checkpoint for: {', '.join(missing)}."
    flat = [e.variant for e in rows if e.method == "Grad-CAM" and e.mean.max() == 0]
    if flat:  # e.g. ResNet's last stage is 1x1 at 32 px: Grad-CAM has no location to show
        note += (f" Grad-CAM is constant for {', '.join(flat)}: the last convolutional stage has no "
                 f"spatial extent at this image size (ResNets: `train.stem: small` keeps 4x4 at 28 px).")
    return [name], note

