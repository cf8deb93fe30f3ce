"""A run's trained network and its servable model: preprocessor + network as one MLflow pyfunc model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import tracking

SERVING_MODEL = Path(__file__).resolve().parent / "serving_model.py"
COMPONENTS = Path(__file__).resolve().parent.parent / "components"


NETWORK = Path("network/network.keras")


def log_network(network: Any) -> None:
    """The trained network alone (Keras' own .keras file) as the active run's network/network.keras: ~15 ms, where a
    servable model costs ~0.3 s; the sweep makes its best variant's servable model from it. The file is written
    here and logged (then deleted) by the store, in the writer process when there is one."""
    path = Path(tempfile.mkdtemp(prefix="descent-network-")) / NETWORK.name
    network.save(path)
    tracking.store().log_file(tracking.active().run_id, str(path), str(NETWORK.parent), remove=True)


def load_network(run_id: str) -> Any:
    """The network a variant run kept (log_network), loaded; None when it kept none."""
    import keras

    store = tracking.store()
    if str(NETWORK) not in store.artifacts(run_id, str(NETWORK.parent)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return keras.saving.load_model(store.download(run_id, str(NETWORK), tmp), compile=False)


def log_servable_model(
    preprocessor: Any,
    network: Any,
    example: pd.DataFrame | np.ndarray,
    code: list[Path] = (),
    run_id: str | None = None,
    tag: bool = False,
) -> str | None:
    """Log preprocessor + network as one pyfunc model taking raw rows (or samples, for array data), on the active
    run or on run `run_id` (one that has ended); returns its model URI.

    `code`: files logged with descent's components as the model's code (the user's builder). `tag`: the store sets
    the URI as the run's descent.model_uri, and a writer process logs the model while this one goes on (None).
    """
    import joblib

    folder = tempfile.mkdtemp(prefix="descent-model-")
    network_path = Path(folder) / "network.keras"
    preprocessor_path = Path(folder) / "preprocessor.joblib"
    network.save(network_path)
    joblib.dump(preprocessor, preprocessor_path)
    outputs = pd.DataFrame(
        {"prediction": preprocessor.decode(network(preprocessor.transform(example), training=False).numpy())}
    )
    # No input_example: with one, MLflow reloads the model to predict it, half the cost of logging a model per
    # variant. The signature (from example and outputs) still documents the input; CI serves a model end to end.
    model = {
        "name": "model",
        "python_model": str(SERVING_MODEL),
        "artifacts": {"network": str(network_path), "preprocessor": str(preprocessor_path)},
        "code_paths": [str(COMPONENTS), *map(str, code)],
        "model_config": {"imports": [Path(path).stem for path in code]},  # custom layers register on import
        "example": example,
        "outputs": outputs,
        "pip_requirements": _requirements(),
    }
    run_id = run_id or tracking.active().run_id
    return tracking.store().log_servable_model(run_id, model, tag=tag, remove=folder)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "tensorflow", "keras", "scikit-learn", "pandas", "joblib")]
