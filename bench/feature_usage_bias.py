"""Feature usage of real trained models where the truth is known: synthderm with strong bias
(`bias_strength` 1: a colourful patch on half of the nevi, a ruler and dark corners on more
melanomas, hairs on more `other` lesions; skin tone, age and sex follow the label) against no bias
(0: the same features, independent of the label). A model that takes a shortcut uses its feature
in the first and not in the second; the metadata-only age and sex cannot be used at all.

For each strength: the data layer prepares the set (no label noise, so that a feature tied to the
clean label cannot reach the prediction through a noisy label), the real trainer trains `--model`
on `--splits` repeat splits, the selected weights predict the test set, and
`pipelines.report.features` tests every column (the same code as `attnsweep features`), with Y_hat
the softmax vector and the predicted class. Prints each model's test balanced accuracy and
p-values, then Table 3 with `k/m` (used in k of m models).

    .venv/bin/python bench/feature_usage_bias.py --n 2000 --epochs 8 --splits 3   # ~37 min here
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from attnsweep.data import DatasetSpec, SplitSpec, prepare
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.report.features import FeatureSettings, feature_usage, majority, predict, table3
from attnsweep.pipelines.trial.trainer import train

COLUMNS = ["patch", "skin_tone", "age", "sex", "ruler", "vignette", "hair", "asymmetry", "border", "color", "irregularity"]


def variant_name(strength: float, prediction: str) -> str:
    return f"bias_strength {strength:g}, Y_hat {prediction}"


def models_of(strength: float, a: argparse.Namespace, root: Path) -> list[dict]:
    """Train on each repeat split of synthderm at `strength`; one row per model x feature x test."""
    spec = DatasetSpec(format="synthderm", options={"n": a.n, "seed": 0, "bias_strength": strength,
                                                    "label_noise": 0.0})
    splits = SplitSpec(val_fraction=0.15, test_fraction=a.test_fraction, search_splits=0,
                       repeat_splits=a.splits, seed=0)
    out = root / f"bias{strength:g}"
    data_dir = prepare(spec, splits, a.size, out)
    rows = []
    for split in splits.names():
        cfg = TrialConfig(model=a.model, dataset=spec, splits=splits, split=split, image_size=a.size,
                          data_dir=data_dir, epochs=a.epochs, lr=a.lr, batch_size=32, optimizer="adamw",
                          schedule="cosine", augmentation="flip_rot20", seed=0,
                          cpu_threads=a.threads)
        folder = out / "trials" / split
        start = time.perf_counter()
        train(cfg, folder)
        trained = time.perf_counter() - start
        probs, labels, meta, num_classes = predict(out, folder, "test")
        for prediction in a.predictions:
            settings = FeatureSettings(columns=COLUMNS, tests=a.tests, max_samples=a.max_samples, prediction=prediction)
            start = time.perf_counter()
            found = []
            for column in COLUMNS:
                found += [{"variant": variant_name(strength, prediction), "split": split, **r}
                          for r in feature_usage(meta[column], probs, labels, num_classes, settings)]
            tested = time.perf_counter() - start
            df = pd.DataFrame(found)
            print(f"{variant_name(strength, prediction)} {split}: test balanced accuracy "
                  f"{balanced_accuracy_score(labels, probs.argmax(1)):.3f} (n={len(labels)}); trained in {trained:.0f} s, "
                  f"tested in {tested:.0f} s", flush=True)
            for feature, g in df.groupby("feature", sort=False):
                print(f"  {feature:13s} " + "  ".join(f"{r.test} p={r.p_value:.2g}" for r in g.itertuples())
                      + ("  -> used" if majority(g) else ""), flush=True)
            rows += found
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="synthderm images per strength")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--splits", type=int, default=3, help="repeat splits (models) per strength")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--strengths", type=float, nargs="*", default=[1.0, 0.0])
    ap.add_argument("--tests", nargs="*", default=["kci", "rcot", "cmiknn"])
    ap.add_argument("--predictions", nargs="*", default=["softmax", "class"], choices=["softmax", "class"],
                    help="Y_hat as the softmax vector and/or the predicted class (each tested on the same models)")
    ap.add_argument("--max-samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more spin against each other on a shared machine)")
    ap.add_argument("--dir", type=Path, default=None, help="keep the data and trials here (default: a temp dir)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.dir or Path(tmp)
        rows = [r for s in a.strengths for r in models_of(s, a, root)]
    df = pd.DataFrame(rows)
    keys = ["variant", "split", "feature"]
    used = {k: majority(g) for k, g in df.groupby(keys, sort=False)}
    df["used"] = [used[k] for k in zip(*(df[c] for c in keys))]
    order = [variant_name(s, p) for p in a.predictions for s in a.strengths]
    print(f"\nTable 3 ({a.model}, {a.size} px, {a.epochs} epochs, {a.n} images; used in k of m models, "
          f"majority of {', '.join(a.tests)} at p < 0.01):")
    print(table3(df, order, COLUMNS).to_string())


if __name__ == "__main__":
    main()
