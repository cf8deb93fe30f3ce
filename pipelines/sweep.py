"""Entry point `main`: the whole study, every optimizer x batch size as a run nested under one sweep run."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from tqdm import tqdm

from components.compare import RANKING
from components.model import check_activation
from components.optimizers import batch_regime, check_optimizer
from components.sweep import Variant, expand_sweep
from pipelines import cli, grouping, tracking
from pipelines.compare import compare
from pipelines.config import Config, flatten, parse_value
from pipelines.prepare import Prepared, prepare
from pipelines.ray_executor import check_ray, run_ray
from pipelines.train import log_data_record, run_tags
from pipelines.workers import Job, run_local, worker_count

log = logging.getLogger("descent")


def sweep(cfg: Config, fresh: bool = False, prepared: Prepared | None = None) -> dict:
    """Train every variant of cfg.sweep on one shared split; resume the last matching sweep unless `fresh`."""
    prepared = prepared or prepare(cfg)
    n_train = len(prepared.split.train)
    variants = expand_sweep(cfg.sweep.optimizers, cfg.sweep.batch_sizes, n_train)
    for optimizer in dict.fromkeys(v.optimizer for v in variants):
        check_optimizer(optimizer, cfg.hyperparameters(optimizer))
    check_activation(cfg.model.activation)
    if cfg.sweep.executor == "ray":
        check_ray()
    tags = sweep_tags(cfg, prepared)
    launched = os.environ.get("MLFLOW_RUN_ID")
    # Under `mlflow run` the sweep lives where the launcher put it (--experiment-name, or Default).
    experiment = tracking.get_run(launched).info.experiment_id if launched else tracking.experiment_id(cfg.experiment)
    previous = None if fresh else _last_matching(experiment, tags)
    reopen = previous.info.run_id if previous is not None and not launched else None
    with tracking.run(cfg.experiment, f"sweep-{prepared.dataset.name}", tags=tags, run_id=reopen) as parent:
        swept = {k: v for k, v in cfg.optimizers.items() if k in cfg.sweep.optimizers}
        resolved = flatten(cfg.model_dump(exclude={"optimizers"}) | {"optimizers": swept})
        tracking.log_params(resolved | {"variants": len(variants)})
        if reopen is None:
            log_data_record(cfg, prepared)
        done = _reuse(previous, parent) if previous is not None else set()
        outcomes = _run_variants(cfg, prepared, variants, parent, tags, done)
        result = compare(tracking.get_run(parent.info.run_id))
    result.update(parent_run_id=parent.info.run_id, experiment_id=parent.info.experiment_id)
    result.update(reused=sorted(done), outcomes=outcomes)
    return result


MATCH = ("descent.kind", "descent.data_digest", "descent.config_digest", "descent.code_version")


def sweep_tags(cfg: Config, prepared: Prepared) -> dict[str, str]:
    """The tags of a sweep run; MATCH among them identify the same study on the same data and code."""
    return {**run_tags(cfg, prepared), "descent.kind": "sweep", "descent.task": prepared.split.task}


def _last_matching(experiment_id: str, tags: dict[str, str]) -> Any:
    found = tracking.find_runs([experiment_id], {k: tags[k] for k in MATCH}, max_results=1)
    return found[0] if found else None


def _reuse(previous: Any, parent: Any) -> set[str]:
    """Names of variants that already finished in `previous`; runs its crash left RUNNING end FAILED."""
    done: set[str] = set()
    for child in tracking.children(previous):
        status, name = child.info.status, child.info.run_name
        if status == "RUNNING":
            tracking.mark_failed(child.info.run_id, "interrupted: the sweep process ended before this variant did")
        elif status == "FINISHED" and name not in done:
            done.add(name)
            if previous.info.run_id != parent.info.run_id:  # `mlflow run` made a new sweep run: move it there
                tracking.set_tags_on(child.info.run_id, {"mlflow.parentRunId": parent.info.run_id})
    if previous.info.run_id != parent.info.run_id:
        tracking.set_tags_on(previous.info.run_id, {"descent.resumed_in": parent.info.run_id})
        if previous.info.status == "RUNNING":
            tracking.mark_failed(previous.info.run_id, f"interrupted; resumed in run {parent.info.run_id}")
    if done:
        log.info("resuming sweep: %d variant(s) already finished are reused", len(done))
    return done


def _run_variants(
    cfg: Config, prepared: Prepared, variants: list[Variant], parent: Any, tags: dict, done: set[str]
) -> list[dict]:
    jobs = sweep_jobs(cfg, variants, len(prepared.split.train), parent.info.run_id, tags)
    jobs = [job for job in jobs if job.name not in done]
    if cfg.sweep.executor == "ray":
        log.info("%d runs as Ray tasks", len(jobs))
        finished = run_ray(jobs, cfg.ray, prepared)
    else:
        workers = worker_count(cfg.sweep.workers, len(jobs))
        if workers > 1:
            log.info("%d runs on %d worker processes", len(jobs), workers)
        finished = run_local(jobs, workers, prepared)
    outcomes: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(total=len(jobs), unit="variant", disable=not sys.stderr.isatty(), file=sys.stderr)
    for i, outcome in enumerate(finished, start=1):
        cli.check_stop()
        outcomes.append(outcome)
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (len(jobs) - i)
        line = f"[{i}/{len(jobs)}] {_describe(outcome, prepared.split.task)}  ETA {tqdm.format_interval(eta)}"
        if bar.disable:
            log.info(line)
        else:
            bar.write(line)
            bar.update()
    bar.close()
    return outcomes


def sweep_jobs(cfg: Config, todo: list[Variant], n_train: int, parent_run_id: str, tags: dict) -> list[Job]:
    """One job per variant and seed, the longest (most updates per epoch) first so workers finish together."""
    child_tags = {**tags, "descent.kind": "variant", "descent.sweep_id": parent_run_id}
    seeds = cfg.sweep.seeds or [cfg.training.seed]
    jobs = []
    for variant in sorted(todo, key=lambda v: -batch_regime(v.batch_size, n_train).updates_per_epoch):
        for seed in seeds:
            training = cfg.training.model_copy(
                update={"optimizer": variant.optimizer, "batch_size": variant.batch_size, "seed": seed}
            )
            name = variant.name(n_train) + (f"-seed{seed}" if len(seeds) > 1 else "")
            jobs.append(Job(cfg.model_copy(update={"training": training}), name, parent_run_id, child_tags))
    return jobs


def _describe(outcome: dict, task: str) -> str:
    if outcome["state"] == "failed":
        return f"{outcome['name']} FAILED: {outcome['error']}"
    result = outcome["result"]
    last = result["history"][-1] if result["history"] else {}
    key = RANKING[task][0]
    value = last.get(key, float("nan"))
    state = " (diverged)" if outcome["state"] == "diverged" else ""
    return f"{outcome['name']}{state}: {key} {value:.4f}, {result['final']['train_seconds']:.1f} s"


def _entry(argv: list[str] | None) -> int:
    p = cli.parser("Run the whole study: every optimizer x batch size as nested MLflow runs.", variant_options=False)
    p.add_argument("--optimizers", default="", help="comma-separated, e.g. adam,sgd (default: sweep.optimizers)")
    p.add_argument("--batch_sizes", "--batch-sizes", default="", help="comma-separated, e.g. full,1,32")
    cli.add_flag(p, "fresh", "start a new sweep instead of resuming the last matching one")
    args = p.parse_args(argv)
    chosen = {}
    if args.optimizers:
        chosen["sweep.optimizers"] = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    if args.batch_sizes:
        chosen["sweep.batch_sizes"] = [parse_value(b.strip()) for b in args.batch_sizes.split(",") if b.strip()]
    cfg = cli.config_from(args, chosen)
    result = sweep(cfg, fresh=args.fresh)
    table = result["table"]
    print(result["summary"].split("\n| variant")[0].rstrip())
    print("\nVariants, best first (ranked on the final validation metric):")
    print(terminal_table(table, result["task"]).to_string(index=False))
    log.info("\nsee the variants side by side: %s", tracking.ui_command())
    log.info("then open %s and expand run %s", tracking.runs_page(result["experiment_id"]), result["parent_run_id"])
    log.info(grouping.hint(result["experiment_id"], result["parent_run_id"], cfg.sweep.seeds))
    if not table["status"].isin(["finished", "diverged"]).any():
        print("descent: error: no variant of the sweep finished: see each run's descent.error tag", file=sys.stderr)
        return cli.EXIT_FAILED
    return cli.EXIT_OK


def terminal_table(table: Any, task: str) -> Any:
    """The columns a person reads first, rounded for a terminal."""
    key = RANKING[task][0]
    test = "test_" + key.removeprefix("val_")
    shown = table[["variant", "status", f"final_{key}", test, "train_seconds", "updates", "seconds_to_target"]]
    return shown.rename(columns={f"final_{key}": key, "train_seconds": "seconds"}).round(4)


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
