"""One trial on one split: `train(cfg, trial_dir) -> result`. The same function runs in-process
(executor `debug`) and as each rank of a submitit job (DDP, one rank per task).

Its files are described in `folder.py` (TrialFolder); when and in which order an epoch's
checkpoint, best weights and metrics line are written in `_save_epoch` and `_write_checkpoint`."""
from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from attnsweep.data.atomic import remove_temp_files
from attnsweep.data.device_augment import DeviceTransform, Uint8Images, batch_seed
from attnsweep.pipelines.trial import checkpoint
from attnsweep.pipelines.trial import distributed
from attnsweep.pipelines.trial.distributed import Dist
from attnsweep.pipelines.trial.folder import TrialFolder, uninterrupted
from attnsweep.pipelines.trial.hold import hold_after_epoch
from attnsweep.pipelines.trial.job_env import submitit_job
from attnsweep.pipelines.trial.metrics import classification_metrics
from attnsweep.pipelines.config import selection
from attnsweep.pipelines.config.trial_config import TrialConfig, TrialConfigError

__all__ = ["TrialConfig", "TrialConfigError", "build_model", "build_optimizer", "epoch_loader", "evaluate", "train",
           "train_epoch"]

log = logging.getLogger(__name__)

_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def train(cfg: TrialConfig, trial_dir: str | Path) -> dict[str, Any]:
    """Run (or resume, or return the finished result of) one trial; returns `result.json`'s content."""
    d = distributed.setup(cfg.cpu_threads)
    try:
        return _train(cfg, TrialFolder(trial_dir), d)
    finally:
        _pending.clear()  # no other trial's state for the requeue signal to write
        distributed.teardown()


