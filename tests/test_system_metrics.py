"""System metrics on each variant run: MLflow's system/* keys, at least one sample however short the variant."""

from mlflow.tracking import MlflowClient

from pipelines.config import load_config
from pipelines.train import train
from tests.conftest import tiny

SYSTEM = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}


def test_defaults_switch_system_metrics_on():
    assert load_config().tracking.system_metrics is True


def test_a_variant_shorter_than_the_interval_still_records_one_sample(store):
    cfg = tiny(**{"tracking.system_metrics_interval": 600.0})  # the tiny variant trains for seconds, not minutes
    run_id = train(cfg)["run_id"]
    client = MlflowClient(store)
    metrics = client.get_run(run_id).data.metrics
    assert set(metrics) >= SYSTEM
    history = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in history] == [0]  # the one sample taken when the run ended
    assert 0 <= history[0].value <= 100
    memory = metrics["system/system_memory_usage_megabytes"]
    import psutil

    assert 0 < memory <= psutil.virtual_memory().total / 1e6


def test_system_metrics_can_be_switched_off(store):
    run_id = train(tiny(**{"tracking.system_metrics": False}))["run_id"]
    assert not [k for k in MlflowClient(store).get_run(run_id).data.metrics if k.startswith("system/")]


def test_samples_during_a_variant_are_one_step_each_with_every_key(store):
    run_id = train(tiny(**{"tracking.system_metrics_interval": 0.05, "training.epochs": 3}))["run_id"]
    client = MlflowClient(store)
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("system/")]
    assert set(keys) >= SYSTEM
    histories = {k: client.get_metric_history(run_id, k) for k in keys}
    steps = [m.step for m in histories["system/cpu_utilization_percentage"]]
    assert len(steps) >= 2, "a sample every 0.05 s and one at the end"
    assert steps == list(range(len(steps)))
    assert all([m.step for m in h] == steps for h in histories.values()), "every key in every sample"
