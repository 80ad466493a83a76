"""Ctrl-C stops a study in seconds (issue 11, attack 5), with real local jobs (of the stand-in
trainer): a driver started with SIGINT ignored (as `cmd &` from a script leaves it) runs a search
with four jobs at once, each held after epoch 1 by the hold hook; SIGINT to the driver alone stops
all four jobs together and the driver exits 130, naming the cancelled jobs; none of them trains
on, `--resume` finishes."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from orchestrate_setup import ATTNSWEEP, REPO, STANDIN, descendants, epochs_of, kill_pids, run_attnsweep, shrunk_study, \
    trial_dirs
from survive_setup import counts, hold_env, held, wait_for

pytestmark = pytest.mark.slow


def test_sigint_stops_every_job_at_once_even_when_inherited_ignored(tmp_path):
    study = shrunk_study(tmp_path, name="ctrlc", n_variants=1, max_concurrent=4, max_failures=0,  # 4 jobs
                         features=None)  # the stand-in keeps no checkpoint to analyse
    out, hold, log = tmp_path / "out", tmp_path / "hold", tmp_path / "driver.log"
    env = {**os.environ, **hold_env(hold), **STANDIN}  # about signals, not training: the stand-in trainer
    with log.open("w") as f:
        driver = subprocess.Popen([ATTNSWEEP, "run", str(study), "--out", str(out), "--no-report"], stdout=f,
                                  stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    tree: set[int] = set()
    try:
        wait_for(lambda: len(held(hold)) == 4, "four search jobs to be held after epoch 1", timeout_s=900)
        tree = descendants(driver.pid)
        t0 = time.monotonic()
        driver.send_signal(signal.SIGINT)
        try:
            rc = driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the driver did not exit within 60 s of SIGINT: " + log.read_text()[-2000:])
        seconds = time.monotonic() - t0
        said = log.read_text()
        cancelled = [line for line in said.splitlines() if line.startswith("cancelled")]
        alive = [p for p in tree if subprocess.run(["ps", "-o", "args=", "-p", str(p)], capture_output=True,
                                                    text=True).stdout.count("submitit")]
        print(f"\nattack 5 (Ctrl-C): rc={rc} in {seconds:.1f} s; {cancelled}; {counts(out)}")
        assert rc == 130, said[-2000:]
        assert seconds < 30, f"the driver took {seconds:.0f} s to exit"  # was 30 s per local job
        # the driver's handler cancels them before Tune sees the interrupt, so it names all four
        assert cancelled and "cancelled 4 job(s)" in cancelled[0], said[-2000:]
        assert alive == [], "job processes outlived the driver"
        assert all(epochs_of(d) == [1] for d in trial_dirs(out))  # nobody trained on
    finally:
        if driver.poll() is None:
            driver.kill()
        kill_pids(tree)
    for release in held(hold):
        release.unlink()
    resumed = run_attnsweep("run", str(study), "--out", str(out), "--resume", "--no-report", env=STANDIN)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    c = counts(out)
    print(f"after --resume: {c}")
    assert c["duplicates"] == 0 and c["epochs"] == c["trainings"] * 2
