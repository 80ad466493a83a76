"""A real `mlflow server` on a free loopback port for a test module (sqlite store, proxied
artifacts). It runs in its own process group, which the finalizer stops (SIGTERM, then SIGKILL),
also when the test fails; the server's background job runner is off, so nothing outlives it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)  # the group of the server we started: its pid is the group id
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def start_server(root: Path, port: int) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on `port` with its store in `root` (a restart on the same root and port
    finds its runs again) -> (process, URI), once it answers /health; `stop_server` ends it."""
    log = (root / "server.log").open("a")
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    log.close()
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


stop_server = _stop


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    proc, uri = start_server(tmp_path_factory.mktemp("mlflow-server"), free_port())
    try:
        yield uri
    finally:
        _stop(proc)
