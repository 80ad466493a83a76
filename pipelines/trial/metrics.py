"""Classification metrics of one evaluated set, computed once on the predictions of all ranks."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    recall_score,
    roc_auc_score,
)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Balanced accuracy, accuracy, AUC-ROC (binary, or macro one-vs-rest), per-class recall,
    confusion matrix and mean cross-entropy. A metric that is undefined on this set (AUC with one
    class present, recall of an absent class) is None, never a silent 0."""
    logits = logits.double()
    y = labels.numpy()
    probs = torch.softmax(logits, dim=1).numpy()
    pred = probs.argmax(axis=1)
    classes = list(range(num_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        recall = recall_score(y, pred, labels=classes, average=None, zero_division=np.nan)
        balanced = balanced_accuracy_score(y, pred)
        try:
            if num_classes == 2:
                auc = roc_auc_score(y, probs[:, 1])
            else:
                auc = roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=classes)
        except ValueError:  # a class of the model is absent from this set
            auc = math.nan
    return {
        "balanced_accuracy": float(balanced),
        "accuracy": float(accuracy_score(y, pred)),
        "auc_roc": _finite_or_none(auc),
        "loss": float(F.cross_entropy(logits, labels, reduction="mean")),
        "per_class_recall": [_finite_or_none(r) for r in recall],
        "confusion_matrix": confusion_matrix(y, pred, labels=classes).tolist(),
        "n_samples": int(len(y)),
    }
