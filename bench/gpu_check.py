"""The CUDA path of attnsweep in one command: one printed line per check, PASS, FAIL or SKIP.

    python3 bench/gpu_check.py --ham10000 PATH            # one GPU: <= 8 minutes (--budget-s 450)
    python3 bench/gpu_check.py --ham10000 PATH --quick    # resnet18 only, 1-epoch study: ~3 minutes

Checks, in this order (a later one is skipped when the time budget would run out):
- data: the HAM10000 images at the check's size, prepared once (attnsweep.data.prepare);
- trainer <model> compile=off|on: images/s of attnsweep's `train` (AMP bf16, channels_last on a
  GPU; the epochs after the first, from metrics.jsonl) next to a bare timm + PyTorch loop on the
  same device, batch and model with its data already on the device; the ratio (goal >= 0.9 on a
  GPU) and both peak memories;
- pipeline <preset>: the trainer's own epoch loop (`epoch_loader` + `DeviceTransform` +
  `train_epoch`) with augmentation `none`, `flip_rot20`, `perez2018`: images/s, what the loader
  workers and the device-side augmentation feed without the model, and the GPU busy share (NVML);
- ddp: the trainer as a `local` executor job with one rank per GPU (NCCL; 2 ranks on gloo without
  CUDA), and on one GPU an NCCL group of one through `pipelines/trial/distributed.py`;
- study: `attnsweep run` of resnet18 vs resnet18+se on the HAM10000 images with the local
  executor, 3 repeat splits: finishes, report written, GPU-hours recorded.
Without CUDA it says so and runs the same checks in a small CPU smoke mode (32 px, a subset of
the images, few steps, no speed goals): tests/test_gpu_check.py. Exit status 0 when every check
ran passes, 1 when one failed or was skipped, 2 for bad arguments. docs/gpu-check.md."""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from attnsweep.data import DatasetSpec, SplitSpec, load_split, prepare
from attnsweep.data.device_augment import (
    PRESETS,
    DeviceTransform,
    Uint8Images,
    batch_seed,
)
from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.trial import distributed, trainer
from attnsweep.pipelines.trial.distributed import Dist
from attnsweep.pipelines.trial.executors import submit
from attnsweep.pipelines.trial.folder import TrialFolder

MODELS = ("resnet18", "efficientnet_b0", "vit_tiny_patch16_224")
STUDY_VARIANTS = ("resnet18", "resnet18+se")
METADATA = "HAM10000_metadata.csv"
GIB = 2**30


@dataclass(frozen=True)
class Mode:
    """Sizes of one run: on a GPU the paper's scale, on the CPU a smoke run of the same code."""
    cuda: bool
    image_size: int
    batch: int
    epochs: int  # trainer checks: the first is warm-up
    num_workers: int
    per_class: int | None  # HAM10000 rows per class (None: all)
    compile_models: tuple[str, ...]  # the models also checked with torch.compile
    study_epochs: int
    study_batch: int
    study_concurrent: int
    ratio_goal: float | None  # trainer / bare loop; None: no speed goal (CPU)
    busy_goal: float | None  # GPU busy share of the epoch loop
    precision: str  # the trainer's autocast (bf16 on the CPU is emulated: slow)
    cpu_threads: int | None  # torch threads on the CPU (one: a busy small machine's threads spin against each other)
    prepare_workers: int | None  # decoding processes (None: all cores)


def mode_for(cuda: bool, quick: bool) -> Mode:
    if cuda:
        return Mode(cuda=True, image_size=224, batch=128, epochs=2 if quick else 3, num_workers=8, per_class=None,
                    compile_models=MODELS, study_epochs=1 if quick else 3, study_batch=64, study_concurrent=3,
                    ratio_goal=0.9, busy_goal=0.9, precision="bf16", cpu_threads=None, prepare_workers=None)
    # torch.compile on the CPU builds C++ for minutes (tests/test_trainer.py covers compile on the CPU)
    return Mode(cuda=False, image_size=32, batch=16, epochs=2, num_workers=0, per_class=12,
                compile_models=(), study_epochs=1, study_batch=16, study_concurrent=2,
                ratio_goal=None, busy_goal=None, precision="fp32", cpu_threads=1, prepare_workers=1)


