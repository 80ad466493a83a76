"""`attnsweep train`: one trial on one split, through an executor; prints its result.json path."""
from __future__ import annotations

from pathlib import Path

import typer


def _key_values(items: list[str], option: str) -> dict:
    import yaml

    from attnsweep.pipelines.config.trial_config import TrialConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TrialConfigError(f"{option}: expected KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def train(
    model: str = typer.Option(..., "--model", help="Model variant, e.g. resnet18 or resnet18+ga."),
    dataset: str = typer.Option("synthderm", "--dataset", help="synthderm or FORMAT:ROOT."),
    dataset_option: list[str] = typer.Option([], "--dataset-option", help="Format option KEY=VALUE (e.g. n=300)."),
    image_size: int = typer.Option(224, "--image-size"),
    epochs: int = typer.Option(10, "--epochs"),
    lr: float = typer.Option(0.1, "--lr"),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch, split over the ranks."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw."),
    momentum: float = typer.Option(0.9, "--momentum"),
    schedule: str = typer.Option("constant", "--schedule", help="step, multistep, cosine or constant."),
    step_size: int = typer.Option(30, "--step-size", help="step: epochs between decays."),
    milestones: str = typer.Option("0.3,0.6,0.9", "--milestones", help="multistep: fractions of the epochs."),
    gamma: float = typer.Option(0.1, "--gamma", help="step/multistep: decay factor."),
    augmentation: str = typer.Option("none", "--augmentation", help="none, flip_rot20 or perez2018."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (GPU)."),
    pretrained: str = typer.Option(None, "--pretrained", help="Pretrained weights (see attnsweep models)."),
    selection_metric: str = typer.Option("balanced_accuracy", "--selection-metric"),
    split: str = typer.Option("repeat-0", "--split", help="Split name (search-K, repeat-K), or K for repeat-K."),
    seed: int = typer.Option(0, "--seed"),
    loader_workers: int = typer.Option(0, "--loader-workers", help="DataLoader processes per rank."),
    executor: str = typer.Option("debug", "--executor", help="debug, local or slurm."),
    workers: int = typer.Option(1, "--workers", help="local: processes (DDP ranks)."),
    partition: str = typer.Option(None, "--partition"),
    nodes: int = typer.Option(1, "--nodes"),
    tasks_per_node: int = typer.Option(1, "--tasks-per-node"),
    gpus_per_node: int = typer.Option(0, "--gpus-per-node"),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task"),
    mem_gb: float = typer.Option(None, "--mem-gb"),
    timeout_min: int = typer.Option(60, "--timeout-min", help="Time limit of one job (slurm and local)."),
    account: str = typer.Option(None, "--account"),
    qos: str = typer.Option(None, "--qos"),
    constraint: str = typer.Option(None, "--constraint"),
    signal_delay_s: int = typer.Option(90, "--signal-delay-s"),
    sbatch: list[str] = typer.Option([], "--sbatch", help="Extra sbatch flag KEY=VALUE."),
    out: Path = typer.Option(..., "--out", help="Output folder: data/ and trials/ go here."),
) -> None:
    """Train one trial on one split and print the path of its result.json."""
    from pydantic import ValidationError

    from attnsweep.data import DatasetSpec, prepare
    from attnsweep.data.errors import DataError
    from attnsweep.pipelines.config.executor import ExecutorSpec
    from attnsweep.pipelines.trial.executors import submit, validate
    from attnsweep.pipelines.trial.folder import TrialFolder
    from attnsweep.pipelines.config.errors import one_line
    from attnsweep.pipelines.config.trial_config import TrialConfigError, parse

    try:
        spec = DatasetSpec.parse(dataset).model_dump(mode="json")
    except ValidationError as err:
        _fail(one_line(err, f"--dataset {dataset}"))
    try:
        spec["options"] = _key_values(dataset_option, "--dataset-option")
        cfg = parse({
            "model": model, "dataset": spec, "split": f"repeat-{split}" if split.isdigit() else split,
            "image_size": image_size, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
            "batch_size": batch_size, "optimizer": optimizer, "momentum": momentum, "schedule": schedule,
            "step_size": step_size, "milestones": [m for m in milestones.split(",") if m],
            "gamma": gamma, "augmentation": augmentation, "seed": seed, "pretrained": pretrained,
            "precision": precision, "selection_metric": selection_metric, "num_workers": loader_workers,
            "data_dir": str(out / "data"),
        }, source="attnsweep train")
        ex = ExecutorSpec(kind=executor, workers=workers, slurm=dict(
            partition=partition, nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task, mem_gb=mem_gb, timeout_min=timeout_min, account=account, qos=qos,
            constraint=constraint, signal_delay_s=signal_delay_s, extra=_key_values(sbatch, "--sbatch")))
        trial_dir = out / "trials" / "train" / cfg.model / cfg.hash()
        validate(cfg, ex)
        prepare(cfg.dataset, cfg.splits, cfg.image_size, out, ood=cfg.ood)
        job = submit(cfg, trial_dir, ex)
    except ValidationError as err:  # the executor options
        _fail(one_line(err, "attnsweep train: executor"))
    except (TrialConfigError, DataError) as err:
        _fail(str(err))
    typer.echo(f"submitted {executor} job {job.job_id}: {trial_dir}", err=True)
    job.exception()  # waits; unlike result(), never drops a debug job into pdb
    folder = TrialFolder(trial_dir)
    result = folder.result() or {"status": "failed"}
    if result["status"] == "failed":
        error = " ".join(str(result.get("error", "no result.json")).splitlines())
        _fail(f"trial failed: {error} (logs: {folder.submitit_dir})", code=1)
    typer.echo(str(folder.result_file))
