"""The Parquet schemas of a study folder: `<out>/results/` (one row per trial x split x evaluated
set) and `<out>/epochs/` (one row per trial and epoch). This is the single definition: the
tracking writer and the report both import it. Bump `SCHEMA_VERSION` on any change and document it
in docs/results.md."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "3"  # 2: epochs.images_per_s; 3: results.diverged_epoch

_UTC = pa.timestamp("us", tz="UTC")

RESULTS_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("phase", pa.string()),  # search | repeat
        ("variant", pa.string()),  # model name, e.g. resnet18+ga
        ("backbone", pa.string()),
        ("attention", pa.string()),  # '+'-joined modules, '' for the plain backbone
        ("dataset", pa.string()),
        ("eval_set", pa.string()),  # val | test | ood:<name>
        ("split", pa.string()),  # search-0.., repeat-0..
        ("seed", pa.int64()),
        ("lr", pa.float64()),
        ("weight_decay", pa.float64()),
        ("batch_size", pa.int64()),
        ("epochs", pa.int64()),
        ("best_epoch", pa.int64()),  # null when no epoch finished
        ("status", pa.string()),  # ok | diverged | failed | stopped
        ("diverged_epoch", pa.int64()),  # the epoch whose loss or a metric was not finite (diverged)
        ("balanced_accuracy", pa.float64()),  # metrics are null for runs without selected weights
        ("accuracy", pa.float64()),
        ("auc_roc", pa.float64()),
        ("loss", pa.float64()),
        ("n_samples", pa.int64()),  # size of the evaluated set
        ("n_train", pa.int64()),  # size of the training set (for the corrected t-test)
        ("params", pa.int64()),
        ("train_seconds", pa.float64()),
        ("gpu_seconds", pa.float64()),
        ("world_size", pa.int64()),
        ("trial_id", pa.string()),
        ("mlflow_run_id", pa.string()),
        ("config_hash", pa.string()),
        ("code_version", pa.string()),
        ("finished_at", _UTC),  # datetime (UTC)
    ],
    metadata={"attnsweep.schema": "results", "attnsweep.schema_version": SCHEMA_VERSION},
)

EPOCHS_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("phase", pa.string()),
        ("variant", pa.string()),
        ("trial_id", pa.string()),
        ("split", pa.string()),
        ("epoch", pa.int64()),
        ("lr", pa.float64()),
        ("weight_decay", pa.float64()),
        ("train_loss", pa.float64()),
        ("val_balanced_accuracy", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("val_auc_roc", pa.float64()),
        ("val_loss", pa.float64()),
        ("seconds", pa.float64()),
        ("images_per_s", pa.float64()),  # training throughput of the epoch (all ranks)
    ],
    metadata={"attnsweep.schema": "epochs", "attnsweep.schema_version": SCHEMA_VERSION},
)


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) -> a table with exactly `schema`'s columns; a missing or unknown column is a
    one-line ValueError naming it (pyarrow would silently fill a missing one with nulls)."""
    rows = list(rows)
    names = set(schema.names)
    for i, row in enumerate(rows):
        missing, extra = names - row.keys(), row.keys() - names
        if missing or extra:
            raise ValueError(
                f"{schema.metadata[b'attnsweep.schema'].decode()} row {i}: "
                f"missing columns {sorted(missing)}, unknown columns {sorted(extra)}"
            )
    return pa.Table.from_pylist(rows, schema=schema)
