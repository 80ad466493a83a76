"""`attnsweep status OUT [--json] [--watch]`: a study's progress from its folder (see
`pipelines.sweep.status`). Exit status: 0 finished, 1 failed, 3 running, 4 stopped, 2 not a study folder."""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def status(
    out: Path = typer.Argument(..., help="A study output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until the study is no longer running."),
    every: float = typer.Option(10.0, "--every", min=0.5, help="Seconds between refreshes with --watch."),
) -> None:
    """Where a study stands: per variant and phase trainings done/running/queued/failed, the best
    configuration so far, job-hours, an ETA and the SLURM jobs it owns. Exit status: 0 finished,
    1 failed, 3 running, 4 stopped (`attnsweep run --resume` finishes it), 2 not a study folder."""
    from pydantic import ValidationError
    from rich.console import Console
    from rich.live import Live

    from attnsweep.pipelines.config.errors import one_line
    from attnsweep.pipelines.sweep.status import NotAStudy, status as read_status

    def read():
        try:
            return read_status(out)
        except NotAStudy as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except ValidationError as e:
            typer.echo(f"error: {one_line(e, str(out / 'study.yaml'))}", err=True)
            raise typer.Exit(2) from None

    st = read()
    console = Console(width=None if Console().is_terminal else 120)
    if as_json:
        typer.echo(json.dumps(st.as_json(), indent=1))
    elif watch and console.is_terminal:
        with Live(_table(st), console=console, refresh_per_second=1) as live:
            while st.state == "running":
                time.sleep(every)  # a refresh interval, not a wait for an event
                st = read()
                live.update(_table(st))
    else:
        console.print(_table(st))
        while watch and st.state == "running":  # a log: one table per refresh
            time.sleep(every)
            st = read()
            console.print(_table(st))
    raise typer.Exit(st.exit_code)


def _table(st):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from attnsweep.pipelines.cli.run import _hours

    table = Table(title=f"{st.name}: {st.state} ({st.out})")
    for col in ("variant", "phase", "done", "running", "queued", "failed", "of", "best lr / wd", "job-hours"):
        table.add_column(col, justify="left" if col in ("variant", "phase", "best lr / wd") else "right")
    for p in st.phases:
        best = f"{p.best['lr']:.4g} / {p.best['weight_decay']:.4g}" if p.best else "-"
        table.add_row(p.variant, p.phase, str(p.done), str(p.running), str(p.queued), str(p.failed), str(p.planned),
                      best, f"{p.job_hours:.2f}")
    driver = st.driver
    who = (f"driver: host {driver.get('host')}, pid {driver.get('pid')}"
           f"{', SLURM job ' + str(driver['slurm_job_id']) if driver.get('slurm_job_id') else ''}"
           f" ({'alive' if driver['alive'] else 'gone'})") if driver else "driver: none"
    eta = "ETA: " + (_hours(st.eta_s) if st.eta_s is not None else "?") + f" ({st.eta_basis})"
    jobs = "SLURM jobs: " + (", ".join(f"{j['job_id']} {j['state']}" for j in st.jobs) or "none")
    return Group(table, Text(f"{who}; {st.job_hours:.2f} job-hours; {eta}"), Text(jobs))
