"""Run a sweep's variants: in this process, or in worker processes that import TensorFlow once each.

Every variant is a `Job` that a worker turns into one nested MLflow run under the sweep's run; a job
never raises for a broken variant, it returns an outcome saying so. Jobs may be submitted while others
run (a later seed waits for the first seed's learning rate), and a job whose worker process dies is
retried on a fresh one: the executor, which saw the worker die, ends the run it left RUNNING.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipelines import access, cli, tracking
from pipelines.config import Config
from pipelines.prepare import Prepared
from pipelines.tune import Chosen

log = logging.getLogger("descent")
PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>
DIED = "interrupted: its worker process died before the variant finished"  # written by the executor that saw it


@dataclass(frozen=True)
class Job:
    """One variant (and seed) of a sweep, as a worker receives it."""

    cfg: Config  # training.optimizer, batch_size and seed are this variant's
    name: str  # the run's name, e.g. adam-bs32 or adam-bs32-seed1
    parent_run_id: str
    tags: dict[str, str]
    chosen: Chosen | None = None  # a learning rate chosen by another job (a first seed's, or scaled)
    resume_from: str | None = None  # an interrupted run of this variant: its finished trials are reused


def run_job(job: Job, prepared: Prepared | None = None) -> dict:
    """Train one job as a run nested under its sweep; a failure is an outcome, not an exception."""
    from pipelines.train import train

    cli.shutdown_within(job.cfg.tracking.shutdown_timeout)
    cli.check_stop()
    access.note(experiment=job.cfg.experiment)  # named if the tracking server refuses this worker's login
    try:
        result = train(
            job.cfg,
            prepared or (_PREPARED[0] if _PREPARED else None),  # None: train() loads the data itself
            parent_run_id=job.parent_run_id,
            tags=job.tags,
            run_name=job.name,
            chosen=job.chosen,
            resume_from=job.resume_from,
        )
        return {"name": job.name, "state": "diverged" if result["diverged"] else "finished", "result": result}
    except Exception as exc:  # one broken variant must not stop the study; its run is FAILED with the reason
        stopped = cli.stop_inside(exc)
        if stopped is not None:  # not broken: stopped (SIGTERM or Ctrl+C) inside a library's C code
            raise stopped from None
        outcome = {"name": job.name, "state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        refused = access.refusal(exc)  # said here, where the worker's own login is known
        return outcome | ({"refused": refused} if refused else {})


def job_record(job: Job, n_train: int) -> tuple[dict[str, str], dict[str, Any]]:
    """The tags and params that name a job's variant in the comparison: for a run its process never ended."""
    from components.optimizers import batch_regime
    from pipelines.grouping import group_tags

    t = job.cfg.training
    regime = batch_regime(t.batch_size, n_train)
    variant = f"{t.optimizer}-{regime.label}"
    tags = {**job.tags, "descent.variant": variant, **group_tags(t.optimizer, regime, variant)}
    params = {"optimizer": t.optimizer, "batch_size": regime.batch_size, "regime": regime.regime, "seed": t.seed}
    return tags, params | {"epochs": t.epochs}


def worker_death(exitcodes: list[int | None]) -> str:
    """What killed a pool's worker, from its processes' exit codes (the pool itself ends the others with SIGTERM)."""
    signals = {-c for c in exitcodes if c is not None and c < 0}
    if len(signals) > 1:
        signals.discard(signal.SIGTERM)
    if signals:
        names = ", ".join(f"signal {s} ({signal.Signals(s).name})" for s in sorted(signals))
        return f"a worker was killed by {names}" + (": out of memory?" if signal.SIGKILL in signals else "")
    codes = [c for c in exitcodes if c]
    return f"a worker exited with code {codes[0]}" if codes else "a worker process died"


