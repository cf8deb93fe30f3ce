"""Entry point `ui`: open the MLflow UI on descent's tracking store at the latest sweep, or screenshot it."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import InputError
from pipelines import cli, tracking
from pipelines.compare import latest_sweep
from pipelines.config import load_config

log = logging.getLogger("descent")
CHROMIUM = "/usr/bin/chromium"
# Flags for a headless Chromium on a machine with no outside network (it would otherwise keep dialling out).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Capture:
    """What the browser saw on a sweep's pages, and where the screenshots are."""

    children_visible: list[str] = field(default_factory=list)
    chart_titles: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)


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
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{host}:{port}"
    try:
        _wait_healthy(server, url, timeout)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def capture_sweep(url: str, experiment_id: str, parent_run_id: str, children: list[str], folder: Path) -> Capture:
    """Open the sweep in headless Chromium as a person would; screenshot each view."""
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise InputError("screenshots need Playwright: pip install -e '.[ui]'") from None

    if not Path(CHROMIUM).exists():
        raise InputError(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    folder.mkdir(parents=True, exist_ok=True)
    seen = Capture()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/#/experiments/{experiment_id}/runs")
        parent_link = page.locator(f'a[href$="/runs/{parent_run_id}"]').first
        parent_link.wait_for(timeout=60_000)
        assistant = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
        if assistant.count():
            assistant.first.click()
        row = page.locator('div[role="row"]', has=parent_link)
        row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
        _wait_for_any(page, children)
        seen.children_visible = [n for n in children if page.get_by_text(n, exact=True).count()]
        seen.screenshots.append(_shot(page, folder / "runs-table.png"))

        page.locator('label:has(input[value="CHART"])').click()
        search = page.get_by_placeholder("Search metric charts")
        search.wait_for(timeout=30_000)
        # Charts below the fold are drawn only when scrolled to; search each one as a person would.
        for title in ("loss", "val_loss", "val_accuracy", "val_mae", "epoch_seconds", "updates"):
            search.fill(title)
            try:
                page.locator(f'h4[title="{title}"]').first.wait_for(timeout=5_000)
                seen.chart_titles.append(title)
            except PlaywrightTimeout:
                pass
        search.fill("val_")
        page.wait_for_timeout(2000)  # let the charts draw
        seen.screenshots.append(_shot(page, folder / "runs-charts.png"))

        page.goto(f"{url}/#/experiments/{experiment_id}/runs/{parent_run_id}/artifacts")
        page.get_by_text("comparison", exact=True).first.wait_for(timeout=30_000)
        page.get_by_text("comparison", exact=True).first.click()
        plot = page.get_by_text("val_loss_by_update.png", exact=True)
        plot.wait_for(timeout=30_000)
        seen.artifacts = [
            n
            for n in (
                "comparison.csv",
                "summary.md",
                "val_loss_by_epoch.png",
                "val_loss_by_update.png",
                "test_metric.png",
            )
            if page.get_by_text(n, exact=True).count()
        ]
        plot.click()
        page.wait_for_timeout(1500)
        seen.screenshots.append(_shot(page, folder / "sweep-artifacts.png"))
        browser.close()
    return seen


def _wait_for_any(page: object, names: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(page.get_by_text(n, exact=True).count() for n in names):
            page.wait_for_timeout(500)
            return
        page.wait_for_timeout(250)


def _shot(page: object, path: Path) -> Path:
    page.screenshot(path=str(path))
    return path


def _wait_healthy(server: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            reason = (server.stderr.read() if server.stderr else "").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"mlflow server exited with code {server.returncode}: {reason[0]}")
        if tracking.healthy(url, timeout=2):
            return
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not answer on {url}/health within {timeout:.0f} s")


def _entry(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description="Open the MLflow UI at the latest sweep, or save screenshots of it.")
    p.add_argument("--config", default="")
    p.add_argument("--overrides", default="")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--screenshot", default="", help="save screenshots of the latest sweep into this folder and exit")
    args = p.parse_args(argv)
    cfg = load_config(args.config or None, args.overrides)
    parent = latest_sweep(cfg.experiment)
    experiment = parent.info.experiment_id
    uri = tracking.tracking_uri()
    remote = tracking.is_remote()
    if args.screenshot:
        children = [c.info.run_name for c in tracking.children(parent)]
        port = free_port()
        with _server_or_remote(uri, remote, port) as url:
            seen = capture_sweep(url, experiment, parent.info.run_id, children, Path(args.screenshot))
        for shot in seen.screenshots:
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
