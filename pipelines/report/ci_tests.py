"""Conditional independence tests for the feature-usage analysis (paper 002 Sec. 3.3): does X
depend on Y given Z? Each test comes from a maintained library, with its hyper-parameters pinned
here (recorded with every result) and a fixed seed:

- `kci`: KCI (Zhang et al. 2011) from causal-learn, the kernel conditional test closest to the
  paper's cHSIC (Fukumizu et al. 2007: both test the conditional cross-covariance operator with
  Gaussian kernels; KCI's null distribution has a closed-form gamma approximation).
- `rcot`: RCoT (Strobl et al. 2019) from causal-learn (`RCIT(rcit=False)`): random Fourier features
  approximate KCI in O(n).
- `cmiknn`: CMIknn (Runge 2018) from tigramite, GPL-3.0, so an optional extra
  (`pip install attnsweep[features]`): k-nearest-neighbour conditional mutual information with a
  local-permutation null.

The library classes are called directly (not causal-learn's `CIT` wrapper): the wrapper returns
no statistic and RCIT through it takes one column per variable, while X (a softmax vector) and Z
(one-hot label) have several."""
from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

# Pinned hyper-parameters, passed to the library as they stand and stored with every result row.
PARAMS: dict[str, dict] = {
    # Gaussian kernels; widths by KCI's empirical rule (sigma 1.2 / 0.7 / 0.4 for n < 200 / < 1200 /
    # more, on z-scored data, scaled by the dimension of Z); gamma approximation of the null.
    "kci": {"kernelX": "Gaussian", "kernelY": "Gaussian", "kernelZ": "Gaussian", "est_width": "empirical",
            "approx": True, "use_gp": False},
    # 100 random Fourier features for Z, 5 for X and Y (Strobl et al.'s defaults); widths by the
    # median heuristic on the first 500 rows; Lindsay-Pilla-Basak approximation of the null.
    "rcot": {"rcit": False, "num_f": 100, "num_f2": 5, "approx": "lpd4"},
    # k = 10 % of n neighbours, 5 neighbours for the local permutations, 200 permutations (p-values
    # step by 1/201, fine enough at alpha 0.01). 'standardize', not tigramite's default 'ranks':
    # ranking a one-hot label spreads one class over many ranks, so Z-neighbours would cross classes.
    "cmiknn": {"knn": 0.1, "shuffle_neighbors": 5, "sig_samples": 200, "transform": "standardize",
               "significance": "shuffle_test"},
}
LIBRARY = {"kci": "causal-learn", "rcot": "causal-learn", "cmiknn": "tigramite"}


@dataclass(frozen=True)
class CIResult:
    statistic: float
    p_value: float


@contextlib.contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """causal-learn draws from numpy's global generator: seed it, and put the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _kci(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int) -> CIResult:
    from causallearn.utils.KCI.KCI import KCI_CInd

    with _numpy_global_seed(seed):
        p, stat = KCI_CInd(**PARAMS["kci"]).compute_pvalue(x, y, z)
    return CIResult(float(stat), float(p))


def _rcot(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int) -> CIResult:
    from causallearn.utils.RCIT.RCIT import RCIT

    with _numpy_global_seed(seed):
        p, stat = RCIT(**PARAMS["rcot"]).compute_pvalue(x, y, z)
    return CIResult(float(stat), float(p))


def _cmiknn(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int) -> CIResult:
    from tigramite.independence_tests.cmiknn import CMIknn

    test = CMIknn(**PARAMS["cmiknn"], seed=seed, workers=1)
    stat, p = test.run_test_raw(x, y, z)
    return CIResult(float(stat), float(p))


_RUN: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, int], CIResult]] = {
    "kci": _kci, "rcot": _rcot, "cmiknn": _cmiknn}
_MODULE = {"kci": "causallearn.utils.KCI.KCI", "rcot": "causallearn.utils.RCIT.RCIT",
           "cmiknn": "tigramite.independence_tests.cmiknn"}


def unavailable(tests: list[str] | tuple[str, ...]) -> dict[str, str]:
    """test -> why it cannot run here (its library, or one the library needs, is not installed)."""
    out = {}
    for t in tests:
        try:
            importlib.import_module(_MODULE[t])
        except ImportError as e:
            extra = " (pip install attnsweep[features])" if LIBRARY[t] == "tigramite" else ""
            out[t] = f"{LIBRARY[t]} not importable: {e}{extra}"
    return out


def library_version(test: str) -> str:
    return f"{LIBRARY[test]} {importlib.metadata.version(LIBRARY[test])}"


def ci_test(test: str, x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int = 0) -> CIResult:
    """H0: x independent of y given z. Arrays are (n, d), float; no constant column (the
    libraries z-score each column)."""
    return _RUN[test](np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(z, np.float64), seed)


def synthetic_predictions(n: int, seed: int, dependence: float = 0.0, label_tied: bool = True,
                          classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ground-truth case for validating the analysis (tests, bench/feature_usage.py): labels y,
    a feature f and softmax predictions. f follows the label (as age or skin tone follow the
    diagnosis) when `label_tied`; the prediction follows the label, and f with weight `dependence`
    beyond it. So H0 "f independent of the prediction given y" holds exactly when dependence is 0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    f = rng.normal(size=n) + (1.5 * y if label_tied else 0)
    logits = 2 * np.eye(classes)[y] + rng.normal(size=(n, classes))
    logits[:, 0] += dependence * (f - f.mean())
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return f, probs, y
