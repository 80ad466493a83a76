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


def test_imports_point_one_way(tmp_path):
    """import-linter's contracts in pyproject.toml: cli > sweep > report > store > trial > config
    inside pipelines/, and data/ and models/ below pipelines/. The repository maps `attnsweep.*`
    onto top-level folders (pyproject's package-dir), which import-linter cannot follow; it reads
    a tree of links that has the installed layout instead."""
    tree = tmp_path / "attnsweep"
    tree.mkdir()
    (tree / "__init__.py").symlink_to(ROOT / "attnsweep" / "__init__.py")
    for name in ("pipelines", "data", "models"):
        (tree / name).symlink_to(ROOT / name, target_is_directory=True)
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken." in proc.stdout
