"""Entry point `ui`: open the MLflow UI on descent's tracking store at the latest sweep, or screenshot it."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from components.errors import InputError
from pipelines import backend, cli, terminal, tracking
from pipelines.browser import capture_grouped, capture_sweep
from pipelines.compare import latest_sweep
from pipelines.config import load_config

log = logging.getLogger("descent")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(
    store_uri: str,
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 90,
    artifacts: Path | None = None,
    app_name: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A real `mlflow server` (one worker, no job runner) on host:port for the duration; yields its URL.

    `artifacts`: the folder the server keeps uploaded artifacts in (default: ./mlartifacts).
    `app_name`: an MLflow app such as `basic-auth`; `env`: more of the server's environment (its secrets).
    """
    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            raise InputError(f"port {port} on {host} is already in use: pass --port with a free port")
    # The store goes in the environment (`--backend-store-uri`'s variable): a password in it stays out of `ps`.
    env = {**os.environ, **(env or {})}
    env |= {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": store_uri}
    command = [sys.executable, "-m", "mlflow", "server"]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    if app_name is not None:
        command += ["--app-name", app_name]
    # Its output goes to a file: a pipe nobody reads would fill up and stall a server that runs for hours.
    output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed below, after the server)
    server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://{host}:{port}"
    try:
        _wait_healthy(server, url, timeout, output)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        output.close()


def _wait_healthy(server: subprocess.Popen, url: str, timeout: float, output: IO[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output.seek(0)
            reason = output.read().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"mlflow server exited with code {server.returncode}: {reason[0]}")
        if backend.healthy(url, timeout=2):
            return
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not answer on {url}/health within {timeout:.0f} s")


def _entry(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description="Open the MLflow UI at the latest sweep, or save screenshots of it.")
    p.add_argument("--config", default="")
    p.add_argument("--overrides", default="")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--screenshot", default="", help="save screenshots of the latest sweep into this folder and exit")
    cli.add_flag(p, "verbose", "show the libraries' own lines too")
    args = p.parse_args(argv)
    if args.verbose:
        terminal.show_everything()
    cfg = load_config(args.config or None, args.overrides)
    parent = latest_sweep(cfg.experiment)
    experiment = parent.info.experiment_id
    uri = backend.tracking_uri()
    remote = backend.is_remote()
    if args.screenshot:
        children = [c.info.run_name for c in tracking.children(parent)]
        port = free_port()
        with _server_or_remote(uri, remote, port) as url:
            seen = capture_sweep(url, experiment, parent.info.run_id, children, Path(args.screenshot))
            grouped = capture_grouped(url, experiment, ["optimizer"], Path(args.screenshot))
        for shot in [*seen.screenshots, *(g.screenshot for g in grouped.values())]:
            log.info("saved %s", shot)
        return
    base = uri.rstrip("/") if remote else f"http://127.0.0.1:{args.port}"
    log.info("latest sweep: %s/#/experiments/%s/runs (expand run %s)", base, experiment, parent.info.run_id)
    log.info("its comparison: %s/#/experiments/%s/runs/%s/artifacts", base, experiment, parent.info.run_id)
    if remote:
        return
    log.info("serving the MLflow UI on http://127.0.0.1:%d (Ctrl+C stops it)", args.port)
    with mlflow_server(uri, args.port):
        while True:
            time.sleep(3600)


@contextmanager
def _server_or_remote(uri: str, remote: bool, port: int) -> Iterator[str]:
    if remote:
        yield uri.rstrip("/")
        return
    with mlflow_server(uri, port) as url:
        yield url


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