def _train(cfg: TrialConfig, folder: TrialFolder, d: Dist) -> dict[str, Any]:
    folder.claim(cfg, write=d.is_main)
    if d.is_main:  # this job is the folder's only writer: what a killed one was writing goes
        remove_temp_files(folder.path, recursive=False)
    finished = folder.final_result()
    if finished is not None:
        return finished
    hosts = distributed.gather(d.host)
    split = _load_split(cfg, folder, d)
    if split.image_size != cfg.image_size:
        raise TrialConfigError(f"image_size: {cfg.image_size}, but the data dir holds {split.image_size} px images")
    num_classes = len(split.class_names)
    amp_dtype = _AMP_DTYPES[cfg.precision]
    if amp_dtype is torch.float16 and d.device.type != "cuda":
        raise TrialConfigError("precision: fp16 needs a GPU (use bf16 or fp32 on CPU)")
    per_rank_batch = cfg.batch_size // d.world_size
    n_train = len(split.sets["train"])
    if cfg.batch_size > n_train:
        raise TrialConfigError(f"batch_size: {cfg.batch_size} is larger than the training set ({n_train} images)")

    model, memory_format = build_model(cfg, d, num_classes)
    params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(cfg, model)
    scheduler = lr_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(d.device.type, enabled=cfg.precision == "fp16")

    state = {"epoch": 0, "best_epoch": None, "best_score": -float("inf"), "best_model": None, "train_seconds": 0.0}
    resumed = _resume(folder, d, model, optimizer, scheduler, scaler) if folder.checkpoint_file.exists() else None
    if resumed is not None:
        state = resumed
    elif d.is_main:  # killed before its first checkpoint: the epochs it recorded run again
        folder.metrics_file.unlink(missing_ok=True)
    saved_best_epoch = state["best_epoch"]  # the weights in best.pt
    ddp = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) \
        if d.world_size > 1 else model
    if cfg.compile:  # the training step; evaluation runs the plain module
        ddp = torch.compile(ddp)

    # Loader workers only copy uint8 rows; conversion, normalisation and augmentation run on the device.
    sets = {name: Uint8Images(s.images, s.labels) for name, s in split.sets.items()}
    train_set, eval_sets = sets.pop("train"), sets
    inputs = DeviceTransform(cfg.augmentation, cfg.image_size, split.mean, split.std).to(d.device)
    sampler = DistributedSampler(train_set, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=cfg.seed)
    evaluate_on = functools.partial(evaluate, model, d=d, batch_size=per_rank_batch, amp_dtype=amp_dtype,
                                    memory_format=memory_format, num_classes=num_classes, num_workers=cfg.num_workers,
                                    inputs=inputs)
    job = submitit_job()
    job_id = job.job_id if job is not None else None
    diverged_epoch = None  # the epoch whose loss or a metric was not finite
    last_checkpoint = time.monotonic()
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loader = epoch_loader(train_set, sampler, per_rank_batch, cfg, d, epoch)
        lr = optimizer.param_groups[0]["lr"]
        augment = functools.partial(inputs, memory_format=memory_format)
        seeds = functools.partial(batch_seed, cfg.seed, epoch, d.rank)  # batch i's draws: (seed, epoch, rank, i)
        loss_sum, n_seen = train_epoch(ddp, loader, optimizer, scaler, d.device, amp_dtype, augment, seeds)
        distributed.broadcast_buffers(model)
        train_time = time.perf_counter() - t0
        if not torch.isfinite(loss_sum).item():  # the sum is all-reduced: every rank stops together
            log.warning("epoch %d: train loss %s, the trial diverged", epoch, loss_sum.item())
            diverged_epoch = epoch
            break
        val = evaluate_on(eval_sets["val"])
        if not finite_metrics(val):  # the same on every rank: the metrics come from gathered logits
            log.warning("epoch %d: validation loss %s, the trial diverged", epoch, val["loss"])
            diverged_epoch = epoch
            break
        scheduler.step()
        seconds = time.perf_counter() - t0
        line = {"epoch": epoch, "train_loss": loss_sum.item() / n_seen, "lr": lr, "seconds": seconds,
                "images_per_s": n_seen / train_time, "val": {k: val[k] for k in selection.METRICS}, "job_id": job_id}
        score = selection.score(val[cfg.selection_metric], cfg.selection_metric)
        if state["best_epoch"] is None or score > state["best_score"]:
            best_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            state.update(best_epoch=epoch, best_score=score, best_model=best_model)
        state.update(epoch=epoch, train_seconds=state["train_seconds"] + seconds)
        rng = distributed.gather(checkpoint.rng_state())
        if d.is_main:
            due = _checkpoint_due(cfg, epoch, (time.monotonic() - last_checkpoint) / 60)
            training = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng}
            _save_epoch(folder, line, state, training, due, write_best=state["best_epoch"] != saved_best_epoch)
            if due:
                last_checkpoint, saved_best_epoch = time.monotonic(), state["best_epoch"]
            log.info("epoch %d/%d train_loss %.4f val %s %s (%.1f s, %.0f img/s)", epoch, cfg.epochs,
                     line["train_loss"], cfg.selection_metric, val[cfg.selection_metric], seconds,
                     line["images_per_s"])
            hold_after_epoch(folder.path, epoch)

    metrics: dict[str, dict] = {}
    if diverged_epoch is None:
        model.load_state_dict(state["best_model"])
        metrics = {name: evaluate_on(ds) for name, ds in eval_sets.items()}
        if not all(finite_metrics(m) for m in metrics.values()):
            log.warning("the selected epoch %s gives non-finite metrics, the trial diverged", state["best_epoch"])
            diverged_epoch, metrics = state["best_epoch"], {}
    result = {
        "status": "ok" if diverged_epoch is None else "diverged",
        "diverged_epoch": diverged_epoch,
        "world_size": d.world_size,
        "cpu_threads": torch.get_num_threads(),  # per rank: what its throughput was measured with
        "hosts": hosts,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "n_train": n_train,
        "params": params,
        "train_seconds": state["train_seconds"],
        "gpu_seconds": state["train_seconds"] * d.world_size if d.device.type == "cuda" else 0.0,
        "trial_id": cfg.hash(),  # the folder name; the configuration hash is in the result rows
        # the job's end for `--dry-run`'s calibration: a copied study folder keeps it, not its mtimes
        "ended_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "metrics": metrics,
    }
    if d.is_main:
        folder.write_result(result)
    return result


def finite_metrics(metrics: dict[str, Any]) -> bool:
    """Whether every scalar metric of an evaluated set is finite (None, undefined, is allowed)."""
    return all(v is None or math.isfinite(v) for k, v in metrics.items() if isinstance(v, float))


def _load_split(cfg: TrialConfig, folder: TrialFolder, d: Dist):
    from attnsweep.data import load_split, prepare

    data_dir = cfg.data_dir
    if data_dir is None:  # prepared once, by rank 0, into the trial folder
        if d.is_main:
            prepare(cfg.dataset, cfg.splits, cfg.image_size, folder.path, ood=cfg.ood)
        distributed.barrier()
        data_dir = folder.data_dir
    return load_split(data_dir, cfg.split)


