"""The MLflow UI in headless Chromium, as a person looks at it: a sweep's runs, charts, comparison, and groups."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import InputError

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
        _close_assistant(page)
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


@dataclass
class Grouped:
    """The runs view grouped by one tag: the groups in the runs list, the lines of the val_loss chart."""

    groups: list[str]
    lines: list[str]
    screenshot: Path


def capture_grouped(url: str, experiment_id: str, tags: list[str], folder: Path, link: str = "") -> dict[str, Grouped]:
    """Group the runs view by each tag with the two clicks of the README (Group by, then the tag); read the chart.

    `link`: a grouped link as the end of a sweep prints it (`.../#/experiments/...`), opened as is on `url`: "link".
    """
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for tag in [*tags, "link"] if link else tags:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})  # a new page: no grouping kept
            if tag == "link":
                page.goto(url + "/#/" + link.split("/#/", 1)[1])
            else:
                page.goto(f"{url}/#/experiments/{experiment_id}/runs")
                page.locator('button:has-text("Group by")').first.click()
                page.locator('[role="menuitemcheckbox"]', has_text=re.compile(f"^{re.escape(tag)}$")).first.click()
                page.keyboard.press("Escape")
                page.locator('label:has(input[value="CHART"])').click()
            _close_assistant(page)
            search = page.get_by_placeholder("Search metric charts")
            search.wait_for(timeout=60_000)
            search.fill("val_loss")
            page.locator('h4[title="val_loss"]').first.wait_for(timeout=30_000)
            page.wait_for_timeout(2000)  # let the chart draw
            groups = page.get_by_text(re.compile(r"^Group: ")).all_inner_texts()
            lines = page.get_by_text(re.compile(r" \(val_loss\)$")).all_inner_texts()
            seen[tag] = Grouped(
                [g.removeprefix("Group: ") for g in groups],
                [line.removesuffix(" (val_loss)") for line in lines],
                _shot(page, folder / f"runs-grouped-by-{tag}.png"),
            )
            page.close()
        browser.close()
    return seen


def _close_assistant(page: object) -> None:
    assistant = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if assistant.count():
        assistant.first.click()


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
