"""Run a sweep's variants as Ray tasks (`sweep.executor: ray`): on an existing cluster or a local Ray instance.

Ray is imported only here and only when chosen. Every task logs to the sweep's tracking server.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

from components.errors import InputError
from pipelines import terminal, tracking
from pipelines.config import RayConfig
from pipelines.prepare import Prepared
from pipelines.workers import Job, run_job, use_cores

log = logging.getLogger("descent")
INSTALL = "pip install -e '.[ray]'"
SERVER = "mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000"
KILLED = "interrupted: its Ray worker died before the variant finished"


def check_ray() -> None:
    """Refuse, before any run starts, what cannot work: Ray missing, or a store that Ray workers cannot share."""
    _import_ray()
    if tracking.is_local_store():
        raise InputError(
            f"sweep.executor=ray needs a tracking server that every Ray worker reaches, not the local store "
            f"{tracking.tracking_uri()}: start one ({SERVER}) and export MLFLOW_TRACKING_URI=http://127.0.0.1:5000"
        )


def share_gpus() -> None:
    """Make this (the sweep's) process take GPU memory as it needs it, not TensorFlow's default of nearly all of it:
    the network it builds to check it must leave a GPU of this node to the Ray tasks that train on it."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # TensorFlow already ran in this process: too late, and harmless
            tf.config.experimental.set_memory_growth(gpu, True)


class RayExecutor:
    """Jobs as Ray tasks; a task whose worker dies is rerun, at most `settings.max_retries` times."""

    def __init__(self, settings: RayConfig, prepared: Prepared) -> None:
        self.settings, self.prepared = settings, prepared
        self.pending: dict[Any, Job] = {}
        self.ray: Any = None
        self.started = False

    def submit(self, job: Job) -> None:
        if self.ray is None:
            self.ray = _import_ray()
            self.started = _connect(self.ray, self.settings.address)
            self.data = self.ray.put(self.prepared)  # one copy in the object store: no node needs the data file
            self.task = self.ray.remote(_attempt)
            self.store = tracking.tracking_uri()
            self.folder = os.getcwd()  # where relative paths (model.builder) are read from, on every node that has it
        s = self.settings
        options = self.task.options(
            name=f"descent:{job.name}",
            num_cpus=s.cpus_per_variant,
            num_gpus=s.gpus_per_variant,
            max_retries=s.max_retries,  # a dead worker, not a broken variant (that is an outcome)
        )
        # run_job travels as an argument (by reference), so a test can hand workers another body
        self.pending[options.remote(job, self.data, self.store, s.cpus_per_variant, run_job, self.folder)] = job

    def outcomes(self) -> Iterator[dict]:
        """Each job's outcome as its task finishes, including jobs submitted while iterating."""
        while self.pending:
            [done], _ = self.ray.wait(list(self.pending), num_returns=1)
            yield _outcome(self.ray, done, self.pending.pop(done))

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *_: Any) -> None:
        for ref in self.pending:  # Ctrl-C or SIGTERM: stop the rest; a resumed sweep ends their runs FAILED
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.started:
            self.ray.shutdown()


def _attempt(job: Job, prepared: Prepared, store: str, cpus: float, body: Any, folder: str = "") -> dict:
    """One try at a job on a Ray worker (run_job first ends FAILED the runs of a try whose worker died)."""
    os.environ["MLFLOW_TRACKING_URI"] = store  # the sweep's tracking server, whatever the node's environment says
    if folder and os.path.isdir(folder):  # the sweep's working directory, where the node has it (README: Ray)
        os.chdir(folder)
    use_cores(max(1, math.ceil(cpus)))  # the CPUs Ray reserved for the task, not every core of the node
    return body(job, prepared)


def _outcome(ray: Any, ref: Any, job: Job) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:  # every try's worker died, or the task could not run at all
        for run in tracking.running(job.parent_run_id, job.name):
            tracking.mark_failed(run.info.run_id, KILLED)
        cause = getattr(exc, "cause", None) or exc  # the task's own exception; Ray's for a dead worker
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return {"name": job.name, "state": "failed", "error": f"{type(exc).__name__}: {reason}"}


def _connect(ray: Any, address: str | None) -> bool:
    """Join `address` (or RAY_ADDRESS), else start a local instance; True when this call started Ray here."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, **terminal.ray_options())
    except ConnectionError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at {address or 'RAY_ADDRESS'} ({exc}): "
            "start it (ray start --head) or fix ray.address / RAY_ADDRESS"
        ) from None
    log.info("Ray cluster: %s CPUs, %s GPUs", *(ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")))
    return True


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"sweep.executor=ray needs Ray, which is not installed: {INSTALL}") from None
    return ray
