"""The study's one job watcher: a trial folder is read again only when its directory says that a
file in it was replaced (every trial-folder file is written by rename), and only when a poll is due."""
from __future__ import annotations

import os

from attnsweep.pipelines.sweep.watcher import JobWatcher
from attnsweep.pipelines.trial.folder import TrialFolder

OLD = 1_000_000_000  # seconds since the epoch: long before any poll


def _aged(path, seconds: int = OLD) -> None:
    os.utime(path, (seconds, seconds))  # as if last changed long ago (not within RECENT_S of a poll)


def test_a_folder_is_changed_when_a_file_was_replaced_and_only_when_a_poll_is_due(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _aged(a)
    _aged(b)
    watcher = JobWatcher(folder_poll_s=0)
    assert watcher.changed_folders([a, b, tmp_path / "not-yet"]) == {a, b}  # first seen
    assert watcher.changed_folders([a, b]) == set()  # nothing happened
    TrialFolder(a).append_epoch({"epoch": 1})  # written to a temp name and renamed
    assert watcher.changed_folders([a, b]) == {a}  # changed within RECENT_S: seen again next time too
    _aged(a)
    watcher.changed_folders([a, b])
    assert watcher.changed_folders([a, b]) == set()
    TrialFolder(b).write_result({"status": "ok"})
    _aged(b, OLD + 1)  # an mtime that differs from the one seen, however old
    assert watcher.changed_folders([a, b]) == {b}

    slow = JobWatcher(folder_poll_s=3600)
    assert slow.changed_folders([a]) == {a}
    TrialFolder(a).append_epoch({"epoch": 2})
    assert slow.changed_folders([a]) == set()  # no poll due: no stat at all
    assert [e["epoch"] for e in TrialFolder(a).epochs()] == [1, 2]
