"""The servable model of a sweep's best variant: logged once the sweep knows which variant that is.

By default (`tracking.log_models: best`, `tracking.log_networks: best`) each variant keeps only its trained weights
(network/weights.npz); the servable model (preprocessor + network + signature, what `mlflow models serve` and the
registry take) costs as much to log as a small variant costs to train, so the sweep makes it, and Keras'
network.keras, for its best variant alone, from those weights, while it draws the comparison's plots.
"""

from __future__ import annotations

import logging

import pandas as pd

from pipelines import access, models, tracking
from pipelines.config import Config
from pipelines.fitting import untrained_network
from pipelines.prepare import Prepared
from pipelines.train import builder_code

log = logging.getLogger("descent")


def send_best_model(cfg: Config, prepared: Prepared, table: pd.DataFrame) -> str | None:
    """Log the servable model of the best finished variant of a comparison table, if it has none; returns that
    variant's run id (None: no variant finished). Its URI becomes the run's descent.model_uri (see model_uri):
    with a writer process, while this process goes on."""
    finished = table[table["status"] == "finished"]
    if finished.empty:
        return None
    run_id = finished.iloc[0]["run_id"]
    if tracking.get_run(run_id).data.tags.get("descent.model_uri"):  # tracking.log_models: all, or a resumed sweep's
        return run_id
    try:
        kept = models.kept_files(run_id)
        if str(models.NETWORK) not in kept and str(models.WEIGHTS) in kept:  # Keras' file made from its weights
            models.log_network(models.network_from_weights(run_id, lambda: untrained_network(cfg, prepared)), run_id)
        network = models.load_network(run_id)  # as a user would load it: a custom layer must be registered
    except Exception as exc:
        if access.refusal(exc):
            raise
        # e.g. a custom layer of the user's network not registered (keras.saving.register_keras_serializable)
        hint = "register its custom layers with @keras.saving.register_keras_serializable()"
        log.warning(
            "descent: warning: the best variant's network (run %s) does not load (%s): no servable model; %s",
            run_id,
            exc,
            hint,
        )
        return None
    if network is None:
        log.warning("descent: warning: the best variant's run %s kept no network: its model is not logged", run_id)
        return None
    code = builder_code(cfg)  # the user's builder, with custom layers the model needs to load
    models.log_servable_model(prepared.preprocessor, network, prepared.example, code, run_id=run_id, tag=True)
    return run_id


def model_uri(run_id: str | None) -> str | None:
    """The servable model URI of run `run_id` (send_best_model's), once it is logged."""
    return tracking.get_run(run_id).data.tags.get("descent.model_uri") if run_id else None
