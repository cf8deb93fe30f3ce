"""Entry point `scheduled`: the sweep for cron, systemd, Airflow or Kubernetes, safe to trigger unattended.

Exit codes: 0 success or nothing to do, 1 failure, 2 bad input or config or a tracking server that refuses the
login or its rights, 75 tracking server unreachable or the study held by another run for longer than lock_timeout.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from components.compare import RANKING
from pipelines import access, backend, cli, locks, registry, tracking
from pipelines.config import Config
from pipelines.owners import Busy
from pipelines.prepare import prepare
from pipelines.study import MATCH, failures, nothing_learned, sweep, sweep_tags
from pipelines.train import check_model

log = logging.getLogger("descent")


def scheduled(cfg: Config, force: bool = False) -> int:
    """Run the study once if data, config or code changed; promote its best model if it beats the champion."""
    s = cfg.schedule
    check_model(cfg)  # a builder that is not there is bad input now, not after waiting for the server and the lock
    access.note(model=s.model_name)
    backend.wait_for_server(s.tracking_retries, s.tracking_backoff)
    # One trigger per experiment at a time: a live one is waited for (skipped, with on_overlap: skip) up to
    # lock_timeout, then this trigger exits 75; a hung one (silent for stale_after) is stopped and taken over.
    with contextlib.ExitStack() as held:
        try:
            timeout = s.lock_timeout if s.on_overlap == "wait" else 0
            held.enter_context(
                locks.hold(f"experiment-{cfg.experiment}", timeout, s.stale_after, cfg.tracking.shutdown_timeout)
            )
        except Busy as busy:
            if s.on_overlap == "skip" and (busy.held_for or 0) < s.lock_timeout:
                log.info("skipped: experiment %r: %s", cfg.experiment, busy.who)
                return cli.EXIT_OK
            raise
        return _locked(cfg, force)


def _locked(cfg: Config, force: bool) -> int:
    prepared = prepare(cfg)
    tags = sweep_tags(cfg, prepared)
    experiment = tracking.experiment_id(cfg.experiment)
    done = tracking.find_runs([experiment], {k: tags[k] for k in MATCH} | {"descent.scheduled": "done"}, 1)
    if done and not force:
        log.info("up to date: sweep %s already covers this data, config and code", done[0].info.run_id)
        return cli.EXIT_OK
    result = sweep(cfg, fresh=force, prepared=prepared)
    table = result["table"]
    finished = table[table["status"] == "finished"]
    parent = result["parent_run_id"]
    if finished.empty:
        why = nothing_learned(table) or "no variant finished: see each run's descent.error tag"
        print(f"descent: error: sweep {parent} not promoted: {why}", file=sys.stderr)
        return cli.EXIT_FAILED
    failed = failures(cfg, table)
    if not failed and result["model_uri"] is None:  # its network would not load (the sweep warned why)
        failed = f"the best variant {finished.iloc[0]['variant']} has no servable model"
    if failed:  # the failed one might have been the best: the next trigger tries it again, then promotes
        tracking.set_tags_on(parent, {"descent.decision": f"not promoted: {failed}"})
        print(f"descent: error: sweep {parent} not promoted: {failed}", file=sys.stderr)
        return cli.EXIT_FAILED
    try:
        decision = _promote(cfg, result, finished.iloc[0])
    except Exception as exc:
        refused = access.refusal(exc)
        if refused is None:
            raise
        # Not tagged done: the next trigger resumes this sweep (every variant reused) and promotes again.
        tracking.set_tags_on(parent, {"descent.decision": f"not promoted: {refused}"})
        raise access.AccessRefused(
            f"sweep {parent} finished and keeps its runs, but its best model was not promoted: {refused}"
        ) from exc
    tracking.set_tags_on(parent, {"descent.scheduled": "done"} | decision)  # one write: done, and why
    log.info(
        "%s: %s (%s %s) vs champion %s",
        decision["descent.decision"],
        finished.iloc[0]["variant"],
        decision["descent.metric"],
        decision["descent.challenger_value"],
        decision["descent.champion_value"],
    )
    return cli.EXIT_OK


def _promote(cfg: Config, result: dict, best: object) -> dict[str, str]:
    key, higher = RANKING[result["task"]]
    model_uri = result["model_uri"]  # the best variant's (pipelines/servable.py)
    value = float(best[f"final_{key}"])
    outcome = registry.promote(model_uri, best["run_id"], cfg.schedule.model_name, value, higher)
    return {
        "descent.decision": "promoted to champion" if outcome["alias"] == "champion" else "kept as challenger",
        "descent.metric": key,
        "descent.champion_value": str(outcome["champion_value"]),
        "descent.challenger_value": str(value),
        "descent.model_version": f"{cfg.schedule.model_name}/{outcome['version']}",
    }


def _entry(argv: list[str] | None) -> int:
    p = cli.parser("Run the study unattended: locked, skipped when up to date, best model promoted.", False)
    cli.add_flag(p, "force", "run a fresh sweep even when nothing changed")
    args = p.parse_args(argv)
    try:
        return scheduled(cli.config_from(args), force=args.force)
    except backend.TrackingUnavailable as exc:
        print(f"descent: error: {exc}", file=sys.stderr)
        return cli.EXIT_UNAVAILABLE


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
