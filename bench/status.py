"""`attnsweep status` on a study of 500 trials: a folder written through the trial-folder API
(tests/status_setup.py: 4 variants x (50 search configurations x 2 splits + 25 repeat splits),
some repeats still running), then the status read in-process (after the imports) and the command
run as a subprocess. Target: under a second for the read. Prints both times.

    .venv/bin/python bench/status.py [--repeat 3]"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from status_setup import study_folder

    from attnsweep.pipelines.config.study import load_study
    from attnsweep.pipelines.sweep.status import status

    variants = "[resnet18,resnet18+se,resnet18+ga,resnet18+cbam]"
    study = load_study(REPO / "studies" / "demo.yaml", [f"variants={variants}", "search.trials=50",
                                                         "splits.search_splits=2", "splits.repeat_splits=25"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench-status"
        t0 = time.perf_counter()
        study_folder(study, out, search_done=50, repeats_done=23, running=2)
        trials = len(list(out.glob("trials/*/*/*/config.json")))
        print(f"built {trials} trial folders in {time.perf_counter() - t0:.1f} s")
        reads, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            st = status(out)
            reads.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f"status read ({trials} trials, state {st.state}): wall best {min(reads):.3f} s (runs "
              f"{', '.join(f'{r:.3f}' for r in reads)} s), CPU best {min(cpu):.3f} s; target 1 s: ratio "
              f"{min(reads) / 1.0:.2f} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        t0 = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).with_name("attnsweep")), "status", str(out), "--json"],
                              capture_output=True, text=True)
        print(f"`attnsweep status --json` as a command (imports included): {time.perf_counter() - t0:.2f} s, "
              f"exit {done.returncode}")


if __name__ == "__main__":
    main()
