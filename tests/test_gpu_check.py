"""bench/gpu_check.py in its CPU smoke mode: the checks the GPU run makes (attnsweep's trainer next
to a bare loop, the trainer's epoch loop with device-side augmentation, a 2-rank gloo DDP job on
the local executor, a study end to end on real HAM10000 images), small and on the CPU; its time
budget; its bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from attnsweep.pipelines.store import parquet_store

REPO = Path(__file__).resolve().parents[1]
HAM = next((p / "shared" / "data" / "ham10000" for p in REPO.parents if (p / "shared" / "data" / "ham10000").is_dir()),
           None)
needs_ham = pytest.mark.skipif(HAM is None, reason="no ../shared/data/ham10000 beside the checkout")


def gpu_check(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def check_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """{check name: (status, message)} of the PASS/FAIL/SKIP lines."""
    out = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "SKIP"):
            name, _, message = rest.partition(": ")
            out[name] = (status, message)
    return out


@pytest.mark.slow
@needs_ham
def test_cpu_smoke_mode_runs_every_check(tmp_path):
    """`--quick` (resnet18 only, a 1-epoch study): the whole smoke run took 105 s on this 2-core machine."""
    proc = gpu_check("--cpu", "--quick", "--ham10000", str(HAM), "--budget-s", "1200", "--out", str(tmp_path))
    lines = check_lines(proc.stdout)
    assert proc.stdout.startswith("device: no CUDA"), proc.stdout
    compiled = {"trainer resnet18 compile=on"}
    expected = ["data", "trainer resnet18 compile=off", "pipeline none", "pipeline flip_rot20", "pipeline perez2018",
                "ddp", "study", *compiled]
    assert sorted(lines) == sorted(expected), proc.stdout
    for name, (status, message) in lines.items():
        assert status == ("SKIP" if name in compiled else "PASS"), f"{name}: {status} {message}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and "summary: 7 PASS, 0 FAIL, 0 SKIP" in proc.stdout

    # What the lines report is on disk: the DDP trial ran 2 gloo ranks, the study recorded its
    # 6 trials in Parquet with no GPU time, and wrote its report.
    ddp = json.loads((tmp_path / "ddp-2" / "result.json").read_text())
    assert ddp["status"] == "ok" and ddp["world_size"] == 2 and ddp["gpu_seconds"] == 0
    assert "gloo world size 2" in lines["ddp"][1]
    rows = parquet_store.read(tmp_path / "study").to_pandas().drop_duplicates("trial_id")
    assert sorted(rows["variant"]) == ["resnet18"] * 3 + ["resnet18+se"] * 3
    assert (rows["status"] == "ok").all() and (rows["gpu_seconds"] == 0).all()
    assert (tmp_path / "study" / "report" / "index.html").is_file()
    assert "6/6 trials ok" in lines["study"][1] and "GPU-hours recorded 0.0000" in lines["study"][1]


@needs_ham
def test_a_spent_budget_skips_the_checks_and_fails():
    proc = gpu_check("--cpu", "--quick", "--budget-s", "0.001", timeout=300)
    lines = check_lines(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lines and {status for status, _ in lines.values()} == {"SKIP"}, proc.stdout
    assert "budget" in lines["data"][1]


def test_a_folder_without_the_metadata_is_one_line_and_exit_2(tmp_path):
    proc = gpu_check("--ham10000", str(tmp_path), timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: --ham10000 {tmp_path}: no HAM10000_metadata.csv there (the HAM10000 folder)"]
