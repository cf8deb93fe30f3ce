"""Run a sweep's variants as Ray tasks (`sweep.executor: ray`): on an existing cluster or a local Ray instance.

Ray is imported only here and only when chosen. Every task logs to the sweep's tracking server.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from components.errors import InputError
from pipelines import backend, cli, terminal, tracking
from pipelines.config import RayConfig
from pipelines.prepare import Prepared
from pipelines.workers import DIED, Job, job_record, run_job, use_cores

log = logging.getLogger("descent")
INSTALL = "pip install -e '.[ray]'"
SERVER = "mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000"
TICK = 30.0  # seconds between the sweep's looks at its signals and heartbeat while Ray tasks train


def check_ray() -> None:
    """Refuse, before any run starts, what cannot work: Ray missing, or a store that Ray workers cannot share."""
    _import_ray()
    if backend.is_local_store():
        raise InputError(
            f"sweep.executor=ray needs a tracking server that every Ray worker reaches, not the local store "
            f"{backend.tracking_uri()}: start one ({SERVER}) and export MLFLOW_TRACKING_URI=http://127.0.0.1:5000"
        )


def share_gpus() -> None:
    """Make this (the sweep's) process take GPU memory as it needs it, not TensorFlow's default of nearly all of it:
    the network it builds to check it must leave a GPU of this node to the processes (workers, Ray tasks) that train."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # TensorFlow already ran in this process: too late, and harmless
            tf.config.experimental.set_memory_growth(gpu, True)


class RayExecutor:
    """Jobs as Ray tasks; a task whose worker dies is tried again, at most `settings.max_retries` times.

    The retries are the sweep's, not Ray's: the sweep sees the worker die, so it ends the run the dead try left
    RUNNING (with the cause) before the next try starts. Stopped (SIGTERM, Ctrl+C), it cancels the tasks, which end
    their runs KILLED; those that do not stop within half of `shutdown_timeout` are killed and their runs ended
    KILLED here.
    """

    def __init__(self, settings: RayConfig, prepared: Prepared, shutdown_timeout: float) -> None:
        self.settings, self.prepared, self.grace = settings, prepared, shutdown_timeout / 2
        self.pending: dict[Any, Job] = {}
        self.tries: dict[str, int] = {}
        self.ray: Any = None
        self.started = False

    def submit(self, job: Job) -> None:
        if self.ray is None:
            self.ray = _import_ray()
            self.started = _connect(self.ray, self.settings.address)
            self.data = self.ray.put(self.prepared)  # one copy in the object store: no node needs the data file
            self.task = self.ray.remote(_attempt)
            self.store = backend.tracking_uri()
            self.folder = os.getcwd()  # where relative paths (model.builder) are read from, on every node that has it
        s = self.settings
        options = self.task.options(
            name=f"descent:{job.name}",
            num_cpus=s.cpus_per_variant,
            num_gpus=s.gpus_per_variant,
            max_retries=0,  # retried by outcomes(), which ends the dead try's run first
        )
        # run_job travels as an argument (by reference), so a test can hand workers another body
        self.pending[options.remote(job, self.data, self.store, s.cpus_per_variant, run_job, self.folder)] = job

    def outcomes(self) -> Iterator[dict]:
        """Each job's outcome as its task finishes, including jobs submitted while iterating."""
        while self.pending:
            done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=TICK)
            cli.check_stop()  # tasks may train on other machines: the sweep itself says the study progresses
            if done:
                job = self.pending.pop(done[0])
                outcome = self._retried(done[0], job)
                if outcome is not None:
                    yield outcome

    def _retried(self, ref: Any, job: Job) -> dict | None:
        """The job's outcome; None when its worker died and it was submitted again."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            died = not isinstance(exc, (ray.exceptions.RayTaskError, ray.exceptions.TaskCancelledError))
            params = job_record(job, len(self.prepared.split.train))[1]
            if not died or self.tries.get(job.name, 0) >= self.settings.max_retries:
                return _failed(job, exc, params)
            reason = _reason(exc)
            orphans = tracking.running(job.parent_run_id, job.name)  # its worker is gone: nobody else ends them
            for run in orphans:
                tracking.mark_failed(run.info.run_id, f"{DIED} ({reason}); tried again", params)
            self.tries[job.name] = self.tries.get(job.name, 0) + 1
            log.info("%s lost its Ray worker (%s); trying it again", job.name, reason)
            self.submit(replace(job, resume_from=orphans[0].info.run_id if orphans else job.resume_from))
            return None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *_: Any) -> None:
        if self.pending:  # Ctrl-C or SIGTERM
            self._cancel()
        if self.started:
            self.ray.shutdown()

    def _cancel(self) -> None:
        """Stop the remaining tasks: each ends its run KILLED; one too slow to is killed and its run ended here."""
        refs, jobs = list(self.pending), list(self.pending.values())
        self.pending.clear()
        for ref in refs:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task: its open run ends KILLED, as in a local worker
        _, left = self.ray.wait(refs, num_returns=len(refs), timeout=self.grace)
        for ref in left:
            self.ray.cancel(ref, force=True)
        if left:
            self.ray.wait(left, num_returns=len(left), timeout=self.grace)
        for job in jobs:
            for run in tracking.running(job.parent_run_id, job.name):
                tracking.end_run(run.info.run_id, "KILLED", "interrupted: the sweep was stopped before this variant")


def _attempt(job: Job, prepared: Prepared, store: str, cpus: float, body: Any, folder: str = "") -> dict:
    """One try at a job on a Ray worker."""
    os.environ["MLFLOW_TRACKING_URI"] = store  # the sweep's tracking server, whatever the node's environment says
    if folder and os.path.isdir(folder):  # the sweep's working directory, where the node has it (README: Ray)
        os.chdir(folder)
    use_cores(max(1, math.ceil(cpus)))  # the CPUs Ray reserved for the task, not every core of the node
    return body(job, prepared)


def _outcome(ray: Any, ref: Any, job: Job) -> dict:
    """A task's outcome, or a failed one (its open runs ended FAILED) when the task itself failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return _failed(job, exc)


def _failed(job: Job, exc: Exception, params: dict[str, Any] | None = None) -> dict:
    """The failed outcome of a task that failed or whose worker died; its runs left open end FAILED."""
    reason = _reason(exc)
    for run in tracking.running(job.parent_run_id, job.name):
        tracking.mark_failed(run.info.run_id, f"{DIED} ({reason})", params)
    return {"name": job.name, "state": "failed", "error": reason}


def _reason(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc  # the task's own exception; Ray's for a dead worker
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(exc).__name__}: {first}"


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
    finally:
        cli.handle_signals()  # ray.init puts its own SIGTERM handler (exit 15, runs left open) in descent's place
    log.info("Ray cluster: %s CPUs, %s GPUs", *(ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")))
    return True


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"sweep.executor=ray needs Ray, which is not installed: {INSTALL}") from None
    return ray
