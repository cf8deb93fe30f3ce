"""A run's trained network and its servable model: preprocessor + network as one MLflow pyfunc model."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import tracking

SERVING_MODEL = Path(__file__).resolve().parent / "serving_model.py"
COMPONENTS = Path(__file__).resolve().parent.parent / "components"


NETWORK = Path("network/network.keras")
WEIGHTS = Path("network/weights.npz")


def log_network(network: Any, run_id: str | None = None) -> None:
    """The trained network alone (Keras' own .keras file) as network/network.keras of the active run (or of run
    `run_id`): ~10 ms of Keras' saving, where a servable model costs ~0.3 s. The file is written here and logged
    (then deleted) by the store, in the writer process when there is one."""
    path = Path(tempfile.mkdtemp(prefix="descent-network-")) / NETWORK.name
    network.save(path)
    run_id = run_id or tracking.active().run_id
    tracking.store().log_file(run_id, str(path), str(NETWORK.parent), remove=True)


def log_weights(network: Any) -> None:
    """The trained network's weights (`network.get_weights()`, in order, as numpy's arr_0, arr_1, ...) as the active
    run's network/weights.npz: under a millisecond, where Keras' .keras file takes ~10 ms a variant. The sweep
    makes its best variant's network.keras and servable model from them (network_from_weights)."""
    path = Path(tempfile.mkdtemp(prefix="descent-weights-")) / WEIGHTS.name
    np.savez(path, *network.get_weights())
    tracking.store().log_file(tracking.active().run_id, str(path), str(WEIGHTS.parent), remove=True)


def kept_files(run_id: str) -> list[str]:
    """What run `run_id` kept of its network: NETWORK, WEIGHTS, both or neither (as artifact paths)."""
    return tracking.store().artifacts(run_id, str(NETWORK.parent))


def load_network(run_id: str) -> Any:
    """The network a variant run kept as network.keras, loaded as a user would load it; None when it kept none."""
    import keras

    store = tracking.store()
    if str(NETWORK) not in kept_files(run_id):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return keras.saving.load_model(store.download(run_id, str(NETWORK), tmp), compile=False)


def network_from_weights(run_id: str, build: Callable[[], Any]) -> Any:
    """The network whose weights run `run_id` kept (network/weights.npz), set into the untrained network `build`
    makes (of the same architecture)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.store().download(run_id, str(WEIGHTS), tmp)
        network = build()
        with np.load(path) as saved:
            network.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    return network


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
