import pandas as pd
import pytest

from components.claims import claims_table
from components.compare import (
    VariantRecord,
    comparison_table,
    plot_comparison,
    seed_table,
    seed_verdict,
    summary_markdown,
    target_value,
)


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
    assert (
        "**Fastest to the target** (val_accuracy 0.8500; seconds of training): adam-bs32 in 2 s, 2 epochs, 8 updates."
        in text
    )
    assert "Diverged (loss became NaN or infinite): momentum-bs32." in text
    assert "Failed: rmsprop-bs32." in text
    variants = text.split("\n| variant | learning_rate | final_val_accuracy")[1]
    assert variants.count("\n| ") == 1 + len(records)  # separator, one row per variant


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


def _seeded(group, seed, accuracy, regime="minibatch", **final):
    h = pd.DataFrame({"epoch": [1], "val_accuracy": [accuracy], "val_loss": [1.0], "updates": [1], "seconds": [1.0]})
    optimizer, size = group.split("-bs")
    params = {"optimizer": optimizer, "batch_size": size, "regime": regime, "seed": str(seed)}
    final = {"test_accuracy": accuracy, "train_seconds": 1.0, **final}
    return VariantRecord(f"{group}-seed{seed}", f"id-{group}-{seed}", "FINISHED", params, h, final, group=group)


@pytest.mark.parametrize(
    ("second", "verdict"),
    [
        (
            [0.80, 0.81, 0.79],
            "adam-bs32 leads sgd-bs32 by 10 points on average over 3 paired seeds (95% interval 10 to",
        ),
        ([0.88, 0.93, 0.87], "No clear winner: adam-bs32 leads sgd-bs32 by 0.67 points on average over 3 paired seeds"),
    ],
)
def test_seeds_give_mean_spread_and_a_verdict(second, verdict):
    records = [_seeded("adam-bs32", s, a) for s, a in enumerate([0.90, 0.91, 0.89])]
    records += [_seeded("sgd-bs32", s, a) for s, a in enumerate(second)]
    table = comparison_table(records, "classification", None)
    seeds = seed_table(table, "classification")
    assert seeds["variant"].tolist()[0] == "adam-bs32"
    assert seeds.iloc[0]["mean_val_accuracy"] == pytest.approx(0.90)
    assert seeds.iloc[0]["sd_val_accuracy"] == pytest.approx(0.01)
    assert seeds["seeds"].tolist() == [3, 3]
    assert verdict in seed_verdict(table, "classification")
    assert verdict in summary_markdown(table, "classification", None, "x")


def test_one_seed_per_variant_has_no_seed_section(records):
    table = comparison_table(records, "classification", 0.85)
    assert seed_table(table, "classification") is None
    text = summary_markdown(table, "classification", 0.85, "x")
    assert "Across seeds" not in text
    assert "**One seed per variant**" in text


def test_claims_agree_disagree_or_are_not_measured():
    memory = {"batch": 5.0, "minibatch": 1.0, "stochastic": 3.0}  # stochastic above mini-batch: disagrees
    records = [
        _seeded(f"adam-bs{size}", 0, 0.9, regime, total_updates=updates, train_peak_memory_mb=memory[regime])
        for size, regime, updates in ((1, "stochastic", 1000.0), (8, "minibatch", 100.0), (999, "batch", 10.0))
    ]
    claims = claims_table(comparison_table(records, "classification", None), "accuracy", True)
    verdict = dict(zip(claims["claim"], claims["this data"], strict=True))
    assert verdict["Batch descent makes fewer updates than stochastic descent"] == "agrees"
    assert verdict["Batch descent needs more memory than mini-batch"] == "agrees"
    assert verdict["Mini-batch needs more memory than stochastic"] == "disagrees"
    stable = "Batch descent converges stably; stochastic 'shoots': its training loss rises at fewer checks"
    assert verdict[stable] == "not measured"  # no train_loss_rises in this table
    updates = claims.set_index("claim").loc["Batch descent makes fewer updates than stochastic descent"]
    assert (updates["batch"], updates["mini-batch"], updates["stochastic"]) == (10, 100, 1000)
