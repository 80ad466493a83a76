"""Messages of a study (`notify:` in the study file): when it finishes, fails or is stopped, and
when a variant's repeats finish. Sent through Apprise (one library for mail, Slack, Matrix,
ntfy, JSON webhooks, ...) and/or a shell command. A message that cannot be sent is logged and
never ends the study."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from attnsweep.pipelines.config.notify_settings import NotifySettings
from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.store import parquet_store

log = logging.getLogger(__name__)

REPORT = Path("report") / "index.html"


def send(settings: NotifySettings | None, event: str, title: str, body: str) -> bool:
    """`title` and `body` to every URL and the command -> whether all of them took it."""
    if settings is None:
        return True
    ok = True
    if settings.urls:
        import apprise

        sender = apprise.Apprise()
        for url in settings.urls:
            sender.add(url)
        if not sender.notify(title=title, body=body, notify_type="failure" if event == "failed" else "info"):
            log.warning("notify: a message could not be sent to every URL (%s)", title)
            ok = False
    if settings.command:
        env = {**os.environ, "ATTNSWEEP_EVENT": event, "ATTNSWEEP_TITLE": title, "ATTNSWEEP_MESSAGE": body}
        try:
            done = subprocess.run(settings.command, shell=True, input=f"{title}\n{body}\n", text=True, env=env,
                                  capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("notify: the command %r failed: %s", settings.command, e)
            return False
        if done.returncode != 0:
            log.warning("notify: the command %r exited %s: %s", settings.command, done.returncode,
                        done.stderr.strip()[-500:])
            ok = False
    return ok


def summary_line(study: Study, out: Path, variants: list[str] | None = None) -> str:
    """The repeat phase's test scores per variant (mean +- sd of the study's first metric over
    the splits recorded so far) and the failed trials: one line."""
    metric = study.stats.metrics[0]
    try:
        rows = parquet_store.read(out).to_pandas()
    except (OSError, ValueError):
        rows = None
    if rows is None or rows.empty:
        return f"{study.name}: no trial recorded"
    rep = rows[(rows["phase"] == "repeat") & (rows["eval_set"] == "test") & (rows["status"] == "ok")]
    parts = []
    for v in variants or study.variant_ids:
        values = rep[rep["variant"] == v][metric].dropna()
        if len(values):
            sd = f" ± {values.std():.3f}" if len(values) > 1 else ""
            parts.append(f"{v} {values.mean():.3f}{sd} (n={len(values)})")
    failed = rows[rows["status"] == "failed"]["trial_id"].nunique()
    scores = ", ".join(parts) if parts else "no repeat finished"
    return f"{study.name}: test {metric} {scores}; {rows['trial_id'].nunique()} trials recorded, {failed} failed"


def _report_line(out: Path) -> str:
    report = out / REPORT
    return f"report: {report}" if report.exists() else f"no report yet (attnsweep report {out})"


def study_finished(study: Study, out: Path) -> bool:
    return send(study.notify, "finished", f"attnsweep: {study.name} finished",
                f"{summary_line(study, out)}\n{_report_line(out)}")


def study_ended_early(study: Study, out: Path, error: BaseException) -> bool:
    """The driver ends with `error`: stopped (an interrupt, a signal) or failed (anything else)."""
    stopped = isinstance(error, KeyboardInterrupt)
    event = "stopped" if stopped else "failed"
    why = "interrupted; `attnsweep run --resume` finishes it" if stopped else \
        (str(error).splitlines()[0] if str(error) else type(error).__name__)
    return send(study.notify, event, f"attnsweep: {study.name} {event}",
                f"{study.name} {event}: {why}\n{summary_line(study, out)}\n{_report_line(out)}")


def variant_finished(study: Study, out: Path, variant: str) -> bool:
    """A variant's repeat phase finished (called by `phases.end_repeat`)."""
    if study.notify is None:
        return True
    return send(study.notify, "variant", f"attnsweep: {study.name} {variant} repeats finished",
                f"{summary_line(study, out, [variant])}\nreport at the end: {out / REPORT}")
