"""The local executor on its own: a worker process that dies while it waits for its next job."""

import os
import signal
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.prepare import prepare
from pipelines.workers import Job, LocalExecutor
from tests.conftest import tiny


def _jobs(store: str, names: list[str]) -> tuple[list[Job], object]:
    cfg = tiny()
    parent = MlflowClient(store).create_run(tracking.experiment_id(cfg.experiment), run_name="sweep-iris")
    jobs = []
    for name in names:
        optimizer, size = name.split("-bs")
        variant = tiny(**{"training.optimizer": optimizer, "training.batch_size": int(size)})
        jobs.append(Job(variant, name, parent.info.run_id, {"descent.kind": "variant"}))
    return jobs, prepare(cfg).for_workers()


def _within(seconds: float, work) -> object:
    """`work()` in a thread: a hung executor fails the test instead of hanging the suite."""
    box = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still waiting after {seconds} s"
    return box[0]


@pytest.mark.slow
def test_a_worker_that_dies_while_idle_is_replaced_and_loses_no_job(store):
    (first, second), prepared = _jobs(store, ["adam-bs16", "sgd-bs16"])
    with LocalExecutor(2, prepared, retries=1) as executor:

        def run_both() -> list[dict]:
            executor.submit(first)  # a worker process is idle (just started): it gets the job
            outcomes = list(executor.outcomes())
            [process] = executor.pool._processes.values()
            os.kill(process.pid, signal.SIGKILL)  # killed while it waits for its next job
            process.join(30)
            for _ in range(100):  # the pool notices that it has lost a process
                if executor.pool._broken:
                    break
                time.sleep(0.1)
            executor.submit(second)
            return outcomes + list(executor.outcomes())

        outcomes = _within(300, run_both)
    assert [(o["name"], o["state"]) for o in outcomes] == [("adam-bs16", "finished"), ("sgd-bs16", "finished")]
    assert executor.losses == {}  # the job went to a new pool; it was never lost with the broken one
    runs = MlflowClient(store).search_runs([tracking.experiment_id(tiny().experiment)])
    assert sorted((r.info.run_name, r.info.status) for r in runs if r.info.run_name != "sweep-iris") == [
        ("adam-bs16", "FINISHED"),
        ("sgd-bs16", "FINISHED"),
    ]
    process = {r.info.run_name: r.data.tags["descent.process"] for r in runs if r.info.run_name != "sweep-iris"}
    # a worker process trained each: the first, and a new one (in a new pool) the second; the broken pool was
    # replaced, not left broken with the sweep's own process training everything from then on
    assert len({process["adam-bs16"], process["sgd-bs16"], str(os.getpid())}) == 3
    MlflowClient(store).set_terminated(first.parent_run_id)