def build_model(cfg: TrialConfig, d: Dist, num_classes: int) -> tuple[torch.nn.Module, torch.memory_format]:
    from attnsweep.models import create

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = create(cfg.model, num_classes, pretrained=cfg.pretrained, image_size=cfg.image_size,
                   stem=cfg.stem, attentions=cfg.model_dump()["attentions"]).to(d.device)
    # Each rank its own dropout stream (restored from the checkpoint on resume).
    for seed_fn in (random.seed, np.random.seed, torch.manual_seed):
        seed_fn(cfg.seed + d.rank)
    if d.device.type != "cuda":
        return model, torch.preserve_format
    torch.backends.cudnn.benchmark = True
    return model.to(memory_format=torch.channels_last), torch.channels_last


def build_optimizer(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999),
                             weight_decay=cfg.weight_decay)


def lr_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "multistep":
        return sched.MultiStepLR(optimizer, [round(f * cfg.epochs) for f in cfg.milestones], gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _resume(folder: TrialFolder, d: Dist, model, optimizer, scheduler, scaler) -> dict[str, Any] | None:
    """The state after the checkpoint's epoch; None (train from scratch) when the checkpoint is
    unreadable: it is an infrastructure failure (a disk or a copy), not the configuration's, so it
    is set aside (`checkpoint.pt.corrupt-N`, with the metrics lines of its epochs) with one warning
    line, and the trial starts again (one checkpoint is kept: there is no earlier good one)."""
    try:
        ckpt = checkpoint.load(folder.checkpoint_file)
    except checkpoint.UnreadableCheckpoint as e:
        distributed.barrier()  # every rank has tried to read it before it moves
        if d.is_main:
            aside = checkpoint.set_aside(folder.checkpoint_file)
            if folder.metrics_file.exists():
                checkpoint.set_aside(folder.metrics_file)  # its epochs are trained again
            folder.best_file.unlink(missing_ok=True)
            log.warning("%s; set aside as %s, the trial starts again from scratch", e, aside.name)
        distributed.barrier()
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    if len(ckpt["rng"]) == d.world_size:
        checkpoint.set_rng_state(ckpt["rng"][d.rank])
    else:
        log.warning("checkpoint written by %d ranks, resumed with %d: random streams restart from the seed",
                    len(ckpt["rng"]), d.world_size)
    if d.is_main:  # complete or undo what a kill after the checkpoint left (see _write_checkpoint)
        staged = folder.staged_best_file(ckpt["best_epoch"])
        if "best_model" in ckpt:  # written before best.pt was kept out of the checkpoint
            checkpoint.save(folder.best_file, ckpt["best_model"])
        elif staged.exists():
            staged.replace(folder.best_file)
        for stale in folder.path.glob(folder.staged_best_file("*").name):
            stale.unlink()
        folder.truncate_epochs(ckpt["epoch"], json.loads(ckpt["line"]))
    distributed.barrier()  # best.pt is final before the other ranks read it
    best_model = ckpt["best_model"] if "best_model" in ckpt else checkpoint.load(folder.best_file)
    log.info("resuming after epoch %d", ckpt["epoch"])
    return {**{k: ckpt[k] for k in ("epoch", "best_epoch", "best_score", "train_seconds")}, "best_model": best_model}


def _checkpoint_due(cfg: TrialConfig, epoch: int, minutes_since_last: float) -> bool:
    every_k, every_min = cfg.checkpoint_every_epochs, cfg.checkpoint_every_minutes
    return (epoch == cfg.epochs or (every_k is not None and epoch % every_k == 0)
            or (every_min is not None and minutes_since_last >= every_min))


# Rank 0's resume state of the last finished epoch when it was not written: the requeue signal
# writes it (TrialJob.checkpoint -> write_pending_checkpoint), so a requeue re-runs no epoch.
_pending: dict[str, Any] = {}


def _save_epoch(folder: TrialFolder, line: dict, state: dict, training: dict, due: bool, write_best: bool) -> None:
    """The checkpoint if `due` (else a CPU snapshot of it, `_pending`), then the line appended to
    metrics.jsonl. Killed before the line: resume truncates metrics.jsonl to the checkpoint's epoch
    and adds its line, so every finished epoch is in metrics.jsonl exactly once (later epochs
    re-run). The requeue signal waits for both."""
    ckpt = {**{k: v for k, v in state.items() if k != "best_model"}, **training, "line": json.dumps(line)}
    best_model = state["best_model"] if write_best else None
    with uninterrupted():
        if due:
            _write_checkpoint(folder, ckpt, best_model)
            _pending.clear()
        else:
            _pending.update(folder=folder, ckpt=checkpoint.cpu_copy(ckpt), best_model=best_model)
        folder.append_epoch(line)


def write_pending_checkpoint() -> None:
    """Write the snapshot of the last finished epoch, if it has not been (the requeue signal)."""
    if _pending:
        with uninterrupted():
            _write_checkpoint(**_pending)
            _pending.clear()


def _write_checkpoint(folder: TrialFolder, ckpt: dict, best_model: dict | None) -> None:
    """checkpoint.pt, and best.pt when the best epoch changed since the last checkpoint: the weights
    go to a staged file named by their epoch, then checkpoint.pt, then the staged file is renamed
    to best.pt. Killed before checkpoint.pt: resume drops the staged file, best.pt is still the old
    checkpoint's best; killed after: resume renames it. So best.pt always holds the checkpoint's
    best_epoch, and is written once per new best epoch at most."""
    staged = folder.staged_best_file(ckpt["best_epoch"])
    if best_model is not None:
        checkpoint.save(staged, best_model)
    checkpoint.save(folder.checkpoint_file, ckpt)
    if best_model is not None:
        staged.replace(folder.best_file)


def _generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Seeds the loader's worker processes from (seed, epoch, rank), whatever ran before."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def epoch_loader(train_set: Dataset, sampler: DistributedSampler, batch_size: int, cfg: TrialConfig, d: Dist,
                 epoch: int) -> DataLoader:
    """This rank's training batches of `epoch` (uint8 rows, pinned for a GPU)."""
    sampler.set_epoch(epoch)
    return DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=cfg.num_workers,
                      pin_memory=d.device.type == "cuda", generator=_generator(cfg.seed, epoch, d.rank))


