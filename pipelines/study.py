"""The whole study: every optimizer x batch size as a run nested under one sweep run, resumed where it stopped."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from components.compare import RANKING
from components.errors import InputError
from components.optimizers import batch_regime, check_optimizer
from components.sweep import Variant, expand_sweep
from pipelines import access, backend, cli, locks, owners, servable, tracking
from pipelines.compare import compare
from pipelines.config import Config, flatten
from pipelines.plan import plan_jobs
from pipelines.prepare import Prepared, prepare
from pipelines.ray_executor import RayExecutor, check_ray, share_gpus
from pipelines.train import check_model, check_network_fits, check_tuning, log_data_record, log_network, run_tags
from pipelines.workers import LocalExecutor, job_record, use_cores, worker_count

log = logging.getLogger("descent")


def sweep(cfg: Config, fresh: bool = False, prepared: Prepared | None = None) -> dict:
    """Train every variant of cfg.sweep on one shared split; resume the last matching sweep unless `fresh`."""
    check_model(cfg)
    prepared = prepared or prepare(cfg)
    n_train = len(prepared.split.train)
    variants = expand_sweep(cfg.sweep.optimizers, cfg.sweep.batch_sizes, n_train)
    for optimizer in dict.fromkeys(v.optimizer for v in variants):
        check_optimizer(optimizer, cfg.hyperparameters(optimizer))
    check_tuning(cfg, prepared)
    _check_reference(cfg, variants, n_train)
    if cfg.sweep.executor == "ray":
        check_ray()
    else:  # this process trains too: its share of the cores, set before TensorFlow first runs (just below)
        jobs = len(variants) * len(cfg.sweep.seeds or [cfg.training.seed])
        use_cores(max(1, (os.cpu_count() or 1) // worker_count(cfg.sweep.workers, jobs)))
    share_gpus()  # the network built here must leave a GPU to the processes that train
    network = check_network_fits(cfg, prepared)
    tags = sweep_tags(cfg, prepared)
    launched = os.environ.get("MLFLOW_RUN_ID")
    # Under `mlflow run` the sweep lives where the launcher put it (--experiment-name, or Default).
    experiment = tracking.get_run(launched).info.experiment_id if launched else tracking.experiment_id(cfg.experiment)
    s = cfg.schedule
    # One sweep of a study at a time: a second identical command waits for the first, then resumes it.
    with locks.hold(study_lock(experiment, tags), s.lock_timeout, s.stale_after, cfg.tracking.shutdown_timeout):
        chain = [] if fresh else _chain(_last_matching(experiment, tags))
        _check_gone(chain)
        reopen = chain[0].info.run_id if chain and not launched else None
        # A new run (`mlflow run`) is found as the study's sweep only once the earlier one's variants are moved to it.
        opening = {k: v for k, v in tags.items() if k != "descent.kind"} if chain and launched else tags
        opening |= {"descent.owner": str(owners.me())}
        try:
            with tracking.run(cfg.experiment, f"sweep-{prepared.dataset.name}", tags=opening, run_id=reopen) as parent:
                swept = {k: v for k, v in cfg.optimizers.items() if k in cfg.sweep.optimizers}
                resolved = flatten(cfg.model_dump(exclude={"optimizers"}) | {"optimizers": swept})
                tracking.log_params(resolved | {"variants": len(variants)})
                if reopen is None:
                    log_data_record(cfg, prepared)
                    log_network(cfg, network)
                interrupted: dict[str, str] = {}
                done = _reuse(chain, parent, interrupted) if chain else {}
                tracking.set_tags({"descent.kind": "sweep"})
                outcomes = _run_variants(cfg, prepared, variants, parent, tags, done, interrupted)
                known = {
                    o["result"]["run_id"]: o["result"] for o in outcomes if "result" in o
                }  # read back only the rest
                best: list[str | None] = []
                result = compare(
                    tracking.get_run(parent.info.run_id),
                    known,
                    with_table=lambda table: best.append(servable.send_best_model(cfg, prepared, table)),
                )
                result["model_uri"] = servable.model_uri(best[0])
        finally:  # its runs' ends are in the store before the next sweep of the study may look at them
            tracking.settle()
    result.update(parent_run_id=parent.info.run_id, experiment_id=parent.info.experiment_id)
    result.update(reused=sorted(done), outcomes=outcomes)
    return result


def study_lock(experiment_id: str, tags: dict[str, str]) -> str:
    """The name of the machine-wide lock of one study (experiment, data, config and code) on one tracking store."""
    study = [backend.tracking_uri(), experiment_id, *(tags[k] for k in MATCH)]
    return "study-" + hashlib.sha256("\n".join(study).encode()).hexdigest()[:16]


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


def _chain(found: Any) -> list[Any]:
    """The last matching sweep and the sweeps it was resumed in (`descent.resumed_in`), oldest first.

    A resume under `mlflow run` that was killed while it moved the finished variants left some under the new run:
    they are found there.
    """
    chain = [found] if found is not None else []
    while chain and chain[-1].data.tags.get("descent.resumed_in") not in (None, *(r.info.run_id for r in chain)):
        chain.append(tracking.get_run(chain[-1].data.tags["descent.resumed_in"]))
    return chain


def _check_gone(chain: list[Any]) -> None:
    """Refuse to touch a sweep whose process still runs (here, or on another machine): it is not interrupted."""
    for run in chain:
        owner = owners.parse(run.data.tags.get("descent.owner"))
        if run.info.status == "RUNNING" and owner is not None and owners.is_gone(owner) is not True:
            raise owners.Busy(
                f"sweep {run.info.run_id} of this study is running ({owner.describe()}): wait for it to end, "
                "or stop it; if it died on another machine, start over with --fresh (-P fresh=true)"
            )


def _reuse(chain: list[Any], parent: Any, interrupted: dict[str, str]) -> dict[str, Any]:
    """Variants that already finished in the `chain` of earlier sweeps, by name, moved under `parent`; runs a crash
    left RUNNING end FAILED (and are noted in `interrupted`, by name: their finished learning-rate trials are reused).

    The earlier sweeps point to `parent` first, so that a crash while moving leaves a chain the next resume follows.
    """
    me = parent.info.run_id
    earlier = [run for run in chain if run.info.run_id != me]
    for run in earlier:
        tracking.set_tags_on(run.info.run_id, {"descent.resumed_in": me})
    if len(earlier) < len(chain):  # reopened: it is the study's sweep again
        tracking.delete_tag(me, "descent.resumed_in")
    done: dict[str, Any] = {}
    for run in chain:
        for child in tracking.children(run):
            status, name = child.info.status, child.info.run_name
            if status == "RUNNING":  # its sweep's process is gone (_check_gone), and its workers died with it
                tracking.mark_failed(child.info.run_id, "interrupted: the sweep process ended before this variant did")
                interrupted[name] = child.info.run_id
            elif status == "FINISHED" and name not in done:
                done[name] = child
                if run.info.run_id != me:
                    tracking.move_under(child.info.run_id, me)
    for run in earlier:
        if run.info.status == "RUNNING":
            tracking.mark_failed(run.info.run_id, f"interrupted; resumed in run {me}")
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
        tracking.settle()  # the sweep's run is in the store before another process reads it
        log.info("%d runs as Ray tasks", total)
        executor: Any = RayExecutor(cfg.ray, prepared.for_workers(), cfg.tracking.shutdown_timeout)
    else:
        workers = worker_count(cfg.sweep.workers, total)
        if workers > 1:
            tracking.settle()  # the sweep's run is in the store before another process reads it
            log.info("%d runs on %d worker processes", total, workers)
        executor = LocalExecutor(workers, prepared.for_workers(), cfg.sweep.retries)
    outcomes: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(total=total, unit="variant", disable=not sys.stderr.isatty(), file=sys.stderr)

    jobs: dict[str, tuple[Any, int]] = {}  # name -> the job, and when it was submitted (ms, as MLflow times runs)

    def submit(ready: list[Any]) -> None:
        for job in ready:
            if job.name not in done:
                jobs[job.name] = (job, int(time.time() * 1000))
                executor.submit(replace(job, resume_from=interrupted.get(job.name)))

    with executor:
        submit(todo)
        # A variant the tracking server refused (401/403) stops the sweep: every other would be refused too.
        outcomes_so_far = access.stop_at_refusal(executor.outcomes(), on_ray=cfg.sweep.executor == "ray")
        for i, outcome in enumerate(outcomes_so_far, start=1):
            cli.check_stop()
            outcomes.append(outcome)
            if outcome["state"] == "failed":
                _record_failure(*jobs[outcome["name"]], outcome["error"], len(prepared.split.train))
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


def _record_failure(job: Any, submitted: int, error: str, n_train: int) -> None:
    """A variant that failed before its run existed (its worker never started it) gets a FAILED run with the reason,
    so that the comparison, the summary and the exit code count it."""
    if any(run.info.start_time >= submitted for run in tracking.named(job.parent_run_id, job.name)):
        return  # this try has its own run, which says why
    tags, params = job_record(job, n_train)
    tracking.record_failed(job.parent_run_id, job.name, tags, params, error)


def _describe(outcome: dict, task: str) -> str:
    if outcome["state"] == "failed":
        return f"{outcome['name']} FAILED: {outcome['error']}"
    result = outcome["result"]
    last = result["history"][-1] if result["history"] else {}
    key = RANKING[task][0]
    value = last.get(key, float("nan"))
    state = " (diverged)" if outcome["state"] == "diverged" else ""
    lr = f"learning rate {result['learning_rate']:.3g} ({result['lr_chosen_by']})"
    return f"{outcome['name']}{state}: {key} {value:.4f}, {lr}, {result['final']['train_seconds']:.3g} s"


def nothing_learned(table: Any) -> str | None:
    """One line, with what to do, when variants ran to their end but none learned anything (each collapsed or
    diverged); None when one finished, or when none ran to its end (they failed: see failures)."""
    status = table["status"]
    ended = {kind: int((status == kind).sum()) for kind in ("collapsed", "diverged")}
    if (status == "finished").any() or not any(ended.values()):
        return None
    counts = ", ".join(f"{n} {kind}" for kind, n in ended.items() if n)
    return (
        f"no variant of the sweep learned anything ({counts} of {len(table)}): train longer (training.epochs) or "
        "let each variant find its learning rate (tuning.method=grid)"
    )


def failures(cfg: Config, table: Any) -> str | None:
    """What to say when variants failed (unless sweep.tolerate_failures): the sweep is not what was asked for."""
    failed = table.loc[table["status"] == "failed", "variant"].tolist()
    if not failed or cfg.sweep.tolerate_failures:
        return None
    return (
        f"{len(failed)} variant(s) failed: {', '.join(failed)}: see each run's descent.error; the same command "
        "tries them again (sweep.tolerate_failures=true accepts a sweep without them)"
    )
