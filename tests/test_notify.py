"""`notify:` in a study: Apprise's `json://` posts reach a real HTTP server on 127.0.0.1 when a
study finishes (and its variant's repeats), and when it fails; the command gets the message too."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from orchestrate_setup import STANDIN, run_attnsweep
from survive_setup import one_trial_study

from attnsweep.pipelines.config.study import StudyError, load_study


@pytest.fixture
def endpoint():
    """An HTTP server on 127.0.0.1 keeping every JSON body posted to it -> (json:// URL, posts)."""
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's name
            posts.append({"path": self.path, **json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_address[1]}/hook", posts
    server.shutdown()
    server.server_close()


def _with_notify(path: Path, notify, **train) -> Path:
    study = yaml.safe_load(path.read_text())
    study["notify"] = notify
    study["train"].update(train)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_finished_study_notifies(tmp_path, endpoint):
    url, posts = endpoint
    study = _with_notify(one_trial_study(tmp_path, epochs=1, features=None), [url])  # the stand-in: no checkpoint
    out = tmp_path / "out"
    done = run_attnsweep("run", str(study), "--out", str(out), "--no-report", env=STANDIN)
    assert done.returncode == 0, done.stderr[-3000:]
    titles = [p["title"] for p in posts]
    assert titles == ["attnsweep: tiny resnet18 repeats finished", "attnsweep: tiny finished"], posts
    assert all(p["path"] == "/hook" and p["type"] == "info" for p in posts)
    summary = posts[1]["message"].splitlines()
    assert summary[0].startswith("tiny: test balanced_accuracy resnet18 ") and "(n=1); 1 trials recorded, 0 failed" \
        in summary[0], summary
    assert summary[1] == f"no report yet (attnsweep report {out})"


@pytest.mark.slow
def test_a_failed_study_notifies_urls_and_the_command(tmp_path, endpoint):
    url, posts = endpoint
    got = tmp_path / "command-got.txt"
    study = _with_notify(one_trial_study(tmp_path), {"urls": [url], "command": f"cat > {got}; echo $ATTNSWEEP_EVENT >> {got}"},
                         batch_size=4096)  # larger than the training set: the driver fails before any job
    done = run_attnsweep("run", str(study), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert [p["title"] for p in posts] == ["attnsweep: tiny failed"] and posts[0]["type"] == "failure"
    first = posts[0]["message"].splitlines()[0]
    assert first.startswith("tiny failed: train.batch_size: 4096 is larger than the training set"), first
    assert got.read_text().splitlines()[:2] == ["attnsweep: tiny failed", first]
    assert got.read_text().splitlines()[-1] == "failed"


def test_notify_settings_are_validated(tmp_path):
    path = _with_notify(one_trial_study(tmp_path), ["nonsense://x"])
    with pytest.raises(StudyError, match=r"notify: Value error, urls: not a URL Apprise can send to: 'nonsense://x'|"
                                         r"notify: urls: not a URL Apprise can send to: 'nonsense://x'"):
        load_study(path)
    assert load_study(_with_notify(path, "json://127.0.0.1:9/x")).notify.urls == ["json://127.0.0.1:9/x"]
