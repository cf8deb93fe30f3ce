"""Entry point `main`: the whole study (pipelines/study.py) from the command line, its table and links printed.

Light to import: the sweep's tracking writer starts loading MLflow before this process loads TensorFlow.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pipelines import backend, cli, writer
from pipelines.config import Config, parse_value

log = logging.getLogger("descent")


def sweep(cfg: Config, fresh: bool = False, prepared: Any = None) -> dict:
    """Train every variant of cfg.sweep on one shared split; resume the last matching sweep unless `fresh`
    (pipelines.study.sweep, imported when first called: it loads TensorFlow)."""
    from pipelines.study import sweep as study

    return study(cfg, fresh=fresh, prepared=prepared)


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
    if cfg.tracking.writer and backend.is_local_store():  # MLflow loads there while TensorFlow loads here
        backend.check_store()
        writer.start(backend.tracking_uri())
    result = sweep(cfg, fresh=args.fresh)
    from pipelines import grouping, tracking
    from pipelines.study import failures, nothing_learned

    table = result["table"]
    print(result["summary"].split("\n| variant")[0].rstrip())
    print("\nVariants, best first (ranked on the final validation metric):")
    print(terminal_table(table, result["task"]))
    log.info("\nsee the variants side by side: %s", backend.ui_command())
    log.info("then open %s and expand run %s", tracking.runs_page(result["experiment_id"]), result["parent_run_id"])
    log.info(grouping.hint(result["experiment_id"], result["parent_run_id"], cfg.sweep.seeds))
    if not table["status"].isin(["finished", "diverged", "collapsed"]).any():
        print("descent: error: no variant of the sweep finished: see each run's descent.error tag", file=sys.stderr)
        return cli.EXIT_FAILED
    learned = nothing_learned(table)  # a result, not a failure: the summary says which variants did what
    if learned:
        log.warning("descent: warning: %s", learned)
    failed = failures(cfg, table)
    if failed:
        print(f"descent: error: {failed}", file=sys.stderr)
        return cli.EXIT_FAILED
    return cli.EXIT_OK


def terminal_table(table: Any, task: str) -> str:
    """The columns a person reads first, rounded for a terminal; "-" where there is no value (a target never
    reached, a score a failed variant has not)."""
    from components.compare import RANKING

    key = RANKING[task][0]
    test = "test_" + key.removeprefix("val_")
    columns = ["variant", "status", "learning_rate", f"final_{key}", test, "train_seconds", "updates"]
    shown = table[[*columns, "seconds_to_target"]].rename(columns={"learning_rate": "lr"})
    shown = shown.rename(columns={f"final_{key}": key, "train_seconds": "seconds"}).round(4)
    return shown.to_string(index=False, na_rep="-")


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
