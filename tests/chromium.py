"""Headless Chromium (Debian `chromium`) for the tests that look at what a person sees: the HTML
report and the MLflow UI. A fresh profile per run; skipped where no chromium is installed unless
ATTNSWEEP_REQUIRE_CHROMIUM is set (CI sets it)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("ATTNSWEEP_REQUIRE_CHROMIUM"):
            pytest.fail("ATTNSWEEP_REQUIRE_CHROMIUM is set but no chromium binary is on PATH")
        pytest.skip("chromium not installed (apt-get install chromium); CI requires it")
    return exe


def run_chromium(tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a fresh profile per run
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)
