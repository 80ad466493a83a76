"""`attnsweep train`: one trial on one split, through an executor; prints its result.json path.

Its options are generated from the fields of `TrialConfig` and of the executor's
`SlurmResources` (name, type, default, help from the field's description): a new training setting
is a new option without an edit here. Only what the models do not hold is written out: the
dataset (`--dataset`, `--dataset-option`), the executor kind and ranks, `--sbatch`, `--out`."""
from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic.fields import FieldInfo

from attnsweep.pipelines.config.executor import SlurmResources
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.trial.study_paths import StudyPaths

# TrialConfig fields set from other options (--dataset, --out) or that a single run leaves alone.
NOT_OPTIONS = {"dataset", "ood", "splits", "data_dir", "extra", "attentions"}  # attentions: installed ones only
# Defaults of a quick single run where they differ from a study's (TrialConfig's) defaults.
DEFAULTS = {"epochs": 10, "lr": 0.1, "weight_decay": 1e-4, "batch_size": 32, "split": "repeat-0"}
FLAGS = {"num_workers": "--loader-workers"}  # `--workers` is the executor's
HELP = {"split": "Split name (search-K, repeat-K), or K for repeat-K.",
        "timeout_min": "Time limit of one job (default: 60 for slurm, none for local)."}


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


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    """A typer option for one model field. Literal choices and tuples are passed as text (a tuple
    comma-separated) and validated by the model, so a bad value is its one-line error."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    optional = typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1
    base = args[0] if optional else ann
    help_text = HELP.get(name) or _sentence(field.description or "")
    if typing.get_origin(base) is Literal:
        choices = ", ".join(map(str, typing.get_args(base)))
        help_text, base = f"{help_text} One of: {choices}.".strip(), str
    elif typing.get_origin(base) is tuple:
        help_text, base = f"{help_text} Comma-separated.".strip(), str
    default = DEFAULTS.get(name, field.default)
    if field.is_required() and name not in DEFAULTS:
        default = ...
    elif isinstance(default, tuple):
        default = ",".join(map(str, default))
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[base] if optional else base,
                             default=typer.Option(default, flag, help=help_text or None, show_default=True))


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _fields(model: type) -> dict[str, FieldInfo]:
    return {name: f for name, f in model.model_fields.items() if name not in NOT_OPTIONS}


TRIAL_FIELDS, SLURM_FIELDS = _fields(TrialConfig), _fields(SlurmResources)
_OWN = [  # the options no model holds
    inspect.Parameter("dataset", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("synthderm", "--dataset", help="synthderm or FORMAT:ROOT.")),
    inspect.Parameter("dataset_option", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                      default=typer.Option([], "--dataset-option", help="Format option KEY=VALUE (e.g. n=300).")),
    inspect.Parameter("executor", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("debug", "--executor", help="debug, local or slurm.")),
    inspect.Parameter("workers", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                      default=typer.Option(1, "--workers", help="local: processes (DDP ranks).")),
    inspect.Parameter("sbatch", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                      default=typer.Option([], "--sbatch", help="Extra sbatch flag KEY=VALUE.")),
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                      default=typer.Option(..., "--out", help="Output folder: data/ and trials/ go here.")),
]


def train(**options: Any) -> None:
    """Train one trial on one split and print the path of its result.json."""
    from pydantic import ValidationError

    from attnsweep.data import DatasetSpec, prepare
    from attnsweep.data.errors import DataError
    from attnsweep.pipelines.config.errors import one_line
    from attnsweep.pipelines.config.executor import ExecutorSpec
    from attnsweep.pipelines.config.trial_config import TrialConfigError, parse
    from attnsweep.pipelines.trial.executors import submit, validate
    from attnsweep.pipelines.trial.folder import TrialFolder

    dataset, out = options["dataset"], options["out"]
    try:
        spec = DatasetSpec.parse(dataset).model_dump(mode="json")
    except ValidationError as err:
        _fail(one_line(err, f"--dataset {dataset}"))
    trial = {name: options[name] for name in TRIAL_FIELDS}
    split = trial["split"]
    trial["split"] = f"repeat-{split}" if split.isdigit() else split
    for name, f in TRIAL_FIELDS.items():
        if typing.get_origin(f.annotation) is tuple:
            trial[name] = [v for v in trial[name].split(",") if v]
    try:
        spec["options"] = _key_values(options["dataset_option"], "--dataset-option")
        cfg = parse({**trial, "dataset": spec, "data_dir": str(StudyPaths(out).data_dir)}, source="attnsweep train")
        slurm = {name: options[name] for name in SLURM_FIELDS}
        ex = ExecutorSpec(kind=options["executor"], workers=options["workers"],
                          slurm={**slurm, "extra": _key_values(options["sbatch"], "--sbatch")})
        trial_dir = StudyPaths(out).trial_dir("train", cfg.model, cfg.hash())
        validate(cfg, ex)
        prepare(cfg.dataset, cfg.splits, cfg.image_size, out, ood=cfg.ood)
        job = submit(cfg, trial_dir, ex)
    except ValidationError as err:  # the executor options
        _fail(one_line(err, "attnsweep train: executor"))
    except (TrialConfigError, DataError) as err:
        _fail(str(err))
    typer.echo(f"submitted {options['executor']} job {job.job_id}: {trial_dir}", err=True)
    job.exception()  # waits; unlike result(), never drops a debug job into pdb
    folder = TrialFolder(trial_dir)
    result = folder.result() or {"status": "failed"}
    if result["status"] == "failed":
        error = " ".join(str(result.get("error", "no result.json")).splitlines())
        _fail(f"trial failed: {error} (logs: {folder.submitit_dir})", code=1)
    typer.echo(str(folder.result_file))


# typer reads the options from the signature: one per field, then the command's own.
_PARAMS = [_option(n, f) for n, f in {**TRIAL_FIELDS, **SLURM_FIELDS}.items()] + _OWN
train.__signature__ = inspect.Signature(_PARAMS)
train.__annotations__ = {p.name: p.annotation for p in _PARAMS}
