"""Entry point `split`: the data steps alone (load, shuffle, deduplicate, split), recorded as one run."""

from __future__ import annotations

import logging
import sys

from pipelines import backend, cli, tracking
from pipelines.config import Config, flatten
from pipelines.prepare import prepare
from pipelines.train import log_data_record, run_tags

log = logging.getLogger("descent")


def split(cfg: Config) -> dict:
    """Load and split the configured data; record inputs, report and config; return the report."""
    prepared = prepare(cfg)
    with tracking.run(cfg.experiment, f"split-{prepared.dataset.name}", tags=run_tags(cfg, prepared)):
        tracking.log_params(flatten(cfg.model_dump(include={"data", "split"})))
        log_data_record(cfg, prepared)
        report = prepared.split.report
        tracking.log_metrics(
            {
                **{f"{name}_rows": float(n) for name, n in report.rows.items()},
                "duplicates_dropped": float(report.duplicates_dropped),
                "conflicting_rows": float(report.conflicting_rows),
                "max_share_deviation": report.max_share_deviation,
                "rows_in_two_splits": float(report.rows_in_two_splits),
                "imputed_values": float(sum(prepared.preprocessor.imputed.values())),
            }
        )
    return report.to_dict() | {"imputed_values": prepared.preprocessor.imputed}


def _entry(argv: list[str] | None) -> None:
    args = cli.parser("Load, shuffle and split the data; record the split report.", variant_options=False)
    cfg = cli.config_from(args.parse_args(argv))
    report = split(cfg)
    rows = ", ".join(f"{k} {v}" for k, v in report["rows"].items())
    log.info(
        "split %s: %s rows; %s duplicates dropped, %s rows with conflicting labels, "
        "largest class-share deviation %.4f, rows in two splits: %s",
        cfg.data.source,
        rows,
        report["duplicates_dropped"],
        report["conflicting_rows"],
        report["max_share_deviation"],
        report["rows_in_two_splits"],
    )
    log.info("see it: %s", backend.ui_command())


def console() -> None:
    sys.exit(cli.main(_entry))


if __name__ == "__main__":
    console()
