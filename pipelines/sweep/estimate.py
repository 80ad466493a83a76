"""The work of a study per variant and phase (its plan, `plan.py`, counted) and its estimated
compute time (`attnsweep run --dry-run`), without data, downloads or training: forward FLOPs per image are counted by `torch.utils.flop_counter` on the
meta device; a training step costs about three forwards (forward + backward)."""
from __future__ import annotations

from dataclasses import dataclass

from attnsweep.pipelines.config.study import Study

# Sustained TFLOP/s when the study does not say: small vision models reach a small fraction of a
# device's peak. A CPU rank gets CPU_CORE_TFLOPS per core (its threads); measured with the demo on
# the 2-core development machine: 525 GFLOP per training in 3.4 s on 2 threads.
GPU_TFLOPS = 8.0
CPU_CORE_TFLOPS = 0.075
# Per training: job start, imports, data loading. Local: measured 6 s per demo training; SLURM adds
# scheduling and a cold node.
STARTUP_S = {"debug": 2.0, "local": 6.0, "slurm": 15.0}


@dataclass(frozen=True)
class PhaseWork:
    variant: str
    phase: str
    configs: int
    splits: int
    epochs: int
    gflops_per_image: float

    @property
    def trainings(self) -> int:
        return self.configs * self.splits


def forward_gflops(variant: str, image_size: int, num_classes: int, stem: str = "imagenet") -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attnsweep.models import create

    with torch.device("meta"):
        model = create(variant, num_classes, pretrained=None, image_size=image_size, stem=stem)
        x = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() / 1e9


def _num_classes(study: Study) -> int:
    if study.dataset.class_map:
        return len({v for v in study.dataset.class_map.values() if v is not None})
    return 3


def phase_work(study: Study) -> list[PhaseWork]:
    from attnsweep.models.factory import check_input_size

    rows = []
    n_classes = _num_classes(study)
    for v in study.variants:
        check_input_size(v, study.image_size, study.train.stem)  # one line before any job, as the run's preflight
        g = forward_gflops(v, study.image_size, n_classes, study.train.stem)
        if study.splits.search_splits:
            rows.append(PhaseWork(v, "search", study.search.n_configs(), study.splits.search_splits, study.train.epochs, g))
        rows.append(PhaseWork(v, "repeat", 1, study.splits.repeat_splits, study.train.epochs, g))
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


def training_seconds(study: Study, p: PhaseWork, images: int) -> float:
    """One training of one split: epochs of train + validation passes, then test/OOD once."""
    s = study.splits
    n_train = images * (1 - s.val_fraction - s.test_fraction)
    n_val, n_test = images * s.val_fraction, images * s.test_fraction
    gflop = p.epochs * (3 * n_train + n_val) * p.gflops_per_image + (n_test * (1 + len(study.ood))) * p.gflops_per_image
    tflops = (study.estimate.tflops or default_rank_tflops(study)) * study.executor.world_size
    return gflop / (tflops * 1e3) + STARTUP_S[study.executor.kind]


def default_rank_tflops(study: Study) -> float:
    """One rank: a GPU, or its CPU threads (a local job's ranks share this machine's cores: local
    trainings add up, see phase_wall_seconds)."""
    from attnsweep.pipelines.trial.distributed import machine_cpus

    if device_kind(study) == "gpu":
        return GPU_TFLOPS
    ex = study.executor
    cores = ex.slurm.cpus_per_task if ex.kind == "slurm" else max(1, machine_cpus() // ex.world_size)
    return CPU_CORE_TFLOPS * cores


def phase_wall_seconds(study: Study, p: PhaseWork, images: int) -> float:
    """Wall time of one phase: on SLURM up to `max_concurrent` trials run side by side (a search
    trial's splits too); a `local` or `debug` executor shares one machine, so jobs add up."""
    parallel = 1
    if study.executor.kind == "slurm":
        parallel = min(p.trainings, study.max_concurrent * (p.splits if p.phase == "search" else 1))
    return training_seconds(study, p, images) * p.trainings / parallel
