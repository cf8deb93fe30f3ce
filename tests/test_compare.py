import pandas as pd
import pytest

from components.compare import VariantRecord, comparison_table, plot_comparison, summary_markdown, target_value


def _record(name, accuracies, size, status="FINISHED", diverged=False, seconds=1.0):
    n = len(accuracies)
    history = pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "val_accuracy": accuracies,
            "val_loss": [1.0 / (a + 0.1) for a in accuracies],
            "updates": [size * (i + 1) for i in range(n)],
            "seconds": [seconds * (i + 1) for i in range(n)],
        }
    )
    optimizer, _ = name.split("-")
    params = {"optimizer": optimizer, "batch_size": str(size), "regime": "minibatch"}
    final = {"test_accuracy": accuracies[-1] - 0.01, "train_seconds": seconds * n, "total_updates": float(size * n)}
    return VariantRecord(name, f"id-{name}", status, params, history, final, diverged)


@pytest.fixture
def records():
    return [
        _record("sgd-bs1", [0.5, 0.7, 0.9], 100, seconds=3.0),
        _record("adam-bs32", [0.8, 0.92, 0.95], 4),
        _record("momentum-bs32", [0.3, float("nan")], 4, diverged=True),
        VariantRecord("rmsprop-bs32", "id-r", "FAILED", {"optimizer": "rmsprop", "batch_size": "32"}, pd.DataFrame()),
    ]


def test_target_defaults_to_a_fraction_of_the_best(records):
    assert target_value(records, "classification", None, 0.9) == pytest.approx(0.9 * 0.95)
    assert target_value(records, "classification", 0.5, 0.9) == 0.5


def test_table_ranks_on_validation_and_counts_time_to_target(records):
    table = comparison_table(records, "classification", target=0.85)
    assert table["variant"].tolist() == ["adam-bs32", "sgd-bs1", "momentum-bs32", "rmsprop-bs32"]
    adam = table.iloc[0]
    assert (adam["best_epoch"], adam["epochs_to_target"], adam["updates_to_target"]) == (3, 2, 8)
    assert adam["seconds_to_target"] == 2.0
    sgd = table.iloc[1]
    assert (sgd["epochs_to_target"], sgd["updates_to_target"], sgd["seconds_to_target"]) == (3, 300, 9.0)
    assert table["status"].tolist()[2:] == ["diverged", "failed"]
    assert bool(table.iloc[2]["diverged"])


def test_unreached_target_is_empty_not_zero(records):
    table = comparison_table(records, "classification", target=0.99)
    assert table["epochs_to_target"].isna().all()


def test_summary_names_best_fastest_diverged_failed(records):
    table = comparison_table(records, "classification", target=0.85)
    text = summary_markdown(table, "classification", 0.85, "Sweep x")
    assert "**Best variant: adam-bs32**" in text
    assert "**Fastest to the target** (val_accuracy 0.8500): adam-bs32 in 2.0 s, 2 epochs, 8 updates." in text
    assert "Diverged (loss became NaN or infinite): momentum-bs32." in text
    assert "Failed: rmsprop-bs32." in text
    assert text.count("\n| ") == 2 + len(records)  # header, separator, one row per variant


def test_regression_ranks_lower_mae_first():
    def rec(name, mae):
        h = pd.DataFrame({"epoch": [1], "val_mae": [mae], "val_loss": [mae], "updates": [1], "seconds": [1.0]})
        return VariantRecord(name, name, "FINISHED", {"optimizer": name, "batch_size": "1"}, h, {"test_mae": mae})

    records = [rec("a-bs1", 5.0), rec("b-bs1", 3.0)]
    assert target_value(records, "regression", None, 0.5) == 6.0
    assert comparison_table(records, "regression", 6.0)["variant"].tolist() == ["b-bs1", "a-bs1"]


def test_plots_are_written(records, tmp_path):
    table = comparison_table(records, "classification", target=0.85)
    paths = plot_comparison(records, table, "classification", tmp_path)
    names = sorted(p.name for p in paths)
    assert names == [
        "test_metric.png",
        "updates_to_target.png",
        "val_loss_by_epoch.png",
        "val_loss_by_second.png",
        "val_loss_by_update.png",
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
