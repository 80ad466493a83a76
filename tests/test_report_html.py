"""The HTML report in headless Chromium (Debian `chromium`): it renders, the screenshot is not
blank, and the DOM holds the results table with every variant of the study."""
from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chromium import chromium, run_chromium
from PIL import Image

from attnsweep.pipelines.report.build import build_report

GOLDEN = Path(__file__).parent / "golden" / "study"


class ResultsRows(HTMLParser):
    """The data-variant of each row of <table id="results-table">, and its cell texts."""

    def __init__(self):
        super().__init__()
        self.in_table, self.rows, self.cells = False, {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "results-table":
            self.in_table = True
        elif self.in_table and tag == "tr" and "data-variant" in a:
            self.cells = self.rows.setdefault(a["data-variant"], [])

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False
        if tag == "tr":
            self.cells = None

    def handle_data(self, data):
        if self.cells is not None and data.strip():
            self.cells.append(data.strip())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    chromium()
    out = tmp_path_factory.mktemp("html") / "study"
    shutil.copytree(GOLDEN, out)
    return build_report(out, explain=False)


def test_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    proc = run_chromium(tmp_path, "--window-size=1400,1000", "--hide-scrollbars",
                        f"--screenshot={shot}", (report / "index.html").as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert px.shape == (1000, 1400)
    dark = (px < 100).mean()  # text and table rules
    assert 0.005 < dark < 0.5, dark
    assert px.std() > 20
    # the results table sits in the upper part of the page: its rows are text-dense there
    assert (px[150:700] < 100).mean() > 0.01


def test_dom_holds_the_results_table_with_every_variant(report, tmp_path):
    proc = run_chromium(tmp_path, "--dump-dom", (report / "index.html").as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = ResultsRows()
    parser.feed(proc.stdout)
    variants = set(pd.read_parquet(GOLDEN / "results")["variant"])
    assert set(parser.rows) == variants
    # the significant, worse resnet18+ela shows its arrow; the diverged run its dagger
    assert "↓" in parser.rows["resnet18+ela"]
    assert any("†1" in c for c in parser.rows["resnet18+ga"])
    # the Bayesian columns beside the p-values, and a posterior figure per metric and dataset
    assert "<th class=\"num\">P(better)</th>" in proc.stdout and ">P(equiv.)<" in proc.stdout
    assert proc.stdout.count('alt="posterior_') == 4
