"""A run's trained network and its servable model: preprocessor + network as one MLflow pyfunc model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from pipelines.tracking import client

SERVING_MODEL = Path(__file__).resolve().parent / "serving_model.py"
COMPONENTS = Path(__file__).resolve().parent.parent / "components"


NETWORK = Path("network/network.keras")


def log_network(network: Any) -> None:
    """The trained network alone (Keras' own .keras file) as the active run's network/network.keras: ~15 ms, where a
    servable model costs ~0.3 s; the sweep makes its best variant's servable model from it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / NETWORK.name
        network.save(path)
        mlflow.log_artifact(str(path), str(NETWORK.parent))


def load_network(run_id: str) -> Any:
    """The network a variant run kept (log_network), loaded; None when it kept none."""
    import keras

    if not any(f.path == str(NETWORK) for f in client().list_artifacts(run_id, str(NETWORK.parent))):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return keras.saving.load_model(client().download_artifacts(run_id, str(NETWORK), tmp), compile=False)


def log_servable_model(
    preprocessor: Any,
    network: Any,
    example: pd.DataFrame | np.ndarray,
    code: list[Path] = (),
    run_id: str | None = None,
) -> str:
    """Log preprocessor + network as one pyfunc model taking raw rows (or samples, for array data), on the active
    run or on run `run_id` (one that has ended); returns its model URI.

    `code`: files logged with descent's components as the model's code (the user's builder).
    """
    import joblib

    with tempfile.TemporaryDirectory() as tmp:
        network_path = Path(tmp) / "network.keras"
        preprocessor_path = Path(tmp) / "preprocessor.joblib"
        network.save(network_path)
        joblib.dump(preprocessor, preprocessor_path)
        outputs = pd.DataFrame(
            {"prediction": preprocessor.decode(network(preprocessor.transform(example), training=False).numpy())}
        )
        # No input_example: with one, MLflow reloads the model to predict it, half the cost of logging
        # a model per variant. The signature still documents the input; CI serves a model end to end.
        model = {
            "name": "model",
            "python_model": str(SERVING_MODEL),
            "artifacts": {"network": str(network_path), "preprocessor": str(preprocessor_path)},
            "code_paths": [str(COMPONENTS), *map(str, code)],
            "model_config": {"imports": [Path(path).stem for path in code]},  # custom layers register on import
            "signature": infer_signature(example, outputs),
            "pip_requirements": _requirements(),
        }
        if run_id is None:
            info = mlflow.pyfunc.log_model(**model)
        else:  # what mlflow.pyfunc.log_model does for the active run, for another one
            info = mlflow.models.Model.log(
                artifact_path=None, flavor=mlflow.pyfunc, run_id=run_id, flavor_name="pyfunc.ModelFromCode", **model
            )
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "tensorflow", "keras", "scikit-learn", "pandas", "joblib")]
