"""Run a descent entry point with one fault planted in it, as the world would cause it (tests/test_reliability.py).

    python -m tests.faults <fault> <module> [args]  # e.g. python -m tests.faults kill-after-alias pipelines.scheduled

A fault wraps one real function: the process kills itself with SIGKILL (no clean-up, as the OOM killer or a lost
machine would) right after the function's n-th call returns, signals itself again inside it, or waits there.
"""

from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
from collections.abc import Callable


def after(owner: object, name: str, nth: int, action: Callable[[], None]) -> None:
    """Run `action` right after the `nth` call of `owner.name` returns."""
    real = getattr(owner, name)
    calls = [0]

    @functools.wraps(real)
    def wrapper(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            action()
        return result

    setattr(owner, name, wrapper)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sigterm_inside_flush() -> None:
    """While shutting down, a second SIGTERM arrives inside the flush of buffered epoch metrics (systemd's stop)."""
    from pipelines import cli, tracking

    real = tracking.EpochMetrics.flush

    def flush(self: tracking.EpochMetrics) -> None:
        if cli._STOP.is_set() and self.pending:
            os.kill(os.getpid(), signal.SIGTERM)
        real(self)

    tracking.EpochMetrics.flush = flush


def pause_after_first_variant() -> None:
    """The sweep stops after its first variant until the file named by DESCENT_TEST_GO exists (a slow sweep)."""
    import pathlib
    import time

    import pipelines.train

    go = pathlib.Path(os.environ["DESCENT_TEST_GO"])

    def wait() -> None:
        while not go.exists():
            time.sleep(0.1)

    after(pipelines.train, "train", 1, wait)


def plant(fault: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipelines import tracking

    faults = {
        "kill-after-register": lambda: after(mlflow, "register_model", 1, kill),
        "kill-after-alias": lambda: after(MlflowClient, "set_registered_model_alias", 1, kill),
        "kill-after-first-move": lambda: after(tracking, "move_under", 1, kill),
        "sigterm-inside-flush": sigterm_inside_flush,
        "pause-after-first-variant": pause_after_first_variant,
    }
    faults[fault]()


if __name__ == "__main__":
    fault, module, *arguments = sys.argv[1:]
    plant(fault)
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
