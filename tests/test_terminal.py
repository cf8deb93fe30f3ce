"""Which processes are quiet (pipelines/terminal.py) and where their logs go; test_console checks it end to end."""

import sys

import pytest

from pipelines import terminal


@pytest.mark.parametrize(
    ("orig_argv", "argv0", "name"),
    [
        (["python", "-m", "pipelines.sweep", "--data", "iris"], "-m", "sweep"),
        (["python", "-u", "-m", "pipelines.train"], "-m", "train"),
        (["/venv/bin/python", "/venv/bin/descent", "--fresh"], "/venv/bin/descent", "sweep"),
        (["/venv/bin/python", "/venv/bin/descent-scheduled"], "/venv/bin/descent-scheduled", "scheduled"),
        (["python", "-m", "pytest", "tests"], "-m", None),
        (["python", "-c", "from multiprocessing.spawn import spawn_main", "--multiprocessing-fork"], "descent", None),
        (["python", "/ray/_private/workers/default_worker.py"], "default_worker.py", None),
    ],
)
def test_entry_points_are_recognised(monkeypatch, orig_argv, argv0, name):
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert terminal.entry_point() == name


def test_the_logs_are_handed_over_then_deleted(tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "sweep.log").write_text("I0000 cpu_feature_guard.cc:227] ...\n")
    (folder / "worker-1.log").write_text("")
    monkeypatch.setattr(terminal.STATE, "folder", folder)
    handed = []
    terminal.keep_logs(lambda f: handed.append(sorted(p.name for p in f.iterdir())))
    assert handed == [["sweep.log", "worker-1.log"]]
    assert not folder.exists() and terminal.logs_folder() is None
    terminal.keep_logs(handed.append)  # nothing left to hand over
    assert len(handed) == 1


def test_ray_keeps_its_lines_in_its_own_logs_while_quiet(monkeypatch):
    monkeypatch.setattr(terminal.STATE, "quiet", True)
    assert terminal.ray_options() == {"log_to_driver": False}
