"""Helpers of the study tests: the demo study shrunk for a test (fewer images, configurations,
splits and epochs; the same variants, executor and phases), the `attnsweep` command run as a real
subprocess, and the cleanup of what a SIGKILLed driver leaves behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from attnsweep.pipelines.trial import standin
from attnsweep.pipelines.trial.folder import CONFIG, TrialFolder

REPO = Path(__file__).resolve().parents[1]
ATTNSWEEP = str(Path(sys.executable).with_name("attnsweep"))
# jobs run the stand-in trainer (`pipelines/trial/standin.py`: epoch lines and a result through
# `TrialFolder`, no torch, 0.2 s epochs) where a test is about the driver, not the training
STANDIN = standin.env(0.2)


def shrunk_study(tmp_path: Path, base: str = "demo.yaml", name: str = "shrunk", n_variants: int = 2,
                 **overrides) -> Path:
    """`studies/<base>` at test size (its first `n_variants`), written to `tmp_path/<name>.yaml`."""
    study = yaml.safe_load((REPO / "studies" / base).read_text())
    study["name"] = name
    study["dataset"]["options"]["n"] = 96
    for ood in study.get("ood", {}).values():
        ood["options"]["n"] = 24
    study["variants"] = study["variants"][:n_variants]
    study["train"].update(epochs=2, batch_size=16)
    study["search"]["trials"] = 2
    study["splits"].update(search_splits=2, repeat_splits=2)
    study["stats"] = {"explain_images": 2}
    for key, value in overrides.items():
        study[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def expected_trainings(study_file: Path) -> int:
    """variants x (configurations x search splits + repeat splits)"""
    from attnsweep.pipelines.config.study import load_study

    s = load_study(study_file)
    return len(s.variants) * (s.search.n_configs() * s.splits.search_splits + s.splits.repeat_splits)


def run_attnsweep(*args: str, env: dict | None = None, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ATTNSWEEP, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def trial_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "trials").glob(f"*/*/*/{CONFIG}"))


def jobs_of(trial_dir: Path) -> list[str]:
    return TrialFolder(trial_dir).job_ids()


def epochs_of(trial_dir: Path) -> list[int]:
    """The epochs in `metrics.jsonl` (a line still being written is not one yet)."""
    return [e["epoch"] for e in TrialFolder(trial_dir).epochs()]


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_pids(pids: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is left: only the given pids, never by name."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


class Driver:
    """`attnsweep run` in the background; `kill()` SIGKILLs only the driver (its Ray runtime and
    jobs are left to fend for themselves, as after a crash); `cleanup()` ends what is still left
    of its process tree."""

    def __init__(self, *args: str, env: dict | None = None, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen([ATTNSWEEP, *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=REPO)
        self.tree: set[int] = set()

    def kill(self) -> None:
        self.tree = descendants(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        kill_pids(self.tree)
        self.log.close()
