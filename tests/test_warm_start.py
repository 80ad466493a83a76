"""`search.warm_start`: an earlier study's selected configuration (or listed points) is evaluated
first by the next study's search (Optuna through `points_to_evaluate`, the grid in order), and the
report's recipe says so."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml
from orchestrate_setup import STANDIN, run_attnsweep, shrunk_study

from attnsweep.pipelines.config.study import SearchSettings, StudyError, load_study
from attnsweep.pipelines.report import details, study_folder
from attnsweep.pipelines.store import parquet_store, warm_start
from attnsweep.pipelines.sweep import phases
from attnsweep.pipelines.sweep.status import status

NONE = pd.DataFrame(columns=["lr", "weight_decay", "score", "eligible"])


def test_optuna_proposes_the_warm_points_first(tmp_path):
    s = SearchSettings(lr={"low": 1e-3, "high": 1e-1}, weight_decay=[0.0, 1e-4], seed=0,
                       warm_start=[{"lr": 0.037, "weight_decay": 1e-4}, {"lr": 0.5}])  # 0.5: outside the range
    warm = warm_start.points(s, "resnet18", tmp_path)
    assert warm == [{"lr": 0.037, "weight_decay": 1e-4}]
    searcher = phases._search_alg(s, NONE, [], warm)
    assert searcher.suggest("t0") == {"lr": 0.037, "weight_decay": 1e-4}
    assert searcher.suggest("t1") != {"lr": 0.037, "weight_decay": 1e-4}
    line = warm_start.described(tmp_path)
    assert line == ("resnet18: lr 0.037 wd 0.0001 (from the study's list, evaluated first; outside the search "
                    "space: lr 0.5 wd 0)")


def test_the_grid_puts_the_warm_points_first_and_skips_finished_ones(tmp_path):
    s = SearchSettings(algorithm="grid", lr=[0.1, 0.01, 0.001], weight_decay=[0.0],
                       warm_start=[{"lr": 0.001}, {"lr": 0.01}])
    warm = warm_start.points(s, "v", tmp_path)
    finished = pd.DataFrame([{"lr": 0.01, "weight_decay": 0.0, "score": 0.5, "eligible": True}])
    searcher = phases._search_alg(s, finished, [], warm)
    assert [searcher.suggest(str(i))["lr"] for i in range(2)] == [0.001, 0.1]


def test_warm_start_names_a_study_folder(tmp_path):
    path = shrunk_study(tmp_path)
    with pytest.raises(StudyError, match=rf"search.warm_start: .*{tmp_path.name}/nowhere is not a study folder"):
        load_study(path, [f"search.warm_start={tmp_path / 'nowhere'}"])


def _first_search_config(out) -> dict:
    rows = parquet_store.read(out).to_pandas()
    first = rows[rows["phase"] == "search"].sort_values("finished_at").iloc[0]
    return {"lr": first["lr"], "weight_decay": first["weight_decay"]}


@pytest.mark.slow
def test_a_warm_started_study_evaluates_the_earlier_best_first(tmp_path):
    """Two real tiny studies (jobs of the stand-in trainer): the second (another seed) starts its
    search from the first one's selection. `attnsweep status` reads the first (a real finished
    folder) as the driver chose."""
    path = shrunk_study(tmp_path, n_variants=1, name="warm")
    study = yaml.safe_load(path.read_text())
    study["train"]["epochs"] = 1
    study["splits"].update(search_splits=1, repeat_splits=1)
    study["ood"], study["max_concurrent"], study["search"]["trials"] = {}, 1, 2
    study["features"] = None  # the stand-in keeps no checkpoint to analyse
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    first, second = tmp_path / "first", tmp_path / "second"
    done = run_attnsweep("run", str(path), "--out", str(first), "--no-report", env=STANDIN)
    assert done.returncode == 0, done.stderr[-3000:]
    selected = phases.best_config(first, "resnet18", 1)
    assert warm_start.earlier_selection(first, "resnet18") == [selected]
    st = status(first)  # `attnsweep status` on a real finished study folder
    assert st.state == "finished" and [(p.phase, p.done, p.planned) for p in st.phases] == [("search", 2, 2),
                                                                                           ("repeat", 1, 1)]
    assert [p.best for p in st.phases] == [selected, selected] and st.eta_s == 0.0

    done = run_attnsweep("run", str(path), "search.seed=7", f"search.warm_start={first}", "--out", str(second),
                         "--no-report", env=STANDIN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _first_search_config(second) == selected  # one job at a time: the first one finished first
    rows = parquet_store.read(second).to_pandas()
    assert rows[rows["phase"] == "search"]["config_hash"].nunique() == 2  # and the search went on
    recipe = details.recipe(study_folder.load(second)).set_index("setting")["value"]
    assert recipe["search warm start"].startswith(f"resnet18: lr {selected['lr']:.4g} wd "
                                                  f"{selected['weight_decay']:.4g} (from {first}, evaluated first")
