"""The driver's progress view without a terminal (a log file, a SLURM job): a line per finished
epoch and per ended trial, a summary line whenever a quiet interval passed, all naming the
study's selection metric; the table at the end."""
from __future__ import annotations

import io
import re
import time

from rich.console import Console

from attnsweep.pipelines.sweep.progress import Progress

PLAN = {("resnet18", "search"): 3, ("resnet18", "repeat"): 5}


def _log() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_a_redirected_log_gets_a_line_per_epoch_and_per_ended_trial():
    console, buf = _log()
    with Progress("demo", PLAN, console, metric="auc_roc") as p:
        p.started("resnet18", "search")
        p.result("resnet18", "search", 0.61, epoch=1, label="lr=0.01 wd=0")
        p.result("resnet18", "search", 0.72, epoch=2, label="lr=0.01 wd=0")
        p.ended("resnet18", "search", "ok", 0.72)
    lines = buf.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d resnet18 search lr=0.01 wd=0: epoch 1, val auc_roc 0.6100 \| 0/3 ended \| "
                        r"trials 0/8 ended, 1 running, elapsed 0:00:0\d", lines[0]), lines[0]
    assert "epoch 2, val auc_roc 0.7200" in lines[1]
    assert lines[2].endswith("resnet18 search: a trial ended ok (val auc_roc 0.7200); 1/3 ended")
    assert "best val auc_roc" in buf.getvalue()  # the closing table's column
    assert "balanced" not in buf.getvalue()


def test_the_summary_has_best_elapsed_and_an_estimate_once_trials_ended():
    p = Progress("demo", PLAN, Console(file=io.StringIO(), force_terminal=False), metric="auc_roc")
    p.already_done("resnet18", "search", 2, 0.7)
    p.started("resnet18", "search")
    p.t0 -= 120  # as if the study had run for two minutes
    line = p.summary_line()
    assert re.fullmatch(r"trials 2/8 ended, 1 running, best val auc_roc 0.7000 \(resnet18 search\), "
                        r"elapsed 0:02:0\d, ~0:06:0\d left", line), line


def test_a_quiet_log_gets_a_summary_line_after_the_interval():
    console, buf = _log()
    with Progress("demo", PLAN, console, summary_every_s=0.2) as p:
        p.started("resnet18", "search")
        deadline = time.monotonic() + 30
        while "trials 0/8 ended, 1 running" not in buf.getvalue():
            assert time.monotonic() < deadline, buf.getvalue()
            time.sleep(0.05)


def test_a_stalled_job_is_a_line_and_counted_until_it_advances():
    console, buf = _log()
    p = Progress("demo", PLAN, console)
    p.started("resnet18", "repeat")
    p.stalled("resnet18", "repeat", "resnet18 repeat trial abc (job 7): no new epoch line for 0:12:00 (epoch 3); "
                                    "stalled", 1)
    assert buf.getvalue().rstrip().endswith("resnet18 repeat trial abc (job 7): no new epoch line for 0:12:00 "
                                            "(epoch 3); stalled")
    assert p.summary_line().startswith("trials 0/8 ended, 1 running (1 stalled), elapsed")
    assert p._table().columns[4].header == "stalled" and list(p._table().columns[4].cells) == ["0", "1"]
    p.unstalled("resnet18", "repeat")  # it wrote an epoch line again, or ended
    assert p.summary_line().startswith("trials 0/8 ended, 1 running, elapsed")