class CheckFailed(Exception):
    """A check ran but its result misses the goal (the message says by how much)."""


class Runner:
    """Runs checks one by one, each in its own try block, within a total time budget; one line each."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.monotonic(), budget_s
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, name: str, check: Callable[[], str], needs_s: float = 0.0) -> bool:
        if self.left_s() < needs_s:
            return self._line("SKIP", name, f"{self.left_s():.0f} s of the {self.budget_s:.0f} s budget left, "
                                            f"needs about {needs_s:.0f} s")
        t0 = time.monotonic()
        try:
            message = check()
        except CheckFailed as e:
            return self._line("FAIL", name, f"{e} ({time.monotonic() - t0:.0f} s)")
        except Exception as e:  # noqa: BLE001 - any error of one check is its FAIL line; the others still run
            first = (str(e).strip().splitlines() or [""])[0][:300]
            return self._line("FAIL", name, f"{type(e).__name__}: {first} ({time.monotonic() - t0:.0f} s)")
        return self._line("PASS", name, f"{message} ({time.monotonic() - t0:.0f} s)")

    def skip(self, name: str, why: str, counts: bool = True) -> None:
        """`counts`: False for what this mode does not run (no failure), True for a check that could not."""
        self._line("SKIP", name, why, counts)

    def _line(self, status: str, name: str, message: str, counts: bool = True) -> bool:
        self.counts[status] += counts
        print(f"{status} {name}: {message}", flush=True)
        return status == "PASS"


def device_line(cuda: bool) -> str:
    cores = os.cpu_count()
    if not cuda:
        return (f"device: no CUDA (torch {torch.__version__}, {cores} cores): CPU smoke mode, "
                f"small images and few steps, gloo for DDP, no speed goals")
    props = torch.cuda.get_device_properties(0)
    return (f"device: {props.name}, {props.total_memory / GIB:.0f} GiB, {torch.cuda.device_count()} GPU(s), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"{cores} cores, Python {platform.python_version()}")


def ham_spec(ham: Path, per_class: int | None, out: Path) -> DatasetSpec:
    """The HAM10000 dataset at `ham`; with `per_class`, its first rows of each class (a metadata
    subset written into `out`; the images are read from `ham`)."""
    if per_class is None:
        return DatasetSpec(format="ham10000", root=ham)
    rows = pd.read_csv(ham / METADATA, dtype=str)
    subset = rows.groupby("dx", sort=False).head(per_class)
    path = out / "ham10000_subset.csv"
    subset.to_csv(path, index=False)
    return DatasetSpec(format="ham10000", root=ham, metadata=str(path))


@dataclass
class Data:
    spec: DatasetSpec
    splits: SplitSpec
    data_dir: Path
    n_train: int


def prepare_data(spec: DatasetSpec, mode: Mode, out: Path) -> Data:
    splits = SplitSpec(val_fraction=0.1, test_fraction=0.2, search_splits=1, repeat_splits=0, seed=0)
    data_dir = prepare(spec, splits, mode.image_size, out / "prepared", workers=mode.prepare_workers)
    return Data(spec, splits, data_dir, len(load_split(data_dir, "search-0").sets["train"]))


def trial_config(data: Data, mode: Mode, **overrides) -> TrialConfig:
    base = {"model": "resnet18", "dataset": data.spec, "splits": data.splits, "split": "search-0",
            "image_size": mode.image_size, "epochs": mode.epochs, "lr": 0.01, "weight_decay": 1e-4,
            "batch_size": mode.batch, "optimizer": "sgd", "momentum": 0.9, "precision": mode.precision,
            "num_workers": mode.num_workers, "seed": 0, "cpu_threads": mode.cpu_threads, "data_dir": data.data_dir}
    return TrialConfig(**{**base, **overrides})


@contextlib.contextmanager
def peak_memory(cuda: bool) -> Iterator[dict]:
    """{'gib': the peak CUDA memory allocated inside the block} (None on the CPU)."""
    out: dict = {"gib": None}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield out
    if cuda:
        torch.cuda.synchronize()
        out["gib"] = torch.cuda.max_memory_allocated() / GIB


def bare_loop(cfg: TrialConfig, num_classes: int, steps: int, device: torch.device) -> float:
    """Images/s of a minimal timm + PyTorch training loop: the trainer's model, optimizer, AMP,
    memory format and compile setting, its batch already on the device; warm-up steps first."""
    import timm
    from attnsweep.models.registry import BACKBONES

    torch.manual_seed(cfg.seed)
    size = {"img_size": cfg.image_size} if BACKBONES[cfg.model].family == "transformer" else {}
    fmt = torch.channels_last if device.type == "cuda" else torch.preserve_format
    model = timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, **size)
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step_model = torch.compile(model) if cfg.compile else model
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (cfg.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # compile, cuDNN autotuning
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_trainer(data: Data, mode: Mode, model: str, compile_: bool, out: Path) -> str:
    device = torch.device("cuda" if mode.cuda else "cpu")
    cfg = trial_config(data, mode, model=model, compile=compile_)
    with peak_memory(mode.cuda) as trainer_mem:
        result = trainer.train(cfg, out / f"trainer-{model}-{'compile' if compile_ else 'eager'}")
    if result["status"] != "ok":
        raise CheckFailed(f"trial status {result['status']}")
    lines = TrialFolder(out / f"trainer-{model}-{'compile' if compile_ else 'eager'}").epochs()
    trainer_rate = statistics.mean(line["images_per_s"] for line in lines[1:])
    num_classes = len(load_split(data.data_dir, cfg.split).class_names)
    with peak_memory(mode.cuda) as bare_mem:
        bare_rate = bare_loop(cfg, num_classes, data.n_train // cfg.batch_size, device)
    ratio = trainer_rate / bare_rate
    where = "bf16, channels_last" if mode.cuda else "fp32 on the CPU"
    mem = (f", peak memory trainer {trainer_mem['gib']:.2f} GiB, bare {bare_mem['gib']:.2f} GiB"
           if mode.cuda else "")
    text = (f"{mode.image_size} px {where}, batch {cfg.batch_size}, {data.n_train} train images: "
            f"trainer {trainer_rate:.0f} images/s, bare loop {bare_rate:.0f} images/s, ratio {ratio:.2f}{mem}, "
            f"GPU-seconds recorded {result['gpu_seconds']:.1f}")
    if mode.ratio_goal is not None and ratio < mode.ratio_goal:
        raise CheckFailed(f"{text}; ratio below the goal {mode.ratio_goal}")
    if mode.cuda and not result["gpu_seconds"] > 0:
        raise CheckFailed(f"{text}; no GPU-seconds recorded")
    return text + ("" if mode.ratio_goal is None else f" (goal >= {mode.ratio_goal})")


class Utilisation:
    """The GPU's busy share (NVML: the share of time a kernel ran), sampled in a thread while the
    block runs. None without CUDA or without the NVML bindings (nvidia-ml-py)."""

    def __init__(self, cuda: bool, every_s: float = 0.05):
        self.cuda, self.every_s = cuda, every_s
        self.samples: list[int] = []
        self._stop = threading.Event()

    def __enter__(self) -> Utilisation:  # noqa: PYI034 - not subclassed
        if self.cuda:
            try:
                torch.cuda.utilization()
            except Exception:  # noqa: BLE001 - NVML missing or refused: the share is reported as n/a
                self.cuda = False
        if self.cuda:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(torch.cuda.utilization())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.cuda:
            self._thread.join()

    @property
    def share(self) -> float | None:
        return statistics.mean(self.samples) / 100 if self.samples else None


def epoch_rates(data: Data, mode: Mode, preset: str) -> tuple[float, float, float | None]:
    """(images/s of the trainer's epoch loop, images/s the loader + device transform feed without
    the model, GPU busy share during the loop) for `preset`: the trainer's own pieces, one rank;
    epoch 1 warms up (cuDNN autotuning, worker start), epoch 2 is measured."""
    d = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cuda" if mode.cuda else "cpu"),
             host="127.0.0.1")
    cfg = trial_config(data, mode, augmentation=preset, num_workers=max(1, mode.num_workers))
    split = load_split(data.data_dir, cfg.split)
    model, memory_format = trainer.build_model(cfg, d, len(split.class_names))
    optimizer = trainer.build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(d.device.type, enabled=False)  # bf16 needs no loss scaling
    train_set = Uint8Images(split.sets["train"].images, split.sets["train"].labels)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed)
    inputs = DeviceTransform(preset, cfg.image_size, split.mean, split.std).to(d.device)
    augment = functools.partial(inputs, memory_format=memory_format)

    def loop(epoch: int) -> tuple[float, float | None]:
        loader = trainer.epoch_loader(train_set, sampler, cfg.batch_size, cfg, d, epoch)
        seeds = functools.partial(batch_seed, cfg.seed, epoch, 0)
        with Utilisation(mode.cuda) as busy:
            t0 = time.perf_counter()
            amp = torch.bfloat16 if cfg.precision == "bf16" else None
            _, n = trainer.train_epoch(model, loader, optimizer, scaler, d.device, amp, augment, seeds)
            sync(d.device)
            rate = n / (time.perf_counter() - t0)
        return rate, busy.share

    loop(1)
    train_rate, busy = loop(2)
    loader = trainer.epoch_loader(train_set, sampler, cfg.batch_size, cfg, d, 3)
    t0, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        augment(x.to(d.device, non_blocking=True), batch_seed(cfg.seed, 3, 0, i))
        n += len(x)
    sync(d.device)
    return train_rate, n / (time.perf_counter() - t0), busy


def check_pipeline(data: Data, mode: Mode, preset: str, baseline: dict) -> str:
    train_rate, feed_rate, busy = epoch_rates(data, mode, preset)
    baseline.setdefault(preset, train_rate)
    versus = "" if preset == "none" or "none" not in baseline else \
        f" ({train_rate / baseline['none']:.2f}x of `none`'s {baseline['none']:.0f})"
    busy_text = "n/a (no CUDA)" if not mode.cuda else "n/a (no NVML)" if busy is None else f"{busy:.0%} (NVML)"
    workers = max(1, mode.num_workers)
    text = (f"epoch loop {train_rate:.0f} images/s{versus}; loader ({workers} workers) + device augmentation "
            f"alone {feed_rate:.0f} images/s ({feed_rate / train_rate:.1f}x the loop); GPU busy {busy_text}")
    if mode.busy_goal is not None and busy is not None and busy < mode.busy_goal:
        raise CheckFailed(f"{text}; GPU busy below the goal {mode.busy_goal:.0%}")
    if mode.cuda and feed_rate < train_rate:
        raise CheckFailed(f"{text}; the input alone is slower than the training loop")
    return text


def nccl_group_of_one() -> str:
    """An NCCL process group of one rank: DDP's wrapper, a bf16 step and distributed.py's
    collectives on the GPU (the trainer makes no group for one rank)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        import timm

        model = timm.create_model("resnet18", num_classes=7).cuda().to(memory_format=torch.channels_last)
        ddp = DistributedDataParallel(model, device_ids=[0])
        x = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(ddp(x), torch.zeros(8, dtype=torch.long, device="cuda"))
        loss.backward()
        total = distributed.all_sum(torch.ones(2, device="cuda")).tolist()
        gathered = distributed.gather({"rank": 0})
        distributed.broadcast_buffers(model)
        distributed.barrier()
        if total != [1.0, 1.0] or gathered != [{"rank": 0}]:
            raise CheckFailed(f"collectives gave {total}, {gathered}")
    finally:
        distributed.teardown()
    return "NCCL group of 1: DDP bf16 step, all_reduce, all_gather_object, broadcast, barrier ok"


