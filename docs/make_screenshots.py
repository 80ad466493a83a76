"""Screenshots of a finished study in the MLflow UI, as the README shows them:

    python docs/make_screenshots.py runs/demo_small    # -> docs/mlflow_runs.png, docs/mlflow_report.png

Starts `mlflow server` on the study's own store (sqlite:///<out>/mlflow.db) on a free port, and
takes headless-Chromium screenshots (Playwright, `pip install attnsweep[docs]`, driving the
system's /usr/bin/chromium) of the runs table at the URL `attnsweep run` prints and of the
`report/index.html` artifact of the study's `report` run in MLflow's artifact view, scrolled to
the report's figures (embedded in the one HTML file)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from mlflow import MlflowClient

from attnsweep.pipelines.store.mlflow_summary import runs_url

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shots(runs: str, report: str, variants: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 640})
        page.goto(runs)
        page.get_by_text(" | ").nth(variants - 1).wait_for(timeout=120_000)  # every parent with its aggregate
        page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]').click()
        # the run names are cut at 190 px: the aggregates as columns, chosen once as a user would
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder(re.compile("search", re.I)).last.fill("test_balanced_accuracy")
        page.get_by_text(re.compile(r"^Metrics \(\d+\)$")).click()
        page.keyboard.press("Escape")
        page.locator('.ag-header-cell[col-id*="test_balanced_accuracy_mean"]').wait_for(timeout=30_000)
        page.screenshot(path=DOCS / "mlflow_runs.png")
        print(f"{DOCS / 'mlflow_runs.png'}  <-  {runs}")
        page.set_viewport_size({"width": 1500, "height": 1000})
        page.goto(report)
        frame = page.frame_locator("iframe.mlflow-html-iframe")
        frame.locator("#distributions").wait_for(timeout=120_000)
        frame.locator("#distributions").scroll_into_view_if_needed()
        frame.locator("#distributions ~ img").first.wait_for(timeout=60_000)
        page.screenshot(path=DOCS / "mlflow_report.png")
        print(f"{DOCS / 'mlflow_report.png'}  <-  {report}")
        browser.close()


def main(out: Path) -> None:
    store = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", "--backend-store-uri", store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("mlflow server did not start") from None
                time.sleep(0.5)
        client = MlflowClient(store)
        exp = client.get_experiment_by_name(yaml.safe_load((out / "study.yaml").read_text())["name"])
        (report,) = client.search_runs([exp.experiment_id], "tags.`attnsweep.kind` = 'study'")
        variants = len(yaml.safe_load((out / "study.yaml").read_text())["variants"])
        _shots(runs_url(base, exp.experiment_id),
               f"{base}/#/experiments/{exp.experiment_id}/runs/{report.info.run_id}/artifactPath/report/index.html"
               "?workflowType=machine_learning", 2 * variants)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
