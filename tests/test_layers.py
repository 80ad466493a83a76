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
import yaml

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


@pytest.mark.slow
def test_the_driver_follows_its_jobs_without_importing_torch(tmp_path):
    """The driver runs a whole study (stand-in jobs, local executor) and never holds torch, timm or the
    trainer's scikit-learn: they are the jobs' (the model probe runs in a process of its own). At a
    cluster's 256 jobs the driver has the 1 CPU and 4 GB of slurm/sweep.sbatch (bench/driver_scale.py)."""
    study = yaml.safe_load((ROOT / "studies" / "demo.yaml").read_text())
    study["dataset"]["options"]["n"] = 64
    study["search"]["trials"] = 1
    study["splits"].update(search_splits=1, repeat_splits=1)
    study.update(out_dir=str(tmp_path / "out"), ood={}, features=None)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    loaded = _imported_after(
        "import os\n"
        "from pathlib import Path\n"
        "os.environ['ATTNSWEEP_TRAINER'] = 'attnsweep.pipelines.trial.standin'\n"
        "os.environ['ATTNSWEEP_STANDIN_EPOCH_S'] = '0'\n"
        "from attnsweep.pipelines.config.study import load_study\n"
        "from attnsweep.pipelines.sweep.orchestrate import run_study\n"
        f"run_study(load_study(Path({str(path)!r})), report=False, poll_s=0.2)\n"
        f"assert len(list(Path({str(tmp_path / 'out' / 'results')!r}).glob('*.parquet'))) > 0")
    assert "submitit" in loaded and "mlflow" in loaded  # the probe did run a study
    assert [m for m in ("torch", "timm", "sklearn") if m in loaded] == []
