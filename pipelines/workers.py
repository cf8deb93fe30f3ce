"""Run a sweep's variants: in this process, or in worker processes that import TensorFlow once each.

Every variant is a `Job` that a worker turns into one nested MLflow run under the sweep's run; a job
never raises for a broken variant, it returns an outcome saying so.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from pipelines import cli
from pipelines.config import Config
from pipelines.prepare import Prepared, prepare

log = logging.getLogger("descent")
PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>


@dataclass(frozen=True)
class Job:
    """One variant (and seed) of a sweep, as a worker receives it."""

    cfg: Config  # training.optimizer, batch_size and seed are this variant's
    name: str  # the run's name, e.g. adam-bs32 or adam-bs32-seed1
    parent_run_id: str
    tags: dict[str, str]


def run_job(job: Job, prepared: Prepared | None = None) -> dict:
    """Train one job as a run nested under its sweep; a failure is an outcome, not an exception."""
    from pipelines.train import train

    cli.check_stop()
    try:
        prepared = prepared or _prepared(job.cfg)
        result = train(job.cfg, prepared, parent_run_id=job.parent_run_id, tags=job.tags, run_name=job.name)
        return {"name": job.name, "state": "diverged" if result["diverged"] else "finished", "result": result}
    except Exception as exc:  # one broken variant must not stop the study; its run is FAILED with the reason
        return {"name": job.name, "state": "failed", "error": f"{type(exc).__name__}: {exc}"}


def worker_count(workers: int | str, jobs: int) -> int:
    """`auto`: one worker per CPU core, or one when TensorFlow sees a GPU (workers would share it); at most `jobs`."""
    if workers == "auto":
        import tensorflow as tf

        workers = 1 if tf.config.list_physical_devices("GPU") else (os.cpu_count() or 1)
    return max(1, min(int(workers), jobs))


def run_local(jobs: list[Job], workers: int, prepared: Prepared) -> Iterator[dict]:
    """Outcomes as jobs finish: in this process for one worker, else in a pool of worker processes."""
    if workers <= 1:
        for job in jobs:
            yield run_job(job, prepared)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked copy of a process that already runs TensorFlow threads can deadlock.
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(threads,))
    try:
        yield from pool.imap_unordered(run_job, jobs)
        pool.close()
    except BaseException:
        # Ctrl-C or SIGTERM: each worker gets SIGTERM, ends its open run KILLED and exits.
        pool.terminate()
        raise
    finally:
        pool.join()


def use_cores(threads: int) -> None:
    """TensorFlow in this process uses `threads` cores (before it first runs; afterwards its pools are fixed)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process
        pass


def _start_worker(threads: int) -> None:
    """Set up a worker: its share of the cores, SIGTERM ending the open run, stop when the sweep dies."""
    # Two workers on two cores each using both would fight over them; split the cores instead.
    use_cores(threads)
    signal.signal(signal.SIGTERM, cli.terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cli.stop_with_parent(os.getppid())  # checked at every epoch's end, on every system
    if sys.platform.startswith("linux"):  # and on Linux at once: SIGTERM when the sweep process dies, even by -9
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


_PREPARED: dict[str, Prepared] = {}


def _prepared(cfg: Config) -> Prepared:
    """The data of a worker's jobs, loaded and split once per worker (every job of a sweep shares it)."""
    key = json.dumps(cfg.model_dump(include={"data", "split"}), sort_keys=True)
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare(cfg)
    return _PREPARED[key]