def check_ddp(data: Data, mode: Mode, out: Path) -> str:
    gpus = torch.cuda.device_count() if mode.cuda else 0
    world = min(gpus, 2) if mode.cuda else 2
    backend = "nccl" if mode.cuda else "gloo"
    cfg = trial_config(data, mode, epochs=2, batch_size=mode.batch * world)
    folder = out / f"ddp-{world}"
    job = submit(cfg, folder, ExecutorSpec(kind="local", workers=world, slurm={"timeout_min": 10}))
    error = job.exception()
    if error is not None:
        raise CheckFailed(f"local job {job.job_id}: {str(error).strip().splitlines()[-1][:300]}")
    result = TrialFolder(folder).result()
    if result["status"] != "ok" or result["world_size"] != world:
        raise CheckFailed(f"status {result['status']}, world size {result['world_size']} (wanted {world})")
    text = (f"{backend} world size {world} on {gpus} GPU(s) (local executor, {world} process(es)): "
            f"trial ok, {result['epochs_run']} epochs, GPU-seconds {result['gpu_seconds']:.1f}")
    if mode.cuda and world == 1:
        text += "; " + nccl_group_of_one()
    return text


def study_file(spec: DatasetSpec, mode: Mode, out: Path) -> Path:
    dataset = {"format": "ham10000", "root": str(spec.root), **({"metadata": spec.metadata} if spec.metadata else {})}
    study = {
        "name": "gpu_check",
        "description": "bench/gpu_check.py: resnet18 vs resnet18+se on HAM10000, local executor",
        "dataset": dataset,
        "dataset_name": "ham10000",
        "image_size": mode.image_size,
        "variants": list(STUDY_VARIANTS),
        "train": {"epochs": mode.study_epochs, "batch_size": mode.study_batch, "optimizer": "sgd", "momentum": 0.9,
                  "schedule": "cosine", "augmentation": "flip_rot20", "precision": "bf16",
                  "num_workers": 4 if mode.cuda else 0, "seed": 0},
        "search": {"lr": [0.01], "weight_decay": [0.0001]},
        "splits": {"val_fraction": 0.1, "test_fraction": 0.2, "search_splits": 0, "repeat_splits": 3, "seed": 0},
        "executor": {"kind": "local", "workers": 1, "slurm": {"timeout_min": 30}},
        "max_concurrent": mode.study_concurrent,
        "max_failures": 0,
        "stats": {"metrics": ["balanced_accuracy"], "significance": "corrected", "explain_images": 8},
    }
    path = out / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def check_study(spec: DatasetSpec, mode: Mode, out: Path, timeout_s: float) -> str:
    from attnsweep.pipelines.store import parquet_store

    study_out = out / "study"
    cmd = [sys.executable, "-m", "attnsweep.pipelines.cli", "run", str(study_file(spec, mode, out)),
           "--out", str(study_out)]
    log = out / "study.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            stop_driver(proc)
            raise CheckFailed(f"attnsweep run did not finish in the {timeout_s:.0f} s left of the budget "
                              f"(log {log})") from None
    if proc.returncode != 0:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["(no output)"]
        raise CheckFailed(f"attnsweep run exited {proc.returncode}: {tail[0][:300]} (log {log})")
    rows = parquet_store.read(study_out).to_pandas().drop_duplicates("trial_id")  # a row per evaluated set
    report = study_out / "report" / "index.html"
    ok = rows[rows["status"] == "ok"]
    want = len(STUDY_VARIANTS) * 3
    gpu_hours = rows["gpu_seconds"].sum() / 3600
    text = (f"{len(ok)}/{want} trials ok ({', '.join(STUDY_VARIANTS)} x 3 repeat splits, {mode.study_epochs} "
            f"epoch(s), {mode.image_size} px), report {'written' if report.is_file() else 'MISSING'}, "
            f"GPU-hours recorded {gpu_hours:.4f}")
    if len(ok) != want or not report.is_file():
        raise CheckFailed(text)
    if mode.cuda and not gpu_hours > 0:
        raise CheckFailed(f"{text}; no GPU time recorded")
    if not mode.cuda and gpu_hours != 0:
        raise CheckFailed(f"{text}; GPU time recorded without a GPU")
    return text


