"""Calibration, power and run time of the feature-usage tests (`attnsweep features`) on synthetic
predictions whose truth is exact (`ci_tests.synthetic_predictions`):

- calibration: 100 draws of a feature the prediction does not use (random, and tied to the label)
  -> the rejection rate at alpha 0.01 of each test (calibrated: about 1 %; the binomial 95 % range
  for 100 draws at 1 % is 0..4 rejections);
- power: 100 draws of a prediction that depends on the feature beyond the label, at the demo's
  test-set size (80) -> the rejection rate of each test and of the majority;
- run time of one test at n = 500 and n = 2,000 (a 3-class softmax, one continuous feature).

    .venv/bin/python bench/feature_usage.py --draws 100 --n 200 --out bench/feature_usage.png
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from attnsweep.pipelines.report import ci_tests
from attnsweep.pipelines.report.features import FeatureSettings, feature_usage, majority


def rates(draws: int, n: int, tests: list[str], **case) -> dict[str, float]:
    settings = FeatureSettings(columns=["f"], tests=tests)
    rejected = {t: 0 for t in [*tests, "majority"]}
    for seed in range(draws):
        f, probs, y = ci_tests.synthetic_predictions(n, 1000 + seed, **case)
        rows = pd.DataFrame(feature_usage(pd.Series(f, name="f"), probs, y, 3, settings))
        for r in rows.itertuples():
            rejected[r.test] += r.rejected
        rejected["majority"] += majority(rows)
    return {t: k / draws for t, k in rejected.items()}


def seconds(test: str, n: int) -> float:
    f, probs, y = ci_tests.synthetic_predictions(n, 0)
    start = time.perf_counter()
    ci_tests.ci_test(test, f[:, None], probs, np.eye(3)[y])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--n", type=int, default=200, help="rows per calibration draw")
    ap.add_argument("--power-n", type=int, default=80, help="rows per power draw (the demo's test set)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[500, 2000], help="n for the run times")
    ap.add_argument("--tests", nargs="*", default=list(ci_tests.ALL_TESTS))
    ap.add_argument("--out", default=None, help="a PNG of the rates")
    a = ap.parse_args()
    tests = [t for t in a.tests if t not in ci_tests.unavailable(a.tests)]
    if "cmiknn" in tests:  # numba compiles CMIknn on its first call (per input shape): not timed
        seconds("cmiknn", 30)
    table = {}
    for name, case, n in [("random column (H0)", {"label_tied": False}, a.n),
                          ("label-tied column (H0)", {"label_tied": True}, a.n),
                          ("used column (H1, dependence 1.5)", {"dependence": 1.5}, a.power_n)]:
        start = time.perf_counter()
        table[f"{name}, n={n}"] = rates(a.draws, n, tests, **case)
        print(f"{name}, n={n}, {a.draws} draws: "
              + ", ".join(f"{t} {r:.0%}" for t, r in table[f"{name}, n={n}"].items())
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    for n in a.sizes:
        print(f"run time at n={n}: " + ", ".join(f"{t} {seconds(t, n):.1f} s" for t in tests), flush=True)
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        df = pd.DataFrame(table).T
        ax = df.plot.bar(figsize=(9, 4), rot=0)
        ax.axhline(0.01, color="k", ls="--", lw=1, label="alpha 0.01")
        ax.set_ylabel(f"rejection rate over {a.draws} draws")
        ax.set_title("Feature-usage tests: calibration (H0) and power (H1)")
        ax.legend(fontsize=8)
        plt.tight_layout()
        plt.savefig(a.out, dpi=100)
        print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
