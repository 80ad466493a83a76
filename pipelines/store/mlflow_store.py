"""MLflow runs of a study, written by the driver only: experiment = study, a parent run per
variant and phase, a child run per trial and split (params, per-epoch metrics with step = epoch,
tags, artifacts). A parent carries the aggregate of its children (`mlflow_summary`), a child the
final values as tags (not one-point charts), the git commit and the dataset (`log_input`).
Runs are found again by their tags, so a resumed driver continues a run that
was left RUNNING instead of opening a second one, and never touches a finished one."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnsweep.pipelines.config.selection import METRICS
from attnsweep.pipelines.store import mlflow_summary, parquet_store, selection_record
from attnsweep.pipelines.store.result_rows import TrialRef
from attnsweep.pipelines.trial.study_paths import StudyPaths

# status of a trial -> the MLflow run status it ends with
RUN_STATUS = {"ok": "FINISHED", "diverged": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
TAG = "attnsweep."


def default_tracking_uri(out: Path) -> str:
    return f"sqlite:///{StudyPaths(out.resolve()).mlflow_db}"


def unavailable() -> tuple[type[BaseException], ...]:
    """What an MLflow store that is down or gone raises (its server, its database)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return MlflowException, requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError


class TrackingUnavailable(RuntimeError):
    """The tracking store named by the study cannot be used; the message (one line) says which and why."""


def one_line_error(err: BaseException) -> str:
    """The first line of an error, short: MLflow wraps a refused connection in a paragraph."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def configure_http_retries() -> None:
    """MLflow's HTTP client retries each call with exponential backoff (urllib3); its defaults
    (7 retries, factor 2, 120 s timeout) wait minutes on a server that is gone. These wait about
    15 s; a write that still fails is queued by the driver (`tracking.Recorder`)."""
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        os.environ.setdefault(key, value)


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line on a tracking URI nothing can record to: an unknown scheme, or a
    server that does not answer its `/health` within `timeout_s`."""
    import urllib.error
    import urllib.parse
    import urllib.request

    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except urllib.error.HTTPError as e:
            if e.code < 500:  # answering (a server without /health, behind a proxy)
                return
            raise TrackingUnavailable(f"--tracking-uri {uri}: the MLflow server answers {e.code} {e.reason}; "
                                      f"check it, or pass another --tracking-uri") from None
        except (OSError, ValueError) as e:
            why = getattr(e, "reason", e)
            raise TrackingUnavailable(f"--tracking-uri {uri}: no MLflow server answers within {timeout_s:.0f} s "
                                      f"({why}); start it, or pass another --tracking-uri") from None
    elif scheme not in ("sqlite", "file", "postgresql", "mysql", "mssql", "databricks", ""):
        raise TrackingUnavailable(f"--tracking-uri {uri}: unknown scheme {scheme!r}; use http(s)://HOST:PORT of an "
                                  f"MLflow server, sqlite:///PATH or file:///PATH")