def stop_driver(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """Interrupt the study driver as Ctrl-C would (it cancels its jobs), then kill its session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def default_ham10000() -> Path | None:
    """../shared/data/ham10000 beside a worktree, else a copy carried into the repo (docs/gpu-check.md)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        for candidate in (parent / "shared" / "data" / "ham10000", parent / ".gpu_carry" / "ham10000"):
            if (candidate / METADATA).is_file():
                return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ham10000", type=Path, default=None,
                    help=f"HAM10000 folder ({METADATA} + ISIC_*.jpg; default: ../shared/data/ham10000)")
    ap.add_argument("--quick", action="store_true", help="resnet18 only, a 1-epoch study (about 3 minutes on a GPU)")
    ap.add_argument("--cpu", action="store_true", help="the CPU smoke mode even where CUDA is available")
    ap.add_argument("--budget-s", type=float, default=450.0, help="total time; checks that would not fit are skipped")
    ap.add_argument("--out", type=Path, default=None, help="working folder, kept (default: a temporary one)")
    args = ap.parse_args(argv)
    ham = args.ham10000 or default_ham10000()
    if ham is None or not (ham / METADATA).is_file():
        print(f"error: --ham10000 {ham}: no {METADATA} there (the HAM10000 folder)", file=sys.stderr)
        return 2
    if args.budget_s <= 0:
        print(f"error: --budget-s {args.budget_s}: must be positive", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available() and not args.cpu
    mode = mode_for(cuda, args.quick)
    if mode.cpu_threads:
        torch.set_num_threads(mode.cpu_threads)
    # A hung CUDA call or collective cannot be interrupted in-process: print every thread's stack and exit.
    faulthandler.dump_traceback_later(args.budget_s + 90, exit=True)
    print(device_line(cuda), flush=True)
    runner = Runner(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        run_checks(runner, ham.resolve(), mode, args.quick, out)
    c = runner.counts
    print(f"summary: {c['PASS']} PASS, {c['FAIL']} FAIL, {c['SKIP']} SKIP in {time.monotonic() - runner.start:.0f} s",
          flush=True)
    return 0 if c["FAIL"] == c["SKIP"] == 0 else 1


def run_checks(runner: Runner, ham: Path, mode: Mode, quick: bool, out: Path) -> None:
    """The checks in order of importance, each with the seconds it needs on one H200 (estimates)."""
    spec = ham_spec(ham, mode.per_class, out)
    data: list[Data] = []

    def data_check() -> str:
        data.append(prepare_data(spec, mode, out))
        subset = "all" if mode.per_class is None else f"{mode.per_class} per class of"
        return f"{subset} the images at {ham}, {mode.image_size} px cache, {data[0].n_train} train images"

    if not runner.run("data", data_check):
        for name in ("trainer", "pipeline", "ddp"):
            runner.skip(name, "no prepared data")
    else:
        models = MODELS[:1] if quick else MODELS
        first, rest = [(models[0], c) for c in (False, True)], [(m, c) for m in models[1:] for c in (False, True)]

        def trainer_check(model: str, compile_: bool) -> None:  # resnet18 first, the others after the study
            if compile_ and model not in mode.compile_models:
                return runner.skip(f"trainer {model} compile=on", "CPU smoke mode (torch.compile builds C++ for "
                                                                   "minutes on the CPU)", counts=False)
            runner.run(f"trainer {model} compile={'on' if compile_ else 'off'}",
                       lambda: check_trainer(data[0], mode, model, compile_, out), needs_s=90 if compile_ else 25)

        for model, compile_ in first:
            trainer_check(model, compile_)
        baseline: dict = {}
        for preset in PRESETS:
            runner.run(f"pipeline {preset}", lambda p=preset: check_pipeline(data[0], mode, p, baseline), needs_s=20)
        runner.run("ddp", lambda: check_ddp(data[0], mode, out), needs_s=40)
    runner.run("study", lambda: check_study(spec, mode, out, runner.left_s()), needs_s=120 if mode.cuda else 60)
    if data:
        for model, compile_ in rest:
            trainer_check(model, compile_)


if __name__ == "__main__":
    sys.exit(main())
