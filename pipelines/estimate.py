"""The plan of a study and its estimated compute time (`attnsweep run --dry-run`), without data,
downloads or training: forward FLOPs per image are counted by `torch.utils.flop_counter` on the
meta device; a training step costs about three forwards (forward + backward)."""
from __future__ import annotations

from dataclasses import dataclass

from attnsweep.pipelines.study import Study

# Sustained TFLOP/s of one rank when the study does not say: small vision models reach a small
# fraction of a device's peak. A CPU rank is one process of a few cores.
DEFAULT_TFLOPS = {"gpu": 8.0, "cpu": 0.03}
STARTUP_S = 15.0  # job start, imports, data loading: per training


@dataclass(frozen=True)
class PhasePlan:
    variant: str
    phase: str
    configs: int
    splits: int
    epochs: int
    gflops_per_image: float

    @property
    def trainings(self) -> int:
        return self.configs * self.splits


def forward_gflops(variant: str, image_size: int, num_classes: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attnsweep.models import create

    with torch.device("meta"):
        model = create(variant, num_classes, pretrained=None, image_size=image_size)
        x = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() / 1e9


def _num_classes(study: Study) -> int:
    if study.dataset.class_map:
        return len({v for v in study.dataset.class_map.values() if v is not None})
    return 3


def plan(study: Study) -> list[PhasePlan]:
    rows = []
    n_classes = _num_classes(study)
    for v in study.variants:
        g = forward_gflops(v, study.image_size, n_classes)
        if study.splits.search_splits:
            rows.append(PhasePlan(v, "search", study.search.n_configs(), study.splits.search_splits, study.train.epochs, g))
        rows.append(PhasePlan(v, "repeat", 1, study.splits.repeat_splits, study.train.epochs, g))
    return rows


def pool_images(study: Study) -> int | None:
    if study.estimate.train_images:
        return study.estimate.train_images
    if study.dataset.format == "synthderm":
        return study.dataset.opts().n
    return None


def device_kind(study: Study) -> str:
    ex = study.executor
    return "gpu" if ex.kind == "slurm" and ex.slurm.gpus_per_node > 0 else "cpu"


def training_seconds(study: Study, p: PhasePlan, images: int) -> float:
    """One training of one split: epochs of train + validation passes, then test/OOD once."""
    s = study.splits
    n_train = images * (1 - s.val_fraction - s.test_fraction)
    n_val, n_test = images * s.val_fraction, images * s.test_fraction
    gflop = p.epochs * (3 * n_train + n_val) * p.gflops_per_image + (n_test * (1 + len(study.ood))) * p.gflops_per_image
    tflops = (study.estimate.tflops or DEFAULT_TFLOPS[device_kind(study)]) * study.executor.world_size
    return gflop / (tflops * 1e3) + STARTUP_S


def phase_wall_seconds(study: Study, p: PhasePlan, images: int) -> float:
    """Wall time of one phase: on SLURM up to `max_concurrent` trials run side by side (a search
    trial's splits too); a `local` or `debug` executor shares one machine, so jobs add up."""
    parallel = 1
    if study.executor.kind == "slurm":
        parallel = min(p.trainings, study.max_concurrent * (p.splits if p.phase == "search" else 1))
    return training_seconds(study, p, images) * p.trainings / parallel
