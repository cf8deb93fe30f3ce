"""The guard in conftest.py that fails the suite when a test writes to the clone's own tracking store."""

import os

from tests.conftest import store_changes, store_snapshot


def test_snapshot_sees_every_kind_of_change(tmp_path):
    (tmp_path / "mlruns" / "1" / "abc").mkdir(parents=True)
    (tmp_path / "mlruns" / "1" / "abc" / "meta.yaml").write_text("a")
    (tmp_path / "mlflow.db").write_bytes(b"db")
    (tmp_path / "elsewhere.txt").write_text("not part of the store")
    before = store_snapshot(tmp_path)
    assert set(before) == {"mlflow.db", "mlruns/1/abc/meta.yaml"}
    assert store_changes(before, store_snapshot(tmp_path)) == []

    (tmp_path / "mlartifacts" / "x").mkdir(parents=True)
    (tmp_path / "mlartifacts" / "x" / "model.pkl").write_bytes(b"m")
    (tmp_path / "mlruns" / "1" / "abc" / "meta.yaml").unlink()
    (tmp_path / "mlflow.db").write_bytes(b"db2")
    os.utime(tmp_path / "mlflow.db", ns=(1, 1))  # a different time too, whatever the clock's resolution
    (tmp_path / "elsewhere.txt").write_text("changed, but not the store")
    assert store_changes(before, store_snapshot(tmp_path)) == [
        "added mlartifacts/x/model.pkl",
        "removed mlruns/1/abc/meta.yaml",
        "changed mlflow.db",
    ]
