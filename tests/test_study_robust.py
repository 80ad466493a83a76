"""Nothing silently wrong (issue 25), with real components: an export cannot join the results it
was made from, a re-split study retrains the trials of the old splits, a real `mlflow server`
killed mid-study stops nothing and gets every run after its restart, and lr 1e6 ends `diverged`
with exit 0. Each study is tiny (32 px, one epoch, one split): CPU is scarce."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient
from mlflow_server import free_port, start_server, stop_server
from orchestrate_setup import Driver, run_attnsweep
from survive_setup import counts, hold_env, held, one_trial_study, wait_for
from trainer_setup import data_dir, trial_config  # noqa: F401 (fixture)
from typer.testing import CliRunner

from attnsweep.pipelines.cli import app
from attnsweep.pipelines.report.study_folder import load
from attnsweep.pipelines.store import parquet_store

GOLDEN = Path(__file__).parent / "golden"
BREAST = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "breastmnist.npz"


@pytest.fixture
def golden_copy(tmp_path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(GOLDEN / "study", out)
    return out


def test_an_export_into_the_study_folder_is_refused(golden_copy):
    rows = len(load(golden_copy).results)
    dest = golden_copy / "results" / "all.parquet"
    res = CliRunner().invoke(app, ["export", str(golden_copy), "--to", str(dest)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"--to {dest}: inside the study folder" in res.output and not dest.exists()
    res = CliRunner().invoke(app, ["export", str(golden_copy), "--to", str(golden_copy)])
    assert res.exit_code == 2 and "inside the study folder" in res.output
    assert len(load(golden_copy).results) == rows


def test_readers_leave_out_exports_and_other_studies_and_refuse_copies(golden_copy, tmp_path):
    rows = len(load(golden_copy).results)
    dest = tmp_path / "all.parquet"
    res = CliRunner().invoke(app, ["export", str(golden_copy), "--to", str(dest)])
    assert res.exit_code == 0 and pd.read_parquet(dest).shape[0] == rows
    shutil.copy(dest, golden_copy / "results" / "all.parquet")  # moved in by hand: marked as an export
    other = pq.read_table(min((golden_copy / "results").glob("synth*.parquet")))
    other = other.set_column(0, "study", pa_strings(["another"] * other.num_rows))
    pq.write_table(other, golden_copy / "results" / "another-study.parquet")
    assert len(load(golden_copy).results) == rows
    assert len(parquet_store.read(golden_copy)) == rows
    left_out = parquet_store.check(golden_copy)
    assert len(left_out) == 2 and "a results-export file" in left_out[0] and "rows of study another" in left_out[1]
    # a plain copy of a driver's file counts its rows twice: refused with one line naming it
    copy = golden_copy / "results" / "zz-copy.parquet"
    shutil.copy(min((golden_copy / "results").glob("synth*.parquet")), copy)
    res = CliRunner().invoke(app, ["report", str(golden_copy), "--no-explain"])
    assert res.exit_code == 2 and f"{copy}: repeats rows of" in res.output, res.output


def pa_strings(values):
    import pyarrow as pa

    return pa.array(values, pa.string())


def tiny_breast_npz(path: Path, drop: int = 0) -> Path:
    """A 100-image BreastMNIST (`drop` training images fewer: the dataset changed)."""
    with np.load(BREAST) as z:
        parts = {"train": 60 - drop, "val": 20, "test": 20}
        np.savez(path, **{f"{p}_{k}": z[f"{p}_{k}"][:n] for p, n in parts.items() for k in ("images", "labels")})
    return path


@pytest.mark.slow
def test_a_resplit_study_retrains_the_trials_of_the_old_splits(tmp_path):
    npz = tiny_breast_npz(tmp_path / "breastmnist.npz")
    study = one_trial_study(tmp_path, epochs=1)
    s = yaml.safe_load(study.read_text())
    s.update(dataset={"format": "medmnist", "root": str(npz)}, image_size=28, features=None)
    s["variants"] = ["cnn2"]
    s["train"].update(batch_size=8, augmentation="none")
    study.write_text(yaml.safe_dump(s, sort_keys=False))
    out = tmp_path / "out"
    first = run_attnsweep("run", str(study), "--out", str(out), "--no-report")
    assert first.returncode == 0, first.stderr + first.stdout
    before = counts(out)
    old_trial = sorted((out / "trials").glob("*/*/*"))[0].name
    old_train = set(pd.read_parquet(out / "data" / "splits.parquet").query("role == 'train'")["index"])

    tiny_breast_npz(npz, drop=6)  # the dataset changed: the data dir refuses it ...
    refused = run_attnsweep("run", str(study), "--out", str(out), "--resume", "--no-report")
    assert refused.returncode == 2 and "delete this data dir to re-split" in refused.stderr
    shutil.rmtree(out / "data")  # ... and the user does what it says
    again = run_attnsweep("run", str(study), "--out", str(out), "--resume", "--no-report")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "the data was split again" in again.stdout and "1 trial(s) trained on the old splits" in again.stdout
    after = counts(out)
    assert before["rows"] == after["rows"] == 2 and after["duplicates"] == 0  # val + test of one trial
    assert after["trial_runs"] == 1  # the old trial's MLflow run was deleted
    new_train = set(pd.read_parquet(out / "data" / "splits.parquet").query("role == 'train'")["index"])
    assert new_train != old_train
    stale = list(out.glob("stale-*/trials/*/*/*"))
    assert [p.name for p in stale] == [old_trial]  # set aside, and trained again on the new splits
    assert (out / "trials" / "repeat" / "cnn2" / old_trial / "result.json").exists()


@pytest.mark.slow
def test_mlflow_killed_mid_study_and_lr_1e6_diverged(tmp_path):
    """Grid lr [0.01, 1e6] on one search and one repeat split: 3 trainings. The server is killed
    while the 0.01 search trial is held after its epoch; the study finishes its Parquet rows with
    exit 0; after a restart `--resume` gives MLflow every run once."""
    study = one_trial_study(tmp_path, epochs=1)
    s = yaml.safe_load(study.read_text())
    s["variants"] = ["cnn2"]
    s["image_size"] = 32
    s["features"] = None
    s["search"].update(algorithm="grid", lr=[0.01, 1e6], weight_decay=[0.0])
    s["splits"].update(search_splits=1, repeat_splits=1)
    study.write_text(yaml.safe_dump(s, sort_keys=False))
    root, port = tmp_path / "mlflow", free_port()
    root.mkdir()
    server, uri = start_server(root, port)
    out, hold, log = tmp_path / "out", tmp_path / "hold", tmp_path / "driver.log"
    driver = Driver("run", str(study), "--out", str(out), "--tracking-uri", uri, "--no-report",
                    env=hold_env(hold), log=log)
    try:
        wait_for(lambda: held(hold), "the 0.01 search trial to be held after epoch 1", driver, log, timeout_s=900)
        stop_server(server)  # MLflow goes away mid-study
        while driver.proc.poll() is None:  # release every trial as it is held (the repeat too)
            for h in held(hold):
                h.with_suffix(".release").write_text("")
                h.unlink()
            wait_for(lambda: held(hold) or driver.proc.poll() is not None, "a held trial or the end", timeout_s=900)
        text = log.read_text()
        assert driver.proc.returncode == 0, text[-3000:]
        assert text.count("is not answering") == 1 and "run with --resume when it is back" in text
        rows = parquet_store.read(out).to_pandas()
        assert rows["trial_id"].nunique() == 3 and len(rows) == 6  # val + test of each trial
        diverged = rows[rows["lr"] == 1e6]
        assert set(diverged["status"]) == {"diverged"} and set(diverged["diverged_epoch"]) == {1}
        assert set(rows[rows["phase"] == "repeat"]["lr"]) == {0.01}  # never chosen
        assert rows["mlflow_run_id"].isna().any()  # recorded while MLflow was down

        server, uri = start_server(root, port)  # back, with its store
        resumed = run_attnsweep("run", str(study), "--out", str(out), "--tracking-uri", uri, "--resume", "--no-report")
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout[-3000:]
        rows = parquet_store.read(out).to_pandas()
        assert len(rows) == 6 and rows["mlflow_run_id"].notna().all()
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(s["name"])
        runs = client.search_runs([exp.experiment_id], max_results=100)
        trial_runs = [r.data.tags["attnsweep.trial_id"] for r in runs if "attnsweep.trial_id" in r.data.tags]
        assert sorted(trial_runs) == sorted(rows["trial_id"].unique())  # every trial once
        assert all(r.info.status != "RUNNING" for r in runs if "attnsweep.trial_id" in r.data.tags)
        assert set(rows["mlflow_run_id"]) == {r.info.run_id for r in runs if "attnsweep.trial_id" in r.data.tags}
    finally:
        driver.cleanup()
        stop_server(server)


def test_a_tracking_server_that_does_not_answer_is_one_line(tmp_path):
    study = one_trial_study(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    res = run_attnsweep("run", str(study), "--out", str(tmp_path / "out"), "--tracking-uri", uri)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"--tracking-uri {uri}: no MLflow server answers" in res.stderr and not (tmp_path / "out").exists()
    res = run_attnsweep("run", str(study), "--out", str(tmp_path / "out"), "--tracking-uri", "ftp://x")
    assert res.returncode == 2 and "unknown scheme 'ftp'" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_trial_at_lr_1e6_ends_diverged_and_temp_files_of_a_killed_job_go(data_dir, tmp_path):  # noqa: F811
    from attnsweep.pipelines.trial.folder import TrialFolder
    from attnsweep.pipelines.trial.trainer import train

    folder = TrialFolder(tmp_path / "trial")
    folder.path.mkdir()
    left = [folder.path / ".checkpoint.pt.4242.tmp", folder.path / ".best-epoch1.pt.4242.tmp"]  # of a killed job
    for path in left:
        path.write_bytes(b"half")
    result = train(trial_config(data_dir, lr=1e6, epochs=2), folder.path)
    assert not any(p.exists() for p in left)  # the next job of the trial removed them
    assert result["status"] == "diverged" and result["diverged_epoch"] == 1 and result["metrics"] == {}
    assert folder.final_result() == result  # valid JSON, final: never retried
    assert folder.epochs() == []  # the diverged epoch's non-finite values are not written


def test_two_folders_of_one_study_name_never_share_an_experiment(tmp_path):
    from attnsweep.pipelines.store.mlflow_store import MlflowStore

    uri = f"sqlite:///{tmp_path / 'shared.db'}"  # one tracking store, as a lab's server
    first = MlflowStore(uri, "same", tmp_path / "a")
    again = MlflowStore(uri, "same", tmp_path / "a")  # the same folder resumed: its own experiment again
    second = MlflowStore(uri, "same", tmp_path / "b")
    assert first.note is None and again.experiment_id == first.experiment_id
    assert second.experiment_id != first.experiment_id and second.experiment_name.startswith("same-")
    assert str(tmp_path / "a") in second.note and str(tmp_path / "b") in second.note
    assert first.parent("v", "search") != second.parent("v", "search")


def test_user_text_is_escaped_in_markdown_and_guarded_in_csv(tmp_path):
    from attnsweep.pipelines.report.build import md_table
    from attnsweep.pipelines.report.tables import write_tables

    table = pd.DataFrame({"dataset": ["<script>alert(1)</script>", "a|b", "=HYPERLINK(\"x\")"], "n": [1, 2, 3]})
    md = md_table(table)
    assert "<script>" not in md and "&lt;script&gt;" in md and "a\\|b" in md
    assert all(line.count(" | ") == 1 for line in md.splitlines()[2:])  # two cells per row, whatever the text
    write_tables({"t": table}, tmp_path)
    back = pd.read_csv(tmp_path / "t.csv")
    assert back["dataset"].tolist() == ["<script>alert(1)</script>", "a|b", "'=HYPERLINK(\"x\")"]


@pytest.mark.slow
def test_a_search_whose_every_configuration_diverged_fails_its_parent_run(tmp_path):
    """Nothing to repeat: the variant fails in one line, and its search's parent run ends FAILED in
    MLflow, not RUNNING for ever (no run of the study is left RUNNING)."""
    study = one_trial_study(tmp_path, epochs=1)
    data = yaml.safe_load(study.read_text())
    data["search"]["lr"] = [1e6]
    data["splits"]["search_splits"] = 1
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    done = run_attnsweep("run", str(study), "--out", str(out), "--no-report")
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-3000:]
    assert "no search configuration finished ok on every split" in said and "Traceback" not in said
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(data["name"]).experiment_id])
    kinds = {(r.data.tags.get("attnsweep.kind"), r.data.tags.get("attnsweep.phase")): r.info.status for r in runs}
    assert kinds[("parent", "search")] == "FAILED", kinds
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


@pytest.mark.slow
def test_mlflow_db_deleted_mid_study_ends_with_its_rows_and_resume_rebuilds_the_runs(tmp_path):
    """The study's sqlite store deleted while its one trial is held: the study still ends with exit
    0, its Parquet rows and one warning line; `--resume` builds a new store with that trial's run once."""
    study = one_trial_study(tmp_path, epochs=1)
    s = yaml.safe_load(study.read_text())
    s.update(variants=["cnn2"], image_size=32, features=None)
    study.write_text(yaml.safe_dump(s, sort_keys=False))
    out, hold, log = tmp_path / "out", tmp_path / "hold", tmp_path / "driver.log"
    driver = Driver("run", str(study), "--out", str(out), "--no-report", env=hold_env(hold), log=log)
    try:
        wait_for(lambda: held(hold), "the trial to be held after epoch 1", driver, log, timeout_s=900)
        for path in out.glob("mlflow.db*"):
            path.unlink()
        for h in held(hold):
            h.with_suffix(".release").write_text("")
        assert driver.proc.wait(timeout=900) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert text.count("is not answering") == 1 and "Traceback" not in text, text[-3000:]
        assert len(parquet_store.read(out)) == 2  # val and test of the one trial

        resumed = run_attnsweep("run", str(study), "--out", str(out), "--resume", "--no-report")
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout[-3000:]
        after = counts(out)
        assert after["trial_runs"] == 1 and after["duplicates"] == 0 and after["running_runs"] == 0, after
        assert parquet_store.read(out).to_pandas()["mlflow_run_id"].notna().all()
    finally:
        driver.cleanup()
