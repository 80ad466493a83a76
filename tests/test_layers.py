"""The package layout holds: loading and validating a study imports none of the heavy libraries
(torch, Ray, scipy, statsmodels, submitit), so `--dry-run` and a config error stay fast; imports
inside pipelines/ point one way (import-linter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "scipy", "statsmodels", "submitit", "sklearn", "timm", "mlflow")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("study", ["demo", "seed002_isic", "demo_slurm"])
def test_loading_a_study_imports_no_heavy_library(study):
    loaded = _imported_after(
        "from pathlib import Path\n"
        "from attnsweep.pipelines.config.study import load_study\n"
        f"s = load_study(Path('studies/{study}.yaml'))\n"
        "assert s.variants and s.executor.kind and s.stats.metrics")
    assert "attnsweep" in loaded and "pydantic" in loaded  # the probe did load and validate
    assert [m for m in HEAVY if m in loaded] == []


def test_a_bad_study_fails_without_importing_torch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "studies" / "demo.yaml").read_text().replace("variants: [resnet18,", "variants: [nosuchnet,"))
    loaded = _imported_after(
        "from pathlib import Path\n"
        "from attnsweep.pipelines.config.study import StudyError, load_study\n"
        "try:\n"
        f"    load_study(Path({str(bad)!r}))\n"
        "except StudyError as e:\n"
        "    assert 'nosuchnet' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')")
    assert [m for m in HEAVY if m in loaded] == []


def test_imports_point_one_way():
    """import-linter's contracts in pyproject.toml: cli > sweep > report > store > trial > config
    inside pipelines/, and data/ and models/ below pipelines/, checked as `make lint` runs them:
    `lint-imports` from the checkout (attnsweep/ links to the top-level folders)."""
    # as a module: the console script is missing in a venv that borrows packages via .pth
    lint = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    proc = subprocess.run(lint, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_a_tune_actor_submits_local_jobs_without_importing_torch(tmp_path):
    """The trainable's actor only submits jobs and follows their folders; torch, timm (the model
    probe, done by the driver's preflight) and the trainer's scikit-learn are for the job processes.
    An actor started beside busy jobs took 25-55 s to submit its first job when it imported them
    (bench/scheduler.py). The probe runs the actor's own start (its trials' configurations, the
    local executor); only the submission itself is left out (it starts a training job)."""
    loaded = _imported_after(
        "from pathlib import Path\n"
        "from attnsweep.pipelines.config.study import load_study\n"
        "from attnsweep.pipelines.sweep.tune_trainable import SplitsTrainable\n"
        "from attnsweep.pipelines.trial import executors\n"
        f"out = Path({str(tmp_path)!r})\n"
        "study = load_study(Path('studies/demo.yaml'))\n"
        "submitted = []\n"
        "def submit(cfg, trial_dir, executor, jobs_at_once, name):\n"
        "    executors.make_executor(executor, Path(trial_dir) / 'submitit', name)\n"
        "    submitted.append(cfg.split)\n"
        "executors.submit = submit\n"
        "actor = object.__new__(SplitsTrainable)\n"
        "actor.setup({'lr': 0.01, 'weight_decay': 0.0}, study=study, phase='search', variant='resnet18+se',\n"
        "            out=str(out), data_dir=str(out / 'data'), executor=study.variant('resnet18+se').executor)\n"
        "actor._start()\n"
        "assert submitted == ['search-0', 'search-1'], submitted")
    assert "ray" in loaded and "submitit" in loaded  # the probe did load the trainable and an executor
    assert [m for m in ("torch", "timm", "sklearn", "scipy") if m in loaded] == []