class MlflowStore:
    def __init__(self, tracking_uri: str, experiment: str, out: Path, dataset_name: str | None = None,
                 headline_metric: str = "balanced_accuracy"):
        """`dataset_name`: the study's dataset label; with it every child run logs `<out>/data`
        as its input dataset. `headline_metric`: the aggregate a parent's run name shows."""
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        configure_http_retries()
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up chatter
        # its sqlite store logs each database error with a traceback before raising it; the driver
        # reports an unavailable store in one line (`tracking.Recorder.mlflow`)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.tracking_uri = tracking_uri
        self.out, self.dataset_name, self.headline_metric = out, dataset_name, headline_metric
        self._source_tags = mlflow_summary.source_tags(mlflow_summary.git_commit())
        self._parents: dict[tuple[str, str], str] = {}
        self._children: dict[str, tuple[str, str]] = {}  # trial_id -> (run_id, status)
        self._last_step: dict[str, int] = {}
        self._unset: set[str] = set()  # trials whose run was created but not set up yet
        self._study_run: str | None = None
        try:
            self.client = _Serialised(MlflowClient(tracking_uri))  # the driver's threads: one call at a time
            self.experiment_id, self.experiment_name, self.note = self._own_experiment(experiment, out)
            for key, value in mlflow_summary.EXPERIMENT_KIND.items():
                self.client.set_experiment_tag(self.experiment_id, key, value)
            self._load_existing()
        except unavailable() as e:
            raise TrackingUnavailable(f"--tracking-uri {tracking_uri}: cannot record to it ({one_line_error(e)}); "
                                      f"check it, or pass another --tracking-uri") from None

    def _own_experiment(self, name: str, out: Path) -> tuple[str, str, str | None]:
        """(id, name, a line to show or None) of this study folder's experiment. The folder's id
        (`<out>/study_id`, made on first use) is tagged on the experiment; an experiment of the
        study's name that another folder owns is left alone, and this folder records to
        `<name>-<id>` instead (two folders of one study name never share parent runs)."""
        from attnsweep.data.atomic import write_text

        id_file = StudyPaths(out).study_id_file
        if not id_file.exists():
            write_text(id_file, uuid.uuid4().hex[:12] + "\n")
        folder_id = id_file.read_text().strip()
        note = None
        exp = self.client.get_experiment_by_name(name)
        owner = exp.tags.get(TAG + "study_id") if exp is not None else None
        if exp is not None and owner not in (None, folder_id):
            other = exp.tags.get(TAG + "study_folder", "another folder")
            name = f"{name}-{folder_id}"
            note = (f"MLflow experiment {exp.name!r} belongs to the study folder {other}; this one ({out}) "
                    f"records to the experiment {name!r}")
            exp = self.client.get_experiment_by_name(name)
        if exp is None:
            # A local store keeps artifacts beside the study; a server decides for itself.
            local = self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri
            location = StudyPaths(out.resolve()).mlartifacts_dir.as_uri() if local else None
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            experiment_id = exp.experiment_id
        self.client.set_experiment_tag(experiment_id, TAG + "study_id", folder_id)
        self.client.set_experiment_tag(experiment_id, TAG + "study_folder", str(out.resolve()))
        return experiment_id, name, note

    def _load_existing(self) -> None:
        """The runs of earlier drivers, by their tags. A trial with two runs (a create whose answer
        was lost while the server went down) keeps the finished one; the other is deleted. A run
        still RUNNING is set up again on first sight: its driver may have died before its params
        and input dataset were logged."""
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                if tags.get(TAG + "kind") == "study":
                    self._study_run = run.info.run_id
                elif tags.get(TAG + "kind") == "parent":
                    self._parents[(tags[TAG + "variant"], tags[TAG + "phase"])] = run.info.run_id
                elif TAG + "trial_id" in tags:
                    trial_id, mine = tags[TAG + "trial_id"], (run.info.run_id, run.info.status)
                    kept = self._children.get(trial_id)
                    if kept is not None:
                        keep, extra = (mine, kept) if kept[1] == "RUNNING" and mine[1] != "RUNNING" else (kept, mine)
                        self.client.delete_run(extra[0])
                        mine = keep
                    self._children[trial_id] = mine
            token = page.token
            if not token:
                break
        self._unset.update(t for t, (_, status) in self._children.items() if status == "RUNNING")

    def known_run(self, trial_id: str) -> str | None:
        """The run id of a trial, if it has one."""
        return self._children[trial_id][0] if trial_id in self._children else None

    def is_finished(self, trial_id: str) -> bool:
        """Whether the trial's run is terminated (everything of it is logged)."""
        return trial_id in self._children and self._children[trial_id][1] != "RUNNING"

    def study_run(self) -> str:
        """The study's own run: the report is logged there."""
        if self._study_run is None:
            self._study_run = self.client.create_run(self.experiment_id, run_name="report",
                                                     tags={TAG + "kind": "study"}).info.run_id
        return self._study_run

    def parent(self, variant: str, phase: str) -> str:
        key = (variant, phase)
        if key not in self._parents:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{variant} {phase}",
                tags={TAG + "kind": "parent", TAG + "variant": variant, TAG + "phase": phase},
            )
            self._parents[key] = run.info.run_id
        return self._parents[key]

    def finish_parent(self, variant: str, phase: str, best: dict[str, Any] | None = None) -> None:
        """The aggregate of the parent's recorded children as its metrics (step 0); a search
        parent aggregates the runs of the configuration the driver chose (its `selection/` record,
        else `best`; logged as params with the metric it was chosen by), so its `val_..._mean` is
        the chosen configuration's."""
        from mlflow.entities import Metric

        run_id = self.parent(variant, phase)
        record = selection_record.read(self.out, variant) if phase == "search" else None
        if record is not None:
            best = {k: record["chosen"][k] for k in ("lr", "weight_decay")}
            self.client.log_batch(run_id, params=_params({"selection_metric": record["metric"]}))
        rows = parquet_store.read(self.out).to_pandas() if StudyPaths(self.out).results_dir.exists() else None
        if rows is not None:
            rows = rows[(rows["variant"] == variant) & (rows["phase"] == phase)]
            if best:
                rows = rows[(rows["lr"] == best["lr"]) & (rows["weight_decay"] == best["weight_decay"])]
            now = int(time.time() * 1000)
            summary = mlflow_summary.parent_summary(rows)
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in sorted(summary.items())])
            self.client.update_run(run_id, name=mlflow_summary.parent_title(variant, phase, summary,
                                                                            self.headline_metric))
        if best:
            self.client.log_batch(run_id, params=_params({f"best_{k}": v for k, v in best.items()}))
        self.client.set_terminated(run_id, "FINISHED")

    def fail_parent(self, variant: str, phase: str) -> None:
        self.client.set_terminated(self.parent(variant, phase), "FAILED")

    def child_run(self, ref: TrialRef, config: dict[str, Any]) -> tuple[str, bool]:
        """(run id, whether it is already terminated) for the trial; created on first sight."""
        if ref.trial_id in self._children and ref.trial_id not in self._unset:
            run_id, status = self._children[ref.trial_id]
            return run_id, status != "RUNNING"
        if ref.trial_id in self._children:  # created, but MLflow went away before its params were logged
            run_id = self._children[ref.trial_id][0]
            self._set_up_child(ref, run_id, config)
            return run_id, False
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{ref.variant} {ref.phase} {ref.split} lr={config['lr']:.3g} wd={config['weight_decay']:.3g}",
            tags={
                "mlflow.parentRunId": self.parent(ref.variant, ref.phase),
                TAG + "trial_id": ref.trial_id,
                TAG + "config_hash": ref.config_hash,
                TAG + "phase": ref.phase,
                TAG + "variant": ref.variant,
                TAG + "split": ref.split,
                TAG + "status": "running",
                **self._source_tags,
            },
        )
        self._children[ref.trial_id] = (run.info.run_id, "RUNNING")
        self._unset.add(ref.trial_id)
        self._last_step[run.info.run_id] = 0
        self._set_up_child(ref, run.info.run_id, config)
        return run.info.run_id, False

    def _set_up_child(self, ref: TrialRef, run_id: str, config: dict[str, Any]) -> None:
        """A new child run's params and input dataset (logging the same values again is harmless)."""
        scalars = {k: v for k, v in config.items() if not isinstance(v, (dict, list)) and k != "data_dir"}
        # attention modules from outside attnsweep: where each came from (factory and kwargs)
        scalars.update({f"attentions.{k}": v for k, v in (config.get("attentions") or {}).items()})
        self.client.log_batch(run_id, params=_params(scalars))
        data_dir = StudyPaths(self.out).data_dir
        if self.dataset_name and (data_dir / "manifest.json").exists():
            self.client.log_inputs(run_id, [mlflow_summary.dataset_input(data_dir, self.dataset_name, ref.split)])
        self._unset.discard(ref.trial_id)

    def discard_child(self, trial_id: str) -> None:
        """Delete a trial's run (a failure that is retried): the retry records it in a new one."""
        if trial_id in self._children:
            run_id, _ = self._children.pop(trial_id)
            self._last_step.pop(run_id, None)
            self.client.delete_run(run_id)

    def log_epochs(self, run_id: str, epochs: Sequence[dict[str, Any]]) -> None:
        """Per-epoch metrics (step = epoch); epochs logged before (also by an earlier driver of
        a resumed study) are skipped, so a relayed epoch never appears twice."""
        from mlflow.entities import Metric

        if run_id not in self._last_step:
            history = self.client.get_metric_history(run_id, "train_loss")
            self._last_step[run_id] = max((m.step for m in history), default=0)
        new = [e for e in epochs if e["epoch"] > self._last_step[run_id]]
        if not new:
            return
        now = int(time.time() * 1000)
        metrics = []
        for e in new:
            values = {"train_loss": e.get("train_loss"), "lr": e.get("lr"), "epoch_seconds": e.get("seconds"),
                      "images_per_s": e.get("images_per_s")}
            values.update({f"val_{k}": (e.get("val") or {}).get(k) for k in METRICS})
            metrics += [Metric(k, float(v), now, e["epoch"]) for k, v in values.items() if v is not None]
        self.client.log_batch(run_id, metrics=metrics)
        self._last_step[run_id] = new[-1]["epoch"]

    def finish_child(self, ref: TrialRef, run_id: str, result: dict[str, Any], class_names: Sequence[str] | None) -> None:
        """Final values of every evaluated set at the selected epoch as tags
        (`final_<set>_<metric>`, `best_epoch`: single values, not time series), the config and
        result as artifacts, a confusion matrix PNG per set, the status tag; then the run is
        terminated."""
        from mlflow.entities import RunTag

        finals = {
            f"final_{eval_set.replace(':', '_')}_{k}": repr(float(m[k]))
            for eval_set, m in (result.get("metrics") or {}).items()
            for k in METRICS
            if m.get(k) is not None
        }
        for key in ("best_epoch", "diverged_epoch"):
            if result.get(key) is not None:
                finals[key] = str(result[key])
        tags = [RunTag(TAG + "status", result["status"])] + [RunTag(k, v) for k, v in sorted(finals.items())]
        self.client.log_batch(run_id, tags=tags)
        for path in (ref.folder.config_file, ref.folder.result_file):
            if path.exists():
                self.client.log_artifact(run_id, str(path))
        for eval_set, m in (result.get("metrics") or {}).items():
            if m.get("confusion_matrix"):
                self.client.log_figure(run_id, _confusion_figure(m["confusion_matrix"], class_names, eval_set),
                                       f"confusion_matrix_{eval_set.replace(':', '_')}.png")
        self.client.set_terminated(run_id, RUN_STATUS[result["status"]])
        self._children[ref.trial_id] = (run_id, RUN_STATUS[result["status"]])


class _Serialised:
    """Calls the wrapped object's methods one at a time (a lock shared by every thread)."""

    def __init__(self, target: Any) -> None:
        self._target, self._lock = target, threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def _params(values: dict[str, Any]):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in sorted(values.items())]


def _confusion_figure(matrix: list[list[int]], class_names: Sequence[str] | None, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(matrix)
    labels = list(class_names) if class_names and len(class_names) == len(cm) else None
    fig, ax = plt.subplots(figsize=(2 + 0.6 * len(cm), 1.6 + 0.6 * len(cm)))
    ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig
