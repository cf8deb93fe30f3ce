"""Entry point `compare`: rebuild a sweep's comparison (table, plots, summary) from its tracked runs alone."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from components.compare import VariantRecord, comparison_table, plot_comparison, summary_markdown, target_value
from components.errors import InputError
from components.records import CHECK_KEYS, EPOCH_KEYS, result_frames, with_seconds
from pipelines import cli, tracking

log = logging.getLogger("descent")


def compare(
    parent: Any, known: dict[str, dict] | None = None, with_table: Callable[[pd.DataFrame], None] | None = None
) -> dict:
    """Read every variant under the sweep run `parent`, log the comparison on it; returns table and summary.

    `known`: the results of variants trained by this sweep (train's result by run id): their per-epoch metrics
    and validation checks are taken from memory instead of being read back from the store (the same values;
    `descent-compare` reads them all back). `with_table`: called with the table before the plots are drawn (the
    sweep sends its best variant's servable model to be logged meanwhile).
    """
    params, tags = parent.data.params, parent.data.tags
    if tags.get("descent.kind") != "sweep":
        raise InputError(f"run {parent.info.run_id} is not a descent sweep: pass the run id of a sweep-<data> run")
    task = tags.get("descent.task", "classification")
    known = known or {}
    records = [record_of(child, known.get(child.info.run_id)) for child in current_variants(tracking.children(parent))]
    if not records:
        raise InputError(f"sweep {parent.info.run_id} has no variant runs: run the sweep (mlflow run .) first")
    target = params.get("sweep.target", "None")
    target = target_value(
        records, task, None if target == "None" else float(target), float(params["sweep.target_fraction"])
    )
    threshold = params.get("sweep.collapse_threshold", "0.1")
    table = comparison_table(records, task, target, None if threshold == "None" else float(threshold))
    title = f"Sweep {tags.get('mlflow.runName', parent.info.run_id)}: {len(records)} variants"
    summary = summary_markdown(table, task, target, title)
    if with_table is not None:
        with_table(table)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table.to_csv(folder / "comparison.csv", index=False)
        (folder / "summary.md").write_text(summary)
        plot_comparison(records, table, task, folder)
        tracking.log_folder_to(parent.info.run_id, folder, "comparison")
    finished = table[table["status"] == "finished"]
    about = (
        f"descent sweep: {len(records)} variants (optimizer x batch size) trained on the same split of "
        f"{params.get('data.source', 'the data')}. The comparison is in this run's artifacts: "
        "comparison/summary.md, comparison/comparison.csv and the plots comparison/*.png. "
        "Expand this run in the runs table to see each variant.\n\n"
    )
    update = {"mlflow.note.content": about + summary}
    if not finished.empty:
        update |= {
            "descent.best_run_id": finished.iloc[0]["run_id"],
            "descent.best_variant": finished.iloc[0]["variant"],
        }
    tracking.set_tags_on(parent.info.run_id, update)
    return {"table": table, "summary": summary, "target": target, "task": task}


def current_variants(runs: list[Any]) -> list[Any]:
    """One run per variant name: a FINISHED one if any (a resume never re-runs those), else the newest."""
    chosen: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        held = chosen.get(run.info.run_name)
        if held is None or held.info.status != "FINISHED":
            chosen[run.info.run_name] = run
    return list(chosen.values())


def record_of(run: Any, result: dict | None = None) -> VariantRecord:
    """A variant's record from its run: params, per-epoch history, final metrics, outcome.

    `result`: what train returned for this run (its history and checks, as they were logged), when known.
    """
    if result is None:
        history = with_seconds(tracking.metric_frame(run.info.run_id, EPOCH_KEYS))
        checks = tracking.metric_frame(run.info.run_id, [f"by_update/{k}" for k in CHECK_KEYS], step="updates")
        checks.columns = [c.removeprefix("by_update/") for c in checks.columns]
    else:
        history, checks = result_frames(result["history"], result["checks"])
    tags = run.data.tags
    return VariantRecord(
        name=run.info.run_name,
        run_id=run.info.run_id,
        status=run.info.status,
        params=run.data.params,
        history=history,
        final=run.data.metrics,
        diverged=tags.get("descent.diverged") == "true",
        error=tags.get("descent.error", ""),
        group=tags.get("descent.variant", ""),
        checks=checks,
        tags=tags,
    )


def latest_sweep(experiment: str) -> Any:
    """The newest sweep run of an experiment."""
    found = tracking.find_runs([tracking.experiment_id(experiment)], {"descent.kind": "sweep"}, max_results=1)
    if not found:
        raise InputError(
            f"no sweep found in experiment {experiment!r}: run `mlflow run .` first or pass -P sweep=<run id>"
        )
    return found[0]


def _entry(argv: list[str] | None) -> None:
    p = cli.parser("Rebuild the comparison of a sweep from its tracked runs.", variant_options=False)
    p.add_argument("--sweep", default="", help="run id of the sweep (default: the newest in the experiment)")
    args = p.parse_args(argv)
    cfg = cli.config_from(args)
    parent = tracking.get_run(args.sweep) if args.sweep else latest_sweep(cfg.experiment)
    result = compare(parent)
    print(result["summary"])
    log.info("comparison logged on run %s: %s", parent.info.run_id, tracking.runs_page(parent.info.experiment_id))


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
