"""The driver's signal handler (`orchestrate.as_interrupt`), with real signals to this process: its
first step (cancelling the jobs) runs once and to its end, even when more signals come meanwhile
(a second Ctrl-C, scancel's SIGTERM with the shell's), and the interrupt follows it. The study-level
behaviour is tested in test_study_interrupt.py and test_orchestrate_slurm.py (plain scancel)."""
from __future__ import annotations

import os
import signal

import pytest

from attnsweep.pipelines.sweep.orchestrate import as_interrupt


def test_a_signal_while_the_first_step_runs_is_held_back_until_it_ends():
    steps = []

    def first():
        steps.append("start")
        os.kill(os.getpid(), signal.SIGINT)  # delivered before kill() returns: the handler runs again here
        steps.append("end")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), as_interrupt(signal.SIGTERM, signal.SIGINT, first=first):
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("not interrupted")
    assert steps == ["start", "end"]  # once, not cut short, and the interrupt came after it
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failing_first_step_still_interrupts_and_a_later_signal_interrupts_the_unwinding():
    calls = []

    def first():
        calls.append("first")
        raise OSError("sacct: connection refused")

    with as_interrupt(signal.SIGTERM, first=first):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # e.g. a second Ctrl-C while Ray shuts down
            os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["first"]
