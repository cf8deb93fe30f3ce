"""MLflow's system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) on each variant run, cheaply.

MLflow's own monitor samples every 10 s and drops the samples of its last interval when the run ends, so a
variant that trains for 0.3 s would record nothing. This one samples every `tracking.system_metrics_interval`
seconds and always logs one last sample when the run ends, covering the time since the one before.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable
from typing import Any

from pipelines.config import TrackingConfig


def wanted(settings: TrackingConfig) -> bool:
    """Whether variant runs record system metrics (on in the config, and psutil installed)."""
    return settings.system_metrics and importlib.util.find_spec("psutil") is not None


def monitor(run_id: str, interval: float, uri: str, write: Callable[[str, list], None]) -> Any:
    """Start sampling the machine for run `run_id` of the store at `uri`; `finish()` logs the last sample. Each
    sample is written with `write(run_id, points)` (the store's log_batch: points are (key, value, ms, step))."""
    sampler = _monitor_class()(run_id, sampling_interval=interval, tracking_uri=uri)
    sampler.write = write
    sampler.start()
    return sampler


@functools.cache
def _monitor_class() -> type:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class VariantMonitor(SystemMetricsMonitor):
        """A sample every interval, logged at once; one last sample when the run ends, however short it was."""

        def monitor(self) -> None:
            import psutil

            psutil.cpu_percent()  # CPU use is measured between calls: start the first window with the run
            while not self._shutdown_event.wait(self.sampling_interval):
                self._sample()
            self._sample()

        def publish_metrics(self, metrics: dict[str, float]) -> None:
            """As MLflow's (system/<name>, one step per sample), written at once in the store's one batch."""
            prefix = self._metrics_prefix + (self.node_id + "/" if self.node_id else "")
            now = int(time.time() * 1000)
            self.write(self._run_id, [(prefix + k, float(v), now, self._logging_step) for k, v in metrics.items()])
            self._logging_step += 1
            for sampled in self.monitors:
                sampled.clear_metrics()

        def _sample(self) -> None:
            try:
                self.collect_metrics()
                self.publish_metrics(self.aggregate_metrics())
            except Exception as exc:  # a failed sample must never fail the variant
                _log_warning(exc)

    return VariantMonitor


def _log_warning(exc: Any) -> None:
    import logging

    logging.getLogger("mlflow.system_metrics").warning("system metrics sample failed: %s", exc)
