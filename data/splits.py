"""Stratified, grouped train/val/test splits of a dataset's pool.

scikit-learn's `StratifiedGroupKFold` does the hard part (no group in two folds, class proportions
kept per fold). Fractions are whole numbers of its folds: with k folds, round(test * k) folds are the
test set, round(val * k) the validation set and the rest the training set, where k is the smallest
fold count that makes both fractions whole (e.g. 10 for 0.1 / 0.2, 20 for 0.15 / 0.15; at most 100).
A fixed test set of the dataset replaces the drawn one; fixed train and val sets too (a dataset's
official split: then nothing is drawn). Search and repeat splits draw their seeds
from two disjoint streams of the study seed, so no repeat split reuses a search split's seed."""
from __future__ import annotations

import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from attnsweep.data.errors import DataError
from attnsweep.data.spec import SplitSpec

STREAMS = {"search": 0, "repeat": 1}


def split_seed(study_seed: int, name: str) -> int:
    """The seed of split `search-i` / `repeat-i`: stream 0 or 1 of the study seed, element i."""
    phase, _, i = name.rpartition("-")
    return int(np.random.SeedSequence([study_seed, STREAMS[phase], int(i)]).generate_state(1)[0])


def fold_count(*fractions: float, max_folds: int = 100) -> int:
    for k in range(2, max_folds + 1):
        if all(abs(f * k - round(f * k)) < 1e-6 and round(f * k) >= 1 for f in fractions if f > 0):
            return k
    return max_folds


def assign_roles(labels: np.ndarray, groups: np.ndarray, val: float, test: float, seed: int) -> np.ndarray:
    """Role ("train" | "val" | "test") of each pool sample for one split."""
    k = fold_count(val, test)
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise DataError(f"the pool has {n_groups} groups, too few for {k} folds "
                        f"(val {val}, test {test}); use rounder fractions or more data")
    largest = int(np.unique(labels, return_counts=True)[1].max()) if len(labels) else 0
    if largest < k:  # else sklearn's "n_splits=k cannot be greater than the number of members in each class"
        raise DataError(f"the largest class of the pool has {largest} images, too few for {k} folds "
                        f"(val {val}, test {test}); use rounder fractions or more data")
    # imported here: scikit-learn pulls in scipy, which loading a study file should not pay for
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    with warnings.catch_warnings():  # small classes: sklearn warns, the result is still grouped
        warnings.simplefilter("ignore", UserWarning)
        # one image per group (synthderm, CIFAR): StratifiedKFold gives the same guarantee, vectorised
        kind = StratifiedKFold if n_groups == len(groups) else StratifiedGroupKFold
        cv = kind(n_splits=k, shuffle=True, random_state=seed % 2**32)
        fold = np.empty(len(labels), np.int64)
        for j, (_, idx) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
            fold[idx] = j
    order = np.random.default_rng(seed).permutation(k)  # which folds play which role
    n_test, n_val = round(test * k), round(val * k)
    role_of_fold = np.empty(k, dtype=object)
    role_of_fold[order[:n_test]] = "test"
    role_of_fold[order[n_test:n_test + n_val]] = "val"
    role_of_fold[order[n_test + n_val:]] = "train"
    return role_of_fold[fold].astype(str)


def make_splits(records: pd.DataFrame, spec: SplitSpec, workers: int = 1) -> pd.DataFrame:
    """Rows (split, role, index) for every split of `spec`: `index` is the records row. Fixed sets
    (`fixed` = "test" or "ood:<name>") get their role in every split and are never drawn from.
    `workers` > 1 computes the splits in parallel (StratifiedGroupKFold is a Python loop over groups:
    about 1.5 s per split for HAM10000's 7,470 lesions on one core)."""
    pool = np.flatnonzero(records["fixed"].to_numpy() == "")
    fixed = np.flatnonzero(records["fixed"].to_numpy() != "")
    fixed_roles = records["fixed"].to_numpy()[fixed]
    labels = records["label"].to_numpy()[pool]
    groups = records["group"].to_numpy()[pool]
    test = 0.0 if (fixed_roles == "test").any() else spec.test_fraction
    val = 0.0 if (fixed_roles == "val").any() else spec.val_fraction
    tasks = [(labels, groups, val, test, split_seed(spec.seed, name)) for name in spec.names()]
    if len(pool) == 0:  # all fixed: every split is the same sets
        all_roles = [np.array([], dtype=str) for _ in tasks]
    elif workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("forkserver")  # safe beside threads (Ray, torch)
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx) as executor:
            all_roles = list(executor.map(assign_roles, *zip(*tasks)))
    else:
        all_roles = [assign_roles(*t) for t in tasks]
    out = []
    all_labels = records["label"].to_numpy()
    for name, roles in zip(spec.names(), all_roles):
        trained = np.concatenate([labels[roles == "train"], all_labels[fixed[fixed_roles == "train"]]])
        missing = set(all_labels[np.concatenate([pool, fixed[fixed_roles == "val"]])]) - set(trained)
        if missing:
            raise DataError(f"split {name}: class {sorted(missing)[0]!r} has no training image; "
                            "the pool is too small for these fractions")
        out.append(pd.DataFrame({"split": name, "role": np.concatenate([roles, fixed_roles]),
                                 "index": np.concatenate([pool, fixed])}))
    return pd.concat(out, ignore_index=True)