def train_epoch(model, loader, optimizer, scaler, device, amp_dtype, augment, seeds) -> tuple[torch.Tensor, int]:
    """One pass over this rank's shard; returns the loss summed over all ranks' images and their count.
    `augment(x_uint8, seed)` makes the model's input of batch i, with seed `seeds(i)`."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for i, (x, y) in enumerate(loader):
        x = augment(x.to(device, non_blocking=True), seeds(i))
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach().double() * len(y)
        n += len(y)
    totals = distributed.all_sum(torch.stack([loss_sum, torch.tensor(float(n), dtype=torch.float64, device=device)]))
    return totals[0], int(totals[1].item())


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, d: Dist, batch_size: int, amp_dtype, memory_format,
             num_classes: int, num_workers: int = 0, inputs: DeviceTransform | None = None) -> dict[str, Any]:
    """Metrics of `dataset` on the predictions of all ranks: rank r predicts images r, r+W, r+2W, ...
    (no padding, unlike DistributedSampler), and the gathered logits are put back in dataset order,
    so the metrics equal a single process's exactly. `inputs`: turns the dataset's uint8 batches into
    the model's normalised input on the device (no augmentation); None: the dataset gives that input."""
    model.eval()
    shard = Subset(dataset, range(d.rank, len(dataset), d.world_size))
    logits, labels = [], []
    for x, y in DataLoader(shard, batch_size=batch_size, num_workers=num_workers,
                           pin_memory=d.device.type == "cuda"):
        x = x.to(d.device, non_blocking=True)
        x = inputs(x, memory_format=memory_format) if inputs is not None else x.contiguous(memory_format=memory_format)
        with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits.append(model(x).float().cpu())
        labels.append(y)
    mine = (torch.cat(logits) if logits else torch.empty(0, num_classes),
            torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))
    all_logits = torch.empty(len(dataset), num_classes)
    all_labels = torch.empty(len(dataset), dtype=torch.long)
    for r, (lg, lb) in enumerate(distributed.gather(mine)):
        all_logits[r::d.world_size] = lg
        all_labels[r::d.world_size] = lb
    return classification_metrics(all_logits, all_labels, num_classes)