def worker_count(workers: int | str, jobs: int) -> int:
    """`auto`: one worker per CPU core, or one when TensorFlow sees a GPU (workers would share it); at most `jobs`."""
    if workers == "auto":
        import tensorflow as tf

        workers = 1 if tf.config.list_physical_devices("GPU") else (os.cpu_count() or 1)
    return max(1, min(int(workers), jobs))


class LocalExecutor:
    """Jobs in this process (one worker), or in this process and a pool of spawned worker processes (one fewer
    than `workers`: the sweep's own process has imported TensorFlow already); outcomes as jobs finish.

    Jobs wait in a queue: a worker process gets one when it is idle, and this process trains the next one meanwhile
    (never a job that has lost a worker already: one that crashed its process once is tried again on a worker,
    whose death the sweep survives).
    """

    def __init__(self, workers: int, prepared: Prepared, retries: int) -> None:
        self.workers, self.prepared, self.retries = workers, prepared, retries
        self.queue: list[Job] = []
        self.pending: dict[Future, Job] = {}
        self.tries: dict[str, int] = {}  # tries whose worker died while the job's run was open
        self.losses: dict[str, int] = {}  # times the job was lost with a pool, started or not
        self.pool: ProcessPoolExecutor | None = None
        self.handoff: str | None = None  # the file the worker processes read `prepared` from
        # Jobs are handed to idle workers from the pool's thread too (a job's end), while this one trains its own.
        self.lock = threading.RLock()
        self.halted = False  # the pool is being stopped: hand out nothing until it is replaced
        self.consumer = threading.get_ident()  # the thread that reads the outcomes (and may replace the pool)

    def submit(self, job: Job) -> None:
        with self.lock:
            self.queue.append(job)
        self._hand_out()

    def outcomes(self) -> Iterator[dict]:
        """Each job's outcome as it finishes, including jobs submitted while iterating."""
        self.consumer = threading.get_ident()
        while True:
            self._hand_out()
            with self.lock:
                if not (self.queue or self.pending):
                    return
                waiting = list(self.pending)  # the pool's thread adds to it as it hands out jobs
                done = [future for future in waiting if future.done()]
                mine = None if done else self._mine()
            if mine is not None:  # this process trains the next job no worker has taken
                yield run_job(mine, self.prepared)
                continue
            if not done:
                done, _ = wait(waiting, return_when=FIRST_COMPLETED)
            broken = []
            for future in done:
                with self.lock:
                    job = self.pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken.append(job)
            if broken:
                yield from self._recover(broken)

    def _hand_out(self, *_: object) -> None:
        """Give queued jobs to idle worker processes, one each (also called as a worker's job ends). A job handed
        to the pool is out of this process's reach: the pool queues one more than it has workers."""
        with self.lock:
            while self.queue and not self.halted and sum(not f.done() for f in self.pending) < self.workers - 1:
                if self.pool is None:
                    self.pool = self._start_pool()
                job = self.queue.pop(0)
                try:
                    future = self.pool.submit(run_job, job)
                except BrokenProcessPool:
                    self.queue.insert(0, job)
                    if self.pending or threading.get_ident() != self.consumer:
                        return  # outcomes() recovers the jobs the broken pool held
                    self._stop_pool()  # a worker died while idle: no job was lost with it; a new pool takes them
                    continue
                except RuntimeError:  # the pool is shutting down
                    self.queue.insert(0, job)
                    return
                self.pending[future] = job
                future.add_done_callback(self._hand_out)

    def _mine(self) -> Job | None:
        """The first queued job that never lost a worker, taken from the queue; None if none. With one worker,
        every job is this process's."""
        for i, job in enumerate(self.queue):
            if self.workers <= 1 or not self.losses.get(job.name):
                return self.queue.pop(i)
        return None

    def _recover(self, broken: list[Job]) -> Iterator[dict]:
        """A worker died (killed, out of memory, a crash in TensorFlow): every job the pool held is lost with it.

        The pool stops its other workers (SIGTERM: their runs end KILLED). A job whose run the dead worker left
        RUNNING lost a started try: that run ends FAILED with the cause, and the job is tried again on a new pool
        at most `retries` times, reusing the try's finished learning-rate trials. Jobs that never started, or
        whose worker ended its run itself, are always tried again (a few times at most).
        """
        with self.lock:
            self.halted = True
            lost = broken + list(self.pending.values())
            self.pending.clear()
        processes = list(self.pool._processes.values()) if self.pool and self.pool._processes else []
        self._stop_pool()  # waits for the other workers to end their runs
        cause = worker_death([p.exitcode for p in processes])
        n_train = len(self.prepared.split.train)
        for job in lost:
            orphans = tracking.running(job.parent_run_id, job.name)  # its worker is gone: nobody else ends them
            self.tries[job.name] = self.tries.get(job.name, 0) + bool(orphans)
            self.losses[job.name] = self.losses.get(job.name, 0) + 1
            again = self.tries[job.name] <= self.retries and self.losses[job.name] <= self.retries + 2
            reason = f"{DIED} ({cause})" + ("; tried again" if again else "")
            for run in orphans:
                tracking.mark_failed(run.info.run_id, reason, job_record(job, n_train)[1])
            if again:
                log.info("%s lost its worker (%s); trying it again on a new one", job.name, cause)
                resume = orphans[0].info.run_id if orphans else job.resume_from
                with self.lock:
                    self.queue.insert(0, replace(job, resume_from=resume))
            else:
                yield {"name": job.name, "state": "failed", "error": f"WorkerDied: {cause}"}
        with self.lock:
            self.halted = False
        self._hand_out()

    def _start_pool(self) -> ProcessPoolExecutor:
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        # The workers get the sweep's own prepared data (they never read the data file again) from a file: sent down
        # the pipe that starts a worker, it would hold the sweep up until the worker had imported TensorFlow.
        if self.handoff is None:
            with tempfile.NamedTemporaryFile(prefix="descent-prepared-", suffix=".pickle", delete=False) as file:
                pickle.dump(self.prepared, file, protocol=pickle.HIGHEST_PROTOCOL)
            self.handoff = file.name
        # spawn, not fork: a forked copy of a process that already runs TensorFlow threads can deadlock.
        return ProcessPoolExecutor(
            self.workers - 1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(threads, self.handoff, os.getpid()),
        )

    def _stop_pool(self, terminate: bool = False) -> None:
        if self.pool is None:
            return
        if terminate:  # Ctrl-C or SIGTERM: each worker gets SIGTERM, ends its open run KILLED and exits
            for process in list(getattr(self.pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        with self.lock:
            self.halted = True  # a cancelled job's callback must not start another
        self._stop_pool(terminate=kind is not None)
        if self.handoff is not None:
            Path(self.handoff).unlink(missing_ok=True)


def use_cores(threads: int) -> None:
    """TensorFlow in this process uses `threads` cores (before it first runs; afterwards its pools are fixed)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process
        pass


_PREPARED: list[Prepared] = []


def _start_worker(threads: int, prepared: str, sweep: int) -> None:
    """Set up a worker: its share of the cores, the sweep's data (from the file `prepared`), SIGTERM ending the open
    run, stop when the sweep (process id `sweep`) dies, also while this worker was starting."""
    # Two workers on two cores each using both would fight over them; split the cores instead.
    use_cores(threads)
    with open(prepared, "rb") as file:
        _PREPARED[:] = [pickle.load(file)]
    cli.handle_signals()  # the sweep's own SIGTERM to each worker repeats the process group's: ignored
    cli.stop_with_parent(sweep)  # checked at every epoch's end, on every system
    if sys.platform.startswith("linux"):  # and on Linux at once: SIGTERM when the sweep process dies, even by -9
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != sweep:  # it died while this worker imported TensorFlow: take none of its jobs
        os._exit(0)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
