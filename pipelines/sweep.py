"""Entry point `main`: the whole study, every optimizer x batch size as a run nested under one sweep run."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from components.compare import RANKING
from components.errors import InputError
from components.model import check_activation
from components.optimizers import batch_regime, check_optimizer
from components.sweep import Variant, expand_sweep
from pipelines import access, cli, grouping, tracking
from pipelines.compare import compare
from pipelines.config import Config, flatten, parse_value
from pipelines.plan import plan_jobs
from pipelines.prepare import Prepared, prepare
from pipelines.ray_executor import RayExecutor, check_ray
from pipelines.servable import log_best_model
from pipelines.train import check_tuning, log_data_record, run_tags
from pipelines.workers import LocalExecutor, worker_count

log = logging.getLogger("descent")


def sweep(cfg: Config, fresh: bool = False, prepared: Prepared | None = None) -> dict:
    """Train every variant of cfg.sweep on one shared split; resume the last matching sweep unless `fresh`."""
    prepared = prepared or prepare(cfg)
    n_train = len(prepared.split.train)
    variants = expand_sweep(cfg.sweep.optimizers, cfg.sweep.batch_sizes, n_train)
    for optimizer in dict.fromkeys(v.optimizer for v in variants):
        check_optimizer(optimizer, cfg.hyperparameters(optimizer))
    check_activation(cfg.model.activation)
    check_tuning(cfg, prepared)
    _check_reference(cfg, variants, n_train)
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
        interrupted: dict[str, str] = {}
        done = _reuse(previous, parent, interrupted) if previous is not None else {}
        outcomes = _run_variants(cfg, prepared, variants, parent, tags, done, interrupted)
        known = {o["result"]["run_id"]: o["result"] for o in outcomes if "result" in o}  # read back only the rest
        result = compare(tracking.get_run(parent.info.run_id), known)
        result["model_uri"] = log_best_model(prepared, result["table"])
    result.update(parent_run_id=parent.info.run_id, experiment_id=parent.info.experiment_id)
    result.update(reused=sorted(done), outcomes=outcomes)
    return result


def _check_reference(cfg: Config, variants: list[Variant], n_train: int) -> None:
    """`scaled` from a tuned reference needs the reference batch size in the sweep: it is tuned there first."""
    tu = cfg.tuning
    if tu.method != "scaled" or tu.reference != "grid":
        return
    reference = batch_regime(tu.reference_batch_size, n_train).batch_size
    if reference not in {batch_regime(v.batch_size, n_train).batch_size for v in variants}:
        raise InputError(
            f"tuning.reference_batch_size={tu.reference_batch_size} is not among sweep.batch_sizes "
            f"{cfg.sweep.batch_sizes}: add it, or set tuning.reference=config"
        )


MATCH = ("descent.kind", "descent.data_digest", "descent.config_digest", "descent.code_version")


def sweep_tags(cfg: Config, prepared: Prepared) -> dict[str, str]:
    """The tags of a sweep run; MATCH among them identify the same study on the same data and code."""
    return {**run_tags(cfg, prepared), "descent.kind": "sweep", "descent.task": prepared.split.task}


def _last_matching(experiment_id: str, tags: dict[str, str]) -> Any:
    found = tracking.find_runs([experiment_id], {k: tags[k] for k in MATCH}, max_results=1)
    return found[0] if found else None


def _reuse(previous: Any, parent: Any, interrupted: dict[str, str]) -> dict[str, Any]:
    """Variants that already finished in `previous`, by name; runs its crash left RUNNING end FAILED (and are
    noted in `interrupted`, by name: their finished learning-rate trials are reused)."""
    done: dict[str, Any] = {}
    for child in tracking.children(previous):
        status, name = child.info.status, child.info.run_name
        if status == "RUNNING":
            tracking.mark_failed(child.info.run_id, "interrupted: the sweep process ended before this variant did")
            interrupted[name] = child.info.run_id
        elif status == "FINISHED" and name not in done:
            done[name] = child
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
    cfg: Config,
    prepared: Prepared,
    variants: list[Variant],
    parent: Any,
    tags: dict,
    done: dict[str, Any],
    interrupted: dict[str, str],
) -> list[dict]:
    plan = plan_jobs(cfg, variants, len(prepared.split.train), parent.info.run_id, tags)
    todo = [job for job in plan.first if job.name not in done]
    for name, run in done.items():  # a reused leader's learning rate still reaches the jobs that wait for it
        lr, by = run.data.params.get("learning_rate"), run.data.tags.get("descent.lr_chosen_by", "config")
        todo += plan.release(name, float(lr) if lr else None, by, run.info.run_id)
    total = plan.total - len(done)
    if cfg.sweep.executor == "ray":
        log.info("%d runs as Ray tasks", total)
        executor: Any = RayExecutor(cfg.ray, prepared)
    else:
        workers = worker_count(cfg.sweep.workers, total)
        if workers > 1:
            log.info("%d runs on %d worker processes", total, workers)
        executor = LocalExecutor(workers, prepared)
    outcomes: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(total=total, unit="variant", disable=not sys.stderr.isatty(), file=sys.stderr)

    def submit(jobs: list[Any]) -> None:
        for job in jobs:
            if job.name not in done:
                executor.submit(replace(job, resume_from=interrupted.get(job.name)))

    with executor:
        submit(todo)
        # A variant the tracking server refused (401/403) stops the sweep: every other would be refused too.
        outcomes_so_far = access.stop_at_refusal(executor.outcomes(), on_ray=cfg.sweep.executor == "ray")
        for i, outcome in enumerate(outcomes_so_far, start=1):
            cli.check_stop()
            outcomes.append(outcome)
            result = outcome.get("result", {})
            lr, by, run_id = result.get("learning_rate"), result.get("lr_chosen_by", ""), result.get("run_id", "")
            submit(plan.release(outcome["name"], lr, by, run_id))
            elapsed = time.perf_counter() - started
            eta = elapsed / i * (total - i)
            line = f"[{i}/{total}] {_describe(outcome, prepared.split.task)}  ETA {tqdm.format_interval(eta)}"
            if bar.disable:
                log.info(line)
            else:
                bar.write(line)
                bar.update()
    bar.close()
    return outcomes


def _describe(outcome: dict, task: str) -> str:
    if outcome["state"] == "failed":
        return f"{outcome['name']} FAILED: {outcome['error']}"
    result = outcome["result"]
    last = result["history"][-1] if result["history"] else {}
    key = RANKING[task][0]
    value = last.get(key, float("nan"))
    state = " (diverged)" if outcome["state"] == "diverged" else ""
    lr = f"learning rate {result['learning_rate']:.3g} ({result['lr_chosen_by']})"
    return f"{outcome['name']}{state}: {key} {value:.4f}, {lr}, {result['final']['train_seconds']:.1f} s"


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
    columns = ["variant", "status", "learning_rate", f"final_{key}", test, "train_seconds", "updates"]
    shown = table[[*columns, "seconds_to_target"]].rename(columns={"learning_rate": "lr"})
    return shown.rename(columns={f"final_{key}": key, "train_seconds": "seconds"}).round(4)


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
