"""The benchmark harness, run small: it must measure every peer and write a complete report (not a speed test)."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_smoke_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    targets = text.split("## Targets")[1].split("\n\n")[1]
    rows = [line for line in targets.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 12
    assert all(re.search(r"\*\*(met|not met)\*\*", row) for row in rows[:-1])
    assert "**not measured**" in rows[-1]  # the CI's own time: never from inside the CI
    assert "**The floor** of the default sweep" in text
    assert "## Learning-rate trials as one stacked model?" in text
    raw = json.loads(text.split("```json")[1].split("```")[0])
    names = {"adam-full", "adam-bs32", "sgd-full", "sgd-bs32"}
    for peer in ("descent_2_workers", "descent_tuned", "descent_1_worker", "descent_untracked", "peer", "sklearn"):
        assert set(raw[peer]["test_accuracy"]) == names, peer
        assert all(0 <= v <= 1 for v in raw[peer]["test_accuracy"].values())
    for key in ("limit_steps_per_second_bs1", "descent_steps_per_second_bs1", "descent_steps_per_second_bs32"):
        assert raw["limit"][key] > 0
    assert set(raw["limit"]["limit_epoch_seconds"]) == {"1", "32", "256", "full"}
    for sweep in ("descent_2_workers", "descent_1_worker", "descent_untracked", "descent_tuned"):
        assert raw[sweep]["cpu_seconds"] > 0 and len(raw[sweep]["repeats"]) == 1
    assert raw["stacked"]["seconds_per_epoch"]["stacked"] > 0
    assert raw["large"]["30000"]["peak_rss_mb"] > raw["large"]["30000"]["feature_matrix_mb"]
    assert "python -m benchmarks.run --smoke" in text
    assert "## Tuning: every variant at its own learning rate" in text
    assert all(row["trials"] >= 5 for row in raw["descent_tuned"]["comparison"])  # the grid, edges maybe
    assert all(row["trials"] == 0 for row in raw["descent_2_workers"]["comparison"])
